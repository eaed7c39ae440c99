"""Step 3: boot the lab VM and read its serial console until its report (or a deadline).

- libvirt (default): a transient domain started with VIR_DOMAIN_START_AUTODESTROY
  (libvirt destroys it if this process dies, even by SIGKILL) — or, with
  `--keep`, a persistent one left defined — whose serial port writes to a file
  in libvirt's image directory; the file is polled for new bytes until the
  report arrives, the domain stops or the deadline passes.
- direct: `qemu-system-x86_64` with the serial port on its stdout, read with a
  selector until the deadline; QEMU gets SIGKILL if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestvirt.lab import domain
from nestvirt.lab.console import ConsoleError, MarkerReader

POLL_S = 0.05  # console file polling interval (libvirt)
Event = Callable[[str], None]  # "started", "booted"


@dataclass
class BootOutcome:
    report: dict[str, Any] | None = None
    booted: bool = False
    error: str | None = None  # why there is no report
    seconds: float = 0.0  # start of the VM → report
    boot_seconds: float | None = None  # start of the VM → BOOTED marker
    start_seconds: float | None = None  # the start call itself (define/create or exec)
    console_tail: str = ""
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while cleaning up; they are delivered afterwards."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _feed(reader: MarkerReader, text: str, outcome: BootOutcome, t0: float, event: Event) -> None:
    was_booted = reader.booted
    try:
        reader.feed(text)
    except ConsoleError as exc:
        outcome.error = str(exc)
    if reader.booted and not was_booted:
        outcome.booted = True
        outcome.boot_seconds = time.monotonic() - t0
        event("booted")


def boot_direct(
    xml: str, timeout: float, event: Event, *, until_booted: bool = False,
    smbios: tuple[str, ...] = (),
) -> BootOutcome:  # fmt: skip
    """Run QEMU on this definition; stop at the report (or at BOOTED with until_booted).
    `smbios`: `-smbios` entries, the firmware identity the guest sees (lab/identity.py)."""
    args = domain.qemu_args(xml, smbios=smbios)
    outcome = BootOutcome()
    reader = MarkerReader()
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    except OSError as exc:
        outcome.error = f"cannot run {args[0]}: {exc.strerror}"
        return outcome
    outcome.start_seconds = time.monotonic() - t0
    event("started")
    errors = b""
    try:
        with selectors.DefaultSelector() as sel:
            assert proc.stdout is not None and proc.stderr is not None
            sel.register(proc.stdout, selectors.EVENT_READ, "out")
            sel.register(proc.stderr, selectors.EVENT_READ, "err")
            while sel.get_map():
                if reader.report is not None or outcome.error:
                    break
                if until_booted and reader.booted:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    what = "boot" if until_booted else "report"
                    outcome.error = f"no {what} within {timeout:.0f} s"
                    break
                for key, _ in sel.select(min(remaining, 1.0)):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                    elif key.data == "out":
                        _feed(reader, data.decode(errors="replace"), outcome, t0, event)
                    else:
                        errors += data
    finally:
        with shielded():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    outcome.seconds = time.monotonic() - t0
    outcome.report = reader.report
    outcome.console_tail = reader.tail()
    if outcome.report is None and not outcome.error and not (until_booted and reader.booted):
        last = errors.decode(errors="replace").strip().splitlines()
        outcome.error = f"QEMU exited ({proc.returncode}) before the report" + (
            f": {last[-1]}" if last else ""
        )
    return outcome


def boot_libvirt(
    conn: Any, xml: str, console_log: Path, timeout: float, event: Event, *, keep: bool,
    on_started: Callable[[Any], None] | None = None,
) -> BootOutcome:  # fmt: skip
    """Start the domain (transient + autodestroy, or persistent with keep) and read its log."""
    import libvirt

    outcome = BootOutcome()
    reader = MarkerReader()
    t0 = time.monotonic()
    deadline = t0 + timeout
    dom = None
    try:
        try:
            if keep:
                dom = conn.defineXML(xml)
                dom.create()
            else:
                dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
        except libvirt.libvirtError as exc:
            outcome.error = f"libvirt could not start the lab VM: {exc.get_error_message()}"
            return outcome
        outcome.start_seconds = time.monotonic() - t0
        event("started")
        if on_started is not None:
            on_started(dom)
        offset = 0
        while reader.report is None and not outcome.error:
            with contextlib.suppress(FileNotFoundError), console_log.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
                offset += len(data)
                if data:
                    _feed(reader, data.decode(errors="replace"), outcome, t0, event)
                    continue
            if reader.report is not None or outcome.error:
                break
            if not _active(dom):
                outcome.error = "the lab VM stopped before its report"
                break
            if time.monotonic() >= deadline:
                outcome.error = f"no report within {timeout:.0f} s"
                break
            time.sleep(POLL_S)
    finally:
        outcome.seconds = time.monotonic() - t0
        if dom is not None and not keep:
            with shielded(), contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
    outcome.report = reader.report
    outcome.console_tail = reader.tail()
    return outcome


def _active(dom: Any) -> bool:
    import libvirt

    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:  # a transient domain that stopped is gone
        return False
