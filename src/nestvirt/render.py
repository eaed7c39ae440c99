"""Human output with rich (imported only here) and JSON output. Data to stdout."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain
from typing import Any, TextIO

from nestvirt.model import Finding, Severity, StatusReport, Verdict

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.NOT_READY: "bold red"}


def print_json(document: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json_text(document) + "\n")


# Below this many items in its longest list a document is written by the standard
# encoder: importing orjson (3-4 ms) costs more than it saves on one host's report.
SMALL_DOCUMENT = 64


def _small(document: Any) -> bool:
    if isinstance(document, list):
        return len(document) < SMALL_DOCUMENT
    if isinstance(document, dict):
        return not any(isinstance(v, list) and len(v) >= SMALL_DOCUMENT for v in document.values())
    return True


def json_text(document: Any) -> str:
    """`json.dumps(document, indent=2, ensure_ascii=False)`, through orjson for a large
    document: the standard encoder is pure Python once it indents (0.15 s of a 1,000-VM
    status). The same bytes, except that orjson writes a float in exponent form without a
    leading zero (1e-9, not 1e-09)."""
    if _small(document):
        return json.dumps(document, indent=2, ensure_ascii=False)
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
    """findings_table(findings) as `con` prints it: laid out here (plain_table) when `con`
    prints no styles, else from a cached layout when one fits."""
    if con.color_system is None:
        plain = plain_table(findings, con.width)
        if plain is not None:
            return plain
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


# ---------------------------------------------------------------- rich's layout, by hand
#
# findings_table as rich prints it without styles (a console writing to a file or pipe),
# for text whose every character is one cell wide (printable ASCII): rich's own steps
# (Table._calculate_column_widths and _collapse_widths, _ratio.ratio_reduce, Padding,
# Text.wrap with _wrap.divide_line, overflow "ellipsis") in a few lines each, without its
# segments. Anything else (other characters, markup in a code, columns too narrow to hold
# a character) answers None, and rich lays the table out. tests/unit/test_render_layouts.py
# compares the two on random findings and widths.

_HEADERS = ("code", "severity", "finding", "fix")
_NO_WRAP = (True, True, False, False)
_WORD = re.compile(r"\s*\S+\s*")
_TRAILING_SPACE = re.compile(r"\s+$")
_NON_SPACE = re.compile(r"\S")


def plain_table(findings: Iterable[Finding], width: int) -> str | None:
    """findings_table(findings) as a style-less rich Console `width` wide prints it; None
    where this layout is not known to be rich's (then ask rich)."""
    rows = [_HEADERS]
    for f in findings:
        row = (f.code, str(f.severity), f.message, f.fix or "")
        for text in row:
            if not (text.isascii() and text.isprintable()):
                return None
        if "[" in row[0] or ":" in row[0]:  # markup, emoji codes
            return None
        rows.append(row)
    longest = tuple(max(map(len, column)) for column in zip(*rows, strict=True))
    widths = _column_widths(longest, width)
    if min(widths) < 3:
        return None
    code_w, severity_w, finding_w, fix_w = inner = [w - 2 for w in widths]
    blanks = [" " * w for w in inner]
    lines: list[str] = []
    for code, severity, message, fix in rows:
        laid: tuple[tuple[str, ...], ...] = (
            _one_line(code, code_w),
            _one_line(severity, severity_w),
            _cell_lines(message, finding_w),
            _cell_lines(fix, fix_w),
        )
        height = max(len(laid[2]), len(laid[3]))
        if height > 1:  # shorter cells go on with blank lines
            laid = tuple(
                c if len(c) == height else (*c, *(blank,) * (height - len(c)))
                for c, blank in zip(laid, blanks, strict=True)
            )
        lines.extend(f" {a}  {b}  {c}  {d} " for a, b, c, d in zip(*laid, strict=True))
    if sum(widths) > width:  # Console.print crops what is wider than the console
        lines = [line[:width] for line in lines]
    lines.append("")
    return "\n".join(lines)


@lru_cache(maxsize=1024)
def _column_widths(longest: tuple[int, ...], max_width: int) -> tuple[int, ...]:
    """Table._calculate_column_widths for padded (0, 1) text cells whose longest texts
    are `longest` long: each step of Padding's and Text's measures comes down to the
    longest text plus the padding (the column's maximum; its minimum is never used)."""

    def widest(length: int, max_width: int) -> int:
        return 0 if max_width < 1 else min(length + 2, max_width)

    widths = [widest(n, max_width) or 1 for n in longest]
    if sum(widths) > max_width:
        widths = _collapse(widths, [not no_wrap for no_wrap in _NO_WRAP], max_width)
        if sum(widths) > max_width:  # last resort, reduce columns evenly
            excess = sum(widths) - max_width
            widths = _ratio_reduce(excess, [1] * len(widths), widths, widths)
        widths = [widest(n, w) for n, w in zip(longest, widths, strict=True)]
    return tuple(widths)


def _collapse(widths: list[int], wrapable: list[bool], max_width: int) -> list[int]:
    """Table._collapse_widths."""
    total = sum(widths)
    excess = total - max_width
    while total and excess > 0:
        widest = max(w for w, wrap in zip(widths, wrapable, strict=True) if wrap)
        second = max(
            w if wrap and w != widest else 0 for w, wrap in zip(widths, wrapable, strict=True)
        )
        difference = widest - second
        ratios = [
            1 if w == widest and wrap else 0 for w, wrap in zip(widths, wrapable, strict=True)
        ]
        if not any(ratios) or not difference:
            break
        widths = _ratio_reduce(excess, ratios, [min(excess, difference)] * len(widths), widths)
        total = sum(widths)
        excess = total - max_width
    return widths


def _ratio_reduce(
    total: int, ratios: list[int], maximums: list[int], values: list[int]
) -> list[int]:
    """rich._ratio.ratio_reduce."""
    ratios = [ratio if most else 0 for ratio, most in zip(ratios, maximums, strict=True)]
    total_ratio = sum(ratios)
    if not total_ratio:
        return values[:]
    remaining = total
    result = []
    for ratio, most, value in zip(ratios, maximums, values, strict=True):
        if ratio and total_ratio > 0:
            distributed = min(most, round(ratio * remaining / total_ratio))
            result.append(value - distributed)
            remaining -= distributed
            total_ratio -= ratio
        else:
            result.append(value)
    return result


@lru_cache(maxsize=256)
def _one_line(text: str, width: int) -> tuple[str]:
    """A no_wrap cell: Text.truncate(width, overflow ellipsis, pad)."""
    return (text[: width - 1] + "\u2026" if len(text) > width else text.ljust(width),)


@lru_cache(maxsize=4096)  # many VMs share a message, or a fix, word for word
def _cell_lines(text: str, width: int) -> tuple[str, ...]:
    """Text.wrap(width, justify left, overflow ellipsis): lines exactly `width` long."""
    if len(text) <= width:
        return (text.ljust(width),)
    pieces = _divide_words(text, width) if text[0] == " " else _divide(text, width)
    lines = []
    for piece in pieces:
        if len(piece) > width:  # Text.rstrip_end, then truncate with an ellipsis
            space = _TRAILING_SPACE.search(piece)
            if space is not None:
                piece = piece[: len(piece) - min(len(space.group()), len(piece) - width)]
            if len(piece) > width:
                lines.append(piece[: width - 1] + "\u2026")
                continue
        lines.append(piece.ljust(width))
    return tuple(lines)


def _divide_words(text: str, width: int) -> list[str]:
    """`text` cut where _wrap.divide_line(text, width, fold=False) cuts it: word by word."""
    pieces, start, offset = [], 0, 0
    for match in _WORD.finditer(text):
        at, word = match.start(), match.group()
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width or (offset and at):
            if at:
                pieces.append(text[start:at])
                start = at
            offset = len(word)
    pieces.append(text[start:])
    return pieces


def _divide(text: str, width: int) -> list[str]:
    """_divide_words for text that starts with a word, line by line: a word fits when it
    ends within `width` of the line's start; the line ends before the first that does not
    (a word wider than a line has one to itself)."""
    pieces, start, size = [], 0, len(text)
    while start + width < size:
        edge = start + width
        if text[edge] == " ":  # the words up to edge fit; the line ends at the next one
            cut = _NON_SPACE.search(text, edge)
            if cut is None:
                break
            end = cut.start()
        else:
            end = text.rfind(" ", start, edge) + 1
            if end <= start:  # the word at start is wider than the line
                space = text.find(" ", start)
                cut = None if space < 0 else _NON_SPACE.search(text, space)
                if cut is None:
                    break
                end = cut.start()
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def _heading(title: str, verdict: Verdict) -> str:
    return f"[bold]{title}[/]  [{VERDICT_STYLE[verdict]}]{verdict}[/]"


_SLOT = "NESTVIRT-SLOT"


def _capture(con: Any, renderable: Any) -> str:
    with con.capture() as captured:
        con.print(renderable)
    return str(captured.get())


def print_status(report: StatusReport, out: TextIO | None = None) -> None:
    con = console(out)
    host = report.host
    con.print(_heading(f"Host {host.name} ({host.platform})", host.verdict))
    for line in host.summary:
        con.print(f"  {line}")
    # rich's layout is the cost of a 1,000-VM report: without styles (a file, a pipe) the
    # tables are laid out here (plain_table, and rich.table is never imported), else
    # tables alike are laid out once (table_text); each heading's styling is made once.
    width, plain = con.width, con.color_system is None  # each asks the terminal
    write = con.file.write
    if host.findings:
        text = plain_table(host.findings, width) if plain else None
        if text is None:
            con.print(findings_table(host.findings))
        else:
            write(text)
    layouts: dict[Any, str] = {}
    verdicts = {v: _capture(con, _heading(_SLOT, v)).split(_SLOT) for v in Verdict}
    for vm in report.vms:
        title = f"VM {vm.name} ({vm.backend}, {vm.state})"
        if len(title) + len(vm.verdict) + 2 < width and "[" not in title:
            before, after = verdicts[vm.verdict]
            write(f"\n{before}{title}{after}")
        else:  # rich wraps what is too wide
            con.print()
            con.print(_heading(title, vm.verdict))
        if vm.findings:
            text = plain_table(vm.findings, width) if plain else None
            write(text if text is not None else table_text(con, vm.findings, layouts))
    con.print()
    ready = sum(vm.verdict is Verdict.READY for vm in report.vms)
    vms = f"; VMs ready for nesting: {ready}/{len(report.vms)}" if report.vms else ""
    con.print(f"host {host.verdict}{vms}. `nestvirt explain CODE` tells more.")
