"""The guest bytes say what their comments say (objdump, when binutils is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nestvirt.probe.guests import (
    LONG,
    REAL,
    constant_out,
    jump_unmapped_long,
    long_mode_loop,
    loop_guest,
    real_mode_loop,
)


def test_loop_guest_values_and_modes() -> None:
    guest = loop_guest(REAL, 300, 0x80)
    assert guest.port == 0x80
    assert guest.values[:3] == (0, 1, 2)
    assert guest.values[255:258] == (255, 0, 1)
    assert len(guest.values) == 300
    assert loop_guest(LONG).code == long_mode_loop()
    with pytest.raises(ValueError):
        loop_guest("protected")
    with pytest.raises(ValueError):
        loop_guest(REAL, 0)


def disassemble(code: bytes, machine: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "code.bin"
    path.write_bytes(code)
    out = subprocess.run(
        ["objdump", "-D", "-b", "binary", "-m", machine, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # "addr:\tbytes\tinstruction"; long encodings continue on lines without an instruction
    rows = [line.split("\t") for line in out.splitlines() if ":\t" in line]
    return [" ".join(row[2].split()) for row in rows if len(row) >= 3]


needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils")


@needs_objdump
def test_real_mode_loop_disassembles(tmp_path: Path) -> None:
    assert disassemble(real_mode_loop(200, 0xE9), "i8086", tmp_path) == [
        "mov $0xc8,%cx",
        "xor %ax,%ax",
        "mov $0xe9,%dx",
        "out %al,(%dx)",
        "inc %ax",
        "loop 0x8",
        "hlt",
    ]


@needs_objdump
def test_long_mode_loop_disassembles(tmp_path: Path) -> None:
    assert disassemble(long_mode_loop(200, 0xE9), "i386:x86-64", tmp_path) == [
        "mov $0xc8,%ecx",
        "xor %eax,%eax",
        "mov $0xe9,%edx",
        "out %al,(%dx)",
        "inc %eax",
        "loop 0xc",
        "hlt",
    ]


@needs_objdump
def test_fault_guests_disassemble(tmp_path: Path) -> None:
    assert disassemble(constant_out(5, 0xE9, 0x5A), "i8086", tmp_path)[1] == "mov $0x5a,%al"
    assert disassemble(jump_unmapped_long(0x40000000), "i386:x86-64", tmp_path) == [
        "movabs $0x40000000,%rax",
        "jmp *%rax",
    ]


@needs_objdump
def test_cpuid_thunk_disassembles(tmp_path: Path) -> None:
    from nestvirt.probe.cpuid import _CODE

    assert disassemble(_CODE, "i386:x86-64", tmp_path) == [
        "push %rbx",
        "mov %edi,%eax",
        "mov %esi,%ecx",
        "mov %rdx,%r8",
        "cpuid",
        "mov %eax,(%r8)",
        "mov %ebx,0x4(%r8)",
        "mov %ecx,0x8(%r8)",
        "mov %edx,0xc(%r8)",
        "pop %rbx",
        "ret",
    ]
