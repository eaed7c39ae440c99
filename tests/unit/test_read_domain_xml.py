"""read_domain_xml reads a <domain> in one pass over its children; it must answer what
the find()/findall() of each field answers (the reference below), with lxml and with
xml.etree, whatever the order, repetition or absence of the elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from nestvirt.facts.libvirt_vm import DomainXml, read_domain_parts, read_domain_xml
from nestvirt.vocabulary import xml_kib

XML = Path(__file__).resolve().parent / "xml"


def reference(root: Any) -> DomainXml:
    """read_domain_xml as it was: one find() a field."""

    def kib(element: Any) -> int:
        return 0 if element is None else xml_kib(element.text, element.get("unit", "KiB"))

    cpu = root.find("cpu")
    balloon = root.find("devices/memballoon")
    max_memory = root.find("maxMemory")
    current = root.find("currentMemory")
    return DomainXml(
        name=root.findtext("name") or "",
        domain_type=root.get("type", ""),
        cpu_mode=None if cpu is None else cpu.get("mode", "custom"),
        cpu_model=None if cpu is None else cpu.findtext("model"),
        cpu_features={
            f.get("name"): f.get("policy", "require")
            for f in root.findall("cpu/feature")
            if f.get("name")
        },
        memory_kib=kib(root.find("memory")),
        current_memory_kib=kib(root.find("memory") if current is None else current),
        max_memory_kib=None if max_memory is None else kib(max_memory),
        virtio_mem_devices=len(root.findall("devices/memory[@model='virtio-mem']")),
        balloon_model=None if balloon is None else balloon.get("model"),
    )


@pytest.mark.parametrize("path", sorted(XML.glob("*.xml")), ids=lambda p: p.name)
def test_fixtures_read_as_find_reads_them(path: Path) -> None:
    for root in (etree.fromstring(path.read_bytes()), ET.fromstring(path.read_bytes())):
        assert read_domain_xml(root) == reference(root)


_FEATURE = st.builds(
    lambda name, policy: f"<feature{name}{policy}/>",
    st.sampled_from(["", " name='svm'", " name='vmx'", " name=''"]),
    st.sampled_from(["", " policy='disable'", " policy='require'"]),
)
_CPU = st.builds(
    lambda mode, model, features: f"<cpu{mode}>{model}{''.join(features)}</cpu>",
    st.sampled_from(["", " mode='host-model'", " mode='custom'"]),
    st.sampled_from(["", "<model>EPYC</model>", "<model/>", "<model>a</model><model>b</model>"]),
    st.lists(_FEATURE, max_size=3),
)
_MEMORY = st.builds(
    lambda tag, unit, value: f"<{tag}{unit}>{value}</{tag}>",
    st.sampled_from(["memory", "currentMemory", "maxMemory"]),
    st.sampled_from(["", " unit='MiB'", " unit='KiB'", " unit='G'"]),
    st.integers(0, 4096),
)
_DEVICE = st.sampled_from(
    [
        "<memballoon model='virtio'/>",
        "<memballoon model='none'/>",
        "<memballoon/>",
        "<memory model='virtio-mem'/>",
        "<memory model='dimm'/>",
        "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
        "<!-- a comment -->",
        "<interface type='network'/>",
    ]
)
_DEVICES = st.lists(_DEVICE, max_size=5).map(lambda d: f"<devices>{''.join(d)}</devices>")
_CHILD = st.one_of(
    st.sampled_from(["<name>vm</name>", "<name/>", "<name>other</name>", "<!-- c -->", "<os/>"]),
    _CPU,
    _MEMORY,
    _DEVICES,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["", " type='kvm'", " type='qemu'"]), st.lists(_CHILD, max_size=8))
def test_any_domain_reads_as_find_reads_it(kind: str, children: list[str]) -> None:
    text = f"<domain{kind}>{''.join(children)}</domain>"
    for root in (etree.fromstring(text), ET.fromstring(text)):
        domain, first = read_domain_parts(root)
        assert domain == reference(root)
        for path in ("cpu", "features", "os", "devices/emulator", "devices/memballoon"):
            assert first.get(path) is root.find(path) or first.get(path) == root.find(path)
