"""`nestvirt host enable|undo|history`: this host's KVM configuration through the one write
flow (see nestvirt.hostconf and nestvirt.enable)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from nestvirt.cli import options
from nestvirt.cli.flow_view import progress
from nestvirt.errors import ExitCode, UsageError

_wait = options.wait("the host")


@click.group("host")
def command() -> None:
    """Configure this Linux host for nested virtualization (and undo it)."""


def _show(as_json: bool, dry_run: bool) -> Callable[[Any], None]:
    def show(outcome: Any) -> None:
        if as_json:
            return
        plan = outcome.plan
        if plan.empty:
            nothing = "nothing to undo" if outcome.action == "undo" else "nothing to change"
            click.echo(f"host: {nothing}")
        else:
            click.echo(f"host {outcome.action}: {len(plan.changes)} change(s)")
            for number, change in enumerate(plan.changes, 1):
                codes = f" [{', '.join(change.codes)}]" if change.codes else ""
                click.echo(f"  {number}. {change.summary}{codes}")
                click.echo(f"       by hand: {change.command}")
                if dry_run and change.content and outcome.action != "undo":
                    click.echo(f"       {change.path} would contain:")
                    for line in change.content.splitlines():
                        click.echo(f"         | {line}")
        if plan.notes:
            click.echo("notes:")
            for note in plan.notes:
                click.echo(f"  - {note}")
        if dry_run and outcome.diff:
            click.echo("")
            click.echo(outcome.diff, nl=False)

    return show


def confirm_with(yes: bool, what: str) -> Callable[[Any], bool]:
    def confirm(outcome: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask on: add --yes to apply, or --dry-run to only show")
        return click.confirm(
            f"Apply these {len(outcome.plan.changes)} change(s) to {what}?", default=False, err=True
        )

    return confirm


def _run(action: str, *, yes: bool, dry_run: bool, as_json: bool, force: bool, wait: float) -> int:
    from nestvirt import enable, hostconf

    outcome = hostconf.host_flow(
        action,
        enable.FlowOptions(dry_run=dry_run, force=force, wait=wait),
        show=_show(as_json, dry_run),
        confirm=confirm_with(yes, "this host"),
        progress=progress,
    )
    from nestvirt.cli.flow_view import print_refusal

    print_refusal(outcome, dry_run=dry_run, as_json=as_json)
    if as_json:
        from nestvirt.render import print_json

        print_json(outcome.to_json())
        return int(ExitCode.READY)
    if outcome.applied:
        for message in outcome.messages:
            click.echo(f"verified: {message}")
        click.echo(
            f"host: applied (journal entry #{outcome.journal_seq}); `nestvirt host undo` puts "
            "the previous state back"
        )
    else:
        for message in outcome.messages:
            click.echo(f"nestvirt: {message}")
        if dry_run and not outcome.plan.empty:
            click.echo("dry run: nothing changed")
    return int(ExitCode.READY)


_dry_run = click.option(
    "--dry-run",
    "-n",
    is_flag=True,
    help="Show the plan and a diff of the managed files; change nothing.",
)


@command.command("enable")
@options.yes("Do not ask; apply the plan.")
@_dry_run
@_wait
@options.json_output("Print nestvirt.host-plan/1 JSON.")
def enable_command(yes: bool, dry_run: bool, wait: float, as_json: bool) -> int:
    """Persist `nested=1` for kvm_intel/kvm_amd, reload it when no VM runs, fix /dev/kvm access.

    Journaled: `nestvirt host undo` puts back exactly what was there before.
    """
    return _run("enable", yes=yes, dry_run=dry_run, as_json=as_json, force=False, wait=wait)


@command.command("undo")
@options.yes("Do not ask; restore.")
@_dry_run
@click.option(
    "--force",
    is_flag=True,
    help="Undo even if the files or /dev/kvm changed since nestvirt's change (--dry-run shows "
    "what that discards).",
)
@_wait
@options.json_output("Print nestvirt.host-plan/1 JSON.")
def undo_command(yes: bool, dry_run: bool, force: bool, wait: float, as_json: bool) -> int:
    """Put back what nestvirt's last `host enable` replaced: the files as they were (removed if
    they did not exist) and /dev/kvm's group and mode."""
    return _run("undo", yes=yes, dry_run=dry_run, as_json=as_json, force=force, wait=wait)


@command.command("history")
@options.json_output("Print nestvirt.history/1 JSON.")
def history_command(as_json: bool) -> int:
    """List nestvirt's journaled changes of this host, newest last."""
    from nestvirt import hostconf

    subject = hostconf.HostSubject()
    from nestvirt.cli.flow_view import print_history

    entries, skipped = hostconf.host_history(subject.paths, progress=progress)
    print_history(subject.name, subject.uri, entries, skipped, as_json)
    return int(ExitCode.READY)
