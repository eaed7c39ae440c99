"""Plain data shared by facts, rules, plans and renderers.

Standard library only: the probe imports this inside minimal lab guests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# Every dataclass here has a docstring: without one, @dataclass computes
# inspect.signature(cls) for __doc__ at import (docs/architecture.md, "Lazy imports").


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Verdict(StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A fact that could not be read, and why. Never the same as False."""

    reason: str

    def __bool__(self) -> bool:  # an Unknown must never pass for a truthy fact
        return False


@dataclass(frozen=True, slots=True)
class Evidence:
    """One source's answer in an ordered detection (see facts/ and probe/)."""

    source: str
    value: str
    strong: bool


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one thing: code, name, severity, a one-line message, a fix."""

    code: str
    name: str
    severity: Severity
    message: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
        }


def verdict_of(findings: Iterable[Finding]) -> Verdict:
    """Ready exactly when no finding is an error (docs/contracts.md)."""
    if any(f.severity is Severity.ERROR for f in findings):
        return Verdict.NOT_READY
    return Verdict.READY


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a plan: what it does, which findings it clears, how to do it by hand."""

    action: str
    codes: tuple[str, ...]
    command: str
    summary: str = ""
    needs_stop: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"code": ",".join(self.codes), "action": self.action, "command": self.command}


PLAN_SCHEMA = "nestvirt.plan/1"


def plan_document(vm: str, changes: Iterable[Change], *, applied: bool) -> dict[str, Any]:
    """The `nestvirt.plan/1` document (docs/contracts.md), the same for every backend."""
    return {
        "schema": PLAN_SCHEMA,
        "vm": vm,
        "changes": [c.to_json() for c in changes],
        "applied": applied,
    }


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes that clear a VM's findings, and what no change can clear."""

    vm: str
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    unfixable: tuple[Finding, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.changes


def to_jsonable(value: Any) -> Any:
    """Facts dataclasses → JSON values; Unknown becomes {"unknown": reason}."""
    if isinstance(value, Unknown):
        return {"unknown": value.reason}
    if isinstance(value, StrEnum):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


class _Judged:
    """A report on one thing (the host, a VM): its verdict follows from its findings."""

    __slots__ = ()
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.findings)

    def findings_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.findings]


@dataclass(frozen=True, slots=True)
class HostReport(_Judged):
    """The host's facts and findings (nestvirt.status/1 `host`)."""

    name: str
    platform: str  # "linux" | "windows" | a registered platform's host
    facts: dict[str, Any]
    findings: tuple[Finding, ...]
    # a few lines of the facts a user looks for first, said by whoever read the facts
    # (the table view prints them; not part of the JSON contract)
    summary: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "platform": self.platform,
            "verdict": str(self.verdict),
            "facts": self.facts,
            "findings": self.findings_json(),
        }


@dataclass(frozen=True, slots=True)
class VmReport(_Judged):
    """One VM's findings (nestvirt.status/1 `vms[]`)."""

    name: str
    backend: str  # "libvirt" | "hyperv"
    state: str  # "running" | "off" | "saved" | "paused" | …
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "state": self.state,
            "verdict": self.verdict.value,
            "findings": self.findings_json(),
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What `nestvirt status` found: the nestvirt.status/1 document and notes for stderr."""

    host: HostReport
    vms: tuple[VmReport, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. "qemu:///system did not answer: …" (stderr, not JSON)

    @property
    def verdict(self) -> Verdict:
        return verdict_of([*self.host.findings, *(f for vm in self.vms for f in vm.findings)])

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "nestvirt.status/1",
            "host": self.host.to_json(),
            "vms": [vm.to_json() for vm in self.vms],
        }


__all__ = [
    "Change",
    "Evidence",
    "Finding",
    "HostReport",
    "Plan",
    "Severity",
    "StatusReport",
    "Unknown",
    "Verdict",
    "VmReport",
    "to_jsonable",
    "verdict_of",
]
