"""`nestvirt host enable`: persist nested=1 for the KVM vendor module, give /dev/kvm to group kvm.

read_state() gathers what it needs (paths injectable, for tests); build_host_plan()
is pure; apply_host_plan() writes, each file atomically, and verifies.

- NV-H04: `options kvm_intel nested=1` (or kvm_amd, by CPU vendor) in
  /etc/modprobe.d/nestvirt-kvm.conf; the module is reloaded only when no process
  holds /dev/kvm open (no VM runs), otherwise the plan says what to run later.
  A vendor module without a `nested` parameter (e.g. kvm_pvm) cannot be
  configured: nothing is written, the plan says so.
- NV-H09: /dev/kvm group kvm, group read+write (0660 from 0600), at once; plus
  the udev rule distributions ship (KERNEL=="kvm", GROUP="kvm", MODE="0660") in
  /etc/udev/rules.d/65-nestvirt-kvm.rules where udev is installed, so it holds
  after a reboot. Without udev, the plan says the fix lasts until the next boot.

The previous contents of every file and the old owner/mode of /dev/kvm go to the
host journal (`nestvirt history --host` is not built; there is no `host undo` yet).
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nestvirt.errors import CannotFix, NestvirtError, PermissionRequired
from nestvirt.model import Change, Plan
from nestvirt.vocabulary import KVM_MODULE_OF_VENDOR

MODPROBE_FILE = "nestvirt-kvm.conf"
UDEV_FILE = "65-nestvirt-kvm.rules"
UDEV_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0660"\n'
KVM_GROUP = "kvm"
VENDOR_MODULE = KVM_MODULE_OF_VENDOR
ON_VALUES = ("Y", "y", "1")

WRITE_MODPROBE = "write-modprobe-conf"
RELOAD_MODULE = "reload-module"
KVM_PERMISSIONS = "kvm-device-permissions"
WRITE_UDEV = "write-udev-rule"


@dataclass(frozen=True, slots=True)
class HostPaths:
    modprobe_d: Path = Path("/etc/modprobe.d")
    udev_rules_d: Path = Path("/etc/udev/rules.d")
    udev_control: Path = Path("/run/udev/control")
    kvm_device: Path = Path("/dev/kvm")
    sys_module: Path = Path("/sys/module")
    cpuinfo: Path = Path("/proc/cpuinfo")
    proc: Path = Path("/proc")


@dataclass(frozen=True, slots=True)
class HostState:
    cpu_vendor: str | None  # vendor_id
    loaded_vendor_modules: tuple[str, ...]
    nested: dict[str, str | None]  # module -> raw parameter (None: the module has none)
    modprobe_conf: str | None  # current contents of our modprobe.d file
    kvm_exists: bool
    kvm_group: str | None
    kvm_mode: int | None
    kvm_group_exists: bool
    udev_installed: bool  # /etc/udev/rules.d exists
    udev_running: bool
    udev_rule: str | None  # current contents of our rule file
    kvm_users: tuple[int, ...] = ()  # pids holding /dev/kvm open
    modprobe_available: bool = True


@dataclass(frozen=True, slots=True)
class HostChange(Change):
    path: Path | None = None
    content: str | None = None
    module: str | None = None


@dataclass(slots=True)
class HostOutcome:
    plan: Plan
    applied: bool = False
    messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "schema": "nestvirt.host-plan/1",
            "changes": [{**c.to_json(), "summary": c.summary} for c in self.plan.changes],
            "notes": list(self.plan.notes),
            "applied": self.applied,
            "changed": self.applied and not self.plan.empty,
            "messages": list(self.messages),
        }


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _vendor(cpuinfo: Path) -> str | None:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def kvm_users(proc: Path, device: Path) -> tuple[int, ...]:
    """Processes with `device` open (VMs): any of them blocks a module reload."""
    target = str(device)
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == target:
                    found.append(int(entry.name))
                    break
        except OSError:  # gone, or not ours to read
            continue
    return tuple(sorted(found))


def read_state(paths: HostPaths | None = None) -> HostState:
    p = paths or HostPaths()
    modules = tuple(
        sorted(
            d.name
            for d in (p.sys_module.iterdir() if p.sys_module.is_dir() else ())
            if d.name.startswith("kvm_") and d.name != "kvm_common"
        )
    )
    nested = {m: (_read(p.sys_module / m / "parameters" / "nested") or "").strip() or None
              for m in modules}  # fmt: skip
    try:
        st = p.kvm_device.stat()
        exists, mode = True, stat.S_IMODE(st.st_mode)
        try:
            group: str | None = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
    except FileNotFoundError:
        exists, mode, group = False, None, None
    try:
        grp.getgrnam(KVM_GROUP)
        group_exists = True
    except KeyError:
        group_exists = False
    return HostState(
        cpu_vendor=_vendor(p.cpuinfo),
        loaded_vendor_modules=modules,
        nested=nested,
        modprobe_conf=_read(p.modprobe_d / MODPROBE_FILE),
        kvm_exists=exists,
        kvm_group=group,
        kvm_mode=mode,
        kvm_group_exists=group_exists,
        udev_installed=p.udev_rules_d.is_dir(),
        udev_running=p.udev_control.exists(),
        udev_rule=_read(p.udev_rules_d / UDEV_FILE),
        kvm_users=kvm_users(p.proc, p.kvm_device) if exists else (),
        modprobe_available=shutil.which("modprobe") is not None,
    )


def modprobe_conf(module: str) -> str:
    return (
        "# Written by `nestvirt host enable`: let KVM guests run their own hypervisor.\n"
        f"options {module} nested=1\n"
    )


def build_host_plan(state: HostState, paths: HostPaths | None = None) -> Plan:
    p = paths or HostPaths()
    changes: list[HostChange] = []
    notes: list[str] = []
    _nested(state, p, changes, notes)
    _kvm_device(state, p, changes, notes)
    return Plan(vm="host", changes=tuple(changes), notes=tuple(notes))


def _nested(state: HostState, p: HostPaths, changes: list[HostChange], notes: list[str]) -> None:
    wanted = VENDOR_MODULE.get(state.cpu_vendor or "")
    loaded = state.loaded_vendor_modules
    others = [m for m in loaded if m not in VENDOR_MODULE.values()]
    if wanted is None:
        notes.append(f"CPU vendor {state.cpu_vendor or 'unknown'}: no kvm_intel/kvm_amd to "
                     "configure")  # fmt: skip
        return
    if wanted not in loaded and others:
        for module in others:
            if state.nested.get(module) is None:
                notes.append(
                    f"the KVM vendor module here is {module}, which has no `nested` parameter: "
                    "nested virtualization cannot be configured for it, so nestvirt writes no "
                    f"modprobe.d file (guests can still emulate svm under TCG)"
                )
            else:
                notes.append(
                    f"{module} serves /dev/kvm; its nested parameter is "
                    f"{state.nested[module]}; nestvirt only configures {wanted}"
                )
        return
    current = state.nested.get(wanted)
    is_on = current in ON_VALUES
    target = p.modprobe_d / MODPROBE_FILE
    content = modprobe_conf(wanted)
    if wanted in loaded and current is None:
        notes.append(f"{wanted} has no `nested` parameter here: nothing to configure")
        return
    if is_on and state.modprobe_conf in (None, content):
        return
    if state.modprobe_conf != content:
        changes.append(HostChange(
            action=WRITE_MODPROBE, codes=("NV-H04",), summary=f"write {target}: "
            f"`options {wanted} nested=1` (nested stays on across reboots)",
            command=f"echo 'options {wanted} nested=1' > {target}", path=target,
            content=content, module=wanted))  # fmt: skip
    if wanted not in loaded or is_on:
        return
    if state.kvm_users:
        notes.append(
            f"{len(state.kvm_users)} process(es) use /dev/kvm (pids "
            f"{', '.join(map(str, state.kvm_users[:8]))}): {wanted} is not reloaded now. Stop "
            f"every VM, then run: modprobe -r {wanted} && modprobe {wanted}"
        )
    elif not state.modprobe_available:
        notes.append(f"no modprobe here: reload {wanted} yourself (or reboot) to turn nested on")
    else:
        changes.append(HostChange(
            action=RELOAD_MODULE, codes=("NV-H04",),
            summary=f"reload {wanted} (no VM runs) so nested=1 takes effect now",
            command=f"modprobe -r {wanted} && modprobe {wanted}", module=wanted))  # fmt: skip


def _kvm_device(
    state: HostState, p: HostPaths, changes: list[HostChange], notes: list[str]
) -> None:
    if not state.kvm_exists or state.kvm_mode is None:
        notes.append(f"{p.kvm_device} does not exist: load the KVM module first (NV-H05)")
        return
    if not state.kvm_group_exists:
        notes.append(f"no group {KVM_GROUP!r}: {p.kvm_device} permissions left as they are")
        return
    group_ok = state.kvm_group == KVM_GROUP and state.kvm_mode & 0o060 == 0o060
    world_ok = state.kvm_mode & 0o006 == 0o006
    if not (group_ok or world_ok):
        mode = state.kvm_mode | 0o060
        changes.append(HostChange(
            action=KVM_PERMISSIONS, codes=("NV-H09",),
            summary=f"{p.kvm_device}: group {state.kvm_group} → {KVM_GROUP}, mode "
                    f"{state.kvm_mode:04o} → {mode:04o}, so libvirt's QEMU user can open it",
            command=f"chgrp {KVM_GROUP} {p.kvm_device} && chmod {mode:04o} {p.kvm_device}",
            path=p.kvm_device))  # fmt: skip
    rule_path = p.udev_rules_d / UDEV_FILE
    if state.udev_installed:
        if state.udev_rule != UDEV_RULE:
            changes.append(HostChange(
                action=WRITE_UDEV, codes=("NV-H09",),
                summary=f"write {rule_path} (keeps {p.kvm_device} group {KVM_GROUP}, 0660, "
                        "across reboots)",
                command=f"echo '{UDEV_RULE.strip()}' > {rule_path}", path=rule_path,
                content=UDEV_RULE))  # fmt: skip
        if not state.udev_running:
            notes.append("udev is installed but not running: the rule takes effect at the next "
                         "boot; the permissions above are set directly now")  # fmt: skip
    elif not (group_ok or world_ok):
        notes.append(
            f"udev is not installed here: the fix of {p.kvm_device} lasts until the next boot "
            "(the kernel creates it root:root 0600 again); run `nestvirt host enable` after "
            f"boot, or install udev — its rule would be {UDEV_RULE.strip()}"
        )


Runner = Callable[[list[str]], None]


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NestvirtError(f"{' '.join(args)} failed: {detail[-1] if detail else done.returncode}")


def snapshot(state: HostState, paths: HostPaths | None = None) -> str:
    """What the host looked like, for the journal (JSON text)."""
    p = paths or HostPaths()
    return json.dumps(
        {
            str(p.modprobe_d / MODPROBE_FILE): state.modprobe_conf,
            str(p.udev_rules_d / UDEV_FILE): state.udev_rule,
            str(p.kvm_device): {
                "group": state.kvm_group,
                "mode": None if state.kvm_mode is None else f"{state.kvm_mode:04o}",
            },
            "nested": state.nested,
        },
        indent=1,
        sort_keys=True,
    )


def apply_host_plan(
    plan: Plan, paths: HostPaths | None = None, *, runner: Runner = _run
) -> list[str]:
    """Carry out the plan in order; return what was verified afterwards."""
    from nestvirt.statedir import atomic_write

    p = paths or HostPaths()
    done: list[str] = []
    for change in plan.changes:
        if not isinstance(change, HostChange):
            continue
        if change.action in (WRITE_MODPROBE, WRITE_UDEV) and change.path and change.content:
            change.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(change.path, change.content, mode=0o644)
        elif change.action == KVM_PERMISSIONS and change.path is not None:
            gid = grp.getgrnam(KVM_GROUP).gr_gid
            mode = stat.S_IMODE(change.path.stat().st_mode) | 0o060
            os.chown(change.path, -1, gid)
            os.chmod(change.path, mode)
        elif change.action == RELOAD_MODULE and change.module:
            runner(["modprobe", "-r", change.module])
            runner(["modprobe", change.module])
    after = read_state(p)
    for change in plan.changes:
        if isinstance(change, HostChange) and change.action == RELOAD_MODULE and change.module:
            value = after.nested.get(change.module)
            if value not in ON_VALUES:
                raise CannotFix(f"{change.module} reloaded but nested is {value!r}, not on")
            done.append(f"{change.module} nested={value}")
        if change.action == KVM_PERMISSIONS:
            if after.kvm_group != KVM_GROUP or (after.kvm_mode or 0) & 0o060 != 0o060:
                raise CannotFix(f"{p.kvm_device} is still {after.kvm_group} "
                                f"{after.kvm_mode or 0:04o}")  # fmt: skip
            done.append(f"{p.kvm_device} is {after.kvm_group} {after.kvm_mode or 0:04o}")
    return done


def host_enable(
    *,
    dry_run: bool,
    confirm: Callable[[Plan], bool],
    show: Callable[[Plan], None],
    paths: HostPaths | None = None,
    runner: Runner = _run,
    require_root: bool = True,
) -> HostOutcome:
    """The host flow: read → plan → show → confirm → lock → journal → apply → verify."""
    from nestvirt import lock
    from nestvirt.journal import DONE, Journal

    state = read_state(paths)
    plan = build_host_plan(state, paths)
    outcome = HostOutcome(plan)
    show(plan)
    if dry_run or plan.empty:
        return outcome
    if require_root and os.geteuid() != 0:
        raise PermissionRequired("host enable changes /etc and /dev/kvm: run it as root")
    if not confirm(plan):
        outcome.messages.append("nothing changed")
        return outcome
    with lock.host_lock():
        book = Journal.for_host()
        entry = book.begin(
            "host-enable",
            "host",
            snapshot(state, paths),
            changes=tuple(c.action for c in plan.changes),
            codes=tuple(sorted({code for c in plan.changes for code in c.codes})),
        )
        try:
            outcome.messages.extend(apply_host_plan(plan, paths, runner=runner))
        except BaseException:
            book.finish(entry, snapshot(read_state(paths), paths), status="failed")
            raise
        book.finish(entry, snapshot(read_state(paths), paths), status=DONE)
    outcome.applied = True
    return outcome
