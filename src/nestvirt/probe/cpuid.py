"""CPUID from Python, and which hypervisor this machine runs under.

`cpuid()` executes the real instruction: 27 bytes of x86-64 machine code in a
private page (written, then made read+execute: never writable and executable
at once), called through ctypes. No external program, standard library only.

`detect_hypervisor()` follows systemd's `detect_vm()`: ordered
sources, each recorded as Evidence; a missing file is no evidence, a
permission error is noted; the answer is cached.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

from nestvirt.model import Evidence
from nestvirt.probe.result import HypervisorInfo

Registers = tuple[int, int, int, int]  # eax, ebx, ecx, edx

# void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4])  (System V AMD64 ABI)
_CODE = bytes.fromhex(
    "53"  # push rbx            (rbx is callee-saved; cpuid writes it)
    "89f8"  # mov eax, edi      leaf
    "89f1"  # mov ecx, esi      subleaf
    "4989d0"  # mov r8, rdx     out
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_SYS_ARCH_PRCTL, _ARCH_GET_CPUID = 158, 0x1011
_PAGE = 4096

_UINT32_P = ctypes.POINTER(ctypes.c_uint32)
_CpuidFunction = Callable[[int, int, "ctypes._Pointer[ctypes.c_uint32]"], None]


class CpuidUnavailable(OSError):
    """CPUID cannot be executed here (not x86-64, CPUID faulting on, no executable page)."""


@functools.cache
def _function() -> _CpuidFunction:
    machine = os.uname().machine
    if machine not in ("x86_64", "amd64"):
        raise CpuidUnavailable(f"CPUID needs an x86-64 CPU, this is {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0)) would turn the instruction into SIGSEGV.
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_CPUID, 0) == 0:
        raise CpuidUnavailable("CPUID faulting is on for this process (ARCH_GET_CPUID = 0)")
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = libc.mmap(None, _PAGE, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if page is None or page == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise CpuidUnavailable(err, f"cannot map a page for CPUID: {os.strerror(err)}")
    ctypes.memmove(page, _CODE, len(_CODE))
    if libc.mprotect(page, _PAGE, _PROT_READ | _PROT_EXEC) != 0:
        err = ctypes.get_errno()
        raise CpuidUnavailable(err, f"cannot make the CPUID page executable: {os.strerror(err)}")
    # The page lives as long as the process (one page, made once).
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, _UINT32_P)
    function: _CpuidFunction = prototype(page)
    return function


def cpuid(leaf: int, subleaf: int = 0) -> Registers:
    """Execute CPUID(leaf, subleaf) on this CPU; (eax, ebx, ecx, edx).

    Raises CpuidUnavailable (an OSError) where CPUID cannot run.
    """
    out = (ctypes.c_uint32 * 4)()
    _function()(leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF, ctypes.cast(out, _UINT32_P))
    return out[0], out[1], out[2], out[3]


def virt_extensions(cpuid_fn: Callable[[int, int], Registers] = cpuid) -> tuple[str, ...]:
    """vmx (leaf 1 ECX bit 5) and/or svm (leaf 0x80000001 ECX bit 2), as CPUID shows them."""
    found = []
    if cpuid_fn(1, 0)[2] >> 5 & 1:
        found.append("vmx")
    if cpuid_fn(0x80000000, 0)[0] >= 0x80000001 and cpuid_fn(0x80000001, 0)[2] >> 2 & 1:
        found.append("svm")
    return tuple(found)


def vendor(cpuid_fn: Callable[[int, int], Registers] = cpuid) -> str:
    """The CPU vendor string of leaf 0 (EBX+EDX+ECX): GenuineIntel, AuthenticAMD, …"""
    _, ebx, ecx, edx = cpuid_fn(0, 0)
    return _text(ebx, edx, ecx)


# ---------------------------------------------------------------------------------------------
# Which hypervisor am I under


def _text(*registers: int) -> str:
    raw = b"".join(r.to_bytes(4, "little") for r in registers)
    return raw.rstrip(b"\0").decode("latin-1")


# Leaf 0x40000000 EBX+ECX+EDX, NULs stripped -> (name, conclusive).
# "Microsoft Hv" is not conclusive: QEMU/KVM with Hyper-V enlightenments shows it too
# (and then puts KVM's own signature at 0x40000100).
SIGNATURES: dict[str, tuple[str, bool]] = {
    "KVMKVMKVM": ("KVM", True),
    "Linux KVM Hv": ("KVM (Hyper-V enlightenments)", True),
    "TCGTCGTCGTCG": ("QEMU (TCG)", True),
    "Microsoft Hv": ("Microsoft Hyper-V", False),
    "VMwareVMware": ("VMware", True),
    "XenVMMXenVMM": ("Xen", True),
    "VBoxVBoxVBox": ("VirtualBox", True),
    "bhyve bhyve ": ("bhyve", True),
    "ACRNACRNACRN": ("ACRN", True),
    "QNXQVMBSQG": ("QNX hypervisor", True),
    "LKVMLKVMLKVM": ("kvmtool", True),
    "OpenBSDVMM58": ("OpenBSD vmm", True),
    "Apple VZ": ("Apple Virtualization", True),
    "SRESRESRESRE": ("SRE", True),
    "UnisysSpar64": ("Unisys s-Par", True),
}

# DMI product_name / sys_vendor prefixes -> name (systemd's dmi_vendor_table, abridged).
# Checked in this order, product_name first: "Microsoft Corporation" alone is any Surface
# laptop, its product "Virtual Machine" is Hyper-V.
DMI_VENDORS: tuple[tuple[str, str, str], ...] = (
    ("product_name", "KVM", "KVM"),
    ("product_name", "OpenStack", "KVM (OpenStack)"),
    ("product_name", "KubeVirt", "KVM (KubeVirt)"),
    ("product_name", "Amazon EC2", "Amazon EC2"),
    ("product_name", "Google Compute Engine", "Google Compute Engine"),
    ("product_name", "VMware", "VMware"),
    ("product_name", "VirtualBox", "VirtualBox"),
    ("product_name", "Parallels", "Parallels"),
    ("product_name", "BHYVE", "bhyve"),
    ("product_name", "Virtual Machine", "Microsoft Hyper-V"),  # with sys_vendor Microsoft
    ("product_name", "Apple Virtualization", "Apple Virtualization"),
    ("sys_vendor", "QEMU", "QEMU"),
    ("sys_vendor", "VMware", "VMware"),
    ("sys_vendor", "innotek GmbH", "VirtualBox"),
    ("sys_vendor", "Oracle Corporation", "VirtualBox"),
    ("sys_vendor", "Xen", "Xen"),
    ("sys_vendor", "Bochs", "Bochs"),
    ("sys_vendor", "Parallels", "Parallels"),
    ("sys_vendor", "Amazon EC2", "Amazon EC2"),
    ("sys_vendor", "Google", "Google Compute Engine"),
    ("sys_vendor", "Apple Inc.", "Apple Virtualization"),
)
DMI_DIR = "/sys/class/dmi/id"

# Names that are the same family for the cross-check (DMI names the product, CPUID the engine).
_KVM_FAMILY = frozenset(
    {
        "KVM",
        "KVM (Hyper-V enlightenments)",
        "QEMU",
        "KVM (OpenStack)",
        "KVM (KubeVirt)",
        "Amazon EC2",
        "Google Compute Engine",
        "Bochs",
    }
)

ReadFile = Callable[[str], str]


def _read_file(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def _read_source(path: str, read: ReadFile, evidence: list[Evidence]) -> str | None:
    """A file's content, or None. Missing = no evidence; unreadable = noted, not fatal."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        evidence.append(Evidence(path, f"unreadable: {exc.strerror or exc}", False))
        return None
    except OSError as exc:
        evidence.append(Evidence(path, f"unreadable: {exc.strerror or exc}", False))
        return None


def _same_family(a: str, b: str) -> bool:
    return a == b or (a in _KVM_FAMILY and b in _KVM_FAMILY) or ("Hyper-V" in a and "Hyper-V" in b)


def detect(
    cpuid_fn: Callable[[int, int], Registers] = cpuid, read: ReadFile = _read_file
) -> HypervisorInfo:
    """Ordered detection over injectable sources (tests pass recorded CPUID and files)."""
    evidence: list[Evidence] = []
    conclusive: str | None = None  # a name from strong evidence
    weak: str | None = None  # a name from evidence other hypervisors imitate
    signature: str | None = None

    # 1. CPUID leaf 1 ECX bit 31: hypervisors set it to announce themselves, CPUs leave it 0.
    #    Strong either way, but some hypervisors hide it (DMI may still tell).
    try:
        bit = bool(cpuid_fn(1, 0)[2] >> 31 & 1)
    except OSError as exc:
        bit = False
        evidence.append(Evidence("cpuid", f"not run: {exc}", False))
    else:
        evidence.append(Evidence("cpuid 1 ecx[31]", "1" if bit else "0", True))

    # 2. The vendor signature at leaf 0x40000000, read only when bit 31 is set: on bare metal
    #    that leaf returns whatever the CPU returns for out-of-range leaves.
    if bit:
        _, ebx, ecx, edx = cpuid_fn(0x40000000, 0)
        signature = _text(ebx, ecx, edx)
        name, strong = SIGNATURES.get(signature, (None, False))
        evidence.append(Evidence("cpuid 0x40000000", signature or "(empty)", strong))
        if name and strong:
            conclusive = name
        elif name:
            weak = name
            # QEMU/KVM with Hyper-V enlightenments moves KVM's own signature here.
            _, ebx, ecx, edx = cpuid_fn(0x40000100, 0)
            second = _text(ebx, ecx, edx)
            second_name, second_strong = SIGNATURES.get(second, (None, False))
            if second_name and second_strong:
                evidence.append(Evidence("cpuid 0x40000100", second, True))
                conclusive = f"{second_name} (Hyper-V enlightenments)"
                if "Hyper-V" in second_name:
                    conclusive = second_name
        else:
            weak = "an unknown hypervisor"

    # 3. /sys/hypervisor/type: the kernel's own answer (Xen writes "xen"). Strong when present.
    sys_type = _read_source("/sys/hypervisor/type", read, evidence)
    sys_name = None
    if sys_type:
        sys_name = "Xen" if sys_type.lower() == "xen" else sys_type
        evidence.append(Evidence("/sys/hypervisor/type", sys_type, True))

    # 4. DMI: the firmware's vendor/product. A fallback (it names the product, not the
    #    hypervisor under it: "Amazon EC2" runs on KVM) and a cross-check of CPUID.
    dmi_name = None
    dmi = {
        key: _read_source(f"{DMI_DIR}/{key}", read, evidence)
        for key in ("sys_vendor", "product_name")
    }
    for key, value in dmi.items():
        if value:
            evidence.append(Evidence(f"dmi {key}", value, False))
    for key, prefix, name in DMI_VENDORS:
        value = dmi.get(key)
        if value and value.startswith(prefix):
            if prefix == "Virtual Machine" and not (dmi["sys_vendor"] or "").startswith(
                "Microsoft"
            ):
                continue
            dmi_name = name
            break

    name = conclusive or sys_name or dmi_name or weak
    if conclusive and dmi_name:
        agrees = _same_family(conclusive, dmi_name)
        verdict = "consistent" if agrees else "differ"
        evidence.append(
            Evidence("cross-check", f"CPUID {conclusive!r}, DMI {dmi_name!r}: {verdict}", False)
        )
    elif weak and dmi_name and not conclusive:
        name = dmi_name if _same_family(weak, dmi_name) else f"{dmi_name} ({weak} signature)"
    present = bit or bool(conclusive or sys_name or dmi_name)
    return HypervisorInfo(present, signature, name if present else None, tuple(evidence))


@functools.cache
def detect_hypervisor() -> HypervisorInfo:
    """Which hypervisor this machine runs under (cached for the process)."""
    return detect()
