"""The probe's human report, shared by `nestvirt probe` and `python -m nestvirt.probe`.

Standard library only.
"""

from __future__ import annotations

from nestvirt.model import Finding
from nestvirt.probe.result import ProbeResult
from nestvirt.vocabulary import HARDWARE_KVM_MODULES

MODE_LABELS = {"real": "real mode (16-bit)", "long": "long mode (64-bit)"}
HARDWARE_MODULES = HARDWARE_KVM_MODULES


def _yes(value: bool | int | None) -> str:
    return "yes" if value else "no"


def nesting_note(result: ProbeResult) -> list[str]:
    """What the result means for nesting, in a few sentences."""
    ran = any(m.ok for m in result.modes.values())
    hv = result.hypervisor
    module = result.vendor_module
    ext = "/".join(result.virt_extensions)
    lines = []
    if hv is not None and hv.present:
        lines.append(
            f"this machine is itself a guest of {hv.name or 'an unidentified hypervisor'}: "
            "a VM started here is nested (L2), two hypervisors above the hardware."
        )
    elif hv is not None:
        lines.append("no hypervisor below this machine (bare metal): VMs started here are L1.")
    if not ran:
        lines.append(
            "KVM cannot run guests here, so nothing can be nested below this machine "
            "until the findings are fixed."
        )
        return lines
    if module in HARDWARE_MODULES and ext:
        outer = ", passed through by the outer hypervisor" if hv and hv.present else ""
        lines.append(
            f"KVM here uses the CPU's {ext}{outer}: a VM started here can run its own "
            f"hypervisor when it is given {ext} (`nestvirt enable VM`) and {module}'s "
            "`nested` parameter is on."
        )
    elif module:
        lines.append(
            f"KVM here is served by {module}, not by kvm_intel/kvm_amd, and CPUID shows "
            f"{ext or 'no vmx/svm'}: guests run without hardware virtualization, so there are "
            "no extensions to expose. A VM started here can run guests of its own only with "
            f"a KVM module that needs no extensions (such as {module}) or under QEMU's TCG "
            "with an svm CPU (emulated, much slower)."
        )
    nested_state = result.capabilities.get("nested_state")
    if nested_state is not None:
        if nested_state:
            lines.append(
                f"KVM_CAP_NESTED_STATE is {int(nested_state)}: a VM running its own guests "
                "can be saved or migrated (see `nestvirt preflight`)."
            )
        else:
            lines.append(
                "KVM_CAP_NESTED_STATE is 0: do not save or migrate a VM while it runs guests "
                "of its own."
            )
    return lines


def render_text(result: ProbeResult, findings: list[Finding]) -> str:
    out = []
    module = f", module {result.vendor_module}" if result.vendor_module else ""
    api = f"KVM API {result.api_version}" if result.api_version is not None else "no KVM API"
    verdict = "runs guests" if result.ok else "cannot run guests"
    out.append(f"{result.device} {verdict} ({api}{module})")
    for mode, r in result.modes.items():
        label = MODE_LABELS.get(mode, mode)
        if r.ok:
            cost = f"{r.us_per_exit:.1f} µs/exit" if r.us_per_exit is not None else ""
            out.append(f"  {label:<20} ok      {r.exits:>4} exits  {cost}")
        elif r.failure is not None:
            out.append(f"  {label:<20} FAILED  {r.failure.stage}: {r.failure.detail}")
    if result.capabilities:
        caps = result.capabilities
        nested = caps.get("nested_state", 0)
        parts = [
            f"user memory {_yes(caps.get('user_memory'))}",
            f"irqchip {_yes(caps.get('irqchip'))}",
            f"nested state {f'yes ({nested} bytes)' if nested else 'no'}",
            f"immediate exit {_yes(caps.get('immediate_exit'))}",
        ]
        if caps.get("max_vcpus"):
            parts.append(f"max vCPUs {caps['max_vcpus']}")
        out.append("capabilities: " + ", ".join(parts))
    cpu = f"{result.cpu_vendor}, " if result.cpu_vendor else ""
    ext = ", ".join(result.virt_extensions) or "no vmx/svm"
    out.append(f"CPU: {cpu}{ext} in CPUID")
    hv = result.hypervisor
    if hv is not None:
        if hv.present:
            sig = f", CPUID signature {hv.signature!r}" if hv.signature else ""
            out.append(f"runs under: {hv.name or 'an unidentified hypervisor'}{sig}")
        else:
            out.append("runs under: no hypervisor (bare metal)")
        if hv.evidence:
            seen = "; ".join(f"{e.source} = {e.value}" for e in hv.evidence)
            out.append(f"  evidence: {seen}")
    for i, line in enumerate(nesting_note(result)):
        out.append(("nesting: " if i == 0 else "  ") + line)
    if findings:
        out.append("findings:")
        for f in findings:
            out.append(f"  {f.code} {f.severity:<7} {f.message}")
            if f.fix:
                out.append(f"  {'':<14} fix: {f.fix}")
    return "\n".join(out)
