"""What the probe found: plain data, standard library only.

This is the contract between the probe (which fills it), the host rules
NV-H01/H05/H07/H08 (which judge it) and `nestvirt probe --json`/the lab
(which print it as `nestvirt.probe/1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from nestvirt.model import Evidence


class Stage(StrEnum):
    """Where a probe run stopped; each maps to a finding (NV-H05 or NV-H07)."""

    NO_DEVICE = "no-device"  # /dev/kvm missing                    -> NV-H05
    DENIED = "denied"  # open() gave EACCES/EPERM                   -> NV-H05
    OPEN = "open"  # other open() error                             -> NV-H07
    API_VERSION = "api-version"  # KVM_GET_API_VERSION != 12        -> NV-H07
    CREATE_VM = "create-vm"  # KVM_CREATE_VM refused                -> NV-H07
    MEMORY = "memory"  # KVM_SET_USER_MEMORY_REGION refused          -> NV-H07
    CREATE_VCPU = "create-vcpu"  # KVM_CREATE_VCPU refused          -> NV-H07
    SETUP = "setup"  # SREGS/REGS/mmap of kvm_run failed              -> NV-H07
    RUN = "run"  # KVM_RUN returned an error                         -> NV-H07
    EXIT_REASON = "exit-reason"  # an exit we did not expect        -> NV-H07
    DATA = "data"  # the guest wrote other values than expected      -> NV-H07
    TIMEOUT = "timeout"  # the guest did not finish in time          -> NV-H07


@dataclass(frozen=True, slots=True)
class Failure:
    """Where the probe stopped and why."""

    stage: Stage
    detail: str  # one line with real values: errno name, exit reason, port/value seen


@dataclass(frozen=True, slots=True)
class ModeResult:
    """One guest run: 'real' (16-bit real mode) or 'long' (64-bit long mode)."""

    ok: bool
    exits: int  # I/O exits counted (the expected 'out's)
    us_per_exit: float | None  # wall time of the run loop / exits
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class HypervisorInfo:
    """Which hypervisor this machine runs under, from ordered evidence."""

    present: bool
    signature: str | None  # leaf 0x40000000 EBX+ECX+EDX, NULs stripped
    name: str | None  # e.g. "KVM", "QEMU (TCG)", "Microsoft Hyper-V"
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The probe's whole answer (`nestvirt probe --json` prints it as nestvirt.probe/1)."""

    ok: bool  # every requested mode ran and ended as expected
    device: str  # "/dev/kvm"
    api_version: int | None
    capabilities: dict[str, bool | int] = field(default_factory=dict)
    # e.g. {"user_memory": True, "irqchip": True, "nested_state": 0 or size}
    modes: dict[str, ModeResult] = field(default_factory=dict)
    failure: Failure | None = None  # the first failure, if any
    hypervisor: HypervisorInfo | None = None
    virt_extensions: tuple[str, ...] = ()  # "vmx"/"svm" seen in CPUID (not /proc flags)
    vendor_module: str | None = None  # which kernel module serves /dev/kvm, if known
    cpu_vendor: str | None = None  # CPUID leaf 0: "GenuineIntel", "AuthenticAMD", …
