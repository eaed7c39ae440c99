"""What this machine can see of the hypervisor or cloud it runs under. Standard library only.

The guest-side rules (NV-G…, rules/guest.py) name the parent from these facts
and give the fix its owner applies there. The sources, each read the way
systemd's `detect_vm()` reads them (ordered sources): CPUID leaf 0x40000000 and the
hypervisor bit (probe/cpuid.py), the DMI strings the firmware presents
(`/sys/class/dmi/id`), the kernel release (WSL2's kernel names itself), CI
runner markers (a whitelist of non-secret environment variables), container
markers, and what `/dev/kvm` and the probe show. A missing file is no evidence;
nothing here is secret (no serial numbers, UUIDs or other environment).

`python -m nestvirt.guestside` prints these facts and the NV-G findings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nestvirt.model import Unknown
from nestvirt.probe.result import HypervisorInfo, ProbeResult

DMI_DIR = "/sys/class/dmi/id"
# World-readable DMI strings only (product_serial, product_uuid and board_serial are
# root-only and identify the machine: never read).
DMI_KEYS = (
    "sys_vendor",
    "product_name",
    "product_version",
    "bios_vendor",
    "bios_version",
    "board_vendor",
    "chassis_vendor",
    "chassis_asset_tag",
)
# CI runner markers: variable names whose values say which CI runs us, nothing more.
CI_VARIABLES = (
    "GITHUB_ACTIONS",
    "RUNNER_ENVIRONMENT",  # github-hosted | self-hosted
    "RUNNER_OS",
    "RUNNER_ARCH",
    "GITLAB_CI",
    "CIRCLECI",
    "BUILDKITE",
    "TRAVIS",
    "TF_BUILD",  # Azure Pipelines
)
CONTAINER_MARKERS = (
    ("/run/systemd/container", None),  # systemd-nspawn, podman write the manager's name
    ("/run/.containerenv", "podman"),
    ("/.dockerenv", "docker"),
)

ReadFile = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class GuestFacts:
    """This machine seen from inside: its parent hypervisor or cloud, and the evidence."""

    hypervisor: HypervisorInfo | Unknown  # CPUID bit + signature, /sys/hypervisor, DMI
    dmi: dict[str, str] = field(default_factory=dict)  # DMI_KEYS that exist and are not empty
    kernel_release: str = ""
    proc_version: str = ""
    container: str | None = None  # docker, podman, lxc, systemd-nspawn, …
    ci: dict[str, str] = field(default_factory=dict)  # CI_VARIABLES that are set
    cpu_vendor: str | None = None  # GenuineIntel, AuthenticAMD, …
    cpu_model: str | None = None  # "Common KVM processor" is QEMU's kvm64 (old Proxmox default)
    cpu_virt_flags: tuple[str, ...] = ()  # vmx/svm as this kernel sees them
    kvm_device: bool = False  # /dev/kvm exists
    kvm_accessible: bool = False  # and this user may open it read+write
    kvm_module: str | None = None  # kvm_intel, kvm_amd, kvm_pvm, … (loaded)
    kvm_runs_guests: bool | None = None  # the KVM probe ran a guest; None: not probed

    @property
    def is_guest(self) -> bool:
        """A hypervisor is below this machine (WSL2 counts: its kernel runs in a Hyper-V VM)."""
        present = isinstance(self.hypervisor, HypervisorInfo) and self.hypervisor.present
        return present or is_wsl2(self.kernel_release)

    @property
    def nesting_exposed(self) -> bool:
        """The parent passes VT-x/AMD-V through (what it can change), whatever KVM does here."""
        return bool(self.cpu_virt_flags)


def is_wsl2(kernel_release: str) -> bool:
    """WSL2's kernel: `5.15.153.1-microsoft-standard-WSL2` (WSL1 has no kernel of its own)."""
    return "microsoft-standard-wsl2" in kernel_release.lower()


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def _try(read: ReadFile, path: str) -> str | None:
    try:
        return read(path)
    except OSError:  # missing: no evidence; unreadable: none either (noted by cpuid.detect)
        return None


def dmi_strings(read: ReadFile = _read) -> dict[str, str]:
    values = {key: _try(read, f"{DMI_DIR}/{key}") for key in DMI_KEYS}
    return {k: v for k, v in values.items() if v}


def container_of(
    read: ReadFile = _read, exists: Callable[[str], bool] = os.path.exists
) -> str | None:
    for path, name in CONTAINER_MARKERS:
        if not exists(path):
            continue
        if name is None:
            return _try(read, path) or "container"
        return name
    return None


def ci_markers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    return {k: environ[k][:64] for k in CI_VARIABLES if environ.get(k)}


def _cpuinfo(read: ReadFile) -> tuple[str | None, str | None, tuple[str, ...]]:
    text = _try(read, "/proc/cpuinfo") or ""
    vendor = model = None
    flags: tuple[str, ...] = ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "model name" and model is None:
            model = value
        elif key == "flags":
            flags = tuple(f for f in ("vmx", "svm") if f in value.split())
            break
    return vendor, model, flags


def _kvm_module(listdir: Callable[[str], list[str]] = os.listdir) -> str | None:
    try:
        names = sorted(listdir("/sys/module"))
    except OSError:
        return None
    found = [n for n in names if n.startswith("kvm_") and n != "kvm_common"]
    return found[0] if found else None


def gather(
    *,
    hypervisor: HypervisorInfo | Unknown | None = None,
    probe: ProbeResult | None = None,
    read: ReadFile = _read,
    environ: Mapping[str, str] = os.environ,
) -> GuestFacts:
    """This machine's guest-side facts; `hypervisor`/`probe` when the caller has them already."""
    if hypervisor is None:
        from nestvirt.probe.cpuid import detect_hypervisor

        try:
            hypervisor = detect_hypervisor()
        except OSError as exc:
            hypervisor = Unknown(f"CPUID not run: {exc}")
    vendor, model, flags = _cpuinfo(read)
    runs = None if probe is None else any(m.ok for m in probe.modes.values())
    return GuestFacts(
        hypervisor=hypervisor,
        dmi=dmi_strings(read),
        kernel_release=os.uname().release,
        proc_version=(_try(read, "/proc/version") or "")[:200],
        container=container_of(read),
        ci=ci_markers(environ),
        cpu_vendor=vendor,
        cpu_model=model,
        cpu_virt_flags=flags,
        kvm_device=os.path.exists("/dev/kvm"),
        kvm_accessible=os.access("/dev/kvm", os.R_OK | os.W_OK),
        kvm_module=_kvm_module(),
        kvm_runs_guests=runs,
    )
