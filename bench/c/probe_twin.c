/*
 * The C twin of nestvirt's KVM probe loop, for bench/probe_bench.py only (never shipped,
 * built into a temporary directory at bench time).
 *
 * Same guest memory layout, same register setup, same guest code (read from a file the
 * bench writes from nestvirt.probe.guests), same checks per exit (port, size, direction,
 * count, value), same timing: wall time from the first KVM_RUN to the hlt exit, divided by
 * the number of I/O exits. Each repetition creates its own VM and vCPU, as the probe does.
 *
 * usage: probe_twin real|long CODE_FILE COUNT PORT REPETITIONS
 * prints one line per repetition: µs per exit.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEMORY_SIZE 0x8000
#define CODE_ADDRESS 0x1000
#define PML4 0x2000
#define PDPT 0x3000
#define PD 0x4000
#define GDT 0x5000

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct kvm_segment segment(uint16_t selector, uint8_t type, uint8_t db, uint8_t l) {
    struct kvm_segment s = {.base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
                            .present = 1, .dpl = 0, .db = db, .s = 1, .l = l, .g = 1};
    return s;
}

static double run_once(int kvm, int run_size, int long_mode, const uint8_t *code, size_t len,
                       unsigned count, unsigned port) {
    uint8_t *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
    if (memory == MAP_FAILED) die("mmap guest memory");
    memcpy(memory + CODE_ADDRESS, code, len);
    if (long_mode) {
        uint64_t gdt[3] = {0, 0x00AF9B000000FFFFull, 0x00CF93000000FFFFull};
        *(uint64_t *)(memory + PML4) = PDPT | 3;
        *(uint64_t *)(memory + PDPT) = PD | 3;
        *(uint64_t *)(memory + PD) = 0 | 3 | 0x80;
        memcpy(memory + GDT, gdt, sizeof gdt);
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    ioctl(vm, KVM_SET_TSS_ADDR, 0x0FFFD000);  /* as the probe: ignored if refused */
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = MEMORY_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)memory};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    if (long_mode) {
        sregs.cs = segment(0x08, 0xb, 0, 1);
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment(0x10, 0x3, 1, 0);
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 3 * 8 - 1;
        sregs.cr0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x10000 | 0x40000 | 0x80000000u;
        sregs.cr3 = PML4;
        sregs.cr4 = 0x20;
        sregs.efer = 0x100 | 0x400;
    } else {
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
    }
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    struct kvm_regs regs = {.rsp = MEMORY_SIZE, .rip = CODE_ADDRESS, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    unsigned exits = 0;
    double start = now();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        if (run->exit_reason == KVM_EXIT_IO) {
            uint8_t value = *((uint8_t *)run + run->io.data_offset);
            if (exits < count && run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 1 &&
                run->io.port == port && run->io.count == 1 && value == (exits & 0xff)) {
                exits++;
                continue;
            }
            fprintf(stderr, "unexpected I/O exit %u: port %#x value %#x\n", exits + 1,
                    run->io.port, value);
            exit(1);
        }
        if (run->exit_reason == KVM_EXIT_HLT && exits == count) break;
        fprintf(stderr, "unexpected exit %u after %u outs\n", run->exit_reason, exits);
        exit(1);
    }
    double elapsed = now() - start;
    munmap(run, run_size);
    close(vcpu);
    close(vm);
    munmap(memory, MEMORY_SIZE);
    return elapsed * 1e6 / exits;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s real|long CODE_FILE COUNT PORT REPETITIONS\n", argv[0]);
        return 2;
    }
    int long_mode = strcmp(argv[1], "long") == 0;
    uint8_t code[PML4 - CODE_ADDRESS];
    FILE *f = fopen(argv[2], "rb");
    if (!f) die(argv[2]);
    size_t len = fread(code, 1, sizeof code, f);
    fclose(f);
    unsigned count = strtoul(argv[3], NULL, 0), port = strtoul(argv[4], NULL, 0);
    int repetitions = atoi(argv[5]);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) die("KVM_GET_API_VERSION");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run)) die("KVM_GET_VCPU_MMAP_SIZE");
    for (int i = 0; i < repetitions; i++)
        printf("%.3f\n", run_once(kvm, run_size, long_mode, code, len, count, port));
    close(kvm);
    return 0;
}
