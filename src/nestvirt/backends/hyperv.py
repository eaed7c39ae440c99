"""The Hyper-V backend: status, collect, enable (plan/apply) and undo.

Facts come from one of three transports (backends/hyperv_transport.py) as a
`nestvirt.hyperv-snapshot/1` document; rules judge them; `plan_enable` decides
(pure); `apply_plan` and `undo` are the only code that changes a VM, one
cmdlet at a time, every value a parameter.

How the generic CLI uses this module:

    status:  status_report(host=…, snapshot=…, vm_names=[…]) -> StatusReport
    enable:  t = open_transport(host=…, snapshot=…)
             snap = read_facts(t, [vm])      # one VM, see select_one
             plan = plan_enable(vm_facts, snap.host, findings, stop=…, …)
             plan_json(plan)                 # --dry-run --json (works on a snapshot)
             record = apply_plan(t, plan, journal=save)   # after confirmation
    undo:    undo(t, record, stop=…)         # record = what apply_plan journaled
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestvirt import rules
from nestvirt.backends import hyperv_ps
from nestvirt.backends.hyperv_ps import Bare, ps_quote, render_command
from nestvirt.backends.hyperv_transport import (
    ENV_PASSWORD,
    ENV_USER,
    LocalTransport,
    PowerShellError,
    RemoteTransport,
    SnapshotTransport,
    Transport,
    one_line,
    open_transport,
)
from nestvirt.errors import NotFound, PermissionRequired, UsageError
from nestvirt.facts.hyperv import (
    GIB,
    HyperVHostFacts,
    HyperVSnapshot,
    HyperVVmFacts,
    load_snapshot,
    parse_snapshot,
)
from nestvirt.model import (
    Change,
    Finding,
    HostReport,
    Plan,
    Severity,
    StatusReport,
    VmReport,
    plan_document,
    to_jsonable,
)
from nestvirt.rules.hyperv_table import is_preview_build

UNDO_SCHEMA = "nestvirt.hyperv-undo/1"
ENV_GUEST_USER = "NESTVIRT_GUEST_USER"
ENV_GUEST_PASSWORD = "NESTVIRT_GUEST_PASSWORD"
MEMORY_ALIGN = 2 * 1024 * 1024  # Hyper-V memory sizes are multiples of 2 MiB


# ---------------------------------------------------------------------------
# Facts


def read_facts(transport: Transport, vm_names: Sequence[str] = ()) -> HyperVSnapshot:
    """The host's facts and those of the named VMs (every VM when none are named)."""
    if isinstance(transport, SnapshotTransport):
        return load_snapshot(transport.path)
    doc = transport.collect(list(vm_names))
    return parse_snapshot(doc, f"Hyper-V on {transport.label}")


def select_one(snap: HyperVSnapshot, name: str) -> HyperVVmFacts:
    """The one VM called `name`; NotFound if none, UsageError if several share the name."""
    found = snap.select([name])
    if len(found) > 1:
        ids = ", ".join(vm.vm_id or "?" for vm in found)
        raise UsageError(f"{len(found)} Hyper-V VMs are named {name!r} ({ids}): rename one first")
    return found[0]


def host_findings(host: HyperVHostFacts) -> list[Finding]:
    return rules.run(rules.Target.HOST, rules.Platform.WINDOWS, host)


def vm_findings(vm: HyperVVmFacts, host: HyperVHostFacts) -> list[Finding]:
    return rules.run(rules.Target.VM, rules.Platform.HYPERV, vm, host)


def host_facts_json(host: HyperVHostFacts) -> dict[str, Any]:
    facts: dict[str, Any] = to_jsonable(host)
    facts["cpu_vendor"] = to_jsonable(host.cpu_vendor)
    return facts


def report_from_snapshot(snap: HyperVSnapshot, vm_names: Sequence[str] = ()) -> StatusReport:
    """Pure: facts → the `nestvirt.status/1` report (unknown VM name → NotFound)."""
    vms = snap.select(list(vm_names))
    host = HostReport(
        name=snap.host.name,
        platform="windows",
        facts=host_facts_json(snap.host),
        findings=tuple(host_findings(snap.host)),
    )
    return StatusReport(
        host=host,
        vms=tuple(
            VmReport(vm.name, "hyperv", vm.state_word, tuple(vm_findings(vm, snap.host)))
            for vm in vms
        ),
    )


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
    t = transport or open_transport(host=host, snapshot=snapshot, user=user, password=password)
    try:
        snap = read_facts(t, vm_names)
    finally:
        if transport is None:
            t.close()
    return report_from_snapshot(snap, vm_names)


# ---------------------------------------------------------------------------
# Collect


def write_atomic(path: str | Path, text: str) -> Path:
    """Write via a temporary file in the same directory + rename: never a half file
    (nestvirt.statedir.atomic_write, the one atomic write)."""
    from nestvirt.statedir import atomic_write

    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise NotFound(f"directory {str(directory)!r} does not exist")
    atomic_write(target, text, what="the snapshot")
    return target


def collect_snapshot(
    *,
    host: str | None,
    output: str | Path,
    vm_names: Sequence[str] = (),
    user: str | None = None,
    password: str | None = None,
    transport: Transport | None = None,
) -> HyperVSnapshot:
    """`nestvirt collect --hyperv [HOST] -o FILE`: read a live host, check, write atomically.

    The document is parsed before it is written, so a snapshot nestvirt writes
    is one nestvirt can read.
    """
    t = transport or open_transport(host=host, snapshot=None, user=user, password=password)
    try:
        doc = t.collect(list(vm_names))
    finally:
        if transport is None:
            t.close()
    snap = parse_snapshot(doc, f"Hyper-V on {t.label}")
    snap.select(list(vm_names))  # NotFound for a name the host does not have
    write_atomic(output, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return snap


# ---------------------------------------------------------------------------
# Enable: plan (pure), apply, undo


@dataclass(frozen=True, slots=True)
class HyperVChange(Change):
    """A Change that knows how to run itself: a cmdlet on `Get-VM -Id` or a fixed script.

    `command` (inherited) is the pasteable text; `cmdlet` + `parameters` is what
    runs, the VM chosen by its Id, every value a parameter.
    """

    cmdlet: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()
    script: str = ""  # a fixed script of hyperv_ps instead of a cmdlet
    script_args: tuple[tuple[str, Any], ...] = ()


def _vm_change(
    action: str,
    codes: tuple[str, ...],
    vm_name: str,
    cmdlet: str,
    parameters: Mapping[str, Any],
    summary: str,
    *,
    name_param: str = "VMName",
    needs_stop: bool = False,
) -> HyperVChange:
    shown = render_command(cmdlet, {name_param: vm_name, **parameters})
    return HyperVChange(
        action=action,
        codes=codes,
        command=shown,
        summary=summary,
        needs_stop=needs_stop,
        cmdlet=cmdlet,
        parameters=tuple(parameters.items()),
    )


def _stop_vm_change(vm_name: str, summary: str) -> HyperVChange:
    """`Stop-VM -Name VM -Force` (NV-V07): the first change when a plan needs the VM off."""
    return _vm_change(
        "stop-vm", ("NV-V07",), vm_name, "Stop-VM", {"Force": None}, summary, name_param="Name"
    )


def _check_memory(memory_bytes: int) -> None:
    if memory_bytes <= 0 or memory_bytes % MEMORY_ALIGN:
        raise UsageError(
            f"--memory {memory_bytes} bytes: Hyper-V needs a positive multiple of 2 MiB"
        )


def _make_off(
    vm: HyperVVmFacts, stop: bool, changes: list[HyperVChange], notes: list[str], what: str
) -> None:
    """The first changes of a plan whose settings need the VM off (none when it is off).

    A saved VM: Remove-VMSavedState (the note says the memory is lost). A running
    one: Stop-VM with `stop`; without it UsageError (`what` says why it must be off).
    """
    name = vm.name
    if vm.is_off:
        return
    if vm.is_saved:
        notes.append(
            f"VM {name!r} is {vm.state}: its saved state will be removed — the memory of "
            "the VM is lost, as if it had been powered off"
        )
        changes.append(
            _vm_change(
                "remove-saved-state",
                ("NV-V05",),
                name,
                "Remove-VMSavedState",
                {},
                "discard the saved state (the VM's memory contents are lost)",
            )
        )
    elif not stop:
        raise UsageError(
            f"VM {name!r} is {vm.state_word}: {what} only while it is off; "
            "stop it first or pass --stop"
        )
    else:
        changes.append(
            _stop_vm_change(name, "shut the VM down (guest shutdown; turned off after 5 minutes)")
        )


def plan_enable(
    vm: HyperVVmFacts,
    host: HyperVHostFacts,
    findings: Sequence[Finding],
    *,
    stop: bool,
    mac_spoofing: bool,
    memory_bytes: int | None,
    install_hypervisor: bool,
    restart: bool = False,
) -> Plan:
    """The changes that make `vm` ready for nesting, in Enable-NestedVm.ps1's order.

    Pure. Order: Remove-VMSavedState (a saved VM; the plan says its memory is
    lost), Stop-VM (a running VM, only with `stop`; without it: UsageError),
    Set-VMProcessor -ExposeVirtualizationExtensions $true, Set-VMMemory
    -DynamicMemoryEnabled $false, Set-VMNetworkAdapter -MacAddressSpoofing On
    (with `mac_spoofing`), Set-VMMemory -StartupBytes (with `memory_bytes`),
    then with `install_hypervisor` the page's step 3 inside the VM (and
    Restart-VM only with `restart`). Only what differs from the facts is
    planned: an already-ready VM gives an empty plan. Error findings no change
    clears (host rules, NV-V08) are returned in `Plan.unfixable`.
    """
    name = vm.name
    changes: list[HyperVChange] = []
    notes: list[str] = []
    if memory_bytes is not None:
        _check_memory(memory_bytes)
    expose = not vm.expose_virtualization_extensions
    memory = memory_bytes is not None and vm.startup_bytes != memory_bytes
    spoof = mac_spoofing and any(a.mac_address_spoofing != "On" for a in vm.adapters)
    # Dynamic memory stops a nesting VM only on the preview (build < 14361); later the
    # memory just stays at Startup: turn it off then only when the VM is off anyway.
    dynamic_blocks = is_preview_build(host.build) is True
    dynamic = vm.dynamic_memory_enabled and (
        dynamic_blocks or vm.is_off or (stop and not vm.is_saved) or expose or memory
    )
    needs_off = expose or memory or (dynamic and dynamic_blocks)
    if vm.dynamic_memory_enabled and not dynamic:
        notes.append(
            f"dynamic memory stays on: on build {host.build} it does not stop a nesting VM "
            f"(its memory stays at Startup); turn it off with the VM off if you want"
        )
    elif dynamic and not needs_off and not vm.is_off:
        needs_off = True  # --stop asked for: the VM is being stopped anyway

    if needs_off:
        _make_off(vm, stop, changes, notes, "its processor and memory settings change")
    if expose:
        changes.append(
            _vm_change(
                "expose-virtualization-extensions",
                ("NV-V01",),
                name,
                "Set-VMProcessor",
                {"ExposeVirtualizationExtensions": True},
                "expose VT-x/AMD-V to the VM",
                needs_stop=True,
            )
        )
    if dynamic:
        changes.append(
            _vm_change(
                "disable-dynamic-memory",
                ("NV-V02",),
                name,
                "Set-VMMemory",
                {"DynamicMemoryEnabled": False},
                "turn dynamic memory off (a VM that runs a hypervisor does not start with it)"
                if dynamic_blocks
                else "turn dynamic memory off (with Hyper-V inside, its memory would stay at "
                "Startup anyway)",
                needs_stop=True,
            )
        )
    if spoof:
        changes.append(
            _vm_change(
                "enable-mac-spoofing",
                ("NV-V04",),
                name,
                "Set-VMNetworkAdapter",
                {"MacAddressSpoofing": Bare("On")},
                "allow MAC address spoofing on every adapter (network for nested guests)",
            )
        )
    if memory and memory_bytes is not None:
        changes.append(
            _vm_change(
                "set-startup-memory",
                ("NV-V03",) if memory_bytes >= 4 * GIB else (),
                name,
                "Set-VMMemory",
                {"StartupBytes": memory_bytes},
                f"set startup memory to {memory_bytes / GIB:g} GiB "
                f"(was {vm.startup_bytes / GIB:g} GiB)",
                needs_stop=True,
            )
        )
    if install_hypervisor:
        will_be_off = vm.is_off or any(
            c.action in ("stop-vm", "remove-saved-state") for c in changes
        )
        start = f"Start-VM -Name {ps_quote(name)}; " if will_be_off else ""
        direct = (
            f"Invoke-Command -VMName {ps_quote(name)} -Credential (Get-Credential) -ScriptBlock"
        )
        changes.append(
            HyperVChange(
                action="install-hypervisor",
                codes=(),
                command=(
                    f"{start}{direct} {{ Enable-WindowsOptionalFeature -Online -FeatureName "
                    "Microsoft-Hyper-V -All -NoRestart }  # Windows Server guests: "
                    "Install-WindowsFeature -Name Hyper-V -IncludeManagementTools"
                ),
                summary="start the VM and enable Hyper-V inside it (PowerShell Direct; asks "
                "for the guest's credentials), then check the guest's own view",
                script="install-hypervisor",
            )
        )
        if restart:
            changes.append(
                HyperVChange(
                    action="restart-vm",
                    codes=(),
                    command=f"{direct} {{ Restart-Computer -Force }}",
                    summary="restart Windows inside the VM so its hypervisor starts, then "
                    "check from inside that it runs",
                    script="restart-guest",
                )
            )
        else:
            notes.append(f"restart VM {name!r} to finish installing Hyper-V inside it")
    fixed = {code for c in changes for code in c.codes}
    unfixable = tuple(f for f in findings if f.severity is Severity.ERROR and f.code not in fixed)
    if any(c.needs_stop for c in changes):
        notes.append("the changes take effect at the VM's next start")
    return Plan(vm=name, changes=tuple(changes), notes=tuple(notes), unfixable=unfixable)


def plan_disable(vm: HyperVVmFacts, *, stop: bool) -> Plan:
    """Pure: hide VT-x/AMD-V from `vm` again, and change nothing else.

    `Set-VMProcessor -ExposeVirtualizationExtensions $false`, with the VM off
    first as in `plan_enable`. Not exposed: an empty plan.
    """
    if not vm.expose_virtualization_extensions:
        return Plan(vm=vm.name)
    changes: list[HyperVChange] = []
    notes: list[str] = []
    _make_off(vm, stop, changes, notes, "its processor settings change")
    changes.append(
        _vm_change(
            "hide-virtualization-extensions",
            ("NV-V01",),
            vm.name,
            "Set-VMProcessor",
            {"ExposeVirtualizationExtensions": False},
            "hide VT-x/AMD-V from the VM again",
            needs_stop=True,
        )
    )
    notes.append("the change takes effect at the VM's next start")
    return Plan(vm=vm.name, changes=tuple(changes), notes=tuple(notes))


def plan_json(plan: Plan, *, applied: bool = False) -> dict[str, Any]:
    """The `nestvirt.plan/1` document for `enable --dry-run --json`."""
    return plan_document(plan.vm, plan.changes, applied=applied)


def _guest_credentials(given: tuple[str, str] | None) -> tuple[str, str]:
    if given:
        return given
    user = os.environ.get(ENV_GUEST_USER)
    password = os.environ.get(ENV_GUEST_PASSWORD)
    if user and password is not None:
        return user, password
    if not sys.stdin.isatty():
        raise UsageError(
            f"installing Hyper-V in the VM needs the guest's credentials: set {ENV_GUEST_USER} "
            f"and {ENV_GUEST_PASSWORD}, or run on a terminal"
        )
    import getpass

    user = user or input("Guest user (for PowerShell Direct): ")
    return user, getpass.getpass(f"Password for {user} in the VM: ")


GUEST_TIMEOUT = 600.0  # seconds PowerShell Direct may take to answer (a booting guest)
GUEST_RETRY = 5.0
_CREDENTIAL_ERRORS = re.compile(
    r"(?i)credential is invalid|user name or password is incorrect|logon failure|"
    r"InvalidCredential|password is incorrect"
)


@dataclass
class GuestClock:
    """Time for the PowerShell Direct retries; tests pass one that does not sleep."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _guest(
    transport: Transport,
    script: str,
    vm_id: str,
    credentials: tuple[str, str],
    clock: GuestClock,
    doing: str,
    *,
    ready: Callable[[dict[str, Any]], bool] = lambda _answer: True,
) -> dict[str, Any]:
    """Run a PowerShell Direct script until the guest answers (and `ready`), or fail.

    A wrong user or password fails at once (PermissionRequired): retrying cannot
    help. Anything else (the guest still booting, its session broken by a
    restart) is retried every GUEST_RETRY seconds until GUEST_TIMEOUT.
    """
    user, password = credentials
    deadline = clock.now() + GUEST_TIMEOUT
    while True:
        answer = transport.run_script(script, {"vm_id": vm_id, "user": user, "password": password})
        if not isinstance(answer, dict):
            raise PowerShellError(f"{doing}: unexpected answer from PowerShell Direct")
        if answer.get("ok") and ready(answer):
            return answer
        error = one_line(str(answer.get("error") or "the guest is not ready yet"))
        if _CREDENTIAL_ERRORS.search(f"{error} {answer.get('error_id') or ''}"):
            raise PermissionRequired(
                f"{doing}: the guest refused the credentials of {user!r} ({error}); "
                f"check {ENV_GUEST_USER} / {ENV_GUEST_PASSWORD}"
            )
        if clock.now() >= deadline:
            raise PowerShellError(f"{doing}: no answer within {GUEST_TIMEOUT:.0f} s ({error})")
        clock.sleep(GUEST_RETRY)


def _run_change(
    transport: Transport,
    vm_id: str,
    change: HyperVChange,
    guest_credentials: tuple[str, str] | None,
    clock: GuestClock | None = None,
) -> None:
    clock = clock or GuestClock()
    if change.script == "install-hypervisor":
        creds = _guest_credentials(guest_credentials)
        _guest(transport, hyperv_ps.INSTALL_HYPERVISOR_SCRIPT, vm_id, creds, clock, "install")
        view = _guest(transport, hyperv_ps.GUEST_CHECK_SCRIPT, vm_id, creds, clock, "check")
        if view.get("HyperVFeatureState") not in ("Enabled", "EnablePending"):
            raise PowerShellError(
                "Hyper-V is not installed in the guest after the install step (the guest "
                f"reports {view.get('HyperVFeatureState')!r})"
            )
    elif change.script == "restart-guest":
        creds = _guest_credentials(guest_credentials)
        _guest(transport, hyperv_ps.RESTART_GUEST_SCRIPT, vm_id, creds, clock, "restart")
        _guest(
            transport,
            hyperv_ps.GUEST_CHECK_SCRIPT,
            vm_id,
            creds,
            clock,
            "the check after the restart (the guest's hypervisor must run)",
            ready=lambda a: bool(a.get("HypervisorRunning")),
        )
    elif change.script == "adapter-spoofing":
        args = dict(change.script_args)
        transport.run_script(hyperv_ps.ADAPTER_SPOOFING_SCRIPT, {"vm_id": vm_id, **args})
    elif change.cmdlet:
        transport.run_cmdlet(vm_id, change.cmdlet, dict(change.parameters))
    else:
        raise AssertionError(f"change {change.action} has nothing to run")


def settings_of(vm: HyperVVmFacts) -> dict[str, Any]:
    """The settings enable, disable and undo change, as the undo record keeps them."""
    return {
        "ExposeVirtualizationExtensions": vm.expose_virtualization_extensions,
        "DynamicMemoryEnabled": vm.dynamic_memory_enabled,
        "StartupBytes": vm.startup_bytes,
        "Adapters": [
            {"Name": a.name, "Id": a.adapter_id, "MacAddressSpoofing": a.mac_address_spoofing}
            for a in vm.adapters
        ],
    }


def _before(vm: HyperVVmFacts) -> dict[str, Any]:
    return {"State": vm.state, **settings_of(vm)}


def _changes_of(plan: Plan) -> list[HyperVChange]:
    out = []
    for c in plan.changes:
        if not isinstance(c, HyperVChange):
            raise TypeError(f"not a Hyper-V plan: change {c.action!r} cannot be run")
        out.append(c)
    return out


def apply_plan(
    transport: Transport,
    plan: Plan,
    *,
    journal: Callable[[dict[str, Any]], None] | None = None,
    guest_credentials: tuple[str, str] | None = None,
    progress: Callable[[HyperVChange], None] | None = None,
    clock: GuestClock | None = None,
) -> dict[str, Any]:
    """Run a plan from `plan_enable`, change by change; return the undo record.

    Re-reads the VM first (it must still be the one VM of that name, with an
    Id, and a VM the plan does not stop must still be off when the plan needs
    it off). `journal(record)` is called before the first change and after
    each one, so an interrupted apply can be undone; the record
    (`nestvirt.hyperv-undo/1`) holds the previous values. A failing cmdlet
    raises PowerShellError naming the step and what was already applied.
    """
    changes = _changes_of(plan)
    snap = read_facts(transport, [plan.vm])
    vm = select_one(snap, plan.vm)
    if not vm.vm_id:
        raise UsageError(f"VM {vm.name!r}: Hyper-V gave no VM Id; cannot address it safely")
    makes_off = any(c.action in ("stop-vm", "remove-saved-state") for c in changes)
    if any(c.needs_stop for c in changes) and not vm.is_off and not makes_off:
        raise UsageError(
            f"VM {vm.name!r} is now {vm.state_word} (it was off when planned): stop it first "
            "or pass --stop"
        )
    record: dict[str, Any] = {
        "schema": UNDO_SCHEMA,
        "host": transport.label,
        "vm": vm.name,
        "vm_id": vm.vm_id,
        "before": _before(vm),
        "applied": [],
    }
    if journal:
        journal(record)
    for i, change in enumerate(changes, 1):
        if progress:
            progress(change)
        try:
            _run_change(transport, vm.vm_id, change, guest_credentials, clock)
        except PowerShellError as exc:
            done = ", ".join(record["applied"]) or "nothing"
            raise PowerShellError(
                f"step {i} ({change.action}) failed: {exc} — applied before it: {done}"
            ) from None
        record["applied"].append(change.action)
        if journal:
            journal(record)
    return record


def _check_record(record: Mapping[str, Any]) -> None:
    if not isinstance(record, Mapping) or record.get("schema") != UNDO_SCHEMA:
        raise UsageError(f"not a Hyper-V undo record (expected schema {UNDO_SCHEMA!r})")
    for key in ("vm", "vm_id", "before", "applied"):
        if key not in record:
            raise UsageError(f"Hyper-V undo record: {key!r} missing")


def plan_undo(record: Mapping[str, Any], vm: HyperVVmFacts, *, stop: bool = False) -> Plan:
    """Pure: the changes that restore the values `record` kept, for `vm` as it is now.

    Restores ExposeVirtualizationExtensions, DynamicMemoryEnabled, StartupBytes
    and each adapter's MacAddressSpoofing where enable (or disable) changed them and the
    value now differs. A removed saved state, a stop, or Hyper-V installed in
    the guest cannot be undone: the plan's notes say so.
    """
    _check_record(record)
    before, applied = record["before"], set(record["applied"])
    name = vm.name
    changes: list[HyperVChange] = []
    notes: list[str] = []
    if (
        applied & {"expose-virtualization-extensions", "hide-virtualization-extensions"}
        and vm.expose_virtualization_extensions != before["ExposeVirtualizationExtensions"]
    ):
        changes.append(
            _vm_change(
                "restore-virtualization-extensions",
                ("NV-V01",),
                name,
                "Set-VMProcessor",
                {"ExposeVirtualizationExtensions": bool(before["ExposeVirtualizationExtensions"])},
                "restore ExposeVirtualizationExtensions",
                needs_stop=True,
            )
        )
    if (
        "disable-dynamic-memory" in applied
        and vm.dynamic_memory_enabled != before["DynamicMemoryEnabled"]
    ):
        changes.append(
            _vm_change(
                "restore-dynamic-memory",
                ("NV-V02",),
                name,
                "Set-VMMemory",
                {"DynamicMemoryEnabled": bool(before["DynamicMemoryEnabled"])},
                "restore DynamicMemoryEnabled",
                needs_stop=True,
            )
        )
    if "set-startup-memory" in applied and vm.startup_bytes != before["StartupBytes"]:
        changes.append(
            _vm_change(
                "restore-startup-memory",
                ("NV-V03",),
                name,
                "Set-VMMemory",
                {"StartupBytes": int(before["StartupBytes"])},
                f"restore startup memory to {int(before['StartupBytes']) / GIB:g} GiB",
                needs_stop=True,
            )
        )
    if "enable-mac-spoofing" in applied:
        now = {a.adapter_id: a.mac_address_spoofing for a in vm.adapters}
        was_off = [
            a
            for a in before["Adapters"]
            if a["MacAddressSpoofing"] != "On" and now.get(a["Id"]) == "On"
        ]
        if was_off:
            ids = [a["Id"] for a in was_off]
            if None in ids:
                raise UsageError(f"VM {name!r}: the journal lacks adapter Ids; cannot undo")
            shown = "; ".join(
                f"Get-VMNetworkAdapter -VMName {ps_quote(name)} | Where-Object Id -eq "
                f"{ps_quote(a['Id'])} | Set-VMNetworkAdapter -MacAddressSpoofing "
                f"{a['MacAddressSpoofing']}"
                for a in was_off
            )
            changes.append(
                HyperVChange(
                    action="restore-mac-spoofing",
                    codes=("NV-V04",),
                    command=shown,
                    summary="turn MAC address spoofing off again on the adapters nestvirt changed",
                    script="adapter-spoofing",
                    script_args=(("adapter_ids", tuple(ids)), ("value", "Off")),
                )
            )
    if any(c.needs_stop for c in changes) and not vm.is_off:
        if not stop:
            raise UsageError(
                f"VM {name!r} is {vm.state_word}: undo changes settings that need it off; "
                "stop it first or pass --stop"
            )
        changes.insert(0, _stop_vm_change(name, "shut the VM down"))
    if "remove-saved-state" in applied:
        notes.append("the saved state enable discarded cannot be restored")
    if "install-hypervisor" in applied:
        notes.append("Hyper-V installed inside the VM stays installed")
    return Plan(vm=name, changes=tuple(changes), notes=tuple(notes))


def undo(
    transport: Transport,
    record: Mapping[str, Any],
    *,
    stop: bool = False,
    dry_run: bool = False,
) -> Plan:
    """Restore what `apply_plan` changed (its journaled record); return the plan run.

    The VM is found again by its Id, so a renamed VM is still the right one.
    """
    _check_record(record)
    snap = read_facts(transport, [])
    matches = [vm for vm in snap.vms if vm.vm_id == record["vm_id"]]
    if not matches:
        raise NotFound(f"VM {record['vm']!r} ({record['vm_id']}) no longer exists")
    vm = matches[0]
    plan = plan_undo(record, vm, stop=stop)
    if not dry_run:
        for change in _changes_of(plan):
            _run_change(transport, str(record["vm_id"]), change, None)
    return plan


__all__ = [
    "ENV_GUEST_PASSWORD",
    "ENV_GUEST_USER",
    "ENV_PASSWORD",
    "ENV_USER",
    "GuestClock",
    "HyperVChange",
    "LocalTransport",
    "PowerShellError",
    "RemoteTransport",
    "SnapshotTransport",
    "Transport",
    "apply_plan",
    "collect_snapshot",
    "open_transport",
    "plan_disable",
    "plan_enable",
    "plan_json",
    "plan_undo",
    "read_facts",
    "report_from_snapshot",
    "select_one",
    "settings_of",
    "status_report",
    "undo",
    "write_atomic",
]
