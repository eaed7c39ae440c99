"""Library errors and the CLI's exit codes.

Every error a user can cause derives from NestvirtError; the CLI turns it into
one line on stderr and exit 2. Anything else is a bug in nestvirt (exit 3).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    READY = 0
    NOT_READY = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class NestvirtError(Exception):
    """A problem the user can act on; its text is the one line shown."""

    exit_code = ExitCode.USAGE


class UsageError(NestvirtError):
    """Bad arguments or an option combination that makes no sense."""


class NotFound(NestvirtError):
    """A VM, file or rule code that does not exist."""


class ConnectError(NestvirtError):
    """A hypervisor connection could not be opened or was lost."""


class PermissionRequired(NestvirtError):
    """The operation needs privileges this user does not have."""


class Busy(NestvirtError):
    """Another nestvirt holds the lock on the same VM or host."""


class Interrupted(NestvirtError):
    """Ctrl-C during a change; the text says what state it left (one line, exit 130)."""

    exit_code = ExitCode.INTERRUPTED


class CannotFix(NestvirtError):
    """A finding that no change nestvirt can make will clear."""

    exit_code = ExitCode.NOT_READY


def from_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is, or is Python's wrapping of, a KeyboardInterrupt (its cause or
    context): Ctrl-C while a class is made surfaces as a RuntimeError, for one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
