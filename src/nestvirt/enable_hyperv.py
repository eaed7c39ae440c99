"""A Hyper-V VM as a `Subject` of the generic write flow in nestvirt.enable.

The flow (lock, journal, plan, confirm, dry run, apply, verify, rollback,
undo, history) is the libvirt one, unchanged. What differs is what a
"definition" is: Hyper-V has no document to redefine in one step, so the
definition here is the JSON of the settings nestvirt changes
(`hyperv.settings_of`: ExposeVirtualizationExtensions, DynamicMemoryEnabled,
StartupBytes, each adapter's MacAddressSpoofing), and a write is the plan's
cmdlets run one by one by `hyperv.apply_plan`, every value a parameter.

To keep the flow's promise that a failed write leaves the old definition, a
cmdlet that fails part-way has the settings already changed put back (the
backend's `undo` of the partial record) before the error is raised. Steps that
change the guest rather than the settings (`--install-hypervisor`,
`--restart`) run after the settings; their failure does not undo the settings
(they are journaled and `undo` restores them) but is reported in `failures`.

The journal entry's `before` is the settings document and its `changes` the
planned actions, which is all `hyperv.plan_undo` needs: it restores only what
differs now, so a planned-but-not-applied change restores nothing.

The lock and journal key is ("hyperv://<computer name>", VM Id): the same VM
reached locally, over Remoting or through a snapshot of that host shares one
lock and one history, and a renamed VM keeps both.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nestvirt import domxml
from nestvirt.backends import hyperv
from nestvirt.backends.hyperv import HyperVChange
from nestvirt.backends.hyperv_ps import ps_quote, wire_value
from nestvirt.backends.hyperv_transport import Transport
from nestvirt.enable import DISABLE, ENABLE, UNDO, Outcome, Snapshot
from nestvirt.errors import NestvirtError, NotFound, UsageError
from nestvirt.facts.hyperv import HyperVHostFacts, HyperVVmFacts
from nestvirt.journal import Entry
from nestvirt.model import Plan

READ_ONLY = "a snapshot is read-only: add --dry-run, or use --hyperv HOST"

# run by the flow's stop()/start(), not by write()
STOP, START = "stop-vm", "start-vm"
# change the guest, not the settings: after the settings, never rolled back
GUEST_ACTIONS = frozenset({"install-hypervisor", "restart-vm"})
# every settings change enable/disable make: what a full restore puts back
SETTINGS_ACTIONS = (
    "expose-virtualization-extensions",
    "disable-dynamic-memory",
    "set-startup-memory",
    "enable-mac-spoofing",
)
# state changes whose finding codes say nothing about the settings
STATE_ACTIONS = frozenset({STOP, START, "remove-saved-state"})


@dataclass(frozen=True, slots=True)
class HyperVOptions:
    """The options of `enable` (and `--stop` of disable/undo) for a Hyper-V VM."""

    stop: bool = False
    mac_spoofing: bool = False
    memory_bytes: int | None = None
    install_hypervisor: bool = False
    restart: bool = False


def definition_of(vm: HyperVVmFacts) -> str:
    """The settings nestvirt changes, as the text the journal keeps and the diff shows."""
    return json.dumps(hyperv.settings_of(vm), indent=2, ensure_ascii=False) + "\n"


class HyperVSubject:
    """A Hyper-V VM as a Subject. Opens the transport and finds the VM (and its Id) at once.

    `host`/`snapshot`/`user`/`password` as for `hyperv.open_transport` (both None:
    local PowerShell). A snapshot can only be planned (dry run), never written.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str | None = None,
        snapshot: str | None = None,
        user: str | None = None,
        password: str | None = None,
        options: HyperVOptions | None = None,
        dry_run: bool = False,
        progress: Callable[[str], None] = lambda _msg: None,
        transport: Transport | None = None,
    ) -> None:
        self.options = options or HyperVOptions()
        self.progress = progress
        self._host = host
        self.failures: list[str] = []  # guest steps that failed after the settings were stored
        self.transport = transport or hyperv.open_transport(
            host=host, snapshot=snapshot, user=user, password=password
        )
        self.read_only = isinstance(self.transport, hyperv.SnapshotTransport)
        self._stopped = False
        self._intended: str | None = None
        self._guest_credentials: tuple[str, str] | None = None
        try:
            snap = hyperv.read_facts(self.transport, [name])
            vm = hyperv.select_one(snap, name)
            if not dry_run and self.read_only:
                raise UsageError(READ_ONLY)
            if not dry_run and self.options.install_hypervisor:
                # ask (or fail for want of a terminal) now, before anything changes
                self._guest_credentials = hyperv._guest_credentials(None)
        except BaseException:
            self.close()
            raise
        self.name = vm.name
        self.vm_id = vm.vm_id
        self.uri = f"hyperv://{snap.host.name}"
        self.key = (self.uri, vm.vm_id or f"name:{vm.name}")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a session that already failed
            self.transport.close()

    def undo_command(self) -> str:
        """`nestvirt undo VM --hyperv [HOST]`, quoted for a POSIX shell (the flow's hints)."""
        import shlex

        where = f"--hyperv {shlex.quote(self._host)}" if self._host else "--hyperv"
        dashes = "-- " if self.name.startswith("-") else ""
        return f"nestvirt undo {where} {dashes}{shlex.quote(self.name)}"

    # ------------------------------------------------------------ reading

    def _read(self) -> tuple[HyperVVmFacts, HyperVHostFacts]:
        snap = hyperv.read_facts(self.transport, [self.name])
        if not self.vm_id:
            return hyperv.select_one(snap, self.name), snap.host
        for vm in snap.vms:
            if vm.vm_id == self.vm_id:
                return vm, snap.host
        raise NotFound(
            f"VM {self.name!r} ({self.vm_id}) is gone from {self.transport.label} or was "
            "renamed meanwhile: run the command again"
        )

    def _id(self) -> str:
        if not self.vm_id:
            raise UsageError(f"VM {self.name!r}: Hyper-V gave no VM Id; cannot address it safely")
        return self.vm_id

    def read(self) -> Snapshot:
        vm, host = self._read()
        findings = (*hyperv.host_findings(host), *hyperv.vm_findings(vm, host))
        running = not vm.is_off and not vm.is_saved
        return Snapshot(definition_of(vm), (vm, host), tuple(findings), running)

    # ------------------------------------------------------------ planning

    def plan(self, snap: Snapshot, action: str, undo: Entry | None) -> Plan:
        vm, host = snap.facts
        o = self.options
        if action == ENABLE:
            plan = hyperv.plan_enable(
                vm,
                host,
                snap.findings,
                stop=o.stop,
                mac_spoofing=o.mac_spoofing,
                memory_bytes=o.memory_bytes,
                install_hypervisor=o.install_hypervisor,
                restart=o.restart,
            )
        elif action == DISABLE:
            plan = hyperv.plan_disable(vm, stop=o.stop)
        elif action == UNDO and undo is not None:
            plan = hyperv.plan_undo(self._record(undo), vm, stop=o.stop)
        else:
            raise UsageError(f"unknown action {action!r}")
        return self._start_again(plan) if snap.running else plan

    def _record(self, entry: Entry) -> dict[str, Any]:
        """The backend's undo record for a journal entry of this subject."""
        try:
            before = json.loads(entry.before)
        except ValueError:
            before = None
        if not isinstance(before, dict):
            raise UsageError(
                f"journal entry #{entry.seq} does not hold Hyper-V settings: cannot undo it here"
            )
        return {
            "schema": hyperv.UNDO_SCHEMA,
            "host": self.uri,
            "vm": entry.subject,
            "vm_id": entry.uuid,
            "before": before,
            "applied": list(entry.changes),
        }

    def _start_again(self, plan: Plan) -> Plan:
        """--stop: start the VM again after the changes (as on libvirt), unless a step does."""
        actions = {c.action for c in plan.changes}
        if STOP not in actions or actions & GUEST_ACTIONS:
            return plan
        start = HyperVChange(
            action=START,
            codes=("NV-V07",),
            command=f"Start-VM -Name {ps_quote(plan.vm)}",
            summary="start the VM again",
            cmdlet="Start-VM",
        )
        return replace(plan, changes=(*plan.changes, start))

    def render(self, snap: Snapshot, plan: Plan) -> str:
        settings = json.loads(snap.definition)
        for change in plan.changes:
            if isinstance(change, HyperVChange):
                _simulate(settings, change)
        return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"

    def diff(self, before: str, after: str) -> str:
        return domxml.unified_diff(before, after, self.name, "current Hyper-V settings")

    # ------------------------------------------------------------ writing

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        """Stop-VM -Force (a guest shutdown; Hyper-V waits for it, `timeout` is not used)."""
        self.transport.run_cmdlet(self._id(), "Stop-VM", {"Force": None})
        self._stopped = True

    def start(self) -> None:
        vm, _host = self._read()
        if vm.is_off:  # a guest step may have started it already
            self.transport.run_cmdlet(self._id(), "Start-VM", {})

    def write(self, plan: Plan, definition: str) -> str:
        """Run the plan's cmdlets: the settings (all or, on failure, none), then guest steps."""
        self._id()
        self._intended = definition
        flow_runs = {START, STOP} if self._stopped else {START}
        changes = [c for c in plan.changes if c.action not in flow_runs]
        settings = [c for c in changes if c.action not in GUEST_ACTIONS]
        guest = [c for c in changes if c.action in GUEST_ACTIONS]
        if settings:
            self._apply_settings(replace(plan, changes=tuple(settings)))
        if guest:
            try:
                hyperv.apply_plan(
                    self.transport,
                    replace(plan, changes=tuple(guest)),
                    guest_credentials=self._guest_credentials,
                    progress=self._tell,
                )
            except NestvirtError as exc:
                self.failures.append(
                    f"{self.name}: the settings are changed (journaled; `undo` restores them), "
                    f"but {exc}"
                )
        return definition_of(self._read()[0])

    def _tell(self, change: HyperVChange) -> None:
        self.progress(f"{self.name}: {change.summary}")

    def _apply_settings(self, plan: Plan) -> None:
        record: dict[str, Any] = {}

        def keep(current: dict[str, Any]) -> None:
            record.update(current)

        try:
            hyperv.apply_plan(self.transport, plan, journal=keep, progress=self._tell)
        except NestvirtError as exc:
            if not record.get("applied"):
                raise
            try:
                hyperv.undo(self.transport, record)
            except NestvirtError as again:
                before = json.dumps(record["before"], ensure_ascii=False)
                raise NestvirtError(
                    f"{exc}; putting the previous settings back failed too ({again}); "
                    f"they were: {before}"
                ) from None
            raise type(exc)(f"{exc}; the settings it changed are put back") from None

    def restore(self, definition: str) -> str:
        record = {
            "schema": hyperv.UNDO_SCHEMA,
            "host": self.uri,
            "vm": self.name,
            "vm_id": self._id(),
            "before": json.loads(definition),
            "applied": list(SETTINGS_ACTIONS),
        }
        hyperv.undo(self.transport, record, stop=self.options.stop)
        return definition_of(self._read()[0])

    def verify(self, plan: Plan, action: str) -> str | None:
        vm, host = self._read()
        now = definition_of(vm)
        if self._intended is not None and now != self._intended:
            want, have = json.loads(self._intended), json.loads(now)
            lost = [key for key in want if want[key] != have.get(key)]
            return "Hyper-V did not keep " + ", ".join(lost)
        fired = {f.code for f in hyperv.vm_findings(vm, host)}
        if action == ENABLE:
            claimed = {
                code
                for c in plan.changes
                if c.action not in STATE_ACTIONS | GUEST_ACTIONS
                for code in c.codes
            }
            left = sorted(claimed & fired)
            if left:
                return f"{', '.join(left)} still fire(s) after the change"
        if action == DISABLE and "NV-V01" not in fired:
            return "VT-x/AMD-V are still exposed after disable"
        return None


def _simulate(settings: dict[str, Any], change: HyperVChange) -> None:
    """What `change` does to the settings document (for the diff and the check after)."""
    params = {name: wire_value(value) for name, value in change.parameters}
    if change.cmdlet == "Set-VMProcessor" and "ExposeVirtualizationExtensions" in params:
        settings["ExposeVirtualizationExtensions"] = params["ExposeVirtualizationExtensions"]
    elif change.cmdlet == "Set-VMMemory":
        for param, key in (
            ("DynamicMemoryEnabled", "DynamicMemoryEnabled"),
            ("StartupBytes", "StartupBytes"),
        ):
            if param in params:
                settings[key] = params[param]
    elif change.cmdlet == "Set-VMNetworkAdapter" and "MacAddressSpoofing" in params:
        for adapter in settings["Adapters"]:
            adapter["MacAddressSpoofing"] = params["MacAddressSpoofing"]
    elif change.script == "adapter-spoofing":
        args = dict(change.script_args)
        for adapter in settings["Adapters"]:
            if adapter["Id"] in args["adapter_ids"]:
                adapter["MacAddressSpoofing"] = args["value"]


def plan_document(outcome: Outcome) -> dict[str, Any]:
    """`--json` for Hyper-V: the backend's `nestvirt.plan/1` (commands pasteable PowerShell)."""
    return hyperv.plan_json(outcome.plan, applied=outcome.applied)


__all__ = ["READ_ONLY", "HyperVOptions", "HyperVSubject", "definition_of", "plan_document"]
