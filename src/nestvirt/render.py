"""Human output with rich (imported only here) and JSON output. Data to stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from nestvirt.model import Finding, HostReport, Severity, StatusReport, Verdict

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.NOT_READY: "bold red"}


def print_json(document: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def console(out: TextIO | None = None) -> Any:
    from rich.console import Console

    return Console(file=out or sys.stdout, highlight=False, soft_wrap=False)


def findings_table(findings: Iterable[Finding]) -> Any:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1), expand=False)
    table.add_column("code", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("finding")
    table.add_column("fix")
    for f in findings:
        style = SEVERITY_STYLE[f.severity]
        table.add_row(f.code, f"[{style}]{f.severity}[/]", f.message, f.fix or "")
    return table


def _heading(title: str, verdict: Verdict) -> str:
    return f"[bold]{title}[/]  [{VERDICT_STYLE[verdict]}]{verdict}[/]"


def host_summary(host: HostReport) -> list[str]:
    """A few lines of the facts a user looks for first."""
    facts = host.facts
    lines = []
    if "cpu_vendor" in facts and "kvm_device" in facts:
        flags = ", ".join(facts.get("cpu_virt_flags") or []) or "no vmx/svm flags"
        modules = ", ".join(facts.get("kvm_vendor_modules") or []) or "no KVM vendor module"
        nested = ", ".join(f"{m} nested={v}" for m, v in (facts.get("nested") or {}).items())
        lines.append(
            f"CPU {facts['cpu_vendor']} ({flags}); {modules}" + (f"; {nested}" if nested else "")
        )
        device = facts["kvm_device"]
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
    elif "build" in facts and "cpu_manufacturer" in facts:
        caption, build = _shown(facts.get("os_caption")), _shown(facts["build"])
        lines.append(f"{caption} (build {build})")
        lines.append(f"CPU {_shown(facts['cpu_manufacturer'])} {_shown(facts.get('cpu_name'))}")
        present = facts.get("hypervisor_present")
        running = "running" if present is True else "not running" if present is False else "?"
        feature = _shown(facts.get("hyperv_feature_state"))
        lines.append(f"Hyper-V feature {feature}, hypervisor {running}")
    return lines


def _shown(value: Any) -> str:
    """A fact as text; an Unknown (JSON {"unknown": reason}) as "unknown"."""
    if isinstance(value, dict) and "unknown" in value:
        return "unknown"
    return "?" if value is None else str(value)


def print_status(report: StatusReport, out: TextIO | None = None) -> None:
    con = console(out)
    host = report.host
    con.print(_heading(f"Host {host.name} ({host.platform})", host.verdict))
    for line in host_summary(host):
        con.print(f"  {line}")
    if host.findings:
        con.print(findings_table(host.findings))
    for vm in report.vms:
        con.print()
        con.print(_heading(f"VM {vm.name} ({vm.backend}, {vm.state})", vm.verdict))
        if vm.findings:
            con.print(findings_table(vm.findings))
    con.print()
    ready = sum(vm.verdict is Verdict.READY for vm in report.vms)
    vms = f"; VMs ready for nesting: {ready}/{len(report.vms)}" if report.vms else ""
    con.print(f"host {host.verdict}{vms}. `nestvirt explain CODE` tells more.")
