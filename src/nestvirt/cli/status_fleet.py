"""`nestvirt status` over several libvirt URIs: progress, one summary table, or the JSON list."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from nestvirt.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from nestvirt.fleet import HostOutcome

    Progress = Callable[[HostOutcome, int, int], None]


def run_fleet(
    connects: tuple[str, ...],
    inventory: str | None,
    vms: tuple[str, ...],
    host_only: bool,
    hyperv: str | None,
    snapshot: str | None,
    as_json: bool,
    timeout: float,
) -> int:
    from nestvirt import fleet

    if vms or host_only or hyperv is not None or snapshot is not None:
        raise UsageError(
            "several hosts (--connect repeated, --inventory) take no VM names, --host-only, "
            "--hyperv or --snapshot"
        )
    uris = list(connects) + (fleet.read_inventory(inventory) if inventory else [])
    outcomes = fleet.fleet_status(uris, timeout=timeout, progress=_progress())
    if as_json:
        from nestvirt.render import print_json

        print_json(fleet.fleet_json(outcomes))
    else:
        print_fleet(outcomes)
    ready = all(o.report.verdict == "ready" for o in outcomes)
    return int(ExitCode.READY if ready else ExitCode.NOT_READY)


def _progress() -> Progress | None:
    """A one-line progress on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(outcome: HostOutcome, done: int, total: int) -> None:
        click.echo(f"\r\x1b[K[{done}/{total}] {outcome.uri}", err=True, nl=False)
        if done == total:  # the line goes; the table follows on stdout
            click.echo("\r\x1b[K", err=True, nl=False)

    return show


_WORST_WIDTH = 100  # of a worst finding's message: `nestvirt status -c URI` tells all


def print_fleet(outcomes: list[HostOutcome]) -> None:
    """One row per host: URI, host name, verdict, VMs ready, worst finding, seconds."""
    from rich.table import Table
    from rich.text import Text

    from nestvirt import fleet
    from nestvirt.render import SEVERITY_STYLE, VERDICT_STYLE, console

    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    table.add_column("host", overflow="fold")
    for name in ("name", "verdict", "VMs ready"):
        table.add_column(name, no_wrap=True)
    table.add_column("worst finding", min_width=30, overflow="ellipsis")
    table.add_column("s", no_wrap=True, justify="right")
    for o in outcomes:
        report = o.report
        worst = fleet.worst_finding(report)
        if worst is None:
            found = Text("—")
        else:
            where, f = worst
            place = "" if where == report.host.name else f"{where}: "
            text = f" {place}{f.message}"
            text = text if len(text) <= _WORST_WIDTH else text[: _WORST_WIDTH - 1] + "…"
            found = Text.assemble((f.code, SEVERITY_STYLE[f.severity]), text)
        vms = (
            "—"
            if o.problem
            else f"{sum(v.verdict == 'ready' for v in report.vms)}/{len(report.vms)}"
        )
        name = "—" if o.problem else report.host.name
        verdict = Text(str(report.verdict), style=VERDICT_STYLE[report.verdict])
        table.add_row(o.uri, name, verdict, vms, found, f"{o.seconds:.1f}")
    con = console()
    con.print(table)
    ready = sum(o.report.verdict == "ready" for o in outcomes)
    unanswered = sum(o.problem is not None for o in outcomes)
    tail = f"; {unanswered} did not answer (NV-H30)" if unanswered else ""
    con.print(f"hosts ready: {ready}/{len(outcomes)}{tail}. `nestvirt explain CODE` tells more.")
