"""A Hyper-V VM as a `Subject` of the generic write flow in nestvirt.enable.

The flow (lock, journal, plan, confirm, dry run, apply, verify, rollback,
undo, history) is the libvirt one, unchanged, with its one journal format:
an Entry's `before` and `after` definitions. What differs is what a
"definition" is: Hyper-V has no document to redefine in one step, so the
definition here is the JSON of the settings nestvirt changes
(`plan_hyperv.settings_of`: ExposeVirtualizationExtensions, DynamicMemoryEnabled,
StartupBytes, each adapter's MacAddressSpoofing), and a write is the plan's
cmdlets (nestvirt.plan_hyperv, pure) run one by one by the backend's
`apply_plan`, every value a parameter.

This module judges (the rules run here, not in the backend) and asks for the
guest's credentials (`guest_credentials`) before anything changes.

To keep the flow's promise that a failed write leaves the old definition, a
cmdlet that fails part-way has the settings already changed put back
(`plan_hyperv.plan_restore` of the settings read before the write) before the
error is raised. Steps that change the guest rather than the settings
(`--install-hypervisor`, `--restart`) run after the settings; their failure does
not undo the settings (they are journaled and `undo` restores them) but is
reported in `failures`.

Undo restores the entry's `before` for the settings its change touched (those
that differ between `before` and `after`) and only where they differ now, so a
planned-but-not-applied change restores nothing. Journal entries written by
older nestvirt hold the same two documents and undo the same way; an undo
record of the older `nestvirt.hyperv-undo/1` format is read by
`plan_hyperv.adopt_record`.

The lock and journal key is ("hyperv://<computer name>", VM Id): the same VM
reached locally, over Remoting or through a snapshot of that host shares one
lock and one history, and a renamed VM keeps both.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nestvirt import domxml, rules
from nestvirt import plan_hyperv as ph
from nestvirt.backends import hyperv
from nestvirt.backends.hyperv import ENV_GUEST_PASSWORD, ENV_GUEST_USER
from nestvirt.backends.hyperv_transport import Transport
from nestvirt.enable import DISABLE, ENABLE, UNDO, Outcome, Snapshot
from nestvirt.errors import NestvirtError, NotFound, UsageError
from nestvirt.facts.hyperv import HyperVHostFacts, HyperVSnapshot, HyperVVmFacts
from nestvirt.journal import Entry
from nestvirt.model import Finding, Plan
from nestvirt.plan_hyperv import GUEST_ACTIONS, STATE_ACTIONS, HyperVChange

READ_ONLY = "a snapshot is read-only: add --dry-run, or use --hyperv HOST"

# run by the flow's stop()/start(), not by write()
STOP, START = ph.STOP, ph.START


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
    return ph.definition_of(vm)


def host_findings(host: HyperVHostFacts) -> list[Finding]:
    """The Hyper-V host rules (NV-H2x) over `host`."""
    return rules.run(rules.Target.HOST, rules.Platform.WINDOWS, host)


def vm_findings(vm: HyperVVmFacts, host: HyperVHostFacts) -> list[Finding]:
    """The Hyper-V VM rules (NV-V) over `vm` on `host`."""
    return rules.run(rules.Target.VM, rules.Platform.HYPERV, vm, host)


def guest_credentials(given: tuple[str, str] | None = None) -> tuple[str, str]:
    """The guest's (user, password) for PowerShell Direct (`--install-hypervisor`).

    `given` when set; else NESTVIRT_GUEST_USER and NESTVIRT_GUEST_PASSWORD from
    the environment (both set; an empty password counts); else asked for on the
    terminal (the password without echo). With neither variables nor a
    terminal: UsageError naming the variables. The flow asks before anything
    changes, and passes the answer to the backend's `apply_plan`.
    """
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
        self._last_read: str | None = None  # the settings as last read: a write's `before`
        self._guest_credentials: tuple[str, str] | None = None
        try:
            snap = self._facts(name)
            vm = hyperv.select_one(snap, name)
            if not dry_run and self.read_only:
                raise UsageError(READ_ONLY)
            if not dry_run and self.options.install_hypervisor:
                # ask (or fail for want of a terminal) now, before anything changes
                self._guest_credentials = guest_credentials()
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

    noun = "settings"  # what `undo` puts back (the flow's hints)

    def undo_command(self) -> str:
        """`nestvirt undo VM --hyperv [HOST]` as a shell reads it: `--hyperv` takes the next
        word as HOST, so VM goes first (a VM named like an option: `--hyperv HOST -- VM`)."""
        from nestvirt import commands

        host = commands.quote(self._host) if self._host else "''"
        if self.name.startswith("-"):
            return commands.nestvirt("undo", self.name, "--hyperv", host)
        where = f"--hyperv {host}" if self._host else "--hyperv"
        return f"nestvirt undo {commands.quote(self.name)} {where}"

    def plan_json(self, outcome: Outcome) -> dict[str, Any]:
        """`--json`: the plan with its commands as pasteable PowerShell (plan_document)."""
        return plan_document(outcome)

    # ------------------------------------------------------------ reading

    def _facts(self, name: str) -> HyperVSnapshot:
        """The facts of the host and VM `name`, knowing how the user reached the host (the
        findings' fixes name it: `--hyperv HOST`, the snapshot's host, `--hyperv ''`)."""
        snap = hyperv.read_facts(self.transport, [name])
        return snap.reached_through(host=self._host, from_snapshot=self.read_only)

    def _read(self) -> tuple[HyperVVmFacts, HyperVHostFacts]:
        snap = self._facts(self.name)
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
        findings = (*host_findings(host), *vm_findings(vm, host))
        running = not vm.is_off and not vm.is_saved
        self._last_read = definition_of(vm)
        return Snapshot(self._last_read, (vm, host), tuple(findings), running)

    # ------------------------------------------------------------ planning

    def plan(self, snap: Snapshot, action: str, undo: Entry | None) -> Plan:
        vm, host = snap.facts
        o = self.options
        if action == ENABLE:
            plan = ph.plan_enable(
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
            plan = ph.plan_disable(vm, stop=o.stop)
        elif action == UNDO and undo is not None:
            ph.load_settings(undo.before, f"journal entry #{undo.seq}")
            plan = ph.plan_restore(
                undo.before, vm, after=undo.after, actions=undo.changes, stop=o.stop
            )
        else:
            raise UsageError(f"unknown action {action!r}")
        return ph.with_start_again(plan) if snap.running else plan

    def render(self, snap: Snapshot, plan: Plan) -> str:
        return ph.render_settings(snap.definition, plan)

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
        before = self._last_read or definition_of(self._read()[0])
        applied: list[str] = []
        try:
            hyperv.apply_plan(
                self.transport, plan, done=lambda c: applied.append(c.action), progress=self._tell
            )
        except NestvirtError as exc:
            if not applied:
                raise
            try:
                self._put_back(before, stop=False)
            except NestvirtError as again:
                shown = json.dumps(json.loads(before), ensure_ascii=False)
                raise NestvirtError(
                    f"{exc}; putting the previous settings back failed too ({again}); "
                    f"they were: {shown}"
                ) from None
            raise type(exc)(f"{exc}; the settings it changed are put back") from None

    def _put_back(self, definition: str, *, stop: bool) -> None:
        """Restore every setting of `definition` that differs now (by the VM's Id)."""
        vm, _host = self._read()
        plan = ph.plan_restore(definition, vm, stop=stop)
        if not plan.empty:
            hyperv.apply_plan(self.transport, plan, vm_id=self._id())

    def restore(self, definition: str) -> str:
        self._put_back(definition, stop=self.options.stop)
        return definition_of(self._read()[0])

    def verify(self, plan: Plan, action: str) -> str | None:
        vm, host = self._read()
        now = definition_of(vm)
        if self._intended is not None and now != self._intended:
            want, have = json.loads(self._intended), json.loads(now)
            lost = [key for key in want if want[key] != have.get(key)]
            return "Hyper-V did not keep " + ", ".join(lost)
        fired = {f.code for f in vm_findings(vm, host)}
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


def plan_document(outcome: Outcome) -> dict[str, Any]:
    """`--json` for Hyper-V: the backend's `nestvirt.plan/1` (commands pasteable PowerShell)."""
    return ph.plan_json(outcome.plan, applied=outcome.applied)


__all__ = [
    "READ_ONLY",
    "HyperVOptions",
    "HyperVSubject",
    "definition_of",
    "guest_credentials",
    "host_findings",
    "plan_document",
    "vm_findings",
]
