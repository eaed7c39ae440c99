"""render.plain_table lays out the findings table by hand; it must print exactly what rich
prints for the same table, at any width, or step aside (None) for rich."""

from __future__ import annotations

import io

from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from nestvirt import render
from nestvirt.model import Finding, Severity

# words of every length from one letter to wider than any column, runs of spaces, the
# characters rich treats specially in markup; now and then (one text in ten or so) a character rich
# must lay out itself, where plain_table steps aside
_WORD = st.one_of(
    st.text(alphabet="abcdefghij-./`'=", min_size=1, max_size=12),
    st.text(alphabet="xyz", min_size=13, max_size=120),
    st.sampled_from(["[asked", "QEMU:", "x]", "[bold]", ":smile:", "<cpu/>", "$MAC"]),
)
_ODD = st.sampled_from([""] * 60 + ["η", "中文", "…", "\t", "a\nb", "\x00"])
_SPACES = st.text(alphabet=" ", min_size=1, max_size=4)
_TEXT = st.tuples(
    st.sampled_from(["", "", "", " ", "   "]),
    st.lists(st.tuples(_WORD, _SPACES), max_size=30),
    _ODD,
).map(lambda t: t[0] + "".join(w + s for w, s in t[1]) + t[2])
_CODE = st.one_of(
    st.from_regex(r"NV-[HVGC][0-9]{2}", fullmatch=True),
    st.text(alphabet="NV-ab0 ", max_size=12),
    st.sampled_from(["NV-V01"] * 30 + ["[b]", "a:b:"]),
)
_FINDING = st.builds(
    lambda code, severity, message, fix, cut: Finding(
        code, "x", severity, message.rstrip() if cut else message, fix or None
    ),
    _CODE,
    st.sampled_from(list(Severity)),
    _TEXT,
    _TEXT,
    st.booleans(),
)


def rich_text(findings: list[Finding], width: int) -> str:
    out = io.StringIO()
    Console(file=out, highlight=False, soft_wrap=False, width=width).print(
        render.findings_table(findings)
    )
    return out.getvalue()


@settings(max_examples=400, deadline=None)
@given(st.lists(_FINDING, min_size=1, max_size=5), st.integers(min_value=1, max_value=220))
@example([Finding("NV-V01", "x", Severity.ERROR, "y" * 300, "wide text")], 80)
@example([Finding("NV-V01", "x", Severity.INFO, "a  " * 40 + "b", "")], 30)
@example([Finding("NV-V01", "x", Severity.WARNING, " lead   trail   ", " x")], 12)
def test_plain_table_prints_what_rich_prints(findings: list[Finding], width: int) -> None:
    plain = render.plain_table(findings, width)
    if plain is not None:
        assert plain == rich_text(findings, width)


def test_plain_table_lays_out_ordinary_findings() -> None:
    """The usual case is laid out by hand (not handed back to rich), at usual widths."""
    findings = [
        Finding("NV-V01", "x", Severity.ERROR, "svm hidden from the guest: " * 5, "virsh edit"),
        Finding("NV-V02", "x", Severity.INFO, "currentMemory 32 MiB is below memory", None),
        Finding("NV-V03", "x", Severity.WARNING, "y" * 200, "a very long fix " * 9),
    ]
    for width in (40, 80, 132, 250):
        plain = render.plain_table(findings, width)
        assert plain is not None
        assert plain == rich_text(findings, width)


@settings(max_examples=400, deadline=None)
@given(_TEXT, st.integers(min_value=1, max_value=120))
def test_line_by_line_cuts_where_word_by_word_cuts(text: str, width: int) -> None:
    """_divide (the fast way, for text that starts with a word) against _divide_words
    (divide_line's own steps), and both against rich's divide_line itself."""
    from rich._wrap import divide_line
    from rich.text import Text

    if not (text.isascii() and text.isprintable()):
        return

    def rich_cuts(text: str) -> list[str]:
        return [str(line) for line in Text(text).divide(divide_line(text, width, fold=False))]

    assert render._divide_words(text, width) == rich_cuts(text)
    if text[:1] != " ":
        assert render._divide(text, width) == rich_cuts(text)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_FINDING, max_size=4),
    st.lists(
        st.tuples(
            st.from_regex(r"vm-[a-z0-9]{1,30}", fullmatch=True), st.lists(_FINDING, max_size=4)
        ),
        max_size=6,
    ),
    st.integers(min_value=20, max_value=160),
)
def test_print_status_prints_what_rich_prints(
    host_findings: list[Finding], vms: list[tuple[str, list[Finding]]], width: int
) -> None:
    """A whole status report to a file: with plain_table, and with rich laying out every
    table (plain_table stepping aside), byte for byte."""
    from unittest import mock

    from nestvirt.model import HostReport, StatusReport, VmReport

    report = StatusReport(
        HostReport("h", "linux", {}, tuple(host_findings), ("CPU x", "/dev/kvm 0660")),
        tuple(VmReport(name, "libvirt", "off", tuple(f)) for name, f in vms),
    )

    def printed() -> str:
        out = io.StringIO()
        with mock.patch.object(
            render,
            "console",
            lambda o=None: Console(file=o, highlight=False, soft_wrap=False, width=width),
        ):
            render.print_status(report, out)
        return out.getvalue()

    laid_out_here = printed()
    with mock.patch.object(render, "plain_table", lambda findings, width: None):
        assert laid_out_here == printed()
