"""NV-O01 live-migration-unsafe: the decision table for `migrate` (and the helpers of NV-O02…04)."""

from __future__ import annotations

from typing import Any

import pytest

from nestvirt.model import Finding, Severity, Unknown
from nestvirt.rules import Platform
from nestvirt.rules.operations import judge


def kvm(operation: str, **kw: Any) -> list[Finding]:
    args: dict[str, Any] = dict(exposes=True, running=True, nested_state_cap=0, host_vendor="intel")
    args.update(kw)
    return judge(operation, platform=Platform.LIBVIRT, vm="l1", **args)


def hyperv(operation: str, **kw: Any) -> list[Finding]:
    args: dict[str, Any] = dict(exposes=True, running=True, accel="hyperv", config_version=(9, 0))
    args.update(kw)
    return judge(operation, platform=Platform.HYPERV, vm="l1", **args)


def severities(findings: list[Finding]) -> list[Severity]:
    return [f.severity for f in findings]


def unsafe(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def test_nv_o01_no_capability_is_unsafe_on_any_vendor() -> None:
    for vendor in ("intel", "amd", "GenuineIntel", "AuthenticAMD"):
        found = kvm("migrate", nested_state_cap=0, host_vendor=vendor)
        assert unsafe(found), vendor
        assert found[0].code == "NV-O01"
        assert "KVM_CAP_NESTED_STATE=0" in found[0].message
        assert "cannot see inside" in found[0].message
        assert found[0].fix and "--offline" in found[0].fix


def test_nv_o01_capability_on_intel_is_safe() -> None:
    found = kvm("migrate", nested_state_cap=8192, host_vendor="GenuineIntel")
    assert severities(found) == [Severity.INFO]
    assert "KVM_CAP_NESTED_STATE=8192" in found[0].message


@pytest.mark.parametrize("vendor", ["amd", "AuthenticAMD", "HygonGenuine"])
def test_nv_o01_capability_on_amd_is_still_unsafe(vendor: str) -> None:
    found = kvm("migrate", nested_state_cap=8192, host_vendor=vendor)
    assert unsafe(found)
    assert "AMD" in found[0].message


def test_nv_o01_unknown_vendor_or_capability_is_unsafe() -> None:
    assert unsafe(kvm("migrate", nested_state_cap=8192, host_vendor=Unknown("no cpuinfo")))
    assert unsafe(kvm("migrate", nested_state_cap=8192, host_vendor="CentaurHauls"))
    found = kvm("migrate", nested_state_cap=Unknown("qemu+ssh://h/system is another host"))
    assert unsafe(found)
    assert "another host" in found[0].message


def test_nv_o01_tcg_ignores_the_kvm_capability() -> None:
    found = kvm("migrate", accel="tcg", nested_state_cap=8192, host_vendor="intel")
    assert unsafe(found)
    assert "TCG" in found[0].message


def test_nv_o01_safe_cases() -> None:
    assert severities(kvm("migrate", exposes=False)) == [Severity.INFO]
    assert severities(kvm("migrate", running=False, state="off")) == [Severity.INFO]
    found = kvm("migrate", assume_no_nested_guests=True)
    assert severities(found) == [Severity.INFO]
    assert "asserted" in found[0].message


def test_nv_o01_exposure_unknown_is_a_warning_not_an_error() -> None:
    found = kvm("migrate", exposes=Unknown("CPU model Foo not in the CPU map"))
    assert severities(found) == [Severity.WARNING]
    assert "could not tell" in found[0].message


def test_nv_o01_hyperv_is_unsafe_while_running() -> None:
    found = hyperv("migrate")
    assert unsafe(found) and found[0].code == "NV-O01"
    assert "cannot be live migrated" in found[0].message
    assert not unsafe(hyperv("migrate", running=False, state="off"))
    assert not unsafe(hyperv("migrate", assume_no_nested_guests=True))


def test_nv_o01_only_judges_migrate() -> None:
    assert all(f.code != "NV-O01" for f in kvm("save"))
