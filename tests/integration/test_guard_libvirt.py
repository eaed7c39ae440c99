"""The guard in a real libvirtd: `virsh save` + `virsh restore` of a running TCG domain.

The hook is installed as /etc/libvirt/hooks/qemu.d/nestvirt, limited to domains
named nvtest-guard-* (so other tests sharing this libvirtd are not judged), and
libvirtd is reloaded (SIGHUP: libvirt 9.0 re-scans its hooks on reload, no
restart needed) so it sees the new hook; both are undone afterwards.

The domains run under TCG (`<domain type='qemu'>`): for them the host's
KVM_CAP_NESTED_STATE does not apply (QEMU emulates svm) and an exposing domain
is judged unsafe on any host, so the test needs no capability override.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nestvirt.cli import main
from nestvirt.guard import install as guard
from tests.integration.conftest import NO_SVM_CPU, SVM_CPU

pytestmark = [pytest.mark.libvirt, pytest.mark.qemu, pytest.mark.slow]

HOOKS = Path("/etc/libvirt/hooks")


def _libvirtd_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True)
    pids = out.stdout.split()
    return int(pids[0]) if pids else None


def reload_libvirtd() -> None:
    pid = _libvirtd_pid()
    if pid is None:
        pytest.skip("libvirtd is not running")
    os.kill(pid, signal.SIGHUP)
    for _ in range(100):
        time.sleep(0.1)
        ok = subprocess.run(
            ["virsh", "-c", "qemu:///system", "version"], capture_output=True, timeout=30
        )
        if ok.returncode == 0:
            return
    pytest.fail("libvirtd did not answer after SIGHUP")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("installing a libvirt hook needs root")
    path = guard.hook_path(HOOKS)
    if path.exists() and not guard.is_ours(path):
        pytest.skip(f"{path} belongs to someone else")
    # through the write flow, as `nestvirt guard install --yes` (journaled)
    guard.run(guard.INSTALL, base=HOOKS, domains="nvtest-guard-*")
    assert guard.status(HOOKS).state == "current"
    reload_libvirtd()
    try:
        yield path
    finally:
        guard.run(guard.UNINSTALL, base=HOOKS)
        reload_libvirtd()


@pytest.fixture()
def saved_file() -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def _path(name: str) -> str:
        path = f"/var/tmp/{name}-{uuid.uuid4().hex[:6]}.sav"
        made.append(path)
        return path

    yield _path
    for path in made:
        Path(path).unlink(missing_ok=True)


def running(define: Callable[..., object], cpu: str) -> object:
    dom = define("guard", type="qemu", memory=128, cpu=cpu)
    dom.create()  # type: ignore[attr-defined]  # SeaBIOS finds no boot device and waits: running
    return dom


def test_restore_of_an_exposing_tcg_domain_is_refused(
    installed: Path,
    define: Callable[..., object],
    qemu_conn: object,
    saved_file: Callable[[str], str],
) -> None:
    import libvirt

    dom = running(define, SVM_CPU)
    name = dom.name()  # type: ignore[attr-defined]
    assert name.startswith("nvtest-guard-")
    assert main(["preflight", name, "save"]) == 1  # preflight says so before the save
    path = saved_file(name)
    dom.save(path)  # type: ignore[attr-defined]  # libvirt has no save hook: this goes through
    with pytest.raises(libvirt.libvirtError) as refused:
        qemu_conn.restore(path)  # type: ignore[attr-defined]
    message = str(refused.value)
    assert "nestvirt guard refuses restore of " + name in message
    assert "NV-O02 save-restore-unsafe" in message
    assert not dom.isActive()  # type: ignore[attr-defined]
    assert f"REFUSE {name} restore" in Path("/var/log/nestvirt/guard.log").read_text()


def test_start_from_a_managed_save_image_is_refused(
    installed: Path, define: Callable[..., object]
) -> None:
    import libvirt

    dom = running(define, SVM_CPU)
    dom.managedSave(0)  # type: ignore[attr-defined]
    with pytest.raises(libvirt.libvirtError, match="nestvirt guard refuses restore"):
        dom.create()  # type: ignore[attr-defined]
    assert dom.hasManagedSaveImage(0)  # type: ignore[attr-defined]  # kept for the user to decide


def test_the_same_without_exposure_succeeds(
    installed: Path,
    define: Callable[..., object],
    qemu_conn: object,
    saved_file: Callable[[str], str],
) -> None:
    dom = running(define, NO_SVM_CPU)
    name = dom.name()  # type: ignore[attr-defined]
    assert main(["preflight", name, "save"]) == 0
    path = saved_file(name)
    dom.save(path)  # type: ignore[attr-defined]
    qemu_conn.restore(path)  # type: ignore[attr-defined]
    assert dom.isActive()  # type: ignore[attr-defined]
    dom.managedSave(0)  # type: ignore[attr-defined]
    dom.create()  # type: ignore[attr-defined]  # managed-save restore goes through as well
    assert dom.isActive()  # type: ignore[attr-defined]


def test_other_operations_are_not_slowed_or_refused(
    installed: Path, define: Callable[..., object]
) -> None:
    dom = running(define, SVM_CPU)  # prepare/start/started hooks: exit 0 in the shell
    assert dom.isActive()  # type: ignore[attr-defined]
    dom.destroy()  # type: ignore[attr-defined]  # stopped/release hooks
    assert not dom.isActive()  # type: ignore[attr-defined]
