"""`nestvirt probe` and `python -m nestvirt.probe` on the real /dev/kvm: exit codes, JSON,
the report, and a user without access to /dev/kvm (NV-H05, exit 1, no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nestvirt.cli import main

SRC = Path(__file__).parents[2] / "src"
AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
PROBE_KEYS = ["schema", "ok", "api_version", "modes", "hypervisor", "virt_extensions", "findings"]


def module_probe(
    *args: str, python: str = sys.executable, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, python, "-S", "-m", "nestvirt.probe", *args],
        env={"PYTHONPATH": str(SRC), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nestvirt_probe_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("/dev/kvm runs guests (KVM API 12")
    assert lines[1].split()[:6] == ["real", "mode", "(16-bit)", "ok", "200", "exits"]
    assert lines[2].split()[:6] == ["long", "mode", "(64-bit)", "ok", "200", "exits"]
    assert "capabilities: user memory yes" in out
    assert "runs under: " in out
    assert "nesting: " in out


def test_nestvirt_probe_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--json", "--timeout", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == PROBE_KEYS
    assert doc["schema"] == "nestvirt.probe/1"
    assert doc["ok"] is True
    assert doc["api_version"] == 12
    assert {m: (r["ok"], r["exits"]) for m, r in doc["modes"].items()} == {
        "real": (True, 200),
        "long": (True, 200),
    }
    assert all(r["us_per_exit"] > 0 for r in doc["modes"].values())
    assert list(doc["hypervisor"]) == ["present", "signature", "name"]
    for finding in doc["findings"]:
        assert list(finding) == ["code", "name", "severity", "message", "fix"]
        assert finding["severity"] != "error"


@pytest.mark.parametrize("timeout", ["0", "-1", "abc"])
def test_nestvirt_probe_bad_timeout_is_a_usage_error(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "--timeout", timeout]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_module_probe_json_standard_library_only() -> None:
    done = module_probe("--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert list(doc) == PROBE_KEYS
    assert doc["ok"] is True
    assert done.stderr == ""


def test_module_probe_report() -> None:
    done = module_probe("--timeout", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/dev/kvm runs guests")


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "x"], ["--bogus"]])
def test_module_probe_usage_errors_exit_2(args: list[str]) -> None:
    done = module_probe(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_module_probe_missing_device_exits_1_with_nv_h05() -> None:
    done = module_probe("--json", "--device", "/nonexistent/kvm")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert doc["api_version"] is None
    errors = [f for f in doc["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["NV-H05"]
    assert "does not exist" in errors[0]["message"]


# --- a user without access to /dev/kvm ---------------------------------------------------------


def unprivileged_python() -> str:
    """An interpreter the user nobody can run (the venv's may live under /root)."""
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if not candidate:
            continue
        check = "import sys; assert sys.version_info >= (3, 11)"
        probe = subprocess.run([*AS_NOBODY, candidate, "-c", check], capture_output=True)
        if probe.returncode == 0:
            return candidate
    pytest.fail("no Python >= 3.11 that the user nobody can execute")


def denied_device(directory: Path, force_node: bool = False) -> str:
    """/dev/kvm when nobody cannot open it; else a node for the same device, root 0600,
    in a directory nobody can enter (so the refusal is the node's mode, not the path's)."""
    info = os.stat("/dev/kvm")
    if not force_node and not info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        return "/dev/kvm"
    node = directory / "kvm"
    os.mknod(node, 0o600 | stat.S_IFCHR, info.st_rdev)
    return str(node)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the user nobody")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.parametrize("force_node", [False, True], ids=["dev-kvm", "private-node"])
def test_user_without_access_gets_nv_h05_exit_1_no_traceback(force_node: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        device = denied_device(Path(directory), force_node)
        done = run_as_nobody(device)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert doc["modes"]["real"] == {"ok": False, "exits": 0, "us_per_exit": None}
    errors = [f for f in doc["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["NV-H05"]
    assert errors[0]["name"] == "kvm-device-inaccessible"
    assert "not readable and writable" in errors[0]["message"]


def run_as_nobody(device: str) -> subprocess.CompletedProcess[str]:
    return module_probe(
        "--json",
        *(["--device", device] if device != "/dev/kvm" else []),
        python=unprivileged_python(),
        prefix=AS_NOBODY,
    )
