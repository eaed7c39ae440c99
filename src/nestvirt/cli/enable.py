"""`nestvirt enable|disable|undo|history VM` on libvirt: parse, call nestvirt.enable, render."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from nestvirt.errors import ExitCode, UsageError

_connect = click.option(
    "--connect", "-c", metavar="URI", help="libvirt URI (default: qemu:///system)."
)
_yes = click.option("--yes", "-y", is_flag=True, help="Do not ask; apply the plan.")
_dry_run = click.option(
    "--dry-run", "-n", is_flag=True, help="Print the plan and a diff of the XML; change nothing."
)
_stop = click.option(
    "--stop", is_flag=True, help="Shut a running VM down gracefully first and start it again after."
)
_stop_timeout = click.option(
    "--stop-timeout",
    type=click.IntRange(1, 3600),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long --stop waits for the guest to power off.",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print nestvirt.plan/1 JSON.")


def _echo(as_json: bool) -> Callable[[str], None]:
    # with --json, stdout carries the JSON document only
    return lambda text: click.echo(text, err=as_json)


def _show(as_json: bool, dry_run: bool) -> Callable[[Any], None]:
    def show(outcome: Any) -> None:
        if as_json:
            return
        echo = _echo(False)
        plan = outcome.plan
        verb = {"enable": "enable", "disable": "disable", "undo": "undo"}[outcome.action]
        if plan.empty and not plan.unfixable:
            echo(f"{outcome.vm}: {_nothing(outcome.action)}")
        elif plan.changes:
            echo(f"{verb} {outcome.vm}: {len(plan.changes)} change(s)")
            for number, change in enumerate(plan.changes, 1):
                codes = f" [{', '.join(change.codes)}]" if change.codes else ""
                echo(f"  {number}. {change.summary}{codes}")
                echo(f"       by hand: {change.command}")
        for finding in plan.unfixable:
            echo(f"  cannot fix {finding.code}: {finding.message}")
        if plan.notes:
            echo("notes:")
            for note in plan.notes:
                echo(f"  - {note}")
        if dry_run and outcome.diff:
            echo("")
            click.echo(outcome.diff, nl=False)

    return show


def _nothing(action: str) -> str:
    return {
        "enable": "already set up for nesting (nothing to change)",
        "disable": "vmx/svm already hidden (nothing to change)",
        "undo": "nothing to undo",
    }[action]


def _confirm(yes: bool) -> Callable[[Any], bool]:
    def confirm(outcome: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask on: add --yes to apply the plan, or --dry-run to only show it"
            )
        return click.confirm(
            f"Apply these {len(outcome.plan.changes)} change(s) to {outcome.vm}?",
            default=False,
            err=True,
        )

    return confirm


def _run(
    action: str,
    vm: str,
    connect: str | None,
    *,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    as_json: bool,
    force: bool = False,
    plan_options: Any = None,
) -> int:
    from nestvirt import enable

    subject = enable.LibvirtSubject(connect, vm, plan_options)
    try:
        outcome = enable.run(
            subject,
            action,
            enable.FlowOptions(dry_run=dry_run, stop=stop, stop_timeout=stop_timeout, force=force),
            show=_show(as_json, dry_run),
            confirm=_confirm(yes),
            progress=lambda text: click.echo(f"nestvirt: {text}", err=True),
        )
    finally:
        subject.close()
    if as_json:
        from nestvirt.render import print_json

        print_json(outcome.to_json())
    elif outcome.applied:
        click.echo(
            f"{outcome.vm}: applied (journal entry #{outcome.journal_seq}); "
            f"`nestvirt undo {vm}` puts the previous definition back"
        )
    elif dry_run and not outcome.plan.empty:
        click.echo("dry run: nothing changed")
    for message in outcome.messages:
        click.echo(f"nestvirt: {message}", err=True)
    return int(ExitCode.READY)


@click.command()
@click.argument("vm")
@_connect
@_yes
@_dry_run
@_stop
@_stop_timeout
@click.option("--memory", metavar="SIZE", help="Set the VM's memory, e.g. 4GiB or 4096MiB.")
@click.option(
    "--mac-spoofing",
    is_flag=True,
    help="Drop a no-mac-spoofing nwfilter so nested guests get network.",
)
@click.option(
    "--remove-hotplug",
    is_flag=True,
    help="Also remove <maxMemory> and virtio-mem devices (memory hotplug).",
)
@_json
def command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    memory: str | None,
    mac_spoofing: bool,
    remove_hotplug: bool,
    as_json: bool,
) -> int:
    """Expose vmx/svm to VM and make its memory static: show the plan, ask, apply.

    The domain is redefined in one step; `nestvirt undo VM` restores it.
    """
    from nestvirt.plan_libvirt import PlanOptions, parse_size

    options = PlanOptions(
        memory_kib=parse_size(memory) if memory is not None else None,
        mac_spoofing=mac_spoofing,
        remove_hotplug=remove_hotplug,
        stop=stop,
        stop_timeout=stop_timeout,
    )
    return _run(
        "enable", vm, connect, yes=yes, dry_run=dry_run, stop=stop, stop_timeout=stop_timeout,
        as_json=as_json, plan_options=options,
    )  # fmt: skip


@click.command("disable")
@click.argument("vm")
@_connect
@_yes
@_dry_run
@_stop
@_stop_timeout
@_json
def disable_command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    as_json: bool,
) -> int:
    """Hide vmx/svm from VM again (and change nothing else)."""
    from nestvirt.plan_libvirt import PlanOptions

    return _run(
        "disable", vm, connect, yes=yes, dry_run=dry_run, stop=stop, stop_timeout=stop_timeout,
        as_json=as_json, plan_options=PlanOptions(stop=stop, stop_timeout=stop_timeout),
    )  # fmt: skip


@click.command("undo")
@click.argument("vm")
@_connect
@_yes
@_dry_run
@_stop
@_stop_timeout
@click.option(
    "--force", is_flag=True, help="Undo even if the VM was changed since nestvirt's change."
)
@_json
def undo_command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    force: bool,
    as_json: bool,
) -> int:
    """Restore VM's exact definition from before nestvirt's last change (see `history`)."""
    from nestvirt.plan_libvirt import PlanOptions

    options = PlanOptions(stop=stop, stop_timeout=stop_timeout)
    return _run(
        "undo", vm, connect, yes=yes, dry_run=dry_run, stop=stop, stop_timeout=stop_timeout,
        as_json=as_json, force=force, plan_options=options,
    )  # fmt: skip


@click.command("history")
@click.argument("vm")
@_connect
@click.option("--json", "as_json", is_flag=True, help="Print nestvirt.history/1 JSON.")
def history_command(vm: str, connect: str | None, as_json: bool) -> int:
    """List nestvirt's journaled changes of VM, newest last."""
    from nestvirt import enable

    subject = enable.LibvirtSubject(connect, vm)
    try:
        entries = enable.history(subject.key)
    finally:
        subject.close()
    undone = {e.undoes for e in entries if e.action == "undo" and e.status == "done"}
    if as_json:
        from nestvirt.render import print_json

        print_json(
            {
                "schema": "nestvirt.history/1",
                "vm": subject.name,
                "uri": subject.uri,
                "entries": [
                    {
                        "seq": e.seq,
                        "time": e.time,
                        "user": e.user,
                        "action": e.action,
                        "status": e.status,
                        "changes": list(e.changes),
                        "codes": list(e.codes),
                        "undoes": e.undoes,
                        "undone": e.seq in undone,
                    }
                    for e in entries
                ],
            }
        )
        return int(ExitCode.READY)
    if not entries:
        click.echo(f"{subject.name}: no changes by nestvirt on {subject.uri}")
        return int(ExitCode.READY)
    for e in entries:
        what = ", ".join(e.changes) or "-"
        extra = f" (reverts #{e.undoes})" if e.undoes else ""
        extra += " (undone)" if e.seq in undone else ""
        click.echo(f"#{e.seq:<3} {e.time}  {e.user:<12} {e.action:<8} {e.status:<11} {what}{extra}")
    return int(ExitCode.READY)
