"""`nestvirt host enable`: fake host trees (tmp paths) for every branch, and this real host."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nestvirt import hostconf
from nestvirt.cli import main
from nestvirt.errors import NestvirtError


def fake_host(tmp: Path, *, vendor: str, modules: dict[str, str | None], kvm_mode: int = 0o600,
              udev: bool = True, users: int = 0) -> hostconf.HostPaths:  # fmt: skip
    (tmp / "proc").mkdir()
    for pid in range(users):
        fd = tmp / "proc" / str(100 + pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "3").symlink_to(tmp / "dev" / "kvm")
    (tmp / "cpuinfo").write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n")
    for name, nested in modules.items():
        params = tmp / "sys" / name / "parameters"
        params.mkdir(parents=True)
        if nested is not None:
            (params / "nested").write_text(nested + "\n")
    (tmp / "dev").mkdir()
    (tmp / "dev" / "kvm").write_text("")
    os.chown(tmp / "dev" / "kvm", -1, 0)
    os.chmod(tmp / "dev" / "kvm", kvm_mode)
    if udev:
        (tmp / "udev" / "rules.d").mkdir(parents=True)
    return hostconf.HostPaths(
        modprobe_d=tmp / "modprobe.d", udev_rules_d=tmp / "udev" / "rules.d",
        udev_control=tmp / "run-udev-control", kvm_device=tmp / "dev" / "kvm",
        sys_module=tmp / "sys", cpuinfo=tmp / "cpuinfo", proc=tmp / "proc",
    )  # fmt: skip


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))


def run(paths: hostconf.HostPaths, runner: Any = None, dry_run: bool = False) -> Any:
    return hostconf.host_enable(dry_run=dry_run, confirm=lambda p: True, show=lambda p: None,
                                paths=paths, runner=runner or (lambda args: None))  # fmt: skip


@pytest.fixture()
def modprobe_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostconf.shutil, "which", lambda name: f"/sbin/{name}")


@pytest.mark.usefixtures("modprobe_present")
def test_amd_nested_off_writes_reloads_verifies(tmp_path: Path) -> None:
    paths = fake_host(tmp_path, vendor="AuthenticAMD", modules={"kvm_amd": "0"})
    calls: list[list[str]] = []

    def modprobe(args: list[str]) -> None:
        calls.append(args)
        if args == ["modprobe", "kvm_amd"]:
            (paths.sys_module / "kvm_amd" / "parameters" / "nested").write_text("1\n")

    plan = hostconf.build_host_plan(hostconf.read_state(paths), paths)
    assert [c.action for c in plan.changes] == [hostconf.WRITE_MODPROBE, hostconf.RELOAD_MODULE,
                                                hostconf.KVM_PERMISSIONS, hostconf.WRITE_UDEV]  # fmt: skip
    assert run(paths, dry_run=True).applied is False
    assert not (paths.modprobe_d / hostconf.MODPROBE_FILE).exists()
    outcome = run(paths, modprobe)
    assert outcome.applied
    assert (paths.modprobe_d / hostconf.MODPROBE_FILE).read_text().endswith(
        "options kvm_amd nested=1\n")  # fmt: skip
    assert calls == [["modprobe", "-r", "kvm_amd"], ["modprobe", "kvm_amd"]]
    assert (paths.udev_rules_d / hostconf.UDEV_FILE).read_text() == hostconf.UDEV_RULE
    st = paths.kvm_device.stat()
    assert grp.getgrgid(st.st_gid).gr_name == "kvm" and stat.S_IMODE(st.st_mode) == 0o660
    assert "kvm_amd nested=1" in outcome.messages
    # second run: nothing to do
    assert hostconf.build_host_plan(hostconf.read_state(paths), paths).empty


def test_intel_with_running_vms_does_not_reload(tmp_path: Path) -> None:
    paths = fake_host(tmp_path, vendor="GenuineIntel", modules={"kvm_intel": "N"}, users=2,
                      kvm_mode=0o660, udev=False)  # fmt: skip
    os.chown(paths.kvm_device, -1, grp.getgrnam("kvm").gr_gid)
    plan = hostconf.build_host_plan(hostconf.read_state(paths), paths)
    assert [c.action for c in plan.changes] == [hostconf.WRITE_MODPROBE]
    assert any("2 process(es) use /dev/kvm" in n and "modprobe -r kvm_intel" in n
               for n in plan.notes)  # fmt: skip


def test_no_modprobe_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostconf.shutil, "which", lambda name: None)
    paths = fake_host(tmp_path, vendor="AuthenticAMD", modules={"kvm_amd": "0"})
    plan = hostconf.build_host_plan(hostconf.read_state(paths), paths)
    assert hostconf.RELOAD_MODULE not in [c.action for c in plan.changes]
    assert any("no modprobe here" in n for n in plan.notes)


def test_module_without_nested_parameter_writes_nothing(tmp_path: Path) -> None:
    paths = fake_host(tmp_path, vendor="AuthenticAMD", modules={"kvm_pvm": None}, udev=False)
    plan = hostconf.build_host_plan(hostconf.read_state(paths), paths)
    assert [c.action for c in plan.changes] == [hostconf.KVM_PERMISSIONS]
    assert any("kvm_pvm, which has no `nested` parameter" in n for n in plan.notes)
    assert any("udev is not installed" in n and "next boot" in n for n in plan.notes)


@pytest.mark.usefixtures("modprobe_present")
def test_failed_reload_is_reported(tmp_path: Path) -> None:
    paths = fake_host(tmp_path, vendor="AuthenticAMD", modules={"kvm_amd": "0"})

    def broken(args: list[str]) -> None:
        raise NestvirtError("modprobe -r kvm_amd failed: Module kvm_amd is in use")

    with pytest.raises(NestvirtError, match="in use"):
        run(paths, broken)


def test_this_host_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "enable", "--dry-run"]) == 0
    out = capsys.readouterr().out
    state = hostconf.read_state()
    if any(m not in ("kvm_intel", "kvm_amd") for m in state.loaded_vendor_modules) and not any(
        m in ("kvm_intel", "kvm_amd") for m in state.loaded_vendor_modules
    ):
        assert "has no `nested` parameter" in out or "nested parameter is" in out
    assert not Path("/etc/modprobe.d/nestvirt-kvm.conf").exists() or "write" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="changes /dev/kvm")
def test_this_host_fixes_dev_kvm(capsys: pytest.CaptureFixture[str]) -> None:
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        pytest.skip("no /dev/kvm")
    st = kvm.stat()
    try:
        os.chown(kvm, -1, 0)
        os.chmod(kvm, 0o600)
        assert main(["host", "enable", "--yes"]) == 0
        after = kvm.stat()
        assert grp.getgrgid(after.st_gid).gr_name == "kvm"
        assert stat.S_IMODE(after.st_mode) & 0o060 == 0o060
        assert "verified: /dev/kvm is kvm 0660" in capsys.readouterr().out
        assert main(["host", "enable", "--yes"]) == 0
        assert "nothing to change" in capsys.readouterr().out
    finally:  # leave it at least as open as it was (group kvm 0660 is what we want anyway)
        os.chown(kvm, -1, grp.getgrnam("kvm").gr_gid if st.st_gid == 0 else st.st_gid)
        os.chmod(kvm, stat.S_IMODE(st.st_mode) | 0o060)
