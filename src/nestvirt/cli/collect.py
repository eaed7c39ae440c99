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
@click.option(
    "--linux",
    is_flag=True,
    help="Instead: this Linux/KVM machine's nestvirt.linux-snapshot/1 (a bug report's facts).",
)
@click.argument("vms", nargs=-1)
def command(hyperv: str, output: str, user: str | None, linux: bool, vms: tuple[str, ...]) -> int:
    """Write the nestvirt.hyperv-snapshot/1 of a Hyper-V host (and its VMs, or only VMS),
    or with --linux the nestvirt.linux-snapshot/1 of this Linux machine."""
    if linux:
        return _linux(output, hyperv, user, vms)
    from nestvirt import endpoint
    from nestvirt.backends import hyperv as backend

    where = endpoint.parse_subject(hyperv=hyperv, user=user)
    assert isinstance(where, endpoint.HyperV)  # `--hyperv` defaults to "" (this computer)
    snap = backend.collect_snapshot(
        host=where.host, output=output, vm_names=list(vms), user=where.user
    )
    host = where.host or "this computer"
    click.echo(f"wrote {output}: host {snap.host.name} ({host}), {len(snap.vms)} VM(s)", err=True)
    return 0


def _linux(output: str, hyperv: str, user: str | None, vms: tuple[str, ...]) -> int:
    from nestvirt import linux_snapshot
    from nestvirt.errors import UsageError

    if hyperv or user or vms:
        raise UsageError("--linux collects this machine: no --hyperv, --user or VM names")
    doc = linux_snapshot.collect()
    linux_snapshot.write(output, doc)
    running = len(doc["qemu"]["processes"])
    click.echo(f"wrote {output}: Linux host {doc['host']['facts']['hostname']}, "
               f"{running} QEMU process(es)", err=True)  # fmt: skip
    return 0
