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
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nestvirt
from nestvirt.errors import PermissionRequired, UsageError

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
                stat = f.read()
        except OSError:
            continue
        start = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime in ticks
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


def apply(plan: Plan) -> None:
    """Carry out a plan: atomic write (temp file + rename) or removal of our file only."""
    from nestvirt.statedir import atomic_write

    if plan.action in ("create", "replace"):
        assert plan.content is not None
        if plan.create_dir:
            plan.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _remember(str(plan.path.parent), True)
        atomic_write(plan.path, plan.content, mode=0o755)
    elif plan.action == "remove":
        if not is_ours(plan.path):  # checked again right before the change
            raise UsageError(f"{plan.path} was not written by nestvirt: not removing it")
        plan.path.unlink()
        if plan.remove_dir:
            with contextlib.suppress(OSError):
                plan.path.parent.rmdir()
            _remember(str(plan.path.parent), None)


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
    "GuardState",
    "Plan",
    "apply",
    "hook_path",
    "hooks_dir",
    "is_ours",
    "plan_install",
    "plan_uninstall",
    "render_hook",
    "require_root",
    "status",
]
