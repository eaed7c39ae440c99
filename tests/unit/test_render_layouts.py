"""The table renderer reuses a layout for findings whose words are as long as each
other's; its output must be exactly what rich prints for each table."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from nestvirt import render
from nestvirt.model import Finding, Severity

WORDS = [
    "alpha",
    "be",
    "gamma",
    "delta-long",
    "epsilon",
    "zeta",
    "η",
    "theta",
    "[asked",
    "QEMU:",
    "x]",
    "iota",
]


def findings(seed: int) -> tuple[Finding, ...]:
    out = []
    for i in range(1 + seed % 4):
        n = (seed * 7 + i * 3) % 40
        message = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(5 + n % 9))
        message = message.replace("zeta", f"vm-{seed:03d}")  # differs per VM, same length
        fix = None if i % 2 else " ".join(WORDS[(n + k) % len(WORDS)] for k in range(n % 12))
        out.append(Finding(f"NV-V0{i}", "x", list(Severity)[i % 3], message, fix))
    if seed % 10 == 0:  # a word no column fits: rich cuts it (…); no layout then
        out.append(Finding("NV-V09", "x", Severity.INFO, "y" * 300, "wide 中文 text"))
    return tuple(out)


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("width", [60, 100])
def test_layouts_print_what_rich_prints(terminal: bool, width: int) -> None:
    def console(out: io.StringIO) -> Console:
        return Console(
            file=out, highlight=False, soft_wrap=False, force_terminal=terminal, width=width
        )

    expected, got = io.StringIO(), io.StringIO()
    direct, cached = console(expected), console(got)
    layouts: dict[object, str] = {}
    for seed in range(120):
        direct.print(render.findings_table(findings(seed)))
        got.write(render.table_text(cached, findings(seed), layouts))
    assert got.getvalue() == expected.getvalue()
    assert 0 < len(layouts) < 120  # layouts were shared


def test_brackets_in_messages_are_text() -> None:
    out = io.StringIO()
    con = Console(file=out, highlight=False, width=200)
    con.print(
        render.findings_table([Finding("NV-V01", "x", Severity.ERROR, "hidden [asked QEMU: y]")])
    )
    assert "[asked QEMU: y]" in out.getvalue()
