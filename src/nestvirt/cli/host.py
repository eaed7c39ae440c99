"""`nestvirt host enable`: persist nested=1, give /dev/kvm to group kvm (see nestvirt.hostconf)."""

from __future__ import annotations

import sys
from typing import Any

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode, UsageError


@click.group("host")
def command() -> None:
    """Configure this Linux host for nested virtualization."""


@command.command("enable")
@options.yes("Do not ask; apply the plan.")
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be written; change nothing.")
@options.json_output("Print nestvirt.host-plan/1 JSON.")
def enable_command(yes: bool, dry_run: bool, as_json: bool) -> int:
    """Persist `nested=1` for kvm_intel/kvm_amd, reload it when no VM runs, fix /dev/kvm access."""
    from nestvirt import hostconf

    def show(plan: Any) -> None:
        if as_json:
            return
        if plan.empty:
            click.echo("host: nothing to change")
        else:
            click.echo(f"host enable: {len(plan.changes)} change(s)")
            for number, change in enumerate(plan.changes, 1):
                click.echo(f"  {number}. {change.summary} [{', '.join(change.codes)}]")
                click.echo(f"       by hand: {change.command}")
                if dry_run and change.content:
                    click.echo(f"       {change.path} would contain:")
                    for line in change.content.splitlines():
                        click.echo(f"         | {line}")
        if plan.notes:
            click.echo("notes:")
            for note in plan.notes:
                click.echo(f"  - {note}")

    def confirm(plan: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask on: add --yes to apply, or --dry-run to only show")
        return click.confirm(f"Apply these {len(plan.changes)} change(s)?", default=False, err=True)

    outcome = hostconf.host_enable(dry_run=dry_run, confirm=confirm, show=show)
    if as_json:
        from nestvirt.render import print_json

        print_json(outcome.to_json())
    else:
        for message in outcome.messages:
            click.echo(f"verified: {message}" if outcome.applied else f"nestvirt: {message}")
        if dry_run and not outcome.plan.empty:
            click.echo("dry run: nothing changed")
    return int(ExitCode.READY)
