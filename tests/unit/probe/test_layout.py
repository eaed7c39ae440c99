"""The ioctl numbers and struct layouts in probe/kvm.py against the kernel's own headers.

Compiles a C program against <linux/kvm.h> when a C compiler and the headers are
installed (linux-libc-dev); the probe itself never needs them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nestvirt.probe import kvm

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/linux/kvm.h").exists(),
    reason="needs gcc and /usr/include/linux/kvm.h (apt-get install gcc linux-libc-dev)",
)

PROGRAM = r"""
#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#define V(name, value) printf("%s %lu\n", name, (unsigned long)(value))
int main(void) {
    V("KVM_GET_API_VERSION", KVM_GET_API_VERSION);
    V("KVM_CREATE_VM", KVM_CREATE_VM);
    V("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION);
    V("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE);
    V("KVM_CREATE_VCPU", KVM_CREATE_VCPU);
    V("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION);
    V("KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR);
    V("KVM_RUN", KVM_RUN);
    V("KVM_GET_REGS", KVM_GET_REGS);
    V("KVM_SET_REGS", KVM_SET_REGS);
    V("KVM_GET_SREGS", KVM_GET_SREGS);
    V("KVM_SET_SREGS", KVM_SET_SREGS);
    V("KVM_SET_SIGNAL_MASK", KVM_SET_SIGNAL_MASK);
    V("KVM_API_VERSION", KVM_API_VERSION);
    V("cap irqchip", KVM_CAP_IRQCHIP);
    V("cap hlt", KVM_CAP_HLT);
    V("cap user_memory", KVM_CAP_USER_MEMORY);
    V("cap set_tss_addr", KVM_CAP_SET_TSS_ADDR);
    V("cap ext_cpuid", KVM_CAP_EXT_CPUID);
    V("cap nr_vcpus", KVM_CAP_NR_VCPUS);
    V("cap nr_memslots", KVM_CAP_NR_MEMSLOTS);
    V("cap max_vcpus", KVM_CAP_MAX_VCPUS);
    V("cap immediate_exit", KVM_CAP_IMMEDIATE_EXIT);
    V("cap nested_state", KVM_CAP_NESTED_STATE);
    V("KVM_EXIT_IO", KVM_EXIT_IO);
    V("KVM_EXIT_HLT", KVM_EXIT_HLT);
    V("KVM_EXIT_MMIO", KVM_EXIT_MMIO);
    V("KVM_EXIT_SHUTDOWN", KVM_EXIT_SHUTDOWN);
    V("KVM_EXIT_FAIL_ENTRY", KVM_EXIT_FAIL_ENTRY);
    V("KVM_EXIT_INTERNAL_ERROR", KVM_EXIT_INTERNAL_ERROR);
    V("KVM_EXIT_IO_OUT", KVM_EXIT_IO_OUT);
    V("sizeof kvm_regs", sizeof(struct kvm_regs));
    V("sizeof kvm_sregs", sizeof(struct kvm_sregs));
    V("sizeof kvm_segment", sizeof(struct kvm_segment));
    V("sizeof kvm_dtable", sizeof(struct kvm_dtable));
    V("sizeof kvm_userspace_memory_region", sizeof(struct kvm_userspace_memory_region));
    V("run immediate_exit", offsetof(struct kvm_run, immediate_exit));
    V("run exit_reason", offsetof(struct kvm_run, exit_reason));
    V("run io.direction", offsetof(struct kvm_run, io.direction));
    V("run io.size", offsetof(struct kvm_run, io.size));
    V("run io.port", offsetof(struct kvm_run, io.port));
    V("run io.count", offsetof(struct kvm_run, io.count));
    V("run io.data_offset", offsetof(struct kvm_run, io.data_offset));
    V("run internal.suberror", offsetof(struct kvm_run, internal.suberror));
    V("run mmio.phys_addr", offsetof(struct kvm_run, mmio.phys_addr));
    V("run mmio.len", offsetof(struct kvm_run, mmio.len));
    V("run mmio.is_write", offsetof(struct kvm_run, mmio.is_write));
    V("sregs ds", offsetof(struct kvm_sregs, ds));
    V("sregs ss", offsetof(struct kvm_sregs, ss));
    V("sregs gdt", offsetof(struct kvm_sregs, gdt));
    V("sregs cr0", offsetof(struct kvm_sregs, cr0));
    V("sregs efer", offsetof(struct kvm_sregs, efer));
    V("segment l", offsetof(struct kvm_segment, l));
    V("segment unusable", offsetof(struct kvm_segment, unusable));
    V("regs rsp", offsetof(struct kvm_regs, rsp));
    V("regs rip", offsetof(struct kvm_regs, rip));
    V("regs rflags", offsetof(struct kvm_regs, rflags));
    return 0;
}
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    work = tmp_path_factory.mktemp("kvm-layout")
    (work / "layout.c").write_text(PROGRAM)
    subprocess.run(["gcc", "-o", str(work / "layout"), str(work / "layout.c")], check=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True, text=True)
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.stdout.splitlines())}


def test_ioctl_numbers(kernel: dict[str, int]) -> None:
    for name in (
        "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
        "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR", "KVM_RUN",
        "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_SIGNAL_MASK",
        "KVM_API_VERSION", "KVM_EXIT_IO", "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN",
        "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_IO_OUT",
    ):  # fmt: skip
        assert getattr(kvm, name) == kernel[name], name


def test_capability_numbers(kernel: dict[str, int]) -> None:
    for name, (number, _) in kvm.CAPABILITIES.items():
        assert number == kernel[f"cap {name}"], name


def test_struct_sizes(kernel: dict[str, int]) -> None:
    assert kernel["sizeof kvm_regs"] == kvm.REGS_SIZE
    assert kernel["sizeof kvm_sregs"] == kvm.SREGS_SIZE
    assert kvm.SEGMENT.size == kernel["sizeof kvm_segment"]
    assert kvm.DTABLE.size == kernel["sizeof kvm_dtable"]
    assert kernel["sizeof kvm_userspace_memory_region"] == 32  # struct.pack("<IIQQQ")


def test_kvm_run_offsets(kernel: dict[str, int]) -> None:
    assert kernel["run immediate_exit"] == kvm.IMMEDIATE_EXIT_OFFSET
    assert kernel["run exit_reason"] == 8  # RUN_EXIT is unpacked from offset 8
    base = 8 + 4 + 20  # "<I20x": the io member starts here
    assert kvm.EXIT_UNION_OFFSET == base == kernel["run io.direction"]
    assert (base + 1, base + 2, base + 4, base + 8) == (
        kernel["run io.size"],
        kernel["run io.port"],
        kernel["run io.count"],
        kernel["run io.data_offset"],
    )
    assert kernel["run internal.suberror"] == base
    # "<Q8xIB": phys_addr, data[8], len, is_write
    assert (kernel["run mmio.phys_addr"], kernel["run mmio.len"], kernel["run mmio.is_write"]) == (
        base,
        base + 16,
        base + 20,
    )


def test_sregs_and_regs_offsets(kernel: dict[str, int]) -> None:
    assert kernel["sregs ds"] == kvm.SEG_DS
    assert kernel["sregs ss"] == kvm.SEG_SS
    assert kernel["sregs gdt"] == kvm.GDT_OFFSET
    assert kernel["sregs cr0"] == kvm.CONTROL_OFFSET
    assert kernel["sregs efer"] == kvm.CONTROL_OFFSET + 5 * 8
    assert kernel["segment l"] == 8 + 4 + 2 + 5  # type present dpl db s, then l
    assert kernel["segment unusable"] == 22
    assert kernel["regs rsp"] == kvm.REGS_RSP
    assert kernel["regs rip"] == kvm.REGS_RIP
    assert kernel["regs rflags"] == kvm.REGS_RFLAGS
