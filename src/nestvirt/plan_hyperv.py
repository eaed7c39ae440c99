"""Pure policy for Hyper-V: findings + HyperVVmFacts → Plan of cmdlet changes.

The Hyper-V counterpart of nestvirt.plan_libvirt. Nothing here touches a host:
the backend (nestvirt.backends.hyperv) reads the facts and runs the changes,
the flow (nestvirt.enable_hyperv) judges, journals and decides when.

What a Hyper-V "definition" is: Hyper-V has no document to redefine in one
step, so the definition the journal keeps (nestvirt.journal.Entry `before` /
`after`, the one journal format of nestvirt.enable) is the JSON of the settings
nestvirt changes (`settings_of`): ExposeVirtualizationExtensions,
DynamicMemoryEnabled, StartupBytes and each adapter's MacAddressSpoofing.

    plan_enable(vm, host, findings, stop=…, …)   Enable-NestedVm.ps1's steps, only what differs
    plan_disable(vm, stop=…)                     hide VT-x/AMD-V again
    plan_restore(before, vm, after=…, …)         put a journaled `before` back (undo, rollback)
    render_settings(definition, plan)            the settings a plan leaves (diff, verify)
    adopt_record(record)                         an old `nestvirt.hyperv-undo/1` record as
                                                 (before, after, actions) of the journal format

Every printed command is PowerShell quoted by nestvirt.commands (`render_command`,
`ps_quote`); what runs is the change's cmdlet and parameters, never that text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nestvirt.commands import Bare, ps_quote, render_command
from nestvirt.errors import UsageError
from nestvirt.facts.hyperv import GIB, HyperVHostFacts, HyperVVmFacts
from nestvirt.model import Change, Finding, Plan, Severity, plan_document
from nestvirt.rules.hyperv_table import is_preview_build

MEMORY_ALIGN = 2 * 1024 * 1024  # Hyper-V memory sizes are multiples of 2 MiB

# the actions of the changes below (the journal's `changes` name them)
STOP, START, REMOVE_SAVED_STATE = "stop-vm", "start-vm", "remove-saved-state"
EXPOSE, HIDE = "expose-virtualization-extensions", "hide-virtualization-extensions"
DISABLE_DYNAMIC, SET_STARTUP = "disable-dynamic-memory", "set-startup-memory"
ENABLE_SPOOFING = "enable-mac-spoofing"
INSTALL_HYPERVISOR, RESTART_VM = "install-hypervisor", "restart-vm"
# change the guest, not the settings: run after the settings, never rolled back
GUEST_ACTIONS = frozenset({INSTALL_HYPERVISOR, RESTART_VM})
# state changes whose finding codes say nothing about the settings
STATE_ACTIONS = frozenset({STOP, START, REMOVE_SAVED_STATE})

# the settings document's keys (`settings_of`)
EXPOSE_KEY, DYNAMIC_KEY, STARTUP_KEY, ADAPTERS_KEY = (
    "ExposeVirtualizationExtensions",
    "DynamicMemoryEnabled",
    "StartupBytes",
    "Adapters",
)

# the undo record of nestvirt before the one journal format (read by `adopt_record` only)
UNDO_SCHEMA = "nestvirt.hyperv-undo/1"


@dataclass(frozen=True, slots=True)
class HyperVChange(Change):
    """A Change that knows how to run itself: a cmdlet on `Get-VM -Id` or a fixed script.

    `command` (inherited) is the pasteable text; `cmdlet` + `parameters` is what
    runs, the VM chosen by its Id, every value a parameter.
    """

    cmdlet: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()
    script: str = ""  # a fixed script of nestvirt.backends.hyperv_ps instead of a cmdlet
    script_args: tuple[tuple[str, Any], ...] = ()


# ---------------------------------------------------------------------------
# Changes


def vm_change(
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
    """`cmdlet -VMName VM -Param value …` shown; the cmdlet and `parameters` run."""
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


def stop_vm_change(vm_name: str, summary: str) -> HyperVChange:
    """`Stop-VM -Name VM -Force` (NV-V07): the first change when a plan needs the VM off."""
    return vm_change(
        STOP, ("NV-V07",), vm_name, "Stop-VM", {"Force": None}, summary, name_param="Name"
    )


def start_vm_change(vm_name: str) -> HyperVChange:
    """`Start-VM -Name VM`: the last change of a plan that stopped a running VM (--stop)."""
    return HyperVChange(
        action=START,
        codes=("NV-V07",),
        command=f"Start-VM -Name {ps_quote(vm_name)}",
        summary="start the VM again",
        cmdlet="Start-VM",
    )


def check_memory(memory_bytes: int) -> None:
    """UsageError unless `memory_bytes` is a size Hyper-V takes (a positive multiple of 2 MiB)."""
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
            vm_change(
                REMOVE_SAVED_STATE,
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
            stop_vm_change(name, "shut the VM down (guest shutdown; turned off after 5 minutes)")
        )


# ---------------------------------------------------------------------------
# enable, disable


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
        check_memory(memory_bytes)
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
            vm_change(
                EXPOSE,
                ("NV-V01",),
                name,
                "Set-VMProcessor",
                {EXPOSE_KEY: True},
                "expose VT-x/AMD-V to the VM",
                needs_stop=True,
            )
        )
    if dynamic:
        changes.append(
            vm_change(
                DISABLE_DYNAMIC,
                ("NV-V02",),
                name,
                "Set-VMMemory",
                {DYNAMIC_KEY: False},
                "turn dynamic memory off (a VM that runs a hypervisor does not start with it)"
                if dynamic_blocks
                else "turn dynamic memory off (with Hyper-V inside, its memory would stay at "
                "Startup anyway)",
                needs_stop=True,
            )
        )
    if spoof:
        changes.append(
            vm_change(
                ENABLE_SPOOFING,
                ("NV-V04",),
                name,
                "Set-VMNetworkAdapter",
                {"MacAddressSpoofing": Bare("On")},
                "allow MAC address spoofing on every adapter (network for nested guests)",
            )
        )
    if memory and memory_bytes is not None:
        changes.append(
            vm_change(
                SET_STARTUP,
                ("NV-V03",) if memory_bytes >= 4 * GIB else (),
                name,
                "Set-VMMemory",
                {STARTUP_KEY: memory_bytes},
                f"set startup memory to {memory_bytes / GIB:g} GiB "
                f"(was {vm.startup_bytes / GIB:g} GiB)",
                needs_stop=True,
            )
        )
    if install_hypervisor:
        changes.extend(_guest_steps(vm, changes, notes, restart))
    fixed = {code for c in changes for code in c.codes}
    unfixable = tuple(f for f in findings if f.severity is Severity.ERROR and f.code not in fixed)
    if any(c.needs_stop for c in changes):
        notes.append("the changes take effect at the VM's next start")
    return Plan(vm=name, changes=tuple(changes), notes=tuple(notes), unfixable=unfixable)


def _guest_steps(
    vm: HyperVVmFacts, changes: Sequence[HyperVChange], notes: list[str], restart: bool
) -> list[HyperVChange]:
    """The page's step 3 inside the VM (PowerShell Direct), and its restart with `restart`."""
    name = vm.name
    will_be_off = vm.is_off or any(c.action in (STOP, REMOVE_SAVED_STATE) for c in changes)
    start = f"Start-VM -Name {ps_quote(name)}; " if will_be_off else ""
    direct = f"Invoke-Command -VMName {ps_quote(name)} -Credential (Get-Credential) -ScriptBlock"
    steps = [
        HyperVChange(
            action=INSTALL_HYPERVISOR,
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
    ]
    if restart:
        steps.append(
            HyperVChange(
                action=RESTART_VM,
                codes=(),
                command=f"{direct} {{ Restart-Computer -Force }}",
                summary="restart Windows inside the VM so its hypervisor starts, then "
                "check from inside that it runs",
                script="restart-guest",
            )
        )
    else:
        notes.append(f"restart VM {name!r} to finish installing Hyper-V inside it")
    return steps


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
        vm_change(
            HIDE,
            ("NV-V01",),
            vm.name,
            "Set-VMProcessor",
            {EXPOSE_KEY: False},
            "hide VT-x/AMD-V from the VM again",
            needs_stop=True,
        )
    )
    notes.append("the change takes effect at the VM's next start")
    return Plan(vm=vm.name, changes=tuple(changes), notes=tuple(notes))


def with_start_again(plan: Plan) -> Plan:
    """--stop: start the VM again after the changes (as on libvirt), unless a guest step does."""
    actions = {c.action for c in plan.changes}
    if STOP not in actions or actions & GUEST_ACTIONS:
        return plan
    return Plan(
        vm=plan.vm,
        changes=(*plan.changes, start_vm_change(plan.vm)),
        notes=plan.notes,
        unfixable=plan.unfixable,
    )


def plan_json(plan: Plan, *, applied: bool = False) -> dict[str, Any]:
    """The `nestvirt.plan/1` document for `enable --dry-run --json`."""
    return plan_document(plan.vm, plan.changes, applied=applied)


# ---------------------------------------------------------------------------
# The settings document: the journal's definition of a Hyper-V VM


def settings_of(vm: HyperVVmFacts) -> dict[str, Any]:
    """The settings enable, disable and undo change: what the journal keeps of a VM."""
    return {
        EXPOSE_KEY: vm.expose_virtualization_extensions,
        DYNAMIC_KEY: vm.dynamic_memory_enabled,
        STARTUP_KEY: vm.startup_bytes,
        ADAPTERS_KEY: [
            {"Name": a.name, "Id": a.adapter_id, "MacAddressSpoofing": a.mac_address_spoofing}
            for a in vm.adapters
        ],
    }


def definition_of(vm: HyperVVmFacts) -> str:
    """`settings_of` as the text the journal keeps and the diff shows."""
    return dump_settings(settings_of(vm))


def dump_settings(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def load_settings(definition: str, what: str = "the journal entry") -> dict[str, Any]:
    """A settings document from its text; UsageError when it is not one."""
    try:
        settings = json.loads(definition)
    except ValueError:
        settings = None
    if not isinstance(settings, dict) or not {EXPOSE_KEY, DYNAMIC_KEY, STARTUP_KEY} <= set(
        settings
    ):
        raise UsageError(f"{what} does not hold Hyper-V settings: cannot undo it here")
    return settings


def render_settings(definition: str, plan: Plan) -> str:
    """The settings document `plan` leaves, computed from `definition` (nothing run)."""
    settings = json.loads(definition)
    for change in plan.changes:
        if isinstance(change, HyperVChange):
            _simulate(settings, change)
    return dump_settings(settings)


def _wire(value: Any) -> Any:
    return value.text if isinstance(value, Bare) else value


def _simulate(settings: dict[str, Any], change: HyperVChange) -> None:
    """What `change` does to the settings document."""
    params = {name: _wire(value) for name, value in change.parameters}
    if change.cmdlet == "Set-VMProcessor" and EXPOSE_KEY in params:
        settings[EXPOSE_KEY] = params[EXPOSE_KEY]
    elif change.cmdlet == "Set-VMMemory":
        for key in (DYNAMIC_KEY, STARTUP_KEY):
            if key in params:
                settings[key] = params[key]
    elif change.cmdlet == "Set-VMNetworkAdapter" and "MacAddressSpoofing" in params:
        for adapter in settings.get(ADAPTERS_KEY, []):
            adapter["MacAddressSpoofing"] = params["MacAddressSpoofing"]
    elif change.script == "adapter-spoofing":
        args = dict(change.script_args)
        for adapter in settings.get(ADAPTERS_KEY, []):
            if adapter["Id"] in args["adapter_ids"]:
                adapter["MacAddressSpoofing"] = args["value"]


def _adapters(settings: Mapping[str, Any]) -> dict[Any, str]:
    return {a.get("Id"): a.get("MacAddressSpoofing") for a in settings.get(ADAPTERS_KEY, [])}


# ---------------------------------------------------------------------------
# Restore (undo, rollback)


def plan_restore(
    before: str,
    vm: HyperVVmFacts,
    *,
    after: str | None = None,
    actions: Sequence[str] = (),
    stop: bool = False,
) -> Plan:
    """Pure: the changes that put the journaled settings `before` back on `vm` as it is now.

    With `after` (the settings nestvirt's change left: the journal entry's
    `after`) only the settings that change touched are restored; without it,
    every setting of `before`. A setting already back at its `before` value is
    left alone, so restoring twice plans nothing. `actions` (the entry's
    `changes`) add the notes: a removed saved state and Hyper-V installed in
    the guest cannot be undone.
    """
    old = load_settings(before)
    new = load_settings(after) if after is not None else None
    name = vm.name
    now = settings_of(vm)
    changes: list[HyperVChange] = []
    notes: list[str] = []

    def touched(key: str) -> bool:
        return new is None or new.get(key) != old.get(key)

    if touched(EXPOSE_KEY) and now[EXPOSE_KEY] != old[EXPOSE_KEY]:
        changes.append(
            vm_change(
                "restore-virtualization-extensions",
                ("NV-V01",),
                name,
                "Set-VMProcessor",
                {EXPOSE_KEY: bool(old[EXPOSE_KEY])},
                "restore ExposeVirtualizationExtensions",
                needs_stop=True,
            )
        )
    if touched(DYNAMIC_KEY) and now[DYNAMIC_KEY] != old[DYNAMIC_KEY]:
        changes.append(
            vm_change(
                "restore-dynamic-memory",
                ("NV-V02",),
                name,
                "Set-VMMemory",
                {DYNAMIC_KEY: bool(old[DYNAMIC_KEY])},
                "restore DynamicMemoryEnabled",
                needs_stop=True,
            )
        )
    if touched(STARTUP_KEY) and now[STARTUP_KEY] != old[STARTUP_KEY]:
        changes.append(
            vm_change(
                "restore-startup-memory",
                ("NV-V03",),
                name,
                "Set-VMMemory",
                {STARTUP_KEY: int(old[STARTUP_KEY])},
                f"restore startup memory to {int(old[STARTUP_KEY]) / GIB:g} GiB",
                needs_stop=True,
            )
        )
    changes.extend(_restore_spoofing(name, old, new, now))
    if any(c.needs_stop for c in changes) and not vm.is_off:
        if not stop:
            raise UsageError(
                f"VM {name!r} is {vm.state_word}: undo changes settings that need it off; "
                "stop it first or pass --stop"
            )
        changes.insert(0, stop_vm_change(name, "shut the VM down"))
    if REMOVE_SAVED_STATE in actions:
        notes.append("the saved state enable discarded cannot be restored")
    if INSTALL_HYPERVISOR in actions:
        notes.append("Hyper-V installed inside the VM stays installed")
    return Plan(vm=name, changes=tuple(changes), notes=tuple(notes))


def _restore_spoofing(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any] | None, now: Mapping[str, Any]
) -> list[HyperVChange]:
    """MacAddressSpoofing back to its old value on each adapter nestvirt changed (by Id)."""
    was, left, current = _adapters(old), _adapters(new) if new is not None else None, _adapters(now)
    back = [
        (adapter_id, value)
        for adapter_id, value in was.items()
        if (left is None or left.get(adapter_id) != value)
        and adapter_id in current
        and current[adapter_id] != value
    ]
    if any(adapter_id is None for adapter_id, _value in back) or (
        None in was and left is not None and left.get(None) != was[None]
    ):
        raise UsageError(f"VM {name!r}: the journal lacks adapter Ids; cannot undo")
    changes = []
    for value in dict.fromkeys(v for _id, v in back):
        ids = tuple(str(i) for i, v in back if v == value)
        shown = "; ".join(
            f"Get-VMNetworkAdapter -VMName {ps_quote(name)} | Where-Object Id -eq "
            f"{ps_quote(i)} | Set-VMNetworkAdapter -MacAddressSpoofing {value}"
            for i in ids
        )
        changes.append(
            HyperVChange(
                action="restore-mac-spoofing",
                codes=("NV-V04",),
                command=shown,
                summary="turn MAC address spoofing off again on the adapters nestvirt changed"
                if value != "On"
                else "turn MAC address spoofing on again on the adapters nestvirt changed",
                script="adapter-spoofing",
                script_args=(("adapter_ids", ids), ("value", str(value))),
            )
        )
    return changes


def adopt_record(record: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """An old `nestvirt.hyperv-undo/1` record as (before, after, actions) of the journal.

    Those records (written by `apply_plan` of nestvirt before the one journal
    format) held the settings before and the actions applied; `after` is what
    those actions made of `before` (a new StartupBytes, which the record did
    not keep, is marked changed). Feed the result to `plan_restore`.
    """
    if not isinstance(record, Mapping) or record.get("schema") != UNDO_SCHEMA:
        raise UsageError(f"not a Hyper-V undo record (expected schema {UNDO_SCHEMA!r})")
    for key in ("vm", "vm_id", "before", "applied"):
        if key not in record:
            raise UsageError(f"Hyper-V undo record: {key!r} missing")
    before = {k: v for k, v in dict(record["before"]).items() if k != "State"}
    applied = tuple(str(a) for a in record["applied"])
    after = json.loads(json.dumps(before))
    if EXPOSE in applied:
        after[EXPOSE_KEY] = True
    if HIDE in applied:
        after[EXPOSE_KEY] = False
    if DISABLE_DYNAMIC in applied:
        after[DYNAMIC_KEY] = False
    if SET_STARTUP in applied:
        after[STARTUP_KEY] = None  # the record did not keep the new size
    if ENABLE_SPOOFING in applied:
        for adapter in after.get(ADAPTERS_KEY, []):
            adapter["MacAddressSpoofing"] = "On"
    return dump_settings(before), dump_settings(after), applied


__all__ = [
    "GUEST_ACTIONS",
    "MEMORY_ALIGN",
    "STATE_ACTIONS",
    "UNDO_SCHEMA",
    "HyperVChange",
    "adopt_record",
    "check_memory",
    "definition_of",
    "dump_settings",
    "load_settings",
    "plan_disable",
    "plan_enable",
    "plan_json",
    "plan_restore",
    "render_settings",
    "settings_of",
    "start_vm_change",
    "stop_vm_change",
    "vm_change",
    "with_start_again",
]
