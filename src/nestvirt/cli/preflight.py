"""`nestvirt preflight VM OPERATION`: is migrate/save/restore/snapshot-revert/memory-resize safe?"""

from __future__ import annotations

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode

OPERATIONS = "migrate, save, restore, snapshot-revert, memory-resize"


@click.command()
@click.argument("vm")
@click.argument("operation", metavar="OPERATION")
@options.connect
@options.hyperv(metavar="HOST")
@options.snapshot("Judge a VM of a collected Hyper-V snapshot.")
@click.option(
    "--no-nested-guests",
    is_flag=True,
    help="Assert that no nested guests run in VM (nestvirt cannot see inside it).",
)
@options.json_output("Print nestvirt.preflight/1 JSON.")
@options.libvirt_timeout
def command(
    vm: str,
    operation: str,
    connect: str | None,
    hyperv: str | None,
    snapshot: str | None,
    no_nested_guests: bool,
    as_json: bool,
    timeout: float,
) -> int:
    """Tell whether OPERATION is safe for VM now.

    OPERATION is one of: migrate, save, restore, snapshot-revert, memory-resize.
    A VM that exposes vmx/svm is judged as if it runs nested guests.

    Exit 0: safe; 1: unsafe; 2: usage or connection error.
    """
    from nestvirt.preflight import preflight

    report = preflight(
        vm,
        operation,
        connect=connect,
        hyperv=hyperv,
        snapshot=snapshot,
        no_nested_guests=no_nested_guests,
        timeout=timeout,
    )
    if as_json:
        from nestvirt.render import print_json

        print_json(report.to_json())
    else:
        for note in report.notes:
            click.echo(f"nestvirt: {note}", err=True)
        verdict = "safe" if report.safe else "UNSAFE"
        click.echo(f"{report.operation} {report.vm}: {verdict}")
        for f in report.findings:
            click.echo(f"  {f.code} {f.severity}: {f.message}")
            if f.fix:
                click.echo(f"    instead: {f.fix}")
    return int(ExitCode.READY if report.safe else ExitCode.NOT_READY)
