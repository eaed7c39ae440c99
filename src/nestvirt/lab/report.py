"""Step 4: one level per depth where nestvirt ran its probe, as the `nestvirt.lab/1` contract.

Pure: built from the host's ProbeResult (depth 0) and the guest's framed report
(depth 1, see guest.py), so it is tested with plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestvirt.model import Finding, Severity
from nestvirt.probe.result import ProbeResult

SCHEMA = "nestvirt.lab/1"
MODE_ORDER = ("real", "long")  # the µs/exit shown: the real-mode I/O loop, else long mode


@dataclass(frozen=True, slots=True)
class Level:
    depth: int
    role: str  # "host" | "lab-vm"
    hypervisor: str | None  # the hypervisor this depth runs under, by name
    virt_extensions: tuple[str, ...]
    kvm_ok: bool  # a guest at depth+1 ran here
    us_per_exit: float | None  # that guest's exit cost
    dev_kvm: bool | None = None  # for people: whether /dev/kvm was there
    detail: str | None = None  # for people: why kvm_ok is false, modules loaded, …

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "role": self.role,
            "hypervisor": self.hypervisor,
            "virt_extensions": list(self.virt_extensions),
            "kvm_ok": self.kvm_ok,
            "us_per_exit": self.us_per_exit,
        }


@dataclass(frozen=True, slots=True)
class LabReport:
    ok: bool
    seconds: float
    accel: str  # "kvm" | "tcg"
    levels: tuple[Level, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default=())  # for people (stderr), not in the JSON
    accel_reason: str = ""  # for people: why this accel

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "accel": self.accel,
            "levels": [level.to_json() for level in self.levels],
            "findings": [f.to_json() for f in self.findings],
        }


def _us(modes: dict[str, Any]) -> float | None:
    for name in MODE_ORDER:
        mode = modes.get(name)
        us = (
            getattr(mode, "us_per_exit", None)
            if not isinstance(mode, dict)
            else mode.get("us_per_exit")
        )
        ok = getattr(mode, "ok", None) if not isinstance(mode, dict) else mode.get("ok")
        if ok and us is not None:
            return round(float(us), 2)
    return None


def host_level(probe: ProbeResult | None, error: str | None = None) -> Level:
    """Depth 0: this machine, from its own probe run in-process."""
    if probe is None:
        return Level(0, "host", None, (), False, None, None, error or "the probe did not run")
    hypervisor = None
    if probe.hypervisor is not None and probe.hypervisor.present:
        hypervisor = probe.hypervisor.name or probe.hypervisor.signature
    detail = None
    if probe.failure is not None:
        detail = f"{probe.failure.stage}: {probe.failure.detail}"
    elif probe.vendor_module:
        detail = f"/dev/kvm served by {probe.vendor_module}"
    return Level(
        0, "host", hypervisor, tuple(probe.virt_extensions), bool(probe.ok),
        _us(dict(probe.modes)) if probe.ok else None, probe.api_version is not None, detail,
    )  # fmt: skip


def guest_level(guest: dict[str, Any]) -> Level:
    """Depth 1: what the lab VM saw and whether its probe (the depth-2 guest) ran."""
    probe = guest.get("probe") or {}
    hyper = probe.get("hypervisor") or guest.get("hypervisor") or {}
    hypervisor = (hyper.get("name") or hyper.get("signature")) if hyper.get("present") else None
    ok = bool(probe.get("ok"))
    modules = guest.get("modules") or []
    failed = [f"{m['name']}: {m.get('error') or 'failed'}" for m in modules if not m.get("ok")]
    if guest.get("error"):
        detail = guest["error"]
    elif failed:
        detail = "insmod " + "; ".join(failed)
    elif guest.get("probe_error"):
        detail = guest["probe_error"]
    elif not ok:
        detail = "the probe did not run a guest"
    else:
        detail = f"{guest.get('vendor_module')} nested={guest.get('nested_param')}"
    return Level(
        1, "lab-vm", hypervisor, tuple(guest.get("virt_extensions") or ()), ok,
        _us(probe.get("modes") or {}) if ok else None, guest.get("dev_kvm"), detail,
    )  # fmt: skip


def guest_findings(guest: dict[str, Any]) -> list[Finding]:
    """The lab VM's own probe findings, said to be from depth 1."""
    found = []
    for item in (guest.get("probe") or {}).get("findings") or []:
        found.append(
            Finding(
                item["code"],
                item.get("name", ""),
                Severity(item.get("severity", "error")),
                f"lab VM (depth 1): {item.get('message', '')}",
                item.get("fix"),
            )
        )
    return found


def what_guest_saw(level: Level) -> str:
    ext = ", ".join(level.virt_extensions) or "no svm/vmx"
    kvm = "/dev/kvm" if level.dev_kvm else "no /dev/kvm"
    return f"{ext}, {kvm}"


def build(
    *, accel: str, seconds: float, host: Level, guest: dict[str, Any] | None,
    findings: list[Finding], notes: list[str] | None = None, accel_reason: str = "",
) -> LabReport:  # fmt: skip
    """The whole report; ok means the nested guest (depth 2) ran inside the lab VM."""
    levels = [host]
    all_findings = list(findings)
    if guest is not None:
        level = guest_level(guest)
        levels.append(level)
        all_findings += guest_findings(guest)
    ok = len(levels) > 1 and levels[1].kvm_ok
    return LabReport(
        ok, seconds, accel, tuple(levels), tuple(all_findings), tuple(notes or ()), accel_reason
    )
