"""One writer per VM (or per host): an flock on a file in the state directory.

The lock is keyed by the daemon's identity (not the URI as spelled: see
nestvirt.backends.libvirt_session) + VM UUID, so the same VM reached through any
spelling of the URI shares one lock, and a VM renamed meanwhile still does.
The kernel drops the lock when the process dies: no stale lock files to clean.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from nestvirt import statedir
from nestvirt.errors import Busy


def lock_path(kind: str, *parts: str) -> Path:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    directory = statedir.state_dir() / "locks"
    statedir.make_dirs(directory, "the lock")
    return directory / f"{kind}-{digest}.lock"


@contextmanager
def held(kind: str, *parts: str, what: str, wait: float = 0.0, hint: str = "") -> Iterator[Path]:
    """Hold the lock for (kind, parts) or raise Busy naming `what` and the holder's pid.

    `wait` > 0 retries for that many seconds before giving up.
    """
    path = lock_path(kind, *parts)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise statedir.StateError(
            f"cannot take the lock {path}: {exc.strerror or exc}; nothing changed"
        ) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                _lock_nonblocking(fd)
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise Busy(
                        f"another nestvirt{holder} is changing {what} right now "
                        f"(lock {path}); try again when it has finished{hint}"
                    ) from None
                time.sleep(0.1)
        _write_pid(fd)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def vm_lock(
    uri: str, uuid: str, name: str, *, wait: float = 0.0, what: str | None = None
) -> AbstractContextManager[Path]:
    """The lock of one subject of the write flow; `what` names it in the busy message
    (default: VM 'NAME')."""
    hint = "" if wait else ", or add --wait SECONDS to queue behind it"
    return held("vm", uri, uuid, what=what or f"VM {name!r}", wait=wait, hint=hint)


def host_lock(*, wait: float = 0.0) -> AbstractContextManager[Path]:
    return held("host", "host", what="this host's KVM configuration", wait=wait)


def _lock_nonblocking(fd: int) -> None:
    """flock on POSIX; on Windows (the local Hyper-V transport) a byte-range lock."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _write_pid(fd: int) -> None:
    """Leave our pid for a waiting process to name (best effort: a full disk is no reason
    to fail; the lock itself is held already)."""
    with contextlib.suppress(OSError):
        _write_pid_now(fd)


def _write_pid_now(fd: int) -> None:
    if os.name == "nt":  # the locked first byte stays; the pid follows it
        os.lseek(fd, 1, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(fd: int) -> str:
    try:
        if os.name == "nt":
            os.lseek(fd, 1, os.SEEK_SET)
            pid = os.read(fd, 32).decode().strip()
        else:
            pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
