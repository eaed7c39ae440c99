"""What a libvirt domain's guest CPU really gets: vmx/svm and the CPUID vendor.

One answer for NV-V01, NV-V09, NV-V11, `enable`'s planner, `preflight` and the
guard. The truth is QEMU's, not libvirt's CPU map: QEMU turns svm off for every
named model under KVM (kvm_default_props) and cannot emulate vmx under TCG,
while libvirt's map lists svm for qemu64 and the EPYC family either way.

Two sources, the answer says which it used:

- ``qemu``: libvirt turns the domain's CPU into QEMU's ``-cpu`` argument
  (virConnectDomainXMLToNative, what ``virsh domxml-to-native qemu-argv``
  shows), and the domain's own emulator, started once per (emulator, accel)
  as ``-machine none -accel kvm|tcg -qmp stdio``, expands that model with its
  switches (query-cpu-model-expansion). A feature counts only when the
  accelerator can give it too: the expansion of ``max`` under that accelerator
  is everything KVM (KVM_GET_SUPPORTED_CPUID) or TCG supports, which is what
  QEMU filters a CPU against when it starts. Answers are cached on disk by
  (emulator path, size, mtime, accel, -cpu argument). See nestvirt.qemu_cpu.
- ``table``: the same rules written down, for remote connections, drivers
  without QEMU (test:///default), hooks that must not call libvirt, or when
  QEMU cannot be run. Pure; see `table_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from nestvirt.vocabulary import (  # noqa: F401  (re-exported: guestcpu.X callers)
    EXTENSION_OF_VENDOR,
    EXTENSIONS,
    HOST_CPU_MODES,
    SVM_VENDORS,
    VENDOR_NAMES,
)

ON = frozenset({"require", "force"})
OFF = frozenset({"disable", "forbid"})
HOST_MODES = HOST_CPU_MODES
QEMU_DEFAULT_MODEL = "qemu64"  # QEMU's CPU when a domain names none (x86 pc/q35)
# Models libvirt lists with vendor='unknown': the vendor QEMU gives them (target/i386/cpu.c).
QEMU_MODEL_VENDORS = {
    "qemu64": "AMD", "qemu32": "Intel", "kvm64": "Intel", "kvm32": "Intel", "486": "Intel",
    "pentium": "Intel", "pentium2": "Intel", "pentium3": "Intel", "max": "AMD",
}  # fmt: skip

# Models whose QEMU CPUID vendor is AMD or Hygon (besides QEMU_MODEL_VENDORS' qemu64 and max).
AMD_MODEL = re.compile(r"^(EPYC(-.*)?|Opteron_G\d+|phenom|athlon|Dhyana(-.*)?)$")

QEMU = "qemu"
TABLE = "table"
LIBVIRT = "libvirt"  # libvirt refused the CPU before QEMU could be asked


@dataclass(frozen=True, slots=True)
class GuestCpu:
    """The guest's view of its CPU, as far as nesting goes."""

    extensions: tuple[str, ...]  # vmx/svm the guest's CPUID will show
    vendor: str | None  # "AMD", "Intel", "Hygon", another CPUID string, or None if unknown
    source: str  # QEMU, TABLE or LIBVIRT
    detail: str  # what was asked (e.g. "-accel kvm -cpu EPYC,svm=on"), or why the table
    refused: str | None = None  # libvirt will not start this CPU here, and why
    cpu_arg: str | None = None  # the -cpu argument libvirt builds, when known

    @property
    def source_text(self) -> str:
        if self.source == QEMU:
            return f"asked QEMU: {self.detail}"
        if self.source == LIBVIRT:
            return f"asked libvirt: {self.detail}"
        return f"nestvirt's table ({self.detail})"


class CpuDefinition(Protocol):
    """What the table reads of a definition (facts.libvirt_vm's DomainXml and LibvirtVmFacts)."""

    @property
    def domain_type(self) -> str: ...
    @property
    def cpu_mode(self) -> str | None: ...
    @property
    def cpu_model(self) -> str | None: ...
    @property
    def cpu_features(self) -> Mapping[str, str]: ...


def table_answer(
    definition: CpuDefinition,
    *,
    host_vendor: str | None,
    host_extensions: tuple[str, ...],
    model_vendor: str | None,
    why: str,
) -> GuestCpu:
    """The rules QEMU follows, written down (QEMU 7.2 target/i386; libvirt 9.0).

    KVM: host-passthrough, host-model and maximum follow the host; a named model
    (or none: qemu64) shows vmx/svm only when the definition requires it, and
    only when the host has it; the guest sees the host's vendor for any model.
    TCG: vmx is never emulated; svm comes with AMD-vendor models (qemu64, EPYC,
    Opteron, phenom, max) unless disabled, with others only when required; the
    guest sees the model's own vendor; host-passthrough cannot run.
    """
    mode, model, features = definition.cpu_mode, definition.cpu_model, definition.cpu_features
    kind = "tcg" if definition.domain_type == "qemu" else "kvm"
    detail = f"{why}; {kind}"
    if kind == "kvm":
        if mode in HOST_MODES:
            shown = [e for e in host_extensions if features.get(e) not in OFF]
        else:
            shown = [e for e in host_extensions if features.get(e) in ON]
        return GuestCpu(_ordered(shown), host_vendor, TABLE, detail)
    if mode == "host-passthrough":
        return GuestCpu((), None, TABLE, detail, refused="TCG cannot run host-passthrough")
    if mode == "maximum":
        vendor: str | None = "AMD"
    elif mode == "host-model":
        vendor = host_vendor
    else:
        name = (model or QEMU_DEFAULT_MODEL).strip()
        vendor = model_vendor or QEMU_MODEL_VENDORS.get(name)
        if vendor is None and AMD_MODEL.match(name):
            vendor = "AMD"
    policy = features.get("svm")
    carries = vendor in SVM_VENDORS
    svm = policy in ON or (carries and policy not in OFF)
    return GuestCpu(("svm",) if svm else (), vendor, TABLE, detail)


def _ordered(names: list[str] | set[str]) -> tuple[str, ...]:
    return tuple(e for e in EXTENSIONS if e in names)


def from_expansion(
    props: Mapping[str, object], supported: Mapping[str, object], *, detail: str, cpu_arg: str
) -> GuestCpu:
    """A QEMU answer: the model's expanded props, filtered by what the accelerator supports."""
    shown = {e for e in EXTENSIONS if props.get(e) is True and supported.get(e) is True}
    raw = props.get("vendor")
    vendor = VENDOR_NAMES.get(str(raw), str(raw)) if raw else None
    return GuestCpu(_ordered(shown), vendor, QEMU, detail, cpu_arg=cpu_arg)
