"""The snapshot parser: strict about shape, one clear line naming the key, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import fixture, load_doc

from nestvirt.errors import NotFound, UsageError
from nestvirt.facts.hyperv import load_snapshot, parse_snapshot, parse_snapshot_text
from nestvirt.model import Unknown


def error_of(doc: Any) -> str:
    with pytest.raises(UsageError) as exc:
        parse_snapshot(doc, "snap.json")
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_example_from_product_md() -> None:
    snap = load_snapshot(fixture("ws2025-intel-demo.json"))
    assert snap.host.name == "HV01"
    assert snap.host.build == 26100 and isinstance(snap.host.build, int)
    assert snap.host.cpu_vendor == "intel"
    assert snap.host.free_physical_memory_bytes == 40_000_000 * 1024  # KiB → bytes
    vm = snap.vms[0]
    assert (vm.name, vm.state, vm.state_word, vm.version_tuple) == ("DemoVM", "Off", "off", (10, 0))
    assert vm.adapters[0].mac_address_spoofing == "Off"


def test_lists_read_first_entry() -> None:
    snap = load_snapshot(fixture("win11-amd-22631.json"))
    assert snap.host.cpu_vendor == "amd" and snap.host.build == 22631


def test_bom_is_accepted() -> None:
    assert load_snapshot(fixture("bom-utf8.json")).vms[0].name == "Nested01"


def test_nulls_and_unknown_markers_become_unknown() -> None:
    snap = load_snapshot(fixture("unknown-facts.json"))
    assert isinstance(snap.host.vbs_status, Unknown)
    assert isinstance(snap.host.hyperv_feature_state, Unknown)
    assert snap.host.bcd_hypervisor_load_options == Unknown("bcdedit: Access is denied.")
    assert not snap.host.vbs_status  # an Unknown never passes for a truthy fact


def test_bcd_null_means_not_set(demo_doc: dict[str, Any]) -> None:
    assert parse_snapshot(demo_doc).host.bcd_hypervisor_load_options is None


def test_single_objects_where_lists_expected(demo_doc: dict[str, Any]) -> None:
    vm = demo_doc["vms"][0]
    vm["Get-VMNetworkAdapter"] = vm["Get-VMNetworkAdapter"][0]  # PowerShell unwrapped it
    vm["Get-VMSnapshot"] = None  # an empty pipeline
    snap = parse_snapshot(demo_doc)
    assert len(snap.vms[0].adapters) == 1 and snap.vms[0].checkpoints == ()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "line 1, column 1"),
        ('{"schema": "nestvirt.hyperv-snapshot/1", "host": {', "line 1"),
        ("{'schema': 1}", "line 1, column 2"),
        ("[1, 2,", "line 1"),
        ("\x00", "line 1"),
    ],
)
def test_malformed_or_truncated_json(text: str, where: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_snapshot_text(text, "snap.json")
    msg = str(exc.value)
    assert msg.startswith("snap.json: not valid JSON") and where in msg and "\n" not in msg


def test_truncated_real_file(tmp_path: Path) -> None:
    data = fixture("ws2025-intel-demo.json").read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 3):
        p = tmp_path / "cut.json"
        p.write_bytes(data[:cut])
        with pytest.raises(UsageError, match="not valid JSON"):
            load_snapshot(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        load_snapshot(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="directory"):
        load_snapshot(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "utf16.json"
    p.write_bytes(json.dumps(load_doc("ws2025-intel-demo.json")).encode("utf-16"))
    with pytest.raises(UsageError, match="not UTF-8"):
        load_snapshot(p)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ("nestvirt.hyperv-snapshot/2", "schema: is 'nestvirt.hyperv-snapshot/2'"),
        ("nestvirt.status/1", "expected 'nestvirt.hyperv-snapshot/1'"),
        (None, "schema: is None"),
    ],
)
def test_wrong_schema(demo_doc: dict[str, Any], schema: Any, expected: str) -> None:
    demo_doc["schema"] = schema
    assert expected in error_of(demo_doc)


def test_not_an_object() -> None:
    assert "expected an object, got a list" in error_of([1, 2])


def delete(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split("/")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    del node[last]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("schema", "schema: missing"),
        ("host", "host: missing"),
        ("vms", "vms: missing"),
        ("host/Win32_Processor", "host.Win32_Processor: missing"),
        (
            "host/Win32_ComputerSystem/HypervisorPresent",
            "host.Win32_ComputerSystem.HypervisorPresent: missing",
        ),
        (
            "host/Win32_OperatingSystem/BuildNumber",
            "host.Win32_OperatingSystem.BuildNumber: missing",
        ),
        (
            "host/Win32_DeviceGuard/VirtualizationBasedSecurityStatus",
            "host.Win32_DeviceGuard.VirtualizationBasedSecurityStatus: missing",
        ),
        ("host/BcdHypervisorLoadOptions", "host.BcdHypervisorLoadOptions: missing"),
        ("vms/0/Get-VM/State", "vms[0].Get-VM.State: missing"),
        ("vms/0/Get-VMProcessor", "vms[0].Get-VMProcessor: missing"),
        ("vms/0/Get-VMMemory/Startup", "vms[0].Get-VMMemory.Startup: missing"),
        ("vms/0/Get-VMSnapshot", "vms[0].Get-VMSnapshot: missing"),
    ],
)
def test_missing_keys_are_named(demo_doc: dict[str, Any], path: str, named: str) -> None:
    delete(demo_doc, path)
    assert f"snap.json: {named}" == error_of(demo_doc)


@pytest.mark.parametrize(
    ("setter", "expected"),
    [
        (
            lambda d: d["host"]["Win32_OperatingSystem"].update(BuildNumber="26100a"),
            "BuildNumber: expected a build number",
        ),
        (
            lambda d: d["host"]["Win32_OperatingSystem"].update(BuildNumber=True),
            "BuildNumber: expected a build number",
        ),
        (
            lambda d: d["host"]["Win32_ComputerSystem"].update(HypervisorPresent="true"),
            "HypervisorPresent: expected true or false, got the string 'true'",
        ),
        (
            lambda d: d["host"]["Win32_DeviceGuard"].update(VirtualizationBasedSecurityStatus=2.5),
            "VirtualizationBasedSecurityStatus: expected an integer",
        ),
        (
            lambda d: d["host"]["Win32_DeviceGuard"].update(SecurityServicesRunning=[1, "2"]),
            "SecurityServicesRunning[1]: expected an integer",
        ),
        (
            lambda d: d["host"].update(HyperVFeatureState=2),
            "HyperVFeatureState: got the number 2: enum values must be written as strings",
        ),
        (
            lambda d: d["vms"][0]["Get-VM"].update(State=3),
            "vms[0].Get-VM.State: got the number 3: enum values must be written as strings",
        ),
        (
            lambda d: d["vms"][0]["Get-VM"].update(Version=10.0),
            "vms[0].Get-VM.Version: expected a string, got the number 10.0",
        ),
        (
            lambda d: d["vms"][0]["Get-VM"].update(Version="ten"),
            'vms[0].Get-VM.Version: expected a version like "10.0"',
        ),
        (
            lambda d: d["vms"][0]["Get-VMMemory"].update(Startup=-1),
            "Startup: expected a non-negative integer",
        ),
        (
            lambda d: d["vms"][0]["Get-VMNetworkAdapter"][0].update(MacAddressSpoofing=1),
            "vms[0].Get-VMNetworkAdapter[0].MacAddressSpoofing: got the number 1",
        ),
        (
            lambda d: d["vms"][0].update({"Get-VMSnapshot": "none"}),
            "vms[0].Get-VMSnapshot: expected a list",
        ),
        (lambda d: d["host"].update(Win32_Processor=[]), "host.Win32_Processor: is an empty list"),
        (lambda d: d.update(vms={}), "vms: expected a list, got an object"),
    ],
)
def test_mistyped_values_are_named(demo_doc: dict[str, Any], setter: Any, expected: str) -> None:
    setter(demo_doc)
    assert expected in error_of(demo_doc)


def test_select_unknown_vm(demo_doc: dict[str, Any]) -> None:
    snap = parse_snapshot(demo_doc)
    with pytest.raises(NotFound, match="no Hyper-V VM named 'Nope' on HV01"):
        snap.select(["Nope"])
    assert snap.select(["demovm"])[0].name == "DemoVM"  # Hyper-V names are case-insensitive
