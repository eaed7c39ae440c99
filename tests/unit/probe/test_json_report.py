"""`nestvirt.probe/1` JSON (PRODUCT.md, exactly) and the human report, from results built here."""

from __future__ import annotations

import json

from nestvirt.model import Evidence, Finding, Severity
from nestvirt.probe import SCHEMA, to_json
from nestvirt.probe.report import nesting_note, render_text
from nestvirt.probe.result import Failure, HypervisorInfo, ModeResult, ProbeResult, Stage

KVM_GUEST = HypervisorInfo(
    True, "KVMKVMKVM", "KVM", (Evidence("cpuid 0x40000000", "KVMKVMKVM", True),)
)
CAPS: dict[str, bool | int] = {
    "user_memory": True,
    "irqchip": True,
    "nested_state": 0,
    "immediate_exit": True,
    "max_vcpus": 1024,
}
OK = ProbeResult(
    ok=True,
    device="/dev/kvm",
    api_version=12,
    capabilities=CAPS,
    modes={"real": ModeResult(True, 200, 15.25), "long": ModeResult(True, 200, 14.5)},
    hypervisor=KVM_GUEST,
    virt_extensions=(),
    vendor_module="kvm_pvm",
    cpu_vendor="AuthenticAMD",
)
TIMEOUT = Failure(Stage.TIMEOUT, "the long-mode guest did not halt within 2 s (0 of 200 outs seen)")
FAILED = ProbeResult(
    ok=False,
    device="/dev/kvm",
    api_version=12,
    capabilities={**CAPS, "nested_state": 16384},
    modes={"real": ModeResult(True, 200, 3.0), "long": ModeResult(False, 0, None, TIMEOUT)},
    failure=TIMEOUT,
    hypervisor=HypervisorInfo(False, None, None, (Evidence("cpuid 1 ecx[31]", "0", True),)),
    virt_extensions=("vmx",),
    vendor_module="kvm_intel",
    cpu_vendor="GenuineIntel",
)
H07 = Finding("NV-H07", "kvm-not-functional", Severity.ERROR, "KVM could not run a guest", "x")


def check_shape(doc: dict[str, object]) -> None:
    assert list(doc) == [
        "schema",
        "ok",
        "api_version",
        "modes",
        "hypervisor",
        "virt_extensions",
        "findings",
    ]
    assert doc["schema"] == SCHEMA == "nestvirt.probe/1"
    assert isinstance(doc["ok"], bool)
    assert doc["api_version"] is None or type(doc["api_version"]) is int
    modes = doc["modes"]
    assert isinstance(modes, dict)
    for mode in modes.values():
        assert list(mode) == ["ok", "exits", "us_per_exit"]
        assert isinstance(mode["ok"], bool)
        assert type(mode["exits"]) is int
        assert mode["us_per_exit"] is None or type(mode["us_per_exit"]) is float
    hypervisor = doc["hypervisor"]
    assert isinstance(hypervisor, dict)
    assert list(hypervisor) == ["present", "signature", "name"]
    assert isinstance(doc["virt_extensions"], list)
    assert isinstance(doc["findings"], list)
    assert json.loads(json.dumps(doc)) == doc


def test_json_of_a_good_run() -> None:
    doc = to_json(OK, [])
    check_shape(doc)
    assert doc == {
        "schema": "nestvirt.probe/1",
        "ok": True,
        "api_version": 12,
        "modes": {
            "real": {"ok": True, "exits": 200, "us_per_exit": 15.25},
            "long": {"ok": True, "exits": 200, "us_per_exit": 14.5},
        },
        "hypervisor": {"present": True, "signature": "KVMKVMKVM", "name": "KVM"},
        "virt_extensions": [],
        "findings": [],
    }


def test_json_of_a_failed_run_carries_findings() -> None:
    doc = to_json(FAILED, [H07])
    check_shape(doc)
    assert doc["ok"] is False
    assert doc["modes"]["long"] == {"ok": False, "exits": 0, "us_per_exit": None}
    assert doc["hypervisor"] == {"present": False, "signature": None, "name": None}
    assert doc["virt_extensions"] == ["vmx"]
    assert doc["findings"] == [H07.to_json()]


def test_json_without_device() -> None:
    no_device = Failure(Stage.NO_DEVICE, "/dev/kvm does not exist")
    result = ProbeResult(
        False,
        "/dev/kvm",
        None,
        modes={"real": ModeResult(False, 0, None, no_device)},
        failure=no_device,
    )
    doc = to_json(result, [])
    check_shape(doc)
    assert doc["api_version"] is None
    assert doc["hypervisor"] == {"present": False, "signature": None, "name": None}


def test_report_of_this_kind_of_machine() -> None:
    text = render_text(OK, [])
    lines = text.splitlines()
    assert lines[0] == "/dev/kvm runs guests (KVM API 12, module kvm_pvm)"
    assert lines[1].split() == ["real", "mode", "(16-bit)", "ok", "200", "exits", "15.2", "µs/exit"]
    assert lines[2].split()[3:] == ["ok", "200", "exits", "14.5", "µs/exit"]
    assert "nested state no" in text
    assert "CPU: AuthenticAMD, no vmx/svm in CPUID" in text
    assert "runs under: KVM, CPUID signature 'KVMKVMKVM'" in text
    assert "served by kvm_pvm" in text
    assert "KVM_CAP_NESTED_STATE is 0" in text


def test_report_of_a_failure_names_the_stage_and_findings() -> None:
    text = render_text(FAILED, [H07])
    assert "/dev/kvm cannot run guests" in text
    assert "FAILED  timeout: the long-mode guest did not halt" in text
    assert "nested state yes (16384 bytes)" in text
    assert "NV-H07 error" in text and "fix: x" in text
    assert "runs under: no hypervisor (bare metal)" in text


def test_nesting_note_for_hardware_kvm() -> None:
    note = " ".join(nesting_note(FAILED))
    assert "uses the CPU's vmx" in note
    assert "kvm_intel's `nested` parameter" in note
    assert "can be saved or migrated" in note


def test_nesting_note_when_nothing_runs() -> None:
    failure = Failure(Stage.DENIED, "cannot open /dev/kvm: EACCES")
    result = ProbeResult(False, "/dev/kvm", None, failure=failure, hypervisor=KVM_GUEST)
    note = nesting_note(result)
    assert note[0].startswith("this machine is itself a guest of KVM")
    assert note[-1].startswith("KVM cannot run guests here")
