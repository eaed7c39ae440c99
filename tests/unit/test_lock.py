"""The per-VM lock, with two real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestvirt import lock
from nestvirt.errors import Busy

HOLDER = """
import sys, time
from nestvirt import lock
with lock.vm_lock("qemu:///system", "uuid-1", "vm1"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path))
    return tmp_path


def _hold(seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ))  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_fails_clearly_then_succeeds() -> None:
    proc = _hold(30)
    try:
        busy = rf"another nestvirt \(pid {proc.pid}\) is changing VM 'vm1'"
        with pytest.raises(Busy, match=busy), lock.vm_lock("qemu:///system", "uuid-1", "vm1"):
            pass
        # another VM, or the same UUID on another connection, is not blocked
        with lock.vm_lock("qemu:///system", "uuid-2", "vm2"):
            pass
        with lock.vm_lock("qemu+ssh://h/system", "uuid-1", "vm1"):
            pass
    finally:
        proc.kill()
        proc.wait()
    with lock.vm_lock("qemu:///system", "uuid-1", "vm1"):  # released when the holder died
        pass


def test_wait_gets_the_lock_when_released() -> None:
    proc = _hold(0.5)
    started = time.monotonic()
    with lock.vm_lock("qemu:///system", "uuid-1", "vm1", wait=10):
        assert time.monotonic() - started < 10
    proc.wait()
