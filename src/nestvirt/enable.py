"""The generic write flow of `enable`, `disable` and `undo`.

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

The flow knows no platform: it drives a `Subject`, a small protocol each
platform's adapter implements (nestvirt.platforms: a libvirt domain's definition is
its XML; a Hyper-V VM's a JSON document of the settings Enable-NestedVm changes).
`subject_for` finds the adapter of an endpoint through nestvirt.registry.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nestvirt import lock
from nestvirt.endpoint import Endpoint
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

ENABLE, DISABLE, UNDO = "enable", "disable", "undo"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a subject looked like when read: its definition, facts and findings."""

    definition: str
    facts: Any
    findings: tuple[Finding, ...]
    running: bool  # a change of the definition takes effect only after a stop


class Subject(Protocol):
    """One VM the flow can change, made by its platform's adapter (nestvirt.platforms)."""

    name: str
    uri: str  # where it lives, as `history` prints it
    key: tuple[str, str]  # (connection, stable id): the lock and journal key

    def close(self) -> None: ...

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


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """What the user asked of enable/disable/undo, before any platform reads it. Each
    adapter turns it into its plan's options and refuses what its platform cannot do."""

    memory_kib: int | None = None
    mac_spoofing: bool = False
    remove_hotplug: bool = False  # libvirt: also drop <maxMemory> and virtio-mem
    install_hypervisor: bool = False  # Hyper-V: then enable the feature inside the guest
    restart: bool = False  # ... and restart the VM afterwards
    stop: bool = False
    stop_timeout: int = 120


def subject_for(
    where: Endpoint,
    vm: str,
    request: ChangeRequest,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float | None = None,
) -> Subject:
    """The Subject of `vm` at `where`, from the platform registered for that endpoint."""
    from nestvirt import registry

    adapter = registry.adapter_for(where)
    subject: Subject = adapter.subject(
        where, vm, request, dry_run=dry_run, progress=progress, timeout=timeout
    )
    return subject


def outcome_json(subject: Subject, outcome: Outcome) -> dict[str, Any]:
    """The `nestvirt.plan/1` document of an outcome; a subject may say its commands its own way."""
    own = getattr(subject, "plan_json", None)
    return dict(own(outcome)) if own is not None else outcome.to_json()


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
    with lock.vm_lock(uri, ident, subject.name, wait=options.wait, what=_what(subject)):
        settle(subject, book, progress)
        return _plan_and_apply(subject, action, options, show, confirm, progress, book)


def _what(subject: Subject) -> str:
    """The subject as a busy lock names it: `lock_what` where a subject is not a VM."""
    return str(getattr(subject, "lock_what", f"VM {subject.name!r}"))


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
        with lock.vm_lock(uri, ident, subject.name, what=_what(subject)):
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


def default_stop_timeout() -> float:
    value = os.environ.get("NESTVIRT_STOP_TIMEOUT")
    try:
        return float(value) if value else 120.0
    except ValueError:
        return 120.0
