"""The probe's guest programs: a few bytes of x86 machine code and what they must do.

Each guest loops `count` times on `out dx, al` to one port with a changing
value (0, 1, 2, … modulo 256) and ends with `hlt`. The probe checks every I/O
exit against `values` and that the last exit is KVM_EXIT_HLT. The bytes are
written out by hand, each line with its assembly; `objdump -D -b binary -m
i8086` (real) or `-m i386:x86-64` (long) on them gives the same listing.

Standard library only (this module runs inside minimal lab guests).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

REAL = "real"
LONG = "long"
MODES = (REAL, LONG)

PORT = 0xE9  # no in-kernel device listens there (we create no irqchip/PIT)
COUNT = 200
CODE_ADDRESS = 0x1000  # guest-physical (= linear: identity map in long mode)


@dataclass(frozen=True, slots=True)
class Guest:
    """Guest code for one mode and the `out`s it must make, in order, before `hlt`."""

    mode: str  # REAL or LONG: how the vCPU is set up before it runs
    code: bytes  # loaded at CODE_ADDRESS, where the vCPU starts
    port: int
    values: tuple[int, ...]  # one byte-sized `out` to `port` per value, then `hlt`


def real_mode_loop(count: int = COUNT, port: int = PORT) -> bytes:
    """16-bit real mode: `count` × `out port, al` with al = 0, 1, 2, …, then `hlt`."""
    return b"".join(
        [
            b"\xb9" + struct.pack("<H", count),  # mov cx, count
            b"\x31\xc0",  # xor ax, ax
            b"\xba" + struct.pack("<H", port),  # mov dx, port
            b"\xee",  # again: out dx, al
            b"\x40",  # inc ax
            b"\xe2\xfc",  # loop again  (dec cx; jnz)
            b"\xf4",  # hlt
        ]
    )


def long_mode_loop(count: int = COUNT, port: int = PORT) -> bytes:
    """64-bit long mode: the same loop (`inc eax` is FF C0: 0x40 is a REX prefix here)."""
    return b"".join(
        [
            b"\xb9" + struct.pack("<I", count),  # mov ecx, count
            b"\x31\xc0",  # xor eax, eax
            b"\xba" + struct.pack("<I", port),  # mov edx, port
            b"\xee",  # again: out dx, al
            b"\xff\xc0",  # inc eax
            b"\xe2\xfb",  # loop again  (dec rcx; jnz)
            b"\xf4",  # hlt
        ]
    )


def loop_guest(mode: str, count: int = COUNT, port: int = PORT) -> Guest:
    """The probe's standard guest for `mode`."""
    if not 1 <= count <= 0xFFFF:
        raise ValueError(f"count must be 1..65535, not {count}")
    if mode == REAL:
        code = real_mode_loop(count, port)
    elif mode == LONG:
        code = long_mode_loop(count, port)
    else:
        raise ValueError(f"unknown guest mode {mode!r} (known: {', '.join(MODES)})")
    return Guest(mode, code, port, tuple(i & 0xFF for i in range(count)))


# Faulty guests, for tests and for anyone checking that the probe notices faults.
UD2 = b"\x0f\x0b"  # invalid opcode: no IDT, so #UD → #DF → triple fault → KVM_EXIT_SHUTDOWN
SPIN = b"\xeb\xfe"  # jmp $: runs forever without an exit (the watchdog must stop it)


def jump_unmapped_long(address: int = 0x4000_0000) -> bytes:
    """Long mode: jump to a linear address the page tables do not map (#PF, triple fault)."""
    return b"\x48\xb8" + struct.pack("<Q", address) + b"\xff\xe0"  # mov rax, address; jmp rax


def constant_out(count: int = COUNT, port: int = PORT, value: int = 0x5A) -> bytes:
    """Real mode: the loop without `inc ax`, so every `out` writes the same value."""
    return b"".join(
        [
            b"\xb9" + struct.pack("<H", count),  # mov cx, count
            b"\xb0" + bytes([value]),  # mov al, value
            b"\xba" + struct.pack("<H", port),  # mov dx, port
            b"\xee",  # again: out dx, al
            b"\x90",  # nop
            b"\xe2\xfc",  # loop again
            b"\xf4",  # hlt
        ]
    )
