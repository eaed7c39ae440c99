"""`nestvirt status`: gather facts, run the rules, build the report. No output here.

The endpoint's platform (nestvirt.registry) gathers and judges its VMs; this module
is the entry point and judges the Linux host nestvirt runs on.
"""

from __future__ import annotations

from nestvirt import endpoint, registry, rules
from nestvirt.errors import UsageError
from nestvirt.facts import linux_host, summary
from nestvirt.model import HostReport, StatusReport, to_jsonable
from nestvirt.rules import Platform, Target


def host_report(*, probe_timeout: float = 2.0) -> HostReport:
    facts = linux_host.gather(probe_timeout=probe_timeout)
    findings = rules.run(Target.HOST, Platform.LINUX, facts)
    if facts.guest is not None:  # NV-G: this machine's parent and the switch there
        findings += rules.run(Target.GUEST, Platform.LINUX, facts.guest)
    raw = to_jsonable(facts)
    return HostReport(facts.hostname, "linux", raw, tuple(findings), summary.linux_host(raw))


def status(
    vm_names: list[str],
    *,
    connect: str | None = None,
    host_only: bool = False,
    hyperv: str | None = None,
    snapshot: str | None = None,
    timeout: float | None = None,
) -> StatusReport:
    """One entry point for every platform; `hyperv` is a host name or "" for this machine.

    `timeout`: how long a daemon may stay silent (libvirt)."""
    where = endpoint.parse(connect, hyperv, snapshot)
    if host_only and vm_names:
        raise UsageError("--host-only takes no VM names")
    adapter = registry.adapter_for(where)
    report: StatusReport = adapter.status(
        where, list(vm_names), host_only=host_only, timeout=timeout
    )
    return report
