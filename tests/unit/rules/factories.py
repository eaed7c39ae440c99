"""Facts built in the test: the real dataclasses with readable defaults."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nestvirt.facts.libvirt_vm import Interface, LibvirtVmFacts
from nestvirt.facts.linux_host import KvmDevice, LibvirtQemuAccess, LinuxHostFacts
from nestvirt.probe.result import Failure, HypervisorInfo, ModeResult, ProbeResult, Stage

GIB = 1024**3

OK_PROBE = ProbeResult(
    ok=True,
    device="/dev/kvm",
    api_version=12,
    capabilities={"user_memory": True, "nested_state": 0},
    modes={"real": ModeResult(True, 200, 15.0), "long": ModeResult(True, 200, 16.0)},
)


def failed_probe(stage: Stage, detail: str = "detail") -> ProbeResult:
    failure = Failure(stage, detail)
    return ProbeResult(
        ok=False,
        device="/dev/kvm",
        api_version=12 if stage not in (Stage.NO_DEVICE, Stage.DENIED) else None,
        modes={"real": ModeResult(False, 0, None, failure)},
        failure=failure,
    )


def bare_metal_intel(**overrides: Any) -> LinuxHostFacts:
    facts = LinuxHostFacts(
        hostname="h",
        kernel="6.1.0",
        cpu_vendor="GenuineIntel",
        cpu_model="Intel Xeon",
        cpu_virt_flags=("vmx",),
        kvm_loaded=True,
        kvm_vendor_modules=("kvm_intel",),
        nested={"kvm_intel": "Y"},
        kvm_device=KvmDevice(True, True, "0660", "root", "kvm"),
        mem_available_bytes=16 * GIB,
        firmware_virt="enabled",
        hypervisor=HypervisorInfo(False, None, None),
        probe=OK_PROBE,
        libvirt_qemu=LibvirtQemuAccess("libvirt-qemu", "kvm", True, True),
    )
    return replace(facts, **overrides)


def domain(**overrides: Any) -> LibvirtVmFacts:
    """A KVM domain on an Intel host with host-passthrough, 8 GiB, static memory."""
    facts = LibvirtVmFacts(
        name="vm1",
        uri="qemu:///system",
        state="off",
        domain_type="kvm",
        host_cpu_vendor="Intel",
        host_virt_extensions=("vmx",),
        cpu_mode="host-passthrough",
        cpu_model=None,
        memory_kib=8 * 1024 * 1024,
        current_memory_kib=8 * 1024 * 1024,
        balloon_model="none",
    )
    return replace(facts, **overrides)


def iface(**overrides: Any) -> Interface:
    return replace(Interface("52:54:00:00:00:01", "network", "default", None), **overrides)
