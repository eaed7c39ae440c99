"""`nestvirt guard`: the libvirt hook that refuses operations that would break a nested VM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode

DOMAINS_HELP = "Judge only domains whose name matches this shell glob (default: all)."


@click.group()
def command() -> None:
    """The libvirt qemu hook guarding nested VMs (migrate and restore).

    It can refuse `restore` (virsh restore, start of a managed-save image) and an
    incoming `migrate` (on the destination host). libvirt runs no hook for save,
    snapshot-revert or memory resize: use `nestvirt preflight` before those.
    """


class _Positional(click.Command):
    """A command that takes every word after it as a positional argument, untouched.

    libvirt calls the hook with DOMAIN OPERATION SUB-OPERATION EXTRA: a domain
    named `--help`, `--` or `-x` is a domain, never an option (click would print
    help for `--help` and drop a `--`).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["args"] = tuple(args)
        return []


@command.command("hook", cls=_Positional)
def hook(args: tuple[str, ...]) -> int:
    """Run as libvirt's hook: DOMAIN OPERATION SUB-OPERATION EXTRA, domain XML on stdin.

    Exit 1 with the reason on stderr for `migrate begin` / `restore begin` of a domain
    preflight judges unsafe; exit 0 for everything else, and on any internal error.
    """
    from nestvirt.guard.hook import main

    return main(list(args))


def _show(as_json: bool, dry_run: bool) -> Callable[[Any], None]:
    """The plan as `guard install|uninstall` always printed it; with --dry-run, a diff too."""

    def show(outcome: Any) -> None:
        if as_json:
            return
        from nestvirt.guard import install as guard

        plan = outcome.plan
        if plan.empty:
            if outcome.action == "undo":
                click.echo("nestvirt guard: nothing to undo")
            else:
                path = guard.hook_path()
                click.echo(f"nestvirt guard: nothing to do ({path} is already as wanted)")
            return
        change = plan.changes[0]
        todo = getattr(change, "install", None)
        if todo is None:  # undo
            click.echo(f"will {change.summary}")
        elif todo.action == "remove":
            click.echo(f"will remove {todo.path}")
            if todo.remove_dir:
                click.echo(
                    f"will remove the empty directory {todo.path.parent} (nestvirt created it)"
                )
        else:
            if todo.create_dir:
                click.echo(f"will create {todo.path.parent}/ (mode 0755)")
            click.echo(f"will {todo.action} {todo.path} (mode 0755, atomic write):")
            click.echo(
                "".join(f"  | {line}\n" for line in (todo.content or "").splitlines()), nl=False
            )
        if dry_run and outcome.diff:
            click.echo("")
            click.echo(outcome.diff, nl=False)

    return show


def _confirm(yes: bool, as_json: bool) -> Callable[[Any], bool]:
    def confirm(_outcome: Any) -> bool:
        return yes or click.confirm("go ahead?", default=False, err=as_json)

    return confirm


def _run(
    action: str, *, yes: bool, dry_run: bool, as_json: bool, domains: str = "*", force: bool = False
) -> int:
    from nestvirt import enable
    from nestvirt.guard import install as guard

    if not dry_run:
        guard.require_root(f"guard {action}")

    from nestvirt.cli.flow_view import progress

    outcome = guard.run(
        action,
        enable.FlowOptions(dry_run=dry_run, force=force),
        domains=domains,
        show=_show(as_json, dry_run),
        confirm=_confirm(yes, as_json),
        progress=progress,
    )
    from nestvirt.cli.flow_view import print_refusal

    print_refusal(outcome, dry_run=dry_run, as_json=as_json)
    if as_json:
        from nestvirt.render import print_json

        print_json(outcome.to_json())
        return int(ExitCode.READY)
    if outcome.plan.empty:
        return int(ExitCode.READY)
    if dry_run:
        click.echo("dry run: nothing changed")
        return int(ExitCode.READY)
    if not outcome.applied:
        for message in outcome.messages:
            click.echo(message)
        return int(ExitCode.READY)
    verb = {"install": "installed", "uninstall": "uninstalled", "undo": "restored"}[action]
    click.echo(
        f"nestvirt guard: {verb} {outcome.path} (journal entry #{outcome.journal_seq}; "
        "`nestvirt guard undo` puts the previous state back)"
    )
    for note in outcome.plan.notes:
        click.echo(f"note: {note}")
    return int(ExitCode.READY)


_json = options.json_output("Print nestvirt.guard-plan/1 JSON.")


@command.command("install")
@options.yes("Do not ask.")
@click.option(
    "--dry-run", is_flag=True, help="Show what would be written and a diff; change nothing."
)
@click.option("--domains", default="*", show_default=True, help=DOMAINS_HELP)
@_json
def install(yes: bool, dry_run: bool, domains: str, as_json: bool) -> int:
    """Install the hook as /etc/libvirt/hooks/qemu.d/nestvirt (existing hooks keep working)."""
    return _run("install", yes=yes, dry_run=dry_run, as_json=as_json, domains=domains)


@command.command("uninstall")
@options.yes("Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@_json
def uninstall(yes: bool, dry_run: bool, as_json: bool) -> int:
    """Remove the hook nestvirt installed (and nothing else)."""
    return _run("uninstall", yes=yes, dry_run=dry_run, as_json=as_json)


@command.command("undo")
@options.yes("Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Undo even if the hook changed since nestvirt's change (never a file nestvirt did "
    "not write).",
)
@_json
def undo(yes: bool, dry_run: bool, force: bool, as_json: bool) -> int:
    """Put the hook (and qemu.d/) back as before nestvirt's last install or uninstall."""
    return _run("undo", yes=yes, dry_run=dry_run, as_json=as_json, force=force)


@command.command("history")
@options.json_output("Print nestvirt.history/1 JSON.")
def history(as_json: bool) -> int:
    """List nestvirt's journaled changes of the guard hook, newest last."""
    from nestvirt.cli.flow_view import print_history, progress
    from nestvirt.guard import install as guard

    subject, entries, skipped = guard.history(progress=progress)
    print_history(subject.name, subject.uri, entries, skipped, as_json)
    return int(ExitCode.READY)


@command.command("status")
@options.json_output("Print nestvirt.guard-status/1 JSON.")
def status(as_json: bool) -> int:
    """Is the guard installed and current? Exit 0: yes; 1: absent, outdated or foreign."""
    from nestvirt.guard import install as guard

    state = guard.status()
    if as_json:
        from nestvirt.render import print_json

        print_json(state.to_json())
    else:
        click.echo(f"guard: {state.state} ({state.path})")
        for other in state.other_hooks:
            click.echo(f"other qemu hook: {other}")
        for note in state.notes:
            click.echo(f"note: {note}")
    return int(ExitCode.READY if state.protecting else ExitCode.NOT_READY)
