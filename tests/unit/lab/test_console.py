"""The console marker parser: any chunking, CRLF, interleaved kernel lines, bad reports."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestvirt.lab import console

REPORT = {"schema": "nestvirt.lab-guest/1", "dev_kvm": True, "virt_extensions": ["svm"]}
TEXT = (
    "SeaBIOS\r\n"
    + console.BOOTED
    + "\r\n"
    + console.frame(REPORT).replace("\n", "\r\n")
    + "[ 7.1] reboot: Power down\r\n"
)


def test_whole_text() -> None:
    assert console.parse_report(TEXT) == REPORT


def test_not_yet_complete() -> None:
    cut = TEXT.index(console.END_PREFIX)
    assert console.parse_report(TEXT[:cut]) is None
    assert console.parse_report("booting…") is None


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=12))
def test_any_chunking(cuts: list[int]) -> None:
    reader = console.MarkerReader()
    bounds = [0, *sorted(cuts), len(TEXT)]
    for a, b in itertools.pairwise(bounds):
        reader.feed(TEXT[a:b])
    assert reader.booted
    assert reader.report == REPORT


def test_booted_before_report() -> None:
    reader = console.MarkerReader()
    reader.feed("x\n" + console.BOOTED + "\n")
    assert reader.booted and reader.report is None


def test_interleaved_kernel_line_is_dropped() -> None:
    framed = console.frame(REPORT)
    lines = framed.split("\n")
    mangled = "\n".join([lines[0], "[    5.0] kvm: Nested Virtualization enabled", *lines[1:]])
    assert console.parse_report(mangled) == REPORT


def test_truncated_report_is_an_error() -> None:
    framed = console.frame(REPORT).replace('"dev_kvm":true,', "")
    with pytest.raises(console.ConsoleError):
        console.parse_report(framed)


def test_not_an_object_is_an_error() -> None:
    with pytest.raises(console.ConsoleError):
        console.parse_report(f"{console.BEGIN}\n[1]\n{console.END_PREFIX} 3@@\n")
