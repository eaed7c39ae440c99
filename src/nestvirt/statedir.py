"""Where nestvirt keeps its journal and locks, and how it writes files atomically.

As root: /var/lib/nestvirt. Otherwise $XDG_STATE_HOME/nestvirt (default
~/.local/state/nestvirt); on Windows %LOCALAPPDATA%\\nestvirt.
NESTVIRT_STATE_DIR overrides them all (tests, packagers).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from nestvirt.errors import NestvirtError, PermissionRequired

ROOT_STATE_DIR = Path("/var/lib/nestvirt")


class StateError(NestvirtError, OSError):
    """The state directory cannot be read or written (full, read-only, no permission).

    Also an OSError, so callers that tolerate a failed write (caches) still do.
    """


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def make_dirs(path: Path, what: str) -> None:
    """Create `path` (mode 0700) or raise StateError saying which state cannot be written."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot write {what} in {path}: {_why(exc)}") from None


def state_dir(*, create: bool = True) -> Path:
    """The state directory for this user; created (mode 0700) unless create=False."""
    override = os.environ.get("NESTVIRT_STATE_DIR")
    if override:
        path = Path(override)
    elif os.name == "nt":  # the local Hyper-V transport runs nestvirt on Windows
        appdata = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        path = Path(appdata) / "nestvirt"
    elif os.geteuid() == 0:
        path = ROOT_STATE_DIR
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
        path = base / "nestvirt"
    if create:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionRequired(
                f"cannot create state directory {path}: {exc.strerror}"
            ) from exc
    return path


STALE_TEMP_SECONDS = 600.0  # no atomic write takes this long: older temp files are leftovers


def remove_stale_temp_files(path: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove the temp files of `path` a killed writer (kill -9) left behind.

    Only this path's (`.NAME.*.tmp`, as atomic_write names them) and only old ones,
    so a concurrent writer's file is never touched; the journal, written under its
    lock, cleans its own at once (Journal.clean_temp_files).
    """
    import glob
    import time

    removed = 0
    pattern = str(path.parent / f".{glob.escape(path.name)}.*.tmp")
    for name in glob.glob(pattern, include_hidden=True):
        with contextlib.suppress(OSError):
            if time.time() - os.stat(name).st_mtime >= older_than:
                os.unlink(name)
                removed += 1
    return removed


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o600, what: str = "") -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half.

    Temp file in the same directory, fsync, rename, fsync of the directory. Any
    OSError (disk full, read-only, no permission) removes the temp file and
    becomes a StateError naming `what` (or the file).
    """
    raw = data.encode() if isinstance(data, str) else data
    directory = path.parent
    remove_stale_temp_files(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StateError(f"cannot write {what or path} ({path}): {_why(exc)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
