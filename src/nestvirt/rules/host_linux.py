"""Linux host rules NV-H01…NV-H09 (docs/rules.md). Pure functions of LinuxHostFacts."""

from __future__ import annotations

from collections.abc import Iterator

from nestvirt.facts.linux_host import KvmDevice, LinuxHostFacts
from nestvirt.model import Finding, Severity, Unknown
from nestvirt.probe.result import HypervisorInfo, ProbeResult, Stage
from nestvirt.rules import Hit, Platform, Target, findings_from, rules_of
from nestvirt.vocabulary import AMD, KVM_MODULE_OF_VENDOR

GIB = 1024**3
NESTED_ON = frozenset({"Y", "y", "1"})
NESTED_OFF = frozenset({"N", "n", "0"})
VENDOR_MODULE = KVM_MODULE_OF_VENDOR
DEVICE_STAGES = frozenset({Stage.NO_DEVICE, Stage.DENIED})


host_rule = rules_of(Target.HOST, Platform.LINUX)


def probe_ran_guest(probe: ProbeResult | None) -> bool:
    return probe is not None and any(m.ok for m in probe.modes.values())


@host_rule("NV-H01", "cpu-virt-missing", Severity.ERROR)
def cpu_virt_missing(host: LinuxHostFacts) -> Iterator[Hit]:
    """The CPU shows neither VT-x (vmx) nor AMD-V (svm), and KVM cannot run a guest.

    ## What it checks
    The `flags` line of `/proc/cpuinfo` for `vmx` or `svm`. Flags alone are not
    the whole truth: a paravirtual KVM module (for example `kvm_pvm`) serves
    `/dev/kvm` on CPUs without either flag. So when the KVM probe runs a guest
    anyway, this is a warning naming the module that does it: guests run, but
    a VM started here can nest only under emulation (TCG), not with KVM.

    ## Why it matters
    Without the extensions no hardware-assisted hypervisor can run here, and a
    VM started here cannot be given them to run its own hypervisor.

    ## Example
    A cloud VM type without nested virtualization: no `vmx` in the flags and
    no `/dev/kvm`.

    ## Fix
    Enable VT-x/AMD-V in the firmware setup, or on a cloud VM pick a machine
    type or flag that exposes nested virtualization. Without them, QEMU's TCG
    can still emulate AMD SVM for a lab VM (slowly): see `nestvirt lab`.

    ## Sources
    kvm-ok (cpu-checker, https://packages.ubuntu.com/noble/cpu-checker): what
    it checks, docs/sources.md#kvm-ok.
    """
    if host.cpu_virt_flags:
        return
    if probe_ran_guest(host.probe):
        module = ", ".join(host.kvm_vendor_modules) or "an unnamed module"
        yield Hit(
            f"no vmx/svm in /proc/cpuinfo, yet /dev/kvm runs guests (served by {module}): "
            "guests started here get no hardware extensions to nest with",
            "for a nested lab use TCG with an SVM CPU model (`nestvirt lab`)",
            severity=Severity.WARNING,
        )
        return
    yield Hit(
        "the CPU shows neither vmx nor svm and KVM cannot run a guest here",
        "enable VT-x/AMD-V in firmware, or pick a cloud machine type that exposes nesting",
    )


@host_rule("NV-H02", "firmware-virt-disabled", Severity.ERROR)
def firmware_virt_disabled(host: LinuxHostFacts) -> Iterator[Hit]:
    """The firmware has switched the virtualization extensions off.

    ## What it checks
    The MSR kvm-ok reads: Intel IA32_FEATURE_CONTROL (0x3a) locked with
    "VMXON outside SMX" clear, or AMD VM_CR (0xc0010114) with SVMDIS set. It
    needs root and the `msr` module; when the MSR cannot be read the check is
    skipped, never failed.

    ## Why it matters
    The CPU may list `vmx`/`svm` while the firmware forbids using them: KVM
    then fails to load or refuses to create VMs.

    ## Example
    A server delivered with "Intel Virtualization Technology: Disabled".

    ## Fix
    Enable VT-x/AMD-V (SVM mode) in the firmware setup, then power-cycle.

    ## Sources
    kvm-ok (the same MSRs and bits), docs/sources.md#kvm-ok; Intel SDM vol. 3
    §23.7; AMD APM vol. 2 §15.4.
    """
    if host.firmware_virt == "disabled":
        register = "VM_CR SVMDIS" if host.cpu_vendor == AMD else "IA32_FEATURE_CONTROL"
        yield Hit(
            f"firmware has disabled virtualization ({register})",
            "enable VT-x/AMD-V in the firmware setup and power-cycle",
        )


@host_rule("NV-H03", "kvm-module-missing", Severity.ERROR)
def kvm_module_missing(host: LinuxHostFacts) -> Iterator[Hit]:
    """No KVM vendor module is loaded.

    ## What it checks
    `/sys/module` for `kvm_intel`, `kvm_amd`, or another `kvm_*` module that
    serves `/dev/kvm`.

    ## Why it matters
    `kvm.ko` alone runs nothing: the vendor module drives VT-x or AMD-V.

    ## Example
    A fresh host where the module was blacklisted or never loaded.

    ## Fix
    `modprobe kvm_intel` or `modprobe kvm_amd`.

    ## Sources
    Linux `Documentation/virt/kvm/`.
    """
    if host.kvm_vendor_modules:
        return
    module = VENDOR_MODULE.get(host.cpu_vendor if isinstance(host.cpu_vendor, str) else "")
    yield Hit(
        "no KVM vendor module is loaded"
        + ("" if host.kvm_loaded else " (kvm itself is not loaded either)"),
        f"modprobe {module}" if module else "modprobe kvm_intel  # or kvm_amd",
    )


@host_rule("NV-H04", "nested-param-off", Severity.ERROR)
def nested_param_off(host: LinuxHostFacts) -> Iterator[Hit]:
    """The vendor module's `nested` parameter is off.

    ## What it checks
    `/sys/module/kvm_intel/parameters/nested` or `kvm_amd`'s: `N`, `n` or `0`
    is off; `Y`, `y`, `1` is on. A module without the parameter is not judged.

    ## Why it matters
    With `nested` off, KVM hides VT-x/AMD-V from every guest whatever the
    guest's CPU model asks for.

    ## Example
    An older distribution kernel (before Linux 4.20 the default was off).

    ## Fix
    `nestvirt host enable` writes `/etc/modprobe.d/nestvirt-kvm.conf` and
    reloads the module when no VM is running.

    ## Sources
    Linux `Documentation/virt/kvm/x86/running-nested-guests.rst`.
    """
    for module, value in sorted(host.nested.items()):
        if value in NESTED_OFF:
            yield Hit(
                f"{module} nested={value}: guests cannot see the virtualization extensions",
                "nestvirt host enable",
            )


@host_rule("NV-H05", "kvm-device-inaccessible", Severity.ERROR)
def kvm_device_inaccessible(host: LinuxHostFacts) -> Iterator[Hit]:
    """`/dev/kvm` is missing or this user cannot read and write it.

    ## What it checks
    Whether `/dev/kvm` exists and is open for read and write to the user
    running nestvirt (also what the probe met when it opened the device).

    ## Why it matters
    QEMU and every other KVM user need it; without it guests fall back to
    slow emulation or fail to start.

    ## Example
    A CI runner or container without the device, or a user not in group `kvm`.

    ## Fix
    Load the KVM module; add the user to group `kvm` (`usermod -aG kvm USER`).
    Inside a container the fix is the container's: pass the device in
    (NV-C03) or give the job's user its group (NV-C04).

    ## Sources
    virt-host-validate, docs/sources.md#virt-host-validate
    (https://libvirt.org/manpages/virt-host-validate.html); kvm-ok,
    docs/sources.md#kvm-ok.
    """
    contained = host.container is not None and host.container.contained
    yield from device_hits(host.kvm_device, host.probe, contained=contained)


def device_hits(
    device: KvmDevice | None, probe: ProbeResult | None, *, contained: bool = False
) -> Iterator[Hit]:
    """In a container the fix is the container's (NV-C03/NV-C04), not this root's."""
    stage = probe.failure.stage if probe and probe.failure else None
    if (device is not None and not device.exists) or stage is Stage.NO_DEVICE:
        fix = (
            "pass the host's /dev/kvm into the container (NV-C03 names the flag)"
            if contained
            else "modprobe kvm_intel  # or kvm_amd"
        )
        yield Hit("/dev/kvm does not exist", fix)
    elif (device is not None and not device.accessible) or stage is Stage.DENIED:
        where = f" ({device.mode} {device.owner}:{device.group})" if device and device.mode else ""
        fix = (
            "give the container's user the device's group (NV-C04 names the GID)"
            if contained
            else "add the user to group kvm (usermod -aG kvm USER) and log in again"
        )
        yield Hit(f"/dev/kvm is not readable and writable for this user{where}", fix)


@host_rule("NV-H06", "low-memory", Severity.WARNING)
def low_memory(host: LinuxHostFacts) -> Iterator[Hit]:
    """Less than 4 GiB of memory is available.

    ## What it checks
    `MemAvailable` in `/proc/meminfo`.

    ## Why it matters
    A VM that runs its own VMs needs memory for both levels; below 4 GiB
    available, nested guests swap or fail to start.

    ## Example
    A 4 GiB laptop running a desktop and one VM.

    ## Fix
    Free memory, or give the host more.

    ## Sources
    Microsoft's Enable-NestedVm.ps1 (4 GB threshold),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    the Hyper-V nested virtualization preview, "Requirements" (at least 4 GB
    of RAM available),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256.
    """
    available = host.mem_available_bytes
    if isinstance(available, int) and available < 4 * GIB:
        yield Hit(f"MemAvailable is {available / GIB:.1f} GiB, below 4 GiB", "free memory")


@host_rule("NV-H07", "kvm-not-functional", Severity.ERROR)
def kvm_not_functional(host: LinuxHostFacts) -> Iterator[Hit]:
    """`/dev/kvm` opens but KVM cannot run guest code.

    ## What it checks
    The result of `nestvirt probe`: it creates a VM and a vCPU through the KVM
    API and runs a real-mode and a 64-bit guest; any refusal, error, wrong
    exit, wrong data or timeout fires this rule.

    ## Why it matters
    Flag and device checks (kvm-ok, virt-host-validate) say yes on hosts where
    guests then hang or fail; only running a guest proves KVM works.

    ## Example
    A broken or paravirtual KVM module whose `KVM_RUN` fails or never returns.

    ## Fix
    Read the probe's detail (`nestvirt probe`); check `dmesg` for KVM errors,
    the module's version, and the hypervisor this host runs under.

    ## Sources
    Linux `Documentation/virt/kvm/api.rst`.
    """
    yield from functional_hits(host.probe)


def functional_hits(probe: ProbeResult | None) -> Iterator[Hit]:
    if probe is None:
        return
    failures = [probe.failure] if probe.failure else []
    failures += [m.failure for m in probe.modes.values() if m.failure and m.failure not in failures]
    for failure in failures:
        if failure.stage not in DEVICE_STAGES:
            yield Hit(
                f"KVM could not run a guest ({failure.stage}): {failure.detail}",
                "nestvirt probe  # then check dmesg and the KVM module",
            )


@host_rule("NV-H08", "host-is-guest", Severity.INFO)
def host_is_guest(host: LinuxHostFacts) -> Iterator[Hit]:
    """This machine itself runs under a hypervisor.

    ## What it checks
    CPUID leaf 1 ECX bit 31 and the signature at leaf 0x40000000, with
    `/sys/hypervisor` and DMI as fallback.

    ## Why it matters
    VMs started here are already one level down: whether they can run their
    own hypervisor depends on what the outer hypervisor gives this machine.

    ## Example
    A cloud VM: "KVM" or "Microsoft Hyper-V" signature.

    ## Fix
    Nothing to fix; to nest deeper, the outer hypervisor must expose the
    extensions to this machine.

    ## Sources
    Intel SDM CPUID leaf 1; the signatures and their sources,
    docs/sources.md#hypervisor-signatures-in-cpuid (systemd
    `src/basic/virt.c`, https://github.com/systemd/systemd/blob/main/src/basic/virt.c;
    Linux `Documentation/virt/kvm/x86/cpuid.rst`,
    https://docs.kernel.org/virt/kvm/x86/cpuid.html).
    """
    yield from guest_hits(host.hypervisor)


def guest_hits(hypervisor: HypervisorInfo | Unknown | None) -> Iterator[Hit]:
    if isinstance(hypervisor, HypervisorInfo) and hypervisor.present:
        name = hypervisor.name or "an unidentified hypervisor"
        signature = f" (signature {hypervisor.signature!r})" if hypervisor.signature else ""
        yield Hit(f"this machine is a guest of {name}{signature}")


@host_rule("NV-H09", "kvm-device-hidden-from-libvirt", Severity.WARNING)
def kvm_device_hidden_from_libvirt(host: LinuxHostFacts) -> Iterator[Hit]:
    """libvirt runs QEMU as a user that cannot open `/dev/kvm`, while the daemon can.

    ## What it checks
    The `user`/`group` of `/etc/libvirt/qemu.conf` (Debian's default:
    `libvirt-qemu`, group `kvm`) against the owner, group and mode of
    `/dev/kvm`.

    ## Why it matters
    libvirt probes QEMU's capabilities as that user. When QEMU sees no KVM
    but the daemon does, libvirt marks its capability cache outdated ("/dev/kvm
    has changed") on every call and probes QEMU again: each define or start
    then costs tens of seconds (44 s measured), and KVM guests cannot start.

    ## Example
    A host or container without udev: `/dev/kvm` stays `root:root 0600`.

    ## Fix
    Group `kvm` and mode 0660, as distributions' udev rule sets
    (`KERNEL=="kvm", GROUP="kvm", MODE="0660"`): `nestvirt host enable`
    applies it and installs the rule where udev runs.

    ## Sources
    libvirt `src/qemu/qemu_capabilities.c` (virQEMUCapsIsValid); systemd's
    `50-udev-default.rules`.
    """
    access = host.libvirt_qemu
    if access is None or access.can_open_kvm is not False or not access.daemon_can_open_kvm:
        return
    device = host.kvm_device
    yield Hit(
        f"/dev/kvm is {device.mode} {device.owner}:{device.group}: libvirt's QEMU user "
        f"{access.user}:{access.group} cannot open it, so libvirt re-probes QEMU on every call",
        "nestvirt host enable  # chgrp kvm /dev/kvm && chmod 0660 /dev/kvm",
    )


@host_rule("NV-H10", "kvm-boots-no-linux", Severity.WARNING)
def kvm_boots_no_linux(host: LinuxHostFacts) -> Iterator[Hit]:
    """KVM runs small guests but a Linux guest does not boot under QEMU's KVM accel.

    ## What it checks
    The boot test of `nestvirt lab --accel auto`: the lab kernel started with
    QEMU's KVM accel must reach its init within a few seconds. `status` does
    not boot kernels, so only the lab reports this rule.

    ## Why it matters
    The KVM API answers and the probe's guests run, yet a full guest (MSRs,
    APIC, paging a real kernel sets up) hangs or aborts: every KVM VM on this
    host would too. QEMU's TCG still runs guests, slowly.

    ## Example
    A paravirtual KVM module such as `kvm_pvm`: QEMU aborts in
    `kvm_buf_set_msrs`, or the kernel never prints a line.

    ## Fix
    Use TCG (`--accel tcg`, libvirt `<domain type='qemu'>`) here, or run on a
    host with `kvm_intel`/`kvm_amd`; report the module's failure to its vendor.

    ## Sources
    QEMU `target/i386/kvm/kvm.c`
    (https://gitlab.com/qemu-project/qemu/-/blob/master/target/i386/kvm/kvm.c);
    this project's measurements, docs/sources.md#tcg-fallback-measurements.
    """
    yield from linux_boot_hits(host.kvm_boots_linux, "")


def linux_boot_hits(boots: bool | Unknown | None, detail: str) -> Iterator[Hit]:
    if boots is False:
        yield Hit(
            "a Linux guest does not boot under KVM here although small guests run"
            + (f": {detail}" if detail else ""),
            "use TCG (nestvirt lab --accel tcg; libvirt <domain type='qemu'>)",
        )


def probe_findings(result: ProbeResult) -> list[Finding]:
    """NV-H05/H07/H08 from a probe result alone (`nestvirt probe`, the lab's guests)."""
    return [
        *findings_from("NV-H05", Platform.LINUX, device_hits(None, result)),
        *findings_from("NV-H07", Platform.LINUX, functional_hits(result)),
        *findings_from("NV-H08", Platform.LINUX, guest_hits(result.hypervisor)),
    ]
