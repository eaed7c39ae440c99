"""Host rules for Windows / Hyper-V (NV-H20…NV-H26), over HyperVHostFacts.

The successor of Get-NestedVirtStatus.ps1's host checks, with its bugs fixed
(build compared as an integer; VBS judged only when running; AMD judged by
build instead of rejected outright). A fact that could not be read gives an
info finding saying what was not checked, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nestvirt.facts.hyperv import NOT_AVAILABLE, HyperVHostFacts
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Hit, Platform, Target, rules_of
from nestvirt.rules.hyperv_table import (
    AMD_BUILD,
    GA_BUILD,
    L1_VCPU_LIMIT,
    LIFTED_BUILD,
    PREVIEW_BUILD,
    WS2019_BUILD,
    is_preview_build,
    versioned,
)

MIN_BUILD = PREVIEW_BUILD  # the preview page: Windows Insider build 10565 or later
MIN_AMD_BUILD = AMD_BUILD  # Windows Server 2022 (Windows 11 is 22000): first with AMD nesting


LATER_GUIDANCE = (
    "https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization"
)


def _not_checked(what: str, reason: str) -> Hit:
    return Hit(f"{what} could not be read ({reason}); not checked", None, Severity.INFO)


def _hypervisor_may_hide_wmi(host: HyperVHostFacts) -> bool:
    """A running Windows hypervisor makes WMI report SLAT/firmware as false: no evidence then.

    Also when it is not known whether this machine's own hypervisor runs but
    HypervisorPresent is true (a VM without the counters): the values prove nothing.
    """
    running = host.own_hypervisor_running
    return running is True or (isinstance(running, Unknown) and host.hypervisor_present is True)


host_rule = rules_of(Target.HOST, Platform.WINDOWS)


@host_rule("NV-H20", "windows-build-too-old", Severity.ERROR)
@versioned("NV-H20")
def windows_build_too_old(host: HyperVHostFacts) -> Iterator[Hit]:
    """Windows is older than build 10565, the first with nested virtualization.

    ## What it checks
    `Win32_OperatingSystem.BuildNumber`, compared **as an integer**, is below
    10565.

    ## Why it matters
    Build 10565 (a 2015 Windows Insider build) is the first whose hypervisor can
    expose VT-x to a guest; older builds have no nested virtualization at all.
    General availability came with Windows Server 2016 / Windows 10 1607 (build
    14393).

    Get-NestedVirtStatus.ps1 compared the build as a *string*: "9600" sorted
    after "10565", so Windows 8.1 passed its check.

    Builds 10565 to 14360 are the preview: nesting works there, with the
    preview's limits (VBS must be off, dynamic memory off, saving and applying
    checkpoints fail; the rules below judge those by build). That is a
    warning: build 14361 (VM configuration version 8.0) lifted them.

    ## Example
    A Windows Server 2012 R2 host (build 9600): NV-H20 fires (error).
    Build 10586: a warning (preview). Build 14393 or 26100: nothing.

    ## Fix
    Upgrade the host to Windows Server 2016 / Windows 10 1607 or later (on AMD,
    Windows Server 2022 / Windows 11 or later: see NV-H21).

    ## Sources
    The builds and what each lifted: docs/hyperv-facts.md#builds-and-eras. Microsoft's preview page,
    "Requirements" (build 10565 or later),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Get-NestedVirtStatus.ps1 (compares the build as a string:
    docs/hyperv-facts.md#microsofts-status-and-enable-scripts),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1;
    "Run Hyper-V in a Virtual Machine with Nested Virtualization" (GA: Windows Server 2016 / Windows
    10 1607),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization.
    """
    if isinstance(host.build, Unknown):
        yield _not_checked("the Windows build", host.build.reason)
    elif host.build < MIN_BUILD:
        yield Hit(
            f"Windows build {host.build} is older than {MIN_BUILD}, the first with nested "
            "virtualization",
            "upgrade the host to Windows Server 2016 / Windows 10 1607 (build 14393) or later",
        )
    elif host.build < LIFTED_BUILD:
        yield Hit(
            f"Windows build {host.build} is a nested-virtualization preview build: nesting works "
            f"with the preview's limits (VBS off, dynamic memory off, no save or checkpoints); "
            f"build {LIFTED_BUILD}+ (GA {GA_BUILD}, VM configuration version 8.0) lifted them",
            f"upgrade the host to Windows Server 2016 / Windows 10 1607 (build {GA_BUILD}) "
            "or later",
            Severity.WARNING,
        )


@host_rule("NV-H21", "amd-needs-newer-windows", Severity.ERROR)
@versioned("NV-H21")
def amd_needs_newer_windows(host: HyperVHostFacts) -> Iterator[Hit]:
    """An AMD host runs a Windows older than build 20348, which cannot nest on AMD.

    ## What it checks
    `Win32_Processor.Manufacturer` is `AuthenticAMD` and the build number
    (as an integer) is below 20348.

    ## Why it matters
    The preview page supported Intel VT-x only (Get-NestedVirtStatus.ps1 rejected
    every non-Intel CPU). Microsoft later added AMD-V (EPYC / Ryzen) with
    Windows Server 2022 (build 20348) and Windows 11 (build 22000): on older
    builds an AMD host cannot expose the extensions.

    ## Example
    AuthenticAMD on Windows Server 2019 (build 17763): fires.
    AuthenticAMD on build 20348 or 26100, or any GenuineIntel host: does not.

    ## Fix
    Upgrade the host to Windows Server 2022 / Windows 11 or later; VMs must then
    also be configuration version 9.3 or later (NV-V08).

    ## Sources
    docs/hyperv-facts.md#processor-vendor. Microsoft's preview page, "Requirements" (Intel only),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    "Run Hyper-V in a Virtual Machine with Nested Virtualization", prerequisites ("AMD EPYC / Ryzen
    processor or later; Windows Server 2022/Windows 11 or later"),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization.
    """
    vendor = host.cpu_vendor
    if isinstance(vendor, Unknown):
        yield _not_checked("the CPU vendor", vendor.reason)
        return
    if vendor != "amd":
        return
    if isinstance(host.build, Unknown):
        yield _not_checked("the Windows build (AMD host)", host.build.reason)
    elif host.build < MIN_AMD_BUILD:
        yield Hit(
            f"AMD processor on Windows build {host.build}: nesting on AMD needs build "
            f"{MIN_AMD_BUILD} (Windows Server 2022 / Windows 11) or later",
            "upgrade the host to Windows Server 2022 / Windows 11 or later",
        )


@host_rule("NV-H22", "hypervisor-not-running", Severity.ERROR)
@versioned("NV-H22")
def hypervisor_not_running(host: HyperVHostFacts) -> Iterator[Hit]:
    """Hyper-V is not installed, or this machine's own hypervisor is not running.

    ## What it checks
    The `Microsoft-Hyper-V` optional feature is not `Enabled` (on Windows Home
    it does not exist: "Feature name Microsoft-Hyper-V is unknown"), or this
    machine's hypervisor does not run.

    Whether the hypervisor runs is decided from evidence, in order: the
    "Hyper-V Hypervisor" performance counters
    (`Win32_PerfFormattedData_HvStats_HyperVHypervisor`), which exist only
    where the Windows hypervisor runs in this partition; then, on a physical
    machine, `Win32_ComputerSystem.HypervisorPresent`. That bit is true inside
    *any* guest (it reports the parent's hypervisor), so on a machine that is
    itself a VM (`Win32_ComputerSystem` Model "Virtual Machine", VMware, QEMU…)
    it proves nothing, and without the counters the rule says it could not
    tell (info), never "ready".

    ## Why it matters
    Nested virtualization is a feature of the running Hyper-V hypervisor: with
    the feature off, or installed but not launched at boot
    (`hypervisorlaunchtype off`), there is nothing to expose to a VM. A Windows
    VM whose own hypervisor failed to start still reports HypervisorPresent.

    ## Example
    `HyperVFeatureState` "Disabled": fires. Feature "Enabled" but
    `HypervisorPresent` false (launch type off, or reboot pending): fires.
    Model "Virtual Machine", HypervisorPresent true, no Hyper-V Hypervisor
    counters: fires. Windows 11 Home: fires, naming the edition.

    ## Fix
    `Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All`
    (Windows Server: `Install-WindowsFeature -Name Hyper-V -IncludeManagementTools`),
    then restart; if the feature is enabled but the hypervisor is not running,
    `bcdedit /set hypervisorlaunchtype auto` and restart (in a VM, first expose
    the virtualization extensions to it: NV-V01 on its host). Windows Home:
    upgrade to Pro, Enterprise or Education.

    ## Sources
    Microsoft's preview page, "How" (the host runs Hyper-V),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    Get-NestedVirtStatus.ps1 (records HypervisorPresent and the feature state:
    docs/hyperv-facts.md#microsofts-status-and-enable-scripts),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1;
    Win32_ComputerSystem (HypervisorPresent, Model),
    https://learn.microsoft.com/windows/win32/cimwin32prov/win32-computersystem.
    """
    feature = host.hyperv_feature_state
    if isinstance(feature, Unknown):
        yield _not_checked("the Hyper-V feature state", feature.reason)
    elif feature == NOT_AVAILABLE:
        edition = host.os_caption if isinstance(host.os_caption, str) else "this Windows edition"
        yield Hit(
            f"Hyper-V is not available on {edition}: Get-WindowsOptionalFeature does not know "
            "the feature Microsoft-Hyper-V (Windows Home has no Hyper-V)",
            "upgrade to Windows Pro, Enterprise or Education (or Windows Server)",
        )
        return
    elif feature != "Enabled":
        yield Hit(
            f"the Hyper-V feature (Microsoft-Hyper-V) is {feature}, not Enabled",
            "Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All; "
            "Restart-Computer",
        )
        return
    running = host.own_hypervisor_running
    if isinstance(running, Unknown):
        yield _not_checked("whether this machine's hypervisor runs", running.reason)
    elif not running:
        if host.machine_is_vm is True and host.hypervisor_present is True:
            yield Hit(
                f"this machine is a VM (Model {host.model!r}): HypervisorPresent is true because "
                "of its parent's hypervisor, but its own Hyper-V hypervisor is not running "
                "(no Hyper-V Hypervisor performance counters)",
                "expose the virtualization extensions to this VM on its host (NV-V01), then "
                "bcdedit /set hypervisorlaunchtype auto; Restart-Computer",
            )
        else:
            yield Hit(
                "the hypervisor is not running (Win32_ComputerSystem.HypervisorPresent is false)",
                "bcdedit /set hypervisorlaunchtype auto; Restart-Computer",
            )


@host_rule("NV-H23", "vbs-running", Severity.ERROR)
@versioned("NV-H23")
def vbs_running(host: HyperVHostFacts) -> Iterator[Hit]:
    """Virtualization-based security runs on a preview-build host, which cannot nest then.

    ## What it checks
    `Win32_DeviceGuard.VirtualizationBasedSecurityStatus` is 2 (running) on a
    host below build 14361. 1 (enabled, not running) and 0 (off) do not fire;
    nor does any status on build 14361 or later. When the build is not known,
    a running VBS is a warning saying so.

    ## Why it matters
    The 2015 preview page: a host with Device Guard / VBS running cannot expose
    the virtualization extensions; disable VBS first. Build 14361's notes:
    nested VMs now run on hosts with Virtualization Based Security enabled
    (Device Guard and Credential Guard included), and today's page lists no
    VBS limit. So the preview builds keep the preview page's error and later
    builds get nothing.

    Get-NestedVirtStatus.ps1 rejected any non-zero status, so a host with VBS
    merely configured (status 1) failed its check: that bug is not repeated.

    ## Example
    Build 10586, status 2 with SecurityServicesRunning [1, 2]: an error.
    Build 26100, status 2: nothing. Status 0 or 1: nothing.

    ## Fix
    On a preview build: turn VBS off (Group Policy "Turn On Virtualization
    Based Security" = Disabled, or `DeviceGuard\\EnableVirtualizationBasedSecurity`
    = 0) and restart — or, better, upgrade to build 14393 or later, where VBS
    and nesting work together.

    ## Sources
    docs/hyperv-facts.md#virtualization-based-security. Microsoft's preview page, "Known issues"
    (Device Guard / VBS hosts cannot expose the extensions),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 notes "Nested Virtualization Preview for Windows Insiders: Builds 14361+" (VBS
    works),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md;
    today's page (no VBS limit),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization;
    Get-NestedVirtStatus.ps1 (any non-zero status fails:
    docs/hyperv-facts.md#microsofts-status-and-enable-scripts),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1.
    """
    status = host.vbs_status
    if isinstance(status, Unknown):
        yield _not_checked("the VBS status", status.reason)
        return
    if status != 2:
        return
    services = host.security_services_running
    running = "" if isinstance(services, Unknown) else f", services running {list(services)}"
    preview = is_preview_build(host.build)
    if preview is True:
        yield Hit(
            f"virtualization-based security is running (status 2{running}) on preview build "
            f"{host.build}: the preview page says such a host cannot expose VT-x/AMD-V",
            "disable VBS and restart, or upgrade to build 14393 or later (VBS and nesting work "
            f"together since build {LIFTED_BUILD})",
        )
    elif preview is None:
        yield Hit(
            f"virtualization-based security is running (status 2{running}) and the Windows "
            f"build is not known: builds before {LIFTED_BUILD} cannot nest with VBS, later ones "
            "can",
            None,
            Severity.WARNING,
        )


_OFFER_FALSE = re.compile(r"(?i)(?:^|\s)/?OFFERNESTEDVIRT\s*=\s*FALSE(?=\s|$)")


@host_rule("NV-H24", "bcd-nested-disabled", Severity.ERROR)
@versioned("NV-H24")
def bcd_nested_disabled(host: HyperVHostFacts) -> Iterator[Hit]:
    """The boot configuration tells the hypervisor not to offer nesting.

    ## What it checks
    The BCD element `hypervisorloadoptions` of the current boot entry contains
    `OFFERNESTEDVIRT=FALSE` (any case).

    ## Why it matters
    With that load option the hypervisor never offers the virtualization
    extensions to any VM, whatever the VM's settings say.

    ## Example
    `hypervisorloadoptions OFFERNESTEDVIRT=FALSE`: fires. Not set, or other
    options only: does not.

    ## Fix
    Remove the option: `bcdedit /deletevalue '{current}' hypervisorloadoptions`
    (or set the remaining options without it), then restart.

    ## Sources
    Get-NestedVirtStatus.ps1 (reads `hypervisorloadoptions` from `bcdedit /enum` and reports nesting
    disabled on OFFERNESTEDVIRT=FALSE: docs/hyperv-facts.md#microsofts-status-and-enable-scripts),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1.
    """
    options = host.bcd_hypervisor_load_options
    if isinstance(options, Unknown):
        yield _not_checked("BCD hypervisorloadoptions", options.reason)
    elif options is not None and _OFFER_FALSE.search(options):
        rest = " ".join(_OFFER_FALSE.sub(" ", options).split())
        if rest:
            fix = f"bcdedit /set '{{current}}' hypervisorloadoptions '{rest}'; Restart-Computer"
        else:
            fix = "bcdedit /deletevalue '{current}' hypervisorloadoptions; Restart-Computer"
        yield Hit(f"BCD hypervisorloadoptions is {options!r}: nesting is switched off", fix)


@host_rule("NV-H25", "no-slat", Severity.ERROR)
@versioned("NV-H25")
def no_slat(host: HyperVHostFacts) -> Iterator[Hit]:
    """The processor reports no second-level address translation (EPT / RVI).

    ## What it checks
    `Win32_Processor.SecondLevelAddressTranslationExtensions` is false while
    this machine's hypervisor is not known to run (NV-H22's evidence:
    the Hyper-V Hypervisor counters, else `HypervisorPresent` on a physical
    machine).

    ## Why it matters
    Hyper-V's nested virtualization needs Intel VT-x with EPT (AMD: RVI / NPT);
    without SLAT the hypervisor cannot give a guest its own second-level page
    tables.

    While the Windows hypervisor is running it owns VT-x/AMD-V, and WMI then
    reports the processor's virtualization properties (this one and
    VirtualizationFirmwareEnabled) as false whatever the hardware has. A false
    value is evidence only when the hypervisor is not running — and a running
    Hyper-V has SLAT, since it cannot run without it. So, like NV-H26, this
    rule judges only a host whose hypervisor is not running.

    ## Example
    SLAT false and `HypervisorPresent` false: fires. SLAT false while the
    hypervisor runs: nothing (not evidence). SLAT true: nothing.

    ## Fix
    Use a processor with EPT / RVI (Intel Nehalem or later, AMD Barcelona or
    later); on a VM host, give this machine a virtual CPU that exposes EPT.

    ## Sources
    Later Microsoft guidance ("Intel processor with VT-x and EPT technology");
    Win32_Processor documentation (SecondLevelAddressTranslationExtensions);
    `systeminfo` on a running Hyper-V host: "A hypervisor has been detected.
    Features required for Hyper-V will not be displayed."
    """
    if _hypervisor_may_hide_wmi(host):
        return  # WMI hides SLAT from the root partition; a running Hyper-V has it
    slat = host.slat
    if isinstance(slat, Unknown):
        yield _not_checked("SLAT (SecondLevelAddressTranslationExtensions)", slat.reason)
    elif not slat:
        yield Hit(
            "the processor has no second-level address translation (EPT/RVI), which "
            "Hyper-V nesting needs",
            "use a processor with Intel EPT or AMD RVI",
        )


@host_rule("NV-H26", "firmware-virt-disabled-windows", Severity.ERROR)
@versioned("NV-H26")
def firmware_virt_disabled_windows(host: HyperVHostFacts) -> Iterator[Hit]:
    """Virtualization is disabled in the firmware (and the hypervisor is not running).

    ## What it checks
    `Win32_Processor.VirtualizationFirmwareEnabled` is false while this
    machine's hypervisor is not known to run (NV-H22's evidence). In a VM the
    "firmware" is the parent's setting: false means its host does not expose
    the extensions (NV-V01 there).

    ## Why it matters
    With VT-x / AMD-V switched off in the UEFI/BIOS setup the Windows hypervisor
    cannot start, so there is nothing to nest. While the hypervisor runs, WMI
    reports this property as false whatever the firmware says, so the rule only
    judges a host whose hypervisor is not running.

    ## Example
    VirtualizationFirmwareEnabled false, HypervisorPresent false: fires.
    VirtualizationFirmwareEnabled false, HypervisorPresent true: does not.

    ## Fix
    Enable Intel VT-x / AMD-V (SVM) in the firmware setup, then power-cycle.

    ## Sources
    The preview page, "How" (Hyper-V relies on VT-x / AMD-V); Win32_Processor
    documentation (VirtualizationFirmwareEnabled).
    """
    enabled = host.virtualization_firmware_enabled
    if _hypervisor_may_hide_wmi(host):
        return
    if isinstance(enabled, Unknown):
        yield _not_checked("VirtualizationFirmwareEnabled", enabled.reason)
    elif not enabled:
        yield Hit(
            "virtualization is disabled in the firmware (VirtualizationFirmwareEnabled is false "
            "and the hypervisor is not running)",
            "enable Intel VT-x / AMD-V (SVM) in the UEFI/BIOS setup, then power-cycle",
        )


@host_rule("NV-H27", "l1-vcpu-limit", Severity.WARNING)
@versioned("NV-H27")
def l1_vcpu_limit(host: HyperVHostFacts) -> Iterator[Hit]:
    """This Windows is a first-level VM on Windows Server 2019 or earlier with over 225 vCPUs.

    ## What it checks
    This machine is itself a VM (Win32_ComputerSystem Model/Manufacturer), its
    build is 17763 (Windows Server 2019) or older, and
    `Win32_ComputerSystem.NumberOfLogicalProcessors` is above 225.

    ## Why it matters
    Microsoft: "When using Windows Server 2019 as the first level VM, the
    number of vCPUs should be 225 or less." Above that, Hyper-V inside the VM
    is not supported. Later Windows Server releases lift it.

    ## Example
    A Windows Server 2019 VM (build 17763, Model "Virtual Machine") with 240
    vCPUs: a warning. The same VM with 64 vCPUs, or a physical host with 240
    logical processors: nothing.

    ## Fix
    On the L0 host, with the VM off: `Set-VMProcessor -VMName 'VM' -Count 225`;
    or upgrade the VM to Windows Server 2022 or later.

    ## Sources
    "Run Hyper-V in a Virtual Machine with Nested Virtualization" (note on
    Windows Server 2019 as the first level VM); "Plan for Hyper-V scalability
    in Windows Server" (maximum virtual processors per VM).
    """
    if host.machine_is_vm is not True or isinstance(host.build, Unknown):
        return
    count = host.logical_processors
    if host.build <= WS2019_BUILD and isinstance(count, int) and count > L1_VCPU_LIMIT:
        yield Hit(
            f"this VM runs Windows build {host.build} (Windows Server 2019 or earlier) with "
            f"{count} vCPUs: as a first-level VM it should have {L1_VCPU_LIMIT} or less",
            f"on its host, with the VM off: Set-VMProcessor -VMName 'VM' -Count {L1_VCPU_LIMIT} "
            "(or upgrade it to Windows Server 2022 or later)",
        )


@host_rule("NV-H28", "azure-trusted-launch", Severity.ERROR)
@versioned("NV-H28")
def azure_trusted_launch(host: HyperVHostFacts) -> Iterator[Hit]:
    """This host is an Azure VM with security type Trusted Launch: nesting needs Standard.

    ## What it checks
    The SMBIOS chassis asset tag (`Win32_SystemEnclosure.SMBIOSAssetTag`) is
    Azure's (7783-7084-3265-9085-8269-3286-77) and the VM shows Trusted
    Launch's features: Secure Boot on (`Confirm-SecureBootUEFI`) or a virtual
    TPM (`Get-Tpm` TpmPresent). When it is Azure but neither could be read,
    an info says the security type was not checked.

    ## Why it matters
    Microsoft: "To enable Nested Virtualization in an Azure VM, make sure to
    set Security Type as 'Standard'." A Trusted Launch VM cannot expose
    VT-x to its own guests, whatever Hyper-V inside says.

    ## Example
    An Azure D-series VM with Secure Boot and vTPM: an error. The same VM
    created with Security Type Standard (no Secure Boot, no vTPM): nothing. An
    on-premises machine: nothing.

    ## Fix
    Create the Azure VM with `--security-type Standard` (Azure CLI) or Security
    type "Standard" in the portal, on a size that supports nested
    virtualization; the security type of an existing VM cannot be downgraded.

    ## Sources
    "Run Hyper-V in a Virtual Machine with Nested Virtualization", prerequisites
    (Azure: Security Type "Standard").
    """
    if host.is_azure is not True:
        return
    shown = [
        what
        for what, value in (("Secure Boot on", host.secure_boot), ("a vTPM", host.tpm_present))
        if value is True
    ]
    if shown:
        yield Hit(
            f"this host is an Azure VM with Trusted Launch ({' and '.join(shown)}): nested "
            'virtualization in Azure needs Security Type "Standard"',
            "recreate the VM with --security-type Standard on a size that supports nested "
            "virtualization",
        )
    elif isinstance(host.secure_boot, Unknown) and isinstance(host.tpm_present, Unknown):
        yield _not_checked("the Azure security type (Secure Boot, vTPM)", host.secure_boot.reason)


@host_rule("NV-H29", "vms-not-listed", Severity.WARNING)
@versioned("NV-H29")
def vms_not_listed(host: HyperVHostFacts) -> Iterator[Hit]:
    """The host's VMs could not be listed, so none of them was checked.

    ## What it checks
    `Get-VM` failed while collecting (not elevated, the Virtual Machine
    Management service `vmms` stopped, the Hyper-V platform or its PowerShell
    module missing): its error is the reason. Or the caller is neither an
    Administrator nor a member of Hyper-V Administrators (S-1-5-32-578): then
    `Get-VM` answers with no VMs at all, silently.

    ## Why it matters
    An empty VM list is not "no VMs". The host report still stands (NV-H22 says
    why Hyper-V does not run); the VMs are simply unknown.

    ## Example
    "Get-VM: You do not have the required permission to complete this task":
    a warning. A non-elevated caller outside Hyper-V Administrators: a warning.

    ## Fix
    Run elevated, or add the account to Hyper-V Administrators
    (`Add-LocalGroupMember -SID 'S-1-5-32-578' -Member 'DOMAIN\\user'`, then sign in
    again); start the service (`Start-Service -Name vmms`); install the Hyper-V
    PowerShell module (`Microsoft-Hyper-V-Management-PowerShell`).

    ## Sources
    Get-NestedVirtStatus.ps1 and Enable-NestedVm.ps1 relaunch themselves elevated
    (docs/hyperv-facts.md#microsofts-status-and-enable-scripts),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Get-NestedVirtStatus.ps1,
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1;
    "Well-known SIDs" (S-1-5-32-578, Hyper-V Administrators),
    https://learn.microsoft.com/windows/win32/secauthz/well-known-sids.
    """
    inventory = host.vm_inventory
    if isinstance(inventory, Unknown):
        reason = inventory.reason
        if host.caller_may_manage_vms is False or "permission" in reason.lower():
            fix = (
                "run elevated, or add the account to Hyper-V Administrators (S-1-5-32-578) "
                "and sign in again"
            )
        elif "vmms" in reason.lower() or "management service" in reason.lower():
            fix = "Start-Service -Name vmms"
        else:
            fix = "check the Hyper-V installation (NV-H22) and run elevated"
        yield Hit(f"the VMs could not be listed ({reason}); no VM was checked", fix)
    elif host.caller_may_manage_vms is False:
        yield Hit(
            "the caller is neither an Administrator (elevated) nor in Hyper-V Administrators "
            "(S-1-5-32-578): Get-VM shows such a caller no VMs, so the VM list may be incomplete",
            "run elevated, or add the account to Hyper-V Administrators (S-1-5-32-578) and "
            "sign in again",
        )
