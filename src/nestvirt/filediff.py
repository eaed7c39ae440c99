"""Unified diffs of files and directories that a write flow manages as one definition
(`host enable`'s modprobe.d and udev files, the guard's hook): what `--dry-run` shows.

A file is a record {"content": text, "mode": "0644"} (or {"kind": …} for what is not a
regular file), None when absent; a directory is True when it exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


def _lines(record: Mapping[str, Any] | None) -> list[str]:
    if record is None:
        return []
    return str(record.get("content", f"<{record.get('kind')}>\n")).splitlines(keepends=True)


def directories(old: Mapping[str, bool], new: Mapping[str, bool], *, suffix: str = "") -> str:
    """One block for each directory that appears or goes (`suffix`: "/" after its path)."""
    out: list[str] = []
    for path in sorted(old.keys() & new.keys()):
        if old[path] != new[path]:
            was, now = ("absent", "directory") if new[path] else ("directory", "absent")
            out += [f"--- {path}{suffix} ({was})\n", f"+++ {path}{suffix} ({now})\n"]
    return "".join(out)


def files(
    old: Mapping[str, Mapping[str, Any] | None], new: Mapping[str, Mapping[str, Any] | None]
) -> str:
    """A unified diff of each file whose content or mode changes (/dev/null: absent)."""
    out: list[str] = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        lines = list(
            difflib.unified_diff(
                _lines(a),
                _lines(b),
                fromfile=f"{path} (mode {a['mode']})" if a else "/dev/null",
                tofile=f"{path} (mode {b['mode']})" if b else "/dev/null",
            )
        )
        if not lines:  # the same text, another mode
            lines = [
                f"--- {path} (mode {a and a['mode']})\n",
                f"+++ {path} (mode {b and b['mode']})\n",
            ]
        out += [
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
            for line in lines
        ]
    return "".join(out)
