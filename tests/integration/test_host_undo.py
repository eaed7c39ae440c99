"""`nestvirt host enable` / `host undo` / `host history` through the one write flow, on a
fake host tree (NESTVIRT_HOST_ROOT → HostPaths.under: every path, modprobe included, lives
under the test's directory; the real /etc and /dev/kvm are never touched) and, as root,
one round trip on this very host's /dev/kvm.

Crashes are real: a nestvirt process is killed with SIGKILL while its journal entry is
pending (found on disk before the kill), and the next command settles it.
"""

from __future__ import annotations

import grp
import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nestvirt import hostconf
from nestvirt.cli import main
from nestvirt.journal import Journal

KVM_GID = grp.getgrnam("kvm").gr_gid
OLD_CONF = "# the administrator's own\noptions kvm_amd nested=0\n"
VENV = Path(sys.executable).parent


def make_root(root: Path, *, conf: str | None = None, users: int = 0) -> Path:
    """An AMD host with kvm_amd nested=0, /dev/kvm root 0600, udev installed, a modprobe
    that flips the fake module's parameter (and logs its calls)."""
    nested = root / "sys/module/kvm_amd/parameters/nested"
    nested.parent.mkdir(parents=True)
    nested.write_text("0\n")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    for pid in range(users):
        fd = root / "proc" / str(100 + pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "3").symlink_to(root / "dev/kvm")
    (root / "dev").mkdir()
    (root / "dev/kvm").write_text("")
    os.chown(root / "dev/kvm", -1, 0)
    os.chmod(root / "dev/kvm", 0o600)
    (root / "etc/udev/rules.d").mkdir(parents=True)
    if conf is not None:
        (root / "etc/modprobe.d").mkdir(parents=True)
        (root / "etc/modprobe.d/nestvirt-kvm.conf").write_text(conf)
        os.chmod(root / "etc/modprobe.d/nestvirt-kvm.conf", 0o640)
    (root / "sbin").mkdir()
    modprobe = root / "sbin/modprobe"
    modprobe.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {root}/modprobe.log\n'
        'if [ -n "$NV_PAUSE" ]; then echo paused > "$NV_PAUSE"; read line < "$NV_HOLD"; fi\n'
        f'if [ "$1" = -r ]; then echo 0 > {nested}; else echo 1 > {nested}; fi\n'
    )
    modprobe.chmod(0o755)
    return root


def tree(root: Path, skip: tuple[str, ...] = ("sys", "modprobe.log")) -> dict[str, Any]:
    """Every path under root: type, mode, group, bytes (what 'byte for byte' means here)."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.split("/")[0] in skip:
            continue
        st = path.lstat()
        body = (
            path.read_bytes()
            if stat.S_ISREG(st.st_mode)
            else os.readlink(path)
            if path.is_symlink()
            else None
        )
        found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_gid, body)
    return found


@pytest.fixture()
def root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(hostconf.ENV_HOST_ROOT, str(tmp_path / "root"))
    monkeypatch.delenv("NV_PAUSE", raising=False)
    return tmp_path / "root"


def journal(root: Path) -> Journal:
    return Journal(*hostconf.HostSubject(hostconf.HostPaths.under(root)).key)


@pytest.mark.parametrize("conf", [None, OLD_CONF], ids=["no-modprobe-d", "own-conf-0640"])
def test_enable_then_undo_restores_byte_for_byte(
    root: Path, conf: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root, conf=conf)
    before = tree(root)
    assert main(["host", "enable", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "host: applied (journal entry #1)" in out and "verified: kvm_amd nested=1" in out
    assert (root / "modprobe.log").read_text() == "-r kvm_amd\nkvm_amd\n"  # a real reload
    kvm = (root / "dev/kvm").stat()
    assert (kvm.st_gid, stat.S_IMODE(kvm.st_mode)) == (KVM_GID, 0o660)
    assert (
        (root / "etc/modprobe.d/nestvirt-kvm.conf")
        .read_text()
        .endswith("options kvm_amd nested=1\n")
    )
    assert (root / "etc/udev/rules.d/65-nestvirt-kvm.rules").read_text() == hostconf.UDEV_RULE
    enabled = tree(root)
    assert enabled != before

    assert main(["host", "enable", "--yes"]) == 0  # a second run: nothing to change
    assert "host: nothing to change" in capsys.readouterr().out
    assert tree(root) == enabled and len(journal(root).entries()) == 1

    assert main(["host", "undo", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "host: applied (journal entry #2)" in out
    assert (
        "keeps nested as it is until it is reloaded" in out
    )  # the runtime value: said, not reverted
    assert tree(root) == before  # files gone or back (content and mode), /dev/kvm root 0600
    assert (root / "etc/modprobe.d").exists() == (conf is not None)

    assert main(["host", "undo", "--yes"]) == 2  # undo is a stack: nothing older
    assert "nothing to undo" in capsys.readouterr().err
    assert main(["host", "history", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.history/1" and doc["vm"] == "host"
    assert [
        (e["seq"], e["action"], e["status"], e["undone"], e["undoes"]) for e in doc["entries"]
    ] == [
        (1, "enable", "done", True, None),
        (2, "undo", "done", False, 1),
    ]


def test_dry_run_changes_nothing_and_json_keeps_its_shape(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root)
    before = tree(root)
    assert main(["host", "enable", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing changed" in out
    modprobe_file = root / "etc/modprobe.d/nestvirt-kvm.conf"
    assert f"+++ {modprobe_file} (mode 0644)\n" in out and "+options kvm_amd nested=1\n" in out
    assert f"-group root (gid 0), mode 0600\n+group kvm (gid {KVM_GID}), mode 0660\n" in out
    assert main(["host", "enable", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert tree(root) == before and not (root / "modprobe.log").exists()
    assert journal(root).entries() == []
    # nestvirt.host-plan/1: every key it had, with its type; the flow's keys only added
    assert {
        k: type(v)
        for k, v in doc.items()
        if k in ("changes", "notes", "applied", "changed", "messages")
    } == {"changes": list, "notes": list, "applied": bool, "changed": bool, "messages": list}
    assert (
        doc["schema"] == "nestvirt.host-plan/1"
        and doc["applied"] is False
        and doc["changed"] is False
    )
    assert [c["action"] for c in doc["changes"]] == [
        hostconf.WRITE_MODPROBE,
        hostconf.RELOAD_MODULE,
        hostconf.KVM_PERMISSIONS,
        hostconf.WRITE_UDEV,
    ]
    assert set(doc["changes"][0]) == {"code", "action", "command", "summary"}
    assert (
        doc["action"] == "enable"
        and doc["journal_seq"] is None
        and "+options kvm_amd" in doc["diff"]
    )

    assert main(["host", "enable", "--yes", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["applied"], done["changed"], done["journal_seq"]) == (True, True, 1)
    assert done["messages"] == ["kvm_amd nested=1", f"{root}/dev/kvm is kvm 0660"]
    enabled = tree(root)
    assert main(["host", "undo", "--dry-run"]) == 0  # an undo's dry run changes nothing either
    assert "dry run: nothing changed" in capsys.readouterr().out
    assert tree(root) == enabled and len(journal(root).entries()) == 1


def test_undo_refuses_a_host_changed_since_unless_forced(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root, users=1)  # a VM runs: no reload
    before = tree(root)
    assert main(["host", "enable", "--yes"]) == 0
    assert not (root / "modprobe.log").exists()
    os.chmod(root / "dev/kvm", 0o666)  # someone else changes the device afterwards
    capsys.readouterr()
    assert main(["host", "undo", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "was changed after nestvirt's change #1" in err and "--force" in err
    assert stat.S_IMODE((root / "dev/kvm").stat().st_mode) == 0o666
    assert main(["host", "undo", "--dry-run"]) == 0
    shown = capsys.readouterr()
    assert "-group kvm (gid" in shown.out and "nestvirt: without --force: " in shown.err
    assert "--force would discard these changes made outside nestvirt:" in shown.out
    assert "mode 0666" in shown.out.split("--force would discard")[1]
    assert main(["host", "undo", "--yes", "--force"]) == 0
    assert tree(root) == before


def test_not_root_and_no_terminal_change_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root)
    before = tree(root)
    asked = subprocess.run(
        [str(VENV / "nestvirt"), "host", "enable"], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, env=os.environ.copy(), timeout=120,
    )  # fmt: skip
    assert asked.returncode == 2 and asked.stderr.count("\n") == 1
    assert "no terminal to ask on" in asked.stderr and "Traceback" not in asked.stderr
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["host", "enable", "--yes"]) == 2
    assert "run it as root" in capsys.readouterr().err
    assert tree(root) == before and journal(root).entries() == []


# ------------------------------------------------------------------ crashes (SIGKILL)

PAUSE_BEFORE_WRITE = """
import sys
from nestvirt import enable, hostconf

class Paused(hostconf.HostSubject):
    def write(self, plan, definition):
        print("paused", flush=True)  # the journal entry is on disk, nothing written yet
        sys.stdin.readline()
        return super().write(plan, definition)

enable.run(Paused(), enable.ENABLE, enable.FlowOptions(), show=lambda o: None,
           confirm=lambda o: True)
"""


def _wait_line(stream: Any, timeout: float = 60.0) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "the child never reached its pause"
    return str(stream.readline())


def _pending(root: Path) -> list[int]:
    return [e.seq for e in journal(root).entries() if e.status == "pending"]


def test_kill_between_the_journal_entry_and_the_write_is_settled(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root)
    before = tree(root)
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_WRITE], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        assert _wait_line(child.stdout) == "paused\n"
        assert _pending(root) == [1]  # write-ahead: the entry exists before any change
        assert main(["host", "enable", "--yes"]) == 2  # one writer at a time
        busy = capsys.readouterr().err
        assert f"another nestvirt (pid {child.pid})" in busy
        assert "this host's KVM configuration" in busy and "VM 'host'" not in busy
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert tree(root) == before
    assert main(["host", "history"]) == 0  # the next command settles it
    captured = capsys.readouterr()
    assert "journal entry #1 (enable," in captured.err and "was not applied" in captured.err
    assert "#1 " in captured.out and " failed " in captured.out
    assert _pending(root) == []
    assert main(["host", "undo", "--yes"]) == 2  # nothing was applied: nothing to undo
    assert main(["host", "enable", "--yes"]) == 0
    assert main(["host", "undo", "--yes"]) == 0
    assert tree(root) == before


def test_kill_in_the_middle_of_the_write_is_settled_as_applied(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real CLI, killed while its (fake) modprobe runs: the files and /dev/kvm are
    written, the entry still pending; the next command finds the change applied."""
    make_root(root)
    before = tree(root)
    pause, hold = tmp_path / "pause", tmp_path / "hold"
    os.mkfifo(pause)
    os.mkfifo(hold)
    env = {**os.environ, "NV_PAUSE": str(pause), "NV_HOLD": str(hold)}
    reader = os.open(pause, os.O_RDONLY | os.O_NONBLOCK)
    holder = os.open(hold, os.O_RDWR)  # keeps the script's `read` blocked until we go
    child = subprocess.Popen(
        [str(VENV / "nestvirt"), "host", "enable", "--yes"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with os.fdopen(reader) as paused:
            assert _wait_line(paused) == "paused\n"
        assert _pending(root) == [1]
        os.killpg(child.pid, signal.SIGKILL)  # nestvirt and its modprobe
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        os.close(holder)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert (root / "etc/modprobe.d/nestvirt-kvm.conf").exists()
    assert main(["host", "history", "--json"]) == 0
    captured = capsys.readouterr()
    assert (
        "journal entry #1 (enable," in captured.err
        and "was applied; now recorded as done" in captured.err
    )
    assert [e["status"] for e in json.loads(captured.out)["entries"]] == ["done"]
    assert main(["host", "undo", "--yes"]) == 0
    assert tree(root) == before


# ------------------------------------------------------------------ this very host


@pytest.mark.skipif(os.geteuid() != 0, reason="changes /dev/kvm")
def test_this_host_enable_and_undo_round_trip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/kvm root 0600 → host enable → kvm 0660 → host undo → root 0600 again; left at
    kvm 0660 in the end (scripts/setup.sh and every VM test rely on it)."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        pytest.skip("no /dev/kvm")
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv(hostconf.ENV_HOST_ROOT, raising=False)
    real = hostconf.HostPaths()
    others = {
        p: p.read_bytes() if p.exists() else None for p in (real.modprobe_file, real.udev_file)
    }
    try:
        os.chown(kvm, -1, 0)
        os.chmod(kvm, 0o600)
        assert main(["host", "enable", "--yes"]) == 0
        assert (kvm.stat().st_gid, stat.S_IMODE(kvm.stat().st_mode)) == (KVM_GID, 0o660)
        assert main(["host", "undo", "--yes"]) == 0
        assert (kvm.stat().st_gid, stat.S_IMODE(kvm.stat().st_mode)) == (0, 0o600)
        assert "applied (journal entry #2)" in capsys.readouterr().out
    finally:
        os.chown(kvm, -1, KVM_GID)
        os.chmod(kvm, 0o660)
    assert {p: p.read_bytes() if p.exists() else None for p in others} == others


@pytest.mark.parametrize(
    "before",
    ["not json", '{"schema": "nestvirt.host-config/1"}', '{"schema": "nestvirt.host-config/9"}',
     '{"/etc/passwd": "root::0:0::/:/bin/sh\\n"}'],
)  # fmt: skip
def test_an_entry_that_is_no_host_definition_is_refused_in_one_line(
    root: Path, before: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_root(root)
    live = hostconf.definition_of(hostconf.HostPaths.under(root))
    book = journal(root)
    book.finish(book.begin("enable", "host", before, after=live), live)
    state = tree(root)
    assert main(["host", "undo", "--yes", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "host definition" in err or "not restoring it" in err or "host-config/1" in err
    assert tree(root) == state and not Path("/etc/passwd").read_text().startswith("root::0")
