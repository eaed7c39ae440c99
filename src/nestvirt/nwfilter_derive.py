"""A network filter chain that lets nested guests' frames through: pure, no I/O.

`--mac-spoofing` on an interface behind, say, `clean-traffic` must keep the
chain's other protections and drop only what matches the VM's own addresses:
nested guests send with their own MAC and IP. `derive(top, filters)` walks the
chain from `top` (`filters`: every filter's XML by name, as libvirt has them)
and returns:

- the filters to define: a copy `nestvirt-nested-<name>` of each filter on the
  way to a dropped part, with the dropped filterrefs/rules removed and the
  references pointing at the other copies (no UUID: libvirt assigns one);
- the name to reference instead of `top`;
- each protection dropped, for the plan to list.

Dropped: the address-spoofing filters libvirt ships (ANTI_SPOOFING), and in any
other filter a drop/reject rule that matches on `$MAC` or `$IP`. The result
depends only on the input, so two VMs behind the same chain share the copies,
and defining them again changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "nestvirt-nested-"
ANTI_SPOOFING = frozenset({
    "no-mac-spoofing", "no-ip-spoofing", "no-arp-spoofing", "no-arp-mac-spoofing",
    "no-arp-ip-spoofing", "no-ipv6-spoofing",
})  # fmt: skip
_OWN_ADDRESS = re.compile(r"\$(MAC|IP|IPV6)\b")


@dataclass(frozen=True, slots=True)
class Derived:
    top: str  # the filter to reference instead of the original
    definitions: tuple[tuple[str, str], ...]  # (name, XML) to define, leaves first
    dropped: tuple[str, ...]  # what no longer applies, in chain order


class DeriveError(ValueError):
    """The chain cannot be derived (a filter's XML is missing or unreadable)."""


def derive(top: str, filters: Mapping[str, str]) -> Derived:
    walk = _Walk(filters)
    name = walk.visit(top)
    if name is None:  # the top filter is itself one to drop: reference nothing
        return Derived("", (), tuple(walk.dropped))
    return Derived(name, tuple(walk.definitions), tuple(walk.dropped))


class _Walk:
    def __init__(self, filters: Mapping[str, str]) -> None:
        self.filters = filters
        self.definitions: list[tuple[str, str]] = []
        self.dropped: list[str] = []
        self.done: dict[str, str | None] = {}

    def visit(self, name: str) -> str | None:
        """The name to reference for `name` (itself, or its copy); None to drop it."""
        if name in self.done:
            return self.done[name]
        if name in ANTI_SPOOFING:
            self.dropped.append(name)
            self.done[name] = None
            return None
        self.done[name] = name  # a loop back to a filter being walked keeps the original
        root = self._parse(name)
        changed = False
        for child in list(root):
            if child.tag == "filterref":
                ref = child.get("filter") or ""
                replacement = self.visit(ref)
                if replacement is None:
                    root.remove(child)
                    changed = True
                elif replacement != ref:
                    child.set("filter", replacement)
                    changed = True
            elif child.tag == "rule" and _matches_own_address(child):
                root.remove(child)
                self.dropped.append(f"{name}: {_describe(child)}")
                changed = True
        if not changed:
            return name
        from lxml import etree

        copy = PREFIX + name.removeprefix(PREFIX)
        root.set("name", copy)
        for uuid in root.findall("uuid"):
            root.remove(uuid)
        self.definitions.append((copy, etree.tostring(root, encoding="unicode")))
        self.done[name] = copy
        return copy

    def _parse(self, name: str) -> Any:
        from lxml import etree

        xml = self.filters.get(name)
        if xml is None:
            raise DeriveError(f"nwfilter {name!r} could not be read")
        try:
            return etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True))
        except etree.XMLSyntaxError as exc:
            raise DeriveError(f"nwfilter {name!r} is not valid XML: {exc}") from None


def _matches_own_address(rule: Any) -> bool:
    if rule.get("action") not in ("drop", "reject"):
        return False
    return any(
        _OWN_ADDRESS.search(value or "") for node in rule.iter() for value in node.attrib.values()
    )


def _describe(rule: Any) -> str:
    protocol = next((child.tag for child in rule), "any")
    return f"its {rule.get('action')} rule on {protocol} matching the VM's own address"
