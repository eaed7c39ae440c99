"""`nestvirt probe`: prove that KVM runs guests here (real and long mode), and under what."""

from __future__ import annotations

import click

from nestvirt.cli import options
from nestvirt.errors import ExitCode


@click.command("probe")
@options.json_output("Print the nestvirt.probe/1 JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=2.0,
    show_default=True,
    metavar="S",
    help="Seconds each guest may run before it counts as hung.",
)
def command(as_json: bool, timeout: float) -> int:
    """Create a VM through /dev/kvm, run guest code in real and 64-bit long mode,
    count and time the exits, and name the hypervisor this machine runs under."""
    from nestvirt.facts.container import gather as container_facts
    from nestvirt.probe import run_probe, to_json
    from nestvirt.probe.report import render_text
    from nestvirt.rules.container import container_findings
    from nestvirt.rules.probe import probe_findings

    result = run_probe(timeout=timeout)
    findings = [*probe_findings(result), *container_findings(container_facts())]
    if as_json:
        from nestvirt.render import print_json

        print_json(to_json(result, findings))
    else:
        click.echo(render_text(result, findings))
    return int(ExitCode.READY if result.ok else ExitCode.NOT_READY)
