"""`nestvirt enable|disable|undo|history VM`: parse, call nestvirt.enable, render.

libvirt by default (`--connect URI`); Hyper-V with `--hyperv [HOST]` or, for a
dry run only, `--snapshot FILE` (the same flow, through enable_hyperv.HyperVSubject).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode, UsageError

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
_plan_json = options.json_output("Print nestvirt.plan/1 JSON.")
_timeout = options.libvirt_timeout

_wait = options.wait("the VM")

# --memory outside this range is a typo far more often than a wish: it needs --force
MIN_SANE_MEMORY_KIB = 256 * 1024
MAX_SANE_MEMORY_KIB = 16 * 1024**3


# VM, --connect, --yes, --dry-run, --stop, --stop-timeout, --timeout: every command that
# changes VM
_change_options = options.combine(
    click.argument("vm"),
    options.connect,
    options.yes("Do not ask; apply the plan."),
    _dry_run,
    _stop,
    _stop_timeout,
    _timeout,
    _wait,
)
# --hyperv [HOST], --snapshot FILE, --user: the Hyper-V subject instead of libvirt
_hyperv_options = options.combine(
    options.hyperv(
        "Hyper-V: this Windows machine, or HOST over PowerShell Remoting "
        "(HOST, HOST:PORT, https://HOST[:PORT]). Without HOST, write VM first: `VM --hyperv`."
    ),
    options.snapshot("Hyper-V snapshot (nestvirt collect); with --dry-run only."),
    options.user,
)


def _where(connect: str | None, hyperv: str | None, snapshot: str | None, user: str | None) -> Any:
    """The endpoint the options name (UsageError for mixed options)."""
    from nestvirt import endpoint

    return endpoint.parse_subject(connect, hyperv, snapshot, user)


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
    where: Any,
    request: Any,
    *,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    as_json: bool,
    force: bool = False,
    timeout: float | None = None,
    wait: float = 0.0,
) -> int:
    """Run `action` on VM at the endpoint `where` (its platform's subject) and render the
    outcome; `request` is the enable.ChangeRequest."""
    from nestvirt import enable
    from nestvirt.cli.flow_view import progress

    subject = enable.subject_for(
        where, vm, request, dry_run=dry_run,
        progress=(lambda _text: None) if as_json else progress, timeout=timeout,
    )  # fmt: skip
    try:
        outcome = enable.run(
            subject,
            action,
            enable.FlowOptions(
                dry_run=dry_run, stop=stop, stop_timeout=stop_timeout, force=force, wait=wait
            ),
            show=_show(as_json, dry_run),
            confirm=_confirm(yes),
            progress=progress,
        )
    finally:
        subject.close()
    if as_json:
        from nestvirt.render import print_json

        print_json(enable.outcome_json(subject, outcome))
    elif outcome.applied:
        click.echo(_applied_line(outcome, subject))
    elif dry_run and not outcome.plan.empty:
        click.echo("dry run: nothing changed")
    from nestvirt.cli.flow_view import print_refusal

    print_refusal(outcome, dry_run=dry_run, as_json=as_json)
    for message in outcome.messages:
        click.echo(f"nestvirt: {message}", err=True)
    failures = getattr(subject, "failures", [])
    for failure in failures:
        click.echo(f"nestvirt: {failure}", err=True)
    return int(ExitCode.USAGE if failures else ExitCode.READY)


def _applied_line(outcome: Any, subject: Any) -> str:
    """`applied (journal entry #N)` and the command that reverts it; after an undo, what a
    further undo would revert (undo is a stack, not a redo)."""
    from nestvirt.enable import undo_command

    hint = undo_command(subject)
    previous = getattr(subject, "noun", "definition")
    done = f"{outcome.vm}: applied (journal entry #{outcome.journal_seq})"
    if outcome.action != "undo":
        return f"{done}; `{hint}` puts the previous {previous} back"
    from nestvirt.journal import Journal

    try:
        older = Journal(*subject.key).last_undoable()
    except Exception:  # the change is made and said; the hint is a courtesy
        older = None
    if older is None:
        return f"{done}; nestvirt has no earlier change of {outcome.vm} to undo"
    return f"{done}; `{hint}` would next revert change #{older.seq} ({older.action}, {older.time})"


def _check_memory(memory_kib: int, text: str, force: bool) -> None:
    if force or MIN_SANE_MEMORY_KIB <= memory_kib <= MAX_SANE_MEMORY_KIB:
        return
    side = "below 256 MiB" if memory_kib < MIN_SANE_MEMORY_KIB else "above 16 TiB"
    raise UsageError(
        f"--memory {text} is {side}: not a size a VM running nested guests works with "
        "(a typo?); add --force if you mean it"
    )


@click.command()
@_change_options
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
@_hyperv_options
@click.option(
    "--install-hypervisor",
    is_flag=True,
    help="Hyper-V: then enable the Hyper-V feature inside the VM (PowerShell Direct; guest "
    "credentials from $NESTVIRT_GUEST_USER/$NESTVIRT_GUEST_PASSWORD or a prompt).",
)
@click.option(
    "--restart", is_flag=True, help="With --install-hypervisor: restart the VM afterwards."
)
@click.option("--force", is_flag=True, help="Apply a --memory size outside 256 MiB to 16 TiB.")
@_plan_json
def command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    timeout: float,
    wait: float,
    memory: str | None,
    mac_spoofing: bool,
    remove_hotplug: bool,
    hyperv: str | None,
    snapshot: str | None,
    user: str | None,
    install_hypervisor: bool,
    restart: bool,
    force: bool,
    as_json: bool,
) -> int:
    """Expose vmx/svm to VM and make its memory static: show the plan, ask, apply.

    libvirt: the domain is redefined in one step. Hyper-V (--hyperv, or
    --snapshot with --dry-run): the Enable-NestedVm cmdlets, one by one. Either
    way `nestvirt undo VM` restores what was there before.
    """
    from nestvirt.enable import ChangeRequest
    from nestvirt.plan_libvirt import parse_size

    where = _where(connect, hyperv, snapshot, user)
    memory_kib = parse_size(memory) if memory is not None else None
    if memory_kib is not None and memory is not None:
        _check_memory(memory_kib, memory, force)
    request = ChangeRequest(
        memory_kib=memory_kib,
        mac_spoofing=mac_spoofing,
        remove_hotplug=remove_hotplug,
        install_hypervisor=install_hypervisor,
        restart=restart,
        stop=stop,
        stop_timeout=stop_timeout,
    )
    return _run(
        "enable", vm, where, request, yes=yes, dry_run=dry_run, stop=stop,
        stop_timeout=stop_timeout, as_json=as_json, timeout=timeout, wait=wait,
    )  # fmt: skip


def _stop_request(stop: bool, stop_timeout: int) -> Any:
    """The request of disable and undo: only --stop and --stop-timeout."""
    from nestvirt.enable import ChangeRequest

    return ChangeRequest(stop=stop, stop_timeout=stop_timeout)


@click.command("disable")
@_change_options
@_hyperv_options
@_plan_json
def disable_command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    timeout: float,
    wait: float,
    hyperv: str | None,
    snapshot: str | None,
    user: str | None,
    as_json: bool,
) -> int:
    """Hide vmx/svm from VM again (and change nothing else)."""
    return _run(
        "disable", vm, _where(connect, hyperv, snapshot, user), _stop_request(stop, stop_timeout),
        yes=yes, dry_run=dry_run, stop=stop, stop_timeout=stop_timeout, as_json=as_json,
        timeout=timeout, wait=wait,
    )  # fmt: skip


@click.command("undo")
@_change_options
@click.option(
    "--force",
    is_flag=True,
    help="Undo even if the VM was changed since nestvirt's change (--dry-run shows what "
    "that discards).",
)
@_hyperv_options
@_plan_json
def undo_command(
    vm: str,
    connect: str | None,
    yes: bool,
    dry_run: bool,
    stop: bool,
    stop_timeout: int,
    timeout: float,
    wait: float,
    force: bool,
    hyperv: str | None,
    snapshot: str | None,
    user: str | None,
    as_json: bool,
) -> int:
    """Restore VM's exact definition from before nestvirt's last change (see `history`)."""
    return _run(
        "undo", vm, _where(connect, hyperv, snapshot, user), _stop_request(stop, stop_timeout),
        yes=yes, dry_run=dry_run, stop=stop, stop_timeout=stop_timeout, as_json=as_json,
        force=force, timeout=timeout, wait=wait,
    )  # fmt: skip


@click.command("history")
@click.argument("vm")
@options.connect
@_timeout
@_hyperv_options
@options.json_output("Print nestvirt.history/1 JSON.")
def history_command(
    vm: str,
    connect: str | None,
    timeout: float,
    hyperv: str | None,
    snapshot: str | None,
    user: str | None,
    as_json: bool,
) -> int:
    """List nestvirt's journaled changes of VM, newest last."""
    from nestvirt import enable
    from nestvirt.cli.flow_view import progress
    from nestvirt.journal import Journal

    where = _where(connect, hyperv, snapshot, user)
    request = enable.ChangeRequest()
    subject = enable.subject_for(where, vm, request, dry_run=True, timeout=timeout)  # reads only
    try:
        book = Journal(*subject.key)
        entries = enable.history(subject, journal=book, progress=progress)
    finally:
        subject.close()
    from nestvirt.cli.flow_view import print_history

    print_history(subject.name, subject.uri, entries, book.skipped, as_json)
    return int(ExitCode.READY)
