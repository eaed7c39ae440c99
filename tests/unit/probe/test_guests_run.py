"""The probe's guests on the real /dev/kvm: expected exits and data, injected faults, timeout."""

from __future__ import annotations

import signal
import struct
import threading
import time

import pytest

from nestvirt.probe import _probe, kvm, run_probe
from nestvirt.probe.guests import (
    LONG,
    MODES,
    PORT,
    REAL,
    SPIN,
    UD2,
    Guest,
    constant_out,
    jump_unmapped_long,
    loop_guest,
)
from nestvirt.probe.result import Stage
from nestvirt.rules.probe import probe_findings

from .conftest import open_fds


def run(kvm_fd: int, run_size: int, guest: Guest, timeout: float = 2.0) -> kvm.ModeResult:
    return kvm.run_guest(kvm_fd, guest, timeout=timeout, run_size=run_size)


@pytest.mark.parametrize("mode", MODES)
def test_standard_guest_makes_every_expected_out_then_halts(
    kvm_fd: int, run_size: int, mode: str
) -> None:
    guest = loop_guest(mode)
    assert guest.values == tuple(i & 0xFF for i in range(200))
    result = run(kvm_fd, run_size, guest)
    assert result.failure is None
    assert result.ok
    assert result.exits == 200
    assert result.us_per_exit is not None and result.us_per_exit > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("count", "port"), [(1, 0x80), (300, 0x3F8), (7, 0xFFFF)])
def test_count_port_and_wrapping_values(
    kvm_fd: int, run_size: int, mode: str, count: int, port: int
) -> None:
    """300 outs wrap the byte value (…, 0xff, 0x00, …): every one is checked."""
    result = run(kvm_fd, run_size, loop_guest(mode, count, port))
    assert (result.ok, result.exits, result.failure) == (True, count, None)


def test_wrong_value_is_a_data_failure(kvm_fd: int, run_size: int) -> None:
    guest = Guest(REAL, constant_out(value=0x5A), PORT, tuple(range(200)))
    result = run(kvm_fd, run_size, guest)
    assert not result.ok
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert "out 0x5a to port 0xe9" in result.failure.detail
    assert "expected out 0x00" in result.failure.detail


def test_value_wrong_late_in_the_sequence_counts_the_good_exits(kvm_fd: int, run_size: int) -> None:
    values = list(range(200))
    values[150] = 0x99
    guest = Guest(LONG, loop_guest(LONG).code, PORT, tuple(values))
    result = run(kvm_fd, run_size, guest)
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert result.exits == 150
    assert "I/O exit 151: out 0x96" in result.failure.detail


def test_wrong_port_is_a_data_failure(kvm_fd: int, run_size: int) -> None:
    guest = Guest(REAL, loop_guest(REAL, port=0x80).code, PORT, tuple(range(200)))
    result = run(kvm_fd, run_size, guest)
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert "to port 0x80" in result.failure.detail


def test_in_instead_of_out_is_a_data_failure(kvm_fd: int, run_size: int) -> None:
    code = b"\xba" + struct.pack("<H", PORT) + b"\xec\xf4"  # mov dx, port; in al, dx; hlt
    result = run(kvm_fd, run_size, Guest(REAL, code, PORT, (0,)))
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert result.failure.detail.startswith("I/O exit 1: in ")


def test_halting_early_is_a_data_failure(kvm_fd: int, run_size: int) -> None:
    guest = Guest(REAL, loop_guest(REAL, 10).code, PORT, tuple(range(20)))
    result = run(kvm_fd, run_size, guest)
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert result.failure.detail == "the guest halted after 10 of 20 outs"


def test_extra_outs_are_a_data_failure(kvm_fd: int, run_size: int) -> None:
    guest = Guest(LONG, loop_guest(LONG, 20).code, PORT, tuple(range(10)))
    result = run(kvm_fd, run_size, guest)
    assert result.failure is not None and result.failure.stage is Stage.DATA
    assert result.exits == 10
    assert "expected hlt" in result.failure.detail


def test_invalid_opcode_in_long_mode_is_an_exit_reason_failure(kvm_fd: int, run_size: int) -> None:
    """ud2 with no IDT: #UD, #DF, triple fault → KVM_EXIT_SHUTDOWN at the ud2."""
    result = run(kvm_fd, run_size, Guest(LONG, UD2, PORT, ()))
    assert result.failure is not None and result.failure.stage is Stage.EXIT_REASON
    assert "KVM_EXIT_SHUTDOWN" in result.failure.detail
    assert "rip 0x1000" in result.failure.detail


def test_jump_to_unmapped_address_is_an_exit_reason_failure(kvm_fd: int, run_size: int) -> None:
    result = run(kvm_fd, run_size, Guest(LONG, jump_unmapped_long(0x4000_0000), PORT, ()))
    assert result.failure is not None and result.failure.stage is Stage.EXIT_REASON
    assert "rip 0x40000000" in result.failure.detail


def test_real_mode_jump_outside_guest_ram_is_an_exit_reason_failure(
    kvm_fd: int, run_size: int
) -> None:
    far_jump = b"\xea\x00\x00\x00\xf0"  # jmp 0xf000:0x0000 — no RAM there
    result = run(kvm_fd, run_size, Guest(REAL, far_jump, PORT, ()))
    assert result.failure is not None and result.failure.stage is Stage.EXIT_REASON


@pytest.mark.parametrize("mode", MODES)
def test_guest_spinning_without_exits_times_out(kvm_fd: int, run_size: int, mode: str) -> None:
    started = time.monotonic()
    result = run(kvm_fd, run_size, Guest(mode, SPIN, PORT, (1, 2)), timeout=0.3)
    elapsed = time.monotonic() - started
    assert result.failure is not None and result.failure.stage is Stage.TIMEOUT
    assert "within 0.3 s (0 of 2 outs seen)" in result.failure.detail
    assert 0.25 <= elapsed < 1.5


def test_timeout_leaves_no_signal_pending_and_the_mask_as_it_was(
    kvm_fd: int, run_size: int
) -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    run(kvm_fd, run_size, Guest(REAL, SPIN, PORT, ()), timeout=0.1)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert kvm.KICK_SIGNAL not in signal.sigpending()
    assert run(kvm_fd, run_size, loop_guest(REAL)).ok  # the next run is not disturbed


def test_probe_runs_from_another_thread(kvm_fd: int, run_size: int) -> None:
    results = []

    def worker() -> None:
        results.append(run(kvm_fd, run_size, loop_guest(LONG)))
        results.append(run(kvm_fd, run_size, Guest(LONG, SPIN, PORT, ()), timeout=0.1))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert results[0].ok
    assert results[1].failure is not None and results[1].failure.stage is Stage.TIMEOUT


def test_no_fd_leaks_on_success_or_failure(kvm_fd: int, run_size: int) -> None:
    run_probe()  # warm up lazy imports and the CPUID page
    before = open_fds()
    run_probe()
    run(kvm_fd, run_size, Guest(LONG, UD2, PORT, ()))
    run(kvm_fd, run_size, Guest(REAL, SPIN, PORT, ()), timeout=0.05)
    run_probe(device="/nonexistent/kvm")
    assert open_fds() == before


def test_run_probe_on_this_machine() -> None:
    result = run_probe()
    assert result.ok, result.failure
    assert result.failure is None
    assert result.api_version == 12
    assert set(result.modes) == {"real", "long"}
    for mode in result.modes.values():
        assert (mode.ok, mode.exits) == (True, 200)
    caps = result.capabilities
    assert caps["user_memory"] is True
    assert isinstance(caps["irqchip"], bool)
    assert isinstance(caps["nested_state"], int) and not isinstance(caps["nested_state"], bool)
    assert result.vendor_module is not None and result.vendor_module.startswith("kvm_")
    assert result.hypervisor is not None


def test_injected_fault_reaches_the_result_and_nv_h07() -> None:
    result = _probe(2.0, ("real", "long"), "/dev/kvm", {"long": Guest(LONG, UD2, PORT, ())})
    assert not result.ok
    assert result.modes["real"].ok
    assert result.failure is not None and result.failure.stage is Stage.EXIT_REASON
    findings = [f for f in probe_findings(result) if f.code == "NV-H07"]
    assert len(findings) == 1
    assert "exit-reason" in findings[0].message and "SHUTDOWN" in findings[0].message


def test_injected_spin_gives_a_timeout_finding_within_the_timeout() -> None:
    started = time.monotonic()
    result = _probe(0.5, ("real",), "/dev/kvm", {"real": Guest(REAL, SPIN, PORT, ())})
    assert time.monotonic() - started < 2.0
    assert result.failure is not None and result.failure.stage is Stage.TIMEOUT
    assert any(f.code == "NV-H07" and "timeout" in f.message for f in probe_findings(result))


def test_missing_device_is_no_device_for_every_mode() -> None:
    result = run_probe(device="/nonexistent/kvm")
    assert not result.ok
    assert result.failure is not None and result.failure.stage is Stage.NO_DEVICE
    assert {m: r.failure for m, r in result.modes.items()} == {
        "real": result.failure,
        "long": result.failure,
    }
    assert [f.code for f in probe_findings(result) if f.severity == "error"] == ["NV-H05"]


def test_a_device_that_is_not_kvm_fails_at_the_api_version() -> None:
    result = run_probe(device="/dev/null")
    assert result.failure is not None and result.failure.stage is Stage.API_VERSION
    assert "ENOTTY" in result.failure.detail


def test_only_known_modes_and_positive_timeouts() -> None:
    with pytest.raises(ValueError):
        run_probe(modes=("protected",))
    with pytest.raises(ValueError):
        run_probe(timeout=0)
    assert set(run_probe(modes=("long",)).modes) == {"long"}
