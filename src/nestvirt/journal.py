"""The journal: every definition nestvirt replaced, so `undo` can put it back.

One directory per subject (a VM, keyed by the daemon's identity + UUID, or the
host), one JSON file per entry, each written atomically (temp + fsync + rename).

The protocol (write-ahead): an entry is written *before* the change, "pending",
holding the previous definition (`before`) and the planned new one (`after`).
After the change it is rewritten with the definition as stored and a final
status. Whatever happens in between (kill -9, a cut connection, a full disk),
the entry on disk names both definitions, so the next command can tell from the
live definition what happened (`reconcile`):

    live == before          -> "failed" (the change was not applied)
    live == planned after   -> "done"
    anything else           -> "diverged" (changed by someone else as well)

Statuses: pending, done, failed (not applied: the subject is as before),
rolled-back (applied, did not stick, put back), diverged (see above).

A file that cannot be read as an entry (truncated, empty, wrong types, nested
too deeply, huge numbers, unreadable) is reported and skipped, never a blocker;
its number stays taken.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nestvirt import statedir

SCHEMA = "nestvirt.journal/1"

PENDING, DONE, ROLLED_BACK = "pending", "done", "rolled-back"
FAILED = "failed"  # not applied: the subject is as it was before
DIVERGED = "diverged"  # the subject is neither the old nor the planned definition
UNDOABLE = frozenset({DONE, PENDING, DIVERGED})

MAX_SEQ = 10**9  # entry numbers above this are not nestvirt's
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # a definition is kilobytes; larger is not ours


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: str  # ISO 8601, UTC
    user: str
    action: str  # enable | disable | undo | host-enable
    subject: str  # the VM name (at the time) or "host"
    uri: str
    uuid: str
    before: str  # the complete previous definition (inactive XML, or file contents)
    after: str | None  # pending: the planned definition; then the definition as stored
    status: str = PENDING
    changes: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    undoes: int | None = None  # for an undo: the seq it reverted
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["changes"] = list(self.changes)
        data["codes"] = list(self.codes)
        return {"schema": SCHEMA, **data}

    @classmethod
    def from_json(cls, data: Any) -> Entry:
        """A decoded entry file → Entry; ValueError naming the first thing wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise ValueError(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        out: dict[str, Any] = {}
        for name, kind, required in _FIELDS:
            if name not in data:
                if required:
                    raise ValueError(f"{name!r} is missing")
                continue
            value = data[name]
            if not _is(value, kind):
                raise ValueError(f"{name!r} is not {kind}")
            out[name] = value
        if not 0 < out["seq"] <= MAX_SEQ:
            raise ValueError(f"'seq' {out['seq']} is out of range")
        if out.get("undoes") is not None and not 0 < out["undoes"] <= MAX_SEQ:
            raise ValueError("'undoes' is out of range")
        out["changes"] = tuple(out.get("changes", ()))
        out["codes"] = tuple(out.get("codes", ()))
        return cls(**out)


_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("seq", "int", True),
    ("time", "str", True),
    ("user", "str", True),
    ("action", "str", True),
    ("subject", "str", True),
    ("uri", "str", True),
    ("uuid", "str", True),
    ("before", "str", True),
    ("after", "str|None", True),
    ("status", "str", False),
    ("changes", "list[str]", False),
    ("codes", "list[str]", False),
    ("undoes", "int|None", False),
    ("extra", "dict", False),
)


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "str|None":
        return value is None or isinstance(value, str)
    if kind == "int|None":
        return value is None or _is(value, "int")
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "dict":
        return isinstance(value, dict)
    raise AssertionError(kind)


def current_user() -> str:
    """Who ran nestvirt: the login behind sudo when there is one."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {name})" if sudo and sudo != name else name


def subject_digest(uri: str, uuid: str) -> str:
    return hashlib.sha256(f"{uri}\0{uuid}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file in the journal directory that is not a readable entry."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipped journal file {self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What reconcile found for a pending entry: the entry as now recorded, and the verdict."""

    entry: Entry
    verdict: str  # "applied" | "not applied" | "changed by someone else"

    def __str__(self) -> str:
        e = self.entry
        what = {
            DONE: "was applied; now recorded as done",
            FAILED: "was not applied; now recorded as failed (nothing changed)",
            DIVERGED: "cannot be confirmed: the definition is neither the one before nor the "
            "one nestvirt wrote (changed by someone else); now recorded as diverged, and "
            "undo needs --force",
        }[e.status]
        return f"journal entry #{e.seq} ({e.action}, {e.time}) was left pending: the change {what}"


class Journal:
    """The entries of one subject: a VM (daemon identity + uuid) or the host."""

    def __init__(self, uri: str, uuid: str, *, root: Path | None = None) -> None:
        self.uri, self.uuid = uri, uuid
        self.root = (root or statedir.state_dir()) / "journal"
        self.directory = self.root / subject_digest(uri, uuid)
        self.skipped: list[Skipped] = []

    @classmethod
    def for_host(cls, *, root: Path | None = None) -> Journal:
        return cls("host", "host", root=root)

    # ------------------------------------------------------------ reading

    def _files(self) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise statedir.StateError(
                f"cannot read the journal {self.directory}: {exc.strerror}"
            ) from None
        files = []
        for name in names:
            stem, dot, ext = name.partition(".")
            if dot and ext == "json" and stem.isdigit() and stem.isascii() and len(stem) < 12:
                files.append((int(stem), self.directory / name))
        return sorted(files)

    def entries(self) -> list[Entry]:
        """The readable entries, by seq; unreadable files go to `skipped` (reported, kept)."""
        self.skipped = []
        found = []
        for number, path in self._files():
            try:
                entry = _load(path)
                if entry.seq != number:
                    raise ValueError(f"'seq' is {entry.seq} in file #{number}")
            except (OSError, ValueError, RecursionError, MemoryError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                if isinstance(exc, RecursionError):
                    reason = "nested too deeply"
                self.skipped.append(Skipped(path, reason or type(exc).__name__))
                continue
            found.append(entry)
        return found

    def _next_seq(self) -> int:
        files = self._files()
        return files[-1][0] + 1 if files else 1  # a corrupt file's number stays taken

    # ------------------------------------------------------------ writing

    def begin(
        self,
        action: str,
        subject: str,
        before: str,
        *,
        after: str | None = None,
        changes: tuple[str, ...] = (),
        codes: tuple[str, ...] = (),
        undoes: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Entry:
        """Record, before changing anything, what is replaced and (write-ahead) by what."""
        entry = Entry(
            seq=self._next_seq(),
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            user=current_user(),
            action=action,
            subject=subject,
            uri=self.uri,
            uuid=self.uuid,
            before=before,
            after=after,
            changes=changes,
            codes=codes,
            undoes=undoes,
            extra=extra or {},
        )
        self._write(entry)
        return entry

    def finish(
        self,
        entry: Entry,
        after: str | None,
        status: str = DONE,
        *,
        note: str | None = None,
    ) -> Entry:
        extra = {**entry.extra, "note": note} if note else entry.extra
        done = replace(entry, after=after, status=status, extra=extra)
        self._write(done)
        return done

    def last_undoable(self) -> Entry | None:
        """The newest applied change not already reverted by an undo (a stack)."""
        entries = self.entries()
        undone = {e.undoes for e in entries if e.action == "undo" and e.status == DONE}
        for entry in reversed(entries):
            if entry.action == "undo" or entry.seq in undone:
                continue
            if entry.status in UNDOABLE:
                return entry
        return None

    def reconcile(self, live: str, same: Callable[[str, str], bool]) -> list[Reconciled]:
        """Settle pending entries by what the subject looks like now (hold the lock).

        The newest entry is judged against `live`; an older pending one (only
        left by an older nestvirt) against the `before` of the entry after it.
        """
        entries = self.entries()
        settled = []
        for index, entry in enumerate(entries):
            if entry.status != PENDING:
                continue
            now = entries[index + 1].before if index + 1 < len(entries) else live
            if now == entry.before:
                done = self.finish(entry, None, FAILED, note="reconciled: not applied")
            elif entry.after is not None and same(now, entry.after):
                done = self.finish(entry, now, DONE, note="reconciled: applied")
            else:
                done = self.finish(
                    entry, entry.after, DIVERGED, note="reconciled: changed by someone else"
                )
            settled.append(Reconciled(done, done.status))
        return settled

    def clean_temp_files(self, older_than: float = 0.0) -> int:
        """Remove temp files a killed writer left behind (call holding the subject's lock)."""
        removed = 0
        with contextlib.suppress(OSError):
            for name in os.listdir(self.directory):
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                path = self.directory / name
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime >= older_than:
                        path.unlink()
                        removed += 1
        return removed

    def adopt(self, legacy_uris: Iterable[str]) -> int:
        """Move entries journaled under older keys (the URI as spelled) into this journal.

        Older nestvirt keyed journals by the URI text; entries found under any of
        `legacy_uris` (with this UUID) are appended here in time order, renumbered
        (an undo's `undoes` follows), and their old files removed. Hold the lock.
        """
        moved = 0
        for uri in dict.fromkeys(legacy_uris):
            old = Journal(uri, self.uuid, root=self.root.parent)
            if old.directory == self.directory or not old.directory.is_dir():
                continue
            entries = old.entries()
            if old.skipped:  # keep what cannot be read where it is, and say so
                self.skipped.extend(old.skipped)
            if not self.directory.exists() and not old.skipped:
                try:
                    os.rename(old.directory, self.directory)
                except OSError as exc:
                    raise statedir.StateError(
                        f"cannot move the journal {old.directory} to {self.directory}: "
                        f"{exc.strerror}"
                    ) from None
                moved += len(entries)
                continue
            renumber: dict[int, int] = {}
            for entry in entries:
                seq = self._next_seq()
                renumber[entry.seq] = seq
                undoes = renumber.get(entry.undoes) if entry.undoes is not None else None
                self._write(replace(entry, seq=seq, uri=self.uri, undoes=undoes))
                moved += 1
            for entry in entries:
                with contextlib.suppress(OSError):
                    (old.directory / f"{entry.seq:06d}.json").unlink()
            with contextlib.suppress(OSError):
                old.clean_temp_files()
                old.directory.rmdir()
        return moved

    def _write(self, entry: Entry) -> None:
        statedir.make_dirs(self.directory, "the journal")
        path = self.directory / f"{entry.seq:06d}.json"
        statedir.atomic_write(
            path, json.dumps(entry.to_json(), indent=1) + "\n", what="the journal"
        )


def _load(path: Path) -> Entry:
    with path.open("rb") as handle:
        raw = handle.read(MAX_ENTRY_BYTES + 1)
    if len(raw) > MAX_ENTRY_BYTES:
        raise ValueError("larger than any entry nestvirt writes")
    if not raw.strip():
        raise ValueError("empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (truncated?) at line {exc.lineno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except ValueError as exc:  # e.g. Python's limit on digits in an integer
        raise ValueError(f"not a journal entry: {exc}") from None
    return Entry.from_json(data)
