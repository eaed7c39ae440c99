"""The QMP oracle against the real QEMU, and its faults: no binary, a QEMU that dies,
one that never answers, a corrupt or unwritable cache."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path

import pytest

from nestvirt.backends.libvirt import parse_qemu_argv
from nestvirt.guestcpu import QEMU
from nestvirt.qemu_cpu import QemuCpuOracle, parse_cpu_arg

QEMU_BIN = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


def test_parse_cpu_arg() -> None:
    assert parse_cpu_arg("EPYC") == ("EPYC", {})
    name, props = parse_cpu_arg("Penryn,vmx=on,svm=off,+pcid,-x2apic,hv-spinlocks=0x1fff,vendor=X")
    assert name == "Penryn"
    assert props == {"vmx": True, "svm": False, "pcid": True, "x2apic": False,
                     "hv-spinlocks": 0x1FFF, "vendor": "X"}  # fmt: skip


def test_parse_qemu_argv() -> None:
    words = ["LC_ALL=C", "PATH=/bin", "/usr/bin/qemu-system-x86_64", "-name", "x",
             "-machine", "pc,usb=off", "-accel", "kvm", "-cpu", "EPYC,svm=on"]  # fmt: skip
    assert parse_qemu_argv(words) == ("/usr/bin/qemu-system-x86_64", "kvm", "EPYC,svm=on")
    old_style = ["/q", "-machine", "pc,accel=tcg", "-m", "64"]
    assert parse_qemu_argv(old_style) == ("/q", "tcg", "qemu64")  # QEMU's default CPU
    assert parse_qemu_argv(["A=1"]) is None


def test_real_qemu_answers_and_the_cache_spares_the_second_run(tmp_path: Path) -> None:
    cache = tmp_path / "guestcpu.json"
    with QemuCpuOracle(cache) as oracle:
        epyc = oracle.expand(QEMU_BIN, "tcg", "EPYC")
        penryn = oracle.expand(QEMU_BIN, "tcg", "Penryn,vmx=on")
        assert oracle.started == 1  # one QEMU for both questions
    assert not isinstance(epyc, str) and not isinstance(penryn, str)
    assert epyc.extensions == ("svm",) and epyc.vendor == "AMD" and epyc.source == QEMU
    assert penryn.extensions == () and penryn.vendor == "Intel"  # TCG drops vmx
    with QemuCpuOracle(cache) as again:
        assert again.expand(QEMU_BIN, "tcg", "EPYC") == epyc
        assert again.started == 0
    data = json.loads(cache.read_text())
    assert all(QEMU_BIN in key for key in data) and len(data) == 2


def test_an_unknown_model_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    with QemuCpuOracle(tmp_path / "c.json") as oracle:
        answer = oracle.expand(QEMU_BIN, "tcg", "NoSuchModel")
    assert isinstance(answer, str) and "NoSuchModel" in answer


@pytest.mark.parametrize("cache_text", ["", "{", "[1, 2]", '{"k": 1}', "[" * 100000])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path, cache_text: str) -> None:
    cache = tmp_path / "guestcpu.json"
    cache.write_text(cache_text)
    with QemuCpuOracle(cache) as oracle:
        assert not isinstance(oracle.expand(QEMU_BIN, "tcg", "qemu64"), str)
    assert isinstance(json.loads(cache.read_text()), dict)


def test_an_unwritable_cache_only_costs_a_restart(tmp_path: Path) -> None:
    blocked = tmp_path / "ro"
    blocked.mkdir()
    blocked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with QemuCpuOracle(blocked / "sub" / "guestcpu.json") as oracle:
            assert not isinstance(oracle.expand(QEMU_BIN, "tcg", "qemu64"), str)
    finally:
        blocked.chmod(stat.S_IRWXU)
    assert list(tmp_path.rglob("*.tmp")) == []


def fake_emulator(tmp_path: Path, body: str) -> str:
    path = tmp_path / "qemu-fake"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_missing_dying_and_silent_emulators_give_reasons(tmp_path: Path) -> None:
    with QemuCpuOracle(tmp_path / "c.json", timeout=1.0) as oracle:
        missing = oracle.expand(str(tmp_path / "nope"), "kvm", "EPYC")
        dying = oracle.expand(fake_emulator(tmp_path, "echo 'no KVM here' >&2; exit 1"), "kvm",
                              "EPYC")  # fmt: skip
    assert isinstance(missing, str) and "cannot run" in missing
    assert isinstance(dying, str) and "no KVM here" in dying
    hang = tmp_path / "hang"
    hang.mkdir()
    emulator = fake_emulator(hang, "exec sleep 30")
    started = time.monotonic()
    with QemuCpuOracle(tmp_path / "d.json", timeout=1.0) as oracle:
        first = oracle.expand(emulator, "kvm", "EPYC")
        second = oracle.expand(emulator, "kvm", "Penryn")  # no second wait: it failed once
    assert isinstance(first, str) and "did not answer within 1 s" in first
    assert second == first
    assert time.monotonic() - started < 10
