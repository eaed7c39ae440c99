"""CPUID from Python on this CPU, and hypervisor detection over recorded evidence."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nestvirt.model import Evidence
from nestvirt.probe import cpuid as cpuid_module
from nestvirt.probe.cpuid import (
    SIGNATURES,
    CpuidUnavailable,
    cpuid,
    detect,
    detect_hypervisor,
    vendor,
    virt_extensions,
)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


# --- the real instruction ------------------------------------------------------------------


def test_cpuid_leaf_0_names_the_vendor_in_proc_cpuinfo() -> None:
    max_leaf, *_ = cpuid(0)
    assert max_leaf >= 1
    assert f"vendor_id\t: {vendor()}" in Path("/proc/cpuinfo").read_text()


def test_hypervisor_bit_matches_the_kernels_flag() -> None:
    assert bool(cpuid(1)[2] >> 31 & 1) == ("hypervisor" in cpu_flags())


def test_virt_extensions_match_the_kernels_flags() -> None:
    assert set(virt_extensions()) == {"vmx", "svm"} & cpu_flags()


def test_subleaf_is_passed() -> None:
    """Leaf 4 (Intel caches) / leaf 0xb or 0x8000001d differ between subleaves on any CPU
    that has them; leaf 7 subleaf 0 reports the number of subleaves in EAX."""
    assert cpuid(7, 0) == cpuid(7, 0)
    assert all(0 <= r < 2**32 for r in cpuid(0x80000000, 5))


def test_detect_hypervisor_is_cached_and_agrees_with_the_flag() -> None:
    first = detect_hypervisor()
    assert detect_hypervisor() is first
    if "hypervisor" in cpu_flags():
        assert first.present
    assert first.evidence[0] == Evidence(
        "cpuid 1 ecx[31]", "1" if "hypervisor" in cpu_flags() else "0", True
    )


# --- detection over recorded evidence ------------------------------------------------------


def regs(text: str, eax: int = 0x40000001) -> tuple[int, int, int, int]:
    raw = text.encode("latin-1").ljust(12, b"\0")
    ebx, ecx, edx = struct.unpack("<3I", raw)
    return eax, ebx, ecx, edx


def fake_cpuid(
    hypervisor_bit: bool, signature: str | None = None, second: str | None = None
) -> cpuid_module.Callable[[int, int], tuple[int, int, int, int]]:
    table = {1: (0, 0, (1 << 31) if hypervisor_bit else 0, 0)}
    if signature is not None:
        table[0x40000000] = regs(signature)
    table[0x40000100] = regs(second) if second else (0, 0, 0, 0)

    def fn(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        return table.get(leaf, (0, 0, 0, 0))

    return fn


def files(**content: str | Exception) -> cpuid_module.ReadFile:
    paths = {
        "sys_vendor": "/sys/class/dmi/id/sys_vendor",
        "product_name": "/sys/class/dmi/id/product_name",
        "hypervisor": "/sys/hypervisor/type",
    }
    table = {paths[k]: v for k, v in content.items()}

    def read(path: str) -> str:
        value = table.get(path, FileNotFoundError(path))
        if isinstance(value, Exception):
            raise value
        return value

    return read


def no_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    raise CpuidUnavailable("CPUID needs an x86-64 CPU, this is aarch64")


@pytest.mark.parametrize(
    ("signature", "name"),
    [
        ("KVMKVMKVM", "KVM"),
        ("Linux KVM Hv", "KVM (Hyper-V enlightenments)"),
        ("TCGTCGTCGTCG", "QEMU (TCG)"),
        ("VMwareVMware", "VMware"),
        ("XenVMMXenVMM", "Xen"),
        ("VBoxVBoxVBox", "VirtualBox"),
        ("bhyve bhyve ", "bhyve"),
        ("ACRNACRNACRN", "ACRN"),
        ("QNXQVMBSQG", "QNX hypervisor"),
        ("LKVMLKVMLKVM", "kvmtool"),
        ("OpenBSDVMM58", "OpenBSD vmm"),
        ("Apple VZ", "Apple Virtualization"),
        ("SRESRESRESRE", "SRE"),
    ],
)
def test_every_conclusive_signature_names_its_hypervisor(signature: str, name: str) -> None:
    info = detect(fake_cpuid(True, signature), files())
    assert (info.present, info.signature, info.name) == (True, signature, name)
    assert info.evidence == (
        Evidence("cpuid 1 ecx[31]", "1", True),
        Evidence("cpuid 0x40000000", signature, True),
    )


def test_signature_table_holds_reference_md_list() -> None:
    """REFERENCE.md, "Which hypervisor am I under" (NULs stripped), plus systemd's s-Par."""
    assert set(SIGNATURES) == {
        "KVMKVMKVM", "Linux KVM Hv", "TCGTCGTCGTCG", "Microsoft Hv", "VMwareVMware",
        "XenVMMXenVMM", "VBoxVBoxVBox", "bhyve bhyve ", "ACRNACRNACRN", "QNXQVMBSQG",
        "LKVMLKVMLKVM", "OpenBSDVMM58", "Apple VZ", "SRESRESRESRE", "UnisysSpar64",
    }  # fmt: skip
    assert all(len(sig) <= 12 for sig in SIGNATURES)
    assert not SIGNATURES["Microsoft Hv"][1]  # QEMU imitates it: never conclusive alone
    assert all(strong for sig, (_, strong) in SIGNATURES.items() if sig != "Microsoft Hv")


def test_bare_metal() -> None:
    info = detect(fake_cpuid(False), files())
    assert (info.present, info.signature, info.name) == (False, None, None)
    assert info.evidence == (Evidence("cpuid 1 ecx[31]", "0", True),)


def test_bare_metal_leaf_0x40000000_is_not_read() -> None:
    """Without the bit, leaf 0x40000000 is whatever the CPU returns: not a signature."""
    info = detect(fake_cpuid(False, "KVMKVMKVM"), files())
    assert (info.present, info.signature) == (False, None)


def test_real_hyper_v_microsoft_signature_and_dmi() -> None:
    info = detect(
        fake_cpuid(True, "Microsoft Hv"),
        files(sys_vendor="Microsoft Corporation", product_name="Virtual Machine"),
    )
    assert (info.present, info.signature, info.name) == (True, "Microsoft Hv", "Microsoft Hyper-V")
    assert Evidence("cpuid 0x40000000", "Microsoft Hv", False) in info.evidence
    assert Evidence("dmi product_name", "Virtual Machine", False) in info.evidence


def test_microsoft_signature_alone_is_weak_but_named() -> None:
    info = detect(fake_cpuid(True, "Microsoft Hv"), files())
    assert (info.present, info.name) == (True, "Microsoft Hyper-V")
    assert not any(e.strong for e in info.evidence if e.source == "cpuid 0x40000000")


def test_qemu_kvm_with_hyper_v_enlightenments_is_kvm() -> None:
    info = detect(
        fake_cpuid(True, "Microsoft Hv", second="KVMKVMKVM"),
        files(sys_vendor="QEMU", product_name="Standard PC (Q35 + ICH9, 2009)"),
    )
    assert info.name == "KVM (Hyper-V enlightenments)"
    assert info.signature == "Microsoft Hv"
    assert Evidence("cpuid 0x40000100", "KVMKVMKVM", True) in info.evidence


def test_microsoft_signature_under_qemu_dmi_says_so() -> None:
    info = detect(fake_cpuid(True, "Microsoft Hv"), files(sys_vendor="QEMU"))
    assert info.name == "QEMU (Microsoft Hyper-V signature)"


def test_hidden_hypervisor_bit_dmi_still_tells() -> None:
    info = detect(fake_cpuid(False), files(sys_vendor="VMware, Inc.", product_name="VMware7,1"))
    assert (info.present, info.signature, info.name) == (True, None, "VMware")


def test_xen_from_sys_hypervisor() -> None:
    info = detect(fake_cpuid(False), files(hypervisor="xen"))
    assert (info.present, info.name) == (True, "Xen")
    assert Evidence("/sys/hypervisor/type", "xen", True) in info.evidence


def test_cross_check_consistent_and_differing() -> None:
    same = detect(fake_cpuid(True, "KVMKVMKVM"), files(product_name="Amazon EC2"))
    assert same.name == "KVM"
    assert Evidence("cross-check", "CPUID 'KVM', DMI 'Amazon EC2': consistent", False) in (
        same.evidence
    )
    differ = detect(fake_cpuid(True, "KVMKVMKVM"), files(sys_vendor="VMware, Inc."))
    assert differ.name == "KVM"  # CPUID is the stronger source
    assert Evidence("cross-check", "CPUID 'KVM', DMI 'VMware': differ", False) in differ.evidence


def test_unknown_signature_is_present_but_unnamed() -> None:
    info = detect(fake_cpuid(True, "NewHyperviso"), files())
    assert (info.present, info.signature, info.name) == (
        True,
        "NewHyperviso",
        "an unknown hypervisor",
    )
    assert Evidence("cpuid 0x40000000", "NewHyperviso", False) in info.evidence


def test_permission_error_is_noted_not_fatal() -> None:
    info = detect(
        fake_cpuid(True, "KVMKVMKVM"),
        files(sys_vendor=PermissionError(13, "Permission denied"), product_name="KVM"),
    )
    assert info.name == "KVM"
    assert Evidence("/sys/class/dmi/id/sys_vendor", "unreadable: Permission denied", False) in (
        info.evidence
    )


def test_without_cpuid_dmi_is_the_fallback() -> None:
    info = detect(
        no_cpuid, files(sys_vendor="QEMU", product_name="Standard PC (i440FX + PIIX, 1996)")
    )
    assert (info.present, info.signature, info.name) == (True, None, "QEMU")
    assert info.evidence[0].source == "cpuid"
    assert "aarch64" in info.evidence[0].value


def test_cpuid_unavailable_is_an_oserror() -> None:
    assert issubclass(CpuidUnavailable, OSError)
