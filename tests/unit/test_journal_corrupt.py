"""Journal files of every broken shape are reported and skipped, never a blocker;
state-directory faults are one-line StateErrors; temp files of killed writers go."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nestvirt import journal, lock, statedir
from nestvirt.journal import Journal

GOOD = {
    "schema": "nestvirt.journal/1", "seq": 2, "time": "2026-01-01T00:00:00+00:00", "user": "u",
    "action": "enable", "subject": "vm", "uri": "qemu://h/system", "uuid": "x",
    "before": "<a/>", "after": "<b/>", "status": "done", "changes": [], "codes": [],
    "undoes": None, "extra": {},
}  # fmt: skip


def broken_shapes() -> dict[str, bytes]:
    def entry(**change: object) -> bytes:
        return json.dumps({**GOOD, "seq": 1, **change}).encode()

    full = entry()
    return {
        "truncated": full[: len(full) // 2],
        "empty": b"",
        "blank": b"  \n\t",
        "not-json": b"<xml/>",
        "not-utf8": b'{"seq": 1, "before": "\xff\xfe"}',
        "list": b"[1, 2, 3]",
        "string": b'"entry"',
        "null": b"null",
        "deep-nesting": b"[" * 200_000 + b"]" * 200_000,
        "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "huge-int-seq": b'{"seq": ' + b"9" * 100_000 + b"}",
        "huge-int-field": entry(undoes=10**50),
        "seq-bool": entry(seq=True),
        "seq-str": entry(seq="1"),
        "seq-zero": entry(seq=0),
        "seq-mismatch": entry(seq=7),
        "before-int": entry(before=5),
        "after-dict": entry(after={"x": 1}),
        "changes-ints": entry(changes=[1, 2]),
        "extra-list": entry(extra=[]),
        "missing-before": json.dumps({k: v for k, v in GOOD.items() if k != "before"}).encode(),
        "wrong-schema": entry(schema="other/9"),
        "unknown-only": b'{"surprise": true}',
    }


@pytest.mark.parametrize("shape", sorted(broken_shapes()))
def test_a_broken_entry_is_skipped_and_reported(tmp_path: Path, shape: str) -> None:
    book = Journal("qemu://h/system", "x", root=tmp_path)
    book.directory.mkdir(parents=True)
    (book.directory / "000001.json").write_bytes(broken_shapes()[shape])
    (book.directory / "000002.json").write_text(json.dumps(GOOD))
    entries = book.entries()
    assert [e.seq for e in entries] == [2]
    assert len(book.skipped) == 1 and book.skipped[0].path.name == "000001.json"
    reason = str(book.skipped[0])
    assert "\n" not in reason and len(reason) < 400, reason
    assert book.last_undoable() is not None and book.last_undoable().seq == 2  # type: ignore[union-attr]
    new = book.begin("enable", "vm", "<b/>", after="<c/>")
    assert new.seq == 3  # the broken file's number is not reused, the file is kept
    assert (book.directory / "000001.json").read_bytes() == broken_shapes()[shape]


def test_unreadable_and_odd_files(tmp_path: Path) -> None:
    book = Journal("u", "x", root=tmp_path)
    book.directory.mkdir(parents=True)
    (book.directory / "000001.json").mkdir()  # a directory where an entry should be
    (book.directory / "notes.txt").write_text("hello")
    (book.directory / "abc.json").write_text("{}")
    (book.directory / ("9" * 40 + ".json")).write_text("{}")  # not a number nestvirt writes
    assert book.entries() == []
    assert [s.path.name for s in book.skipped] == ["000001.json"]
    assert book.begin("enable", "vm", "<a/>").seq == 2


def test_reconcile_pending_entries(tmp_path: Path) -> None:
    same = str.__eq__
    book = Journal("u", "x", root=tmp_path)
    book.begin("enable", "vm", "<a/>", after="<b/>")
    (found,) = book.reconcile("<b/>", same)
    assert found.entry.status == journal.DONE and found.entry.after == "<b/>"
    assert "was applied" in str(found)
    book.begin("enable", "vm", "<b/>", after="<c/>")
    (found,) = book.reconcile("<b/>", same)
    assert found.entry.status == journal.FAILED and "not applied" in str(found)
    book.begin("enable", "vm", "<b/>", after="<c/>")
    (found,) = book.reconcile("<hand-edited/>", same)
    assert found.entry.status == journal.DIVERGED and "someone else" in str(found)
    assert book.last_undoable() == found.entry  # undoable, but the flow demands --force
    assert book.reconcile("<whatever/>", same) == []  # nothing pending any more
    # an older nestvirt's pending entry has no planned 'after': only 'before' can match
    old = book.begin("enable", "vm", "<c/>")
    (found,) = book.reconcile("<d/>", same)
    assert found.entry.seq == old.seq and found.entry.status == journal.DIVERGED


def test_adopt_legacy_journals(tmp_path: Path) -> None:
    """Journals keyed by the URI text (before the daemon identity) are moved over."""
    old_a = Journal("qemu:///system", "x", root=tmp_path)
    old_a.finish(old_a.begin("enable", "vm", "<a/>"), "<b/>")
    old_b = Journal("qemu+unix:///system", "x", root=tmp_path)
    old_b.finish(old_b.begin("disable", "vm", "<b/>"), "<c/>")
    old_b.finish(old_b.begin("undo", "vm", "<c/>", undoes=1), "<b/>")
    new = Journal("qemu://h/system", "x", root=tmp_path)
    assert new.adopt(["qemu:///system", "qemu+unix:///system", "qemu:///session"]) == 3
    assert [(e.seq, e.action, e.undoes) for e in new.entries()] == [
        (1, "enable", None), (2, "disable", None), (3, "undo", 2)]  # fmt: skip
    assert not old_a.directory.exists() and not old_b.directory.exists()
    assert new.adopt(["qemu:///system"]) == 0


def test_stale_temp_files_are_cleaned(tmp_path: Path) -> None:
    book = Journal("u", "x", root=tmp_path)
    book.begin("enable", "vm", "<a/>")
    (book.directory / ".000002.json.abc123.tmp").write_text('{"half')
    assert book.clean_temp_files() == 1
    assert sorted(p.name for p in book.directory.iterdir()) == ["000001.json"]


# EACCES on the journal and the lock: tests/integration/test_journal_faults.py, run as root
# without CAP_DAC_OVERRIDE (root ignores file modes, so a chmod here could not fail).


def test_atomic_write_failure_is_a_state_error_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(statedir.os, "fsync", full)
    with pytest.raises(statedir.StateError, match="No space left on device") as info:
        statedir.atomic_write(tmp_path / "f.json", "data", what="the journal")
    assert isinstance(info.value, OSError)  # callers that tolerate OSError still do
    assert list(tmp_path.iterdir()) == []


def test_lock_in_a_state_dir_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locks").write_text("a file where the lock directory should be")
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path))
    with (
        pytest.raises(statedir.StateError, match="cannot write the lock"),
        lock.vm_lock("u", "x", "vm"),
    ):
        pass


def test_atomic_write_removes_its_stale_temp_files_only(tmp_path: Path) -> None:
    import time

    stale = tmp_path / ".f.json.abc12345.tmp"
    fresh = tmp_path / ".f.json.def67890.tmp"  # maybe a writer at work right now
    other = tmp_path / ".g.json.abc12345.tmp"
    for path in (stale, fresh, other):
        path.write_text("half")
    old = time.time() - 2 * statedir.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    statedir.atomic_write(tmp_path / "f.json", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, other.name, "f.json"]
