"""The journal: every definition nestvirt replaced, so `undo` can put it back.

One directory per subject (a VM, keyed by connection URI + UUID, or the host),
one JSON file per entry, each written atomically (temp + fsync + rename). An
entry is written *before* the change ("pending", with the previous definition)
and rewritten after it ("done", with the definition libvirt stored), so a crash
in between still leaves the old definition on disk.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nestvirt import statedir

SCHEMA = "nestvirt.journal/1"

PENDING, DONE, ROLLED_BACK = "pending", "done", "rolled-back"


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
    after: str | None  # the definition as stored afterwards; None while pending
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
    def from_json(cls, data: dict[str, Any]) -> Entry:
        data = {k: v for k, v in data.items() if k != "schema"}
        data["changes"] = tuple(data.get("changes", ()))
        data["codes"] = tuple(data.get("codes", ()))
        return cls(**data)


def current_user() -> str:
    """Who ran nestvirt: the login behind sudo when there is one."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {name})" if sudo and sudo != name else name


class Journal:
    """The entries of one subject: a VM (uri + uuid) or the host."""

    def __init__(self, uri: str, uuid: str, *, root: Path | None = None) -> None:
        self.uri, self.uuid = uri, uuid
        digest = hashlib.sha256(f"{uri}\0{uuid}".encode()).hexdigest()[:24]
        self.directory = (root or statedir.state_dir()) / "journal" / digest

    @classmethod
    def for_host(cls, *, root: Path | None = None) -> Journal:
        return cls("host", "host", root=root)

    def entries(self) -> list[Entry]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("[0-9]*.json")):
            with path.open() as handle:
                found.append(Entry.from_json(json.load(handle)))
        return sorted(found, key=lambda e: e.seq)

    def begin(
        self,
        action: str,
        subject: str,
        before: str,
        *,
        changes: tuple[str, ...] = (),
        codes: tuple[str, ...] = (),
        undoes: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Entry:
        """Record, before changing anything, what is about to be replaced."""
        existing = self.entries()
        entry = Entry(
            seq=(existing[-1].seq + 1) if existing else 1,
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            user=current_user(),
            action=action,
            subject=subject,
            uri=self.uri,
            uuid=self.uuid,
            before=before,
            after=None,
            changes=changes,
            codes=codes,
            undoes=undoes,
            extra=extra or {},
        )
        self._write(entry)
        return entry

    def finish(self, entry: Entry, after: str | None, status: str = DONE) -> Entry:
        done = replace(entry, after=after, status=status)
        self._write(done)
        return done

    def last_undoable(self) -> Entry | None:
        """The newest applied change not already reverted by an undo (a stack)."""
        entries = self.entries()
        undone = {e.undoes for e in entries if e.action == "undo" and e.status == DONE}
        for entry in reversed(entries):
            if entry.action == "undo" or entry.seq in undone:
                continue
            if entry.status in (DONE, PENDING):
                return entry
        return None

    def _write(self, entry: Entry) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{entry.seq:06d}.json"
        statedir.atomic_write(path, json.dumps(entry.to_json(), indent=1) + "\n")
