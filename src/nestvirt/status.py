"""`nestvirt status`: gather facts, run the rules, build the report. No output here."""

from __future__ import annotations

from typing import Any

from nestvirt import endpoint, rules
from nestvirt.endpoint import DEFAULT_URI
from nestvirt.errors import ConnectError, UsageError
from nestvirt.facts import linux_host
from nestvirt.model import HostReport, StatusReport, VmReport, to_jsonable
from nestvirt.rules import Platform, Target

LOCAL_URI = DEFAULT_URI


def host_report(*, probe_timeout: float = 2.0) -> HostReport:
    facts = linux_host.gather(probe_timeout=probe_timeout)
    findings = rules.run(Target.HOST, Platform.LINUX, facts)
    if facts.guest is not None:  # NV-G: this machine's parent and the switch there
        findings += rules.run(Target.GUEST, Platform.LINUX, facts.guest)
    return HostReport(facts.hostname, "linux", to_jsonable(facts), tuple(findings))


def libvirt_status(
    vm_names: list[str], *, connect: str | None, host_only: bool, timeout: float | None = None
) -> StatusReport:
    """The local host, plus the VMs of `connect` (default qemu:///system when it answers).

    `timeout`: how long libvirt may stay silent (libvirt_session.open_connection)."""
    if host_only and vm_names:
        raise UsageError("--host-only takes no VM names")
    if host_only:
        return StatusReport(host_report())
    from nestvirt.backends import libvirt as backend
    from nestvirt.backends import libvirt_session as session

    uri = connect or LOCAL_URI
    try:
        conn = session.open_connection(
            uri, readonly=True, timeout=session.DEFAULT_TIMEOUT if timeout is None else timeout
        )
    except ConnectError as exc:
        if connect or vm_names:
            raise
        return StatusReport(host_report(), notes=(f"{exc}; reporting the host only",))
    try:
        # a remote URI's host is judged from its capabilities, not from this machine's facts
        host = remote_host_report(conn, uri) if backend.uri_host(uri) else host_report()
        domains = [backend.lookup_domain(conn, n) for n in vm_names] or backend.list_domains(conn)
        reports = []
        for facts in backend.all_vm_facts(conn, domains):
            findings = rules.run(Target.VM, Platform.LIBVIRT, facts)
            reports.append(VmReport(facts.name, "libvirt", facts.state, tuple(findings)))
    finally:
        conn.close()
    return StatusReport(host, tuple(reports))


def remote_host_report(conn: Any, uri: str) -> HostReport:
    """A remote libvirt host: what its capabilities say; host rules need nestvirt there."""
    from nestvirt.backends import libvirt as backend

    vendor, extensions = backend.host_cpu(conn)
    facts = {
        "uri": uri,
        "cpu_vendor": vendor,
        "virt_extensions": list(extensions),
        "note": "host rules run only on the machine nestvirt runs on; run nestvirt there",
    }
    return HostReport(str(conn.getHostname()), "linux", facts, ())


def status(
    vm_names: list[str],
    *,
    connect: str | None = None,
    host_only: bool = False,
    hyperv: str | None = None,
    snapshot: str | None = None,
    timeout: float | None = None,
) -> StatusReport:
    """One entry point for every platform; `hyperv` is a host name or "" for this machine."""
    where = endpoint.parse(connect, hyperv, snapshot)
    if isinstance(where, endpoint.Libvirt):
        return libvirt_status(vm_names, connect=where.uri, host_only=host_only, timeout=timeout)
    if host_only and vm_names:
        raise UsageError("--host-only takes no VM names")
    if isinstance(where, endpoint.Snapshot):
        from nestvirt import linux_snapshot

        if linux_snapshot.sniff(where.path):  # nestvirt collect --linux
            return linux_snapshot.status_report(where.path, vm_names, host_only=host_only)
    from nestvirt.backends import hyperv as hv

    report = hv.status_report(
        host=where.host if isinstance(where, endpoint.HyperV) else None,
        snapshot=where.path if isinstance(where, endpoint.Snapshot) else None,
        vm_names=vm_names,
    )
    return StatusReport(report.host) if host_only else report
