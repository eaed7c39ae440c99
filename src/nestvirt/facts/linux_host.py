"""Facts about the Linux host nestvirt runs on. Read-only, standard library only.

A fact that could not be read is Unknown(reason); a missing file is simply
"not there" (docs/rules.md, "What a rule may do").
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import struct
from dataclasses import dataclass, field

from nestvirt.facts.container import ContainerFacts
from nestvirt.facts.container import gather as container_facts
from nestvirt.facts.guest import GuestFacts
from nestvirt.facts.guest import gather as guest_facts
from nestvirt.model import Unknown
from nestvirt.probe.result import HypervisorInfo, ProbeResult
from nestvirt.vocabulary import AMD, INTEL

# Paths as str, read through os and open(): pathlib (with urllib.parse and ipaddress) is
# milliseconds of `nestvirt status` start-up (docs/architecture.md, "Lazy imports").
SYS_MODULE = "/sys/module"
KVM_DEVICE = "/dev/kvm"
QEMU_CONF = "/etc/libvirt/qemu.conf"
# Debian builds libvirt with these defaults when qemu.conf leaves user/group unset.
QEMU_DEFAULT_USER, QEMU_DEFAULT_GROUP = "libvirt-qemu", "kvm"

# MSRs kvm-ok reads: Intel IA32_FEATURE_CONTROL, AMD VM_CR.
MSR_FEATURE_CONTROL = 0x3A
MSR_VM_CR = 0xC0010114


@dataclass(frozen=True, slots=True)
class KvmDevice:
    """/dev/kvm as this process sees it."""

    exists: bool
    accessible: bool  # read+write for this process
    mode: str | None = None  # "0600"
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class LibvirtQemuAccess:
    """Can the user libvirt runs QEMU as open /dev/kvm? (NV-H09)"""

    user: str
    group: str
    can_open_kvm: bool | Unknown
    daemon_can_open_kvm: bool  # root, which libvirtd runs as here


@dataclass(frozen=True, slots=True)
class LinuxHostFacts:
    """Everything the host rules (NV-H, and NV-G/NV-C through guest and container) read."""

    hostname: str
    kernel: str
    cpu_vendor: str | Unknown  # vendor_id: GenuineIntel, AuthenticAMD, …
    cpu_model: str | Unknown
    cpu_virt_flags: tuple[str, ...]  # vmx/svm in /proc/cpuinfo
    kvm_loaded: bool
    kvm_vendor_modules: tuple[str, ...]  # kvm_intel, kvm_amd, or another kvm_* module
    nested: dict[str, str]  # vendor module -> raw `nested` parameter ("Y", "1", …)
    kvm_device: KvmDevice
    mem_available_bytes: int | Unknown
    firmware_virt: str | Unknown  # "enabled" | "disabled"
    hypervisor: HypervisorInfo | Unknown
    probe: ProbeResult | None = None  # None when the probe did not run (no /dev/kvm)
    libvirt_qemu: LibvirtQemuAccess | None = None  # None when libvirt's QEMU driver is absent
    kvm_boots_linux: bool | Unknown | None = None  # the lab's boot test; None: not tested
    notes: tuple[str, ...] = field(default=())
    guest: GuestFacts | None = None  # what this machine sees of its parent (NV-G rules)
    container: ContainerFacts | None = None  # container, chroot, CI job (NV-C rules)


def gather(*, run_probe: bool = True, probe_timeout: float = 2.0) -> LinuxHostFacts:
    cpuinfo = _cpuinfo()
    vendor = cpuinfo.get("vendor_id", Unknown("no vendor_id in /proc/cpuinfo"))
    flags = tuple(f for f in ("vmx", "svm") if f in cpuinfo.get("flags", "").split())
    modules = vendor_modules()
    device = kvm_device()
    # The facts that do not depend on the probe first: a probe started early in a child
    # (nestvirt.probe.prefetch) has the longest to finish before it is asked for.
    uname = os.uname()
    kvm_loaded = os.path.isdir(os.path.join(SYS_MODULE, "kvm"))
    nested = {m: v for m in modules if (v := nested_param(m)) is not None}
    memory = mem_available()
    firmware = firmware_virt(vendor if isinstance(vendor, str) else "")
    libvirt_qemu = libvirt_qemu_access(device)
    container = container_facts()
    probe_result = None
    if run_probe and device.exists:
        from nestvirt.probe import run_probe as probe

        probe_result = probe(timeout=probe_timeout)
    # The probe asked CPUID the same question (cpuid.detect_hypervisor, cached per process);
    # its answer is this one also when the probe ran in a child (nestvirt.probe.prefetch).
    hypervisor = (
        probe_result.hypervisor
        if probe_result is not None and probe_result.hypervisor is not None
        else _hypervisor()
    )
    return LinuxHostFacts(
        hostname=uname.nodename,  # gethostname(2), without importing socket
        kernel=uname.release,
        cpu_vendor=vendor,
        cpu_model=cpuinfo.get("model name", Unknown("no model name in /proc/cpuinfo")),
        cpu_virt_flags=flags,
        kvm_loaded=kvm_loaded,
        kvm_vendor_modules=modules,
        nested=nested,
        kvm_device=device,
        mem_available_bytes=memory,
        firmware_virt=firmware,
        hypervisor=hypervisor,
        probe=probe_result,
        libvirt_qemu=libvirt_qemu,
        guest=guest_facts(hypervisor=hypervisor, probe=probe_result),
        container=container,
    )


def _cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo."""
    entry: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return entry
    for line in text.splitlines():
        if not line.strip():
            if entry:
                break
            continue
        key, _, value = line.partition(":")
        entry.setdefault(key.strip(), value.strip())
    return entry


def vendor_modules() -> tuple[str, ...]:
    """Loaded modules that serve /dev/kvm for a CPU vendor (kvm_intel, kvm_amd, kvm_pvm, …)."""
    try:
        names = sorted(os.listdir(SYS_MODULE))
    except OSError:
        return ()
    return tuple(n for n in names if n.startswith("kvm_") and n != "kvm_common")


def nested_param(module: str) -> str | None:
    try:
        with open(os.path.join(SYS_MODULE, module, "parameters", "nested")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def kvm_device(path: str | os.PathLike[str] = KVM_DEVICE) -> KvmDevice:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return KvmDevice(exists=False, accessible=False)
    return KvmDevice(
        exists=True,
        accessible=os.access(path, os.R_OK | os.W_OK),
        mode=f"{stat.S_IMODE(st.st_mode):04o}",
        owner=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
    )


def mem_available() -> int | Unknown:
    try:
        with open("/proc/meminfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError) as exc:
        return Unknown(f"/proc/meminfo unreadable: {exc}")
    return Unknown("no MemAvailable in /proc/meminfo")


def firmware_virt(vendor: str, msr_path: str = "/dev/cpu/0/msr") -> str | Unknown:
    """What firmware allows, from the MSR kvm-ok reads. Needs root and the msr module."""
    if vendor == INTEL:
        register = MSR_FEATURE_CONTROL
    elif vendor == AMD:
        register = MSR_VM_CR
    else:
        return Unknown(f"no firmware MSR known for vendor {vendor or 'unknown'}")
    try:
        with open(msr_path, "rb", buffering=0) as msr:
            msr.seek(register)
            (value,) = struct.unpack("<Q", msr.read(8))
    except FileNotFoundError:
        return Unknown("msr module not loaded (modprobe msr), MSR not read")
    except PermissionError:
        return Unknown("MSR readable by root only")
    except OSError as exc:  # the hypervisor may refuse the read (EIO)
        return Unknown(f"MSR {register:#x} not readable: {exc.strerror}")
    return "disabled" if msr_says_disabled(vendor, value) else "enabled"


def msr_says_disabled(vendor: str, value: int) -> bool:
    """kvm-ok's test: Intel locked (bit 0), VMX outside SMX (bit 2) clear; AMD SVMDIS (bit 4)."""
    if vendor == INTEL:
        return bool(value & 0x1) and not value & 0x4
    return bool(value & 0x10)


def _hypervisor() -> HypervisorInfo | Unknown:
    from nestvirt.probe.cpuid import detect_hypervisor

    try:
        return detect_hypervisor()
    except OSError as exc:  # CPUID could not be executed (no executable mapping allowed)
        return Unknown(f"CPUID not run: {exc}")


def libvirt_qemu_access(
    device: KvmDevice, conf: str | os.PathLike[str] = QEMU_CONF
) -> LibvirtQemuAccess | None:
    """Whether the user/group in qemu.conf can open /dev/kvm (NV-H09)."""
    try:
        with open(conf) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except PermissionError:
        return LibvirtQemuAccess(
            "?", "?", Unknown(f"{conf} readable by root only"), device.accessible
        )
    user = _conf_value(text, "user") or QEMU_DEFAULT_USER
    group = _conf_value(text, "group") or QEMU_DEFAULT_GROUP
    if not device.exists:
        return LibvirtQemuAccess(user, group, False, False)
    # libvirtd runs as root, which opens a char device whatever its mode.
    return LibvirtQemuAccess(user, group, can_open(user, group), daemon_can_open_kvm=True)


def _conf_value(text: str, key: str) -> str | None:
    """The first `key = "value"` at a line's start, as
    re.search(rf'^\\s*{key}\\s*=\\s*"([^"]*)"', text, re.MULTILINE) finds it (whitespace,
    line breaks too, around `=`; the value up to the next quote), by str.find: the
    pattern's compile and its search through qemu.conf's ~1,000 lines took 0.4 ms of every
    `nestvirt status` (tests/integration/test_host_facts.py compares the two)."""
    n, start = len(text), 0
    while (at := text.find(key, start)) >= 0:
        start = at + 1
        line = text.rfind("\n", 0, at) + 1
        if at > line and not text[line:at].isspace():
            continue
        i = at + len(key)
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            continue
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != '"':
            continue
        end = text.find('"', i + 1)
        if end >= 0:
            return text[i + 1 : end]
    return None


def can_open(user: str, group: str, path: str | os.PathLike[str] = KVM_DEVICE) -> bool | Unknown:
    """Read+write for user/group by mode bits, owner and supplementary groups."""
    try:
        st = os.stat(path)
        uid, gids = _account_ids(user, group)
    except KeyError as exc:
        return Unknown(f"no such account: {exc.args[0]}")
    except OSError as exc:
        return Unknown(str(exc))
    if uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return mode & 0o600 == 0o600
    if st.st_gid in gids:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


def _account_ids(user: str, group: str) -> tuple[int, set[int]]:
    """uid and every gid of qemu.conf's user/group; '+N' is a number, as libvirt allows."""
    gid = int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid
    if user.startswith("+"):
        return int(user[1:]), {gid}
    account = pwd.getpwnam(user)
    extra = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    return account.pw_uid, {gid, account.pw_gid, *extra}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
