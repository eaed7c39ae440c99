"""Which module serves KVM, from a /sys/module tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestvirt.probe.kvm import vendor_module


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        (["kvm", "kvm_intel", "msr"], "kvm_intel"),
        (["kvm", "kvm_amd"], "kvm_amd"),
        (["kvm", "kvm_pvm"], "kvm_pvm"),
        (["kvm_pvm", "kvm_amd", "kvm"], "kvm_amd"),
        (["kvm", "msr"], None),
        ([], None),
    ],
)
def test_vendor_module(tmp_path: Path, modules: list[str], expected: str | None) -> None:
    for name in modules:
        (tmp_path / name).mkdir()
    assert vendor_module(tmp_path) == expected


def test_vendor_module_without_sysfs(tmp_path: Path) -> None:
    assert vendor_module(tmp_path / "absent") is None


def test_this_machine() -> None:
    found = vendor_module()
    assert found is None or (Path("/sys/module") / found).is_dir()
