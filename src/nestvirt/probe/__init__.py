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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from nestvirt.model import Finding
    from nestvirt.probe.guests import Guest
    from nestvirt.probe.result import Failure, HypervisorInfo, ModeResult, ProbeResult, Stage

# The result types, re-exported here, load with their first use: `prefetch` forks the
# probe's child before anything else is imported (so the child imports what the probe
# needs while this process imports the rest).
_RESULT_TYPES = ("Failure", "HypervisorInfo", "ModeResult", "ProbeResult", "Stage")


def __getattr__(name: str) -> Any:
    if name in _RESULT_TYPES:
        from nestvirt.probe import result

        return getattr(result, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SCHEMA = "nestvirt.probe/1"
DEFAULT_MODES = ("real", "long")


def run_probe(
    timeout: float = 2.0, modes: tuple[str, ...] = DEFAULT_MODES, device: str = "/dev/kvm"
) -> ProbeResult:
    """Run the probe: open `device`, run each guest of `modes` in its own VM.

    `timeout` is how long each guest may run (seconds) before it counts as hung.
    KVM failures come back as `Failure`s in the result; only bad arguments raise
    (ValueError). A probe `prefetch`ed with the same arguments is the answer, when its
    process gave one.
    """
    started = _prefetched.pop((timeout, tuple(modes), device), None)
    if started is not None:
        result = started.collect()
        if result is not None:
            return result
    return _probe(timeout, modes, device)


# ---------------------------------------------------------------------------------------------
# The probe in a child process, started before it is asked for
#
# `nestvirt status --host-only` needs the probe's answer only after it has imported its
# rules and read the other facts; started first, in a forked child, the probe (VM
# set-up, 2 × 200 exits, VM teardown: about as long as those imports) runs meanwhile
# on another CPU. The child runs exactly `_probe` and sends the ProbeResult back
# (marshal: plain values); if it sends nothing usable, run_probe runs the probe here
# (the same exceptions, then, as without a prefetch).

_prefetched: dict[tuple[float, tuple[str, ...], str], _Child] = {}


class _Child:
    """A forked `_probe(*key)`: its pid and the read end of its pipe."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def collect(self) -> ProbeResult | None:
        """Wait for the child; its result, or None when it failed."""
        import marshal
        import os

        chunks = []
        try:
            while chunk := os.read(self.fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            _, status = os.waitpid(self.pid, 0)
        if status != 0 or not chunks:
            return None
        try:
            return _from_wire(marshal.loads(b"".join(chunks)))
        except (ValueError, TypeError, EOFError):
            return None

    def discard(self) -> None:
        """Stop and reap the child (its probe was not asked for)."""
        import os
        import signal
        from contextlib import suppress

        os.close(self.fd)
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def prefetch(
    timeout: float = 2.0, modes: tuple[str, ...] = DEFAULT_MODES, device: str = "/dev/kvm"
) -> bool:
    """Start `run_probe(timeout, modes, device)` now in a child process; the next
    run_probe with these arguments returns its result. Nothing starts where `device`
    does not exist (status runs no probe then) or fork fails. Whether a child started."""
    import os

    key = (timeout, tuple(modes), device)
    if key in _prefetched or not os.path.exists(device):
        return False
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return False
    if pid == 0:  # pragma: no cover (the child ends in os._exit, coverage never sees it)
        _child(write_fd, read_fd, key)
    os.close(write_fd)
    _prefetched[key] = _Child(pid, read_fd)
    return True


def discard_prefetched() -> None:
    """Stop every prefetched probe nobody asked for."""
    while _prefetched:
        _, child = _prefetched.popitem()
        child.discard()


def _child(fd: int, other: int, key: tuple[float, tuple[str, ...], str]) -> None:
    """In the forked child: run the probe, write its result to `fd`, exit. Never returns."""
    import os

    code = 1
    try:
        import _signal  # type: ignore[import-not-found]

        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # Ctrl-C ends it, quietly
        os.close(other)
        for pending in _prefetched.values():  # other children's pipes are not ours
            os.close(pending.fd)
        import marshal

        data = memoryview(marshal.dumps(_to_wire(_probe(*key))))
        while data:
            data = data[os.write(fd, data) :]
        code = 0
    except BaseException:  # the parent runs the probe itself, and sees it fail
        pass
    finally:
        os._exit(code)


def _to_wire(result: ProbeResult) -> tuple[Any, ...]:
    """A ProbeResult as plain values (marshal's), _from_wire's inverse."""

    def failure(f: Failure | None) -> tuple[str, str] | None:
        return None if f is None else (str(f.stage), f.detail)

    hv = result.hypervisor
    return (
        result.ok,
        result.device,
        result.api_version,
        dict(result.capabilities),
        {m: (r.ok, r.exits, r.us_per_exit, failure(r.failure)) for m, r in result.modes.items()},
        failure(result.failure),
        None
        if hv is None
        else (
            hv.present,
            hv.signature,
            hv.name,
            tuple((e.source, e.value, e.strong) for e in hv.evidence),
        ),
        tuple(result.virt_extensions),
        result.vendor_module,
        result.cpu_vendor,
    )


def _from_wire(data: tuple[Any, ...]) -> ProbeResult:
    from nestvirt.model import Evidence
    from nestvirt.probe.result import Failure, HypervisorInfo, ModeResult, ProbeResult, Stage

    def failure(f: tuple[str, str] | None) -> Failure | None:
        return None if f is None else Failure(Stage(f[0]), f[1])

    ok, device, version, caps, modes, first, hv, extensions, module, cpu_vendor = data
    results = {m: ModeResult(r[0], r[1], r[2], failure(r[3])) for m, r in modes.items()}
    return ProbeResult(
        ok=ok,
        device=device,
        api_version=version,
        capabilities=caps,
        modes=results,
        failure=failure(first),
        hypervisor=None
        if hv is None
        else HypervisorInfo(hv[0], hv[1], hv[2], tuple(Evidence(*e) for e in hv[3])),
        virt_extensions=tuple(extensions),
        vendor_module=module,
        cpu_vendor=cpu_vendor,
    )


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
    from nestvirt.probe.result import Failure, ModeResult, ProbeResult, Stage

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
    from nestvirt.probe.result import HypervisorInfo

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
