"""Each Linux host rule: one case that fires, one that does not (facts built here)."""

from __future__ import annotations

import pytest

from nestvirt import rules
from nestvirt.facts.linux_host import KvmDevice, LibvirtQemuAccess, msr_says_disabled
from nestvirt.model import Severity, Unknown, verdict_of
from nestvirt.probe.result import HypervisorInfo, Stage
from nestvirt.rules import Platform, Target
from tests.unit.rules.factories import GIB, OK_PROBE, bare_metal_intel, failed_probe


def codes(facts: object) -> dict[str, Severity]:
    return {f.code: f.severity for f in rules.run(Target.HOST, Platform.LINUX, facts)}


def test_clean_intel_host_has_no_findings() -> None:
    assert codes(bare_metal_intel()) == {}


def test_nv_h01_no_flags_and_no_guest_is_error() -> None:
    facts = bare_metal_intel(cpu_virt_flags=(), probe=failed_probe(Stage.CREATE_VM, "ENXIO"))
    assert codes(facts)["NV-H01"] is Severity.ERROR


def test_nv_h01_no_flags_but_guests_run_is_warning_naming_module() -> None:
    facts = bare_metal_intel(cpu_virt_flags=(), kvm_vendor_modules=("kvm_pvm",), nested={})
    (finding,) = [f for f in rules.run(Target.HOST, Platform.LINUX, facts) if f.code == "NV-H01"]
    assert finding.severity is Severity.WARNING
    assert "kvm_pvm" in finding.message


def test_nv_h01_no_flags_no_device_is_error() -> None:
    facts = bare_metal_intel(
        cpu_virt_flags=(), probe=None, kvm_device=KvmDevice(False, False), kvm_vendor_modules=()
    )
    assert codes(facts)["NV-H01"] is Severity.ERROR


def test_nv_h02_fires_only_on_disabled_firmware() -> None:
    assert "NV-H02" in codes(bare_metal_intel(firmware_virt="disabled"))
    assert "NV-H02" not in codes(bare_metal_intel(firmware_virt=Unknown("no msr module")))


@pytest.mark.parametrize(
    ("vendor", "value", "disabled"),
    [
        ("GenuineIntel", 0x1, True),  # locked, VMX outside SMX clear
        ("GenuineIntel", 0x5, False),  # locked and allowed
        ("GenuineIntel", 0x0, False),  # unlocked: KVM may still enable it
        ("AuthenticAMD", 0x10, True),  # SVMDIS
        ("AuthenticAMD", 0x08, False),
    ],
)
def test_nv_h02_msr_decoding(vendor: str, value: int, disabled: bool) -> None:
    assert msr_says_disabled(vendor, value) is disabled


def test_nv_h03_no_vendor_module() -> None:
    found = rules.run(
        Target.HOST, Platform.LINUX, bare_metal_intel(kvm_vendor_modules=(), nested={})
    )
    (h03,) = [f for f in found if f.code == "NV-H03"]
    assert h03.fix == "modprobe kvm_intel"


@pytest.mark.parametrize("value", ["N", "n", "0"])
def test_nv_h04_nested_off_values(value: str) -> None:
    assert codes(bare_metal_intel(nested={"kvm_intel": value}))["NV-H04"] is Severity.ERROR


@pytest.mark.parametrize("value", ["Y", "y", "1"])
def test_nv_h04_nested_on_values(value: str) -> None:
    assert "NV-H04" not in codes(bare_metal_intel(nested={"kvm_intel": value}))


def test_nv_h05_missing_and_inaccessible_device() -> None:
    missing = bare_metal_intel(kvm_device=KvmDevice(False, False), probe=None)
    denied = bare_metal_intel(
        kvm_device=KvmDevice(True, False, "0600", "root", "root"),
        probe=failed_probe(Stage.DENIED, "EACCES"),
    )
    assert "NV-H05" in codes(missing)
    assert "NV-H05" in codes(denied)
    assert "NV-H07" not in codes(denied)  # a permission problem is not a broken KVM


def test_nv_h06_low_memory_threshold() -> None:
    assert "NV-H06" in codes(bare_metal_intel(mem_available_bytes=4 * GIB - 1))
    assert "NV-H06" not in codes(bare_metal_intel(mem_available_bytes=4 * GIB))
    assert "NV-H06" not in codes(bare_metal_intel(mem_available_bytes=Unknown("no meminfo")))


@pytest.mark.parametrize("stage", [Stage.CREATE_VCPU, Stage.RUN, Stage.TIMEOUT, Stage.DATA])
def test_nv_h07_probe_failures(stage: Stage) -> None:
    found = rules.run(Target.HOST, Platform.LINUX, bare_metal_intel(probe=failed_probe(stage, "x")))
    (h07,) = [f for f in found if f.code == "NV-H07"]
    assert str(stage) in h07.message
    assert verdict_of(found) == "not-ready"


def test_nv_h07_silent_when_guests_ran() -> None:
    assert "NV-H07" not in codes(bare_metal_intel(probe=OK_PROBE))


def test_nv_h08_names_the_hypervisor() -> None:
    facts = bare_metal_intel(hypervisor=HypervisorInfo(True, "KVMKVMKVM", "KVM"))
    (h08,) = [f for f in rules.run(Target.HOST, Platform.LINUX, facts) if f.code == "NV-H08"]
    assert "KVM" in h08.message and h08.severity is Severity.INFO
    assert "NV-H08" not in codes(bare_metal_intel())


def test_nv_h09_qemu_user_cannot_open_device() -> None:
    hidden = bare_metal_intel(
        kvm_device=KvmDevice(True, True, "0600", "root", "root"),
        libvirt_qemu=LibvirtQemuAccess("libvirt-qemu", "kvm", False, True),
    )
    assert codes(hidden)["NV-H09"] is Severity.WARNING
    unknown = bare_metal_intel(libvirt_qemu=LibvirtQemuAccess("?", "?", Unknown("x"), True))
    assert "NV-H09" not in codes(unknown)
    assert "NV-H09" not in codes(bare_metal_intel(libvirt_qemu=None))


def test_this_machine_shape_is_ready_with_info() -> None:
    """A guest of KVM, kvm_pvm serving /dev/kvm, no flags, guests run: ready, not a blanket no."""
    facts = bare_metal_intel(
        cpu_vendor="AuthenticAMD",
        cpu_virt_flags=(),
        kvm_vendor_modules=("kvm_pvm",),
        nested={},
        hypervisor=HypervisorInfo(True, "KVMKVMKVM", "KVM"),
    )
    found = rules.run(Target.HOST, Platform.LINUX, facts)
    assert {f.code for f in found} == {"NV-H01", "NV-H08"}
    assert verdict_of(found) == "ready"


@pytest.mark.parametrize(("boots", "fires"), [(False, True), (True, False), (None, False)])
def test_nv_h10_linux_does_not_boot_under_kvm(boots: bool | None, fires: bool) -> None:
    found = codes(bare_metal_intel(kvm_boots_linux=boots))
    assert ("NV-H10" in found) is fires
    if fires:
        assert found["NV-H10"] is Severity.WARNING
