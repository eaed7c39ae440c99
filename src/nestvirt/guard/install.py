"""Install, uninstall and inspect the guard hook: `/etc/libvirt/hooks/qemu.d/nestvirt`.

libvirt ≥ 6.5 runs `/etc/libvirt/hooks/qemu` (if any) and then every executable
in `/etc/libvirt/hooks/qemu.d/`, in alphabetical order (libvirt 9.0
`virHookCall`), so the guard never replaces an existing hook: it is one more
file in `qemu.d/`, and a non-zero exit of any of them aborts the operation.

libvirtd decides whether a driver has hooks at all when it starts and when it
reloads (SIGHUP, `systemctl reload libvirtd`): if no qemu hook existed then, it
must be reloaded or restarted before it runs the guard. Once it knows qemu hooks
exist it lists `qemu.d/` on every call.

The installed file is a small /bin/sh script that exits 0 at once for every
operation but `migrate begin` / `restore begin`, and execs this venv's Python
(`sys.executable`, absolute: libvirtd runs hooks as root with a minimal
environment) with `-I -S` on `nestvirt.guard.hook` for those two. It carries
MARKER, which is how uninstall knows the file is ours.

Install, uninstall and undo go through the one write flow (nestvirt.enable.run) with
GuardSubject: lock, journal (write-ahead), dry-run diff, verify, undo. The "definition"
is a JSON text of whether qemu.d/ exists and the hook file's content and mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nestvirt
from nestvirt import enable
from nestvirt.errors import NestvirtError, PermissionRequired, UsageError
from nestvirt.journal import Entry
from nestvirt.model import Change
from nestvirt.model import Plan as ModelPlan

MARKER = "nestvirt-guard/1"
HOOK_NAME = "nestvirt"
DEFAULT_HOOKS_DIR = Path("/etc/libvirt/hooks")
ENV_HOOKS_DIR = "NESTVIRT_LIBVIRT_HOOKS_DIR"  # tests and packagers
DAEMONS = ("libvirtd", "virtqemud")
_DOMAIN_GLOB = re.compile(r"^[A-Za-z0-9_.*?-]+$")


def hooks_dir() -> Path:
    return Path(os.environ.get(ENV_HOOKS_DIR) or DEFAULT_HOOKS_DIR)


def hook_path(base: Path | None = None) -> Path:
    return (base or hooks_dir()) / "qemu.d" / HOOK_NAME


def package_root() -> Path:
    """The directory holding the `nestvirt` package (src/ of a checkout, or site-packages)."""
    return Path(nestvirt.__file__).resolve().parent.parent


def render_hook(python: str | None = None, root: Path | None = None, domains: str = "*") -> str:
    """The hook script's text. `domains` is a shell glob limiting which domains are judged."""
    interpreter = python or sys.executable
    if not interpreter or not os.path.isabs(interpreter):
        raise UsageError(f"cannot install the guard: Python path {interpreter!r} is not absolute")
    if not _DOMAIN_GLOB.match(domains):
        raise UsageError(f"--domains {domains!r}: use letters, digits, '_', '.', '-', '*', '?'")
    src = str(root or package_root())
    code = (
        f"import sys; sys.path.insert(0, {src!r}); "
        "from nestvirt.guard.hook import main; sys.exit(main(sys.argv[1:]))"
    )
    return f"""#!/bin/sh
# {MARKER}: written by `nestvirt guard install`; `nestvirt guard uninstall` removes it.
# libvirt runs it as: DOMAIN OPERATION SUB-OPERATION EXTRA, domain XML on stdin.
# Only `migrate begin` and `restore begin` are judged; all else exits 0 here.
# Never write to stdout: libvirt reads it as a replacement domain XML.
case "$2 $3" in
  "migrate begin"|"restore begin") ;;
  *) exit 0 ;;
esac
case "$1" in
  {domains}) ;;
  *) exit 0 ;;
esac
exec {shlex.quote(interpreter)} -I -S -c {shlex.quote(code)} "$@"
"""


def is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return MARKER.encode() in f.read(512)
    except (OSError, IsADirectoryError):
        return False


@dataclass(frozen=True, slots=True)
class GuardState:
    path: Path
    state: str  # "absent" | "current" | "outdated" | "foreign"
    other_hooks: tuple[str, ...]  # other qemu hooks libvirt runs (main script, qemu.d entries)
    daemon_pid: int | None
    daemon_started_before_hook: bool | None  # None: unknown or no daemon
    notes: tuple[str, ...] = field(default=())

    @property
    def protecting(self) -> bool:
        return self.state == "current"

    def to_json(self) -> dict[str, object]:
        return {
            "schema": "nestvirt.guard-status/1",
            "path": str(self.path),
            "state": self.state,
            "other_hooks": list(self.other_hooks),
            "daemon_pid": self.daemon_pid,
            "daemon_started_before_hook": self.daemon_started_before_hook,
            "notes": list(self.notes),
        }


def other_hooks(base: Path) -> tuple[str, ...]:
    found = []
    main = base / "qemu"
    if main.is_file() and os.access(main, os.X_OK):
        found.append(str(main))
    directory = base / "qemu.d"
    if directory.is_dir():
        for entry in sorted(directory.iterdir()):
            if entry.name == HOOK_NAME:
                continue
            if entry.is_file() and os.access(entry, os.X_OK):
                found.append(str(entry))
    return tuple(found)


def _daemon() -> tuple[int | None, float | None]:
    """The pid of libvirtd/virtqemud and its start time (seconds since the epoch), if running."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, ValueError, StopIteration):
        return None, None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if comm not in DAEMONS:
                continue
            with open(f"/proc/{entry}/stat") as f:
                line = f.read()
        except OSError:
            continue
        start = int(line.rsplit(")", 1)[1].split()[19])  # field 22: starttime in ticks
        return int(entry), boot + start / ticks
    return None, None


def status(base: Path | None = None, domains: str = "*") -> GuardState:
    base = base or hooks_dir()
    path = hook_path(base)
    if path.exists() or path.is_symlink():
        if not is_ours(path):
            state = "foreign"
        else:
            try:
                current = path.read_text() == render_hook(domains=_installed_glob(path))
            except (OSError, UsageError):
                current = False
            executable = os.access(path, os.X_OK)
            state = "current" if current and executable else "outdated"
    else:
        state = "absent"
    pid, started = _daemon()
    before: bool | None = None
    notes = []
    if pid is not None and started is not None and state != "absent":
        try:
            before = started < path.stat().st_mtime
        except OSError:
            before = None
    if state == "foreign":
        notes.append(f"{path} exists and was not written by nestvirt: left alone")
    if before:
        others = other_hooks(base)
        if others:
            notes.append(
                f"libvirtd (pid {pid}) started before the guard was written; it runs qemu hooks "
                f"only if one existed when it started or last reloaded ({', '.join(others)})"
            )
        else:
            notes.append(
                f"libvirtd (pid {pid}) started before the guard was written and no other qemu "
                "hook exists: reload it (SIGHUP, `systemctl reload libvirtd`) or restart it"
            )
    return GuardState(path, state, other_hooks(base), pid, before, tuple(notes))


def _installed_glob(path: Path) -> str:
    match = re.search(r'^case "\$1" in\n  (\S+)\) ;;', path.read_text(), re.M)
    return match.group(1) if match else "*"


@dataclass(frozen=True, slots=True)
class Plan:
    path: Path
    action: str  # "create" | "replace" | "remove" | "none"
    content: str | None  # what install writes
    create_dir: bool = False
    remove_dir: bool = False
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.action == "none"


def plan_install(base: Path | None = None, domains: str = "*") -> Plan:
    base = base or hooks_dir()
    path = hook_path(base)
    content = render_hook(domains=domains)
    if path.is_dir() or ((path.exists() or path.is_symlink()) and not is_ours(path)):
        raise UsageError(f"{path} exists and is not nestvirt's guard: move it away first")
    if path.exists():
        try:
            same = path.read_text() == content and os.access(path, os.X_OK)
        except OSError:
            same = False
        action = "none" if same else "replace"
    else:
        action = "create"
    notes: list[str] = []
    if action == "create":
        pid, _ = _daemon()
        if pid is not None:
            if other_hooks(base):
                notes.append(
                    f"libvirtd (pid {pid}) already runs qemu hooks and lists qemu.d/ on every "
                    "call: the guard is active at once (reload libvirtd if those hooks are newer "
                    "than the daemon)"
                )
            else:
                notes.append(
                    f"libvirtd (pid {pid}) looks for hooks only when it starts or reloads: "
                    "reload it (`systemctl reload libvirtd`, or SIGHUP) or restart it so it runs "
                    "the new hook"
                )
    return Plan(path, action, content, create_dir=not path.parent.is_dir(), notes=tuple(notes))


def plan_uninstall(base: Path | None = None) -> Plan:
    base = base or hooks_dir()
    path = hook_path(base)
    if not (path.exists() or path.is_symlink()):
        return Plan(path, "none", None)
    if not is_ours(path):
        raise UsageError(f"{path} was not written by nestvirt: not removing it")
    created = _record().get(str(path.parent)) is True
    leftovers = [p for p in path.parent.iterdir() if p.name != HOOK_NAME]
    return Plan(
        path,
        "remove",
        None,
        remove_dir=created and not leftovers,
        notes=("libvirtd needs no restart: a hook directory without hooks is simply skipped",),
    )


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionRequired(f"{what} needs root: it writes {hooks_dir()}/qemu.d (use sudo)")


# ------------------------------------------------------------------ the flow's subject

INSTALL, UNINSTALL = "install", "uninstall"
ACTIONS = (INSTALL, UNINSTALL, enable.UNDO)
DEFINITION_SCHEMA = "nestvirt.guard-hook/1"
RESTORE = "restore"  # undo: the hook file (and qemu.d/) as they were


@dataclass(frozen=True, slots=True)
class GuardChange(Change):
    """A change of the flow's plan; `install` is the guard's own Plan it carries out."""

    install: Plan | None = None
    restore: str | None = None  # undo: the whole definition put back


def _hook_record(path: Path) -> dict[str, str] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NestvirtError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if not stat.S_ISREG(st.st_mode):
        return {"kind": "not a regular file", "mode": mode}
    try:
        with path.open("rb") as f:
            raw = f.read(1024 * 1024)
    except OSError as exc:
        raise NestvirtError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"content": raw.decode("utf-8", errors="replace"), "mode": mode}


def definition_of(base: Path | None = None) -> str:
    """What the guard manages, as it is now: qemu.d/ exists?, the hook file (content, mode)."""
    path = hook_path(base)
    return _encode({str(path.parent): path.parent.is_dir()}, {str(path): _hook_record(path)})


def _encode(directory: dict[str, bool], hook: dict[str, dict[str, str] | None]) -> str:
    doc = {"schema": DEFINITION_SCHEMA, "directory": directory, "hook": hook}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _decode(text: str) -> tuple[dict[str, bool], dict[str, dict[str, str] | None]]:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != DEFINITION_SCHEMA:
        raise NestvirtError(f"the guard journal entry is not a {DEFINITION_SCHEMA} definition")
    try:
        return dict(doc["directory"]), dict(doc["hook"])
    except (KeyError, TypeError, ValueError):
        raise NestvirtError(f"the guard journal entry is not a whole {DEFINITION_SCHEMA}") from None


def diff_definitions(before: str, after: str) -> str:
    """A unified diff of the hook file; one block for qemu.d/ appearing or going."""
    from nestvirt import filediff

    old_dir, old_hook = _decode(before)
    new_dir, new_hook = _decode(after)
    return filediff.directories(old_dir, new_dir, suffix="/") + filediff.files(old_hook, new_hook)


class GuardSubject:
    """The guard hook of one libvirt hooks directory as a Subject of nestvirt.enable.run."""

    name = "guard"
    lock_what = "the libvirt hook (nestvirt guard)"  # in the busy message

    def __init__(self, base: Path | None = None, domains: str = "*") -> None:
        self.base = base or hooks_dir()
        self.path = hook_path(self.base)
        self.domains = domains
        self.key = ("guard", str(self.path))
        self.uri = str(self.base)
        self._target: str | None = None

    def undo_command(self) -> str:
        return "nestvirt guard undo"

    def close(self) -> None:
        """Nothing to close: the guard is a file."""

    def read(self) -> enable.Snapshot:
        return enable.Snapshot(definition_of(self.base), None, (), running=False)

    def plan(self, snap: enable.Snapshot, action: str, undo: Entry | None) -> ModelPlan:
        if action == INSTALL:
            return self._of(plan_install(self.base, self.domains))
        if action == UNINSTALL:
            return self._of(plan_uninstall(self.base))
        if action == enable.UNDO and undo is not None:
            directory, hook = _decode(undo.before)
            if set(directory) != {str(self.path.parent)} or set(hook) != {str(self.path)}:
                raise UsageError(f"journal entry #{undo.seq} is not about {self.path}")
            what = f"nestvirt's change #{undo.seq} ({undo.action}, {undo.time})"
            record = hook[str(self.path)]
            if record is None:
                summary, command = f"remove {self.path} ({what} wrote it)", f"rm {self.path}"
            else:
                summary = f"put {self.path} back as it was before {what}"
                command = f"install -m {record['mode']} /dev/stdin {self.path}"
            change = GuardChange(RESTORE, (), command, summary, restore=undo.before)
            if undo.before == snap.definition:
                return ModelPlan(vm=self.name)
            return ModelPlan(vm=self.name, changes=(change,))
        raise UsageError(f"unknown guard action {action!r}")

    def _of(self, plan: Plan) -> ModelPlan:
        if plan.empty:
            return ModelPlan(vm=self.name, notes=plan.notes)
        if plan.action == "remove":
            summary, command = f"remove {plan.path}", f"rm {plan.path}"
            if plan.remove_dir:
                summary += f" and the empty directory {plan.path.parent} (nestvirt created it)"
                command += f" && rmdir {plan.path.parent}"
        else:
            summary = f"{plan.action} {plan.path} (mode 0755, atomic write)"
            command = f"install -m 0755 /dev/stdin {plan.path}"
            if plan.create_dir:
                summary = f"create {plan.path.parent}/ (mode 0755), then {summary}"
                command = f"mkdir -p {plan.path.parent} && {command}"
        change = GuardChange(plan.action, (), command, summary, install=plan)
        return ModelPlan(vm=self.name, changes=(change,), notes=plan.notes)

    def render(self, snap: enable.Snapshot, plan: ModelPlan) -> str:
        change = plan.changes[0]
        assert isinstance(change, GuardChange)
        if change.restore is not None:
            return change.restore
        assert change.install is not None
        todo = change.install
        directory, hook = _decode(snap.definition)
        if todo.action in ("create", "replace"):
            directory[str(self.path.parent)] = True
            hook[str(self.path)] = {"content": todo.content or "", "mode": "0755"}
        elif todo.action == "remove":
            hook[str(self.path)] = None
            if todo.remove_dir:
                directory[str(self.path.parent)] = False
        return _encode(directory, hook)

    def diff(self, before: str, after: str) -> str:
        return diff_definitions(before, after)

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        raise AssertionError("the guard is never running")

    def start(self) -> None:
        raise AssertionError("the guard is never running")

    def write(self, plan: ModelPlan, definition: str) -> str:
        self._target = definition
        return self.restore(definition)

    def restore(self, definition: str) -> str:
        """Make qemu.d/ and the hook `definition`: the file in one atomic step; a file
        nestvirt did not write is never replaced or removed."""
        from nestvirt.statedir import atomic_write

        directory, hook = _decode(definition)
        record = hook.get(str(self.path))
        live = _hook_record(self.path)
        parent = self.path.parent
        if record != live and live is not None and not is_ours(self.path):
            raise UsageError(f"{self.path} was not written by nestvirt: not touching it")
        if directory.get(str(parent)) and not parent.is_dir():
            parent.mkdir(mode=0o755, parents=True)
            _remember(str(parent), True)
        if record != live:
            if record is None:
                self.path.unlink(missing_ok=True)
            elif "content" in record:
                atomic_write(self.path, record["content"], mode=int(record["mode"], 8),
                             what=str(self.path))  # fmt: skip
        if directory.get(str(parent)) is False and parent.is_dir():
            with contextlib.suppress(OSError):  # not empty: other hooks stay, and so does it
                parent.rmdir()
                _remember(str(parent), None)
        return definition_of(self.base)

    def verify(self, plan: ModelPlan, action: str) -> str | None:
        live = definition_of(self.base)
        if self._target is not None and live != self._target:
            return "the hook is not as planned: " + diff_definitions(self._target, live).replace(
                "\n", " "
            )
        return None


@dataclass(slots=True)
class GuardOutcome:
    """What `guard install|uninstall|undo` did: `nestvirt.guard-plan/1` as JSON."""

    action: str
    path: Path
    plan: ModelPlan
    applied: bool = False
    journal_seq: int | None = None
    diff: str = ""
    messages: list[str] = field(default_factory=list)
    refused: str = ""  # undo --dry-run of a hook changed since: why undo needs --force
    discarded: str = ""  # ... and what --force would discard (a diff)

    @property
    def install(self) -> Plan | None:
        first = self.plan.changes[0] if self.plan.changes else None
        return first.install if isinstance(first, GuardChange) else None

    def to_json(self) -> dict[str, object]:
        return {
            "schema": "nestvirt.guard-plan/1",
            "action": self.action,
            "path": str(self.path),
            "changes": [{**c.to_json(), "summary": c.summary} for c in self.plan.changes],
            "notes": list(self.plan.notes),
            "applied": self.applied,
            "changed": self.applied and not self.plan.empty,
            "journal_seq": self.journal_seq,
            "diff": self.diff,
            "messages": list(self.messages),
            "refused": self.refused or None,
        }


def run(
    action: str,
    options: enable.FlowOptions | None = None,
    *,
    base: Path | None = None,
    domains: str = "*",
    show: Callable[[enable.Outcome], None] = lambda _o: None,
    confirm: Callable[[enable.Outcome], bool] = lambda _o: True,
    progress: Callable[[str], None] = lambda _msg: None,
) -> GuardOutcome:
    """`guard install`, `guard uninstall` or `guard undo` through the one write flow."""
    if action not in ACTIONS:
        raise UsageError(f"unknown guard action {action!r}")
    subject = GuardSubject(base, domains)
    outcome = enable.run(
        subject, action, options or enable.FlowOptions(), show=show, confirm=confirm,
        progress=progress,
    )  # fmt: skip
    return GuardOutcome(action, subject.path, outcome.plan, outcome.applied,
                        outcome.journal_seq, outcome.diff, list(outcome.messages),
                        outcome.refused, outcome.discarded)  # fmt: skip


def history(
    base: Path | None = None, progress: Callable[[str], None] = lambda _msg: None
) -> tuple[GuardSubject, list[Entry], list[Any]]:
    """The guard's journal (settled first when no other nestvirt is changing it)."""
    from nestvirt.journal import Journal

    subject = GuardSubject(base)
    book = Journal(*subject.key)
    entries = enable.history(subject, journal=book, progress=progress)
    return subject, entries, list(book.skipped)


def _record_path() -> Path:
    from nestvirt.statedir import state_dir

    return state_dir() / "guard-install.json"


def _record() -> dict[str, object]:
    try:
        data = json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, value: object) -> None:
    from nestvirt.statedir import atomic_write

    data = _record()
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    atomic_write(_record_path(), json.dumps(data, indent=2) + "\n")


__all__ = [
    "MARKER",
    "GuardOutcome",
    "GuardState",
    "GuardSubject",
    "Plan",
    "history",
    "hook_path",
    "hooks_dir",
    "is_ours",
    "plan_install",
    "plan_uninstall",
    "render_hook",
    "require_root",
    "run",
    "status",
]
