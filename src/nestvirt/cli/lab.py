"""`nestvirt lab`: the whole nested procedure on this machine, every depth reported."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from nestvirt.cli import options
from nestvirt.endpoint import DEFAULT_URI
from nestvirt.errors import ExitCode


def _progress(enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            click.echo(f"  … {message}", err=True)

    return say


@click.command()
@options.json_output("Print nestvirt.lab/1 JSON (no progress).")
@click.option(
    "--no-expose", is_flag=True, help="Negative control: boot the lab VM without the extensions."
)
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="auto: KVM only if a Linux guest boots under it here, else TCG.",
)
@click.option("--keep", is_flag=True, help="Keep the lab VM's definition and files.")
@click.option("--kernel", metavar="PATH", help="Kernel: a bzImage, a kernel .deb or unpacked root.")
@click.option("--direct", is_flag=True, help="Boot with QEMU directly instead of libvirt.")
@click.option("--connect", "-c", metavar="URI", default=DEFAULT_URI, show_default=True)
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds for the VM.")
@click.option(
    "--identity",
    type=click.Choice(["aws", "gce", "vmware", "virtualbox", "azure", "tcg"]),
    help="Instead: boot the lab VM (TCG, QEMU directly) with this parent's SMBIOS identity and "
    "print what `python -m nestvirt.guestside` names inside (nestvirt.guestside/1).",
)
def command(
    as_json: bool, no_expose: bool, accel: str, keep: bool, kernel: str | None, direct: bool,
    connect: str, timeout: float, identity: str | None,
) -> int:  # fmt: skip
    """Build a lab VM from this host's packages, expose the extensions, boot it,
    run the KVM probe inside it (the nested VM) and report every depth.

    Exit 0: the nested guest ran; 1: it did not; 2: usage or connection error.
    """
    if identity is not None:
        return _identity(identity, kernel, min(timeout, 600.0), as_json)
    from nestvirt.lab.run import LabOptions, run_lab

    options = LabOptions(
        expose=not no_expose, accel=accel, keep=keep, kernel=kernel, direct=direct, uri=connect,
        timeout=timeout,
    )  # fmt: skip
    say = _progress(not as_json and sys.stderr.isatty())
    result = run_lab(options, say)
    if as_json:
        from nestvirt.render import print_json

        print_json(result.to_json())
    else:
        for note in result.notes:
            click.echo(f"nestvirt: {note}", err=True)
        _print_human(result)
    return int(ExitCode.READY if result.ok else ExitCode.NOT_READY)


def _identity(name: str, kernel: str | None, timeout: float, as_json: bool) -> int:
    from nestvirt.guestside import render
    from nestvirt.lab.identity import boot_identity

    say = _progress(not as_json and sys.stderr.isatty())
    doc, outcome = boot_identity(name, timeout=timeout, kernel=kernel, progress=say)
    if doc is None or "findings" not in doc:
        why = outcome.error or (doc or {}).get("error") or "no report"
        click.echo(f"nestvirt: lab VM as {name} gave no guestside report: {why}", err=True)
        return int(ExitCode.NOT_READY)
    if as_json:
        from nestvirt.render import print_json

        print_json(doc)
    else:
        click.echo(f"lab VM as {name} ({outcome.seconds:.1f} s): {render(doc)}")
    return int(ExitCode.READY)


def _print_human(result: object) -> None:
    from nestvirt.lab.report import LabReport, what_guest_saw

    assert isinstance(result, LabReport)
    verdict = "nested virtualization works" if result.ok else "nested virtualization FAILED"
    click.echo(f"nestvirt lab: {verdict} ({result.accel}, {result.seconds:.1f} s)")
    if result.accel_reason:
        click.echo(f"  {result.accel_reason}")
    for level in result.levels:
        under = level.hypervisor or "bare metal / unknown"
        us = f"{level.us_per_exit:.1f} µs/exit" if level.us_per_exit is not None else "-"
        ran = "a guest ran" if level.kvm_ok else "no guest ran"
        click.echo(
            f"  depth {level.depth} {level.role:7} under {under}; "
            f"{what_guest_saw(level)}; {ran} at depth {level.depth + 1} ({us})"
        )
        if level.detail:
            click.echo(f"          {level.detail}")
    for f in result.findings:
        click.echo(f"  {f.code} {f.name} [{f.severity}]: {f.message}")
        if f.fix:
            click.echo(f"          fix: {f.fix}")
