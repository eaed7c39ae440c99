"""Issue 12: which Windows lifted which limit — the one table, and the rules that follow it."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from typing import Any

import pytest
from conftest import GIB, fixture, load_doc

from nestvirt import enable_hyperv, plan_hyperv, rules
from nestvirt.cli import main
from nestvirt.facts.hyperv import parse_snapshot
from nestvirt.model import Severity, Unknown
from nestvirt.platforms import hyperv as hyperv_platform
from nestvirt.preflight import hyperv_operation_facts
from nestvirt.rules import hyperv_table
from nestvirt.rules.operations import Operation, judge_facts

HYPERV_CODES = [
    *(f"NV-H{n}" for n in range(20, 30)),
    *(f"NV-V0{n}" for n in range(1, 9)),
    *(f"NV-O0{n}" for n in range(1, 5)),
]


def codes(findings: Any) -> dict[str, str]:
    return {f.code: str(f.severity) for f in findings}


@pytest.mark.parametrize("code", HYPERV_CODES)
def test_every_hyperv_rule_has_rows_and_sources_shown_by_explain(code: str) -> None:
    rows = hyperv_table.rows(code)
    assert rows and all(r.sources for r in rows)
    for r in rules.lookup(code):
        if r.platform in (rules.Platform.WINDOWS, rules.Platform.HYPERV):
            assert "## Versions" in r.doc and rows[0].says in r.doc
            assert all(s.url in r.doc for row in rows for s in row.sources)


def test_explain_prints_the_table_and_list_json_still_works(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["explain", "NV-H23"]) == 0
    out = capsys.readouterr().out
    assert "| < 14361 | any | error" in out and "| >= 14361 | any | nothing" in out
    assert "learn.microsoft.com" in out
    assert main(["explain", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"NV-H27", "NV-H28", "NV-H29"} <= {r["code"] for r in doc}


def test_preview_ranges_are_the_issues() -> None:
    assert hyperv_table.PREVIEW_BUILD == 10565 and hyperv_table.LIFTED_BUILD == 14361
    assert hyperv_table.is_preview_build(10565) is True
    assert hyperv_table.is_preview_build(14360) is True
    assert hyperv_table.is_preview_build(14361) is False
    assert hyperv_table.is_preview_build(Unknown("x")) is None
    assert hyperv_table.preview_limits(26100, (7, 1)) is True
    assert hyperv_table.preview_limits(10586, (8, 0)) is True
    assert hyperv_table.preview_limits(26100, (8, 0)) is False
    assert hyperv_table.preview_limits(None, (9, 0)) is False
    assert hyperv_table.preview_limits(26100, None) is None


# --- NV-O02 / NV-O03 follow the same table --------------------------------------


def op(operation: str, build: int | None, version: tuple[int, ...] | None) -> list[Any]:
    doc = load_doc("ws2025-intel-ready.json")
    doc["vms"][0]["Get-VM"]["State"] = "Running"
    if version is not None:
        doc["vms"][0]["Get-VM"]["Version"] = ".".join(map(str, version))
    snap = parse_snapshot(doc)
    facts = hyperv_operation_facts(
        snap.vms[0],
        Operation(operation),
        host_vendor="intel",
        assume_no_nested_guests=False,
        host_build=build,
    )
    return judge_facts(facts, rules.Platform.HYPERV)


@pytest.mark.parametrize("operation", ["save", "restore", "snapshot-revert"])
@pytest.mark.parametrize(
    ("build", "version", "severity"),
    [
        (10586, (8, 0), Severity.ERROR),  # the preview, exactly
        (14360, (12, 0), Severity.ERROR),
        (14361, (8, 0), Severity.WARNING),
        (26100, (12, 0), Severity.WARNING),
        (26100, (7, 1), Severity.ERROR),
        (None, (10, 0), Severity.WARNING),
    ],
)
def test_o02_o03_by_build_and_version(
    operation: str, build: int | None, version: tuple[int, ...], severity: Severity
) -> None:
    (finding,) = op(operation, build, version)
    assert finding.severity is severity
    if build is not None and build < 14361:
        assert f"preview build {build}" in finding.message


def test_o04_fix_quotes_the_vm_name() -> None:
    doc = load_doc("ws2025-intel-ready.json")
    doc["vms"][0]["Get-VM"]["State"] = "Running"
    doc["vms"][0]["Get-VM"]["Name"] = "x'; Remove-Item C:\\ -Recurse; '"
    snap = parse_snapshot(doc)
    facts = hyperv_operation_facts(
        snap.vms[0], Operation.MEMORY_RESIZE, host_vendor="intel", assume_no_nested_guests=False
    )
    (finding,) = judge_facts(facts, rules.Platform.HYPERV)
    assert finding.fix is not None
    # a nestvirt command (the plan holds the cmdlets), the name one quoted shell word
    assert finding.fix.startswith("nestvirt enable --hyperv HOST --memory SIZE --stop ")
    assert shlex.split(finding.fix)[-1] == "x'; Remove-Item C:\\ -Recurse; '"
    assert "Stop-VM" not in finding.fix and "Set-VMMemory" not in finding.fix
    dashed = replace(facts, vm="-x", host="HV 01")
    (finding,) = judge_facts(dashed, rules.Platform.HYPERV)
    assert finding.fix == "nestvirt enable --hyperv 'HV 01' --memory SIZE --stop -- -x"


# --- NV-H22: HypervisorPresent is not this machine's hypervisor --------------------


def host_codes(doc: dict[str, Any]) -> dict[str, str]:
    return codes(enable_hyperv.host_findings(parse_snapshot(doc).host))


def test_h22_in_a_vm_without_counters_says_so() -> None:
    snap = parse_snapshot(load_doc("vm-hypervisor-present-not-own.json"))
    assert snap.host.hypervisor_present is True and snap.host.machine_is_vm is True
    (f,) = [f for f in enable_hyperv.host_findings(snap.host) if f.code == "NV-H22"]
    assert "'Virtual Machine'" in f.message and "parent" in f.message


def test_h22_in_a_vm_with_counters_unknown_is_info_not_ready_nor_error(
    demo_doc: dict[str, Any],
) -> None:
    demo_doc["host"]["Win32_ComputerSystem"].update(
        {"Model": "VMware7,1", "Manufacturer": "VMware, Inc."}
    )
    assert host_codes(demo_doc) == {"NV-H22": "info"}  # no counters key: cannot tell
    demo_doc["host"]["Win32_PerfFormattedData_HvStats_HyperVHypervisor"] = {
        "unknown": "Get-CimInstance: Invalid class"
    }
    assert host_codes(demo_doc) == {"NV-H22": "info"}


def test_h22_physical_host_keeps_hypervisor_present(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["Win32_ComputerSystem"].update(
        {"Model": "PowerEdge R750", "Manufacturer": "Dell Inc."}
    )
    assert host_codes(demo_doc) == {}
    demo_doc["host"]["Win32_ComputerSystem"]["HypervisorPresent"] = False
    assert host_codes(demo_doc)["NV-H22"] == "error"


def test_h25_h26_judge_a_vm_whose_own_hypervisor_does_not_run() -> None:
    doc = load_doc("vm-hypervisor-present-not-own.json")
    doc["host"]["Win32_Processor"]["VirtualizationFirmwareEnabled"] = False
    assert host_codes(doc) == {"NV-H22": "error", "NV-H26": "error"}


def test_home_edition_names_the_edition() -> None:
    snap = parse_snapshot(load_doc("win11-home.json"))
    assert snap.host.hyperv_feature_state == "NotAvailable"
    (f,) = [f for f in enable_hyperv.host_findings(snap.host) if f.code == "NV-H22"]
    assert "Microsoft Windows 11 Home" in f.message and "Pro" in (f.fix or "")


def test_h29_names_the_reason_and_the_group() -> None:
    snap = parse_snapshot(load_doc("get-vm-access-denied.json"))
    (f,) = [f for f in enable_hyperv.host_findings(snap.host) if f.code == "NV-H29"]
    assert "required permission" in f.message and "S-1-5-32-578" in (f.fix or "")


def test_h29_non_admin_with_empty_list(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["CallerMayManageVMs"] = False
    assert host_codes(demo_doc) == {"NV-H29": "warning"}
    demo_doc["host"]["CallerMayManageVMs"] = True
    assert host_codes(demo_doc) == {}


def test_h27_only_for_an_old_l1_with_many_vcpus() -> None:
    doc = load_doc("ws2019-l1-240-vcpus.json")
    assert host_codes(doc) == {"NV-H27": "warning"}
    doc["host"]["Win32_ComputerSystem"]["NumberOfLogicalProcessors"] = 225
    assert host_codes(doc) == {}
    doc["host"]["Win32_ComputerSystem"]["NumberOfLogicalProcessors"] = 240
    doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = "20348"
    assert host_codes(doc) == {}
    doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = "17763"
    doc["host"]["Win32_ComputerSystem"]["Model"] = "PowerEdge R750"
    doc["host"]["Win32_ComputerSystem"]["Manufacturer"] = "Dell Inc."
    assert host_codes(doc) == {}  # a physical host: the note is about an L1


def test_h28_trusted_launch_only_on_azure() -> None:
    doc = load_doc("azure-trusted-launch.json")
    assert host_codes(doc) == {"NV-H28": "error"}
    doc["host"]["SecureBootUEFI"] = False
    doc["host"]["Get-Tpm"]["TpmPresent"] = False
    assert host_codes(doc) == {}  # Standard security type
    doc["host"]["SecureBootUEFI"] = {"unknown": "Cmdlet not supported on this platform"}
    del doc["host"]["Get-Tpm"]
    assert host_codes(doc) == {"NV-H28": "info"}
    doc["host"]["Win32_SystemEnclosure"]["SMBIOSAssetTag"] = "No Asset Tag"
    doc["host"]["SecureBootUEFI"] = True
    assert host_codes(doc) == {}  # not Azure


# --- VM rules ----------------------------------------------------------------------


def test_v06_fix_never_removes_every_checkpoint(demo_doc: dict[str, Any]) -> None:
    demo_doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = "10586"
    demo_doc["vms"][0]["Get-VMSnapshot"] = [
        {"Name": "Before update", "SnapshotType": "Standard"},
        {"Name": "Replica point", "SnapshotType": "AppConsistentReplica"},
        {"Name": "Recovery", "SnapshotType": "Recovery"},
    ]
    snap = parse_snapshot(demo_doc)
    (f,) = [f for f in enable_hyperv.vm_findings(snap.vms[0], snap.host) if f.code == "NV-V06"]
    assert f.severity is Severity.WARNING
    assert f.fix == "Remove-VMSnapshot -VMName 'DemoVM' -Name 'Before update'"
    assert "Get-VMSnapshot" not in (f.fix or "")
    demo_doc["vms"][0]["Get-VMSnapshot"] = demo_doc["vms"][0]["Get-VMSnapshot"][1:]
    snap = parse_snapshot(demo_doc)
    (f,) = [f for f in enable_hyperv.vm_findings(snap.vms[0], snap.host) if f.code == "NV-V06"]
    assert f.fix is None  # only Replica/Recovery ones: nothing to offer


def test_v05_v06_info_on_modern_hosts_warning_for_old_versions(demo_doc: dict[str, Any]) -> None:
    vm = demo_doc["vms"][0]
    vm["Get-VM"]["State"] = "Saved"
    vm["Get-VMSnapshot"] = [{"Name": "cp", "SnapshotType": "Standard"}]
    assert {k: v for k, v in vm_codes(demo_doc).items() if k in ("NV-V05", "NV-V06")} == {
        "NV-V05": "info",
        "NV-V06": "info",
    }
    vm["Get-VM"]["Version"] = "7.1"
    assert {k: v for k, v in vm_codes(demo_doc).items() if k in ("NV-V05", "NV-V06")} == {
        "NV-V05": "warning",
        "NV-V06": "warning",
    }


def vm_codes(doc: dict[str, Any]) -> dict[str, str]:
    snap = parse_snapshot(doc)
    return codes(enable_hyperv.vm_findings(snap.vms[0], snap.host))


def test_v04_nat_inside_the_guest_is_info(demo_doc: dict[str, Any]) -> None:
    vm = demo_doc["vms"][0]
    assert vm_codes(demo_doc)["NV-V04"] == "warning"
    vm["Get-NetNat"] = [{"Name": "NestedNAT", "InternalIPInterfaceAddressPrefix": "10.0.0.0/24"}]
    assert vm_codes(demo_doc)["NV-V04"] == "info"
    vm["Get-NetNat"] = {"unknown": "PowerShell Direct: the credential is invalid"}
    assert vm_codes(demo_doc)["NV-V04"] == "warning"


# --- enable: dynamic memory does not force a stop on a modern host -------------------


def plan_for(doc: dict[str, Any], *, stop: bool = False) -> Any:
    snap = parse_snapshot(doc)
    vm = snap.vms[0]
    findings = enable_hyperv.vm_findings(vm, snap.host)
    return plan_hyperv.plan_enable(
        vm,
        snap.host,
        findings,
        stop=stop,
        mac_spoofing=False,
        memory_bytes=None,
        install_hypervisor=False,
    )


def test_running_modern_vm_with_dynamic_memory_needs_no_stop() -> None:
    doc = load_doc("ws2025-dynamic-memory.json")
    doc["vms"][0]["Get-VM"]["State"] = "Running"
    plan = plan_for(doc)  # no --stop, and no UsageError
    assert plan.changes == () and any("dynamic memory stays on" in n for n in plan.notes)
    report = hyperv_platform.report_of(parse_snapshot(doc))
    assert str(report.vms[0].verdict) == "ready"


def test_preview_running_vm_with_dynamic_memory_still_needs_stop() -> None:
    from nestvirt.errors import UsageError

    doc = load_doc("ws2025-dynamic-memory.json")
    doc["host"]["Win32_OperatingSystem"]["BuildNumber"] = "10586"
    doc["vms"][0]["Get-VM"]["State"] = "Running"
    with pytest.raises(UsageError, match="--stop"):
        plan_for(doc)
    plan = plan_for(doc, stop=True)
    assert [c.action for c in plan.changes] == ["stop-vm", "disable-dynamic-memory"]


def test_off_modern_vm_turns_dynamic_memory_off_with_the_rest() -> None:
    doc = load_doc("ws2025-dynamic-memory.json")
    doc["vms"][0]["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = False
    plan = plan_for(doc)
    assert [c.action for c in plan.changes] == [
        "expose-virtualization-extensions",
        "disable-dynamic-memory",
    ]


def test_fixture_memory_is_as_generated() -> None:
    snap = parse_snapshot(json.loads(fixture("ws2025-dynamic-memory.json").read_text()))
    assert snap.vms[0].startup_bytes == 8 * GIB and snap.vms[0].dynamic_memory_enabled
