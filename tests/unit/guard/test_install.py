"""guard install / uninstall / status on a hooks directory of the test's own."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from nestvirt.cli import main
from nestvirt.guard import install as guard

TCG_SVM = b"""<domain type='qemu'><name>l1</name><cpu mode='custom'><model>EPYC</model>
<feature policy='require' name='svm'/></cpu></domain>"""


def test_render_is_a_shell_fast_path_then_this_python() -> None:
    text = guard.render_hook(python="/opt/venv/bin/python", domains="nvtest-*")
    assert text.startswith("#!/bin/sh\n") and guard.MARKER in text
    assert '"migrate begin"|"restore begin") ;;' in text
    assert "  nvtest-*) ;;" in text
    assert "exec /opt/venv/bin/python -I -S -c" in text
    with pytest.raises(guard.UsageError):
        guard.render_hook(python="python3")
    with pytest.raises(guard.UsageError):
        guard.render_hook(domains="x;rm -rf /")


def test_install_keeps_existing_hooks_and_uninstall_removes_only_ours(
    hooks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_hook = hooks / "qemu"
    main_hook.write_text("#!/bin/sh\nexit 0\n")
    main_hook.chmod(0o755)
    assert main(["guard", "install", "--yes"]) == 0
    path = hooks / "qemu.d" / "nestvirt"
    assert path.read_text() == guard.render_hook()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert main_hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert guard.status().state == "current"
    assert str(main_hook) in guard.status().other_hooks
    capsys.readouterr()
    assert main(["guard", "install", "--yes"]) == 0  # second run: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    other = hooks / "qemu.d" / "zz-other"
    other.write_text("#!/bin/sh\nexit 0\n")
    other.chmod(0o755)
    assert main(["guard", "uninstall", "--yes"]) == 0
    assert not path.exists() and other.exists() and main_hook.exists()
    assert guard.status().state == "absent"
    assert main(["guard", "uninstall", "--yes"]) == 0  # nothing left to remove


def test_uninstall_removes_the_directory_only_if_nestvirt_created_it(hooks: Path) -> None:
    assert main(["guard", "install", "--yes"]) == 0
    assert main(["guard", "uninstall", "--yes"]) == 0
    assert not (hooks / "qemu.d").exists()
    (hooks / "qemu.d").mkdir()
    assert main(["guard", "install", "--yes"]) == 0
    assert main(["guard", "uninstall", "--yes"]) == 0
    assert (hooks / "qemu.d").is_dir()


def test_a_foreign_file_is_never_touched(hooks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (hooks / "qemu.d").mkdir()
    foreign = hooks / "qemu.d" / "nestvirt"
    foreign.write_text("#!/bin/sh\necho mine\n")
    assert main(["guard", "install", "--yes"]) == 2
    assert main(["guard", "uninstall", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "not" in err
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"
    assert guard.status().state == "foreign"
    assert main(["guard", "status"]) == 1


def test_an_outdated_hook_is_replaced(hooks: Path) -> None:
    path = hooks / "qemu.d" / "nestvirt"
    path.parent.mkdir()
    path.write_text(f"#!/bin/sh\n# {guard.MARKER}\nexec /old/python\n")
    path.chmod(0o755)
    assert guard.status().state == "outdated"
    assert guard.plan_install().action == "replace"
    assert main(["guard", "install", "--yes"]) == 0
    assert guard.status().state == "current"


def test_dry_run_and_no_answer_change_nothing(
    hooks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["guard", "install", "--dry-run"]) == 0
    assert "dry run: nothing changed" in capsys.readouterr().out
    assert not (hooks / "qemu.d").exists()
    from click.testing import CliRunner

    from nestvirt.cli import app

    result = CliRunner().invoke(app, ["guard", "install"], input="n\n")
    assert "nothing changed" in result.output
    assert not (hooks / "qemu.d").exists()


def test_root_is_required(
    hooks: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["guard", "install", "--yes"]) == 2
    assert main(["guard", "uninstall", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "needs root" in err
    assert not (hooks / "qemu.d").exists()
    assert main(["guard", "install", "--dry-run"]) == 0  # a dry run changes nothing


def test_status_json(hooks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["guard", "status", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.guard-status/1" and doc["state"] == "absent"
    assert main(["guard", "install", "--yes", "--domains", "nvtest-*"]) == 0
    assert guard.status().state == "current"  # the glob it was installed with counts
    assert main(["guard", "status"]) == 0


def test_the_installed_script_runs(hooks: Path, tmp_path: Path) -> None:
    assert main(["guard", "install", "--yes", "--domains", "l*"]) == 0
    script = str(hooks / "qemu.d" / "nestvirt")
    env = {
        "PATH": "/usr/bin:/bin",
        "NESTVIRT_GUARD_LOG": str(tmp_path / "guard.log"),
        "NESTVIRT_NESTED_STATE_CAP": "0",
    }

    def call(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [script, *args], input=TCG_SVM, capture_output=True, env=env, timeout=60
        )

    assert call("l1", "started", "begin", "-").returncode == 0
    refused = call("l1", "restore", "begin", "-")
    assert refused.returncode == 1 and b"NV-O02" in refused.stderr and refused.stdout == b""
    assert call("other", "restore", "begin", "-").returncode == 0  # outside --domains
