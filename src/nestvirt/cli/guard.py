"""`nestvirt guard`: the libvirt hook that refuses operations that would break a nested VM."""

from __future__ import annotations

import json
import sys

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


def _confirm_and_apply(plan: object, yes: bool, dry_run: bool, verb: str) -> int:
    from nestvirt.guard import install as guard

    assert isinstance(plan, guard.Plan)
    if plan.empty:
        click.echo(f"nestvirt guard: nothing to do ({plan.path} is already as wanted)")
        return 0
    if plan.action == "remove":
        click.echo(f"will remove {plan.path}")
        if plan.remove_dir:
            click.echo(f"will remove the empty directory {plan.path.parent} (nestvirt created it)")
    else:
        if plan.create_dir:
            click.echo(f"will create {plan.path.parent}/ (mode 0755)")
        click.echo(f"will {plan.action} {plan.path} (mode 0755, atomic write):")
        click.echo("".join(f"  | {line}\n" for line in (plan.content or "").splitlines()), nl=False)
    if dry_run:
        click.echo("dry run: nothing changed")
        return 0
    guard.require_root(f"guard {verb}")
    if not yes and not click.confirm("go ahead?", default=False):
        click.echo("nothing changed")
        return 0
    guard.apply(plan)
    click.echo(f"nestvirt guard: {verb}ed {plan.path}")
    for note in plan.notes:
        click.echo(f"note: {note}")
    return 0


@command.command("install")
@options.yes("Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be written; change nothing.")
@click.option("--domains", default="*", show_default=True, help=DOMAINS_HELP)
def install(yes: bool, dry_run: bool, domains: str) -> int:
    """Install the hook as /etc/libvirt/hooks/qemu.d/nestvirt (existing hooks keep working)."""
    from nestvirt.guard import install as guard

    if not dry_run:
        guard.require_root("guard install")
    return _confirm_and_apply(guard.plan_install(domains=domains), yes, dry_run, "install")


@command.command("uninstall")
@options.yes("Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
def uninstall(yes: bool, dry_run: bool) -> int:
    """Remove the hook nestvirt installed (and nothing else)."""
    from nestvirt.guard import install as guard

    if not dry_run:
        guard.require_root("guard uninstall")
    return _confirm_and_apply(guard.plan_uninstall(), yes, dry_run, "uninstall")


@command.command("status")
@options.json_output("Print nestvirt.guard-status/1 JSON.")
def status(as_json: bool) -> int:
    """Is the guard installed and current? Exit 0: yes; 1: absent, outdated or foreign."""
    from nestvirt.guard import install as guard

    state = guard.status()
    if as_json:
        sys.stdout.write(json.dumps(state.to_json(), indent=2) + "\n")
    else:
        click.echo(f"guard: {state.state} ({state.path})")
        for other in state.other_hooks:
            click.echo(f"other qemu hook: {other}")
        for note in state.notes:
            click.echo(f"note: {note}")
    return int(ExitCode.READY if state.protecting else ExitCode.NOT_READY)
