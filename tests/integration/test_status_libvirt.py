"""VM rules over domains defined on a real libvirtd: facts read back the way users' domains are."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from nestvirt import rules
from nestvirt.backends import libvirt as backend
from nestvirt.cli import main
from nestvirt.model import Severity
from nestvirt.rules import Platform, Target

from .conftest import domain_xml


def vm_codes(conn: object, dom: object) -> dict[str, Severity]:
    facts = backend.vm_facts(conn, dom)  # type: ignore[arg-type]
    return {f.code: f.severity for f in rules.run(Target.VM, Platform.LIBVIRT, facts)}


@pytest.mark.libvirt
@pytest.mark.parametrize(
    ("kind", "cpu", "hidden"),
    [
        ("kvm", "<cpu mode='host-passthrough'/>", False),
        ("kvm", "<cpu mode='host-model'/>", False),
        ("kvm", "<cpu mode='custom' match='exact'><model>kvm64</model></cpu>", True),
        ("kvm", "<cpu mode='host-passthrough'><feature policy='disable' name='{ext}'/></cpu>", True),
        ("kvm", "<cpu mode='custom' match='exact'><model>kvm64</model><feature policy='require' name='{ext}'/></cpu>", False),
        ("qemu", "<cpu mode='custom' match='exact' check='none'><model>EPYC</model><feature policy='require' name='svm'/></cpu>", False),
        ("qemu", "<cpu mode='custom' match='exact' check='none'><model>kvm64</model></cpu>", True),
        ("qemu", "<cpu mode='custom' match='exact' check='none'><model>Westmere</model><feature policy='require' name='vmx'/></cpu>", True),
        ("qemu", "<cpu mode='custom' match='exact' check='none'><model>qemu64</model><feature policy='forbid' name='svm'/></cpu>", True),
        ("qemu", "", False),  # no <cpu>: QEMU's qemu64 carries svm, which TCG emulates
        ("qemu", "<cpu mode='custom' match='exact' check='none'><model>Penryn</model><feature policy='require' name='svm'/></cpu>", True),
    ],
)  # fmt: skip
def test_nv_v01_on_real_definitions(
    qemu_conn: object, define: Callable[..., object], kind: str, cpu: str, hidden: bool
) -> None:
    vendor, offered = backend.host_cpu(qemu_conn)  # type: ignore[arg-type]
    ext = "svm" if vendor == "AMD" else "vmx"
    if kind == "kvm" and ext not in offered:
        hidden = True  # a host that offers KVM guests no extension (this CI machine) hides it
    dom = define("v01", type=kind, cpu=cpu.format(ext=ext))
    assert ("NV-V01" in vm_codes(qemu_conn, dom)) is hidden


@pytest.mark.libvirt
def test_nv_v02_v03_v10_memory_shapes(qemu_conn: object, define: Callable[..., object]) -> None:
    ballooned = define(
        "v02", memory=2048, current=1024, devices="<memballoon model='virtio'/>",
        cpu="<cpu mode='host-passthrough'/>",
    )  # fmt: skip
    found = vm_codes(qemu_conn, ballooned)
    assert found["NV-V02"] is Severity.WARNING
    assert found["NV-V03"] is Severity.WARNING
    assert found["NV-V10"] is Severity.INFO
    hotplug = define(
        "v02hp", extra_top="<maxMemory slots='4' unit='GiB'>16</maxMemory>",
        cpu="<cpu mode='host-passthrough'><numa><cell id='0' cpus='0' memory='4' unit='GiB'/></numa></cpu>",
    )  # fmt: skip
    assert "NV-V02" in vm_codes(qemu_conn, hotplug)
    static = define("v02ok", cpu="<cpu mode='host-passthrough'/>")
    assert not {"NV-V02", "NV-V03", "NV-V10"} & set(vm_codes(qemu_conn, static))


NWFILTER_INCLUDES_NO_SPOOF = """<filter name='{name}' chain='root'>
  <filterref filter='allow-arp'/>
  <filterref filter='no-mac-spoofing'/>
</filter>"""

NWFILTER_OWN_RULE = """<filter name='{name}' chain='mac'>
  <rule action='drop' direction='out' priority='500'>
    <mac match='no' srcmacaddr='$MAC'/>
  </rule>
</filter>"""


@pytest.mark.libvirt
@pytest.mark.parametrize(
    ("filter_xml", "blocks"),
    [
        (None, False),
        ("clean-traffic", True),  # libvirt's own: includes no-mac-spoofing
        ("allow-arp", False),
        (NWFILTER_INCLUDES_NO_SPOOF, True),
        (NWFILTER_OWN_RULE, True),
    ],
)
def test_nv_v04_nwfilters(
    qemu_conn: object, define: Callable[..., object], filter_xml: str | None, blocks: bool
) -> None:
    made = None
    name = filter_xml
    if filter_xml and filter_xml.startswith("<"):
        name = f"nvtest-filter-{abs(hash(filter_xml)) % 10**6}"
        made = qemu_conn.nwfilterDefineXML(filter_xml.format(name=name))  # type: ignore[attr-defined]
    ref = f"<filterref filter='{name}'/>" if name else ""
    iface = f"<interface type='network'><source network='default'/>{ref}</interface>"
    dom = define("v04", devices=iface, cpu="<cpu mode='host-passthrough'/>")
    try:
        assert ("NV-V04" in vm_codes(qemu_conn, dom)) is blocks
    finally:
        if made is not None:
            dom.undefine()  # type: ignore[attr-defined]  # a filter in use cannot go
            made.undefine()


@pytest.mark.libvirt
def test_nv_v05_v06_on_test_driver(test_conn: object) -> None:
    """Managed save and snapshots on libvirt's test driver (no daemon, no guest to boot)."""
    dom = test_conn.lookupByName("test")  # type: ignore[attr-defined]
    assert not {"NV-V05", "NV-V06"} & set(vm_codes(test_conn, dom))
    dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    dom.managedSave(0)
    found = vm_codes(test_conn, dom)
    assert found["NV-V05"] is Severity.WARNING and found["NV-V06"] is Severity.WARNING
    assert backend.domain_state(dom) == "saved"  # type: ignore[arg-type]


@pytest.mark.libvirt
def test_nv_v07_running_domain_on_test_driver(test_conn: object) -> None:
    dom = test_conn.lookupByName("test")  # type: ignore[attr-defined]
    assert dom.isActive()
    assert vm_codes(test_conn, dom)["NV-V07"] is Severity.INFO


@pytest.mark.libvirt
def test_nv_v09_vmx_on_amd_or_svm_on_intel(
    qemu_conn: object, define: Callable[..., object]
) -> None:
    vendor, _ = backend.host_cpu(qemu_conn)  # type: ignore[arg-type]
    other = "vmx" if vendor == "AMD" else "svm"
    cpu = f"<cpu mode='custom' match='exact' check='none'><model>qemu64</model><feature policy='require' name='{other}'/></cpu>"
    assert vm_codes(qemu_conn, define("v09", cpu=cpu))["NV-V09"] is Severity.ERROR


@pytest.mark.libvirt
def test_status_cli_json_for_named_vm(
    qemu_conn: object, define: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    dom = define(
        "cli", memory=1024, cpu="<cpu mode='custom' match='exact'><model>kvm64</model></cpu>"
    )
    code = main(["status", dom.name(), "--json"])  # type: ignore[attr-defined]
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "nestvirt.status/1"
    (vm,) = document["vms"]
    assert vm["name"] == dom.name() and vm["backend"] == "libvirt" and vm["state"] == "off"  # type: ignore[attr-defined]
    assert vm["verdict"] == "not-ready" and code == 1
    assert {f["code"] for f in vm["findings"]} >= {"NV-V01", "NV-V03"}
    assert set(vm["findings"][0]) == {"code", "name", "severity", "message", "fix"}


@pytest.mark.libvirt
def test_status_cli_unknown_vm_and_bad_uri(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nvtest-no-such-vm", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nvtest-no-such-vm" in err[0]
    assert main(["status", "--connect", "bogus:///nowhere"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_domain_xml_helper_is_well_formed() -> None:
    from lxml import etree

    assert etree.fromstring(domain_xml("x").encode()).findtext("name") == "x"


@pytest.mark.libvirt
def test_status_without_connect_reports_host_when_libvirt_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --connect and no daemon: one line on stderr, the host still reported."""
    from nestvirt import endpoint

    monkeypatch.setattr(endpoint, "DEFAULT_URI", "qemu:///system?socket=/nonexistent/libvirt-sock")
    code = main(["status", "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["vms"] == [] and document["host"]["platform"] == "linux"
    assert code in (0, 1)
    (line,) = captured.err.strip().splitlines()
    assert "reporting the host only" in line
