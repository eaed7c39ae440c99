"""The Hyper-V side of the CLI, run in-process: status --snapshot, collect, enable --snapshot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hyperv"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "hyperv"))

from fake_powershell import FakePowerShell  # noqa: E402
from helpers import DEMO_PLAN, run, use_fake_powershell  # noqa: E402


def test_status_snapshot_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "status", "--snapshot", str(FIXTURES / "ws2025-intel-demo.json"), "--json"
    )
    assert code == 1, err  # DemoVM is not ready
    doc = json.loads(out)
    assert doc["schema"] == "nestvirt.status/1"
    assert doc["host"]["platform"] == "windows" and doc["host"]["verdict"] == "ready"
    (vm,) = doc["vms"]
    assert (vm["name"], vm["backend"], vm["state"], vm["verdict"]) == (
        "DemoVM",
        "hyperv",
        "off",
        "not-ready",
    )
    assert [f["code"] for f in vm["findings"]] == ["NV-V01", "NV-V02", "NV-V03", "NV-V04"]
    # issue 13: nestvirt's own command, reaching the snapshot's host by name (the cmdlets
    # are the plan's); DemoVM is off, so no --stop
    assert {f["code"]: f["fix"] for f in vm["findings"]} == {
        "NV-V01": "nestvirt enable --hyperv HV01 DemoVM",
        "NV-V02": "nestvirt enable --hyperv HV01 DemoVM",
        "NV-V03": "nestvirt enable --hyperv HV01 --memory 4GiB DemoVM",
        "NV-V04": "nestvirt enable --hyperv HV01 --mac-spoofing DemoVM",
    }
    assert doc["host"]["facts"]["reached_as"] == "HV01"


def test_status_local_fixes_say_hyperv_empty(
    capsys: pytest.CaptureFixture[str], fake_host: FakePowerShell
) -> None:
    """This Windows machine: `--hyperv ''`, so that the VM name is not taken for HOST."""
    code, out, err = run(capsys, "status", "--hyperv", "--json")
    assert code == 1, err
    (vm,) = json.loads(out)["vms"]
    fix = {f["code"]: f["fix"] for f in vm["findings"]}["NV-V03"]
    assert fix == "nestvirt enable --hyperv '' --memory 4GiB DemoVM"
    # the human output shows the same, and the fix's own form works: VM after --hyperv ''
    code, out, err = run(capsys, "status", "--hyperv", "", "DemoVM")
    assert code == 1 and out.count("nestvirt enable --hyperv ''") == 4, out + err


def test_status_snapshot_ready_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(
        capsys, "status", "--snapshot", str(FIXTURES / "ws2025-intel-ready.json"), "--json"
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "not valid JSON"),
        ('{"schema": "other/1"}', "schema: is 'other/1'"),
        ('{"schema": "nestvirt.hyperv-snapshot/1", "vms": []}', "host: missing"),
    ],
)
def test_status_bad_snapshot_exit_2_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, expected: str
) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    code, out, err = run(capsys, "status", "--snapshot", str(p), "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_status_unknown_vm_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(
        capsys, "status", "--snapshot", str(FIXTURES / "ws2025-intel-demo.json"), "Nope"
    )
    assert code == 2 and "no Hyper-V VM named 'Nope'" in err and err.count("\n") == 1


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch) -> FakePowerShell:
    """`--hyperv` with no HOST runs powershell.exe here; the fake plays it."""
    doc = json.loads((FIXTURES / "ws2025-intel-demo.json").read_text())
    fake = FakePowerShell(doc)
    use_fake_powershell(monkeypatch, fake)
    return fake


def test_collect_writes_snapshot_atomically(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_host: FakePowerShell
) -> None:
    out_file = tmp_path / "hv01.json"
    out_file.write_text("old")
    code, out, err = run(capsys, "collect", "--hyperv", "-o", str(out_file))
    assert code == 0, err
    assert "wrote" in err and "HV01" in err
    assert json.loads(out_file.read_text()) == fake_host.doc
    assert [p.name for p in tmp_path.iterdir()] == ["hv01.json"]  # no temp file left
    # and it reads back
    code, out, _ = run(capsys, "status", "--snapshot", str(out_file), "--json")
    assert json.loads(out)["vms"][0]["name"] == "DemoVM"


def test_collect_powershell_error_exit_2_file_untouched(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_host: FakePowerShell,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(args: dict[str, Any]) -> Any:
        raise RuntimeError("You do not have the required permission to complete this task.")

    monkeypatch.setattr(fake_host, "collect", boom)
    out_file = tmp_path / "hv01.json"
    out_file.write_text("old")
    code, _out, err = run(capsys, "collect", "--hyperv", "-o", str(out_file))
    assert code == 2
    assert err == "nestvirt: You do not have the required permission to complete this task.\n"
    assert out_file.read_text() == "old"


def test_collect_unknown_vm(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_host: FakePowerShell
) -> None:
    code, _out, err = run(capsys, "collect", "-o", str(tmp_path / "x.json"), "Nope")
    assert code == 2 and "no Hyper-V VM named 'Nope'" in err
    assert not (tmp_path / "x.json").exists()


def test_collect_missing_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_host: FakePowerShell
) -> None:
    code, _out, err = run(capsys, "collect", "-o", str(tmp_path / "no" / "x.json"))
    assert code == 2 and "does not exist" in err


def test_enable_snapshot_dry_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "enable",
        "--snapshot",
        str(FIXTURES / "ws2025-intel-demo.json"),
        "--dry-run",
        "--json",
        "DemoVM",
    )
    assert code == 0, err
    assert json.loads(out) == DEMO_PLAN


def test_enable_snapshot_dry_run_human(capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = str(FIXTURES / "ws2025-intel-demo.json")
    code, out, err = run(capsys, "enable", "--snapshot", snapshot, "--dry-run", "DemoVM")
    assert code == 0, err
    assert out.startswith("enable DemoVM: 2 change(s)\n")
    assert "by hand: Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true" in out
    assert '-  "ExposeVirtualizationExtensions": false,\n' in out
    assert '+  "ExposeVirtualizationExtensions": true,\n' in out
    assert out.endswith("dry run: nothing changed\n")


@pytest.mark.parametrize("command", ["enable", "disable", "undo"])
@pytest.mark.parametrize("extra", [[], ["--yes"], ["--json"]])
def test_snapshot_without_dry_run_exit_2(
    capsys: pytest.CaptureFixture[str], command: str, extra: list[str]
) -> None:
    snapshot = str(FIXTURES / "ws2025-intel-demo.json")
    code, out, err = run(capsys, command, "--snapshot", snapshot, *extra, "DemoVM")
    assert (code, out) == (2, "")
    assert err == "nestvirt: a snapshot is read-only: add --dry-run, or use --hyperv HOST\n"


def test_snapshot_unknown_vm_and_bad_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snapshot = str(FIXTURES / "ws2025-intel-demo.json")
    code, out, err = run(capsys, "enable", "--snapshot", snapshot, "--dry-run", "Nope")
    assert (code, out) == (2, "")
    assert err == "nestvirt: no Hyper-V VM named 'Nope' on HV01 (VMs: 'DemoVM')\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "nestvirt.hyperv-snapshot/1"')
    code, out, err = run(capsys, "enable", "--snapshot", str(bad), "--dry-run", "DemoVM")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "not valid JSON" in err


def test_snapshot_running_vm_and_host_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = json.loads((FIXTURES / "ws2025-intel-demo.json").read_text())
    doc["vms"][0]["Get-VM"]["State"] = "Running"
    path = tmp_path / "running.json"
    path.write_text(json.dumps(doc))
    code, _out, err = run(capsys, "enable", "--snapshot", str(path), "--dry-run", "DemoVM")
    assert code == 2 and "pass --stop" in err
    code, out, err = run(
        capsys, "enable", "--snapshot", str(path), "--dry-run", "--json", "--stop", "DemoVM"
    )
    assert code == 0, err
    assert [c["command"] for c in json.loads(out)["changes"]] == [
        "Stop-VM -Name 'DemoVM' -Force",
        "Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true",
        "Set-VMMemory -VMName 'DemoVM' -DynamicMemoryEnabled $false",
        "Start-VM -Name 'DemoVM'",
    ]
    doc["vms"][0]["Get-VM"]["Version"] = "5.0"  # NV-V08: no change fixes it
    path.write_text(json.dumps(doc))
    code, out, err = run(capsys, "enable", "--snapshot", str(path), "--dry-run", "--stop", "DemoVM")
    assert code == 1 and "cannot fix NV-V08" in out
    assert err.startswith("nestvirt: DemoVM: NV-V08 cannot be fixed:") and err.count("\n") == 1


def test_snapshot_disable_dry_run_and_history(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    snapshot = str(FIXTURES / "ws2025-intel-ready.json")
    doc = json.loads(Path(snapshot).read_text())
    name = doc["vms"][0]["Get-VM"]["Name"]
    code, out, err = run(capsys, "disable", "--snapshot", snapshot, "--dry-run", "--json", name)
    assert code == 0, err
    (change,) = json.loads(out)["changes"]
    assert change["action"] == "hide-virtualization-extensions"
    assert change["command"].endswith("-ExposeVirtualizationExtensions $false")
    code, out, err = run(capsys, "history", name, "--snapshot", snapshot)
    assert code == 0 and "no changes by nestvirt on hyperv://" in out, err
