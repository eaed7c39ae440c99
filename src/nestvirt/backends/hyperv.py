"""The Hyper-V backend: I/O only — read facts, collect snapshots, run changes.

Facts come from one of three transports (backends/hyperv_transport.py) as a
`nestvirt.hyperv-snapshot/1` document. What to change is decided elsewhere:
the plan (nestvirt.plan_hyperv, pure) says which cmdlets, the flow
(nestvirt.enable_hyperv) judges, journals and confirms. `apply_plan` is the
only code that changes a VM, one cmdlet or fixed script at a time, the VM
chosen by its Id, every value a parameter.

    status:  t = open_transport(host=…, snapshot=…); snap = read_facts(t, [names])
             (nestvirt.platforms.hyperv judges it into a StatusReport)
    enable:  t = open_transport(host=…, snapshot=…)
             snap = read_facts(t, [vm]); vm = select_one(snap, name)
             plan = plan_hyperv.plan_enable(vm, snap.host, findings, …)
             apply_plan(t, plan, done=…)   # after confirmation; the flow journals
    collect: collect_snapshot(host=…, output=…)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestvirt.backends import hyperv_ps
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
    HyperVHostFacts,
    HyperVSnapshot,
    HyperVVmFacts,
    load_snapshot,
    parse_snapshot,
)
from nestvirt.model import Plan, to_jsonable
from nestvirt.plan_hyperv import REMOVE_SAVED_STATE, STOP, HyperVChange

# The guest's credentials for PowerShell Direct (read by nestvirt.enable_hyperv.guest_credentials)
ENV_GUEST_USER = "NESTVIRT_GUEST_USER"
ENV_GUEST_PASSWORD = "NESTVIRT_GUEST_PASSWORD"


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


def select_by_id(snap: HyperVSnapshot, vm_id: str, name: str) -> HyperVVmFacts:
    """The VM whose Id is `vm_id` (a renamed VM is still the right one); NotFound if gone."""
    for vm in snap.vms:
        if vm.vm_id == vm_id:
            return vm
    raise NotFound(f"VM {name!r} ({vm_id}) no longer exists")


def host_facts_json(host: HyperVHostFacts) -> dict[str, Any]:
    facts: dict[str, Any] = to_jsonable(host)
    facts["cpu_vendor"] = to_jsonable(host.cpu_vendor)
    return facts


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
# Run changes


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


def run_change(
    transport: Transport,
    vm_id: str,
    change: HyperVChange,
    guest_credentials: tuple[str, str] | None,
    clock: GuestClock | None = None,
) -> None:
    """Run one change on the VM with Id `vm_id`: its cmdlet, or its fixed script.

    Guest steps (install-hypervisor, restart-guest) talk to the guest over
    PowerShell Direct with `guest_credentials` (user, password), which the
    caller gathered (nestvirt.enable_hyperv.guest_credentials).
    """
    clock = clock or GuestClock()
    if change.script == "install-hypervisor":
        creds = _need_credentials(guest_credentials)
        _guest(transport, hyperv_ps.INSTALL_HYPERVISOR_SCRIPT, vm_id, creds, clock, "install")
        view = _guest(transport, hyperv_ps.GUEST_CHECK_SCRIPT, vm_id, creds, clock, "check")
        if view.get("HyperVFeatureState") not in ("Enabled", "EnablePending"):
            raise PowerShellError(
                "Hyper-V is not installed in the guest after the install step (the guest "
                f"reports {view.get('HyperVFeatureState')!r})"
            )
    elif change.script == "restart-guest":
        creds = _need_credentials(guest_credentials)
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


def _need_credentials(given: tuple[str, str] | None) -> tuple[str, str]:
    if given:
        return given
    raise UsageError(
        f"installing Hyper-V in the VM needs the guest's credentials: set {ENV_GUEST_USER} "
        f"and {ENV_GUEST_PASSWORD}, or run on a terminal (nestvirt.enable_hyperv."
        "guest_credentials asks for them)"
    )


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
    done: Callable[[HyperVChange], None] | None = None,
    guest_credentials: tuple[str, str] | None = None,
    progress: Callable[[HyperVChange], None] | None = None,
    clock: GuestClock | None = None,
    vm_id: str | None = None,
) -> list[str]:
    """Run a plan of nestvirt.plan_hyperv, change by change; return the actions applied.

    Re-reads the VM first: by `vm_id` when given (undo: a renamed VM is still
    the one), else by the plan's VM name (it must still be the one VM of that
    name, with an Id). A VM the plan does not stop must still be off when the
    plan needs it off. `progress(change)` is called before each change,
    `done(change)` after it, so the caller's journal knows what was applied. A
    guest step (--install-hypervisor) needs `guest_credentials`; without them
    nothing runs. A failing cmdlet raises PowerShellError naming the step and
    what was already applied.
    """
    changes = _changes_of(plan)
    if guest_credentials is None and any(c.script in _GUEST_SCRIPTS for c in changes):
        _need_credentials(None)
    if vm_id is None:
        vm = select_one(read_facts(transport, [plan.vm]), plan.vm)
    else:
        vm = select_by_id(read_facts(transport, []), vm_id, plan.vm)
    if not vm.vm_id:
        raise UsageError(f"VM {vm.name!r}: Hyper-V gave no VM Id; cannot address it safely")
    makes_off = any(c.action in (STOP, REMOVE_SAVED_STATE) for c in changes)
    if any(c.needs_stop for c in changes) and not vm.is_off and not makes_off:
        raise UsageError(
            f"VM {vm.name!r} is now {vm.state_word} (it was off when planned): stop it first "
            "or pass --stop"
        )
    applied: list[str] = []
    for i, change in enumerate(changes, 1):
        if progress:
            progress(change)
        try:
            run_change(transport, vm.vm_id, change, guest_credentials, clock)
        except PowerShellError as exc:
            before = ", ".join(applied) or "nothing"
            raise PowerShellError(
                f"step {i} ({change.action}) failed: {exc} — applied before it: {before}"
            ) from None
        applied.append(change.action)
        if done:
            done(change)
    return applied


_GUEST_SCRIPTS = ("install-hypervisor", "restart-guest")


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
    "read_facts",
    "run_change",
    "select_by_id",
    "select_one",
    "write_atomic",
]
