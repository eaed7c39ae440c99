"""`nestvirt status` over an inventory of separate libvirt daemons on this machine (issue 15):
two session daemons of two users (each its own libvirtd process and socket), one of them
stopped with SIGKILL (its socket stays, nobody listens), and the system daemon behind a
proxy that answers every reply 0.2 s late. The run finishes with per-host results; the
stopped host is a row with NV-H30, not an abort; the slow host answers within --timeout."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import domain_xml

from .libvirt_proxy import Proxy

USERS = ("nvfleet1", "nvfleet2")


def session_daemon(user: str, runtime: Path, created: list[str]) -> subprocess.Popen[bytes]:
    """`libvirtd` in session mode as `user`, its socket under `runtime`; a user made here is
    added to `created` (removed again after the test)."""
    if subprocess.run(["id", user], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", user], check=True)
        created.append(user)
    account = pwd.getpwnam(user)
    runtime.mkdir(parents=True)
    os.chown(runtime, account.pw_uid, account.pw_gid)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": account.pw_dir,
           "XDG_RUNTIME_DIR": str(runtime), "USER": user}  # fmt: skip
    daemon = subprocess.Popen(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups",
         "libvirtd"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sock = runtime / "libvirt" / "libvirt-sock"
    deadline = time.monotonic() + 30
    while not sock.is_socket():  # poll for the daemon's socket, bounded
        assert daemon.poll() is None and time.monotonic() < deadline, f"{user}'s libvirtd"
        time.sleep(0.05)
    return daemon


def uri_of(runtime: Path) -> str:
    return f"qemu:///session?socket={runtime / 'libvirt' / 'libvirt-sock'}"


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[dict[str, str]]:
    base = Path(f"/tmp/nvfleet-{uuid.uuid4().hex[:6]}")  # short: unix socket paths are short
    daemons = []
    created: list[str] = []
    slow = None
    try:
        for user in USERS:
            daemons.append(session_daemon(user, base / user, created))
        daemons[1].send_signal(signal.SIGKILL)  # a stopped host: the socket stays, nobody listens
        daemons[1].wait(timeout=30)
        slow = Proxy(tmp_path / "slow.sock", delay=0.2)
        yield {"one": uri_of(base / USERS[0]), "stopped": uri_of(base / USERS[1]),
               "slow": slow.uri}  # fmt: skip
    finally:
        if slow is not None:
            slow.close()
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(base)], check=False)
        for user in created:
            subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)


def test_inventory_of_separate_daemons(fleet: dict[str, str], tmp_path: Path) -> None:
    import libvirt

    conn = libvirt.open(fleet["one"])
    name = f"nvtest-fleet-{uuid.uuid4().hex[:6]}"
    conn.defineXML(domain_xml(name, type="qemu", memory=128))  # a VM of that user's daemon
    try:
        inventory = tmp_path / "fleet.txt"
        inventory.write_text("".join(f"{uri}  # {label}\n" for label, uri in fleet.items()))
        done = subprocess.run(
            [sys.executable, "-m", "nestvirt", "status", "--inventory", str(inventory),
             "--json", "--timeout", "20"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        conn.lookupByName(name).undefine()
        conn.close()
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    rows = {row["uri"]: row for row in json.loads(done.stdout)}
    assert list(rows) == list(fleet.values())
    one = rows[fleet["one"]]
    assert one["error"] is None and name in {vm["name"] for vm in one["status"]["vms"]}
    slow = rows[fleet["slow"]]
    assert slow["error"] is None and slow["status"]["schema"] == "nestvirt.status/1"
    # it was slow (every reply held 0.2 s; a status makes more than 5 calls), and waited for
    assert slow["seconds"] >= 1.0
    stopped = rows[fleet["stopped"]]
    assert stopped["error"]["code"] == "NV-H30" and stopped["error"]["problem"] == "unreachable"
