"""NV-H20…H26 and NV-V01…V08 on Hyper-V, driven by snapshots (fixtures and built in the test)."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest
from conftest import GIB, fixture
from helpers import HOSTILE

from nestvirt import enable_hyperv, rules
from nestvirt.facts.hyperv import parse_snapshot
from nestvirt.model import Severity
from nestvirt.platforms import hyperv as hyperv_platform


def codes(findings: Any) -> dict[str, str]:
    return {f.code: str(f.severity) for f in findings}


def report(name: str) -> Any:
    return hyperv_platform.status_report(host=None, snapshot=str(fixture(name)), vm_names=[])


# file → (host findings {code: severity}, {vm: {code: severity}}, host verdict)
EXPECTED: dict[str, tuple[dict[str, str], dict[str, dict[str, str]]]] = {
    "ws2025-intel-demo.json": (
        {},
        {
            "DemoVM": {
                "NV-V01": "error",
                "NV-V02": "warning",  # issue 12: build 26100, memory just stays at Startup
                "NV-V03": "warning",
                "NV-V04": "warning",
            }
        },
    ),
    "ws2025-intel-ready.json": ({}, {"Nested01": {}}),
    "bom-utf8.json": ({}, {"Nested01": {}}),
    "win10-10240-intel.json": ({"NV-H20": "error"}, {"Old": {"NV-V08": "error"}}),
    "win10-10586-intel.json": ({"NV-H20": "warning"}, {"Insider": {"NV-V08": "error"}}),
    "ws2012r2-9600-intel.json": ({"NV-H20": "error"}, {}),
    "ws2016-intel-vbs1.json": ({}, {"V80": {}, "V50": {"NV-V08": "error"}}),
    "ws2019-amd.json": ({"NV-H21": "error"}, {"AmdVm": {"NV-V08": "error"}}),
    "ws2022-amd-vbs2.json": (
        {},  # issue 12: VBS and nesting work together since build 14361
        {"Amd90": {"NV-V08": "error"}, "Amd93": {}, "Amd100": {}},
    ),
    "win11-amd-22631.json": ({}, {"Dev": {}}),
    "bcd-offer-false.json": ({"NV-H24": "error"}, {}),
    "bcd-mixed-case.json": ({"NV-H24": "error"}, {}),
    "bcd-other-options.json": ({}, {}),
    "hyperv-feature-disabled.json": ({"NV-H22": "error"}, {}),
    "hypervisor-not-launched.json": ({"NV-H22": "error"}, {}),
    "no-slat.json": ({"NV-H22": "error", "NV-H25": "error"}, {}),
    "firmware-disabled.json": ({"NV-H22": "error", "NV-H26": "error"}, {}),
    "vm-states.json": (
        {},
        {
            # issue 12: build 26100 / version 10.0 — save and checkpoints work (info)
            "Saved1": {"NV-V05": "info", "NV-V07": "info"},
            "Running1": {"NV-V07": "info"},
            "Paused1": {"NV-V07": "info"},
            "Checkpointed": {"NV-V06": "info"},
            "ParentOnly": {"NV-V06": "info"},
            "TwoNics": {"NV-V04": "warning"},
            "NoNic": {},
        },
    ),
    # issue 12: the preview keeps the seed's verdicts; today's builds get today's
    "win10-10586-vbs2.json": (
        {"NV-H20": "warning", "NV-H23": "error"},
        {"Insider": {"NV-V08": "error"}},
    ),
    "ws2025-26100-vbs2.json": ({}, {"Nested02": {}}),
    "ws2025-dynamic-memory.json": ({}, {"DynMem": {"NV-V02": "warning"}}),
    "vm-hypervisor-present-not-own.json": ({"NV-H22": "error"}, {}),
    "vm-own-hypervisor-running.json": ({}, {}),
    "win11-home.json": ({"NV-H22": "error", "NV-H29": "warning"}, {}),
    "get-vm-access-denied.json": ({"NV-H29": "warning"}, {}),
    "azure-trusted-launch.json": ({"NV-H28": "error"}, {}),
    "ws2019-l1-240-vcpus.json": ({"NV-H27": "warning"}, {}),
    "unknown-facts.json": (
        {"NV-H22": "info", "NV-H23": "info", "NV-H24": "info"},
        {"Plain": {}},
    ),
    "unknown-vendor.json": (
        {"NV-H21": "info", "NV-H22": "info", "NV-H23": "info", "NV-H24": "info"},
        {"V90": {"NV-V08": "info"}},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_snapshot_verdicts(name: str) -> None:
    host_expected, vms_expected = EXPECTED[name]
    r = report(name)
    assert codes(r.host.findings) == host_expected
    assert {vm.name: codes(vm.findings) for vm in r.vms} == vms_expected
    assert str(r.host.verdict) == ("not-ready" if "error" in host_expected.values() else "ready")
    for vm in r.vms:
        want = "not-ready" if "error" in vms_expected[vm.name].values() else "ready"
        assert str(vm.verdict) == want, vm.name


def test_every_fixture_is_covered() -> None:
    from conftest import FIXTURES

    assert {p.name for p in FIXTURES.glob("*.json")} == set(EXPECTED)


def test_registered_per_platform() -> None:
    windows = {r.code for r in rules.rules_for(rules.Target.HOST, rules.Platform.WINDOWS)}
    hyperv_vm = {r.code for r in rules.rules_for(rules.Target.VM, rules.Platform.HYPERV)}
    assert windows >= {f"NV-H{n}" for n in range(20, 27)}
    assert hyperv_vm >= {f"NV-V0{n}" for n in range(1, 9)}
    (v02,) = [r for r in rules.lookup("NV-V02") if r.platform is rules.Platform.HYPERV]
    assert v02.severity is Severity.ERROR  # error on Hyper-V (RULES.md)
    for r in rules.all_rules():
        if r.platform in (rules.Platform.WINDOWS, rules.Platform.HYPERV):
            for heading in rules.HEADINGS:
                assert f"## {heading}" in r.doc, (r.code, heading)


# --- one rule at a time, on a document built in the test --------------------


def host_findings(doc: dict[str, Any]) -> dict[str, str]:
    snap = parse_snapshot(doc)
    return codes(enable_hyperv.host_findings(snap.host))


def vm_findings(doc: dict[str, Any]) -> dict[str, str]:
    snap = parse_snapshot(doc)
    return codes(enable_hyperv.vm_findings(snap.vms[0], snap.host))


@pytest.mark.parametrize(
    ("build", "severity"),
    [
        ("9600", "error"),
        ("10240", "error"),
        ("10564", "error"),
        # issue 12: the preview builds (10565 <= build < 14361) say so, as a warning
        ("10565", "warning"),
        ("10586", "warning"),
        ("14360", "warning"),
        ("14361", None),
        ("14393", None),
        ("17763", None),
        ("20348", None),
        ("26100", None),
        (100000, None),
    ],
)
def test_h20_build_compared_as_integer(
    demo_doc: dict[str, Any], build: Any, severity: str | None
) -> None:
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = build
    assert host_findings(demo_doc).get("NV-H20") == severity


def test_h20_message_has_real_build(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = "9600"
    f = next(
        f for f in enable_hyperv.host_findings(parse_snapshot(demo_doc).host) if f.code == "NV-H20"
    )
    assert "9600" in f.message and "10565" in f.message and "\n" not in f.message


@pytest.mark.parametrize(
    ("maker", "build", "fires"),
    [
        ("AuthenticAMD", "14393", True),
        ("AuthenticAMD", "17763", True),
        ("AuthenticAMD", "20347", True),
        ("AuthenticAMD", "20348", False),
        ("AuthenticAMD", "22000", False),
        ("AuthenticAMD", "26100", False),
        ("GenuineIntel", "14393", False),
        ("GenuineIntel", "17763", False),
    ],
)
def test_h21_amd_build(demo_doc: dict[str, Any], maker: str, build: str, fires: bool) -> None:
    demo_doc["host"]["Win32_Processor"]["Manufacturer"] = maker
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = build
    assert ("NV-H21" in host_findings(demo_doc)) is fires


@pytest.mark.parametrize(
    ("present", "feature", "fires"),
    [
        (True, "Enabled", False),
        (False, "Enabled", True),
        (True, "Disabled", True),
        (False, "Disabled", True),
        (False, "EnablePending", True),
    ],
)
def test_h22(demo_doc: dict[str, Any], present: bool, feature: str, fires: bool) -> None:
    demo_doc["host"]["Win32_ComputerSystem"]["HypervisorPresent"] = present
    demo_doc["host"]["HyperVFeatureState"] = feature
    assert ("NV-H22" in host_findings(demo_doc)) is fires


@pytest.mark.parametrize(
    ("status", "build", "severity"),
    [
        (0, "10586", None),
        (1, "10586", None),
        (2, "10586", "error"),  # the preview: VBS blocks nesting (the seed, exactly)
        (2, "14360", "error"),
        (2, "14361", None),  # issue 12: VBS and nesting work together since 14361
        (2, "26100", None),
        (1, "26100", None),
    ],
)
def test_h23_only_when_running_on_a_preview_build(
    demo_doc: dict[str, Any], status: int, build: str, severity: str | None
) -> None:
    demo_doc["host"]["Win32_DeviceGuard"]["VirtualizationBasedSecurityStatus"] = status
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = build
    found = enable_hyperv.host_findings(parse_snapshot(demo_doc).host)
    hit = [f for f in found if f.code == "NV-H23"]
    assert (str(hit[0].severity) if hit else None) == severity
    if hit:
        assert "preview" in hit[0].message and build in hit[0].message


def test_h23_unknown_build_is_a_warning_never_an_error(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["Win32_DeviceGuard"]["VirtualizationBasedSecurityStatus"] = 2
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = None
    assert host_findings(demo_doc)["NV-H23"] == "warning"


def test_h23_doc_cites_both_sources() -> None:
    (r,) = rules.lookup("NV-H23")
    assert "preview page" in r.doc and "learn.microsoft.com" in r.doc


@pytest.mark.parametrize(
    ("options", "fires"),
    [
        (None, False),
        ("OFFERNESTEDVIRT=FALSE", True),
        ("offernestedvirt=false", True),
        ("/DEBUG OFFERNESTEDVIRT=FALSE /X", True),
        ("OFFERNESTEDVIRT = FALSE", True),
        ("OFFERNESTEDVIRT=TRUE", False),
        ("NOOFFERNESTEDVIRT=FALSE", False),
        ("OFFERNESTEDVIRT=FALSEY", False),
        ("", False),
    ],
)
def test_h24_bcd(demo_doc: dict[str, Any], options: str | None, fires: bool) -> None:
    demo_doc["host"]["BcdHypervisorLoadOptions"] = options
    assert ("NV-H24" in host_findings(demo_doc)) is fires


def test_h24_fix_keeps_other_options(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["BcdHypervisorLoadOptions"] = "/DEBUG OFFERNESTEDVIRT=FALSE"
    f = next(
        f for f in enable_hyperv.host_findings(parse_snapshot(demo_doc).host) if f.code == "NV-H24"
    )
    assert f.fix is not None and "'/DEBUG'" in f.fix and "OFFERNESTEDVIRT" not in f.fix
    demo_doc["host"]["BcdHypervisorLoadOptions"] = "OFFERNESTEDVIRT=FALSE"
    f = next(
        f for f in enable_hyperv.host_findings(parse_snapshot(demo_doc).host) if f.code == "NV-H24"
    )
    assert f.fix is not None and f.fix.startswith("bcdedit /deletevalue '{current}'")


@pytest.mark.parametrize(
    ("slat", "present", "fires"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_h25_slat(demo_doc: dict[str, Any], slat: bool, present: bool, fires: bool) -> None:
    demo_doc["host"]["Win32_Processor"]["SecondLevelAddressTranslationExtensions"] = slat
    demo_doc["host"]["Win32_ComputerSystem"]["HypervisorPresent"] = present
    assert ("NV-H25" in host_findings(demo_doc)) is fires


@pytest.mark.parametrize(
    ("fw", "present", "fires"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_h26_firmware(demo_doc: dict[str, Any], fw: bool, present: bool, fires: bool) -> None:
    demo_doc["host"]["Win32_Processor"]["VirtualizationFirmwareEnabled"] = fw
    demo_doc["host"]["Win32_ComputerSystem"]["HypervisorPresent"] = present
    assert ("NV-H26" in host_findings(demo_doc)) is fires


def test_unknown_facts_are_never_errors(demo_doc: dict[str, Any]) -> None:
    h = demo_doc["host"]
    h["Win32_OperatingSystem"]["BuildNumber"] = None
    h["Win32_Processor"] = {"unknown": "Get-CimInstance: access denied"}
    h["Win32_ComputerSystem"]["HypervisorPresent"] = None
    h["Win32_DeviceGuard"] = None
    h["HyperVFeatureState"] = {"unknown": "Get-WindowsOptionalFeature: elevation required"}
    h["BcdHypervisorLoadOptions"] = {"unknown": "bcdedit: Access is denied."}
    found = enable_hyperv.host_findings(parse_snapshot(demo_doc).host)
    assert found and all(f.severity is Severity.INFO for f in found)
    assert all("not checked" in f.message for f in found)


def vm_doc(demo_doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(demo_doc)
    vm = doc["vms"][0]
    vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = True
    vm["Get-VMMemory"]["DynamicMemoryEnabled"] = False
    vm["Get-VMMemory"]["Startup"] = 8 * GIB
    vm["Get-VMNetworkAdapter"][0]["MacAddressSpoofing"] = "On"
    for path, value in changes.items():
        section, key = path.split("__")
        vm[section.replace("_", "-")][key] = value
    return doc


def test_ready_vm_has_no_findings(demo_doc: dict[str, Any]) -> None:
    assert vm_findings(vm_doc(demo_doc)) == {}


def test_v01(demo_doc: dict[str, Any]) -> None:
    doc = vm_doc(demo_doc, Get_VMProcessor__ExposeVirtualizationExtensions=False)
    assert vm_findings(doc) == {"NV-V01": "error"}


@pytest.mark.parametrize(
    ("build", "severity"),
    [("10586", "error"), ("14360", "error"), ("14361", "warning"), ("26100", "warning")],
)
def test_v02_error_on_preview_builds_warning_after(
    demo_doc: dict[str, Any], build: str, severity: str
) -> None:
    # issue 12: the old verdict (error on every build) was wrong after build 14361
    doc = vm_doc(demo_doc, Get_VMMemory__DynamicMemoryEnabled=True)
    doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = build
    assert vm_findings(doc) == {"NV-V02": severity}


@pytest.mark.parametrize(
    ("startup", "fires"),
    [(2 * GIB, True), (4 * GIB - 2**21, True), (4 * GIB, False), (16 * GIB, False)],
)
def test_v03(demo_doc: dict[str, Any], startup: int, fires: bool) -> None:
    doc = vm_doc(demo_doc, Get_VMMemory__Startup=startup)
    assert ("NV-V03" in vm_findings(doc)) is fires


def test_v04_one_finding_per_adapter_and_nat_hint(demo_doc: dict[str, Any]) -> None:
    doc = vm_doc(demo_doc)
    adapters = doc["vms"][0]["Get-VMNetworkAdapter"]
    adapters.append({"Name": "Lab", "MacAddressSpoofing": "Off", "SwitchName": None})
    adapters.append({"Name": "Ext", "MacAddressSpoofing": "Off", "SwitchName": "External"})
    snap = parse_snapshot(doc)
    found = [f for f in enable_hyperv.vm_findings(snap.vms[0], snap.host) if f.code == "NV-V04"]
    assert len(found) == 2
    assert all("NAT" in f.message for f in found)
    # enable turns spoofing on for every adapter (a parsed snapshot: the host as HOST)
    assert found[0].fix == "nestvirt enable --hyperv HOST --mac-spoofing DemoVM"


@pytest.mark.parametrize(
    ("state", "v05", "v07"),
    [
        ("Off", False, False),
        ("Running", False, True),
        ("Saved", True, True),
        ("FastSaved", True, True),
        ("Paused", False, True),
        ("Starting", False, True),
    ],
)
def test_v05_v07_states(demo_doc: dict[str, Any], state: str, v05: bool, v07: bool) -> None:
    found = vm_findings(vm_doc(demo_doc, Get_VM__State=state))
    assert ("NV-V05" in found) is v05
    assert ("NV-V07" in found) is v07


def test_v06_checkpoints(demo_doc: dict[str, Any]) -> None:
    doc = vm_doc(demo_doc)
    doc["vms"][0]["Get-VMSnapshot"] = [
        {"Name": f"cp{i}", "SnapshotType": "Standard"} for i in range(5)
    ]
    snap = parse_snapshot(doc)
    (f,) = [f for f in enable_hyperv.vm_findings(snap.vms[0], snap.host) if f.code == "NV-V06"]
    assert "5 checkpoint(s)" in f.message and "2 more" in f.message
    doc["vms"][0]["Get-VMSnapshot"] = []
    doc["vms"][0]["Get-VM"]["ParentCheckpointId"] = "5f1c2d3e-0000-4000-8000-000000000009"
    assert "NV-V06" in vm_findings(doc)


@pytest.mark.parametrize(
    ("maker", "version", "severity"),
    [
        ("GenuineIntel", "5.0", "error"),
        ("GenuineIntel", "7.1", "error"),
        ("GenuineIntel", "8.0", None),
        ("GenuineIntel", "9.0", None),
        ("GenuineIntel", "10.0", None),
        ("AuthenticAMD", "8.0", "error"),
        ("AuthenticAMD", "9.0", "error"),
        ("AuthenticAMD", "9.2", "error"),
        ("AuthenticAMD", "9.3", None),
        ("AuthenticAMD", "10.0", None),
        ("AuthenticAMD", "12.0", None),
        (None, "5.0", "error"),
        (None, "9.0", "info"),
        (None, "10.0", None),
    ],
)
def test_v08_numeric_versions(
    demo_doc: dict[str, Any], maker: str | None, version: str, severity: str | None
) -> None:
    doc = vm_doc(demo_doc, Get_VM__Version=version)
    doc["host"]["Win32_Processor"]["Manufacturer"] = maker
    assert vm_findings(doc).get("NV-V08") == severity


@pytest.mark.parametrize("name", HOSTILE)
def test_fixes_quote_hostile_names(demo_doc: dict[str, Any], name: str) -> None:
    from nestvirt.backends.hyperv_ps import ps_quote

    demo_doc["vms"][0]["Get-VM"]["Name"] = name
    demo_doc["vms"][0]["Get-VM"]["State"] = "Saved"
    snap = parse_snapshot(demo_doc)
    found = enable_hyperv.vm_findings(snap.vms[0], snap.host)
    for f in found:
        if f.fix and "VMName" in f.fix:
            assert ps_quote(name) in f.fix, f.code
    # the nestvirt fixes (issue 13): shell words, the name the last one
    enable = [f.fix for f in found if f.fix and f.fix.startswith("nestvirt enable ")]
    assert enable and all(shlex.split(fix)[-1] == name for fix in enable)
