"""The preflight library: facts → OperationFacts, the host capability read, JSON, Hyper-V snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nestvirt import preflight as pf
from nestvirt.cli import main
from nestvirt.errors import UsageError
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Platform
from nestvirt.rules.operations import Operation, judge_facts, parse_operation
from tests.unit.rules.factories import domain

TCG_SVM = dict(
    domain_type="qemu",
    cpu_mode="custom",
    cpu_model="EPYC",
    cpu_features={"svm": "require"},
)


def test_exposure_uses_nv_v01s_test() -> None:
    assert pf.libvirt_exposure(domain())[0] is True  # host-passthrough on Intel
    exposed, why = pf.libvirt_exposure(domain(**TCG_SVM))
    assert exposed is True and "carries svm" in why
    hidden, why = pf.libvirt_exposure(
        domain(
            domain_type="qemu",
            cpu_mode="custom",
            cpu_model="qemu64",
            cpu_features={"svm": "disable"},
        )
    )
    assert hidden is False and "disable" in why
    # a named model under KVM: QEMU turns the extension off unless the definition requires it
    named, why = pf.libvirt_exposure(domain(cpu_mode="custom", cpu_model="Skylake-Client"))
    assert named is False and "unless the definition requires it" in why


def test_the_running_cpu_wins_over_an_edited_definition() -> None:
    vm = domain(
        state="running",
        cpu_features={"vmx": "disable"},
        live_cpu_features={"vmx": "require"},
        cpu_mode="custom",
        cpu_model="Skylake",
    )
    exposed, why = pf.libvirt_exposure(vm)
    assert exposed is True and "running CPU" in why


def test_operation_facts_from_libvirt() -> None:
    off = pf.libvirt_operation_facts(domain(**TCG_SVM), Operation.SAVE, nested_state_cap=0)
    assert off.running is False and off.accel == "tcg" and off.host_vendor == "intel"
    restore = pf.libvirt_operation_facts(domain(**TCG_SVM), Operation.RESTORE, nested_state_cap=0)
    assert restore.running is True  # a saved image always holds a running VM
    paused = pf.libvirt_operation_facts(
        domain(state="paused"), Operation.MIGRATE, nested_state_cap=1
    )
    assert paused.running is True and paused.accel == "kvm"


def test_nested_state_capability_reads_dev_kvm_or_the_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(pf.ENV_NESTED_STATE, "4096")
    assert pf.nested_state_capability() == 4096
    monkeypatch.setenv(pf.ENV_NESTED_STATE, "lots")
    assert isinstance(pf.nested_state_capability(), Unknown)
    monkeypatch.delenv(pf.ENV_NESTED_STATE)
    missing = pf.nested_state_capability(str(tmp_path / "kvm"))
    assert isinstance(missing, Unknown) and "does not exist" in missing.reason
    not_kvm = tmp_path / "file"
    not_kvm.write_text("")
    assert isinstance(pf.nested_state_capability(str(not_kvm)), Unknown)  # ENOTTY
    if Path("/dev/kvm").exists():
        assert isinstance(pf.nested_state_capability(), int | Unknown)


def test_ioctl_numbers_match_the_probe() -> None:
    from nestvirt.probe import kvm

    assert pf.KVM_CHECK_EXTENSION == kvm.KVM_CHECK_EXTENSION
    assert kvm.CAPABILITIES["nested_state"][0] == pf.KVM_CAP_NESTED_STATE


def test_cpu_vendor_here(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\n")
    assert pf.cpu_vendor_here(str(info)) == "amd"
    info.write_text("processor\t: 0\n")
    assert isinstance(pf.cpu_vendor_here(str(info)), Unknown)
    assert isinstance(pf.cpu_vendor_here(str(tmp_path / "none")), Unknown)


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///session", True),
        ("qemu+unix:///system", True),
        ("test:///default", True),
        ("qemu+ssh://root@h1/system", False),
        ("qemu+tls://h1.example:16514/system", False),
    ],
)
def test_local_uris(uri: str, local: bool) -> None:
    assert pf.is_local_uri(uri) is local


def test_parse_operation() -> None:
    assert parse_operation(" Snapshot-Revert ") is Operation.SNAPSHOT_REVERT
    with pytest.raises(UsageError, match="choose one of migrate"):
        parse_operation("fly")


def test_report_json_is_the_contract() -> None:
    finding = judge_facts(
        pf.libvirt_operation_facts(
            domain(**TCG_SVM, state="running"), Operation.SAVE, nested_state_cap=0
        ),
        Platform.LIBVIRT,
    )
    report = pf.PreflightReport("vm1", Operation.SAVE, "libvirt", tuple(finding))
    doc = report.to_json()
    assert list(doc) == ["schema", "vm", "operation", "safe", "findings"]
    assert doc["schema"] == "nestvirt.preflight/1" and doc["safe"] is False
    assert doc["findings"][0]["code"] == "NV-O02"
    assert set(doc["findings"][0]) == {"code", "name", "severity", "message", "fix"}


def test_options_are_exclusive() -> None:
    with pytest.raises(UsageError, match="one of"):
        pf.preflight("vm", "save", connect="qemu:///system", snapshot="x.json")


# ---------------------------------------------------------------- Hyper-V snapshots


def snapshot_doc(
    state: str = "Running", expose: bool = True, version: str = "10.0"
) -> dict[str, Any]:
    return {
        "schema": "nestvirt.hyperv-snapshot/1",
        "host": {
            "Win32_ComputerSystem": {
                "Name": "HV01",
                "HypervisorPresent": True,
                "TotalPhysicalMemory": 34359738368,
            },
            "Win32_Processor": {
                "Manufacturer": "GenuineIntel",
                "Name": "Xeon",
                "VirtualizationFirmwareEnabled": True,
                "SecondLevelAddressTranslationExtensions": True,
            },
            "Win32_OperatingSystem": {
                "BuildNumber": "26100",
                "Caption": "Windows Server",
                "FreePhysicalMemory": 20000000,
            },
            "Win32_DeviceGuard": {
                "VirtualizationBasedSecurityStatus": 0,
                "SecurityServicesRunning": [],
            },
            "HyperVFeatureState": "Enabled",
            "BcdHypervisorLoadOptions": None,
        },
        "vms": [
            {
                "Get-VM": {
                    "Name": "DemoVM",
                    "State": state,
                    "Version": version,
                    "Generation": 2,
                    "ParentCheckpointId": None,
                },
                "Get-VMProcessor": {"ExposeVirtualizationExtensions": expose, "Count": 2},
                "Get-VMMemory": {
                    "DynamicMemoryEnabled": False,
                    "Startup": 4294967296,
                    "Minimum": 536870912,
                    "Maximum": 1099511627776,
                },
                "Get-VMNetworkAdapter": [],
                "Get-VMSnapshot": [],
            }
        ],
    }


def write(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_hyperv_snapshot_verdicts(tmp_path: Path) -> None:
    running = write(tmp_path, snapshot_doc())
    assert not pf.preflight("DemoVM", "migrate", snapshot=running).safe
    assert not pf.preflight("demovm", "memory-resize", snapshot=running).safe
    save = pf.preflight("DemoVM", "save", snapshot=running)
    assert save.safe and [f.severity for f in save.findings] == [Severity.WARNING]
    old = write(tmp_path, snapshot_doc(version="5.0"))
    assert not pf.preflight("DemoVM", "save", snapshot=old).safe
    off = write(tmp_path, snapshot_doc(state="Off"))
    assert pf.preflight("DemoVM", "memory-resize", snapshot=off).safe
    hidden = write(tmp_path, snapshot_doc(expose=False))
    assert pf.preflight("DemoVM", "migrate", snapshot=hidden).safe


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = write(tmp_path, snapshot_doc())
    assert main(["preflight", "DemoVM", "migrate", "--snapshot", running, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.preflight/1" and doc["safe"] is False
    assert doc["vm"] == "DemoVM" and doc["operation"] == "migrate"
    assert (
        main(["preflight", "DemoVM", "migrate", "--snapshot", running, "--no-nested-guests"]) == 0
    )
    assert "safe" in capsys.readouterr().out
    assert main(["preflight", "Nope", "migrate", "--snapshot", running]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Nope" in err
    assert main(["preflight", "DemoVM", "fly", "--snapshot", running]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "bad.json").write_text("{")
    assert main(["preflight", "DemoVM", "save", "--snapshot", str(tmp_path / "bad.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
