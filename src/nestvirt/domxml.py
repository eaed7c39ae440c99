"""Edits of a libvirt domain definition, virtinst-style: touch only the target nodes.

Each edit is a small frozen value (plan_libvirt puts them into Changes) with an
`apply(root)` that changes its own nodes and nothing else: no reordering, no
reformatting, comments and namespaced metadata (`<qemu:commandline>`) kept.
`edit(xml, edits)` parses once, applies every edit, and serialises in libvirt's
own style (single-quoted attributes) so a diff shows only what changed.

lxml is imported inside the functions that need it, so importing this module
(the plan does) costs nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nestvirt.errors import UsageError

# Where libvirt puts top-level elements, in order; new ones go before the first
# later sibling present (libvirt re-formats on define anyway, this is for the diff).
_DOMAIN_ORDER = (
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
    "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
    "cputune", "numatune", "resource", "sysinfo", "bootloader", "bootloader_args", "os",
    "idmap", "features", "cpu", "clock", "on_poweroff", "on_reboot", "on_crash",
    "on_lockfailure", "pm", "perf", "devices",
)  # fmt: skip
# Children of <cpu>, in libvirt's order.
_CPU_ORDER = ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa")


class XmlError(UsageError):
    """The definition is not XML nestvirt can edit."""


def parse(xml: str) -> Any:
    """The root <domain> element; comments, whitespace and namespaces kept."""
    from lxml import etree

    parser = etree.XMLParser(remove_blank_text=False, remove_comments=False, resolve_entities=False)
    try:
        root = etree.fromstring(xml.encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"malformed domain XML: {exc}") from exc
    if root.tag != "domain":
        raise XmlError(f"not a libvirt domain definition (root element <{root.tag}>)")
    return root


def serialize(root: Any, *, trailing: str = "\n") -> str:
    """Serialise like libvirt: attributes in single quotes, no XML declaration.

    Comments around the root element are kept; `trailing` is the whitespace to end with
    (`edit` passes the input's own, so an untouched definition comes back byte for byte).
    """
    from lxml import etree

    text: str = etree.tostring(root.getroottree(), encoding="unicode")
    text = _ROOT_TAG.sub(_namespaces_last, _single_quote_attributes(text), count=1)
    return text.rstrip() + trailing


_TAG = re.compile(r"<(?![!?])[^>]*>")
_ATTR = re.compile(r'=("[^"]*")')


_ROOT_TAG = re.compile(r"<domain\b[^>]*>")
_XMLNS = re.compile(r"\s+xmlns(?::[\w.-]+)?='[^']*'")


def _namespaces_last(match: re.Match[str]) -> str:
    # libvirt writes <domain type='kvm' xmlns:qemu='…'>; lxml puts declarations first.
    tag = match[0]
    declarations = _XMLNS.findall(tag)
    if not declarations:
        return tag
    rest = _XMLNS.sub("", tag)
    end = len(rest) - (2 if rest.endswith("/>") else 1)
    return rest[:end] + "".join(declarations) + rest[end:]


def _single_quote_attributes(text: str) -> str:
    # lxml escapes '"', '<' and '>' inside attribute values, so inside a tag a value
    # is exactly "…" without a raw '"'; comments, CDATA and PIs are skipped by _TAG.
    def tag(match: re.Match[str]) -> str:
        return _ATTR.sub(lambda m: "='" + m.group(1)[1:-1].replace("'", "&apos;") + "'", match[0])

    return _TAG.sub(tag, text)


def edit(xml: str, edits: Iterable[Edit]) -> str:
    """Apply `edits` in order to the definition `xml`; return the new definition."""
    edits = list(edits)
    if not edits:
        return xml
    root = parse(xml)
    for one in edits:
        one.apply(root)
    return serialize(root, trailing=_trailing(xml))


def normalize(xml: str) -> str:
    """The definition as `edit` would print it unchanged (parse + serialize)."""
    return serialize(parse(xml), trailing=_trailing(xml))


def _trailing(xml: str) -> str:
    return xml[len(xml.rstrip()) :]


def unified_diff(before: str, after: str, name: str, current: str = "current, inactive") -> str:
    """The `--dry-run` diff of a definition; `current` says what the left side is."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"{name} ({current})",
        tofile=f"{name} (new)",
    )
    return "".join(lines)


# ---------------------------------------------------------------- tree helpers


def _indent_of(element: Any) -> str:
    """The whitespace before `element` on its line (from the previous node's text/tail)."""
    prev = element.getprevious()
    ws = (prev.tail if prev is not None else element.getparent().text) or ""
    return ws[ws.rfind("\n") :] if "\n" in ws else ws


def _child_indent(parent: Any) -> str:
    if len(parent):
        return _indent_of(parent[0])
    outer = _indent_of(parent) if parent.getparent() is not None else "\n"
    return (outer or "\n") + "  "


def _insert(parent: Any, child: Any, order: tuple[str, ...]) -> None:
    """Insert `child` before its first later sibling in `order`, indented like its siblings."""
    rank = order.index(child.tag) if child.tag in order else len(order)
    before = None
    for existing in parent:
        if isinstance(existing.tag, str) and existing.tag in order[rank + 1 :]:
            before = existing
            break
    indent = _child_indent(parent)
    if before is not None:
        # child takes `before`'s place; its tail is the indent `before` had
        before.addprevious(child)
        child.tail = indent
    elif len(parent):
        last = parent[-1]
        child.tail = last.tail
        last.tail = indent
        parent.append(child)
    else:
        closing = (parent.text or "") if "\n" in (parent.text or "") else None
        parent.text = indent
        child.tail = closing if closing is not None else indent[: max(1, len(indent) - 2)]
        parent.append(child)


def _remove(element: Any) -> None:
    """Remove `element` and the whitespace that introduced it; keep its tail's layout."""
    parent = element.getparent()
    prev = element.getprevious()
    tail = element.tail
    if prev is not None:
        prev.tail = tail
    else:
        parent.text = tail
    parent.remove(element)


def _make(tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> Any:
    from lxml import etree

    element = etree.Element(tag)
    for key, value in (attrs or {}).items():
        element.set(key, value)
    if text is not None:
        element.text = text
    return element


def _cpu(root: Any) -> Any:
    cpu = root.find("cpu")
    if cpu is None:
        cpu = _make("cpu")
        _insert(root, cpu, _DOMAIN_ORDER)
    return cpu


_CPU_ATTRS = ("mode", "match", "check", "migratable", "deprecated_features")


def _order_cpu_attributes(cpu: Any) -> None:
    """Put <cpu>'s attributes in libvirt's order (only when we changed them)."""
    items = dict(cpu.attrib)
    rank = {name: i for i, name in enumerate(_CPU_ATTRS)}
    cpu.attrib.clear()
    for key in sorted(items, key=lambda k: rank.get(k, len(rank))):
        cpu.set(key, items[key])


def _features(root: Any, name: str) -> list[Any]:
    return [f for f in root.findall("cpu/feature") if f.get("name") == name]


# ---------------------------------------------------------------------- edits


class Edit:
    """One change of the definition; subclasses are frozen dataclasses."""

    __slots__ = ()

    def apply(self, root: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SetCpuMode(Edit):
    """`<cpu mode='host-passthrough'|'host-model'|'maximum'>`, keeping topology/numa/features."""

    mode: str

    def apply(self, root: Any) -> None:
        cpu = _cpu(root)
        cpu.set("mode", self.mode)
        if "match" in cpu.attrib:
            del cpu.attrib["match"]
        if self.mode == "host-passthrough" and cpu.get("check") is None:
            cpu.set("check", "none")
        for node in cpu.findall("model") + cpu.findall("vendor"):
            _remove(node)
        if self.mode == "host-passthrough" and cpu.get("migratable") is None:
            cpu.set("migratable", "on")
        _order_cpu_attributes(cpu)


@dataclass(frozen=True, slots=True)
class SetCpuCustom(Edit):
    """`<cpu mode='custom' match='exact' check='none'><model fallback='allow'>MODEL</model>`.

    Used where there is no model to keep (no <cpu>, or a mode TCG cannot run).
    """

    model: str

    def apply(self, root: Any) -> None:
        cpu = _cpu(root)
        for key in ("migratable",):
            if key in cpu.attrib:
                del cpu.attrib[key]
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        cpu.set("check", "none")
        _order_cpu_attributes(cpu)
        model = cpu.find("model")
        if model is None:
            model = _make("model", {"fallback": "allow"})
            _insert(cpu, model, _CPU_ORDER)
        model.text = self.model


@dataclass(frozen=True, slots=True)
class SetCpuModel(Edit):
    """Replace the text of `<cpu><model>` (attributes kept)."""

    model: str

    def apply(self, root: Any) -> None:
        node = root.find("cpu/model")
        if node is None:
            SetCpuCustom(self.model).apply(root)
        else:
            node.text = self.model


@dataclass(frozen=True, slots=True)
class SetFeaturePolicy(Edit):
    """`<feature policy=POLICY name=NAME/>`: change it where present, else add it."""

    name: str
    policy: str

    def apply(self, root: Any) -> None:
        found = _features(root, self.name)
        if found:
            for node in found:
                node.set("policy", self.policy)
            return
        # attribute order as libvirt writes it: policy, then name
        _insert(
            _cpu(root), _make("feature", {"policy": self.policy, "name": self.name}), _CPU_ORDER
        )


@dataclass(frozen=True, slots=True)
class RenameFeature(Edit):
    """Turn `<feature name=OLD>` into `<feature policy=POLICY name=NEW>` in place.

    If NEW is already listed, set its policy and drop OLD instead.
    """

    old: str
    new: str
    policy: str = "require"

    def apply(self, root: Any) -> None:
        old = _features(root, self.old)
        if _features(root, self.new):
            SetFeaturePolicy(self.new, self.policy).apply(root)
            for node in old:
                _remove(node)
            return
        for i, node in enumerate(old):
            if i:
                _remove(node)
                continue
            node.set("policy", self.policy)
            node.set("name", self.new)


@dataclass(frozen=True, slots=True)
class RemoveFeature(Edit):
    name: str

    def apply(self, root: Any) -> None:
        for node in _features(root, self.name):
            _remove(node)


@dataclass(frozen=True, slots=True)
class CurrentMemoryToMemory(Edit):
    """`<currentMemory>` = `<memory>` (value and unit): no balloon headroom."""

    def apply(self, root: Any) -> None:
        memory, current = root.find("memory"), root.find("currentMemory")
        if memory is None or current is None:
            return
        current.text = memory.text
        for key in ("unit",):
            if memory.get(key) is not None:
                current.set(key, memory.get(key))
            elif key in current.attrib:
                del current.attrib[key]


@dataclass(frozen=True, slots=True)
class SetMemory(Edit):
    """`<memory>` (and `<currentMemory>` when present) = KIB KiB."""

    kib: int

    def apply(self, root: Any) -> None:
        if root.find("cpu/numa/cell") is not None:
            raise XmlError(
                "the domain splits its memory into NUMA cells (<cpu><numa>): change the cells' "
                "memory with `virsh edit` instead of --memory"
            )
        for tag in ("memory", "currentMemory"):
            node = root.find(tag)
            if node is None:
                if tag == "currentMemory":
                    continue
                node = _make("memory")
                _insert(root, node, _DOMAIN_ORDER)
            node.set("unit", "KiB")
            node.text = str(self.kib)


@dataclass(frozen=True, slots=True)
class RemoveMaxMemory(Edit):
    def apply(self, root: Any) -> None:
        others = [
            m.get("model") for m in root.findall("devices/memory") if m.get("model") != "virtio-mem"
        ]
        if others:
            raise XmlError(
                f"<maxMemory> is needed by memory device(s) ({', '.join(map(str, others))}): "
                "remove them first with `virsh edit`"
            )
        for node in root.findall("maxMemory"):
            _remove(node)


@dataclass(frozen=True, slots=True)
class RemoveVirtioMem(Edit):
    def apply(self, root: Any) -> None:
        for node in root.findall("devices/memory[@model='virtio-mem']"):
            _remove(node)


@dataclass(frozen=True, slots=True)
class DropFilterref(Edit):
    """Remove the `<filterref>` of the interface at INDEX (checked by MAC and filter name)."""

    index: int
    mac: str | None
    filter: str

    def apply(self, root: Any) -> None:
        for ref in _filterrefs(root, self.index, self.mac, self.filter):
            _remove(ref)


@dataclass(frozen=True, slots=True)
class SetFilterref(Edit):
    """Point the `<filterref>` of the interface at INDEX from FILTER to NEW (parameters kept)."""

    index: int
    mac: str | None
    filter: str
    new: str

    def apply(self, root: Any) -> None:
        for ref in _filterrefs(root, self.index, self.mac, self.filter):
            ref.set("filter", self.new)


def _filterrefs(root: Any, index: int, mac: str | None, name: str) -> list[Any]:
    """The `<filterref filter=NAME>` of the interface at INDEX, checked to still be the one
    with MAC (the plan was made from an earlier read)."""
    interfaces = root.findall("devices/interface")
    if index >= len(interfaces):
        raise XmlError(f"interface #{index} is gone from the definition")
    iface = interfaces[index]
    found = iface.find("mac")
    if mac is not None and (found is None or found.get("address") != mac):
        raise XmlError(f"interface #{index} no longer has MAC {mac}")
    return [ref for ref in iface.findall("filterref") if ref.get("filter") == name]


@dataclass(frozen=True, slots=True)
class ReplaceAll(Edit):
    """Replace the whole definition (undo): not an in-place edit, handled by `edit`."""

    xml: str

    def apply(self, root: Any) -> None:
        raise XmlError("ReplaceAll is applied by replacing the definition, not edited in place")


def render(xml: str, edits: Iterable[Edit]) -> str:
    """`edit`, except that a ReplaceAll makes the result exactly its XML (for undo)."""
    edits = list(edits)
    replacements = [e for e in edits if isinstance(e, ReplaceAll)]
    if replacements:
        return replacements[-1].xml
    return edit(xml, edits)


__all__ = [
    "CurrentMemoryToMemory",
    "DropFilterref",
    "Edit",
    "RemoveFeature",
    "RemoveMaxMemory",
    "RemoveVirtioMem",
    "RenameFeature",
    "ReplaceAll",
    "SetCpuCustom",
    "SetCpuMode",
    "SetCpuModel",
    "SetFeaturePolicy",
    "SetMemory",
    "XmlError",
    "edit",
    "normalize",
    "parse",
    "render",
    "serialize",
    "unified_diff",
]
