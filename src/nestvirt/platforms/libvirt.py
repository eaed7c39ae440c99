"""The libvirt platform: status, preflight and the enable flow's subject for a libvirt
domain (registered in nestvirt.registry; the adapter contract is nestvirt.platforms).

The backend (nestvirt.backends.libvirt*) reads and writes; the rules in
nestvirt.rules.vm_libvirt judge; nestvirt.plan_libvirt decides the XML edits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nestvirt import endpoint, rules
from nestvirt.errors import ConnectError, UsageError
from nestvirt.model import HostReport, Plan, StatusReport, Unknown, VmReport
from nestvirt.rules import Platform, Target
from nestvirt.status import host_report
from nestvirt.vocabulary import RUNNING_STATES

if TYPE_CHECKING:  # the flow's modules load with the first change, not with `status`
    from nestvirt import enable
    from nestvirt.journal import Entry
    from nestvirt.plan_libvirt import PlanOptions
    from nestvirt.preflight import PreflightReport
    from nestvirt.rules.operations import Operation

NAME = "libvirt"


def status(
    where: endpoint.Endpoint, vm_names: list[str], *, host_only: bool, timeout: float | None
) -> StatusReport:
    """The local host, plus the VMs of the URI (default qemu:///system when it answers).

    `timeout`: how long libvirt may stay silent (libvirt_session.open_connection)."""
    from nestvirt.backends import libvirt_session as session

    assert isinstance(where, endpoint.Libvirt)
    if host_only:
        return StatusReport(host_report())
    uri = where.target
    try:
        conn = session.open_connection(
            uri, readonly=True, timeout=session.DEFAULT_TIMEOUT if timeout is None else timeout
        )
    except ConnectError as exc:
        if where.uri or vm_names:
            raise
        return StatusReport(host_report(), notes=(f"{exc}; reporting the host only",))
    try:
        return report_of(conn, uri, vm_names)
    finally:
        conn.close()


def report_of(
    conn: Any, uri: str, vm_names: list[str], local_host: Callable[[], HostReport] = host_report
) -> StatusReport:
    """The StatusReport of an open connection: its host, and its VMs (every one when
    `vm_names` is empty). `local_host` reports this machine when `uri` is local."""
    from nestvirt.backends import libvirt as backend

    # a remote URI's host is judged from its capabilities, not from this machine's facts
    host = remote_host_report(conn, uri) if backend.uri_host(uri) else local_host()
    domains = [backend.lookup_domain(conn, n) for n in vm_names] or backend.list_domains(conn)
    reports = []
    for facts in backend.all_vm_facts(conn, domains):
        findings = rules.run(Target.VM, NAME, facts)
        reports.append(VmReport(facts.name, NAME, facts.state, tuple(findings)))
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


def preflight(
    where: endpoint.Endpoint,
    vm: str,
    op: Operation,
    *,
    assume_no_nested_guests: bool,
    timeout: float | None,
) -> PreflightReport:
    from nestvirt.backends import libvirt as backend
    from nestvirt.backends import libvirt_session as session
    from nestvirt.preflight import (
        PreflightReport,
        is_local_uri,
        libvirt_operation_facts,
        nested_state_capability,
    )
    from nestvirt.rules.operations import judge_facts

    assert isinstance(where, endpoint.Libvirt)
    conn = session.open_connection(
        where.uri, readonly=True, timeout=session.DEFAULT_TIMEOUT if timeout is None else timeout
    )
    try:
        dom = backend.lookup_domain(conn, vm)
        facts = backend.vm_facts(conn, dom)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    notes: list[str] = []
    if is_local_uri(facts.uri):
        cap = nested_state_capability()
        host = "this host"
    else:
        host = backend.uri_host(facts.uri) or facts.uri
        cap = Unknown(
            f"{facts.uri} is another host and nestvirt reads the capability through this "
            f"machine's /dev/kvm; run `nestvirt preflight` on {host}"
        )
    if isinstance(cap, Unknown):
        notes.append(f"KVM_CAP_NESTED_STATE unknown: {cap.reason}")
    of = libvirt_operation_facts(
        facts, op, nested_state_cap=cap, assume_no_nested_guests=assume_no_nested_guests,
        host=host,
    )  # fmt: skip
    return PreflightReport(
        facts.name, op, NAME, tuple(judge_facts(of, Platform.LIBVIRT)), tuple(notes)
    )


def subject(
    where: endpoint.Endpoint,
    vm: str,
    request: enable.ChangeRequest,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float | None = None,
) -> LibvirtSubject:
    from nestvirt.plan_libvirt import PlanOptions

    assert isinstance(where, endpoint.Libvirt)
    if request.install_hypervisor or request.restart:
        raise UsageError("--install-hypervisor and --restart are for Hyper-V: add --hyperv [HOST]")
    options = PlanOptions(
        memory_kib=request.memory_kib,
        mac_spoofing=request.mac_spoofing,
        remove_hotplug=request.remove_hotplug,
        stop=request.stop,
        stop_timeout=request.stop_timeout,
    )
    return LibvirtSubject(where.uri, vm, options, timeout=timeout)


class LibvirtSubject:
    """A libvirt domain as a Subject. Opens the connection and finds the domain at once."""

    def __init__(
        self,
        uri: str | None,
        name: str,
        options: PlanOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_session as session
        from nestvirt.plan_libvirt import PlanOptions

        self.options = options or PlanOptions()
        self.spelled = uri  # as the user wrote it (None: the default): for printed commands
        self.timeout = session.DEFAULT_TIMEOUT if timeout is None else timeout
        self.conn = session.open_connection(uri, timeout=self.timeout)
        try:
            self.dom = backend.lookup_domain(self.conn, name)
            self.name = self.dom.name()
            self.uri = str(self.conn.getURI())
            # one lock and one journal per daemon + domain, whatever the URI's spelling
            self.identity = session.daemon_identity(self.conn)
            self.key = (self.identity, str(self.dom.UUIDString()))
        except BaseException:
            self.close()
            raise

    def legacy_keys(self) -> list[str]:
        """The URI texts older nestvirt keyed this domain's journal by."""
        from nestvirt.backends import libvirt_session as session

        return session.legacy_uris(self.conn)

    def undo_command(self) -> str:
        from nestvirt.backends import libvirt_session as session

        return session.undo_command(self.name, self.spelled)

    def live_definition(self) -> str:
        """The inactive XML now; over a new connection if this one was lost."""
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_session as session

        try:
            return backend.inactive_xml(self.dom)
        except Exception:
            conn = session.open_connection(self.spelled, timeout=self.timeout)
            self.close()
            self.conn = conn
            self.dom = conn.lookupByUUIDString(self.key[1])
            return backend.inactive_xml(self.dom)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a connection that already failed
            self.conn.close()

    def read(self) -> enable.Snapshot:
        from nestvirt import enable
        from nestvirt.backends import libvirt as backend

        facts = backend.vm_facts(self.conn, self.dom)
        findings = rules.run(rules.Target.VM, NAME, facts)
        running = facts.state in RUNNING_STATES
        return enable.Snapshot(backend.inactive_xml(self.dom), facts, tuple(findings), running)

    def plan(self, snap: enable.Snapshot, action: str, undo: Entry | None) -> Plan:
        from nestvirt import enable
        from nestvirt import plan_libvirt as pl

        if action == enable.ENABLE:
            return pl.build_plan(snap.facts, snap.findings, self.options)
        if action == enable.DISABLE:
            return pl.build_disable_plan(snap.facts, snap.findings, self.options)
        if action == enable.UNDO and undo is not None:
            what = f"{undo.action} at {undo.time} by {undo.user}"
            base = Plan(vm=self.name, changes=(pl.restore_change(undo.before, undo.seq, what),))
            return pl.plan_with_state(base, snap.facts, self.options)
        raise UsageError(f"unknown action {action!r}")

    def render(self, snap: enable.Snapshot, plan: Plan) -> str:
        from nestvirt import domxml
        from nestvirt.plan_libvirt import edits_of

        return domxml.render(snap.definition, edits_of(plan))

    def diff(self, before: str, after: str) -> str:
        from nestvirt import domxml

        return domxml.unified_diff(before, after, self.name)

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        from nestvirt.backends import libvirt_write

        libvirt_write.shutdown(self.dom, timeout, progress=progress)

    def start(self) -> None:
        from nestvirt.backends import libvirt_write

        libvirt_write.start(self.dom)

    def write(self, plan: Plan, definition: str) -> str:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_write
        from nestvirt.plan_libvirt import DISCARD_MANAGED_SAVE

        filters = [nf for c in plan.changes for nf in getattr(c, "nwfilters", ())]
        if filters:  # a derived filter must exist before a definition references it
            libvirt_write.define_nwfilters(self.conn, filters)
        self.dom = libvirt_write.define(self.conn, definition)
        if any(c.action == DISCARD_MANAGED_SAVE for c in plan.changes):
            libvirt_write.managed_save_remove(self.dom)
        return backend.inactive_xml(self.dom)

    def restore(self, definition: str) -> str:
        from nestvirt.backends import libvirt as backend
        from nestvirt.backends import libvirt_write

        self.dom = libvirt_write.define(self.conn, definition)
        return backend.inactive_xml(self.dom)

    def verify(self, plan: Plan, action: str) -> str | None:
        from nestvirt import enable
        from nestvirt import plan_libvirt as pl

        snap = self.read()
        fired = {f.code for f in snap.findings}
        actions = {c.action for c in plan.changes}
        if pl.EXPOSE in actions and "NV-V01" in fired:
            return "libvirt did not keep the exposed vmx/svm (NV-V01 still fires)"
        if pl.HIDE in actions and "NV-V01" not in fired:
            return "vmx/svm are still exposed after disable"
        if action == enable.ENABLE:
            again = pl.remaining_definition_changes(
                pl.build_plan(snap.facts, snap.findings, self.options)
            )
            if again:
                return "libvirt did not keep: " + "; ".join(c.summary for c in again)
        return None
