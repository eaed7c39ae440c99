"""Host rules for Windows / Hyper-V (NV-H20…NV-H26), over HyperVHostFacts.

The successor of Get-NestedVirtStatus.ps1's host checks, with its bugs fixed
(build compared as an integer; VBS judged only when running; AMD judged by
build instead of rejected outright). A fact that could not be read gives an
info finding saying what was not checked, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nestvirt.facts.hyperv import HyperVHostFacts
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Hit, Platform, Target, rules_of

MIN_BUILD = 10565  # the preview page: Windows Insider build 10565 or later
MIN_AMD_BUILD = 20348  # Windows Server 2022 (Windows 11 is 22000): first with AMD nesting

PREVIEW_PAGE = "Hyper-V Nested Virtualization preview page (Windows Insider build 10565, 2015)"
LATER_GUIDANCE = (
    "https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization"
)


def _not_checked(what: str, reason: str) -> Hit:
    return Hit(f"{what} could not be read ({reason}); not checked", None, Severity.INFO)


host_rule = rules_of(Target.HOST, Platform.WINDOWS)


@host_rule("NV-H20", "windows-build-too-old", Severity.ERROR)
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

    ## Example
    A Windows Server 2012 R2 host (build 9600): NV-H20 fires.
    Build 10586 or 26100: it does not.

    ## Fix
    Upgrade the host to Windows Server 2016 / Windows 10 1607 or later (on AMD,
    Windows Server 2022 / Windows 11 or later: see NV-H21).

    ## Sources
    The preview page, "Requirements" (build 10565 or later); REFERENCE.md,
    Get-NestedVirtStatus.ps1 (string comparison bug); later Microsoft guidance
    (GA with Windows Server 2016 / Windows 10 1607).
    """
    if isinstance(host.build, Unknown):
        yield _not_checked("the Windows build", host.build.reason)
    elif host.build < MIN_BUILD:
        yield Hit(
            f"Windows build {host.build} is older than {MIN_BUILD}, the first with nested "
            "virtualization",
            "upgrade the host to Windows Server 2016 / Windows 10 1607 (build 14393) or later",
        )


@host_rule("NV-H21", "amd-needs-newer-windows", Severity.ERROR)
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
    The preview page, "Requirements" (Intel only); later Microsoft guidance
    ("AMD EPYC / Ryzen processor or later; Windows Server 2022/Windows 11 or
    later").
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
def hypervisor_not_running(host: HyperVHostFacts) -> Iterator[Hit]:
    """Hyper-V is not installed, or its hypervisor is not running.

    ## What it checks
    `Win32_ComputerSystem.HypervisorPresent` is false, or the
    `Microsoft-Hyper-V` optional feature is not `Enabled`.

    ## Why it matters
    Nested virtualization is a feature of the running Hyper-V hypervisor: with
    the feature off, or installed but not launched at boot
    (`hypervisorlaunchtype off`), there is nothing to expose to a VM.

    ## Example
    `HyperVFeatureState` "Disabled": fires. Feature "Enabled" but
    `HypervisorPresent` false (launch type off, or reboot pending): fires.

    ## Fix
    `Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All`,
    then restart; if the feature is enabled but the hypervisor is not present,
    `bcdedit /set hypervisorlaunchtype auto` and restart.

    ## Sources
    The preview page, "How" (the host runs Hyper-V); REFERENCE.md,
    Get-NestedVirtStatus.ps1 (HypervisorPresent check; it only recorded the
    feature state).
    """
    feature = host.hyperv_feature_state
    if isinstance(feature, Unknown):
        yield _not_checked("the Hyper-V feature state", feature.reason)
    elif feature != "Enabled":
        yield Hit(
            f"the Hyper-V feature (Microsoft-Hyper-V) is {feature}, not Enabled",
            "Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All; "
            "Restart-Computer",
        )
        return
    present = host.hypervisor_present
    if isinstance(present, Unknown):
        yield _not_checked("HypervisorPresent", present.reason)
    elif not present:
        yield Hit(
            "the hypervisor is not running (Win32_ComputerSystem.HypervisorPresent is false)",
            "bcdedit /set hypervisorlaunchtype auto; Restart-Computer",
        )


@host_rule("NV-H23", "vbs-running", Severity.WARNING)
def vbs_running(host: HyperVHostFacts) -> Iterator[Hit]:
    """Virtualization-based security is running on the host.

    ## What it checks
    `Win32_DeviceGuard.VirtualizationBasedSecurityStatus` is 2 (running).
    1 (enabled, not running) and 0 (off) do not fire.

    ## Why it matters
    The 2015 preview page said a host with Device Guard / VBS running cannot
    expose the virtualization extensions, and told users to disable VBS.
    Microsoft's later guidance says nested virtualization works with VBS
    enabled. The two sources disagree, so this is a warning: on a current
    Windows it should work; if a nested VM still refuses to start, VBS is the
    first thing to rule out.

    Get-NestedVirtStatus.ps1 rejected any non-zero status, so a host with VBS
    merely configured (status 1) failed its check: that bug is not repeated.

    ## Example
    Status 2 with SecurityServicesRunning [1, 2]: a warning. Status 0 or 1:
    nothing.

    ## Fix
    Usually nothing on Windows 10 1607 / Server 2016 and later. To follow the
    preview page instead, turn VBS off (Group Policy "Turn On Virtualization
    Based Security" = Disabled, or `DeviceGuard\\EnableVirtualizationBasedSecurity`
    = 0) and restart.

    ## Sources
    The preview page, "Known issues" (Device Guard / VBS hosts cannot expose the
    extensions); later Microsoft guidance,
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization
    (nesting works with VBS); REFERENCE.md (status 1 bug).
    """
    status = host.vbs_status
    if isinstance(status, Unknown):
        yield _not_checked("the VBS status", status.reason)
    elif status == 2:
        services = host.security_services_running
        running = "" if isinstance(services, Unknown) else f", services running {list(services)}"
        yield Hit(
            f"virtualization-based security is running (status 2{running}): the preview page "
            "says such a host cannot expose VT-x/AMD-V; later Microsoft guidance says nesting "
            "works with VBS",
            "usually nothing; if a nested VM will not start, disable VBS and restart "
            f"(see {LATER_GUIDANCE})",
        )


_OFFER_FALSE = re.compile(r"(?i)(?:^|\s)/?OFFERNESTEDVIRT\s*=\s*FALSE(?=\s|$)")


@host_rule("NV-H24", "bcd-nested-disabled", Severity.ERROR)
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
    REFERENCE.md, Get-NestedVirtStatus.ps1 (BCD hypervisorloadoptions check).
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
def no_slat(host: HyperVHostFacts) -> Iterator[Hit]:
    """The processor reports no second-level address translation (EPT / RVI).

    ## What it checks
    `Win32_Processor.SecondLevelAddressTranslationExtensions` is false while
    `Win32_ComputerSystem.HypervisorPresent` is not true.

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
    if host.hypervisor_present is True:
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
def firmware_virt_disabled_windows(host: HyperVHostFacts) -> Iterator[Hit]:
    """Virtualization is disabled in the firmware (and the hypervisor is not running).

    ## What it checks
    `Win32_Processor.VirtualizationFirmwareEnabled` is false while
    `Win32_ComputerSystem.HypervisorPresent` is false.

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
    present = host.hypervisor_present
    if present is True:
        return
    if isinstance(enabled, Unknown):
        yield _not_checked("VirtualizationFirmwareEnabled", enabled.reason)
    elif not enabled:
        yield Hit(
            "virtualization is disabled in the firmware (VirtualizationFirmwareEnabled is false "
            "and the hypervisor is not running)",
            "enable Intel VT-x / AMD-V (SVM) in the UEFI/BIOS setup, then power-cycle",
        )
