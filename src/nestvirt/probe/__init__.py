"""The KVM probe: prove that this machine can run guests, through the KVM ioctl API.

`run_probe()` opens /dev/kvm, checks the API version and capabilities, and
runs two tiny guests (16-bit real mode, 64-bit long mode), each in its own VM
with one vCPU; it counts and checks their I/O exits and times them. It never
raises for a KVM failure: each one is a `Failure(stage, detail)` in the result.

Standard library only on the whole import path (the lab runs
`python3 -S -m nestvirt.probe` inside minimal guests). Importing this package
is cheap: the KVM and CPUID modules load when the probe runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestvirt.model import Finding
from nestvirt.probe.result import Failure, HypervisorInfo, ModeResult, ProbeResult, Stage

if TYPE_CHECKING:
    from nestvirt.probe.guests import Guest

SCHEMA = "nestvirt.probe/1"
DEFAULT_MODES = ("real", "long")


def run_probe(
    timeout: float = 2.0, modes: tuple[str, ...] = DEFAULT_MODES, device: str = "/dev/kvm"
) -> ProbeResult:
    """Run the probe: open `device`, run each guest of `modes` in its own VM.

    `timeout` is how long each guest may run (seconds) before it counts as hung.
    KVM failures come back as `Failure`s in the result; only bad arguments raise
    (ValueError).
    """
    return _probe(timeout, modes, device)


def _probe(
    timeout: float,
    modes: tuple[str, ...],
    device: str,
    guests: dict[str, Guest] | None = None,
) -> ProbeResult:
    """run_probe with injectable guests ({mode: Guest}), for fault-injection tests."""
    import os

    from nestvirt.probe import cpuid, kvm
    from nestvirt.probe.guests import MODES, loop_guest

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be among {MODES}, got {modes!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")

    hypervisor = cpuid.detect_hypervisor()
    try:
        extensions = cpuid.virt_extensions()
        cpu_vendor: str | None = cpuid.vendor()
    except OSError:
        extensions, cpu_vendor = (), None
    module = kvm.vendor_module()

    def finish(
        ok: bool,
        version: int | None = None,
        caps: dict[str, bool | int] | None = None,
        results: dict[str, ModeResult] | None = None,
        failure: Failure | None = None,
    ) -> ProbeResult:
        return ProbeResult(
            ok=ok,
            device=device,
            api_version=version,
            capabilities=caps or {},
            modes=results or {},
            failure=failure,
            hypervisor=hypervisor,
            virt_extensions=extensions,
            vendor_module=module,
            cpu_vendor=cpu_vendor,
        )

    def not_run(failure: Failure) -> dict[str, ModeResult]:
        return {mode: ModeResult(False, 0, None, failure) for mode in modes}

    fd, failure = kvm.open_device(device)
    if fd is None:
        assert failure is not None
        return finish(False, results=not_run(failure), failure=failure)
    try:
        version, failure = kvm.api_version(fd)
        if failure is not None:
            return finish(False, version, results=not_run(failure), failure=failure)
        caps = kvm.capabilities(fd)
        run_size = int(caps.get("vcpu_mmap_size", 0))
        if run_size < kvm.EXIT_UNION_OFFSET + 32:
            failure = Failure(Stage.SETUP, f"KVM_GET_VCPU_MMAP_SIZE gave {run_size}")
            return finish(False, version, caps, not_run(failure), failure)
        results: dict[str, ModeResult] = {}
        for mode in modes:
            guest = (guests or {}).get(mode) or loop_guest(mode)
            results[mode] = kvm.run_guest(
                fd, guest, timeout=timeout, run_size=run_size, set_tss=bool(caps["set_tss_addr"])
            )
        first = next((r.failure for r in results.values() if r.failure), None)
        return finish(all(r.ok for r in results.values()), version, caps, results, first)
    finally:
        os.close(fd)


def to_json(result: ProbeResult, findings: list[Finding]) -> dict[str, Any]:
    """The `nestvirt.probe/1` document of docs/contracts.md, exactly."""
    hypervisor = result.hypervisor or HypervisorInfo(False, None, None)
    return {
        "schema": SCHEMA,
        "ok": result.ok,
        "api_version": result.api_version,
        "modes": {
            mode: {
                "ok": r.ok,
                "exits": r.exits,
                "us_per_exit": None if r.us_per_exit is None else round(r.us_per_exit, 3),
            }
            for mode, r in result.modes.items()
        },
        "hypervisor": {
            "present": hypervisor.present,
            "signature": hypervisor.signature,
            "name": hypervisor.name,
        },
        "virt_extensions": list(result.virt_extensions),
        "findings": [f.to_json() for f in findings],
    }


__all__ = [
    "SCHEMA",
    "Failure",
    "HypervisorInfo",
    "ModeResult",
    "ProbeResult",
    "Stage",
    "run_probe",
    "to_json",
]
