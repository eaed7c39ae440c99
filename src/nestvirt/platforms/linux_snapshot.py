"""A collected `nestvirt.linux-snapshot/1` (`nestvirt collect --linux`): status only
(registered in nestvirt.registry; the adapter contract is nestvirt.platforms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from nestvirt import endpoint, linux_snapshot
from nestvirt.errors import UsageError
from nestvirt.model import StatusReport

NAME = "linux-snapshot"
STATUS_ONLY = "a Linux snapshot is read by `nestvirt status --snapshot FILE` only"


def claims_snapshot(path: str) -> bool:
    return linux_snapshot.sniff(path)


def status(
    where: endpoint.Endpoint, vm_names: list[str], *, host_only: bool, timeout: float | None
) -> StatusReport:
    assert isinstance(where, endpoint.Snapshot)
    report: StatusReport = linux_snapshot.status_report(where.path, vm_names, host_only=host_only)
    return report


def preflight(where: endpoint.Endpoint, vm: str, op: Any, **_: Any) -> NoReturn:
    raise UsageError(STATUS_ONLY)


def subject(
    where: endpoint.Endpoint,
    vm: str,
    request: Any,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float | None = None,
) -> NoReturn:
    raise UsageError(STATUS_ONLY)
