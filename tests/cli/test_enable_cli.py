"""The enable/disable/undo/history CLI in-process on test:///default: exit codes and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nestvirt.backends import libvirt as backend
from nestvirt.cli import main

XML = """<domain type='qemu'>
  <name>nvtest-enable-cli</name>
  <memory unit='MiB'>4096</memory>
  <currentMemory unit='MiB'>2048</currentMemory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu mode='custom' match='exact'><model>Penryn</model></cpu>
</domain>"""
TEST = ["--connect", "test:///default"]


@pytest.fixture()
def vm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path))
    conn = backend.open_connection("test:///default")  # keeps the driver's state alive
    dom = conn.defineXML(XML)
    yield dom
    dom.undefine()
    conn.close()


def test_json_plan_schema(vm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enable", "nvtest-enable-cli", *TEST, "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.plan/1" and doc["applied"] is False
    assert [c["code"] for c in doc["changes"]] == ["NV-V01", "NV-V02"]
    assert all(isinstance(c["command"], str) and c["action"] for c in doc["changes"])
    assert main(["enable", "nvtest-enable-cli", *TEST, "--yes", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"schema", "vm", "changes", "applied"}
    assert doc["applied"] is True and [c["code"] for c in doc["changes"]] == ["NV-V01", "NV-V02"]


def test_usage_errors_exit_2(vm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--memory", "4 bananas"], ["--memory", "12"], []):
        assert main(["enable", "nvtest-enable-cli", *TEST, *args]) == 2
        assert capsys.readouterr().err.startswith("nestvirt: ")
    assert main(["enable", "nvtest-enable-nope", *TEST, "--yes"]) == 2
    assert main(["undo", "nvtest-enable-cli", *TEST, "--yes"]) == 2  # nothing to undo


def test_human_output_and_history(vm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enable", "nvtest-enable-cli", *TEST, "--yes", "--memory", "6GiB"]) == 0
    out = capsys.readouterr().out
    assert "set memory to 6 GiB (was 4 GiB)" in out
    # the manual command names the connection and the domain as words the shell keeps
    assert "by hand: virsh -c test:///default setmaxmem --domain nvtest-enable-cli" in out
    assert "applied (journal entry #1)" in out
    assert main(["history", "nvtest-enable-cli", *TEST]) == 0
    assert "enable   done" in capsys.readouterr().out
