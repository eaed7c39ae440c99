"""The rule registry: one pure function per (code, platform), documented in its docstring.

A rule yields Hit(message, fix) for each problem it sees; the registry turns
hits into Findings carrying the rule's code, name and severity. Rules read
facts only: they never touch the system (docs/architecture.md, docs/rules.md).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from nestvirt.errors import NotFound
from nestvirt.model import Finding, Severity

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any


class Target(StrEnum):
    HOST = "host"
    VM = "vm"
    OPERATION = "operation"
    GUEST = "guest"  # this machine, seen from inside: its parent hypervisor or cloud


class Platform(StrEnum):
    LINUX = "linux"  # a Linux/KVM host
    LIBVIRT = "libvirt"  # a libvirt domain
    WINDOWS = "windows"  # a Hyper-V host
    HYPERV = "hyperv"  # a Hyper-V VM
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Hit:
    """One problem a rule saw: a one-line message with real values, and a fix."""

    message: str
    fix: str | None = None
    severity: Severity | None = None  # only where a rule documents a per-case severity


Check = Callable[..., Iterable[Hit]]


@dataclass(frozen=True, slots=True)
class Rule:
    """A registered rule: its code, name, default severity, what it judges, and its check."""

    code: str
    name: str
    severity: Severity
    target: Target
    platform: str  # a Platform, or a registered platform's name (nestvirt.registry)
    check: Check
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]

    def findings(self, *facts: Any) -> list[Finding]:
        return self.wrap(self.check(*facts))

    def wrap(self, hits: Iterable[Hit]) -> list[Finding]:
        return [
            Finding(self.code, self.name, hit.severity or self.severity, hit.message, hit.fix)
            for hit in hits
        ]


HEADINGS = ("What it checks", "Why it matters", "Example", "Fix", "Sources")
CODE_PATTERN = re.compile(r"^NV-[HVOGC]\d{2}$")  # G: seen from inside a guest; C: containers, CI

# Renamed codes point to their successor; a code is never reused.
RETIRED: dict[str, str] = {}

# Modules that register rules shared by platforms, and the platforms they judge. A
# platform's own rule modules are named by its line in nestvirt.registry. `load(platform)`
# imports them on first use, only those of that platform (`status --host-only` loads the
# Linux host rules alone; docs/rules.md).
RULE_MODULES: dict[str, frozenset[str]] = {
    "nestvirt.rules.host_linux": frozenset({Platform.LINUX}),
    "nestvirt.rules.operations": frozenset({Platform.LIBVIRT, Platform.HYPERV}),
    "nestvirt.rules.guest": frozenset({Platform.LINUX}),
    "nestvirt.rules.container": frozenset({Platform.LINUX}),
    "nestvirt.rules.fleet": frozenset({Platform.LIBVIRT}),
}

_REGISTRY: dict[str, list[Rule]] = {}
_loaded: set[str] = set()  # the modules of RULE_MODULES imported so far


def rule(
    code: str, name: str, severity: Severity, *, target: Target, platform: str
) -> Callable[[Check], Check]:
    """Register a rule; the registry refuses malformed codes, clashes and missing docs."""

    def register(check: Check) -> Check:
        doc = check.__doc__ or ""
        if not CODE_PATTERN.match(code):
            raise ValueError(f"{code}: rule codes look like NV-H01")
        if code in RETIRED:
            raise ValueError(f"{code} is retired (now {RETIRED[code]}); never reuse a code")
        missing = [h for h in HEADINGS if f"## {h}" not in doc]
        if missing:
            raise ValueError(f"{code}: docstring lacks headings {missing}")
        for other in _REGISTRY.get(code, []):
            if other.name != name or other.target is not target:
                raise ValueError(f"{code}: name/target differ from {other.name}")
            if other.platform is platform:
                raise ValueError(f"{code}: registered twice for {platform}")
        for rules in _REGISTRY.values():
            if rules[0].name == name and rules[0].code != code:
                raise ValueError(f"{name}: already the name of {rules[0].code}")
        global _changes
        _changes += 1
        _REGISTRY.setdefault(code, []).append(
            Rule(code, name, severity, target, platform, check, doc)
        )
        return check

    return register


def rules_of(
    target: Target, platform: str
) -> Callable[[str, str, Severity], Callable[[Check], Check]]:
    """`@rule` with target and platform fixed: one per rule module."""

    def decorator(code: str, name: str, severity: Severity) -> Callable[[Check], Check]:
        return rule(code, name, severity, target=target, platform=platform)

    return decorator


def modules(platform: str | None = None) -> dict[str, frozenset[str]]:
    """Rule module → the platforms it judges: the shared ones and each registered
    platform's (nestvirt.registry), of `platform` only unless None."""
    from nestvirt import registry

    return {**RULE_MODULES, **registry.rule_modules(platform)}


def load(platform: str | None = None) -> None:
    """Import the rule modules of `platform` (every module: None or ANY)."""
    wanted = None if platform in (None, Platform.ANY) else platform
    for module, platforms in modules(wanted).items():
        if module in _loaded:
            continue
        if wanted is None or wanted in platforms or Platform.ANY in platforms:
            importlib.import_module(module)
            _loaded.add(module)


def _sorted(rules: Iterable[Rule]) -> list[Rule]:
    return sorted(rules, key=lambda r: (r.code, r.platform))


def all_rules() -> list[Rule]:
    load()
    return _sorted(r for rs in _REGISTRY.values() for r in rs)


# rules_for's answers (a status of 1,000 VMs asks 1,000 times), valid while neither the
# rules (_changes) nor the registered platforms (registry.generation) change
_selected: dict[tuple[Target, str], list[Rule]] = {}
_selected_for: tuple[int, int] | None = None
_changes = 0


def forget(code: str) -> None:
    """Unregister rule `code` (tests that plug a platform in and out again)."""
    global _changes
    _REGISTRY.pop(code, None)
    _changes += 1


def rules_for(target: Target, platform: str) -> list[Rule]:
    global _selected_for
    from nestvirt import registry

    if _selected_for != (_changes, registry.generation):
        _selected.clear()
    key = (target, platform)
    if key not in _selected:
        load(platform)
        _selected[key] = _sorted(
            r
            for rs in _REGISTRY.values()
            for r in rs
            if r.target is target and r.platform in (platform, Platform.ANY)
        )
    _selected_for = (_changes, registry.generation)
    return _selected[key]


def run(target: Target, platform: str, *facts: Any) -> list[Finding]:
    """Every rule for this target and platform over the facts, in code order."""
    return [f for r in rules_for(target, platform) for f in r.findings(*facts)]


def lookup(code: str) -> list[Rule]:
    load()
    wanted = code.strip().upper()
    if not wanted.startswith("NV-"):
        wanted = "NV-" + wanted
    wanted = RETIRED.get(wanted, wanted)
    if wanted not in _REGISTRY:
        for rules in _REGISTRY.values():  # a rule's name works as well as its code
            if rules[0].name == code.strip().lower():
                return list(rules)
        raise NotFound(f"no rule {code!r}: `nestvirt explain --list` shows every code")
    return list(_REGISTRY[wanted])


def findings_from(code: str, platform: str, hits: Iterable[Hit]) -> list[Finding]:
    """Findings of rule `code` for hits computed outside a rule run (probe, lab)."""
    load(platform)
    (meta,) = [
        r for r in _REGISTRY.get(code) or lookup(code) if r.platform in (platform, Platform.ANY)
    ]
    return meta.wrap(hits)
