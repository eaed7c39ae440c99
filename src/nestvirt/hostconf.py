"""`nestvirt host enable` / `host undo`: persist nested=1 for the KVM vendor module, give
/dev/kvm to group kvm — a subject of the one write flow (nestvirt.enable).

read_state() gathers what the plan needs (paths injectable: HostPaths, or a whole
fake root with HostPaths.under); build_host_plan() is pure; HostSubject carries it
through enable.run: lock, settle the journal, plan, show (with a diff of the managed
state), confirm, journal (write-ahead), write, verify, roll back, undo.

- NV-H04: `options kvm_intel nested=1` (or kvm_amd, by CPU vendor) in
  /etc/modprobe.d/nestvirt-kvm.conf; the module is reloaded only when no process
  holds /dev/kvm open (no VM runs), otherwise the plan says what to run later.
  A vendor module without a `nested` parameter (e.g. kvm_pvm) cannot be
  configured: nothing is written, the plan says so.
- NV-H09: /dev/kvm group kvm, group read+write (0660 from 0600), at once; plus
  the udev rule distributions ship (KERNEL=="kvm", GROUP="kvm", MODE="0660") in
  /etc/udev/rules.d/65-nestvirt-kvm.rules where udev is installed, so it holds
  after a reboot. Without udev, the plan says the fix lasts until the next boot.

The host's "definition" (what the journal keeps, what undo puts back) is a JSON text
of everything host enable manages (`definition_of`): each managed file's content and
mode or its absence, whether /etc/modprobe.d existed, and /dev/kvm's group and mode.
The module's runtime `nested` value is not part of it: undo restores the files and the
device, and says how to reload the module (a reload stops nothing but needs no VM).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestvirt import enable
from nestvirt.errors import NestvirtError, PermissionRequired, UsageError
from nestvirt.journal import Entry
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
RESTORE_FILE = "restore-file"  # undo: a managed file back as it was (or removed)
RESTORE_DIRECTORY = "restore-directory"  # undo: /etc/modprobe.d removed again if nestvirt made it
RESTORE_KVM = "restore-kvm-device"  # undo: /dev/kvm's group and mode back

ENV_HOST_ROOT = "NESTVIRT_HOST_ROOT"  # tests: every host path under this directory
DEFINITION_SCHEMA = "nestvirt.host-config/1"
HOST_ACTIONS = (enable.ENABLE, enable.UNDO)


@dataclass(frozen=True, slots=True)
class HostPaths:
    modprobe_d: Path = Path("/etc/modprobe.d")
    udev_rules_d: Path = Path("/etc/udev/rules.d")
    udev_control: Path = Path("/run/udev/control")
    kvm_device: Path = Path("/dev/kvm")
    sys_module: Path = Path("/sys/module")
    cpuinfo: Path = Path("/proc/cpuinfo")
    proc: Path = Path("/proc")
    modprobe: str = "modprobe"  # the program reloading the module (under a fake root: its own)

    @classmethod
    def under(cls, root: Path) -> HostPaths:
        """Every path of a real host under `root` (a fake host tree: tests, image builds);
        modprobe too, so a fake host never reloads a real module."""
        real = cls()
        moved = {
            name: root / str(getattr(real, name)).lstrip("/")
            for name in ("modprobe_d", "udev_rules_d", "udev_control", "kvm_device",
                         "sys_module", "cpuinfo", "proc")
        }  # fmt: skip
        return cls(**moved, modprobe=str(root / "sbin" / "modprobe"))

    @classmethod
    def from_environment(cls) -> HostPaths:
        root = os.environ.get(ENV_HOST_ROOT)
        return cls.under(Path(root)) if root else cls()

    @property
    def modprobe_file(self) -> Path:
        return self.modprobe_d / MODPROBE_FILE

    @property
    def udev_file(self) -> Path:
        return self.udev_rules_d / UDEV_FILE


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
    restore: str | None = None  # undo: the whole definition put back (the same on every change)


@dataclass(slots=True)
class HostOutcome:
    plan: Plan
    applied: bool = False
    messages: list[str] = field(default_factory=list)
    action: str = enable.ENABLE
    journal_seq: int | None = None
    diff: str = ""
    refused: str = ""  # undo --dry-run of a host changed since: why undo needs --force
    discarded: str = ""  # ... and what --force would discard (a diff)

    def to_json(self) -> dict[str, object]:
        return {
            "schema": "nestvirt.host-plan/1",
            "action": self.action,
            "changes": [{**c.to_json(), "summary": c.summary} for c in self.plan.changes],
            "notes": list(self.plan.notes),
            "applied": self.applied,
            "changed": self.applied and not self.plan.empty,
            "messages": list(self.messages),
            "journal_seq": self.journal_seq,
            "diff": self.diff,
            "refused": self.refused or None,
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
    p = paths or HostPaths.from_environment()
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
        modprobe_available=shutil.which(p.modprobe) is not None,
    )


def modprobe_conf(module: str) -> str:
    return (
        "# Written by `nestvirt host enable`: let KVM guests run their own hypervisor.\n"
        f"options {module} nested=1\n"
    )


def build_host_plan(state: HostState, paths: HostPaths | None = None) -> Plan:
    p = paths or HostPaths.from_environment()
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
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise NestvirtError(f"{' '.join(args)} failed: {exc.strerror or exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NestvirtError(f"{' '.join(args)} failed: {detail[-1] if detail else done.returncode}")


# ------------------------------------------------------------------ the host's definition


@dataclass(frozen=True, slots=True)
class HostConfig:
    """A decoded definition: path → file record (None: absent), directory → exists,
    the device's record (None: absent). Empty maps mean "not recorded" (older entries)."""

    files: dict[str, dict[str, str] | None]
    directories: dict[str, bool]
    device: dict[str, dict[str, Any] | None]


def _file_record(path: Path) -> dict[str, str] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NestvirtError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        return {"kind": "not a regular file", "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
    try:
        content = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise NestvirtError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"content": content, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _device_record(path: Path) -> dict[str, Any] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NestvirtError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"group": _group_name(st.st_gid), "gid": st.st_gid,
            "mode": f"{stat.S_IMODE(st.st_mode):04o}"}  # fmt: skip


def definition_of(paths: HostPaths) -> str:
    """Everything host enable manages, as it is now: a deterministic JSON text."""
    return encode(
        HostConfig(
            files={str(paths.modprobe_file): _file_record(paths.modprobe_file),
                   str(paths.udev_file): _file_record(paths.udev_file)},
            directories={str(paths.modprobe_d): paths.modprobe_d.is_dir()},
            device={str(paths.kvm_device): _device_record(paths.kvm_device)},
        )
    )  # fmt: skip


def encode(config: HostConfig) -> str:
    doc = {"schema": DEFINITION_SCHEMA, "files": config.files,
           "directories": config.directories, "device": config.device}  # fmt: skip
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def decode(text: str) -> HostConfig:
    """A definition → HostConfig; also the snapshot older nestvirt journaled (no schema:
    {file path: content | null, "/dev/kvm": {"group", "mode"}, "nested": {…}})."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise NestvirtError("the host journal entry is not a host definition") from None
    if not isinstance(doc, dict):
        raise NestvirtError("the host journal entry is not a host definition")
    if doc.get("schema") == DEFINITION_SCHEMA:
        try:
            return HostConfig(dict(doc["files"]), dict(doc["directories"]), dict(doc["device"]))
        except (KeyError, TypeError, ValueError):
            raise NestvirtError(
                f"the host journal entry is not a whole {DEFINITION_SCHEMA}"
            ) from None
    if "schema" in doc:
        raise NestvirtError(f"the host journal entry is {doc['schema']!r}, not {DEFINITION_SCHEMA}")
    files: dict[str, dict[str, str] | None] = {}
    device: dict[str, dict[str, Any] | None] = {}
    for key, value in doc.items():
        if key == "nested":
            continue
        if isinstance(value, dict):  # the device
            group = str(value.get("group"))
            try:
                gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
            except KeyError:
                raise NestvirtError(f"group {group!r} of the journal entry is gone") from None
            device[key] = {"group": group, "gid": gid, "mode": str(value.get("mode"))}
        else:
            files[key] = None if value is None else {"content": str(value), "mode": "0644"}
    return HostConfig(files, {}, device)


def diff_definitions(before: str, after: str) -> str:
    """A unified diff of the managed files, and one block each for a directory or the device."""
    from nestvirt import filediff

    old, new = decode(before), decode(after)
    out = [filediff.directories(old.directories, new.directories)]
    out.append(filediff.files(old.files, new.files))
    for path in sorted(old.device.keys() | new.device.keys()):
        a_dev, b_dev = old.device.get(path), new.device.get(path)
        if a_dev == b_dev:
            continue
        out += [f"--- {path}\n", f"+++ {path}\n"]
        out += [f"-{_device_text(a_dev)}\n", f"+{_device_text(b_dev)}\n"]
    return "".join(out)


def _device_text(record: dict[str, Any] | None) -> str:
    if record is None:
        return "(absent)"
    return f"group {record['group']} (gid {record['gid']}), mode {record['mode']}"


def render_definition(before: str, plan: Plan) -> str:
    """The definition after `plan` (pure: computed from `before`, nothing read or written)."""
    restoring = [c.restore for c in plan.changes if isinstance(c, HostChange) and c.restore]
    if restoring:
        return restoring[0]
    config = decode(before)
    files, directories, device = dict(config.files), dict(config.directories), dict(config.device)
    for change in plan.changes:
        if not isinstance(change, HostChange) or change.path is None:
            continue
        if change.action in (WRITE_MODPROBE, WRITE_UDEV) and change.content is not None:
            files[str(change.path)] = {"content": change.content, "mode": "0644"}
            if str(change.path.parent) in directories:
                directories[str(change.path.parent)] = True
        elif change.action == KVM_PERMISSIONS:
            now = device.get(str(change.path)) or {"mode": "0600"}
            gid = grp.getgrnam(KVM_GROUP).gr_gid
            mode = int(str(now["mode"]), 8) | 0o060
            device[str(change.path)] = {"group": KVM_GROUP, "gid": gid, "mode": f"{mode:04o}"}
    return encode(HostConfig(files, directories, device))


# ------------------------------------------------------------------ the subject


class HostSubject:
    """This Linux host's KVM configuration as a Subject of nestvirt.enable.run."""

    name = "host"
    lock_what = "this host's KVM configuration"  # in the busy message

    def __init__(self, paths: HostPaths | None = None, *, runner: Runner = _run) -> None:
        self.paths = paths or HostPaths.from_environment()
        self.runner = runner
        real = self.paths == HostPaths()
        # one journal and lock per host tree: this host's, or a fake root's (tests)
        self.key = ("host", "host" if real else f"host:{self.paths.kvm_device}")
        self.uri = "this host" if real else f"the host tree of {self.paths.kvm_device}"
        self.verified: list[str] = []
        self._target: str | None = None

    def undo_command(self) -> str:
        return "nestvirt host undo"

    def close(self) -> None:
        """Nothing to close: the host is read from files."""

    def read(self) -> enable.Snapshot:
        state = read_state(self.paths)
        return enable.Snapshot(definition_of(self.paths), state, (), running=False)

    def plan(self, snap: enable.Snapshot, action: str, undo: Entry | None) -> Plan:
        if action == enable.ENABLE:
            return build_host_plan(snap.facts, self.paths)
        if action == enable.UNDO and undo is not None:
            return self._undo_plan(snap, undo)
        raise UsageError(f"unknown host action {action!r}")

    def _managed(self) -> tuple[set[str], set[str], set[str]]:
        p = self.paths
        return ({str(p.modprobe_file), str(p.udev_file)}, {str(p.modprobe_d)},
                {str(p.kvm_device)})  # fmt: skip

    def _check(self, config: HostConfig, seq: int | str) -> None:
        files, dirs, devices = self._managed()
        stray = (config.files.keys() - files) | (config.directories.keys() - dirs)
        stray |= config.device.keys() - devices
        if stray:
            raise UsageError(
                f"journal entry #{seq} names {', '.join(sorted(stray))}, which this host "
                "configuration does not manage: not restoring it"
            )

    def _undo_plan(self, snap: enable.Snapshot, entry: Entry) -> Plan:
        target = decode(entry.before)
        self._check(target, entry.seq)
        live = decode(snap.definition)
        directories = dict(target.directories)
        for path, existed in target.directories.items():
            keep = set(target.files) | set(live.files)
            if not existed and Path(path).is_dir():
                others = [e for e in Path(path).iterdir() if str(e) not in keep]
                if others:  # someone else's files live there now: it stays
                    directories[path] = True
        # what an older entry does not record stays as it is now
        files = {**live.files, **target.files}
        device = {**live.device, **target.device}
        restore = encode(HostConfig(files, {**live.directories, **directories}, device))
        what = f"nestvirt's change #{entry.seq} ({entry.action}, {entry.time})"
        changes: list[HostChange] = []
        for path in sorted(files):
            record = files[path]
            if record == live.files.get(path):
                continue
            if record is None:
                summary, command = f"remove {path} ({what} wrote it)", f"rm -f {path}"
            else:
                summary = f"put {path} back as it was before {what}"
                command = f"install -m {record.get('mode', '0644')} /dev/stdin {path}"
            changes.append(HostChange(action=RESTORE_FILE, codes=(), summary=summary,
                command=command, path=Path(path), content=(record or {}).get("content"),
                restore=restore))  # fmt: skip
        for path, exists in sorted(directories.items()):
            if exists or not live.directories.get(path):
                continue
            changes.append(HostChange(action=RESTORE_DIRECTORY, codes=(),
                summary=f"remove the empty directory {path} ({what} created it)",
                command=f"rmdir {path}", path=Path(path), restore=restore))  # fmt: skip
        for path, record in sorted(device.items()):
            now = live.device.get(path)
            if record is None or now is None or record == now:
                continue
            changes.append(HostChange(action=RESTORE_KVM, codes=(),
                summary=f"{path}: group {now['group']} → {record['group']}, mode {now['mode']} "
                        f"→ {record['mode']} (as before {what})",
                command=f"chgrp {record['gid']} {path} && chmod {record['mode']} {path}",
                path=Path(path), restore=restore))  # fmt: skip
        notes = []
        if RELOAD_MODULE in entry.changes:
            module = next((m for m in snap.facts.loaded_vendor_modules if m in
                           VENDOR_MODULE.values()), "the KVM vendor module")  # fmt: skip
            notes.append(f"{what} reloaded {module}; the loaded module keeps nested as it is until "
                         f"it is reloaded (with no VM running: modprobe -r {module} && modprobe "
                         f"{module}) or the host reboots")  # fmt: skip
        return Plan(vm=self.name, changes=tuple(changes), notes=tuple(notes))

    def render(self, snap: enable.Snapshot, plan: Plan) -> str:
        return render_definition(snap.definition, plan)

    def diff(self, before: str, after: str) -> str:
        return diff_definitions(before, after)

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        raise AssertionError("no host change needs a stop")

    def start(self) -> None:
        raise AssertionError("no host change needs a stop")

    def write(self, plan: Plan, definition: str) -> str:
        self._target = definition
        self._apply(definition)
        for change in plan.changes:
            if isinstance(change, HostChange) and change.action == RELOAD_MODULE and change.module:
                self.runner([self.paths.modprobe, "-r", change.module])
                self.runner([self.paths.modprobe, change.module])
        return definition_of(self.paths)

    def restore(self, definition: str) -> str:
        self._apply(definition)
        return definition_of(self.paths)

    def _apply(self, definition: str) -> None:
        """Make the managed state `definition`: each file in one atomic step, then /dev/kvm."""
        from nestvirt.statedir import atomic_write

        target, live = decode(definition), decode(definition_of(self.paths))
        self._check(target, "(planned)")
        for path, exists in target.directories.items():
            if exists and not Path(path).is_dir():
                Path(path).mkdir(mode=0o755, parents=True)
        for path, record in sorted(target.files.items()):
            if record == live.files.get(path):
                continue
            if record is None:
                Path(path).unlink(missing_ok=True)
            elif "content" in record:
                Path(path).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                atomic_write(Path(path), record["content"], mode=int(record["mode"], 8),
                             what=path)  # fmt: skip
        for path, device in target.device.items():
            if device is None or device == live.device.get(path):
                continue
            os.chown(path, -1, int(device["gid"]))
            os.chmod(path, int(str(device["mode"]), 8))
        for path, exists in target.directories.items():
            if not exists and Path(path).is_dir():
                with contextlib.suppress(OSError):  # not empty: someone else's files stay
                    Path(path).rmdir()

    def verify(self, plan: Plan, action: str) -> str | None:
        snap = self.read()
        self.verified = []
        if action == enable.UNDO:
            if self._target is not None and snap.definition != self._target:
                return "the host is not as before: " + diff_definitions(
                    self._target, snap.definition
                ).replace("\n", " ")
            return None
        state: HostState = snap.facts
        for change in plan.changes:
            if not isinstance(change, HostChange):
                continue
            if change.action == RELOAD_MODULE and change.module:
                value = state.nested.get(change.module)
                if value not in ON_VALUES:
                    return f"{change.module} reloaded but nested is {value!r}, not on"
                self.verified.append(f"{change.module} nested={value}")
            if change.action == KVM_PERMISSIONS:
                if state.kvm_group != KVM_GROUP or (state.kvm_mode or 0) & 0o060 != 0o060:
                    return f"{self.paths.kvm_device} is still {state.kvm_group} " \
                           f"{state.kvm_mode or 0:04o}"  # fmt: skip
                self.verified.append(
                    f"{self.paths.kvm_device} is {state.kvm_group} {state.kvm_mode or 0:04o}"
                )
        left = [c for c in build_host_plan(state, self.paths).changes if c.action != RELOAD_MODULE]
        if left:
            return "the host did not keep: " + "; ".join(c.summary for c in left)
        return None


# ------------------------------------------------------------------ the commands


def host_flow(
    action: str,
    options: enable.FlowOptions,
    *,
    show: Callable[[enable.Outcome], None],
    confirm: Callable[[enable.Outcome], bool],
    progress: Callable[[str], None] = lambda _msg: None,
    paths: HostPaths | None = None,
    runner: Runner = _run,
    require_root: bool = True,
) -> HostOutcome:
    """`host enable` (action enable) or `host undo` through the one write flow."""
    if action not in HOST_ACTIONS:
        raise UsageError(f"unknown host action {action!r}")
    subject = HostSubject(paths, runner=runner)

    def ask(outcome: enable.Outcome) -> bool:
        if require_root and os.geteuid() != 0:
            raise PermissionRequired(f"host {action} changes /etc and /dev/kvm: run it as root")
        return confirm(outcome)

    outcome = enable.run(subject, action, options, show=show, confirm=ask, progress=progress)
    result = HostOutcome(outcome.plan, outcome.applied, list(outcome.messages), action,
                         outcome.journal_seq, outcome.diff, outcome.refused,
                         outcome.discarded)  # fmt: skip
    if outcome.applied:
        result.messages[:0] = subject.verified
    return result


def host_enable(
    *,
    dry_run: bool,
    confirm: Callable[[Plan], bool],
    show: Callable[[Plan], None],
    paths: HostPaths | None = None,
    runner: Runner = _run,
    require_root: bool = True,
) -> HostOutcome:
    """`host enable` for callers that see the plan only (the Ansible module)."""
    return host_flow(
        enable.ENABLE,
        enable.FlowOptions(dry_run=dry_run),
        show=lambda outcome: show(outcome.plan),
        confirm=lambda outcome: confirm(outcome.plan),
        paths=paths,
        runner=runner,
        require_root=require_root,
    )


def host_history(
    paths: HostPaths | None = None, progress: Callable[[str], None] = lambda _msg: None
) -> tuple[list[Entry], list[Any]]:
    """The host's journal (settled first when no other nestvirt is changing the host)."""
    from nestvirt.journal import Journal

    subject = HostSubject(paths)
    book = Journal(*subject.key)
    entries = enable.history(subject, journal=book, progress=progress)
    return entries, list(book.skipped)
