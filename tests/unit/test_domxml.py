"""domxml: round trips are byte-identical, each edit touches only its nodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestvirt import domxml
from nestvirt.errors import UsageError

LIBVIRT_STYLE = """<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>a&amp;b</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <description>x &lt;y&gt; "z"</description>
  <metadata>
    <app:i xmlns:app='urn:app' owner='o&apos;b'/>
  </metadata>
  <memory unit='KiB'>8388608</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <!-- user comment -->
  <devices>
    <memballoon model='virtio'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-s'/>
  </qemu:commandline>
</domain>

"""


def test_round_trip_is_byte_identical() -> None:
    assert domxml.normalize(LIBVIRT_STYLE) == LIBVIRT_STYLE
    assert domxml.edit(LIBVIRT_STYLE, []) == LIBVIRT_STYLE


def test_edit_touches_only_its_lines() -> None:
    out = domxml.edit(LIBVIRT_STYLE, [domxml.CurrentMemoryToMemory(),
                                       domxml.SetFeaturePolicy("svm", "require")])  # fmt: skip
    diff = [line for line in domxml.unified_diff(LIBVIRT_STYLE, out, "d").splitlines()
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]  # fmt: skip
    assert diff == [
        "-  <currentMemory unit='KiB'>2097152</currentMemory>",
        "+  <currentMemory unit='KiB'>8388608</currentMemory>",
        "+  <cpu>",
        "+    <feature policy='require' name='svm'/>",
        "+  </cpu>",
    ]


def test_rename_feature_when_target_exists() -> None:
    xml = ("<domain type='qemu'><cpu><feature policy='require' name='vmx'/>"
           "<feature policy='disable' name='svm'/></cpu></domain>")  # fmt: skip
    out = domxml.edit(xml, [domxml.RenameFeature("vmx", "svm")])
    assert out == "<domain type='qemu'><cpu><feature policy='require' name='svm'/></cpu></domain>"


def test_set_memory_refuses_numa_cells() -> None:
    xml = ("<domain type='kvm'><memory>1</memory><cpu><numa><cell id='0' cpus='0' "
           "memory='1'/></numa></cpu></domain>")  # fmt: skip
    with pytest.raises(UsageError, match="NUMA"):
        domxml.edit(xml, [domxml.SetMemory(4)])


def test_remove_max_memory_refuses_dimms() -> None:
    xml = ("<domain type='kvm'><maxMemory slots='2'>9</maxMemory><devices>"
           "<memory model='dimm'/></devices></domain>")  # fmt: skip
    with pytest.raises(UsageError, match="dimm"):
        domxml.edit(xml, [domxml.RemoveMaxMemory()])


def test_drop_filterref_checks_mac() -> None:
    xml = ("<domain type='kvm'><devices><interface type='network'><mac address='52:54:00:00:00:01'/>"
           "<filterref filter='no-mac-spoofing'/></interface></devices></domain>")  # fmt: skip
    out = domxml.edit(xml, [domxml.DropFilterref(0, "52:54:00:00:00:01", "no-mac-spoofing")])
    assert "filterref" not in out
    with pytest.raises(UsageError, match="MAC"):
        domxml.edit(xml, [domxml.DropFilterref(0, "52:54:00:00:00:02", "no-mac-spoofing")])


def test_malformed_xml_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="malformed"):
        domxml.parse("<domain><name>x</domain>")
    with pytest.raises(UsageError, match="not a libvirt domain"):
        domxml.parse("<network/>")


def test_render_replace_all_is_exact() -> None:
    assert domxml.render("<domain/>", [domxml.ReplaceAll("anything\n")]) == "anything\n"


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@settings(max_examples=200)
@given(
    attr=_text, text=_text, comment=_text.filter(lambda c: "--" not in c and not c.endswith("-"))
)
def test_round_trip_of_libvirt_style_text(attr: str, text: str, comment: str) -> None:
    """Whatever libvirt escapes, normalize(serialize(x)) is a fixpoint and keeps the values."""
    from lxml import etree

    root = etree.Element("domain")
    root.set("type", "kvm")
    child = etree.SubElement(root, "description")
    child.set("v", attr)
    child.text = text or None
    root.append(etree.Comment(comment))
    once = domxml.serialize(root)
    assert domxml.normalize(once) == once
    again = domxml.parse(once)
    assert again.find("description").get("v") == attr
    assert (again.find("description").text or "") == text
