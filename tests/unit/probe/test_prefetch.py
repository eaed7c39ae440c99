"""The probe started early in a forked child (nestvirt.probe.prefetch): its answer is the
one run_probe gives in-process, it is used only for the same arguments, and a child
that fails leaves run_probe to run (and fail) here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import nestvirt.probe as probe
from nestvirt.probe import DEFAULT_MODES, _from_wire, _probe, _to_wire, run_probe
from nestvirt.probe.result import ProbeResult, Stage

from .conftest import DEVICE, open_fds


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    fds = open_fds()
    yield
    probe.discard_prefetched()
    assert open_fds() == fds


@pytest.fixture
def not_kvm(tmp_path: Path) -> str:
    """A device path that opens but is no KVM: the probe stops at KVM_GET_API_VERSION."""
    path = tmp_path / "not-kvm"
    path.write_bytes(b"")
    return str(path)


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _same_but_timings(a: ProbeResult, b: ProbeResult) -> None:
    assert (a.ok, a.device, a.api_version, a.capabilities, a.failure) == (
        b.ok,
        b.device,
        b.api_version,
        b.capabilities,
        b.failure,
    )
    assert (a.hypervisor, a.virt_extensions, a.vendor_module, a.cpu_vendor) == (
        b.hypervisor,
        b.virt_extensions,
        b.vendor_module,
        b.cpu_vendor,
    )
    assert a.modes.keys() == b.modes.keys()
    for mode in a.modes:
        x, y = a.modes[mode], b.modes[mode]
        assert (x.ok, x.exits, x.failure) == (y.ok, y.exits, y.failure)
        assert (x.us_per_exit is None) == (y.us_per_exit is None)


def test_a_failure_crosses_the_pipe_intact(not_kvm: str) -> None:
    here = _probe(2.0, DEFAULT_MODES, not_kvm)
    assert here.failure is not None and here.failure.stage is Stage.API_VERSION
    assert _from_wire(_to_wire(here)) == here
    assert probe.prefetch(2.0, DEFAULT_MODES, not_kvm)
    child = probe._prefetched.pop((2.0, DEFAULT_MODES, not_kvm))
    assert child.collect() == here
    assert _gone(child.pid)


@pytest.mark.skipif(not os.access(DEVICE, os.R_OK | os.W_OK), reason="needs /dev/kvm")
def test_the_childs_probe_is_the_probe() -> None:
    assert probe.prefetch(timeout=2.0)
    child = probe._prefetched[(2.0, DEFAULT_MODES, DEVICE)]
    there = run_probe(timeout=2.0)
    assert not probe._prefetched and _gone(child.pid)
    assert there.ok and all(m.us_per_exit for m in there.modes.values())
    assert _from_wire(_to_wire(there)) == there
    _same_but_timings(there, run_probe(timeout=2.0))


def test_only_the_same_arguments_take_it(not_kvm: str) -> None:
    assert probe.prefetch(2.0, ("real",), not_kvm)
    assert not probe.prefetch(2.0, ("real",), not_kvm)  # one child per question
    other = run_probe(2.0, ("long",), not_kvm)
    assert list(other.modes) == ["long"]
    child = probe._prefetched[(2.0, ("real",), not_kvm)]
    assert list(run_probe(2.0, ("real",), not_kvm).modes) == ["real"]
    assert not probe._prefetched and _gone(child.pid)


def test_a_failing_child_leaves_the_probe_to_run_here(not_kvm: str) -> None:
    """Bad modes: the child's _probe raises, run_probe raises the same here."""
    assert probe.prefetch(2.0, ("bogus",), not_kvm)
    child = probe._prefetched[(2.0, ("bogus",), not_kvm)]
    with pytest.raises(ValueError, match="modes must be among"):
        run_probe(2.0, ("bogus",), not_kvm)
    assert _gone(child.pid)


def test_no_device_no_child(tmp_path: Path) -> None:
    assert not probe.prefetch(device=str(tmp_path / "absent"))
    assert not probe._prefetched


def test_a_probe_nobody_asked_for_is_stopped(not_kvm: str) -> None:
    assert probe.prefetch(30.0, DEFAULT_MODES, not_kvm)
    child = probe._prefetched[(30.0, DEFAULT_MODES, not_kvm)]
    probe.discard_prefetched()
    assert not probe._prefetched and _gone(child.pid)
