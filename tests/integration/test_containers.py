"""nestvirt in real containers on this machine: systemd-nspawn and a chroot in its own mount
namespace (issue 16).

The container root is built in a second from this machine's own merged /usr: the directory
gets the /bin, /sbin, /lib, /lib64 symlinks and a minimal /etc, and systemd-nspawn bind-mounts
/usr read-only — instead of a debootstrap, which takes minutes. Inside, the host's
/usr/bin/python3 runs nestvirt from this repository's src with the venv's site-packages on
PYTHONPATH. No systemd is PID 1 here, so nspawn runs with --register=no --keep-unit.

podman is not tested: crun cannot set RLIMIT_NOFILE in this machine's own (unprivileged)
container ("setrlimit `RLIMIT_NOFILE`: Operation not permitted").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
PYTHONPATH = f"{REPO / 'src'}:{SITE}"
HOST_KVM_GID = os.stat("/dev/kvm").st_gid
INSIDE_KVM_GID = 993 if HOST_KVM_GID != 993 else 994  # the container's own `kvm` group


def make_root(root: Path) -> Path:
    for d in ("etc", "proc", "sys", "dev", "run", "tmp", "usr", "var/tmp", str(REPO)[1:]):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\njob:x:1000:1000:CI job:/tmp:/bin/sh\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\nkvm:x:{INSIDE_KVM_GID}:\njob:x:1000:\n")
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "etc/machine-id").write_text("")
    return root


def nspawn(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        "systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(root),
        "--bind-ro=/usr", f"--bind-ro={REPO}", f"--setenv=PYTHONPATH={PYTHONPATH}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def status_inside(root: Path, *args: str) -> dict[str, Any]:
    proc = nspawn(root, *args, "/usr/bin/python3", "-m", "nestvirt", "status", "--host-only",
                  "--json")  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["schema"] == "nestvirt.status/1"
    return report


def findings(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["code"]: f for f in report["host"]["findings"]}


def test_nspawn_without_dev_kvm(tmp_path: Path) -> None:
    report = status_inside(make_root(tmp_path / "root"))
    found = findings(report)
    assert report["host"]["facts"]["container"]["kind"] == "systemd-nspawn"
    assert "container=systemd-nspawn" in found["NV-C01"]["message"]
    assert found["NV-C03"]["severity"] == "error"
    assert "--bind=/dev/kvm" in found["NV-C03"]["fix"]
    assert "DeviceAllow='/dev/kvm rw'" in found["NV-C03"]["fix"]
    assert report["host"]["verdict"] == "not-ready"


def test_nspawn_dev_kvm_bound_but_not_writable_for_the_job(tmp_path: Path) -> None:
    report = status_inside(make_root(tmp_path / "root"), "--bind=/dev/kvm", "--user=job")
    found = findings(report)
    kvm = report["host"]["facts"]["container"]["kvm"]
    assert (kvm["exists"], kvm["accessible"], kvm["gid"]) == (True, False, HOST_KVM_GID)
    assert "NV-C03" not in found
    c04 = found["NV-C04"]
    assert f"owner 0:{HOST_KVM_GID} (a GID with no name here)" in c04["message"]
    assert f"group kvm here is GID {INSIDE_KVM_GID}" in c04["message"]
    assert "job (uid 1000" in c04["message"]
    assert f"--group-add {HOST_KVM_GID}" in c04["fix"]


def test_nspawn_dev_kvm_usable(tmp_path: Path) -> None:
    report = status_inside(make_root(tmp_path / "root"), "--bind=/dev/kvm")
    found = findings(report)
    assert report["host"]["facts"]["container"]["kvm"]["accessible"] is True
    assert "NV-C01" in found
    assert not {"NV-C03", "NV-C04", "NV-H05", "NV-H07"} & set(found)
    assert report["host"]["facts"]["probe"]["ok"] is True  # the KVM probe ran guests inside


def chroot_status(
    root: Path, *, bind_root: bool
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """In a new mount namespace: /usr, this repository and /proc mounted into `root`, then chroot (optionally
    after making `root` a mount point, the documented workaround)."""
    conf = root / "etc/libvirt"
    conf.mkdir(parents=True)
    shutil.copyfile("/etc/libvirt/qemu.conf", conf / "qemu.conf")
    r = str(root)
    script = (
        (f"mount --bind {r} {r} && " if bind_root else "")
        + f"mount --rbind /usr {r}/usr && mount --bind {REPO} {r}{REPO} && "
        f"mount -t proc proc {r}/proc && "
        f"chroot {r} /usr/bin/sh -c 'mount --make-rslave / 2>&1; echo make-rslave=$?' >&2 && "
        f"PYTHONPATH={PYTHONPATH} chroot {r} /usr/bin/python3 -m nestvirt status --host-only "
        "--json"
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout), proc


def test_chroot_root_not_a_mount_point_is_libvirt_namespaces_not_kvm(tmp_path: Path) -> None:
    report, proc = chroot_status(make_root(tmp_path / "root"), bind_root=False)
    # the very call libvirt makes before exec'ing QEMU fails here: EINVAL, / is no mount point
    assert "make-rslave=32" in proc.stderr and "not mount point" in proc.stderr
    facts = report["host"]["facts"]["container"]
    assert facts["kind"] == "chroot" and facts["root_is_mount_point"] is False
    found = findings(report)
    assert "namespaces = []" in found["NV-C05"]["fix"]
    assert "nestvirt lab --direct" in found["NV-C05"]["fix"]
    assert "NV-H07" not in found


def test_chroot_into_a_mount_point_has_no_namespace_finding(tmp_path: Path) -> None:
    report, proc = chroot_status(make_root(tmp_path / "root"), bind_root=True)
    assert "make-rslave=0" in proc.stderr
    assert report["host"]["facts"]["container"]["root_is_mount_point"] is True
    assert "NV-C05" not in findings(report)


def test_nspawn_lab_direct_runs_the_nested_guest(tmp_path: Path) -> None:
    """The usable case end to end: the lab builds its image inside (apt's lists read-only from
    this machine, for the kernel package lookup) and boots it with QEMU directly."""
    root = make_root(tmp_path / "root")
    binds = [f"--bind-ro={d}" for d in ("/var/lib/apt", "/var/lib/dpkg", "/etc/apt")]
    for d in binds:
        (root / d.partition("=")[2][1:]).mkdir(parents=True, exist_ok=True)
    proc = nspawn(
        root, "--bind=/dev/kvm", *binds, "--setenv=NESTVIRT_LAB_CACHE=/var/tmp/lab-cache",
        "--setenv=NESTVIRT_LAB_STATE=/var/tmp/lab-state",
        "/usr/bin/python3", "-m", "nestvirt", "lab", "--direct", "--json",
    )  # fmt: skip
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-2000:]
    report = json.loads(proc.stdout)
    assert report["schema"] == "nestvirt.lab/1"
    assert proc.returncode == 0 and report["ok"] is True, report["findings"]
    assert [level["depth"] for level in report["levels"]] == [0, 1]
