"""The platform registry: one line per platform nestvirt judges and changes.

A platform (libvirt, Hyper-V, a collected Linux snapshot, or a new one) plugs into
every command through one `Registration` here: its adapter (the module that answers
status, preflight and the enable flow's subject for it), its rule modules, and which
endpoints it answers (`--connect` URI schemes, `--hyperv`, snapshot files). Status,
preflight, enable/disable/undo/history and `collect` find the platform here instead
of branching on it (docs/architecture.md, "Adding a platform").

Modules are named, not imported: nothing of a platform loads until a command uses it
(`status --host-only` loads none), and the flows can name adapters that sit above them
without an import cycle. Standard library only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from nestvirt.endpoint import HyperV, Libvirt, Snapshot
from nestvirt.errors import UsageError


@dataclass(frozen=True, slots=True)
class Registration:
    """How a platform plugs in. `name` is its VM platform: the rules' `Platform` value and
    a VM report's `backend`. `adapter` implements docs/architecture.md's adapter functions
    (status, preflight, subject; claims_snapshot when `snapshots`)."""

    name: str
    adapter: str
    rule_modules: tuple[str, ...] = ()  # its VM rules: loaded when rules of `name` are asked for
    host: str | None = None  # the platform of its hosts' own rules ("windows")
    host_rule_modules: tuple[str, ...] = ()  # loaded when rules of `host` are asked for
    schemes: tuple[str, ...] = ()  # `--connect URI` schemes it answers ("pve" → pve://…)
    hyperv: bool = False  # it answers `--hyperv [HOST]`
    snapshots: bool = False  # it may claim a `--snapshot FILE` (adapter.claims_snapshot)
    default: bool = False  # it answers a `--connect` URI no other platform claims


PLATFORMS: dict[str, Registration] = {}
generation = 0  # counts changes of PLATFORMS (the rule registry caches by it)


def register(entry: Registration) -> Registration:
    """Add a platform; a name or a URI scheme is claimed once."""
    if entry.name in PLATFORMS and PLATFORMS[entry.name] != entry:
        raise ValueError(f"platform {entry.name!r} is already registered")
    for other in PLATFORMS.values():
        if other.name != entry.name and set(other.schemes) & set(entry.schemes):
            raise ValueError(f"{entry.name}: URI scheme already answered by {other.name}")
    global generation
    PLATFORMS[entry.name] = entry
    generation += 1
    return entry


def unregister(name: str) -> None:
    global generation
    PLATFORMS.pop(name, None)
    generation += 1


# fmt: off
register(Registration("linux-snapshot", "nestvirt.platforms.linux_snapshot", snapshots=True))
register(Registration("libvirt", "nestvirt.platforms.libvirt", ("nestvirt.rules.vm_libvirt", "nestvirt.rules.vm_libvirt_accel"), default=True))  # noqa: E501
register(Registration("hyperv", "nestvirt.platforms.hyperv", ("nestvirt.rules.vm_hyperv",), host="windows", host_rule_modules=("nestvirt.rules.host_windows",), hyperv=True, snapshots=True))  # noqa: E501
# fmt: on


def rule_modules(platform: str | None) -> dict[str, frozenset[str]]:
    """The rule modules of registered platforms judging `platform` (None: every one)."""
    found: dict[str, set[str]] = {}
    for entry in PLATFORMS.values():
        for judged, modules in (
            (entry.name, entry.rule_modules),
            (entry.host, entry.host_rule_modules),
        ):
            if judged is not None and platform in (None, judged):
                for module in modules:
                    found.setdefault(module, set()).add(judged)
    return {m: frozenset(p) for m, p in found.items()}


def scheme(uri: str) -> str:
    """`qemu+ssh://h/system` → "qemu"; `pve:///x` → "pve"."""
    head, sep, _rest = uri.partition(":")
    return head.split("+", 1)[0].lower() if sep else ""


def adapter_module(name: str) -> ModuleType:
    return importlib.import_module(PLATFORMS[name].adapter)


def platform_for(where: Libvirt | HyperV | Snapshot) -> str:
    """The registered platform that answers this endpoint."""
    if isinstance(where, Libvirt):
        wanted = scheme(where.uri) if where.uri else ""
        for entry in PLATFORMS.values():
            if wanted and wanted in entry.schemes:
                return entry.name
        return _only([e.name for e in PLATFORMS.values() if e.default], "--connect")
    if isinstance(where, HyperV):
        return _only([e.name for e in PLATFORMS.values() if e.hyperv], "--hyperv")
    claimants = [e.name for e in PLATFORMS.values() if e.snapshots]
    for name in claimants:
        if adapter_module(name).claims_snapshot(where.path):
            return name
    raise UsageError(f"{where.path}: not a snapshot any nestvirt platform reads")


def _only(names: list[str], option: str) -> str:
    if not names:
        raise UsageError(f"no nestvirt platform answers {option}")
    return names[0]


def adapter_for(where: Libvirt | HyperV | Snapshot) -> ModuleType:
    """The adapter module of the platform answering `where`."""
    return adapter_module(platform_for(where))
