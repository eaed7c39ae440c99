"""The journal: atomic entries, pending → done, the undo stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestvirt import journal, statedir
from nestvirt.journal import Journal


def test_entries_and_undo_stack(tmp_path: Path) -> None:
    book = Journal("qemu:///system", "u-1", root=tmp_path)
    assert book.entries() == [] and book.last_undoable() is None
    one = book.begin("enable", "vm", "<a/>", changes=("expose-virt",), codes=("NV-V01",))
    assert one.status == journal.PENDING and one.seq == 1
    book.finish(one, "<b/>")
    two = book.finish(book.begin("disable", "vm", "<b/>"), "<c/>")
    assert book.last_undoable() == two
    book.finish(book.begin("undo", "vm", "<c/>", undoes=2), "<b/>")
    assert book.last_undoable() is not None and book.last_undoable().seq == 1  # type: ignore[union-attr]
    book.finish(book.begin("undo", "vm", "<b/>", undoes=1), "<a/>")
    assert book.last_undoable() is None
    assert [e.seq for e in book.entries()] == [1, 2, 3, 4]
    stored = json.loads((book.directory / "000001.json").read_text())
    assert stored["schema"] == "nestvirt.journal/1"
    assert stored["before"] == "<a/>" and stored["after"] == "<b/>" and stored["user"]


def test_rolled_back_entries_are_not_undoable(tmp_path: Path) -> None:
    book = Journal("u", "x", root=tmp_path)
    book.finish(book.begin("enable", "vm", "<a/>"), "<b/>", status=journal.ROLLED_BACK)
    assert book.last_undoable() is None


def test_subjects_are_separate(tmp_path: Path) -> None:
    Journal("qemu:///system", "a", root=tmp_path).begin("enable", "vm", "<a/>")
    assert Journal("qemu:///session", "a", root=tmp_path).entries() == []
    assert Journal.for_host(root=tmp_path).entries() == []


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    statedir.atomic_write(target, "one")
    statedir.atomic_write(target, "two", mode=0o644)
    assert target.read_text() == "two"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_state_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NESTVIRT_STATE_DIR", raising=False)
    monkeypatch.setattr(statedir.os, "geteuid", lambda: 0)
    assert statedir.state_dir(create=False) == Path("/var/lib/nestvirt")
    monkeypatch.setattr(statedir.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert statedir.state_dir() == tmp_path / "nestvirt"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert statedir.state_dir(create=False) == tmp_path / "home" / ".local" / "state" / "nestvirt"
