"""The human status output shows the facts a user looks for, read independently here."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nestvirt.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hyperv"


@pytest.mark.parametrize("name", ["ws2025-intel-demo.json", "ws2019-amd.json"])
def test_windows_host_lines(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = json.loads((FIXTURES / name).read_text(encoding="utf-8-sig"))
    system = snapshot["host"]["Win32_OperatingSystem"]
    system = system[0] if isinstance(system, list) else system
    main(["status", "--snapshot", str(FIXTURES / name)])
    out = capsys.readouterr().out
    assert f"(build {int(system['BuildNumber'])})" in out


def test_unknown_facts_read_as_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    main(["status", "--snapshot", str(FIXTURES / "unknown-facts.json")])
    out = capsys.readouterr().out
    assert "{'unknown'" not in out and "unknown" in out


def test_linux_host_lines_show_dev_kvm(capsys: pytest.CaptureFixture[str]) -> None:
    st = os.stat("/dev/kvm")
    main(["status", "--host-only"])
    out = capsys.readouterr().out
    assert f"/dev/kvm {stat.S_IMODE(st.st_mode):04o}" in out
    assert "KVM probe: guests ran" in out
