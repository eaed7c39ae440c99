"""Human output with rich (imported only here) and JSON output. Data to stdout."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from itertools import chain
from typing import Any, TextIO

from nestvirt.model import Finding, HostReport, Severity, StatusReport, Verdict

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.NOT_READY: "bold red"}


def print_json(document: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json_text(document) + "\n")


def json_text(document: Any) -> str:
    """`json.dumps(document, indent=2, ensure_ascii=False)` through orjson where it can: the
    standard encoder is pure Python once it indents (0.15 s of a 1,000-VM status). The same
    bytes, except that a float in exponent form loses a leading zero (1e-9, not 1e-09)."""
    import orjson

    try:
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        return orjson.dumps(document, option=options).decode()
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, other types
        return json.dumps(document, indent=2, ensure_ascii=False)


def console(out: TextIO | None = None) -> Any:
    from rich.console import Console

    return Console(file=out or sys.stdout, highlight=False, soft_wrap=False)


def findings_table(findings: Iterable[Finding]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1), expand=False)
    table.add_column("code", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("finding")
    table.add_column("fix")
    for f in findings:
        style = SEVERITY_STYLE[f.severity]
        # Text, not markup: a message's "[asked QEMU: …]" is text, not a style tag
        table.add_row(
            f.code, Text(str(f.severity), style=style), Text(f.message), Text(f.fix or "")
        )
    return table


# Stand-ins for a cell's visible characters: rich wraps a cell by the lengths of its words
# only, so findings whose words are as long as each other's are laid out alike; each
# layout is made once and filled in with each table's own characters.
_MESSAGE, _FIX = "\ue000", "\ue001"
_WORD_CHAR = re.compile(r"\S")


def _fits_template(text: str) -> bool:
    from rich.cells import cell_len

    return _MESSAGE not in text and _FIX not in text and cell_len(text) == len(text)


def table_text(con: Any, findings: tuple[Finding, ...], layouts: dict[Any, str]) -> str:
    """findings_table(findings) as `con` prints it, from a cached layout when one fits."""
    fixes = [f.fix or "" for f in findings]
    if not all(
        _fits_template(f.message) and _fits_template(x)
        for f, x in zip(findings, fixes, strict=True)
    ):
        return _capture(con, findings_table(findings))
    shapes = tuple(
        (f.code, f.severity, _WORD_CHAR.sub(_MESSAGE, f.message), _WORD_CHAR.sub(_FIX, x))
        for f, x in zip(findings, fixes, strict=True)
    )
    if shapes not in layouts:
        stand_ins = [Finding(c, "", sev, m, x) for c, sev, m, x in shapes]
        layouts[shapes] = _capture(con, findings_table(stand_ins))
    layout = layouts[shapes]
    chars = {
        _MESSAGE: "".join("".join(f.message.split()) for f in findings),
        _FIX: "".join("".join(x.split()) for x in fixes),
    }
    if any(layout.count(mark) != len(text) for mark, text in chars.items()):
        return _capture(con, findings_table(findings))  # rich cut a word short (…)
    for mark, text in chars.items():  # split and interleave: C speed, not one call a char
        pieces = layout.split(mark)
        layout = "".join(chain.from_iterable(zip(pieces, [*text, ""], strict=True)))
    return layout


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


_SLOT = "NESTVIRT-SLOT"


def _capture(con: Any, renderable: Any) -> str:
    with con.capture() as captured:
        con.print(renderable)
    return str(captured.get())


def print_status(report: StatusReport, out: TextIO | None = None) -> None:
    con = console(out)
    host = report.host
    con.print(_heading(f"Host {host.name} ({host.platform})", host.verdict))
    for line in host_summary(host):
        con.print(f"  {line}")
    if host.findings:
        con.print(findings_table(host.findings))
    # rich's layout is the cost of a 1,000-VM report: tables alike are laid out once
    # (table_text), and each heading's styling is made once.
    layouts: dict[Any, str] = {}
    verdicts = {v: _capture(con, _heading(_SLOT, v)).split(_SLOT) for v in Verdict}
    for vm in report.vms:
        title = f"VM {vm.name} ({vm.backend}, {vm.state})"
        if len(title) + len(vm.verdict) + 2 < con.width and "[" not in title:
            before, after = verdicts[vm.verdict]
            con.file.write(f"\n{before}{title}{after}")
        else:  # rich wraps what is too wide
            con.print()
            con.print(_heading(title, vm.verdict))
        if vm.findings:
            con.file.write(table_text(con, vm.findings, layouts))
    con.print()
    ready = sum(vm.verdict is Verdict.READY for vm in report.vms)
    vms = f"; VMs ready for nesting: {ready}/{len(report.vms)}" if report.vms else ""
    con.print(f"host {host.verdict}{vms}. `nestvirt explain CODE` tells more.")
