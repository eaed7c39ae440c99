"""End to end: a TCG domain boots a real kernel; its CPU shows svm only after `nestvirt enable`.

Kernel: the lab's (nestvirt.lab.image.find_kernel: the host's, or Debian's
linux-image-amd64 from the lab cache). Initramfs: built here with the lab's cpio
writer, just static busybox and an init that prints `grep -c -w svm /proc/cpuinfo`
on the serial console and powers off — no Python, a few hundred KiB.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from nestvirt.cli import main

pytestmark = [pytest.mark.libvirt, pytest.mark.qemu, pytest.mark.slow]

BUSYBOX = Path("/bin/busybox")
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "NVTEST-SVM $(/bin/busybox grep -c -w svm /proc/cpuinfo) $(/bin/busybox grep -m1 vendor_id /proc/cpuinfo)"
/bin/busybox poweroff -f
"""
BOOT_TIMEOUT_S = 240
RESULT = re.compile(r"NVTEST-SVM (\d+) vendor_id\s*:\s*(\S+)")


@pytest.fixture(scope="module")
def boot_files() -> Iterator[Path]:
    from nestvirt.lab import cpio, image, paths

    if not BUSYBOX.exists():
        pytest.skip("no /bin/busybox (busybox-static) to build the initramfs")
    kernel = image.find_kernel(None, paths.cache_dir(), lambda _msg: None)
    directory = paths.LIBVIRT_IMAGES / f"nvtest-enable-boot-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    try:
        shutil.copy2(kernel.vmlinuz, directory / "vmlinuz")
        entries = cpio.with_parents([
            cpio.Entry.file("init", INIT.encode(), 0o755),
            cpio.Entry.file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
            cpio.Entry.chardev("dev/console", 5, 1),
        ])  # fmt: skip
        (directory / "initrd.gz").write_bytes(cpio.gzip_bytes(cpio.write_cpio(entries)))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def boot_domain_xml(name: str, files: Path, log: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{files}/vmlinuz</kernel>
    <initrd>{files}/initrd.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=3</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>Penryn</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='{log}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def boot(dom: Any, log: Path) -> tuple[int, str]:
    """Start the domain, wait for its result line on the console, stop it; (svm count, vendor)."""
    log.unlink(missing_ok=True)
    dom.create()
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    text = ""
    try:
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            match = RESULT.search(text)
            if match:
                return int(match.group(1)), match.group(2)
            if not dom.isActive():
                break
            time.sleep(0.2)
    finally:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:  # it powered itself off meanwhile
            pass
    pytest.fail(f"no NVTEST-SVM line on the console within {BOOT_TIMEOUT_S} s:\n{text[-2000:]}")


def test_enabled_tcg_domain_boots_and_shows_svm(
    qemu_conn: Any, boot_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    name = f"nvtest-enable-boot-{uuid.uuid4().hex[:8]}"
    log = boot_files / f"{name}.log"
    dom = qemu_conn.defineXML(boot_domain_xml(name, boot_files, log))
    try:
        count, vendor = boot(dom, log)
        assert count == 0, "the negative control (Penryn, before enable) already shows svm"
        assert main(["enable", name, "--yes"]) == 0
        count, vendor = boot(dom, log)
        assert count >= 1, "the enabled domain's guest CPU does not show svm"
        assert vendor == "AuthenticAMD"  # so the guest's kvm_amd would load
    finally:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
