"""The few lines of a host's facts a user looks for first, as the table view prints them.

Each function reads the JSON form of its platform's host facts (`to_jsonable`), so a
report made from a collected snapshot says the same as one made on the host. The code
that reads a host's facts picks the function (`HostReport.summary`); the renderer only
prints the lines.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any


def shown(value: Any) -> str:
    """A fact as text; an Unknown (JSON {"unknown": reason}) as "unknown"."""
    if isinstance(value, dict) and "unknown" in value:
        return "unknown"
    return "?" if value is None else str(value)


def linux_host(facts: dict[str, Any]) -> tuple[str, ...]:
    """A Linux/KVM host: CPU and KVM modules, /dev/kvm, its own hypervisor, the KVM probe."""
    flags = ", ".join(facts.get("cpu_virt_flags") or []) or "no vmx/svm flags"
    modules = ", ".join(facts.get("kvm_vendor_modules") or []) or "no KVM vendor module"
    nested = ", ".join(f"{m} nested={v}" for m, v in (facts.get("nested") or {}).items())
    lines = [
        f"CPU {shown(facts.get('cpu_vendor'))} ({flags}); {modules}"
        + (f"; {nested}" if nested else "")
    ]
    device = facts.get("kvm_device") or {}
    if device.get("exists"):
        access = "read/write" if device.get("accessible") else "no access"
        owner = f"{device.get('owner')}:{device.get('group')}"
        lines.append(f"/dev/kvm {device.get('mode')} {owner} ({access} for you)")
    hypervisor = facts.get("hypervisor") or {}
    if hypervisor.get("present"):
        lines.append(f"runs under {hypervisor.get('name') or 'a hypervisor'}")
    probe = facts.get("probe")
    if probe:
        modes = ", ".join(
            f"{name} {m['us_per_exit']:.1f} µs/exit"
            if m.get("ok") and m.get("us_per_exit")
            else f"{name} failed"
            for name, m in (probe.get("modes") or {}).items()
        )
        lines.append(
            f"KVM probe: {'guests ran' if probe.get('ok') else 'guests did not run'} ({modes})"
        )
    return tuple(lines)


def windows_host(facts: dict[str, Any]) -> tuple[str, ...]:
    """A Hyper-V host: Windows edition and build, CPU, the Hyper-V feature and hypervisor."""
    caption, build = shown(facts.get("os_caption")), shown(facts.get("build"))
    present = facts.get("hypervisor_present")
    running = "running" if present is True else "not running" if present is False else "?"
    feature = shown(facts.get("hyperv_feature_state"))
    return (
        f"{caption} (build {build})",
        f"CPU {shown(facts.get('cpu_manufacturer'))} {shown(facts.get('cpu_name'))}",
        f"Hyper-V feature {feature}, hypervisor {running}",
    )
