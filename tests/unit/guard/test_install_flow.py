"""guard install / uninstall / undo / history through the one write flow, on a hooks
directory of the test's own: journal entries, --dry-run diffs, --json, undo byte for byte."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nestvirt.cli import main
from nestvirt.guard import install as guard
from nestvirt.journal import Journal


def tree(base: Path) -> dict[str, Any]:
    return {
        str(p.relative_to(base)): (
            stat.S_IMODE(p.lstat().st_mode),
            p.read_bytes() if p.is_file() else None,
        )
        for p in sorted(base.rglob("*"))
    }


def entries(base: Path) -> list[tuple[int, str, str]]:
    book = Journal(*guard.GuardSubject(base).key)
    return [(e.seq, e.action, e.status) for e in book.entries()]


def test_dry_run_shows_a_diff_and_changes_nothing(
    hooks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["guard", "install", "--dry-run"]) == 0
    out = capsys.readouterr().out
    path = hooks / "qemu.d" / "nestvirt"
    assert f"--- {hooks}/qemu.d/ (absent)\n+++ {hooks}/qemu.d/ (directory)\n" in out
    assert f"--- /dev/null\n+++ {path} (mode 0755)\n" in out and f"+# {guard.MARKER}" in out
    assert out.endswith("dry run: nothing changed\n")
    assert main(["guard", "install", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.guard-plan/1" and doc["action"] == "install"
    assert (doc["applied"], doc["changed"], doc["journal_seq"]) == (False, False, None)
    assert [c["action"] for c in doc["changes"]] == ["create"] and doc["path"] == str(path)
    assert tree(hooks) == {} and entries(hooks) == []


def test_install_undo_and_uninstall_undo_restore_byte_for_byte(
    hooks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_hook = hooks / "qemu"
    main_hook.write_text("#!/bin/sh\nexit 0\n")
    main_hook.chmod(0o750)
    empty = tree(hooks)
    assert main(["guard", "install", "--yes", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["applied"], doc["changed"], doc["journal_seq"]) == (True, True, 1)
    assert guard.status().state == "current"
    installed = tree(hooks)
    assert main(["guard", "undo", "--yes"]) == 0  # removes the hook and the qemu.d/ it made
    assert "nestvirt guard: restored" in capsys.readouterr().out
    assert tree(hooks) == empty
    assert main(["guard", "install", "--yes", "--domains", "nv-*"]) == 0
    assert main(["guard", "uninstall", "--yes"]) == 0
    assert tree(hooks) == empty
    assert main(["guard", "undo", "--yes"]) == 0  # the uninstall undone: the nv-* hook is back
    assert guard.status(domains="nv-*").state == "current"
    assert "  nv-*) ;;" in (hooks / "qemu.d" / "nestvirt").read_text()
    assert tree(hooks) != installed and set(tree(hooks)) == set(installed)
    assert entries(hooks) == [(1, "install", "done"), (2, "undo", "done"), (3, "install", "done"),
                              (4, "uninstall", "done"), (5, "undo", "done")]  # fmt: skip
    capsys.readouterr()
    assert main(["guard", "history", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(e["seq"], e["undone"], e["undoes"]) for e in history["entries"]] == [
        (1, True, None), (2, False, 1), (3, False, None), (4, True, None), (5, False, 4)
    ]  # fmt: skip


def test_undo_never_touches_a_file_nestvirt_did_not_write(
    hooks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["guard", "install", "--yes"]) == 0
    path = hooks / "qemu.d" / "nestvirt"
    path.write_text("#!/bin/sh\necho mine\n")  # someone replaced it since
    capsys.readouterr()
    assert main(["guard", "undo", "--yes"]) == 2
    assert "was changed after nestvirt's change #1" in capsys.readouterr().err
    assert main(["guard", "undo", "--yes", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not written by nestvirt" in err and "Traceback" not in err
    assert path.read_text() == "#!/bin/sh\necho mine\n"


def test_the_guard_is_locked_and_journaled_per_hooks_directory(hooks: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-hooks"
    other.mkdir()
    guard.run(guard.INSTALL, base=hooks)
    guard.run(guard.INSTALL, base=other)
    assert guard.GuardSubject(hooks).key != guard.GuardSubject(other).key
    assert entries(hooks) == [(1, "install", "done")] and entries(other) == [(1, "install", "done")]
    assert guard.run(guard.INSTALL, base=hooks).plan.empty  # a second run: nothing to do
    assert entries(hooks) == [(1, "install", "done")]
    os.chmod(hooks / "qemu.d" / "nestvirt", 0o644)  # ours, but not executable: outdated
    assert guard.status(hooks).state == "outdated"
    assert guard.run(guard.INSTALL, base=hooks).applied
    assert guard.status(hooks).state == "current"
