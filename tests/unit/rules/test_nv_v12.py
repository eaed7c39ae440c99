"""NV-V12 domain-emulated: a TCG domain on a host whose libvirt offers KVM."""

from __future__ import annotations

import pytest

from nestvirt import rules
from nestvirt.rules import Platform, Target
from tests.unit.rules.factories import domain


def v12(**overrides: object) -> list[str]:
    found = rules.run(Target.VM, Platform.LIBVIRT, domain(**overrides))
    return [f.message for f in found if f.code == "NV-V12"]


def test_tcg_domain_on_a_kvm_host_fires_with_the_fix() -> None:
    (message,) = v12(domain_type="qemu", host_kvm=True)
    assert "tens of times slower" in message
    (finding,) = [
        f for f in rules.run(Target.VM, Platform.LIBVIRT, domain(domain_type="qemu", host_kvm=True))
        if f.code == "NV-V12"
    ]  # fmt: skip
    assert finding.fix is not None and "<domain type='kvm'>" in finding.fix


@pytest.mark.parametrize(
    ("domain_type", "host_kvm"),
    [("kvm", True), ("qemu", False), ("qemu", None), ("kvm", None)],
)
def test_kvm_domains_and_hosts_without_kvm_do_not_fire(
    domain_type: str, host_kvm: bool | None
) -> None:
    assert v12(domain_type=domain_type, host_kvm=host_kvm) == []


def test_quiet_where_kvm_offers_no_extension_to_nest_with() -> None:
    # like this project's machines: KVM runs guests but passes no vmx/svm; TCG is the way
    assert v12(domain_type="qemu", host_kvm=True, host_virt_extensions=()) == []
