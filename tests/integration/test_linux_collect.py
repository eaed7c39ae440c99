"""`nestvirt collect --linux` on this machine, with a running QEMU that holds a secret, and
`status --snapshot` reading the file back. Nothing secret may reach the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

SECRET = "TOPSECRET-4242"


def test_collect_then_status_snapshot(tmp_path: Path) -> None:
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S",
         "-name", "guest=nvsnap", "-object", f"secret,id=sec0,data={SECRET}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out = tmp_path / "snap.json"
        env = {**os.environ, "NESTVIRT_TEST_PASSWORD": SECRET}
        done = subprocess.run([sys.executable, "-m", "nestvirt", "collect", "--linux", "-o",
                               str(out)], capture_output=True, text=True, env=env, timeout=120,
                              check=False)  # fmt: skip
    finally:
        qemu.kill()
        qemu.wait()
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert SECRET not in text and "NESTVIRT_TEST_PASSWORD" not in text
    doc = json.loads(text)
    assert doc["schema"] == "nestvirt.linux-snapshot/1"
    assert set(doc) == {"schema", "collected_at", "nestvirt", "host", "kernel", "kvm_parameters",
                        "cpu", "qemu", "dmesg"}  # fmt: skip
    assert doc["kernel"]["release"] == os.uname().release
    assert "kvm" in doc["kvm_parameters"]
    (mine,) = [p for p in doc["qemu"]["processes"] if p["pid"] == qemu.pid]
    assert "secret,id=sec0,data=<redacted>" in mine["argv"]
    assert doc["host"]["facts"]["guest"]["hypervisor"]["signature"]  # hypervisor evidence
    status = subprocess.run([sys.executable, "-m", "nestvirt", "status", "--snapshot", str(out),
                             "--json"], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert status.returncode in (0, 1) and "Traceback" not in status.stderr, status.stderr
    report = json.loads(status.stdout)
    live = subprocess.run([sys.executable, "-m", "nestvirt", "status", "--host-only", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    codes = sorted(f["code"] for f in report["host"]["findings"])
    assert codes == sorted(f["code"] for f in json.loads(live.stdout)["host"]["findings"])
