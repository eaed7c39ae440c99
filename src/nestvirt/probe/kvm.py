"""A tiny hypervisor for a moment: run the probe's guests through the KVM ioctl API.

fcntl.ioctl, mmap, struct and ctypes (only for the address of the guest
memory); standard library only, since the lab runs this inside minimal guests.

Numbers and layouts are the kernel's (include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h) and were checked against the compiled
headers: sizeof(struct kvm_regs) = 144, kvm_sregs = 312, kvm_segment = 24,
kvm_userspace_memory_region = 32; kvm_run: immediate_exit at 1, exit_reason
at 8, the exit union at 32. `tests/unit/probe/test_layout.py` compiles a C
program against <linux/kvm.h> (when a compiler and the headers are there) and
compares.

Every failure comes back as data (`Failure(stage, detail)`), never as an
exception, and every fd and mapping is closed on every path.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

from nestvirt.probe.guests import CODE_ADDRESS, LONG, REAL, Guest
from nestvirt.probe.result import Failure, ModeResult, Stage
from nestvirt.vocabulary import HARDWARE_KVM_MODULES

# ioctl request numbers: _IO(0xAE, n), _IOR/_IOW with the struct's size.
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, 32 bytes)
KVM_SET_TSS_ADDR = 0xAE47
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81  # _IOR(KVMIO, 0x81, 144 bytes)
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83  # _IOR(KVMIO, 0x83, 312 bytes)
KVM_SET_SREGS = 0x4138AE84
KVM_SET_SIGNAL_MASK = 0x4004AE8B  # _IOW(KVMIO, 0x8b, struct kvm_signal_mask: u32 len)

KVM_API_VERSION = 12

# KVM_CHECK_EXTENSION: capability name in ProbeResult.capabilities -> (number, kind).
# "bool" capabilities answer 0/1; the others are counts or sizes (0 = not supported).
CAPABILITIES: dict[str, tuple[int, str]] = {
    "irqchip": (0, "bool"),  # KVM_CAP_IRQCHIP: in-kernel PIC/IOAPIC (the probe does not need it)
    "hlt": (1, "bool"),  # KVM_CAP_HLT
    "user_memory": (3, "bool"),  # KVM_CAP_USER_MEMORY: KVM_SET_USER_MEMORY_REGION (needed)
    "set_tss_addr": (4, "bool"),  # KVM_CAP_SET_TSS_ADDR: Intel real mode without unrestricted guest
    "ext_cpuid": (7, "bool"),  # KVM_CAP_EXT_CPUID
    "nr_vcpus": (9, "int"),  # KVM_CAP_NR_VCPUS: recommended maximum
    "nr_memslots": (10, "int"),  # KVM_CAP_NR_MEMSLOTS
    "max_vcpus": (66, "int"),  # KVM_CAP_MAX_VCPUS
    "immediate_exit": (136, "bool"),  # KVM_CAP_IMMEDIATE_EXIT: the watchdog's kick is race-free
    "nested_state": (157, "int"),  # KVM_CAP_NESTED_STATE: 0 = no, else max state size (bytes)
}

KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_IO_OUT = 1

EXIT_NAMES = {
    0: "UNKNOWN",
    1: "EXCEPTION",
    2: "IO",
    3: "HYPERCALL",
    4: "DEBUG",
    5: "HLT",
    6: "MMIO",
    7: "IRQ_WINDOW_OPEN",
    8: "SHUTDOWN",
    9: "FAIL_ENTRY",
    10: "INTR",
    11: "SET_TPR",
    12: "TPR_ACCESS",
    16: "NMI",
    17: "INTERNAL_ERROR",
    21: "WATCHDOG",
    24: "SYSTEM_EVENT",
    26: "IOAPIC_EOI",
    27: "HYPERV",
    29: "X86_RDMSR",
    30: "X86_WRMSR",
    31: "DIRTY_RING_FULL",
    32: "AP_RESET_HOLD",
    33: "X86_BUS_LOCK",
    34: "XEN",
    37: "NOTIFY",
    39: "MEMORY_FAULT",
}
INTERNAL_ERRORS = {
    1: "emulation failure",
    2: "exception while delivering an exception",
    3: "event delivery failed",
    4: "unexpected exit reason",
}

# struct kvm_run, read from offset 8: exit_reason (u32), 20 bytes we skip, then the io
# member of the exit union at 32: direction u8, size u8, port u16, count u32, data_offset u64.
RUN_EXIT = struct.Struct("<I20xBBHIQ")
IMMEDIATE_EXIT_OFFSET = 1
EXIT_UNION_OFFSET = 32

# struct kvm_segment: base u64, limit u32, selector u16, type, present, dpl, db, s, l, g, avl,
# unusable (u8 each), one padding byte.
SEGMENT = struct.Struct("<QIH9Bx")
SREGS_SIZE = 312  # 8 segments (cs ds es fs gs ss tr ldt), gdt, idt, control registers, bitmap
REGS_SIZE = 144  # 18 u64: rax rbx rcx rdx rsi rdi rsp rbp r8–r15 rip rflags
DTABLE = struct.Struct("<QH6x")  # struct kvm_dtable: base, limit, 3 × u16 padding
SREGS_CONTROL = struct.Struct("<6Q")  # cr0 cr2 cr3 cr4 cr8 efer, at offset 224
SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_SS = (i * SEGMENT.size for i in range(6))
GDT_OFFSET, CONTROL_OFFSET = 192, 224
REGS_RSP, REGS_RIP, REGS_RFLAGS = 48, 128, 136

# Guest-physical layout (one memory slot from 0): code at 0x1000; for long mode the page
# tables (PML4, PDPT, one PD with a 2 MiB page: identity map of 0–2 MiB) and a GDT.
MEMORY_SIZE = 0x8000
PML4, PDPT, PD, GDT = 0x2000, 0x3000, 0x4000, 0x5000
TSS_ADDRESS = 0x0FFFD000  # 3 pages outside guest RAM (fcntl.ioctl passes a C int: < 2**31)
PTE_PRESENT_RW, PTE_LARGE = 0x3, 0x80
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_PG = (
    1,
    2,
    0x10,
    0x20,
    0x10000,
    0x40000,
    0x80000000,
)
CR4_PAE = 0x20
EFER_LME, EFER_LMA = 0x100, 0x400
GDT_ENTRIES = (0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)  # null, 64-bit code, flat data
CODE_SELECTOR, DATA_SELECTOR = 0x08, 0x10

# The watchdog kicks a vCPU out of KVM_RUN with this signal. The signal is blocked in the
# probing thread and unblocked only inside KVM_RUN (KVM_SET_SIGNAL_MASK), and consumed with
# sigtimedwait afterwards: no handler is installed, no other thread is affected, and it works
# from any thread. The number is arbitrary among the real-time signals nothing else here uses.
KICK_SIGNAL = signal.SIGRTMAX - 3


class _Stop(Exception):
    """Internal: a setup step failed; carries the Failure to report."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def _os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name} ({exc.strerror})" if exc.strerror else name


def _ioctl(fd: int, request: int, arg: int | bytes | bytearray, stage: Stage, what: str) -> int:
    try:
        if isinstance(arg, bytearray):
            return fcntl.ioctl(fd, request, arg, True)
        result = fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise _Stop(Failure(stage, f"{what} failed: {_os_error(exc)}")) from None
    return result if isinstance(result, int) else 0


def open_device(device: str) -> tuple[int | None, Failure | None]:
    """Open /dev/kvm read-write; a missing device or a refusal is a Failure, not an error."""
    try:
        return os.open(device, os.O_RDWR | os.O_CLOEXEC), None
    except FileNotFoundError:
        return None, Failure(Stage.NO_DEVICE, f"{device} does not exist")
    except PermissionError as exc:
        return None, Failure(Stage.DENIED, f"cannot open {device}: {_os_error(exc)}")
    except OSError as exc:  # ENXIO/ENODEV: the node exists but no KVM module serves it
        return None, Failure(Stage.OPEN, f"cannot open {device}: {_os_error(exc)}")


def api_version(kvm_fd: int) -> tuple[int | None, Failure | None]:
    try:
        version = fcntl.ioctl(kvm_fd, KVM_GET_API_VERSION, 0)
    except OSError as exc:
        return None, Failure(Stage.API_VERSION, f"KVM_GET_API_VERSION failed: {_os_error(exc)}")
    if version != KVM_API_VERSION:
        return version, Failure(
            Stage.API_VERSION, f"KVM API version {version}, expected {KVM_API_VERSION}"
        )
    return version, None


def capabilities(kvm_fd: int) -> dict[str, bool | int]:
    """KVM_CHECK_EXTENSION on the system fd for each capability we report."""
    caps: dict[str, bool | int] = {}
    for name, (number, kind) in CAPABILITIES.items():
        try:
            value = fcntl.ioctl(kvm_fd, KVM_CHECK_EXTENSION, number)
        except OSError:
            value = 0
        caps[name] = bool(value) if kind == "bool" else int(value)
    with suppress(OSError):
        caps["vcpu_mmap_size"] = fcntl.ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
    return caps


def vendor_module(sys_module: str | os.PathLike[str] = "/sys/module") -> str | None:
    """Which loaded (or built-in) module serves KVM: kvm_intel, kvm_amd, or another kvm_*."""
    for name in HARDWARE_KVM_MODULES:
        if os.path.isdir(os.path.join(sys_module, name)):
            return name
    try:
        others = sorted(n for n in os.listdir(sys_module) if n.startswith("kvm_"))
    except OSError:
        return None
    return others[0] if others else None


# ---------------------------------------------------------------------------------------------
# Guest setup


def _segment(
    base: int,
    limit: int,
    selector: int,
    type_: int,
    *,
    db: int,
    s: int = 1,
    long: int = 0,
    g: int = 1,
) -> bytes:
    return SEGMENT.pack(base, limit, selector, type_, 1, 0, db, s, long, g, 0, 0)


def _write_long_mode_tables(memory: mmap.mmap) -> None:
    struct.pack_into("<Q", memory, PML4, PDPT | PTE_PRESENT_RW)
    struct.pack_into("<Q", memory, PDPT, PD | PTE_PRESENT_RW)
    struct.pack_into("<Q", memory, PD, 0 | PTE_PRESENT_RW | PTE_LARGE)  # 0–2 MiB, identity
    struct.pack_into(f"<{len(GDT_ENTRIES)}Q", memory, GDT, *GDT_ENTRIES)


def _set_registers(vcpu_fd: int, mode: str) -> None:
    sregs = bytearray(SREGS_SIZE)
    _ioctl(vcpu_fd, KVM_GET_SREGS, sregs, Stage.SETUP, "KVM_GET_SREGS")
    if mode == REAL:
        # Leave reset state (real mode), but CS = 0 so that CS:IP = 0:CODE_ADDRESS.
        _base, limit, _selector, *rest = SEGMENT.unpack_from(sregs, SEG_CS)
        SEGMENT.pack_into(sregs, SEG_CS, 0, limit, 0, *rest)
    else:
        code = _segment(0, 0xFFFFFFFF, CODE_SELECTOR, 0xB, db=0, long=1)  # execute/read
        data = _segment(0, 0xFFFFFFFF, DATA_SELECTOR, 0x3, db=1)  # read/write
        sregs[SEG_CS : SEG_CS + SEGMENT.size] = code
        for offset in (SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_SS):
            sregs[offset : offset + SEGMENT.size] = data
        DTABLE.pack_into(sregs, GDT_OFFSET, GDT, 8 * len(GDT_ENTRIES) - 1)
        cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG
        _, cr2, _, _, cr8, _ = SREGS_CONTROL.unpack_from(sregs, CONTROL_OFFSET)
        SREGS_CONTROL.pack_into(
            sregs, CONTROL_OFFSET, cr0, cr2, PML4, CR4_PAE, cr8, EFER_LME | EFER_LMA
        )
    _ioctl(vcpu_fd, KVM_SET_SREGS, bytes(sregs), Stage.SETUP, "KVM_SET_SREGS")
    regs = bytearray(REGS_SIZE)
    struct.pack_into("<Q", regs, REGS_RSP, MEMORY_SIZE)
    struct.pack_into("<QQ", regs, REGS_RIP, CODE_ADDRESS, 0x2)  # rip, rflags (bit 1 is fixed)
    _ioctl(vcpu_fd, KVM_SET_REGS, bytes(regs), Stage.SETUP, "KVM_SET_REGS")


def _guest_memory(guest: Guest) -> mmap.mmap:
    if len(guest.code) > PML4 - CODE_ADDRESS:
        raise ValueError(f"guest code is {len(guest.code)} bytes, at most {PML4 - CODE_ADDRESS}")
    try:
        memory = mmap.mmap(-1, MEMORY_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:
        raise _Stop(Failure(Stage.MEMORY, f"cannot map guest memory: {_os_error(exc)}")) from None
    memory[CODE_ADDRESS : CODE_ADDRESS + len(guest.code)] = guest.code
    if guest.mode == LONG:
        _write_long_mode_tables(memory)
    return memory


def _address_of(memory: mmap.mmap) -> int:
    import ctypes  # only here: the stdlib has no other way to learn an mmap's address

    view = ctypes.c_char.from_buffer(memory)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # release the buffer export so that the mmap can be closed


@contextmanager
def _blocked_kick() -> Iterator[set[int]]:
    """Block KICK_SIGNAL in this thread; afterwards drain it and restore the old mask."""
    old = {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, {KICK_SIGNAL})}
    try:
        yield old - {KICK_SIGNAL}
    finally:
        while signal.sigtimedwait({KICK_SIGNAL}, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Watchdog:
    """After `timeout` seconds, make the vCPU leave KVM_RUN: immediate_exit, then a signal.

    Setting kvm_run.immediate_exit covers the race where the signal lands just before the
    thread enters KVM_RUN; the pending (blocked) signal makes every later KVM_RUN return
    EINTR until it is drained.
    """

    def __init__(self, run: mmap.mmap, timeout: float) -> None:
        self.fired = False
        self._run = run
        self._timeout = timeout
        self._target = threading.get_ident()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nestvirt-probe-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def _watch(self) -> None:
        if self._done.wait(self._timeout):
            return
        self.fired = True
        self._run[IMMEDIATE_EXIT_OFFSET] = 1
        signal.pthread_kill(self._target, KICK_SIGNAL)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _describe_exit(run: mmap.mmap, reason: int, vcpu_fd: int) -> str:
    name = EXIT_NAMES.get(reason, "?")
    detail = f"unexpected exit KVM_EXIT_{name} ({reason})"
    if reason == KVM_EXIT_SHUTDOWN:
        detail += ": the guest triple-faulted"
    elif reason == KVM_EXIT_INTERNAL_ERROR:
        (suberror,) = struct.unpack_from("<I", run, EXIT_UNION_OFFSET)
        detail += f": {INTERNAL_ERRORS.get(suberror, 'suberror')} ({suberror})"
    elif reason == KVM_EXIT_FAIL_ENTRY:
        (hw_reason,) = struct.unpack_from("<Q", run, EXIT_UNION_OFFSET)
        detail += f": hardware entry failure reason {hw_reason:#x}"
    elif reason == KVM_EXIT_MMIO:
        address, length, is_write = struct.unpack_from("<Q8xIB", run, EXIT_UNION_OFFSET)
        access = "write" if is_write else "read"
        detail += f": {length}-byte {access} at guest-physical {address:#x}, outside guest RAM"
    elif reason == KVM_EXIT_IO:
        direction, size, port, count, _ = RUN_EXIT.unpack_from(run, 8)[1:]
        detail += f" ({'out' if direction else 'in'} port {port:#x} size {size} count {count})"
    try:
        regs = bytearray(REGS_SIZE)
        fcntl.ioctl(vcpu_fd, KVM_GET_REGS, regs, True)
        (rip,) = struct.unpack_from("<Q", regs, REGS_RIP)
        detail += f", rip {rip:#x}"
    except OSError:
        pass
    return detail


def _run_loop(vcpu_fd: int, run: mmap.mmap, guest: Guest, timeout: float) -> ModeResult:
    """KVM_RUN until hlt: every exit must be the next expected `out`; time the whole loop."""
    values = guest.values
    expected = len(values)
    port = guest.port
    unpack = RUN_EXIT.unpack_from
    ioctl = fcntl.ioctl
    exits = 0
    failure: Failure | None = None
    watchdog = _Watchdog(run, timeout)
    try:
        start = time.perf_counter()
        while True:
            try:
                # No third argument: with an int one, fcntl.ioctl first tries it as a buffer
                # twice and builds and clears two TypeErrors, about 1 µs per exit.
                ioctl(vcpu_fd, KVM_RUN)
            except InterruptedError:
                if watchdog.fired:
                    failure = Failure(
                        Stage.TIMEOUT,
                        f"the {guest.mode}-mode guest did not halt within {timeout:g} s "
                        f"({exits} of {expected} outs seen)",
                    )
                    break
                continue  # another signal (its Python handler runs at the next bytecode)
            except OSError as exc:
                failure = Failure(Stage.RUN, f"KVM_RUN failed: {_os_error(exc)}")
                break
            reason, direction, size, io_port, count, offset = unpack(run, 8)
            if reason == KVM_EXIT_IO:
                value = run[offset] if offset < len(run) else -1
                if (
                    exits < expected
                    and direction == KVM_EXIT_IO_OUT
                    and size == 1
                    and io_port == port
                    and count == 1
                    and value == values[exits]
                ):
                    exits += 1
                    continue
                what = "out" if direction == KVM_EXIT_IO_OUT else "in"
                wanted = (
                    f"out {values[exits]:#04x} to port {port:#x}" if exits < expected else "hlt"
                )
                failure = Failure(
                    Stage.DATA,
                    f"I/O exit {exits + 1}: {what} {value:#04x} to port {io_port:#x} "
                    f"(size {size}, count {count}), expected {wanted}",
                )
                break
            if reason == KVM_EXIT_HLT:
                if exits != expected:
                    failure = Failure(
                        Stage.DATA, f"the guest halted after {exits} of {expected} outs"
                    )
                break
            failure = Failure(Stage.EXIT_REASON, _describe_exit(run, reason, vcpu_fd))
            break
        elapsed = time.perf_counter() - start
    finally:
        watchdog.stop()
    if failure is not None:
        return ModeResult(False, exits, None, failure)
    return ModeResult(True, exits, elapsed * 1e6 / exits if exits else None)


def run_guest(
    kvm_fd: int, guest: Guest, *, timeout: float, run_size: int, set_tss: bool = False
) -> ModeResult:
    """Create a VM with one vCPU, run `guest` under a watchdog, close everything."""
    with ExitStack() as stack:
        try:
            memory = _guest_memory(guest)
            stack.callback(memory.close)  # registered first: closed after the VM fds
            vm_fd = _ioctl(kvm_fd, KVM_CREATE_VM, 0, Stage.CREATE_VM, "KVM_CREATE_VM")
            stack.callback(os.close, vm_fd)
            if set_tss:  # only matters for real mode on Intel without unrestricted guest
                with suppress(OSError):
                    fcntl.ioctl(vm_fd, KVM_SET_TSS_ADDR, TSS_ADDRESS)
            region = struct.pack("<IIQQQ", 0, 0, 0, MEMORY_SIZE, _address_of(memory))
            _ioctl(
                vm_fd,
                KVM_SET_USER_MEMORY_REGION,
                region,
                Stage.MEMORY,
                "KVM_SET_USER_MEMORY_REGION",
            )
            vcpu_fd = _ioctl(vm_fd, KVM_CREATE_VCPU, 0, Stage.CREATE_VCPU, "KVM_CREATE_VCPU")
            stack.callback(os.close, vcpu_fd)
            try:
                run = mmap.mmap(vcpu_fd, run_size, mmap.MAP_SHARED)
            except OSError as exc:
                raise _Stop(
                    Failure(Stage.SETUP, f"cannot map kvm_run ({run_size} bytes): {_os_error(exc)}")
                ) from None
            stack.callback(run.close)
            _set_registers(vcpu_fd, guest.mode)
            kick_mask = stack.enter_context(_blocked_kick())
            bits = sum(1 << (s - 1) for s in kick_mask if 0 < s <= 64)
            _ioctl(
                vcpu_fd,
                KVM_SET_SIGNAL_MASK,
                struct.pack("<IQ", 8, bits),
                Stage.SETUP,
                "KVM_SET_SIGNAL_MASK",
            )
        except _Stop as stop:
            return ModeResult(False, 0, None, stop.failure)
        return _run_loop(vcpu_fd, run, guest, timeout)
