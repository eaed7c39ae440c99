"""NV-O03 checkpoint-apply-unsafe: `snapshot-revert` while running."""

from __future__ import annotations

from nestvirt.model import Severity

from .test_nv_o01 import hyperv, kvm, severities, unsafe


def test_nv_o03_revert_of_a_running_vm_follows_the_capability() -> None:
    found = kvm("snapshot-revert", nested_state_cap=0)
    assert unsafe(found) and found[0].code == "NV-O03"
    assert not unsafe(kvm("snapshot-revert", nested_state_cap=4096, host_vendor="intel"))
    assert unsafe(kvm("snapshot-revert", accel="tcg", nested_state_cap=4096))


def test_nv_o03_revert_of_an_off_vm_is_safe_with_a_warning() -> None:
    found = kvm("snapshot-revert", running=False, state="off")
    assert severities(found) == [Severity.WARNING]
    assert "restore" in found[0].message


def test_nv_o03_hyperv() -> None:
    assert severities(hyperv("snapshot-revert", config_version=(10, 0))) == [Severity.WARNING]
    assert unsafe(hyperv("snapshot-revert", config_version=(7, 1)))
    assert not unsafe(hyperv("snapshot-revert", exposes=False))
