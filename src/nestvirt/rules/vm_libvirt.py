"""VM rules for libvirt domains (docs/rules.md): pure functions of facts."""

from __future__ import annotations

from collections.abc import Iterator

from nestvirt.commands import nestvirt, virsh
from nestvirt.facts.libvirt_vm import LibvirtVmFacts
from nestvirt.guestcpu import (
    EXTENSION_OF_VENDOR,
    HOST_MODES,
    OFF,
    ON,
    SVM_VENDORS,
    GuestCpu,
    table_answer,
)
from nestvirt.model import Severity, Unknown
from nestvirt.nwfilter_derive import ANTI_SPOOFING
from nestvirt.rules import Hit, Platform, Target, rules_of

GIB_KIB = 1024 * 1024


vm_rule = rules_of(Target.VM, Platform.LIBVIRT)


def is_tcg(vm: LibvirtVmFacts) -> bool:
    return vm.domain_type == "qemu"


def guest_cpu_of(vm: LibvirtVmFacts) -> GuestCpu:
    """The oracle's answer the backend gathered, or the table's when facts were built by hand."""
    if vm.guest_cpu is not None:
        return vm.guest_cpu
    return table_answer(
        vm,
        host_vendor=vm.host_cpu_vendor,
        host_extensions=vm.host_virt_extensions,
        model_vendor=vm.cpu_model_vendor,
        why="QEMU not asked",
    )


def wanted_extension(vm: LibvirtVmFacts) -> str | None:
    """The extension this domain can be given: svm under TCG, else the host vendor's."""
    if is_tcg(vm):
        return "svm"
    return EXTENSION_OF_VENDOR.get(vm.host_cpu_vendor or "")


def exposes(vm: LibvirtVmFacts) -> bool:
    """Whether the guest CPU of this definition will carry vmx/svm that its kernel can use."""
    return next(hidden_reasons(vm), None) is None


def fixable_here(vm: LibvirtVmFacts) -> bool:
    """Whether `nestvirt enable` can expose the extension on this host (see plan_libvirt)."""
    if vm.domain_type not in ("kvm", "qemu"):
        return False
    if is_tcg(vm):
        return True
    ext = wanted_extension(vm)
    return ext is not None and ext in vm.host_virt_extensions


def hidden_reasons(vm: LibvirtVmFacts) -> Iterator[str]:
    """Why the guest will not get a usable vmx/svm (nothing when it will)."""
    cpu = guest_cpu_of(vm)
    ext = wanted_extension(vm)
    if cpu.refused:
        yield f"libvirt will not start this CPU here: {cpu.refused}"
        return
    if ext is None:
        yield f"host CPU vendor {vm.host_cpu_vendor or 'unknown'} has no known extension"
        return
    if ext not in cpu.extensions:
        yield _why_not(vm, ext)
        return
    if is_tcg(vm) and cpu.vendor is not None and cpu.vendor not in SVM_VENDORS:
        model = vm.cpu_model or "QEMU's default"
        yield (
            f"CPU model {model} has vendor {cpu.vendor}: the guest sees svm, but kvm_amd in "
            "the guest refuses non-AMD CPUs"
        )


def _why_not(vm: LibvirtVmFacts, ext: str) -> str:
    policy = vm.cpu_features.get(ext)
    if policy in OFF:
        return f"the CPU definition has <feature policy='{policy}' name='{ext}'/>"
    if not is_tcg(vm) and ext not in vm.host_virt_extensions:
        return f"the host CPU offers no {ext} to KVM guests"
    model = vm.cpu_model or "QEMU's default (qemu64)"
    if not is_tcg(vm) and vm.cpu_mode not in HOST_MODES:
        return (
            f"CPU model {model} under KVM: QEMU turns {ext} off for named models unless the "
            "definition requires it"
        )
    if is_tcg(vm) and vm.cpu_mode == "host-model":
        return "host-model under TCG does not carry svm here; require it"
    return f"CPU model {model} does not carry {ext} and the definition does not require it"


@vm_rule("NV-V01", "virt-extensions-hidden", Severity.ERROR)
def virt_extensions_hidden(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The guest CPU will not show `vmx`/`svm`, so the VM cannot run a hypervisor.

    ## What it checks
    What the guest CPU really gets, asked of QEMU itself on a local
    connection: libvirt's `-cpu` argument for the definition
    (`virsh domxml-to-native qemu-argv`) expanded by the domain's emulator
    over QMP (`query-cpu-model-expansion`) and filtered by what the
    accelerator supports. Remote connections use nestvirt's table of the same
    rules, and the finding says so. Under KVM a named model (or none:
    qemu64) shows the extension only when the definition requires it;
    host-passthrough, host-model and maximum follow the host. Under TCG
    (`<domain type='qemu'>`) only `svm` exists, carried by AMD-vendor models,
    and the guest's kvm_amd needs an AMD (or Hygon) CPUID vendor.

    ## Why it matters
    Inside the VM, `kvm_intel`/`kvm_amd` will not load and Hyper-V, WSL2 or
    any other hypervisor refuses to start.

    ## Example
    `<domain type='kvm'>` with `<cpu mode='custom'><model>EPYC</model></cpu>`:
    libvirt's CPU map lists svm for EPYC, QEMU gives the guest none.

    ## Fix
    `nestvirt enable VM`: keeps a named model and requires the host's
    extension, host-passthrough when there is no model; under TCG an AMD model
    with `<feature policy='require' name='svm'/>`. When the host CPU offers
    no extension to KVM guests, no domain change helps: the finding says so.

    ## Sources
    libvirt "Domain XML format: CPU model and topology"; QEMU QMP
    `query-cpu-model-expansion`, `target/i386/kvm/kvm-cpu.c` (svm off for
    named models), `target/i386/cpu.c` (TCG features); Linux
    `running-nested-guests.rst`.
    """
    cpu = guest_cpu_of(vm)
    for reason in hidden_reasons(vm):
        yield Hit(
            f"{wanted_extension(vm) or 'vmx/svm'} hidden from the guest: {reason} "
            f"[{cpu.source_text}]",
            _expose_fix(vm),
        )


def _enable_fix(vm: LibvirtVmFacts, *options: str) -> str:
    """`nestvirt enable VM OPTIONS`, where enable can run: it refuses a domain whose
    hidden vmx/svm it cannot expose on this host (NV-V01), and changes nothing then."""
    if exposes(vm) or fixable_here(vm):
        return nestvirt("enable", vm.name, *options, uri=vm.uri)
    return (
        "by hand (virsh edit): `nestvirt enable` refuses this domain while its vmx/svm "
        "cannot be exposed on this host (NV-V01)"
    )


def _expose_fix(vm: LibvirtVmFacts) -> str:
    if fixable_here(vm):
        return nestvirt("enable", vm.name, uri=vm.uri)
    if vm.domain_type not in ("kvm", "qemu"):
        return f"none from nestvirt: it changes kvm and qemu domains, not {vm.domain_type!r}"
    return (
        "none from the domain on this host: its CPU offers no VT-x/AMD-V to KVM guests; "
        "use a host that does, or a qemu (TCG) domain"
    )


@vm_rule("NV-V11", "tcg-ignores-vmx", Severity.WARNING)
def tcg_ignores_vmx(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """A TCG domain requires `vmx`, which QEMU's TCG cannot emulate.

    ## What it checks
    `<domain type='qemu'>` whose CPU has `<feature policy='require'|'force'
    name='vmx'/>`.

    ## Why it matters
    QEMU drops the feature when the domain starts ("TCG doesn't support
    requested feature: CPUID.01H:ECX.vmx"): the guest never sees vmx. If the
    model carries svm the guest still gets svm, and nests with kvm_amd.

    ## Example
    A definition copied from an Intel KVM host and switched to `type='qemu'`.

    ## Fix
    `nestvirt enable VM` turns the require of vmx into a require of svm on an
    AMD model.

    ## Sources
    QEMU `target/i386/cpu.c` (TCG_EXT_FEATURES has no VMX).
    """
    if not is_tcg(vm) or vm.cpu_features.get("vmx") not in ON:
        return
    cpu = guest_cpu_of(vm)
    still = (
        "; the guest still gets svm from this model"
        if "svm" in cpu.extensions
        else "; the guest gets no svm either"
    )
    yield Hit(
        f"TCG cannot emulate vmx and ignores the require of it{still} [{cpu.source_text}]",
        _enable_fix(vm),
    )


@vm_rule("NV-V02", "dynamic-memory", Severity.WARNING)
def dynamic_memory(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The VM's memory can change while it runs.

    ## What it checks
    `<currentMemory>` below `<memory>` (a balloon target), a `<maxMemory>`
    (memory hotplug), or a `virtio-mem` device.

    ## Why it matters
    A VM that runs its own VMs pins memory for them: shrinking or growing it
    at run time stalls or crashes the nested guests.

    ## Example
    `<memory unit='KiB'>8388608</memory><currentMemory unit='KiB'>4194304</currentMemory>`.

    ## Fix
    `nestvirt enable VM` sets currentMemory = memory (removing maxMemory or
    virtio-mem only with `--remove-hotplug`).

    ## Sources
    Microsoft's Hyper-V nested virtualization preview, "Known issues"
    (dynamic memory off or the VM does not start; runtime memory resize
    fails),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    libvirt "Memory Allocation",
    https://libvirt.org/formatdomain.html#memory-allocation.
    """
    if vm.current_memory_kib and vm.current_memory_kib < vm.memory_kib:
        yield Hit(
            f"currentMemory {vm.current_memory_kib // 1024} MiB is below memory "
            f"{vm.memory_kib // 1024} MiB: the balloon resizes it at run time",
            _enable_fix(vm),
        )
    if vm.max_memory_kib is not None:
        yield Hit(
            f"maxMemory {vm.max_memory_kib // 1024} MiB allows memory hotplug",
            _enable_fix(vm, "--remove-hotplug"),
        )
    if vm.virtio_mem_devices:
        yield Hit(
            f"{vm.virtio_mem_devices} virtio-mem device(s) resize memory at run time",
            _enable_fix(vm, "--remove-hotplug"),
        )


@vm_rule("NV-V03", "memory-below-4gib", Severity.WARNING)
def memory_below_4gib(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The VM has less than 4 GiB of memory.

    ## What it checks
    `<memory>` of the definition.

    ## Why it matters
    The VM's own OS and its nested guests share it; below 4 GiB nested guests
    rarely have room.

    ## Example
    `<memory unit='MiB'>2048</memory>`.

    ## Fix
    `nestvirt enable VM --memory 4GiB`.

    ## Sources
    Microsoft's Enable-NestedVm.ps1 (offers 4 GB when startup memory is below
    4294967296 bytes),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    the Hyper-V nested virtualization preview, "Requirements" (4 GB RAM),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256.
    """
    if vm.memory_kib < 4 * GIB_KIB:
        yield Hit(
            f"memory is {vm.memory_kib / GIB_KIB:.2g} GiB, below 4 GiB",
            _enable_fix(vm, "--memory", "4GiB"),
        )


@vm_rule("NV-V04", "mac-spoofing-blocked", Severity.WARNING)
def mac_spoofing_blocked(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """A network filter drops frames from MAC or IP addresses other than the VM's own.

    ## What it checks
    Each interface's `<filterref>`, following includes through the connection:
    libvirt's anti-spoofing filters (`no-mac-spoofing`, `no-ip-spoofing`,
    `no-arp-spoofing`, `no-arp-mac-spoofing`, `no-arp-ip-spoofing`,
    `no-ipv6-spoofing`), `clean-traffic` (which includes them), or any filter
    with a rule dropping outgoing frames whose source is not `$MAC`/`$IP`.

    ## Why it matters
    Nested guests send with their own MAC and IP addresses through the VM's
    adapter: such frames are dropped and the nested guests get no network.

    ## Example
    `<filterref filter='clean-traffic'/>` on the VM's interface.

    ## Fix
    `nestvirt enable VM --mac-spoofing`: drops a lone `no-mac-spoofing`, or
    points the interface at a derived copy of the chain
    (`nestvirt-nested-NAME`) without the parts that match the VM's own
    addresses, keeping every other protection; or keep the filter and use NAT
    inside the VM (the nested guests then share the VM's addresses).

    ## Sources
    libvirt "Network Filters", pre-existing filters (no-mac-spoofing,
    clean-traffic), https://libvirt.org/formatnwfilter.html; the Hyper-V nested
    virtualization preview, "Known issues" (MAC address spoofing for networking
    in the nested guests),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256.
    """
    for iface in vm.interfaces:
        name = iface.mac or iface.source or iface.kind
        if iface.blocks_foreign_mac is True:
            via = [f for f in iface.filter_chain[1:] if f in ANTI_SPOOFING]
            through = f" (through {', '.join(via)})" if via else ""
            yield Hit(
                f"interface {name}: filter {iface.filter}{through} drops frames from foreign "
                "MAC/IP addresses; "
                "nested guests get no network (or use NAT inside the VM)",
                _enable_fix(vm, "--mac-spoofing"),
            )
        elif isinstance(iface.blocks_foreign_mac, Unknown):
            yield Hit(
                f"interface {name}: filter {iface.filter} not fully readable "
                f"({iface.blocks_foreign_mac.reason})",
                severity=Severity.INFO,
            )


@vm_rule("NV-V05", "saved-state", Severity.WARNING)
def saved_state(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The VM has a managed-save image.

    ## What it checks
    `virDomainHasManagedSaveImage`.

    ## Why it matters
    A saved image holds the old CPU definition: the VM would resume without
    the extensions. `enable` must discard it (after saying so).

    ## Example
    `virsh managedsave VM` before a host reboot.

    ## Fix
    Start the VM and shut it down cleanly, or discard the image with
    `virsh managedsave-remove VM` (its memory state is lost). `nestvirt enable
    VM` discards it too, after asking, when it changes the definition.

    ## Sources
    Enable-NestedVm.ps1 (Remove-VMSavedState); libvirt managed save.
    """
    if vm.has_managed_save is True:
        yield Hit(
            "a managed-save image exists: the VM would resume with its old CPU",
            virsh("managedsave-remove", vm.name, uri=vm.uri) + "  # or start it and shut it down",
        )


@vm_rule("NV-V06", "checkpoints-present", Severity.WARNING)
def checkpoints_present(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The VM has snapshots.

    ## What it checks
    The number of domain snapshots.

    ## Why it matters
    Reverting a snapshot taken before nesting was enabled brings back the old
    CPU; reverting one of a running VM with nested guests breaks them.

    ## Example
    `virsh snapshot-list VM` shows entries.

    ## Fix
    Review the snapshots; delete those you will not revert to.

    ## Sources
    Microsoft's Get-NestedVirtStatus.ps1 (a VM with a ParentCheckpointId does
    not support nesting),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1;
    the Hyper-V nested virtualization preview, "Known issues" (applying a
    checkpoint to a running VM fails),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256.
    """
    if isinstance(vm.snapshot_count, int) and vm.snapshot_count > 0:
        yield Hit(
            f"{vm.snapshot_count} snapshot(s): reverting one can undo nesting or break nested "
            "guests",
            virsh("snapshot-list", vm.name, uri=vm.uri),
        )


@vm_rule("NV-V07", "restart-required", Severity.INFO)
def restart_required(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The VM is running: a change takes effect only after a full stop and start.

    ## What it checks
    The domain state.

    ## Why it matters
    The CPU definition is read when QEMU starts; a reboot inside the guest is
    not enough.

    ## Example
    `nestvirt enable VM` on a running VM.

    ## Fix
    `nestvirt enable VM --stop`, or shut the VM down, then start it.

    ## Sources
    libvirt domain lifecycle.
    """
    if vm.state not in ("off", "saved", "crashed"):
        yield Hit(f"the VM is {vm.state}: changes apply after a full stop and start")


@vm_rule("NV-V09", "cpu-vendor-mismatch", Severity.ERROR)
def cpu_vendor_mismatch(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The domain asks for the other vendor's extension than the host has.

    ## What it checks
    A KVM domain requiring `vmx` on an AMD host or `svm` on an Intel host.
    (Under TCG `svm` is emulated on any host; `vmx` never is: see NV-V01.)

    ## Why it matters
    KVM cannot emulate the other vendor's extension: the domain fails to start
    (`check='full'`) or the guest sees nothing.

    ## Example
    A definition copied from an Intel host: `<feature policy='require' name='vmx'/>`
    on an AMD EPYC host.

    ## Fix
    `nestvirt enable VM` replaces it with the host's extension (or host-passthrough).

    ## Sources
    libvirt CPU feature policies; QEMU CPU features.
    """
    if is_tcg(vm):
        return
    own = EXTENSION_OF_VENDOR.get(vm.host_cpu_vendor or "")
    if own is None:
        return
    other = "svm" if own == "vmx" else "vmx"
    if vm.cpu_features.get(other) in ON:
        yield Hit(
            f"requires {other} on a {vm.host_cpu_vendor} host, which only has {own}",
            _expose_fix(vm),
        )


@vm_rule("NV-V10", "balloon-present", Severity.INFO)
def balloon_present(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """A memory balloon device can resize the VM's memory at run time.

    ## What it checks
    A `<memballoon>` whose model is not `none`.

    ## Why it matters
    The host can take memory back from a VM that runs nested guests.

    ## Example
    `<memballoon model='virtio'/>` (libvirt adds one by default).

    ## Fix
    Leave it unused, or set `<memballoon model='none'/>`.

    ## Sources
    libvirt "Memory balloon device".
    """
    if vm.balloon_model not in (None, "none"):
        yield Hit(f"a {vm.balloon_model} memory balloon can resize memory at run time")
