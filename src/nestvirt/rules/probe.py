"""The findings of one probe result: what `nestvirt probe` and `python -m nestvirt.probe` print.

The probe (nestvirt.probe) only measures; judging its result is the rules' job, so the
probe package never imports rules (docs/architecture.md). Standard library only on this
path: the lab runs the probe inside minimal guests.
"""

from __future__ import annotations

from nestvirt.model import Finding
from nestvirt.probe.result import ProbeResult


def probe_findings(result: ProbeResult, *, guest: bool = True) -> list[Finding]:
    """NV-H05/H07/H08 for this result (nestvirt.rules.host_linux), and with `guest` the NV-G
    finding that names this machine's parent and its fix (nestvirt.rules.guest)."""
    from nestvirt.rules.host_linux import probe_findings as findings

    found = findings(result)
    if guest:
        from nestvirt.facts.guest import gather
        from nestvirt.rules.guest import guest_findings

        found += guest_findings(gather(hypervisor=result.hypervisor, probe=result))
    return found
