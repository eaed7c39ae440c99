"""`nestvirt lab` for real on this machine: libvirt + QEMU, positive and negative control.

Marked `qemu` (boots real guests) and `libvirt`; not skipped by default. The
first run builds the image (kernel download included, < 5 min); later ones use
the cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nestvirt.lab import cpio, image, paths

pytestmark = [pytest.mark.qemu, pytest.mark.libvirt, pytest.mark.slow]

LEVEL_KEYS = {"depth", "role", "hypervisor", "virt_extensions", "kvm_ok", "us_per_exit"}


def lab(*args: str, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "nestvirt", "lab", "--json", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout), done.stderr


def lab_leftovers() -> list[str]:
    listed = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                            capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    domains = [d for d in listed if d.startswith("nestvirt-lab-")]
    files = [p.name for p in paths.LIBVIRT_IMAGES.glob("nestvirt-lab-*")]
    return domains + files


def qemu_lab_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines()
            if "qemu-system" in line and "nestvirt-lab-" in line]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def warm_image() -> None:
    image.ensure_image()  # the cold build (if any) is not part of the runs' timings


def test_lab_runs_a_nested_guest_through_libvirt() -> None:
    before = set(lab_leftovers())
    started = time.monotonic()
    code, doc, stderr = lab()
    took = time.monotonic() - started
    assert code == 0, (doc, stderr)
    assert set(doc) == {"schema", "ok", "seconds", "accel", "levels", "findings"}
    assert doc["schema"] == "nestvirt.lab/1" and doc["ok"] is True
    assert doc["accel"] in ("kvm", "tcg")
    assert [set(level) for level in doc["levels"]] == [LEVEL_KEYS, LEVEL_KEYS]
    host, vm = doc["levels"]
    assert (host["depth"], host["role"], vm["depth"], vm["role"]) == (0, "host", 1, "lab-vm")
    assert vm["kvm_ok"] is True and vm["us_per_exit"] > 0
    assert {"svm", "vmx"} & set(vm["virt_extensions"])
    assert "NV-V01" not in [f["code"] for f in doc["findings"]]
    assert took < 60, f"warm lab took {took:.1f} s"
    assert set(lab_leftovers()) == before


def test_no_expose_is_the_negative_control() -> None:
    code, doc, stderr = lab("--no-expose")
    assert code == 1, (doc, stderr)
    assert doc["ok"] is False
    vm = doc["levels"][1]
    assert vm["kvm_ok"] is False and vm["virt_extensions"] == [] and vm["us_per_exit"] is None
    codes = [f["code"] for f in doc["findings"]]
    assert "NV-V01" in codes
    assert "NV-H05" in codes  # what the lab VM itself saw: no /dev/kvm
    assert not [d for d in lab_leftovers() if d.startswith("nestvirt-lab-")]


def test_direct_qemu_runs_the_same_lab() -> None:
    code, doc, stderr = lab("--direct")
    assert code == 0, (doc, stderr)
    assert doc["levels"][1]["kvm_ok"] is True
    assert not qemu_lab_processes()


def test_sigterm_mid_boot_leaves_nothing_running() -> None:
    before = set(lab_leftovers())
    proc = subprocess.Popen(
        [sys.executable, "-m", "nestvirt", "lab", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not qemu_lab_processes():
        time.sleep(0.1)
    assert qemu_lab_processes(), "the lab VM never started"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    # SIGTERM becomes KeyboardInterrupt, which the CLI reports as interrupted (exit 130)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (qemu_lab_processes() or set(lab_leftovers()) - before):
        time.sleep(0.1)
    assert not qemu_lab_processes()
    assert set(lab_leftovers()) == before


def test_image_build_is_reproducible(tmp_path: Path) -> None:
    kernel = image.find_kernel(None, paths.cache_dir(), lambda _m: None)
    python = image.find_python()
    sources = image.nestvirt_snapshot()
    one = cpio.write_cpio(image.initramfs_entries(kernel, python, sources, tmp_path / "a"))
    two = cpio.write_cpio(image.initramfs_entries(kernel, python, sources, tmp_path / "b"))
    assert one == two
    assert cpio.gzip_bytes(one) == cpio.gzip_bytes(two)
    assert image.image_key(image.image_inputs(kernel, python, sources)) == image.image_key(
        image.image_inputs(kernel, python, sources)
    )


def test_cache_lives_in_the_cache_dir() -> None:
    img = image.ensure_image()
    assert img.directory.is_relative_to(paths.cache_dir())
    expected = "/var/cache/nestvirt/lab" if os.geteuid() == 0 else ".cache/nestvirt/lab"
    assert expected in str(paths.cache_dir()) or "NESTVIRT_LAB_CACHE" in os.environ
