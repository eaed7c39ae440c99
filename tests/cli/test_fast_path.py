"""`nestvirt status --host-only [--json]` without click (nestvirt.cli._fast_status) says
exactly what the click path says: real processes, compared.

The fast path is what the console entry point (`nestvirt`, `python -m nestvirt`) runs;
`nestvirt.cli.main(argv)` is always the click path. Timings (µs per exit) and the free
memory differ between any two runs and are masked; everything else must be equal.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from nestvirt import cli

FAST = [sys.executable, "-m", "nestvirt"]
CLICK = [sys.executable, "-c", "import sys; from nestvirt.cli import main; sys.exit(main(sys.argv[1:]))"]  # fmt: skip

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs read/write /dev/kvm"
)


def _run(prefix: list[str], argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([*prefix, *argv], text=True, timeout=120, check=False, **streams)


def _masked(text: str) -> str:
    """Timings and free memory as X: the only values two honest runs disagree on."""
    text = re.sub(r'"(us_per_exit|mem_available_bytes)": [0-9.eE+-]+', r'"\1": X', text)
    return re.sub(r"[0-9.]+ µs/exit", "X µs/exit", text)


def _stderr(text: str) -> str:
    """stderr without traceback frames (the two paths raise through different frames),
    and an encoding error's position masked (it moves with the timings before it)."""
    text = re.sub(r"in position \d+", "in position N", text)
    return "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("  ", "Traceback (most recent call last)"))
    )


def _agree(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    fast, slow = _run(FAST, argv, **kwargs), _run(CLICK, argv, **kwargs)
    assert (fast.returncode, _stderr(fast.stderr)) == (slow.returncode, _stderr(slow.stderr))
    assert _masked(fast.stdout) == _masked(slow.stdout)
    return fast


@needs_kvm
@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--host-only", "--json"],
        ["status", "--json", "--host-only"],
        ["status", "--host-only"],
    ],
)
def test_the_fast_path_says_what_click_says(argv: list[str]) -> None:
    done = _agree(argv)
    assert done.returncode in (0, 1), done.stderr
    if "--json" in argv:
        document = json.loads(done.stdout)
        assert document["schema"] == "nestvirt.status/1" and document["vms"] == []
        assert document["host"]["facts"]["probe"]["modes"]["real"]["exits"] == 200
    else:
        assert "KVM probe: guests ran" in done.stdout


@needs_kvm
@pytest.mark.parametrize("argv", [["status", "--host-only", "--json"], ["status", "--host-only"]])
def test_a_closed_stdout_ends_alike(argv: list[str]) -> None:
    """click turns EPIPE into exit 1 (and quiet flushes); the fast path hands the error to
    click's own handling, so both end the same."""
    read, write = os.pipe()
    os.close(read)
    try:
        fast = _run(FAST, argv, stdout=write, stderr=subprocess.PIPE)
        slow = _run(CLICK, argv, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (fast.returncode, _stderr(fast.stderr)) == (slow.returncode, _stderr(slow.stderr))
    assert fast.returncode == 1, fast.stderr


@needs_kvm
def test_an_unencodable_stdout_fails_alike() -> None:
    """The table says µs; an ASCII-only stdout makes both paths fail (or cope) the same way."""
    done = _agree(["status", "--host-only"], env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode in (0, 1, 3)


@needs_kvm
def test_debug_from_the_environment_changes_nothing_here() -> None:
    _agree(["status", "--host-only", "--json"], env={**os.environ, "NESTVIRT_DEBUG": "1"})


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--host-only", "--help"],
        ["status", "--host-only", "--bogus"],
        ["status", "--host-only", "some-vm"],
        ["status", "--host-only", "--json", "--json"],
        ["--debug", "status", "--host-only", "--bogus"],
        ["status", "--host-only", "--hyperv", "--json"],
        ["status"[:4], "--host-only"],
    ],
)
def test_other_arguments_go_to_click(argv: list[str]) -> None:
    """Anything but the exact fast-path arguments is click's (its errors and help)."""
    assert not cli._fast_argv(argv)
    done = _agree(argv)
    assert done.returncode in (0, 1, 2), done.stderr


def test_only_the_exact_arguments_take_the_fast_path() -> None:
    assert cli._fast_argv(["status", "--host-only"])
    assert cli._fast_argv(["status", "--host-only", "--json"])
    assert cli._fast_argv(["status", "--json", "--host-only"])
    assert not cli._fast_argv(["status", "--json"])
    assert not cli._fast_argv(["status"])
    assert not cli._fast_argv(["status", "--host-only", "-h"])
    assert not cli._fast_argv(["explain", "--host-only"])


def test_shell_completion_goes_to_click() -> None:
    env = {**os.environ, "_NESTVIRT_COMPLETE": "bash_complete", "COMP_WORDS": "nestvirt st"}
    env["COMP_CWORD"] = "1"
    done = _agree(["status", "--host-only"], env=env)
    assert done.returncode == 0 and "status" in done.stdout


def _imports(argv: list[str]) -> set[str]:
    """The modules `python -m nestvirt ARGV` imported, read from -X importtime."""
    done = _run([sys.executable, "-X", "importtime", "-m", "nestvirt"], argv)
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@needs_kvm
def test_the_fast_path_runs_without_click_and_the_libvirt_flows() -> None:
    fast = _imports(["status", "--host-only", "--json"])
    assert "nestvirt.status" in fast and "nestvirt.render" in fast
    assert not {"click", "nestvirt.enable", "nestvirt.preflight", "rich"} & fast
    assert "click" in _imports(["status", "--host-only", "--json", "--timeout", "5"])


def test_the_fast_path_passes_what_the_click_command_would() -> None:
    """FAST_STATUS_ARGS are what the click command, parsing `--host-only [--json]`, hands
    to status(), and the fast path's probe is the one status.host_report() asks for."""
    from nestvirt.cli.status import command
    from nestvirt.status import host_report

    for argv in (["--host-only"], ["--host-only", "--json"]):
        params = command.make_context("status", list(argv)).params
        assert (params["vms"], params["connects"], params["inventory"]) == ((), (), None)
        assert params["as_json"] is ("--json" in argv)
        passed = {
            "connect": None,
            "host_only": params["host_only"],
            "hyperv": params["hyperv"],
            "snapshot": params["snapshot"],
            "timeout": params["timeout"],
        }
        assert passed == cli.FAST_STATUS_ARGS
    probe_timeout = inspect.signature(host_report).parameters["probe_timeout"].default
    assert probe_timeout == cli.FAST_PROBE_TIMEOUT


def _normal(document: dict[str, Any]) -> str:
    return _masked(json.dumps(document, indent=2, sort_keys=True))


@needs_kvm
def test_status_answers_host_only_with_the_host_report() -> None:
    """What _status_command relies on: status() with the click path's arguments is
    StatusReport(host_report()), with no notes."""
    from nestvirt.model import StatusReport
    from nestvirt.status import host_report, status

    via_status = status([], **cli.FAST_STATUS_ARGS)
    direct = StatusReport(host_report())
    assert via_status.notes == direct.notes == ()
    assert _normal(via_status.to_json()) == _normal(direct.to_json())
