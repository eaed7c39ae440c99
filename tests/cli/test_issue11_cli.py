"""Issue 11's smaller items, run in-process: the --memory sanity range, the guard hook's
positional arguments, Hyper-V snapshots with huge integers, libvirt errors as one line."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from nestvirt.cli import _libvirt_failure, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hyperv"
TCG_SVM = b"""<domain type='qemu'><name>--help</name>
<cpu mode='custom'><model>EPYC</model><feature policy='require' name='svm'/></cpu></domain>"""


@pytest.mark.parametrize(
    ("size", "side"),
    [("1MiB", "below 256 MiB"), ("255MiB", "below 256 MiB"), ("64TiB", "above 16 TiB"),
     ("17TiB", "above 16 TiB")],
)  # fmt: skip
def test_memory_outside_the_sane_range_needs_force(
    capsys: pytest.CaptureFixture[str], size: str, side: str
) -> None:
    # refused before any connection: the URI does not even need to exist
    code = main(["enable", "vm", "-c", "bogus:///nothing", "--memory", size, "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--memory {size} is {side}" in err and "--force" in err


def test_memory_with_force_goes_on_to_connect(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enable", "vm", "-c", "bogus:///nothing", "--memory", "1MiB", "--yes", "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "below 256 MiB" not in err and "bogus:///nothing" in err


@pytest.mark.parametrize("name", ["--help", "-h", "--", "--version", "-"])
def test_guard_hook_takes_every_word_as_an_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("NESTVIRT_GUARD_LOG", str(tmp_path / "guard.log"))
    xml = TCG_SVM.replace(b"--help", name.encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(xml)))
    assert main(["guard", "hook", name, "migrate", "begin", "-"]) == 1  # judged, refused
    out, err = capsys.readouterr()
    assert out == "" and "Usage" not in err and "NV-O01" in err


def test_guard_hook_other_operations_still_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guard", "hook", "--help", "started", "begin", "-"]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("where", ["BuildNumber", "TotalPhysicalMemory"])
def test_snapshot_with_a_100000_digit_integer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    doc = json.loads((FIXTURES / "ws2025-intel-demo.json").read_text(encoding="utf-8-sig"))
    text = json.dumps(doc)
    huge = "7" * 100_000
    value = f'"{huge}"' if where == "BuildNumber" else huge
    start = text.index(f'"{where}": ') + len(f'"{where}": ')
    end = start + len(text[start:].split(",")[0].split("}")[0])
    bad = tmp_path / "huge.json"
    bad.write_text(text[:start] + value + text[end:])
    for argv in (["status", "--snapshot", str(bad)],
                 ["enable", "DemoVM", "--snapshot", str(bad), "--dry-run"]):  # fmt: skip
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and len(err) < 400, err
        assert "Traceback" not in err


def test_a_libvirt_error_is_one_line() -> None:
    import libvirt

    exc = libvirt.libvirtError("internal error: connection closed due to keepalive timeout")
    line = _libvirt_failure(exc)
    assert line is not None and line.startswith("libvirt: ") and "--timeout" in line
    assert _libvirt_failure(ValueError("x")) is None


def test_a_wrapped_ctrl_c_is_an_interruption() -> None:
    from nestvirt.errors import from_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise RuntimeError("Error calling __set_name__") from inner
    except RuntimeError as outer:
        assert from_interrupt(outer)
    assert not from_interrupt(RuntimeError("a bug"))
