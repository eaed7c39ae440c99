"""`nestvirt status`: verdicts for the host and its VMs."""

from __future__ import annotations

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode


@click.command()
@click.argument("vms", nargs=-1)
@click.option(
    "--connect",
    "-c",
    "connects",
    metavar="URI",
    multiple=True,
    help=options.CONNECT_HELP + " Repeat it to ask several hosts at once.",
)
@click.option(
    "--inventory",
    metavar="FILE",
    help="Ask every libvirt URI in FILE (one per line, # comments) at once.",
)
@click.option("--host-only", is_flag=True, help="Report the host only.")
@options.hyperv(metavar="HOST")
@options.snapshot("Analyse a collected snapshot offline (Hyper-V, or `collect --linux`).")
@options.json_output("Print nestvirt.status/1 JSON.")
@options.libvirt_timeout
def command(
    vms: tuple[str, ...],
    connects: tuple[str, ...],
    inventory: str | None,
    host_only: bool,
    hyperv: str | None,
    snapshot: str | None,
    as_json: bool,
    timeout: float,
) -> int:
    """Tell whether this host and its VMs are ready for nested virtualization.

    Exit 0: all ready; 1: something is not ready; 2: usage or connection error.
    """
    if len(connects) > 1 or inventory is not None:  # a fleet (nestvirt.fleet)
        from nestvirt.cli.status_fleet import run_fleet

        return run_fleet(connects, inventory, vms, host_only, hyperv, snapshot, as_json, timeout)
    from nestvirt.status import status

    report = status(
        list(vms),
        connect=connects[0] if connects else None,
        host_only=host_only,
        hyperv=hyperv,
        snapshot=snapshot,
        timeout=timeout,
    )
    for note in report.notes:
        click.echo(f"nestvirt: {note}", err=True)
    if as_json:
        from nestvirt.render import print_json

        print_json(report.to_json())
    else:
        from nestvirt.render import print_status

        print_status(report)
    return int(ExitCode.READY if report.verdict == "ready" else ExitCode.NOT_READY)
