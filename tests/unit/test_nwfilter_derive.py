"""The derived filter chain of `--mac-spoofing`: libvirt's own filters (dumped from
libvirt 9.0 into tests/unit/nwfilter/) and filters of a user's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from nestvirt.nwfilter_derive import DeriveError, derive

LIBVIRT_FILTERS = {
    p.stem: p.read_text() for p in (Path(__file__).parent / "nwfilter").glob("*.xml")
}


def refs(xml: str) -> list[str]:
    return [r.get("filter") for r in etree.fromstring(xml.encode()).findall("filterref")]


def test_clean_traffic_keeps_everything_but_the_address_checks() -> None:
    derived = derive("clean-traffic", LIBVIRT_FILTERS)
    assert derived.top == "nestvirt-nested-clean-traffic"
    assert derived.dropped == ("no-mac-spoofing", "no-ip-spoofing", "no-arp-spoofing")
    ((name, xml),) = derived.definitions
    assert name == derived.top
    root = etree.fromstring(xml.encode())
    assert root.get("name") == derived.top and root.get("chain") == "root"
    assert root.find("uuid") is None  # libvirt assigns one
    assert refs(xml) == ["allow-incoming-ipv4", "no-other-l2-traffic", "qemu-announce-self"]
    assert len(root.findall("rule")) == 2  # the accept rules of clean-traffic itself


def test_deterministic_so_vms_share_the_copies() -> None:
    assert derive("clean-traffic", LIBVIRT_FILTERS) == derive("clean-traffic", LIBVIRT_FILTERS)


def test_nested_includes_are_copied_on_the_way_down() -> None:
    filters = dict(LIBVIRT_FILTERS)
    filters["mine"] = "<filter name='mine' chain='root'><filterref filter='clean-traffic'/>" \
        "<filterref filter='allow-arp'/></filter>"  # fmt: skip
    derived = derive("mine", filters)
    assert derived.top == "nestvirt-nested-mine"
    names = [n for n, _ in derived.definitions]
    assert names == ["nestvirt-nested-clean-traffic", "nestvirt-nested-mine"]  # leaves first
    assert refs(dict(derived.definitions)["nestvirt-nested-mine"]) == [
        "nestvirt-nested-clean-traffic", "allow-arp"]  # fmt: skip


def test_own_rules_on_the_vms_address_are_dropped() -> None:
    filters = {
        "own": """<filter name='own' chain='mac'>
      <rule action='drop' direction='out' priority='500'><mac match='no' srcmacaddr='$MAC'/></rule>
      <rule action='drop' direction='out'><ip match='no' srcipaddr='$IP'/></rule>
      <rule action='accept' direction='out'><mac srcmacaddr='$MAC'/></rule>
      <rule action='drop' direction='in'><ip protocol='udp' dstportstart='9'/></rule>
    </filter>"""
    }
    derived = derive("own", filters)
    ((_, xml),) = derived.definitions
    kept = etree.fromstring(xml.encode()).findall("rule")
    assert [r.get("action") for r in kept] == ["accept", "drop"]
    assert len(derived.dropped) == 2 and all(
        d.startswith("own: its drop rule") for d in derived.dropped
    )


def test_a_chain_without_address_checks_is_left_alone() -> None:
    derived = derive("allow-arp", LIBVIRT_FILTERS)
    assert derived.top == "allow-arp" and derived.definitions == () and derived.dropped == ()


def test_the_top_filter_itself_dropped() -> None:
    assert derive("no-mac-spoofing", LIBVIRT_FILTERS).top == ""


def test_loops_and_missing_filters() -> None:
    loop = {"a": "<filter name='a'><filterref filter='b'/><filterref filter='no-ip-spoofing'/></filter>",
            "b": "<filter name='b'><filterref filter='a'/></filter>"}  # fmt: skip
    derived = derive("a", loop)
    assert derived.top == "nestvirt-nested-a" and derived.dropped == ("no-ip-spoofing",)
    with pytest.raises(DeriveError, match="'gone' could not be read"):
        derive("x", {"x": "<filter name='x'><filterref filter='gone'/></filter>"})
    with pytest.raises(DeriveError, match="not valid XML"):
        derive("x", {"x": "<filter"})
