"""Report building from the guest's JSON: the nestvirt.lab/1 contract, exactly."""

from __future__ import annotations

from typing import Any

from nestvirt.lab import report
from nestvirt.model import Evidence, Finding, Severity
from nestvirt.probe.result import HypervisorInfo, ModeResult, ProbeResult

KEYS = {"schema", "ok", "seconds", "accel", "levels", "findings"}
LEVEL_KEYS = {"depth", "role", "hypervisor", "virt_extensions", "kvm_ok", "us_per_exit"}


def host_probe(ok: bool = True) -> ProbeResult:
    return ProbeResult(
        ok=ok, device="/dev/kvm", api_version=12,
        modes={"real": ModeResult(ok, 200, 12.345 if ok else None)},
        hypervisor=HypervisorInfo(True, "KVMKVMKVM", "KVM", (Evidence("cpuid", "KVMKVMKVM", True),)),
        virt_extensions=(), vendor_module="kvm_pvm",
    )  # fmt: skip


def guest(ok: bool = True) -> dict[str, Any]:
    probe = {
        "schema": "nestvirt.probe/1", "ok": ok, "api_version": 12,
        "modes": {"real": {"ok": ok, "exits": 200, "us_per_exit": 205.4 if ok else None},
                  "long": {"ok": ok, "exits": 200, "us_per_exit": 230.0 if ok else None}},
        "hypervisor": {"present": True, "signature": "TCGTCGTCGTCG", "name": "QEMU (TCG)"},
        "virt_extensions": ["svm"] if ok else [],
        "findings": [] if ok else [{"code": "NV-H05", "name": "kvm-device-inaccessible",
                                    "severity": "error", "message": "/dev/kvm does not exist",
                                    "fix": "modprobe kvm_amd"}],
    }  # fmt: skip
    return {
        "schema": "nestvirt.lab-guest/1", "virt_extensions": ["svm"] if ok else [],
        "dev_kvm": ok, "vendor_module": "kvm_amd", "nested_param": "1" if ok else None,
        "modules": [{"name": "kvm", "ok": True, "error": None},
                    {"name": "kvm_amd", "ok": ok, "error": None if ok else "Operation not supported"}],
        "probe": probe, "probe_error": None,
    }  # fmt: skip


def test_positive_run_matches_the_contract() -> None:
    lab = report.build(accel="tcg", seconds=9.87654, host=report.host_level(host_probe()),
                       guest=guest(), findings=[])  # fmt: skip
    doc = lab.to_json()
    assert set(doc) == KEYS and doc["schema"] == "nestvirt.lab/1"
    assert doc["ok"] is True and doc["seconds"] == 9.88 and doc["accel"] == "tcg"
    assert [set(level) for level in doc["levels"]] == [LEVEL_KEYS, LEVEL_KEYS]
    host, vm = doc["levels"]
    assert host == {"depth": 0, "role": "host", "hypervisor": "KVM", "virt_extensions": [],
                    "kvm_ok": True, "us_per_exit": 12.35}  # fmt: skip
    assert vm == {"depth": 1, "role": "lab-vm", "hypervisor": "QEMU (TCG)",
                  "virt_extensions": ["svm"], "kvm_ok": True, "us_per_exit": 205.4}  # fmt: skip
    assert doc["findings"] == []


def test_negative_control_fails_at_depth_1_with_what_the_guest_saw() -> None:
    v01 = Finding("NV-V01", "virt-extensions-hidden", Severity.ERROR, "svm hidden", "x")
    lab = report.build(accel="tcg", seconds=1.0, host=report.host_level(host_probe()),
                       guest=guest(ok=False), findings=[v01])  # fmt: skip
    doc = lab.to_json()
    assert doc["ok"] is False
    vm = doc["levels"][1]
    assert vm["kvm_ok"] is False and vm["virt_extensions"] == [] and vm["us_per_exit"] is None
    codes = [f["code"] for f in doc["findings"]]
    assert codes == ["NV-V01", "NV-H05"]
    assert doc["findings"][1]["message"].startswith("lab VM (depth 1): ")
    assert report.what_guest_saw(lab.levels[1]) == "no svm/vmx, no /dev/kvm"
    assert "kvm_amd: Operation not supported" in (lab.levels[1].detail or "")


def test_no_guest_report_means_not_ok_and_only_the_host_level() -> None:
    lab = report.build(accel="tcg", seconds=1.0, host=report.host_level(host_probe()),
                       guest=None, findings=[])  # fmt: skip
    assert lab.ok is False and [lvl.depth for lvl in lab.levels] == [0]


def test_guest_error_is_the_detail() -> None:
    level = report.guest_level({"schema": "nestvirt.lab-guest/1", "error": "python3 did not run"})
    assert level.kvm_ok is False and level.detail == "python3 did not run"


def test_host_probe_missing() -> None:
    level = report.host_level(None, "the probe is not available")
    assert level.kvm_ok is False and level.us_per_exit is None
