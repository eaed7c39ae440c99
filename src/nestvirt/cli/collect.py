"""`nestvirt collect --hyperv [HOST] -o FILE [VM…]`: write a Hyper-V snapshot for offline analysis.

Collect on (or against) the Windows host, analyse anywhere with
`nestvirt status --snapshot FILE`.
"""

from __future__ import annotations

import click

from nestvirt.cli import options


@click.command()
@options.hyperv(
    "Hyper-V host: this computer (no value) or HOST over PowerShell Remoting "
    "(HOST, HOST:PORT, https://HOST[:PORT]).",
    default="",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=False),
    help="Snapshot file to write (replaced atomically).",
)
@options.user
@click.argument("vms", nargs=-1)
def command(hyperv: str, output: str, user: str | None, vms: tuple[str, ...]) -> int:
    """Write the nestvirt.hyperv-snapshot/1 of a Hyper-V host (and its VMs, or only VMS)."""
    from nestvirt.backends import hyperv as backend

    snap = backend.collect_snapshot(
        host=hyperv or None, output=output, vm_names=list(vms), user=user
    )
    where = hyperv or "this computer"
    click.echo(f"wrote {output}: host {snap.host.name} ({where}), {len(snap.vms)} VM(s)", err=True)
    return 0
