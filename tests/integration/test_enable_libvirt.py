"""`nestvirt enable|disable|undo|history` against real libvirtd (qemu:///system) and test:///default.

Domains are named nvtest-enable-…; the `define` fixture removes them afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from nestvirt import enable, rules
from nestvirt.backends import libvirt as backend
from nestvirt.cli import main
from nestvirt.errors import CannotFix, PermissionRequired
from nestvirt.journal import Journal
from nestvirt.platforms.libvirt import LibvirtSubject

pytestmark = pytest.mark.libvirt

INTEL_MODEL = (
    "<cpu mode='custom' match='exact' check='none'><model fallback='allow'>Penryn</model></cpu>"
)
EPYC_SVM = ("<cpu mode='custom' match='exact' check='none'><model fallback='allow'>EPYC</model>"
            "<feature policy='require' name='svm'/></cpu>")  # fmt: skip


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(path))
    return path


def inactive(dom: Any) -> str:
    return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def codes_of(conn: Any, dom: Any) -> set[str]:
    facts = backend.vm_facts(conn, dom)
    return {f.code for f in rules.run(rules.Target.VM, rules.Platform.LIBVIRT, facts)}


def json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capsys.readouterr().out
    return json.loads(out)  # type: ignore[no-any-return]


def test_enable_status_idempotent_undo_identical(
    define: Callable[..., Any], qemu_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    dom = define("enable-tcg", type="qemu", memory=4096, current=1024, cpu=INTEL_MODEL,
                 devices="<memballoon model='virtio'/>")  # fmt: skip
    name = dom.name()
    before = inactive(dom)
    assert {"NV-V01", "NV-V02"} <= codes_of(qemu_conn, dom)

    assert main(["enable", name, "--yes", "--json"]) == 0
    doc = json_out(capsys)
    assert doc["schema"] == "nestvirt.plan/1" and doc["vm"] == name and doc["applied"] is True
    assert {c["action"] for c in doc["changes"]} == {"expose-virt", "static-memory"}
    assert all(set(c) == {"code", "action", "command"} for c in doc["changes"])

    after = inactive(dom)
    assert "<feature policy='require' name='svm'/>" in after and "EPYC" in after
    assert not {"NV-V01", "NV-V02"} & codes_of(qemu_conn, dom)

    assert main(["enable", name, "--yes", "--json"]) == 0  # idempotent
    again = json_out(capsys)
    assert again["changes"] == [] and again["applied"] is False
    assert main(["enable", name]) == 0
    assert "already set up for nesting" in capsys.readouterr().out
    assert inactive(dom) == after

    assert main(["undo", name, "--yes"]) == 0
    assert inactive(dom) == before  # byte for byte

    assert main(["history", name, "--json"]) == 0
    capsys.readouterr()
    assert main(["history", name, "--json"]) == 0
    history = json_out(capsys)
    assert [(e["action"], e["status"]) for e in history["entries"]] == [
        ("enable", "done"), ("undo", "done")]  # fmt: skip
    assert history["entries"][0]["undone"] is True and history["entries"][1]["undoes"] == 1
    assert main(["undo", name, "--yes"]) == 2  # nothing left to undo
    assert "nothing to undo" in capsys.readouterr().err


def test_disable_then_undo(define: Callable[..., Any], qemu_conn: Any,
                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    dom = define("enable-disable", type="qemu", cpu=EPYC_SVM)
    before = inactive(dom)
    assert "NV-V01" not in codes_of(qemu_conn, dom)
    assert main(["disable", dom.name(), "--yes"]) == 0
    assert "<feature policy='disable' name='svm'/>" in inactive(dom)
    assert "NV-V01" in codes_of(qemu_conn, dom)
    assert main(["disable", dom.name(), "--yes"]) == 0
    assert "already hidden" in capsys.readouterr().out
    assert main(["undo", dom.name(), "--yes"]) == 0
    assert inactive(dom) == before


def test_dry_run_writes_nothing(define: Callable[..., Any], state_dir: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    dom = define("enable-dry", type="qemu", cpu=INTEL_MODEL, memory=4096, current=2048)
    before = inactive(dom)
    assert main(["enable", dom.name(), "--dry-run", "--memory", "6GiB"]) == 0
    out = capsys.readouterr().out
    assert "+    <feature policy='require' name='svm'/>" in out
    assert "-  <memory unit='KiB'>4194304</memory>" in out
    assert "+  <memory unit='KiB'>6291456</memory>" in out
    assert inactive(dom) == before
    assert not (state_dir / "journal").exists()


def test_bad_input_is_one_line_exit_2(define: Callable[..., Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["enable", "nvtest-enable-no-such-vm", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no VM named 'nvtest-enable-no-such-vm'" in err
    assert main(["enable", "x", "--connect", "bogus:///nothing", "--yes"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    dom = define("enable-badmem", type="qemu", cpu=INTEL_MODEL)
    before = inactive(dom)
    assert main(["enable", dom.name(), "--memory", "lots", "--yes"]) == 2
    assert "cannot read memory size" in capsys.readouterr().err
    assert main(["enable", dom.name()]) == 2  # no terminal, no --yes
    assert "no terminal to ask on" in capsys.readouterr().err
    assert inactive(dom) == before


def test_unfixable_kvm_domain_exit_1(define: Callable[..., Any], qemu_conn: Any,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _vendor, exts = backend.host_cpu(qemu_conn)
    if exts:
        pytest.skip("this host's CPU offers vmx/svm to KVM guests")
    dom = define("enable-kvm", type="kvm", cpu=INTEL_MODEL.replace("Penryn", "Opteron_G1"))
    before = inactive(dom)
    if "NV-V01" not in codes_of(qemu_conn, dom):
        pytest.skip("NV-V01 does not fire for this domain here")
    assert main(["enable", dom.name(), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "NV-V01 cannot be fixed" in err and "neither vmx nor svm" in err
    assert inactive(dom) == before


def test_read_only_connection_changes_nothing(define: Callable[..., Any]) -> None:
    dom = define("enable-ro", type="qemu", cpu=INTEL_MODEL)
    before = inactive(dom)
    subject = LibvirtSubject("qemu:///system", dom.name())
    subject.conn = backend.open_connection("qemu:///system", readonly=True)
    subject.dom = backend.lookup_domain(subject.conn, dom.name())
    with pytest.raises(PermissionRequired, match="cannot define"):
        enable.run(subject, enable.ENABLE, enable.FlowOptions(), show=lambda o: None,
                   confirm=lambda o: True)  # fmt: skip
    assert inactive(dom) == before
    entries = Journal(*subject.key).entries()
    assert [e.status for e in entries] == ["failed"]
    assert Journal(*subject.key).last_undoable() is None


class DroppingSubject(LibvirtSubject):
    """Simulates libvirt silently dropping the change: defines the old XML again."""

    def write(self, plan: Any, definition: str) -> str:
        return super().write(plan, backend.inactive_xml(self.dom))


def test_change_that_does_not_stick_is_rolled_back(define: Callable[..., Any]) -> None:
    dom = define("enable-drop", type="qemu", cpu=INTEL_MODEL)
    before = inactive(dom)
    subject = DroppingSubject("qemu:///system", dom.name())
    with pytest.raises(CannotFix, match=r"NV-V01 still fires.*previous definition is restored"):
        enable.run(subject, enable.ENABLE, enable.FlowOptions(), show=lambda o: None,
                   confirm=lambda o: True)  # fmt: skip
    assert inactive(dom) == before
    assert [e.status for e in Journal(*subject.key).entries()] == ["rolled-back"]


def test_running_vm_needs_stop(define: Callable[..., Any],
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    dom = define("enable-run", type="qemu", memory=64, cpu=INTEL_MODEL,
                 devices="<graphics type='vnc'/><memballoon model='none'/>")  # fmt: skip
    dom.create()
    before = inactive(dom)
    assert main(["enable", dom.name(), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "is running" in err and "--stop" in err
    # SeaBIOS without an OS ignores the ACPI power button: the graceful stop times out
    assert main(["enable", dom.name(), "--yes", "--stop", "--stop-timeout", "2"]) == 2
    assert "did not shut down within 2 s" in capsys.readouterr().err
    assert dom.isActive() == 1 and inactive(dom) == before


def test_managed_save_is_discarded(define: Callable[..., Any], qemu_conn: Any,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    dom = define("enable-saved", type="qemu", memory=64, cpu=INTEL_MODEL,
                 devices="<graphics type='vnc'/><memballoon model='none'/>")  # fmt: skip
    dom.create()
    dom.managedSave(0)
    assert dom.hasManagedSaveImage(0) == 1
    assert main(["enable", dom.name(), "--yes", "--json"]) == 0
    doc = json_out(capsys)
    assert doc["changes"][0]["action"] == "discard-managed-save"
    assert dom.hasManagedSaveImage(0) == 0
    assert "NV-V01" not in codes_of(qemu_conn, dom)


def test_concurrent_enable_fails_clearly(define: Callable[..., Any], state_dir: Path,
                                         qemu_conn: Any) -> None:  # fmt: skip
    from nestvirt.backends.libvirt_session import daemon_identity

    dom = define("enable-lock", type="qemu", cpu=INTEL_MODEL)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom nestvirt import lock\n"
         "with lock.vm_lock(sys.argv[3], sys.argv[1], sys.argv[2]):\n"
         "    print('held', flush=True); time.sleep(60)\n",
         dom.UUIDString(), dom.name(), daemon_identity(qemu_conn)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = inactive(dom)
        second = subprocess.run(
            [sys.executable, "-m", "nestvirt", "enable", dom.name(), "--yes"],
            capture_output=True, text=True, env=dict(os.environ), timeout=60,
        )  # fmt: skip
        assert second.returncode == 2
        assert f"another nestvirt (pid {holder.pid}) is changing VM" in second.stderr
        assert inactive(dom) == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["enable", dom.name(), "--yes"]) == 0


# ------------------------------------------------------------- test:///default


@pytest.fixture()
def test_driver() -> Iterator[Any]:
    conn = backend.open_connection("test:///default")  # keeps the driver's state alive
    yield conn
    conn.close()


def test_stop_and_start_on_test_driver(test_driver: Any,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from tests.integration.conftest import domain_xml

    dom = test_driver.defineXML(domain_xml("nvtest-enable-stop", type="qemu", cpu=INTEL_MODEL))
    dom.create()
    assert main(["enable", dom.name(), "--connect", "test:///default", "--yes", "--stop",
                 "--json"]) == 0  # fmt: skip
    doc = json_out(capsys)
    assert [c["action"] for c in doc["changes"]] == ["stop", "expose-virt", "start"]
    assert dom.isActive() == 1
    assert "name='svm'" in inactive(dom)
