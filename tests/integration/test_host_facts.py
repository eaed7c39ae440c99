"""Linux host facts on this very machine, checked against independent readings."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from nestvirt.facts import linux_host
from nestvirt.model import Unknown


@pytest.fixture(scope="module")
def facts() -> linux_host.LinuxHostFacts:
    return linux_host.gather()


def test_cpu_facts_match_proc_cpuinfo(facts: linux_host.LinuxHostFacts) -> None:
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in first.splitlines())
    )
    assert facts.cpu_vendor == fields["vendor_id"]
    flags = fields["flags"].split()
    assert set(facts.cpu_virt_flags) == {f for f in ("vmx", "svm") if f in flags}


def test_vendor_modules_are_loaded_kvm_modules(facts: linux_host.LinuxHostFacts) -> None:
    assert facts.kvm_vendor_modules, "CI runs on a host with KVM"
    for module in facts.kvm_vendor_modules:
        assert Path("/sys/module", module).is_dir()
    for module, value in facts.nested.items():
        assert (Path("/sys/module", module, "parameters", "nested").read_text().strip()) == value


def test_kvm_device_and_probe(facts: linux_host.LinuxHostFacts) -> None:
    st = os.stat("/dev/kvm")
    assert facts.kvm_device.exists and facts.kvm_device.mode == f"{stat.S_IMODE(st.st_mode):04o}"
    assert facts.kvm_device.group == grp.getgrgid(st.st_gid).gr_name
    assert facts.probe is not None and facts.probe.api_version == 12


def test_memory_is_read(facts: linux_host.LinuxHostFacts) -> None:
    assert isinstance(facts.mem_available_bytes, int) and facts.mem_available_bytes > 0


def test_firmware_check_is_quiet_when_msr_unreadable(tmp_path: Path) -> None:
    assert isinstance(linux_host.firmware_virt("AuthenticAMD", str(tmp_path / "msr")), Unknown)
    assert isinstance(linux_host.firmware_virt("CyrixInstead"), Unknown)


@pytest.mark.parametrize(
    ("group", "mode", "expected"),
    [("root", 0o600, False), ("kvm", 0o660, True), ("kvm", 0o640, False), ("root", 0o666, True)],
)
def test_libvirt_qemu_user_access_by_mode(
    tmp_path: Path, group: str, mode: int, expected: bool
) -> None:
    """NV-H09's fact: Debian's libvirt-qemu (group kvm) against a device node's owner and mode."""
    node = tmp_path / "kvm"
    node.write_bytes(b"")
    os.chown(node, 0, grp.getgrnam(group).gr_gid)
    node.chmod(mode)
    assert linux_host.can_open("libvirt-qemu", "kvm", node) is expected


def test_qemu_conf_user_and_group(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('# user = "nobody"\nuser = "root"\ngroup = "root"\n')
    device = linux_host.kvm_device()
    access = linux_host.libvirt_qemu_access(device, conf)
    assert access is not None and (access.user, access.group) == ("root", "root")
    assert access.can_open_kvm is True
    conf.write_text("")
    defaults = linux_host.libvirt_qemu_access(device, conf)
    assert defaults is not None and (defaults.user, defaults.group) == ("libvirt-qemu", "kvm")
    assert linux_host.libvirt_qemu_access(device, tmp_path / "absent") is None
