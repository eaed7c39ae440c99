"""NV-O04 memory-resize-unsafe: `memory-resize` while running."""

from __future__ import annotations

from nestvirt.model import Severity

from .test_nv_o01 import hyperv, kvm, severities, unsafe


def test_nv_o04_hyperv_running_is_unsafe_even_without_nested_guests() -> None:
    found = hyperv("memory-resize")
    assert unsafe(found) and found[0].code == "NV-O04"
    asserted = hyperv("memory-resize", assume_no_nested_guests=True)
    assert unsafe(asserted)
    assert "does not help" in asserted[0].message
    assert not unsafe(hyperv("memory-resize", running=False, state="off"))


def test_nv_o04_kvm_running_is_a_warning_whatever_the_capability() -> None:
    for cap in (0, 4096):
        found = kvm("memory-resize", nested_state_cap=cap)
        assert severities(found) == [Severity.WARNING]
        assert found[0].fix and "grow" in found[0].fix


def test_nv_o04_off_or_not_exposed_is_safe() -> None:
    assert severities(kvm("memory-resize", running=False, state="off")) == [Severity.INFO]
    assert severities(kvm("memory-resize", exposes=False)) == [Severity.INFO]
