"""The generic write flow of `enable`, `disable` and `undo`, and its libvirt subject.

    validate → lock → read → plan → show (plan + diff) → confirm → re-check →
    [stop] → journal (pending) → write once → re-read, re-run the rules →
    (restore on failure) → journal (done) → [start]

The flow knows nothing about libvirt: it drives a `Subject`, a small protocol
any backend can implement. LibvirtSubject below is the libvirt one; a Hyper-V
VM fits the same way (its "definition" being a JSON document of the settings
Enable-NestedVm changes — ExposeVirtualizationExtensions, DynamicMemoryEnabled,
StartupBytes, MacAddressSpoofing — `write` running Set-VMProcessor /
Set-VMMemory / Set-VMNetworkAdapter, `restore` setting the old values back).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nestvirt import lock
from nestvirt.errors import CannotFix, NestvirtError, NotFound, UsageError
from nestvirt.journal import DONE, ROLLED_BACK, Entry, Journal
from nestvirt.model import Finding, Plan, Severity, plan_document

if TYPE_CHECKING:
    from nestvirt.plan_libvirt import PlanOptions

ENABLE, DISABLE, UNDO = "enable", "disable", "undo"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a subject looked like when read: its definition, facts and findings."""

    definition: str
    facts: Any
    findings: tuple[Finding, ...]
    running: bool  # a change of the definition takes effect only after a stop


class Subject(Protocol):
    """One VM the flow can change. Implemented by LibvirtSubject (and a Hyper-V VM)."""

    name: str
    key: tuple[str, str]  # (connection, stable id): the lock and journal key

    def read(self) -> Snapshot: ...

    def plan(self, snap: Snapshot, action: str, undo: Entry | None) -> Plan: ...

    def render(self, snap: Snapshot, plan: Plan) -> str:
        """The complete new definition, computed in memory (nothing written)."""
        ...

    def diff(self, before: str, after: str) -> str: ...

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None: ...

    def start(self) -> None: ...

    def write(self, plan: Plan, definition: str) -> str:
        """Store `definition` in one atomic step; act on state changes; return it as stored."""
        ...

    def restore(self, definition: str) -> str: ...

    def verify(self, plan: Plan, action: str) -> str | None:
        """Re-read and re-run the rules: None when the plan stuck, else why not."""
        ...


@dataclass(frozen=True, slots=True)
class FlowOptions:
    dry_run: bool = False
    stop: bool = False
    stop_timeout: float = 120.0
    force: bool = False  # undo although the definition changed since nestvirt's change


@dataclass(slots=True)
class Outcome:
    vm: str
    action: str
    plan: Plan
    diff: str = ""
    applied: bool = False
    journal_seq: int | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.applied and not self.plan.empty

    def to_json(self) -> dict[str, Any]:
        return plan_document(self.vm, self.plan.changes, applied=self.applied)


Show = Callable[[Outcome], None]
Confirm = Callable[[Outcome], bool]


def run(
    subject: Subject,
    action: str,
    options: FlowOptions,
    *,
    show: Show,
    confirm: Confirm,
    progress: Callable[[str], None] = lambda _msg: None,
    journal: Journal | None = None,
) -> Outcome:
    """Plan `action` on `subject`; show it; on confirmation apply it atomically."""
    if options.dry_run:
        return _plan_and_show(subject, action, options, show, journal)
    uri, ident = subject.key
    with lock.vm_lock(uri, ident, subject.name):
        return _plan_and_apply(subject, action, options, show, confirm, progress, journal)


def _journal(subject: Subject, journal: Journal | None) -> Journal:
    return journal or Journal(*subject.key)


def _plan(
    subject: Subject, action: str, options: FlowOptions, journal: Journal | None
) -> tuple[Snapshot, Outcome, Entry | None]:
    snap = subject.read()
    entry = None
    if action == UNDO:
        entry = _journal(subject, journal).last_undoable()
        if entry is None:
            raise NotFound(f"nothing to undo: nestvirt has not changed {subject.name!r} here")
        if entry.after is not None and entry.after != snap.definition and not options.force:
            raise UsageError(
                f"{subject.name!r} was changed after nestvirt's change #{entry.seq} "
                f"({entry.action}, {entry.time}); undo would discard that too: add --force"
            )
    plan = subject.plan(snap, action, entry)
    outcome = Outcome(subject.name, action, plan)
    if not plan.empty:
        outcome.diff = subject.diff(snap.definition, subject.render(snap, plan))
    return snap, outcome, entry


def _refusals(subject: Subject, snap: Snapshot, outcome: Outcome, options: FlowOptions) -> None:
    plan = outcome.plan
    blocking = [f for f in plan.unfixable if f.severity is Severity.ERROR]
    if blocking:
        first = blocking[0]
        raise CannotFix(f"{subject.name}: {first.code} cannot be fixed: {first.message}")
    if snap.running and not options.stop and any(c.needs_stop for c in plan.changes):
        raise UsageError(
            f"{subject.name} is running and the changes need a full stop and start: add "
            "--stop to shut it down gracefully and start it again, or shut it down first"
        )


def _plan_and_show(
    subject: Subject,
    action: str,
    options: FlowOptions,
    show: Show,
    journal: Journal | None,
) -> Outcome:
    snap, outcome, _entry = _plan(subject, action, options, journal)
    show(outcome)
    _refusals(subject, snap, outcome, options)
    return outcome


def _plan_and_apply(
    subject: Subject,
    action: str,
    options: FlowOptions,
    show: Show,
    confirm: Confirm,
    progress: Callable[[str], None],
    journal: Journal | None,
) -> Outcome:
    snap, outcome, undone = _plan(subject, action, options, journal)
    show(outcome)
    _refusals(subject, snap, outcome, options)
    plan = outcome.plan
    if plan.empty:
        return outcome
    if not confirm(outcome):
        outcome.messages.append("nothing changed")
        return outcome
    new = subject.render(snap, plan)
    if subject.read().definition != snap.definition:
        raise NestvirtError(
            f"the definition of {subject.name} changed while nestvirt was asking; nothing "
            "changed: run the command again"
        )
    book = _journal(subject, journal)
    stopped = False
    if snap.running and any(c.needs_stop for c in plan.changes):
        progress(f"shutting down {subject.name}")
        subject.stop(options.stop_timeout, progress)
        stopped = True
    try:
        entry = book.begin(
            action,
            subject.name,
            snap.definition,
            changes=tuple(c.action for c in plan.changes),
            codes=tuple(sorted({code for c in plan.changes for code in c.codes})),
            undoes=undone.seq if undone is not None else None,
        )
        outcome.journal_seq = entry.seq
        try:
            stored = subject.write(plan, new)
        except BaseException:
            book.finish(entry, None, status="failed")
            raise
        problem = subject.verify(plan, action)
        if problem is not None:
            subject.restore(snap.definition)
            book.finish(entry, stored, status=ROLLED_BACK)
            raise CannotFix(
                f"{subject.name}: {problem}; the previous definition is restored "
                f"(journal entry #{entry.seq})"
            )
        book.finish(entry, stored, status=DONE)
        outcome.applied = True
    finally:
        if stopped:
            progress(f"starting {subject.name} again")
            subject.start()
    return outcome


def history(subject_key: tuple[str, str], *, journal: Journal | None = None) -> list[Entry]:
    return (journal or Journal(*subject_key)).entries()


# ----------------------------------------------------------------- libvirt


class LibvirtSubject:
    """A libvirt domain as a Subject. Opens the connection and finds the domain at once."""

    def __init__(self, uri: str | None, name: str, options: PlanOptions | None = None) -> None:
        from nestvirt.backends import libvirt as backend
        from nestvirt.plan_libvirt import PlanOptions

        self.options = options or PlanOptions()
        self.conn = backend.open_connection(uri)
        self.dom = backend.lookup_domain(self.conn, name)
        self.name = self.dom.name()
        self.uri = str(self.conn.getURI())
        self.key = (self.uri, str(self.dom.UUIDString()))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a connection that already failed
            self.conn.close()

    def read(self) -> Snapshot:
        from nestvirt import rules
        from nestvirt.backends import libvirt as backend

        facts = backend.vm_facts(self.conn, self.dom)
        findings = rules.run(rules.Target.VM, rules.Platform.LIBVIRT, facts)
        running = facts.state not in ("off", "saved", "crashed", "unknown")
        return Snapshot(backend.inactive_xml(self.dom), facts, tuple(findings), running)

    def plan(self, snap: Snapshot, action: str, undo: Entry | None) -> Plan:
        from nestvirt import plan_libvirt as pl

        if action == ENABLE:
            return pl.build_plan(snap.facts, snap.findings, self.options)
        if action == DISABLE:
            return pl.build_disable_plan(snap.facts, snap.findings, self.options)
        if action == UNDO and undo is not None:
            what = f"{undo.action} at {undo.time} by {undo.user}"
            base = Plan(vm=self.name, changes=(pl.restore_change(undo.before, undo.seq, what),))
            return pl.plan_with_state(base, snap.facts, self.options)
        raise UsageError(f"unknown action {action!r}")

    def render(self, snap: Snapshot, plan: Plan) -> str:
        from nestvirt import domxml
        from nestvirt.plan_libvirt import edits_of

        return domxml.render(snap.definition, edits_of(plan))

    def diff(self, before: str, after: str) -> str:
        from nestvirt import domxml

        return domxml.unified_diff(before, after, self.name)

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        from nestvirt.backends import libvirt_write

        libvirt_write.shutdown(self.dom, timeout, progress=progress)

    def start(self) -> None:
        from nestvirt.backends import libvirt_write

        libvirt_write.start(self.dom)

    def write(self, plan: Plan, definition: str) -> str:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_write
        from nestvirt.plan_libvirt import DISCARD_MANAGED_SAVE

        self.dom = libvirt_write.define(self.conn, definition)
        if any(c.action == DISCARD_MANAGED_SAVE for c in plan.changes):
            libvirt_write.managed_save_remove(self.dom)
        return backend.inactive_xml(self.dom)

    def restore(self, definition: str) -> str:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_write

        self.dom = libvirt_write.define(self.conn, definition)
        return backend.inactive_xml(self.dom)

    def verify(self, plan: Plan, action: str) -> str | None:
        from nestvirt import plan_libvirt as pl

        snap = self.read()
        fired = {f.code for f in snap.findings}
        actions = {c.action for c in plan.changes}
        if pl.EXPOSE in actions and "NV-V01" in fired:
            return "libvirt did not keep the exposed vmx/svm (NV-V01 still fires)"
        if pl.HIDE in actions and "NV-V01" not in fired:
            return "vmx/svm are still exposed after disable"
        if action == ENABLE:
            again = pl.remaining_definition_changes(
                pl.build_plan(snap.facts, snap.findings, self.options)
            )
            if again:
                return "libvirt did not keep: " + "; ".join(c.summary for c in again)
        return None


def default_stop_timeout() -> float:
    value = os.environ.get("NESTVIRT_STOP_TIMEOUT")
    try:
        return float(value) if value else 120.0
    except ValueError:
        return 120.0
