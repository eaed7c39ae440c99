"""Shared helpers for the probe tests: they run real guests on the real /dev/kvm."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nestvirt.probe import kvm

DEVICE = "/dev/kvm"


@pytest.fixture
def kvm_fd() -> Iterator[int]:
    """An open /dev/kvm (the tests run as root with /dev/kvm, as CI does)."""
    fd, failure = kvm.open_device(DEVICE)
    assert fd is not None, f"these tests need {DEVICE}: {failure}"
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def run_size(kvm_fd: int) -> int:
    return int(kvm.capabilities(kvm_fd)["vcpu_mmap_size"])


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))
