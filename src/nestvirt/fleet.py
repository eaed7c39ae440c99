"""`nestvirt status` over several libvirt URIs at once: one nestvirt.status/1 report per host.

Hosts are asked concurrently, at most `workers` at a time, each within `timeout` seconds
(the open, and the whole query: a host that takes longer is reported as slow and its
worker abandoned — a daemon thread, it cannot keep the process alive). A host that does
not answer, is slow or returns garbage becomes a report of its own whose host carries
NV-H30 (nestvirt.rules.fleet); the other hosts are never held up by it.

The JSON (`fleet_json`) is a list, one entry per URI in the order given:
`{"uri", "seconds", "error": null | {"code", "problem", "message"}, "status": nestvirt.status/1}`
(docs/contracts.md).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestvirt import rules
from nestvirt.errors import ConnectError, UsageError
from nestvirt.model import HostReport, StatusReport
from nestvirt.rules import Platform, Target

DEFAULT_WORKERS = 8


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """One URI's answer: its report (always), and why it is incomplete (problem)."""

    uri: str
    report: StatusReport
    seconds: float
    problem: str | None = None  # "unreachable" | "timeout" | "garbage"

    def to_json(self) -> dict[str, Any]:
        error = None
        if self.problem is not None:
            finding = self.report.host.findings[0]
            error = {"code": finding.code, "problem": self.problem, "message": finding.message}
        return {
            "uri": self.uri,
            "seconds": round(self.seconds, 3),
            "error": error,
            "status": self.report.to_json(),
        }


def read_inventory(path: str) -> list[str]:
    """URIs of an inventory file: one per line; blank lines and `#` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read inventory {path}: {exc}") from exc
    uris = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    found = [u for u in uris if u]
    if not found:
        raise UsageError(f"inventory {path} names no URI")
    return found


def failed(uri: str, problem: str, detail: str, seconds: float) -> HostOutcome:
    """The report of a host that gave no usable answer: NV-H30 on a host named by its URI."""
    from nestvirt.rules.fleet import HostAnswer

    answer = HostAnswer(uri, problem, detail, seconds)
    findings = tuple(rules.run(Target.HOST, Platform.LIBVIRT, answer))
    host = HostReport(uri, "linux", {"uri": uri, "answered": False}, findings)
    return HostOutcome(uri, StatusReport(host), seconds, problem)


class _LocalHost:
    """This machine's host report, gathered once however many local URIs ask for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: HostReport | None = None

    def __call__(self) -> HostReport:
        with self._lock:
            if self._report is None:
                from nestvirt.status import host_report

                self._report = host_report()
            return self._report


def query(uri: str, *, timeout: float, local_host: Callable[[], HostReport]) -> StatusReport:
    """One URI's status (raises ConnectError; anything else is the host's garbage)."""
    from nestvirt.backends import libvirt_session as session
    from nestvirt.platforms import libvirt

    conn = session.open_connection(uri, readonly=True, timeout=timeout)
    try:
        return libvirt.report_of(conn, uri, [], local_host)
    finally:
        with contextlib.suppress(Exception):  # a connection the daemon dropped: an error
            conn.close()


def _ask(uri: str, timeout: float, local_host: Callable[[], HostReport]) -> HostOutcome:
    start = time.monotonic()
    try:
        report = query(uri, timeout=timeout, local_host=local_host)
    except ConnectError as exc:
        problem = "timeout" if "no answer" in str(exc) else "unreachable"
        return failed(uri, problem, str(exc), time.monotonic() - start)
    except Exception as exc:  # a daemon's unusable answer: its own row, never an abort
        detail = f"{type(exc).__name__}: {exc}"
        return failed(uri, "garbage", detail, time.monotonic() - start)
    return HostOutcome(uri, report, time.monotonic() - start)


def fleet_status(
    uris: Iterable[str],
    *,
    timeout: float = 30.0,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[HostOutcome, int, int], None] | None = None,
) -> list[HostOutcome]:
    """Every URI's outcome, in the order given; `progress(outcome, done, total)` as each ends."""
    targets = list(dict.fromkeys(uris))  # a URI given twice is asked once
    if not targets:
        raise UsageError("no libvirt URI to ask")
    local_host = _LocalHost()
    answers: queue.Queue[tuple[int, HostOutcome]] = queue.Queue()
    outcomes: list[HostOutcome | None] = [None] * len(targets)
    waiting = list(enumerate(targets))
    running: dict[int, float] = {}  # index → deadline
    done = 0

    def finish(index: int, outcome: HostOutcome) -> None:
        nonlocal done
        outcomes[index] = outcome
        running.pop(index, None)
        done += 1
        if progress is not None:
            progress(outcome, done, len(targets))

    while waiting or running:
        while waiting and len(running) < max(1, workers):
            index, uri = waiting.pop(0)
            running[index] = time.monotonic() + timeout

            def work(index: int = index, uri: str = uri) -> None:
                answers.put((index, _ask(uri, timeout, local_host)))

            threading.Thread(target=work, name=f"nestvirt-fleet-{index}", daemon=True).start()
        try:
            index, outcome = answers.get(timeout=max(0.0, min(running.values()) - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for index in [i for i, deadline in running.items() if deadline <= now]:
                detail = "the query did not finish (a slow or hung daemon)"
                finish(index, failed(targets[index], "timeout", detail, timeout))
            continue
        if index in running:  # a late answer of a host already reported as slow is dropped
            finish(index, outcome)
    return [o for o in outcomes if o is not None]


def fleet_json(outcomes: Iterable[HostOutcome]) -> list[dict[str, Any]]:
    return [o.to_json() for o in outcomes]


def worst_finding(report: StatusReport) -> tuple[str, Any] | None:
    """(where, finding): the most severe finding of the host or its VMs, the first of those."""
    from nestvirt.model import Severity

    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    found = [(report.host.name, f) for f in report.host.findings]
    found += [(vm.name, f) for vm in report.vms for f in vm.findings]
    if not found:
        return None
    return min(found, key=lambda pair: order[pair[1].severity])
