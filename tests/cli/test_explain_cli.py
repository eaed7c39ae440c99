"""`nestvirt explain`: the registry's text, in-process."""

from __future__ import annotations

import json

import pytest

from nestvirt import rules
from nestvirt.cli import main


def test_explain_prints_every_heading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "NV-H09"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NV-H09 kvm-device-hidden-from-libvirt (warning")
    for heading in rules.HEADINGS:
        assert f"## {heading}" in out


def test_explain_json_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(r["code"], r["platform"]) for r in listed} == {
        (r.code, str(r.platform)) for r in rules.all_rules()
    }


def test_explain_unknown_code_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "NV-Q77"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "NV-Q77" in captured.err


def test_unknown_command_and_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert main(["status", "--no-such-option"]) == 2
