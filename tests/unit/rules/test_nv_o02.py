"""NV-O02 save-restore-unsafe: `save` and `restore`."""

from __future__ import annotations

from nestvirt.model import Severity

from .test_nv_o01 import hyperv, kvm, severities, unsafe


def test_nv_o02_save_without_capability_is_unsafe() -> None:
    found = kvm("save", nested_state_cap=0)
    assert unsafe(found) and found[0].code == "NV-O02"
    assert found[0].fix and "shut" in found[0].fix


def test_nv_o02_save_of_an_off_vm_is_meaningless_and_safe() -> None:
    found = kvm("save", running=False, state="off")
    assert severities(found) == [Severity.INFO]
    assert "nothing to save" in found[0].message


def test_nv_o02_restore_is_always_judged_as_running() -> None:
    # the preflight passes running=True for restore; an image always holds a running VM
    assert unsafe(kvm("restore", nested_state_cap=0))
    assert not unsafe(kvm("restore", nested_state_cap=4096, host_vendor="intel"))
    assert unsafe(kvm("restore", nested_state_cap=4096, host_vendor="amd"))
    found = kvm("restore", accel="tcg")
    assert unsafe(found) and "boot" in (found[0].fix or "")


def test_nv_o02_not_exposed_or_asserted_is_safe() -> None:
    assert not unsafe(kvm("save", exposes=False))
    assert not unsafe(kvm("restore", assume_no_nested_guests=True))


def test_nv_o02_hyperv_lifted_from_version_8() -> None:
    found = hyperv("save", config_version=(8, 0))
    assert severities(found) == [Severity.WARNING]
    assert "14361" in found[0].message
    assert unsafe(hyperv("save", config_version=(5, 0)))
    assert unsafe(hyperv("restore", config_version=None))
    assert not unsafe(hyperv("save", running=False, state="off"))
