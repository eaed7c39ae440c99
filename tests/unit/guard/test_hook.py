"""The hook entry point: fast path, verdicts from the XML, fail-open, never stdout."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from nestvirt.guard import hook

TCG_SVM = b"""<domain type='qemu'><name>l1</name>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>EPYC</model>
  <feature policy='require' name='svm'/></cpu></domain>"""
TCG_HIDDEN = b"""<domain type='qemu'><name>plain</name>
  <cpu mode='custom'><model>qemu64</model><feature policy='disable' name='svm'/></cpu></domain>"""
KVM_PASSTHROUGH = b"""<domain type='kvm'><name>k1</name><cpu mode='host-passthrough'/></domain>"""


class Exploding(io.BytesIO):
    def read(self, *args: object) -> bytes:
        raise AssertionError("the fast path must not read stdin")


@pytest.fixture(autouse=True)
def log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "guard.log"
    monkeypatch.setenv(hook.ENV_LOG, str(path))
    monkeypatch.setenv("NESTVIRT_NESTED_STATE_CAP", "0")
    return path


def run(args: list[str], xml: bytes) -> tuple[int, str]:
    err = io.StringIO()
    code = hook.main(args, io.BytesIO(xml), err)
    return code, err.getvalue()


@pytest.mark.parametrize(
    "args",
    [
        ["l1", "started", "begin", "-"],
        ["l1", "prepare", "begin", "-"],
        ["l1", "release", "end", "-"],
        ["l1", "migrate", "end", "-"],
        ["l1", "restore", "end", "-"],
        [],
        ["l1"],
    ],
)
def test_everything_else_exits_0_without_reading_stdin(args: list[str]) -> None:
    assert hook.main(args, Exploding(), io.StringIO()) == 0


def test_restore_of_an_exposing_tcg_domain_is_refused(log: Path) -> None:
    code, err = run(["l1", "restore", "begin", "-"], TCG_SVM)
    assert code == 1
    assert "nestvirt guard refuses restore of l1 (NV-O02 save-restore-unsafe)" in err
    assert "Instead:" in err
    assert "REFUSE l1 restore" in log.read_text()


def test_migrate_begin_is_judged_like_restore() -> None:
    code, err = run(["l1", "migrate", "begin", "-"], TCG_SVM)
    assert code == 1 and "NV-O01" in err


def test_a_domain_without_exposure_is_allowed(log: Path) -> None:
    assert run(["plain", "restore", "begin", "-"], TCG_HIDDEN) == (0, "")
    assert "ALLOW plain restore" in log.read_text()


def test_kvm_domain_follows_the_capability_and_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    import nestvirt.preflight as pf

    monkeypatch.setattr(pf, "cpu_vendor_here", lambda: "intel")
    assert run(["k1", "migrate", "begin", "-"], KVM_PASSTHROUGH)[0] == 1
    monkeypatch.setenv("NESTVIRT_NESTED_STATE_CAP", "8192")
    assert run(["k1", "migrate", "begin", "-"], KVM_PASSTHROUGH) == (0, "")
    monkeypatch.setattr(pf, "cpu_vendor_here", lambda: "amd")
    assert run(["k1", "migrate", "begin", "-"], KVM_PASSTHROUGH)[0] == 1


def test_metadata_asserts_no_nested_guests() -> None:
    xml = TCG_SVM.replace(
        b"<name>l1</name>",
        b"<name>l1</name><metadata><nv:guard xmlns:nv='https://nestvirt.dev/xmlns/guard/1' "
        b"nested-guests='none'/></metadata>",
    )
    assert run(["l1", "restore", "begin", "-"], xml) == (0, "")


@pytest.mark.parametrize("xml", [b"", b"<domain", b"<network/>", b"\xff\xfe"])
def test_malformed_xml_fails_open_and_is_logged(xml: bytes, log: Path) -> None:
    assert run(["l1", "restore", "begin", "-"], xml) == (0, "")
    assert "ALLOW l1 restore" in log.read_text()


def test_an_internal_error_fails_open(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    import nestvirt.rules.operations as ops

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ops, "judge_facts", boom)
    assert run(["l1", "restore", "begin", "-"], TCG_SVM) == (0, "")
    assert "internal error, failing open: RuntimeError: bug" in log.read_text()


def test_an_unwritable_log_does_not_change_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hook.ENV_LOG, "/proc/nonexistent/guard.log")
    assert run(["l1", "restore", "begin", "-"], TCG_SVM)[0] == 1
    assert run(["plain", "restore", "begin", "-"], TCG_HIDDEN)[0] == 0


def test_nothing_reaches_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    run(["l1", "restore", "begin", "-"], TCG_SVM)
    print("stray print inside the hook would go to stderr", file=sys.stdout)
    assert capsys.readouterr().out.startswith("stray")  # outside main(): restored
    code = hook.main(["l1", "restore", "begin", "-"], io.BytesIO(TCG_SVM), io.StringIO())
    assert code == 1 and capsys.readouterr().out == ""


def test_as_a_process_with_isolated_python(log: Path) -> None:
    """Like the installed script: python -I -S, path set by hand, the XML on stdin."""
    src = str(Path(hook.__file__).resolve().parents[2])
    code = (
        f"import sys; sys.path.insert(0, {src!r}); "
        "from nestvirt.guard.hook import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {"PATH": "/usr/bin:/bin", hook.ENV_LOG: str(log), "NESTVIRT_NESTED_STATE_CAP": "0"}
    refused = subprocess.run(
        [sys.executable, "-S", "-c", code, "l1", "restore", "begin", "-"],
        input=TCG_SVM,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 1 and refused.stdout == b""
    assert b"NV-O02" in refused.stderr
    allowed = subprocess.run(
        [sys.executable, "-S", "-c", code, "plain", "restore", "begin", "-"],
        input=TCG_HIDDEN,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, b"", b"")


def test_cli_hook_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nestvirt.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TCG_SVM)))
    assert main(["guard", "hook", "l1", "restore", "begin", "-"]) == 1
    assert "NV-O02" in capsys.readouterr().err
    assert main(["guard", "hook", "l1", "started", "begin", "-"]) == 0


@pytest.mark.parametrize(
    "cpu",
    ["", "<cpu mode='custom'><model>EPYC</model></cpu>",
     "<cpu mode='custom'><model>qemu64</model><feature policy='forbid' name='vmx'/></cpu>"],
)  # fmt: skip
def test_kvm_named_models_carry_nothing_to_protect(cpu: str, log: Path) -> None:
    # libvirt's CPU map lists svm for qemu64 and EPYC; QEMU under KVM gives the guest none
    xml = f"<domain type='kvm'><name>plain-kvm</name>{cpu}</domain>".encode()
    code, err = run(["plain-kvm", "migrate", "begin", "-"], xml)
    assert code == 0 and err == ""
    assert "ALLOW plain-kvm migrate" in log.read_text()
