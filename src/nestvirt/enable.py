"""The generic write flow of `enable`, `disable` and `undo`, and its libvirt subject.

    validate → lock → settle the journal → read → plan → show (plan + diff) →
    confirm → re-check → [stop] → journal (pending: before + planned after) →
    write once → re-read, re-run the rules → (restore on failure) →
    journal (done) → [start]

Settling the journal (nestvirt.journal.reconcile): an entry a crashed or killed
run left pending is judged by the live definition — applied, not applied, or
changed by someone else — and the command says which. Any failure once the
write may have happened (an error, a cut connection, Ctrl-C, a full disk) is
recorded as what the live definition shows, never guessed: if the subject was
changed the error says so and how to undo it.

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
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nestvirt import lock
from nestvirt.errors import (
    Busy,
    CannotFix,
    Interrupted,
    NestvirtError,
    NotFound,
    UsageError,
    from_interrupt,
)
from nestvirt.journal import DIVERGED, DONE, FAILED, PENDING, ROLLED_BACK, Entry, Journal
from nestvirt.model import Finding, Plan, Severity, plan_document
from nestvirt.statedir import StateError
from nestvirt.vocabulary import RUNNING_STATES

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
    wait: float = 0.0  # seconds to wait for another nestvirt changing the same VM


@dataclass(slots=True)
class Outcome:
    vm: str
    action: str
    plan: Plan
    diff: str = ""
    applied: bool = False
    journal_seq: int | None = None
    messages: list[str] = field(default_factory=list)
    discarded: str = ""  # undo --dry-run of a changed VM: what --force would discard (a diff)
    refused: str = ""  # ... and why undo without --force refuses

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
    book = _journal(subject, journal)
    if options.dry_run:
        settle_if_free(subject, book, progress)
        return _plan_and_show(subject, action, options, show, book)
    uri, ident = subject.key
    with lock.vm_lock(uri, ident, subject.name, wait=options.wait):
        settle(subject, book, progress)
        return _plan_and_apply(subject, action, options, show, confirm, progress, book)


def _journal(subject: Subject, journal: Journal | None) -> Journal:
    return journal or Journal(*subject.key)


def same_definition(a: str, b: str) -> bool:
    """The same definition: equal text, or equal XML once whitespace between elements goes."""
    if a == b:
        return True
    from lxml import etree

    try:
        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
        one = etree.fromstring(a.encode(), parser)
        two = etree.fromstring(b.encode(), parser)
    except (etree.XMLSyntaxError, ValueError):
        return False
    return bool(etree.tostring(one, method="c14n") == etree.tostring(two, method="c14n"))


def live_definition(subject: Subject) -> str:
    """The subject's definition now (reconnecting if the subject knows how)."""
    reread = getattr(subject, "live_definition", None)
    if reread is not None:
        return str(reread())
    return subject.read().definition


def undo_command(subject: Subject) -> str:
    command = getattr(subject, "undo_command", None)
    if command is not None:
        return str(command())
    return f"nestvirt undo {shlex.quote(subject.name)}"


def settle(subject: Subject, book: Journal, progress: Callable[[str], None]) -> None:
    """Holding the lock: adopt old journals, clean temp files, reconcile pending entries.

    Each finding is said on `progress` (stderr): skipped corrupt files, and for a
    pending entry whether its change was applied, not applied, or is neither.
    """
    legacy = getattr(subject, "legacy_keys", None)
    if legacy is not None:
        book.adopt(legacy())
    book.clean_temp_files()
    entries = book.entries()
    for skipped in book.skipped:
        progress(str(skipped))
    if any(e.status == PENDING for e in entries):
        for found in book.reconcile(live_definition(subject), same_definition):
            progress(f"{subject.name}: {found}")


def settle_if_free(subject: Subject, book: Journal, progress: Callable[[str], None]) -> None:
    """settle() for read-only commands: only when no other nestvirt holds the lock and the
    state directory is writable; otherwise report unreadable entries and leave the rest."""
    uri, ident = subject.key
    try:
        with lock.vm_lock(uri, ident, subject.name):
            settle(subject, book, progress)
            return
    except (Busy, StateError):
        pass
    book.entries()
    for skipped in book.skipped:
        progress(str(skipped))


def _undo_problem(subject: Subject, entry: Entry, live: str) -> str | None:
    """Why undoing `entry` would discard something nestvirt did not write; None if not."""
    what = f"nestvirt's change #{entry.seq} ({entry.action}, {entry.time})"
    hint = f"undo would discard that: add --force (`{undo_command(subject)} --dry-run` shows what)"
    if entry.status == DIVERGED:
        return (
            f"{subject.name!r} is not what {what} left: it was changed by someone else as "
            f"well; {hint}"
        )
    if entry.status == PENDING:
        return f"{what} is still pending (another nestvirt may be applying it); {hint}"
    if entry.after is None or not same_definition(entry.after, live):
        return f"{subject.name!r} was changed after {what}; {hint}"
    return None


def _relabel(diff: str, old: str, new: str) -> str:
    lines = diff.splitlines(keepends=True)
    if len(lines) >= 2 and lines[0].startswith("--- ") and lines[1].startswith("+++ "):
        lines[0], lines[1] = f"--- {old}\n", f"+++ {new}\n"
    return "".join(lines)


def _plan(
    subject: Subject, action: str, options: FlowOptions, book: Journal
) -> tuple[Snapshot, Outcome, Entry | None]:
    snap = subject.read()
    entry = None
    refused = discarded = ""
    if action == UNDO:
        entry = book.last_undoable()
        if entry is None:
            raise NotFound(f"nothing to undo: nestvirt has not changed {subject.name!r} here")
        problem = _undo_problem(subject, entry, snap.definition)
        if problem is not None and not options.force:
            if not options.dry_run:
                raise UsageError(problem)
            refused = problem
            discarded = _relabel(
                subject.diff(entry.after or entry.before, snap.definition),
                f"as nestvirt's change #{entry.seq} left it",
                "now",
            )
    plan = subject.plan(snap, action, entry)
    outcome = Outcome(subject.name, action, plan, refused=refused, discarded=discarded)
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
    book: Journal,
) -> Outcome:
    snap, outcome, _entry = _plan(subject, action, options, book)
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
    book: Journal,
) -> Outcome:
    snap, outcome, undone = _plan(subject, action, options, book)
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
    stopped = False
    if snap.running and any(c.needs_stop for c in plan.changes):
        progress(f"shutting down {subject.name}")
        subject.stop(options.stop_timeout, progress)
        stopped = True
    try:
        # write-ahead: the previous and the planned definition, before anything changes
        try:
            entry = book.begin(
                action,
                subject.name,
                snap.definition,
                after=new,
                changes=tuple(c.action for c in plan.changes),
                codes=tuple(sorted({code for c in plan.changes for code in c.codes})),
                undoes=undone.seq if undone is not None else None,
            )
        except StateError as exc:
            raise StateError(f"{exc}; nothing changed") from None
        outcome.journal_seq = entry.seq
        problem: str | None = None
        try:
            stored = subject.write(plan, new)
            problem = subject.verify(plan, action)
            if problem is not None:
                subject.restore(snap.definition)
        except BaseException as exc:
            raise _after_failure(subject, book, entry, snap.definition, exc) from exc
        if problem is not None:
            _record(subject, book, entry, stored, ROLLED_BACK, changed=False)
            raise CannotFix(
                f"{subject.name}: {problem}; the previous definition is restored "
                f"(journal entry #{entry.seq})"
            )
        _record(subject, book, entry, stored, DONE, changed=True)
        outcome.applied = True
    finally:
        if stopped:
            progress(f"starting {subject.name} again")
            subject.start()
    return outcome


def _record(
    subject: Subject, book: Journal, entry: Entry, after: str | None, status: str, *, changed: bool
) -> None:
    """Finish `entry`; if the journal cannot be written, say what state the subject is in."""
    try:
        book.finish(entry, after, status)
    except StateError as exc:
        state = (
            f"{subject.name} was changed; `{undo_command(subject)}` puts the previous "
            "definition back once the journal can be written"
            if changed
            else f"{subject.name} is as it was before"
        )
        raise NestvirtError(
            f"{exc}: journal entry #{entry.seq} stays pending and the next nestvirt command "
            f"on {subject.name} settles it; {state}"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    message = getattr(exc, "get_error_message", None)
    if callable(message):  # a libvirtError: its own one line
        with contextlib.suppress(Exception):
            return f"libvirt: {message() or exc}"
    return str(exc) or type(exc).__name__


def _one_line(exc: BaseException) -> bool:
    """Errors with a one-line story for the user (not bugs in nestvirt)."""
    return isinstance(exc, NestvirtError | OSError | KeyboardInterrupt) or (
        type(exc).__name__ == "libvirtError"
    )


def _after_failure(
    subject: Subject, book: Journal, entry: Entry, before: str, exc: BaseException
) -> BaseException:
    """The write (or what follows it) failed with `exc`: record what the subject now is.

    Returns the exception to raise: the original one when nothing changed (its
    message stays), else one line saying the subject was changed and how to undo.
    """
    if not isinstance(exc, KeyboardInterrupt) and from_interrupt(exc):
        exc = KeyboardInterrupt()  # Python wrapped a Ctrl-C (e.g. in a RuntimeError)
    name, seq, reason = subject.name, entry.seq, _reason(exc)
    try:
        live: str | None = live_definition(subject)
    except Exception:
        live = None
    if live is None:
        message = (
            f"{reason}; nestvirt cannot read {name} now to tell whether it was changed: "
            f"journal entry #{seq} stays pending and the next nestvirt command on {name} "
            "checks it and says which"
        )
        if isinstance(exc, KeyboardInterrupt):
            return Interrupted(message)
        return NestvirtError(message) if _one_line(exc) else exc
    changed = live != before
    try:
        book.finish(
            entry,
            live if changed else None,
            DONE if changed else FAILED,
            note=f"recorded after a failure: {reason}",
        )
        kept = ""
    except StateError as again:
        kept = (
            f"; the journal cannot record it ({again}): entry #{seq} stays pending and the "
            "next command settles it"
        )
    if not changed:
        if isinstance(exc, KeyboardInterrupt):
            return Interrupted(f"interrupted; {name} was not changed (journal entry #{seq}){kept}")
        if kept and isinstance(exc, NestvirtError):
            return NestvirtError(f"{exc}; nothing changed{kept}")
        return exc
    message = (
        f"{name} was changed (journal entry #{seq}), but then: {reason}{kept}; "
        f"`{undo_command(subject)}` puts the previous definition back"
    )
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(message)
    return NestvirtError(message) if _one_line(exc) else exc


def history(
    subject: Subject,
    *,
    journal: Journal | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[Entry]:
    """The subject's journal, settled first when no other nestvirt is changing it."""
    book = _journal(subject, journal)
    settle_if_free(subject, book, progress)
    return book.entries()


# ----------------------------------------------------------------- libvirt


class LibvirtSubject:
    """A libvirt domain as a Subject. Opens the connection and finds the domain at once."""

    def __init__(
        self,
        uri: str | None,
        name: str,
        options: PlanOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_session as session
        from nestvirt.plan_libvirt import PlanOptions

        self.options = options or PlanOptions()
        self.spelled = uri  # as the user wrote it (None: the default): for printed commands
        self.timeout = session.DEFAULT_TIMEOUT if timeout is None else timeout
        self.conn = session.open_connection(uri, timeout=self.timeout)
        try:
            self.dom = backend.lookup_domain(self.conn, name)
            self.name = self.dom.name()
            self.uri = str(self.conn.getURI())
            # one lock and one journal per daemon + domain, whatever the URI's spelling
            self.identity = session.daemon_identity(self.conn)
            self.key = (self.identity, str(self.dom.UUIDString()))
        except BaseException:
            self.close()
            raise

    def legacy_keys(self) -> list[str]:
        """The URI texts older nestvirt keyed this domain's journal by."""
        from nestvirt.backends import libvirt_session as session

        return session.legacy_uris(self.conn)

    def undo_command(self) -> str:
        from nestvirt.backends import libvirt_session as session

        return session.undo_command(self.name, self.spelled)

    def live_definition(self) -> str:
        """The inactive XML now; over a new connection if this one was lost."""
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_session as session

        try:
            return backend.inactive_xml(self.dom)
        except Exception:
            conn = session.open_connection(self.spelled, timeout=self.timeout)
            self.close()
            self.conn = conn
            self.dom = conn.lookupByUUIDString(self.key[1])
            return backend.inactive_xml(self.dom)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a connection that already failed
            self.conn.close()

    def read(self) -> Snapshot:
        from nestvirt import rules
        from nestvirt.backends import libvirt as backend

        facts = backend.vm_facts(self.conn, self.dom)
        findings = rules.run(rules.Target.VM, rules.Platform.LIBVIRT, facts)
        running = facts.state in RUNNING_STATES
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

        filters = [nf for c in plan.changes for nf in getattr(c, "nwfilters", ())]
        if filters:  # a derived filter must exist before a definition references it
            libvirt_write.define_nwfilters(self.conn, filters)
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
