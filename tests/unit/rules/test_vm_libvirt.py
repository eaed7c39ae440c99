"""Each libvirt VM rule: cases that fire and cases that do not (facts built here)."""

from __future__ import annotations

import pytest

from nestvirt import rules
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Platform, Target
from nestvirt.rules.vm_libvirt import exposes
from tests.unit.rules.factories import domain, iface

GIB_KIB = 1024 * 1024


def codes(vm: object) -> dict[str, Severity]:
    return {f.code: f.severity for f in rules.run(Target.VM, Platform.LIBVIRT, vm)}


def test_ready_domain_has_no_findings() -> None:
    assert codes(domain()) == {}


AMD_HOST = {"host_cpu_vendor": "AMD", "host_virt_extensions": ("svm",)}


@pytest.mark.parametrize(
    ("overrides", "exposed"),
    [
        ({"cpu_mode": "host-passthrough"}, True),
        ({"cpu_mode": "host-model"}, True),
        ({"cpu_mode": "maximum"}, True),
        ({"cpu_mode": "custom", "cpu_model": "Skylake-Client"}, False),
        ({"cpu_mode": "custom", "cpu_model": "Skylake-Client", "cpu_features": {"vmx": "require"}}, True),
        ({"cpu_mode": "custom", "cpu_model": "Skylake-Client", "cpu_features": {"vmx": "force"}}, True),
        ({"cpu_mode": "host-passthrough", "cpu_features": {"vmx": "disable"}}, False),
        ({"cpu_mode": "host-model", "cpu_features": {"vmx": "forbid"}}, False),
        ({"cpu_mode": None}, False),  # qemu64: libvirt's map says svm, QEMU under KVM: none
        # AMD host: libvirt's map lists svm for EPYC; under KVM QEMU turns it off unless required
        ({**AMD_HOST, "cpu_mode": "custom", "cpu_model": "EPYC"}, False),
        ({**AMD_HOST, "cpu_mode": "custom", "cpu_model": "EPYC", "cpu_features": {"svm": "require"}}, True),
        ({**AMD_HOST, "cpu_mode": "custom", "cpu_model": "EPYC", "cpu_features": {"svm": "disable"}}, False),
        ({**AMD_HOST, "cpu_mode": "custom", "cpu_model": "qemu64", "cpu_features": {"vmx": "forbid"}}, False),
        # a host whose CPU offers nothing: a require does not help
        ({"host_virt_extensions": (), "cpu_mode": "custom", "cpu_model": "Skylake-Client",
          "cpu_features": {"vmx": "require"}}, False),
        ({"host_virt_extensions": (), "cpu_mode": "host-passthrough"}, False),
        ({"cpu_mode": "custom", "cpu_model": "x"}, False),
    ],
)  # fmt: skip
def test_nv_v01_kvm_domains(overrides: dict[str, object], exposed: bool) -> None:
    vm = domain(**overrides)
    assert exposes(vm) is exposed
    assert ("NV-V01" in codes(vm)) is not exposed


@pytest.mark.parametrize(
    ("overrides", "exposed"),
    [
        # TCG emulates SVM whatever the host vendor, with AMD-vendor models; never VMX.
        ({"cpu_mode": "custom", "cpu_model": "EPYC", "cpu_features": {"svm": "require"}}, True),
        ({"cpu_mode": "custom", "cpu_model": "EPYC"}, True),
        ({"cpu_mode": "custom", "cpu_model": "Opteron_G3"}, True),
        ({"cpu_mode": "custom", "cpu_model": "qemu64"}, True),
        ({"cpu_mode": None}, True),  # QEMU's default qemu64
        ({"cpu_mode": "custom", "cpu_model": "kvm64"}, False),  # Intel vendor
        ({"cpu_mode": "custom", "cpu_model": "Skylake-Client", "cpu_features": {"vmx": "require"}}, False),
        ({"cpu_mode": "host-passthrough"}, False),
        ({"cpu_mode": "host-model"}, False),
        ({"cpu_mode": "maximum"}, True),
        ({"cpu_mode": "custom", "cpu_model": "EPYC", "cpu_features": {"svm": "disable"}}, False),
    ],
)  # fmt: skip
def test_nv_v01_tcg_domains(overrides: dict[str, object], exposed: bool) -> None:
    vm = domain(domain_type="qemu", **overrides)
    assert exposes(vm) is exposed
    assert ("NV-V01" in codes(vm)) is not exposed


def test_nv_v01_fix_only_where_enable_can_fix() -> None:
    def v01(vm: object) -> object:
        return next(f for f in rules.run(Target.VM, Platform.LIBVIRT, vm) if f.code == "NV-V01")

    fixable = v01(domain(cpu_mode="custom", cpu_model="Skylake-Client", name="a b"))
    assert fixable.fix == "nestvirt enable 'a b'"
    remote = v01(domain(cpu_mode=None, name="-x", uri="qemu+ssh://h/system"))
    assert remote.fix == "nestvirt enable -c qemu+ssh://h/system -- -x"
    bare = v01(domain(cpu_mode=None, host_virt_extensions=()))
    assert bare.fix is not None and not bare.fix.startswith("nestvirt")
    assert "table" in bare.message  # facts built by hand: the table answered, and says so


def test_nv_v11_tcg_ignores_vmx() -> None:
    vmx = {"domain_type": "qemu", "cpu_mode": "custom", "cpu_features": {"vmx": "require"}}
    found = {f.code: f for f in rules.run(Target.VM, Platform.LIBVIRT,
                                          domain(**vmx, cpu_model="EPYC"))}  # fmt: skip
    assert found["NV-V11"].severity is Severity.WARNING
    assert "still gets svm" in found["NV-V11"].message and "NV-V01" not in found
    penryn = codes(domain(**vmx, cpu_model="Penryn"))
    assert "NV-V11" in penryn and "NV-V01" in penryn
    assert "NV-V11" not in codes(domain(cpu_mode="custom", cpu_model="Skylake-Client",
                                        cpu_features={"vmx": "require"}))  # fmt: skip


def test_nv_v01_message_names_the_extension_and_reason() -> None:
    vm = domain(domain_type="qemu", cpu_mode="custom", cpu_model="kvm64")
    (v01,) = [f for f in rules.run(Target.VM, Platform.LIBVIRT, vm) if f.code == "NV-V01"]
    assert v01.message.startswith("svm hidden")
    assert "kvm64" in v01.message


def test_nv_v02_balloon_target_hotplug_and_virtio_mem() -> None:
    assert codes(domain(current_memory_kib=4 * GIB_KIB))["NV-V02"] is Severity.WARNING
    assert "NV-V02" in codes(domain(max_memory_kib=16 * GIB_KIB))
    assert "NV-V02" in codes(domain(virtio_mem_devices=1))
    found = rules.run(Target.VM, Platform.LIBVIRT, domain(max_memory_kib=1, virtio_mem_devices=2))
    assert len([f for f in found if f.code == "NV-V02"]) == 2


def test_nv_v03_memory_threshold() -> None:
    assert "NV-V03" in codes(domain(memory_kib=4 * GIB_KIB - 1, current_memory_kib=4 * GIB_KIB - 1))
    assert "NV-V03" not in codes(domain(memory_kib=4 * GIB_KIB, current_memory_kib=4 * GIB_KIB))


def test_nv_v04_only_blocking_filters() -> None:
    blocking = iface(filter="clean-traffic", filter_chain=("clean-traffic", "no-mac-spoofing"),
                     blocks_foreign_mac=True)  # fmt: skip
    harmless = iface(filter="allow-arp", filter_chain=("allow-arp",), blocks_foreign_mac=False)
    unknown = iface(filter="mine", filter_chain=("mine",), blocks_foreign_mac=Unknown("denied"))
    assert codes(domain(interfaces=(blocking,)))["NV-V04"] is Severity.WARNING
    assert "NV-V04" not in codes(domain(interfaces=(harmless,)))
    assert codes(domain(interfaces=(unknown,)))["NV-V04"] is Severity.INFO


def test_nv_v05_managed_save() -> None:
    assert "NV-V05" in codes(domain(has_managed_save=True, state="saved"))
    assert "NV-V05" not in codes(domain(has_managed_save=Unknown("read-only")))


def test_nv_v06_snapshots() -> None:
    assert "NV-V06" in codes(domain(snapshot_count=2))
    assert "NV-V06" not in codes(domain(snapshot_count=Unknown("x")))


@pytest.mark.parametrize(("state", "fires"), [("running", True), ("paused", True), ("off", False)])
def test_nv_v07_running(state: str, fires: bool) -> None:
    assert ("NV-V07" in codes(domain(state=state))) is fires


def test_nv_v09_vendor_mismatch_kvm_only() -> None:
    amd = {"host_cpu_vendor": "AMD", "cpu_mode": "custom", "cpu_model": "EPYC"}
    assert "NV-V09" in codes(domain(**amd, cpu_features={"vmx": "require"}))
    assert "NV-V09" not in codes(domain(**amd, cpu_features={"svm": "require"}))
    tcg_on_intel = domain(domain_type="qemu", cpu_mode="custom", cpu_features={"svm": "require"})
    assert "NV-V09" not in codes(tcg_on_intel)


def test_nv_v10_balloon() -> None:
    assert codes(domain(balloon_model="virtio"))["NV-V10"] is Severity.INFO
    assert "NV-V10" not in codes(domain(balloon_model="none"))
    assert "NV-V10" not in codes(domain(balloon_model=None))


@pytest.mark.parametrize(
    ("vendor", "exposed"), [("AMD", True), ("Hygon", True), ("Intel", False), (None, True)]
)
def test_nv_v01_tcg_needs_an_amd_model_vendor(vendor: object, exposed: bool) -> None:
    vm = domain(domain_type="qemu", cpu_mode="custom", cpu_model="Penryn",
                cpu_features={"svm": "require"}, cpu_model_vendor=vendor)  # fmt: skip
    assert exposes(vm) is exposed
