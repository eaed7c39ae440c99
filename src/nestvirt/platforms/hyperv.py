"""The Hyper-V platform: status, preflight and the enable flow's subject for a Hyper-V VM
(registered in nestvirt.registry; the adapter contract is nestvirt.platforms).

Reached with `--hyperv [HOST]` (local PowerShell or PowerShell Remoting) or a collected
`nestvirt.hyperv-snapshot/1` given as `--snapshot FILE` (read only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nestvirt import enable, endpoint
from nestvirt.enable_hyperv import (
    READ_ONLY,
    HyperVOptions,
    HyperVSubject,
    host_findings,
    vm_findings,
)
from nestvirt.errors import UsageError
from nestvirt.facts import summary
from nestvirt.facts.hyperv import HyperVSnapshot
from nestvirt.model import HostReport, StatusReport, Unknown, VmReport
from nestvirt.preflight import PreflightReport, hyperv_operation_facts
from nestvirt.rules import Platform
from nestvirt.rules.operations import Operation, judge_facts, normalize_vendor

if TYPE_CHECKING:
    from nestvirt.backends.hyperv_transport import Transport

NAME = "hyperv"


def _source(where: endpoint.Endpoint) -> tuple[str | None, str | None, str | None]:
    """(host, snapshot file, user) of a Hyper-V endpoint."""
    if isinstance(where, endpoint.Snapshot):
        return None, where.path, None
    assert isinstance(where, endpoint.HyperV)
    return where.host, where.snapshot, where.user


def claims_snapshot(path: str) -> bool:
    """Every snapshot no other platform claimed: the Hyper-V reader says what is wrong."""
    return True


def status(
    where: endpoint.Endpoint, vm_names: list[str], *, host_only: bool, timeout: float | None
) -> StatusReport:
    host, snapshot, user = _source(where)
    report = status_report(host=host, snapshot=snapshot, vm_names=vm_names, user=user)
    return StatusReport(report.host) if host_only else report


def status_report(
    *,
    host: str | None,
    snapshot: str | None,
    vm_names: list[str],
    user: str | None = None,
    password: str | None = None,
    transport: Transport | None = None,
) -> StatusReport:
    """`nestvirt status --hyperv [HOST] | --snapshot FILE [VM…]`.

    host=None and snapshot=None: local PowerShell. host: PowerShell Remoting
    (credentials from user/password, else NESTVIRT_HYPERV_USER/_PASSWORD, else a
    prompt). An unknown VM name raises NotFound; connection and PowerShell
    failures raise NestvirtError subclasses (one line).
    """
    from nestvirt.backends import hyperv as hv

    t = transport or hv.open_transport(host=host, snapshot=snapshot, user=user, password=password)
    try:
        snap = hv.read_facts(t, vm_names)
    finally:
        if transport is None:
            t.close()
    return report_of(_reached(snap, host, t), vm_names)


def _reached(snap: HyperVSnapshot, host: str | None, transport: Transport) -> HyperVSnapshot:
    """The facts knowing how the user reached the host, so that the rules' fixes name it
    (`--hyperv HOST`, the snapshot's host by name, `--hyperv ''` for this machine)."""
    from nestvirt.backends import hyperv as hv

    return snap.reached_through(
        host=host, from_snapshot=isinstance(transport, hv.SnapshotTransport)
    )


def report_of(snap: HyperVSnapshot, vm_names: Sequence[str] = ()) -> StatusReport:
    """Facts → the `nestvirt.status/1` report, judged by the Hyper-V rules (unknown VM
    name → NotFound). The fixes name the host as `snap.host.reached_as` says (None: the
    placeholder HOST)."""
    from nestvirt.backends import hyperv as hv

    facts = hv.host_facts_json(snap.host)
    host = HostReport(
        snap.host.name, "windows", facts, tuple(host_findings(snap.host)),
        summary.windows_host(facts),
    )  # fmt: skip
    vms = tuple(
        VmReport(vm.name, NAME, vm.state_word, tuple(vm_findings(vm, snap.host)))
        for vm in snap.select(list(vm_names))
    )
    return StatusReport(host, vms)


def preflight(
    where: endpoint.Endpoint,
    vm: str,
    op: Operation,
    *,
    assume_no_nested_guests: bool,
    timeout: float | None,
) -> PreflightReport:
    from nestvirt.backends import hyperv as hv

    host, snapshot, user = _source(where)
    transport = hv.open_transport(host=host, snapshot=snapshot, user=user)
    try:
        snap = _reached(hv.read_facts(transport, [vm]), host, transport)
    finally:
        transport.close()  # a remote session must not outlive the question
    facts = hv.select_one(snap, vm)
    maker = snap.host.cpu_manufacturer
    vendor = maker if isinstance(maker, Unknown) else normalize_vendor(maker)
    # the fixes name the host as the user reaches it: HOST, this machine (""), or the
    # snapshot's host by name ("this host": the placeholder HOST, when a snapshot has no name)
    reached = snap.host.reached_as
    of = hyperv_operation_facts(
        facts, op, host_vendor=vendor, assume_no_nested_guests=assume_no_nested_guests,
        host_build=snap.host.build, host="this host" if reached is None else reached,
    )  # fmt: skip
    return PreflightReport(facts.name, op, NAME, tuple(judge_facts(of, Platform.HYPERV)))


def subject(
    where: endpoint.Endpoint,
    vm: str,
    request: enable.ChangeRequest,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float | None = None,
) -> HyperVSubject:
    if request.remove_hotplug:
        raise UsageError("--remove-hotplug is for libvirt domains, not Hyper-V")
    if request.restart and not request.install_hypervisor:
        raise UsageError("--restart restarts the VM after --install-hypervisor: add that too")
    host, snapshot, user = _source(where)
    if snapshot is not None and not dry_run:
        raise UsageError(READ_ONLY)
    options = HyperVOptions(
        stop=request.stop,
        mac_spoofing=request.mac_spoofing,
        memory_bytes=request.memory_kib * 1024 if request.memory_kib is not None else None,
        install_hypervisor=request.install_hypervisor,
        restart=request.restart,
    )
    password = where.password if isinstance(where, endpoint.HyperV) else None
    return HyperVSubject(
        vm, host=host, snapshot=snapshot, user=user, password=password, options=options,
        dry_run=dry_run, progress=progress,
    )  # fmt: skip
