"""VM rules for Hyper-V (NV-V01…NV-V08), over (HyperVVmFacts, HyperVHostFacts).

The successor of Get-NestedVirtStatus.ps1's per-VM checks and of the checks
Enable-NestedVm.ps1 made before changing a VM, plus what later guidance added
(configuration versions, AMD, NAT instead of MAC spoofing).

Where `nestvirt enable` makes the change (NV-V01…V04, V07), the fix is that command
(`nestvirt.commands.nestvirt`: shell words, quoted), naming the host as the user reached
it (`HyperVHostFacts.reached_as`: `--hyperv HOST`, the snapshot's host by name,
`--hyperv ''` for this machine, the placeholder HOST when not known) and with `--stop`
when enable would need a running VM off; the cmdlets it runs are in its plan. Where
nestvirt has no command (saved state, checkpoints, configuration version) the fix is
the PowerShell to run, the VM name a single-quoted literal.
"""

from __future__ import annotations

from collections.abc import Iterator

from nestvirt.commands import nestvirt, ps_quote
from nestvirt.facts.hyperv import GIB, HyperVHostFacts, HyperVVmFacts
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Hit, Platform, Target, rules_of
from nestvirt.rules.hyperv_table import (
    AMD_VERSION,
    LIFTED_BUILD,
    LIFTED_VERSION,
    is_preview_build,
    preview_limits,
    versioned,
)
from nestvirt.rules.operations import hyperv_host_option

MIN_MEMORY_BYTES = 4 * GIB
MIN_VERSION_INTEL = LIFTED_VERSION
MIN_VERSION_AMD = AMD_VERSION
# Checkpoint types that are not the user's to delete (Hyper-V Replica, recovery points)
_NOT_USERS = ("replica", "recovery")


def _gib(n: int) -> str:
    """4294967296 → "4 GiB", 1610612736 → "1.5 GiB", 536870912 → "512 MiB"."""
    if n >= GIB:
        return f"{n // GIB} GiB" if n % GIB == 0 else f"{n / GIB:.2f}".rstrip("0") + " GiB"
    return f"{n / 1024**2:.0f} MiB"


def _version(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _version_blocks(vm: HyperVVmFacts, host: HyperVHostFacts) -> bool:
    """Is the VM's configuration version too old for nesting on this host (NV-V08's error)?
    `nestvirt enable` refuses such a VM (an error finding no change of its clears)."""
    have, vendor = vm.version_tuple, host.cpu_vendor
    return have < MIN_VERSION_INTEL or (vendor == "amd" and have < MIN_VERSION_AMD)


def _needs_off(vm: HyperVVmFacts, host: HyperVHostFacts, *, memory: bool) -> bool:
    """Would `nestvirt enable` change a setting that needs the VM off? (plan_hyperv's
    plan_enable: exposing VT-x/AMD-V, a new startup memory, dynamic memory on a preview
    build.) Enable refuses a running VM then, unless given --stop."""
    preview = is_preview_build(host.build) is True
    return (
        not vm.expose_virtualization_extensions or memory or (vm.dynamic_memory_enabled and preview)
    )


def _enable_fix(vm: HyperVVmFacts, host: HyperVHostFacts, *options: str, stop: bool = False) -> str:
    """`nestvirt enable --hyperv HOST [OPTIONS] [--stop] VM`, as the user reached the host;
    `--stop` where the VM runs and enable (or, with `stop`, this fix) needs it off.

    Enable refuses a VM whose configuration version is too old (NV-V08): then the fix
    says to raise it first.
    """
    where = "--hyperv HOST" if host.reached_as is None else hyperv_host_option(host.reached_as)
    running = not vm.is_off and not vm.is_saved
    if running and (stop or _needs_off(vm, host, memory="--memory" in options)):
        options = (*options, "--stop")
    command = nestvirt("enable", vm.name, where, *options)
    if _version_blocks(vm, host):
        return f"after NV-V08's {_update_version(vm)}: {command}"
    return command


def _update_version(vm: HyperVVmFacts) -> str:
    return f"Update-VMVersion -Name {ps_quote(vm.name)}"


vm_rule = rules_of(Target.VM, Platform.HYPERV)


@vm_rule("NV-V01", "virt-extensions-hidden", Severity.ERROR)
@versioned("NV-V01")
def virt_extensions_hidden(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM does not see the host's VT-x / AMD-V.

    ## What it checks
    `Get-VMProcessor`'s `ExposeVirtualizationExtensions` is false.

    ## Why it matters
    Hyper-V hides the virtualization extensions from its guests unless told
    otherwise; without them the guest cannot run Hyper-V (or any hypervisor).

    ## Example
    A new VM (`ExposeVirtualizationExtensions` false): fires. After
    `nestvirt enable --hyperv HOST VM`: does not.

    ## Fix
    `nestvirt enable --hyperv HOST VM` (`--hyperv ''` on this Windows machine; add
    `--stop` for a running VM, which enable shuts down and starts again): it exposes
    the extensions with the VM off, and does the rest of this list. A VM whose
    configuration version is too old (NV-V08) must be upgraded first: enable refuses it.

    ## Sources
    docs/hyperv-facts.md#enabling-with-the-vm-off. Microsoft's preview page, "How" and step 2,
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Get-NestedVirtStatus.ps1 and Enable-NestedVm.ps1,
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1,
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    "Run Hyper-V in a Virtual Machine with Nested Virtualization" (`Set-VMProcessor -VMName X
    -ExposeVirtualizationExtensions $true`),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization.
    """
    if not vm.expose_virtualization_extensions:
        yield Hit(
            f"VM {vm.name!r} does not expose the virtualization extensions "
            "(ExposeVirtualizationExtensions is false)",
            _enable_fix(vm, host),
        )


@vm_rule("NV-V02", "dynamic-memory", Severity.ERROR)
@versioned("NV-V02")
def dynamic_memory(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """Dynamic memory is on: on a preview build the VM will not start; later it stays put.

    ## What it checks
    `Get-VMMemory`'s `DynamicMemoryEnabled` is true. On a preview host (build
    below 14361) this is an **error**, as the preview page said; on build 14361 and
    later a **warning**; when the host's build is not known, a warning that
    says so.

    ## Why it matters
    The preview page: with nesting enabled, dynamic memory must be off or the
    VM will not start. Today's page: while Hyper-V runs inside the VM its
    memory can only change with the VM off, so "even if dynamic memory is
    enabled, the amount of memory will not fluctuate", and "simply enabling
    nested virtualization will have no effect on dynamic memory". The VM
    starts and keeps its Startup memory: worth knowing (the Maximum you set is
    never reached), not a reason to call it not ready or to stop it.

    ## Example
    Build 10586, `DynamicMemoryEnabled` true: an error. Build 26100: a
    warning naming the Startup memory the VM keeps. False: nothing.

    ## Fix
    `nestvirt enable --hyperv HOST VM` turns it off (give the VM the Startup memory
    it needs: `--memory SIZE`). A running VM: add `--stop`; on 14361+ enable turns
    it off only when the VM is being stopped anyway. A saved VM on 14361+ whose
    extensions are already exposed is one enable leaves alone: the fix is then
    Hyper-V's own command, to run once the VM is off.

    ## Sources
    docs/hyperv-facts.md#dynamic-memory. Microsoft's preview page, "Known issues" and FAQ ("the VM
    does not start"),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Get-NestedVirtStatus.ps1 and Enable-NestedVm.ps1,
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1,
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    "What is Nested Virtualization for Hyper-V?", "Dynamic Memory and Runtime Memory Resize",
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization.
    """
    if not vm.dynamic_memory_enabled:
        return
    fix = _dynamic_fix(vm, host)
    memory = f"startup {_gib(vm.startup_bytes)}, {_gib(vm.minimum_bytes)}–{_gib(vm.maximum_bytes)}"
    preview = is_preview_build(host.build)
    if preview is True:
        yield Hit(
            f"VM {vm.name!r} has dynamic memory on ({memory}): on preview build {host.build} "
            "a nesting VM with dynamic memory will not start",
            fix,
        )
        return
    known = "" if preview is False else f" (if the host is build {LIFTED_BUILD} or later)"
    yield Hit(
        f"VM {vm.name!r} has dynamic memory on ({memory}): while Hyper-V runs inside it, its "
        f"memory stays at the startup {_gib(vm.startup_bytes)} and does not fluctuate{known}",
        fix,
        Severity.WARNING,
    )


def _dynamic_fix(vm: HyperVVmFacts, host: HyperVHostFacts) -> str:
    """Enable turns dynamic memory off on a preview build, with the VM off, with --stop,
    or while it exposes the extensions (plan_hyperv's plan_enable); a saved VM that needs
    nothing else keeps it: the cmdlet then."""
    if vm.is_saved and not _needs_off(vm, host, memory=False):
        return f"Set-VMMemory -VMName {ps_quote(vm.name)} -DynamicMemoryEnabled $false"
    return _enable_fix(vm, host, stop=True)


@vm_rule("NV-V03", "memory-below-4gib", Severity.WARNING)
@versioned("NV-V03")
def memory_below_4gib(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM starts with less than 4 GiB of memory.

    ## What it checks
    `Get-VMMemory`'s `Startup` is below 4 GiB (4294967296 bytes).

    ## Why it matters
    The preview page asks for at least 4 GB: the VM must hold its own
    hypervisor, its own OS and the memory of every nested guest.
    Enable-NestedVm.ps1 offered to raise it to 4 GB.

    ## Example
    Startup 2 GiB: a warning. 4 GiB or more: nothing.

    ## Fix
    `nestvirt enable --hyperv HOST --memory 4GiB VM` (add `--stop` for a running
    VM): it sets the Startup memory with the VM off.

    ## Sources
    docs/hyperv-facts.md#startup-memory. Microsoft's preview page, "Requirements" (4 GB RAM),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Enable-NestedVm.ps1 (threshold 4294967296 bytes),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1.
    """
    if vm.startup_bytes < MIN_MEMORY_BYTES:
        yield Hit(
            f"VM {vm.name!r} starts with {_gib(vm.startup_bytes)} of memory, below 4 GiB",
            _enable_fix(vm, host, "--memory", f"{MIN_MEMORY_BYTES // GIB}GiB"),
        )


@vm_rule("NV-V04", "mac-spoofing-blocked", Severity.WARNING)
@versioned("NV-V04")
def mac_spoofing_blocked(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """A network adapter drops frames from other MAC addresses: nested guests get no network.

    ## What it checks
    Each `Get-VMNetworkAdapter` entry whose `MacAddressSpoofing` is `Off`.

    ## Why it matters
    Nested guests send frames with their own MAC addresses through the VM's
    adapter; with spoofing off the virtual switch drops them. Where spoofing
    cannot be turned on (public clouds), NAT inside the VM (an internal switch
    plus `New-NetNat`) is the alternative.

    When the guest's own view was read (PowerShell Direct, `Get-NetNat` inside
    the VM: the snapshot's per-VM `Get-NetNat`) and it has a NAT, the nested
    guests do not need spoofing: info instead of a warning.

    ## Example
    An adapter "Network Adapter" with MacAddressSpoofing Off: a warning for it.
    The same with a NAT "NestedNAT" inside the guest: info. All adapters On, or
    no adapter: nothing.

    ## Fix
    `nestvirt enable --hyperv HOST --mac-spoofing VM` (spoofing on for every
    adapter of the VM; `--stop` too when enable must also expose the extensions of a
    running VM); or NAT inside the VM.

    ## Sources
    docs/hyperv-facts.md#networking. Microsoft's preview page (networking),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Enable-NestedVm.ps1 (offers to turn spoofing on),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    "What is Nested Virtualization for Hyper-V?", "Networking options" (MAC spoofing or NAT),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization.
    """
    nat = vm.guest_nat
    for adapter in vm.adapters:
        if adapter.mac_address_spoofing != "On" and isinstance(nat, tuple) and nat:
            yield Hit(
                f"VM {vm.name!r} adapter {adapter.name!r} has MAC address spoofing "
                f"{adapter.mac_address_spoofing}, but the guest uses NAT "
                f"({', '.join(repr(n) for n in nat)}): its nested guests reach the network "
                "through it and need no spoofing",
                None,
                Severity.INFO,
            )
        elif adapter.mac_address_spoofing != "On":
            switch = f" on switch {adapter.switch_name!r}" if adapter.switch_name else ""
            yield Hit(
                f"VM {vm.name!r} adapter {adapter.name!r}{switch} has MAC address spoofing "
                f"{adapter.mac_address_spoofing}: nested guests get no network (or use NAT "
                "inside the VM)",
                _enable_fix(vm, host, "--mac-spoofing"),
            )


@vm_rule("NV-V05", "saved-state", Severity.WARNING)
@versioned("NV-V05")
def saved_state(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM is in a saved state, which enabling nesting discards.

    ## What it checks
    `Get-VM`'s `State` is `Saved` (or another saved state: FastSaved,
    SavedCritical, Hibernated…). On a preview host (build < 14361) or a VM
    below configuration version 8.0 it is a **warning**; on build 14361+ with
    version 8.0+ it is **info**.

    ## Why it matters
    The processor settings cannot change while a saved state exists:
    `nestvirt enable` removes it — the memory of the VM is lost, as if it had
    been powered off — after saying so. On the preview, a VM that runs a
    hypervisor cannot be saved and restored anyway (preview page, known
    issues); build 14361's notes: "you can now Save and Start nested-enabled
    VMs" (version 8.0+).

    ## Example
    State Saved on build 10586: a warning. State Saved, version 10.0, build
    26100: info. Off or Running: nothing.

    ## Fix
    Start the VM and shut it down cleanly, or discard the state:
    `Remove-VMSavedState -VMName 'VM'`.

    ## Sources
    docs/hyperv-facts.md#save-and-restore. Microsoft's preview page, "Known issues" (save/restore
    fails),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 notes, Builds 14361+ (Save and Start work),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md;
    Enable-NestedVm.ps1 (saved state check; Remove-VMSavedState),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1.
    """
    if not vm.is_saved:
        return
    fix = f"Remove-VMSavedState -VMName {ps_quote(vm.name)}"
    if preview_limits(host.build, vm.version_tuple) is False:
        yield Hit(
            f"VM {vm.name!r} is {vm.state}: enabling nesting discards its saved memory state "
            f"(saving a nesting VM works from build {LIFTED_BUILD} and version 8.0)",
            fix,
            Severity.INFO,
        )
    else:
        yield Hit(
            f"VM {vm.name!r} is {vm.state}: enabling nesting discards its saved memory state, "
            "and on the preview (build < 14361 or VM version < 8.0) a nesting VM cannot be "
            "saved and restored",
            fix,
        )


@vm_rule("NV-V06", "checkpoints-present", Severity.WARNING)
@versioned("NV-V06")
def checkpoints_present(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM has checkpoints; on the preview, applying one to the running VM fails.

    ## What it checks
    `Get-VMSnapshot` lists checkpoints, or `Get-VM`'s `ParentCheckpointId` is
    set. A **warning** on a preview host (build < 14361) or a VM below
    configuration version 8.0; **info** on build 14361+ with version 8.0+.

    ## Why it matters
    The preview page: once nesting is on, applying a checkpoint to a running VM
    fails. Build 14361's notes: "creating and applying checkpoints now work for
    VMs with nested virtualization enabled" (version 8.0+). Enable-NestedVm.ps1
    never looked at them.

    nestvirt never offers to delete every checkpoint: `Get-VMSnapshot |
    Remove-VMSnapshot` also removes Hyper-V Replica and recovery checkpoints,
    which are not the user's to lose. The fix names the user's own
    checkpoints, one `Remove-VMSnapshot -Name` each, for the user to choose.

    ## Example
    Two standard checkpoints ("Before update", "Second") on build 10586: a
    warning naming them. The same on build 26100, version 10.0: info. None and
    no parent checkpoint: nothing.

    ## Fix
    On the preview: apply checkpoints only with the VM off, and remove the ones
    you no longer need, by name (`Remove-VMSnapshot -VMName 'VM' -Name 'X'`).
    From build 14361 on, nothing.

    ## Sources
    docs/hyperv-facts.md#checkpoints. Microsoft's preview page, "Known issues" (applying a
    checkpoint to a running VM fails),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 notes, Builds 14361+ (checkpoints work),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md;
    Get-NestedVirtStatus.ps1 (ParentCheckpointId check),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1.
    """
    if not (vm.checkpoints or vm.parent_checkpoint_id):
        return
    if vm.checkpoints:
        names = ", ".join(repr(c.name) for c in vm.checkpoints[:3])
        more = f" and {len(vm.checkpoints) - 3} more" if len(vm.checkpoints) > 3 else ""
        what = f"{len(vm.checkpoints)} checkpoint(s) ({names}{more})"
    else:
        what = f"a parent checkpoint ({vm.parent_checkpoint_id})"
    if preview_limits(host.build, vm.version_tuple) is False:
        yield Hit(
            f"VM {vm.name!r} has {what}: creating and applying checkpoints work with nesting "
            f"(build {LIFTED_BUILD}+, version 8.0+)",
            None,
            Severity.INFO,
        )
        return
    users = [
        c
        for c in vm.checkpoints
        if not any(t in (c.snapshot_type or "").lower() for t in _NOT_USERS)
    ]
    fix = "; ".join(
        f"Remove-VMSnapshot -VMName {ps_quote(vm.name)} -Name {ps_quote(c.name)}" for c in users[:3]
    )
    yield Hit(
        f"VM {vm.name!r} has {what}: on the preview (build < 14361 or VM version < 8.0) "
        "applying a checkpoint while it runs nested VMs fails; apply them with the VM off",
        fix or None,
    )


@vm_rule("NV-V07", "restart-required", Severity.INFO)
@versioned("NV-V07")
def restart_required(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM is not off: changes take effect only after a full stop and start.

    ## What it checks
    `Get-VM`'s `State` is anything but `Off`.

    ## Why it matters
    Hyper-V refuses to change the processor and the dynamic-memory setting of a
    VM that is running (or saved); `nestvirt enable` stops it only with
    `--stop`, and otherwise refuses.

    ## Example
    State Running: info. State Off: nothing.

    ## Fix
    A running VM: `nestvirt enable --hyperv HOST --stop VM`, which shuts it down for
    the change and starts it again. A saved one: start it and shut it down, or
    discard its state (NV-V05).

    ## Sources
    docs/hyperv-facts.md#enabling-with-the-vm-off. "Run Hyper-V in a Virtual Machine with Nested
    Virtualization" (enable with the VM off),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization;
    Enable-NestedVm.ps1 (Stop-VM),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1.
    """
    if not vm.is_off:
        yield Hit(
            f"VM {vm.name!r} is {vm.state_word}: nesting changes need it off and take effect "
            "at its next start",
            _enable_fix(vm, host, stop=True)
            if not vm.is_saved
            else f"Stop-VM -Name {ps_quote(vm.name)}",
        )


@vm_rule("NV-V08", "config-version-too-old", Severity.ERROR)
@versioned("NV-V08")
def config_version_too_old(vm: HyperVVmFacts, host: HyperVHostFacts) -> Iterator[Hit]:
    """The VM's configuration version is too old for nesting (8.0 Intel, 9.3 AMD).

    ## What it checks
    `Get-VM`'s `Version`, compared **numerically** ("10.0" > "9.3"), is below
    8.0 on an Intel host or below 9.3 on an AMD host. When the host's vendor is
    unknown, below 8.0 is an error and below 9.3 is info.

    ## Why it matters
    Nesting needs configuration version 8.0 (Windows Server 2016 / Windows 10
    1607) on Intel, and 9.3 on AMD. VMs imported from older hosts keep their
    old version until upgraded.

    ## Example
    Version 5.0 on Intel: fires. 9.0 on AMD: fires. 9.0 on Intel, 9.3 or 10.0 on
    AMD: nothing.

    ## Fix
    With the VM off: `Update-VMVersion -Name 'VM'` (one-way: the VM no longer
    runs on older hosts).

    ## Sources
    docs/hyperv-facts.md#vm-configuration-version. The June 2016 notes (version 8.0 required from
    build 14361),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md;
    "Run Hyper-V in a Virtual Machine with Nested Virtualization", prerequisites (VM configuration
    version 8.0 or greater; AMD: 9.3 or greater),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization.
    """
    have = vm.version_tuple
    fix = f"Update-VMVersion -Name {ps_quote(vm.name)}"
    vendor = host.cpu_vendor
    if vendor == "amd" and have < MIN_VERSION_AMD:
        yield Hit(
            f"VM {vm.name!r} has configuration version {vm.version}; nesting on AMD needs "
            f"{_version(MIN_VERSION_AMD)} or later",
            fix,
        )
    elif have < MIN_VERSION_INTEL:
        yield Hit(
            f"VM {vm.name!r} has configuration version {vm.version}; nesting needs "
            f"{_version(MIN_VERSION_INTEL)} or later",
            fix,
        )
    elif isinstance(vendor, Unknown) and have < MIN_VERSION_AMD:
        yield Hit(
            f"VM {vm.name!r} has configuration version {vm.version}: enough on Intel, but an "
            f"AMD host needs {_version(MIN_VERSION_AMD)} (the host's CPU vendor is unknown)",
            fix,
            Severity.INFO,
        )
