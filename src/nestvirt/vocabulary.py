"""The words every layer shares, answered once: CPU vendors, their extension and KVM
module, host CPU modes, running states and memory sizes.

Pure and standard library only (the probe imports it inside the lab's minimal guests).
Facts, rules, plans and backends take these from here instead of writing their own
tables (docs/architecture.md).
"""

from __future__ import annotations

# ------------------------------------------------------------------ CPU vendors

# CPUID leaf 0 vendor strings (/proc/cpuinfo vendor_id, Win32_Processor.Manufacturer).
INTEL = "GenuineIntel"
AMD = "AuthenticAMD"
HYGON = "HygonGenuine"

# CPUID vendor strings → libvirt's vendor names.
VENDOR_NAMES = {INTEL: "Intel", AMD: "AMD", HYGON: "Hygon"}
SVM_VENDORS = frozenset({"AMD", "Hygon"})  # the vendors kvm_amd accepts (libvirt's names)


def vendor_name(cpuid_vendor: str) -> str:
    """libvirt's name for a CPUID vendor string ("GenuineIntel" → "Intel"); others unchanged."""
    text = cpuid_vendor.strip()
    return VENDOR_NAMES.get(text, text)


# Short lower-case keys of the vendor names CPUID, libvirt and WMI use.
VENDOR_KEYS = {
    "genuineintel": "intel", "intel": "intel",
    "authenticamd": "amd", "amd": "amd",
    "hygongenuine": "hygon", "hygon": "hygon",
}  # fmt: skip
LIBVIRT_NAME_OF_KEY = {"intel": "Intel", "amd": "AMD", "hygon": "Hygon"}


def vendor_key(vendor: str) -> str:
    """ "intel", "amd", "hygon" for any spelling of those vendors; others lower-cased."""
    text = vendor.strip().lower()
    return VENDOR_KEYS.get(text, text)


# ------------------------------------------------------------------ extensions and KVM modules

EXTENSIONS = ("vmx", "svm")
# The extension KVM offers on a host of each vendor (libvirt's vendor names).
EXTENSION_OF_VENDOR = {"Intel": "vmx", "AMD": "svm", "Hygon": "svm"}
# The KVM module that serves a host of each vendor (CPUID vendor strings); Hygon's
# Dhyana is an AMD Zen core, served by kvm_amd.
KVM_MODULE_OF_VENDOR = {INTEL: "kvm_intel", AMD: "kvm_amd", HYGON: "kvm_amd"}
# The hardware KVM modules (another kvm_* module, such as kvm_pvm, is paravirtual).
HARDWARE_KVM_MODULES = ("kvm_intel", "kvm_amd")

# ------------------------------------------------------------------ libvirt CPU modes and states

# <cpu mode=…> values that give the guest the host's CPU (and its vmx/svm).
HOST_CPU_MODES = frozenset({"host-passthrough", "host-model", "maximum"})
# Domain states (the words of nestvirt.status/1) in which a QEMU process exists.
RUNNING_STATES = frozenset({"running", "paused", "shutting-down", "suspended", "blocked"})

# ------------------------------------------------------------------ sizes

# Bytes per unit of a size people write (--memory 4GiB): G/GiB = 1024³, GB = 10⁹ (as virsh).
SIZE_UNITS = {
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip
# Bytes per unit of a libvirt domain XML size (<memory unit=…>), bytes included.
XML_SIZE_UNITS = {"b": 1, "bytes": 1, **SIZE_UNITS}


def xml_kib(text: str | None, unit: str | None = "KiB") -> int:
    """A domain XML size (`<memory unit='MiB'>4096</memory>`) in KiB; no text is 0.

    An unknown unit counts as KiB, libvirt's default.
    """
    if not (text or "").strip():
        return 0
    assert text is not None
    return int(text.strip()) * XML_SIZE_UNITS.get((unit or "KiB").lower(), 1024) // 1024
