"""`nestvirt preflight VM OPERATION`: is this operation safe for this VM now? Facts in, verdict out.

    preflight(vm, operation, connect=…|hyperv=…|snapshot=…, no_nested_guests=…) -> PreflightReport
    report.to_json()  ->  {"schema": "nestvirt.preflight/1", "vm", "operation", "safe", "findings"}

The decision itself is `nestvirt.rules.operations.judge` (NV-O01…NV-O04); this
module holds the report and the pure facts builders, and the endpoint's platform
adapter (nestvirt.platforms.libvirt, .hyperv) gathers the inputs:

- libvirt: the domain's facts through the backend (whether its CPU exposes
  vmx/svm is `rules.vm_libvirt.hidden_reasons`, the same test as NV-V01), the
  host CPU vendor from the connection's capabilities, and `KVM_CAP_NESTED_STATE`
  read from /dev/kvm. That read only describes THIS machine, so it is used only
  for a local URI (no host name: `qemu:///system`, `qemu:///session`); for a
  remote URI the capability is `Unknown` and an exposing VM is judged unsafe,
  with a message saying to run preflight (or install the guard) on that host.
- Hyper-V: the VM's facts from PowerShell (local or remote) or a snapshot file.

Importing this module is cheap (standard library, the operation rules): the
libvirt hook imports it. The adapters, libvirt and the Hyper-V backend load on first use.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import Any

from nestvirt import endpoint, registry
from nestvirt.facts.libvirt_vm import LibvirtVmFacts
from nestvirt.model import Finding, Severity, Unknown
from nestvirt.rules.operations import (
    Operation,
    OperationFacts,
    normalize_vendor,
    parse_operation,
)
from nestvirt.vocabulary import RUNNING_STATES

SCHEMA = "nestvirt.preflight/1"

KVM_DEVICE = "/dev/kvm"
# The probe's numbers (nestvirt.probe.kvm; a unit test keeps them equal): _IO(0xAE, 0x03) and
# KVM_CAP_NESTED_STATE from include/uapi/linux/kvm.h. Kept here so the libvirt hook need not
# import the probe (threads, mmap, ctypes) for one ioctl.
KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_NESTED_STATE = 157

# Tests (and the documented guard test setup) may state the capability instead of reading it:
# an integer, e.g. NESTVIRT_NESTED_STATE_CAP=0 for "this host cannot carry nested state".
ENV_NESTED_STATE = "NESTVIRT_NESTED_STATE_CAP"


@dataclass(frozen=True, slots=True)
class PreflightReport:
    vm: str
    operation: Operation
    platform: str  # "libvirt" | "hyperv"
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()  # for stderr, not part of the JSON contract

    @property
    def safe(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "vm": self.vm,
            "operation": str(self.operation),
            "safe": self.safe,
            "findings": [f.to_json() for f in self.findings],
        }


# ---------------------------------------------------------------------------
# Facts about this machine (standard library; the hook uses them too)


def nested_state_capability(device: str = KVM_DEVICE) -> int | Unknown:
    """KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE) on `device`: 0 = unsupported, else a size."""
    override = os.environ.get(ENV_NESTED_STATE)
    if override is not None and override.strip():
        try:
            return int(override.strip())
        except ValueError:
            return Unknown(f"{ENV_NESTED_STATE}={override!r} is not an integer")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return Unknown(f"{device} does not exist (no KVM on this host)")
    except PermissionError:
        return Unknown(f"cannot open {device}: permission denied (run as root or join group kvm)")
    except OSError as exc:
        return Unknown(f"cannot open {device}: {exc.strerror}")
    try:
        return int(fcntl.ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE))
    except OSError as exc:
        return Unknown(f"KVM_CHECK_EXTENSION failed on {device}: {exc.strerror}")
    finally:
        os.close(fd)


def cpu_vendor_here(cpuinfo: str = "/proc/cpuinfo") -> str | Unknown:
    """This machine's CPU vendor ("intel", "amd", …) from the first vendor_id line."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return normalize_vendor(value)
    except OSError as exc:
        return Unknown(f"cannot read {cpuinfo}: {exc.strerror}")
    return Unknown(f"no vendor_id in {cpuinfo}")


def is_local_uri(uri: str) -> bool:
    """A libvirt URI without a host name talks to this machine (qemu:///system, test:///default)."""
    from nestvirt.backends.libvirt import uri_host

    return uri_host(uri) is None


# ---------------------------------------------------------------------------
# Facts → OperationFacts (pure)


def libvirt_exposure(vm: LibvirtVmFacts) -> tuple[bool | Unknown, str]:
    """Whether the domain's guest CPU carries vmx/svm, and a phrase saying why (NV-V01's test)."""
    from nestvirt.guestcpu import OFF, ON
    from nestvirt.rules.vm_libvirt import guest_cpu_of, hidden_reasons, wanted_extension

    ext = wanted_extension(vm)
    live = vm.live_cpu_features or {}
    if ext and vm.state in RUNNING_STATES and live.get(ext) in ON | OFF:
        # the running CPU wins over a definition edited since it started
        exposed = live[ext] in ON
        return exposed, f"the running CPU has <feature policy='{live[ext]}' name='{ext}'/>"
    reasons = list(hidden_reasons(vm))
    if reasons:
        return False, reasons[0]
    return True, f"its guest CPU carries {ext} ({guest_cpu_of(vm).source_text})"


def libvirt_operation_facts(
    vm: LibvirtVmFacts,
    operation: Operation,
    *,
    nested_state_cap: int | Unknown,
    assume_no_nested_guests: bool = False,
    host: str = "this host",
) -> OperationFacts:
    exposes, exposure = libvirt_exposure(vm)
    running = operation is Operation.RESTORE or vm.state in RUNNING_STATES
    return OperationFacts(
        vm=vm.name,
        operation=operation,
        exposes=exposes,
        exposure=exposure,
        running=running,
        state=vm.state,
        assume_no_nested_guests=assume_no_nested_guests,
        accel="tcg" if vm.domain_type == "qemu" else (vm.domain_type or "kvm"),
        nested_state_cap=nested_state_cap,
        host_vendor=normalize_vendor(vm.host_cpu_vendor),
        host=host,
    )


def hyperv_operation_facts(
    vm: Any,
    operation: Operation,
    *,
    host_vendor: str | Unknown,
    assume_no_nested_guests: bool,
    host_build: int | Unknown | None = None,
    host: str = "this host",
) -> OperationFacts:
    """`vm` is a nestvirt.facts.hyperv.HyperVVmFacts; `host_build` the host's Windows build;
    `host` the `--hyperv` host its fixes name ("": the Windows machine nestvirt runs on)."""
    try:
        version: tuple[int, ...] | Unknown = vm.version_tuple
    except ValueError:
        version = Unknown(f"VM configuration version {vm.version!r} unreadable")
    off = vm.is_off or vm.is_saved or str(vm.state).startswith("Off")
    return OperationFacts(
        vm=vm.name,
        operation=operation,
        exposes=bool(vm.expose_virtualization_extensions),
        exposure="ExposeVirtualizationExtensions is "
        + ("on" if vm.expose_virtualization_extensions else "off"),
        running=operation is Operation.RESTORE or not off,
        state=vm.state_word,
        assume_no_nested_guests=assume_no_nested_guests,
        accel="hyperv",
        host_vendor=host_vendor,
        config_version=version,
        host_build=host_build,
        host=host,
    )


# ---------------------------------------------------------------------------
# The library entry point


def preflight(
    vm: str,
    operation: str | Operation,
    *,
    connect: str | None = None,
    hyperv: str | None = None,
    snapshot: str | None = None,
    no_nested_guests: bool = False,
    timeout: float | None = None,
) -> PreflightReport:
    """Judge `operation` for `vm` on libvirt (default) or Hyper-V (`hyperv`/`snapshot`);
    `timeout`: how long libvirtd may stay silent (libvirt_session.open_connection)."""
    op = parse_operation(operation) if isinstance(operation, str) else operation
    where = endpoint.parse(connect, hyperv, snapshot)
    adapter = registry.adapter_for(where)  # the endpoint's platform gathers and judges
    report: PreflightReport = adapter.preflight(
        where, vm, op, assume_no_nested_guests=no_nested_guests, timeout=timeout
    )
    return report


__all__ = [
    "ENV_NESTED_STATE",
    "SCHEMA",
    "PreflightReport",
    "cpu_vendor_here",
    "hyperv_operation_facts",
    "is_local_uri",
    "libvirt_exposure",
    "libvirt_operation_facts",
    "nested_state_capability",
    "preflight",
]
