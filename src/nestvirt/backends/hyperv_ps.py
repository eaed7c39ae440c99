"""PowerShell text for the Hyper-V backend: quoting, pasteable commands, fixed scripts.

Two kinds of PowerShell leave nestvirt:

* **Shown** text (`--dry-run`, a rule's fix): `render_command` writes one cmdlet
  with its parameters, every string a single-quoted literal made by `ps_quote`,
  so what a user pastes is exactly as safe as what nestvirt runs.
* **Run** text: the fixed scripts below. They never contain a user value: each
  starts with `param([string]$ArgsJson)` and reads VM names, ids and options
  from that one argument (a PSRP parameter remotely, stdin locally).
"""

from __future__ import annotations

from typing import Any

# Shown PowerShell (quoting, one cmdlet as pasteable text) lives with the other pasteable
# commands in nestvirt.commands; re-exported here for the backend and old callers.
from nestvirt.commands import PS_SINGLE_QUOTES, Bare, ps_quote, ps_value, render_command


def wire_value(value: Any) -> Any:
    """A parameter value as sent to PowerShell (JSON locally, PSRP remotely)."""
    if isinstance(value, Bare):
        return value.text
    if value is None:  # a switch
        return True
    return value


# Cmdlets nestvirt may run against a VM. The local runner refuses any other
# name, so even a bug here cannot turn a parameter into a command.
WRITE_CMDLETS = (
    "Remove-VMSavedState",
    "Stop-VM",
    "Start-VM",
    "Restart-VM",
    "Set-VMProcessor",
    "Set-VMMemory",
    "Set-VMNetworkAdapter",
)


# --- fixed scripts ---------------------------------------------------------
# Windows PowerShell 5.1 compatible. `Out-NvJson` writes ASCII-only JSON
# (non-ASCII as \uXXXX) so no console code page can mangle a VM name.

# The JSON a script answers with is framed by these two markers: a warning line
# ("WARNING: Restart is suppressed…"), a cmdlet's stray output or a profile's
# banner before or after it cannot corrupt it (`extract_json`).
JSON_BEGIN = "<nestvirt-json>"
JSON_END = "</nestvirt-json>"

_PRELUDE = (
    r"""
param([string]$ArgsJson)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
$VerbosePreference = 'SilentlyContinue'
$NvArgs = $ArgsJson | ConvertFrom-Json
function Out-NvJson($Value) {
    $json = ConvertTo-Json -InputObject $Value -Depth 8 -Compress
    $json = [regex]::Replace($json, '[^\x00-\x7F]', { param($m) '\u{0:x4}' -f [int][char]$m.Value })
    '"""
    + JSON_BEGIN
    + r"""' + $json + '"""
    + JSON_END
    + r"""'
}
function NvText($Value) { if ($null -eq $Value) { $null } else { $Value.ToString() } }
"""
)

COLLECT_SCRIPT = (
    _PRELUDE
    + r"""
function NvUnknown([string]$Reason) { [ordered]@{ unknown = $Reason } }
function NvTry([string]$What, [scriptblock]$Block) {
    try { & $Block } catch { NvUnknown ($What + ': ' + $_.Exception.Message) }
}
# Administrators (elevated) or Hyper-V Administrators (S-1-5-32-578) may list VMs;
# anyone else gets an empty Get-VM, silently.
$me = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
$mayManage = $me.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator) -or
    $me.IsInRole([Security.Principal.SecurityIdentifier]'S-1-5-32-578')
$cs = Get-CimInstance -ClassName Win32_ComputerSystem
$cpu = @(Get-CimInstance -ClassName Win32_Processor)
$os = Get-CimInstance -ClassName Win32_OperatingSystem
try {
    $dg = Get-CimInstance -Namespace 'root\Microsoft\Windows\DeviceGuard' `
        -ClassName Win32_DeviceGuard
    $vbs = $null
    if ($null -ne $dg.VirtualizationBasedSecurityStatus) {
        $vbs = [int]$dg.VirtualizationBasedSecurityStatus
    }
    $deviceGuard = [ordered]@{
        VirtualizationBasedSecurityStatus = $vbs
        SecurityServicesRunning = @($dg.SecurityServicesRunning | ForEach-Object { [int]$_ })
    }
} catch { $deviceGuard = NvUnknown ('Win32_DeviceGuard: ' + $_.Exception.Message) }
try {
    $feature = NvText (Get-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V).State
    if ($null -eq $feature) { $feature = 'NotPresent' }
} catch { $feature = NvUnknown ('Get-WindowsOptionalFeature: ' + $_.Exception.Message) }
$ErrorActionPreference = 'Continue'
$bcdOut = & bcdedit.exe /enum '{current}' 2>&1
$bcdCode = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
if ($bcdCode -eq 0) {
    $bcd = $null
    foreach ($line in $bcdOut) {
        if ("$line" -match '^hypervisorloadoptions\s+(.*)$') { $bcd = $Matches[1].Trim() }
    }
} else { $bcd = NvUnknown ('bcdedit: ' + (($bcdOut | Out-String).Trim())) }
$hvCounters = NvTry 'Hyper-V Hypervisor counters' {
    $c = @(Get-CimInstance -ClassName Win32_PerfFormattedData_HvStats_HyperVHypervisor)
    if ($c.Count -gt 0) { [ordered]@{ LogicalProcessors = [int]$c[0].LogicalProcessors } }
    else { $null }
}
$enclosure = NvTry 'Win32_SystemEnclosure' {
    [ordered]@{ SMBIOSAssetTag = NvText (Get-CimInstance -ClassName Win32_SystemEnclosure |
        Select-Object -First 1).SMBIOSAssetTag }
}
$secureBoot = NvTry 'Confirm-SecureBootUEFI' { [bool](Confirm-SecureBootUEFI) }
$tpm = NvTry 'Get-Tpm' { [ordered]@{ TpmPresent = [bool](Get-Tpm).TpmPresent } }
$vms = @()
$inventory = $null
if (-not (Get-Command -Name Get-VM -ErrorAction SilentlyContinue)) {
    $inventory = NvUnknown 'Get-VM: the Hyper-V PowerShell module is not installed'
} else {
    try { $vms = @(Get-VM -ErrorAction Stop) }
    catch { $inventory = NvUnknown ('Get-VM: ' + $_.Exception.Message) }
}
$wanted = @($NvArgs.vm_names | Where-Object { $null -ne $_ })
if ($wanted.Count -gt 0) { $vms = @($vms | Where-Object { $wanted -contains $_.Name }) }
$vmOut = @(foreach ($vm in $vms) { try {
    $proc = Get-VMProcessor -VM $vm
    $mem = Get-VMMemory -VM $vm
    [ordered]@{
        'Get-VM' = [ordered]@{
            Name = $vm.Name; Id = NvText $vm.Id; State = NvText $vm.State
            Version = [string]$vm.Version; Generation = [int]$vm.Generation
            ParentCheckpointId = NvText $vm.ParentCheckpointId
        }
        'Get-VMProcessor' = [ordered]@{
            ExposeVirtualizationExtensions = [bool]$proc.ExposeVirtualizationExtensions
            Count = [int]$proc.Count
        }
        'Get-VMMemory' = [ordered]@{
            DynamicMemoryEnabled = [bool]$mem.DynamicMemoryEnabled; Startup = [long]$mem.Startup
            Minimum = [long]$mem.Minimum; Maximum = [long]$mem.Maximum
        }
        'Get-VMNetworkAdapter' = @(Get-VMNetworkAdapter -VM $vm | ForEach-Object {
            [ordered]@{
                Name = $_.Name; Id = NvText $_.Id
                MacAddressSpoofing = NvText $_.MacAddressSpoofing; SwitchName = $_.SwitchName
            }
        })
        'Get-VMSnapshot' = @(Get-VMSnapshot -VM $vm | ForEach-Object {
            [ordered]@{ Name = $_.Name; SnapshotType = NvText $_.SnapshotType }
        })
    }
} catch {
    # a VM that vanished or cannot be read: the others and the host report stand
    if ($null -eq $inventory) {
        $inventory = NvUnknown ("VM '" + $vm.Name + "': " + $_.Exception.Message)
    }
} })
Out-NvJson ([ordered]@{
    schema = 'nestvirt.hyperv-snapshot/1'
    host = [ordered]@{
        Win32_ComputerSystem = [ordered]@{
            Name = $cs.Name; HypervisorPresent = $cs.HypervisorPresent
            TotalPhysicalMemory = $cs.TotalPhysicalMemory
            Model = $cs.Model; Manufacturer = $cs.Manufacturer
            NumberOfLogicalProcessors = $cs.NumberOfLogicalProcessors
        }
        Win32_Processor = @($cpu | ForEach-Object { [ordered]@{
            Manufacturer = $_.Manufacturer; Name = $_.Name
            VirtualizationFirmwareEnabled = $_.VirtualizationFirmwareEnabled
            SecondLevelAddressTranslationExtensions = $_.SecondLevelAddressTranslationExtensions
        } })
        Win32_OperatingSystem = [ordered]@{
            BuildNumber = $os.BuildNumber; Caption = $os.Caption
            FreePhysicalMemory = $os.FreePhysicalMemory
        }
        Win32_DeviceGuard = $deviceGuard
        HyperVFeatureState = $feature
        BcdHypervisorLoadOptions = $bcd
        Win32_PerfFormattedData_HvStats_HyperVHypervisor = $hvCounters
        Win32_SystemEnclosure = $enclosure
        SecureBootUEFI = $secureBoot
        'Get-Tpm' = $tpm
        CallerMayManageVMs = [bool]$mayManage
        VmInventory = $inventory
    }
    vms = $vmOut
})
"""
)

# Local only (remote runs the same pipeline with PSRP add_cmdlet/add_parameter):
# `Get-VM -Id <id> | <cmdlet> @parameters`, the cmdlet from WRITE_CMDLETS.
INVOKE_SCRIPT = (
    _PRELUDE
    + r"""
$allowed = @('"""
    + "', '".join(WRITE_CMDLETS)
    + r"""')
if ($allowed -notcontains $NvArgs.cmdlet) {
    throw "nestvirt: not an allowed cmdlet: $($NvArgs.cmdlet)"
}
$splat = @{}
foreach ($prop in $NvArgs.parameters.PSObject.Properties) { $splat[$prop.Name] = $prop.Value }
$vm = Get-VM -Id $NvArgs.vm_id
$null = $vm | & $NvArgs.cmdlet @splat
Out-NvJson $null
"""
)

# Set MacAddressSpoofing on the adapters whose Id is listed (undo of one adapter
# at a time: adapter names need not be unique, their Ids are).
ADAPTER_SPOOFING_SCRIPT = (
    _PRELUDE
    + r"""
$ids = @($NvArgs.adapter_ids)
$vm = Get-VM -Id $NvArgs.vm_id
$adapters = @(Get-VMNetworkAdapter -VM $vm | Where-Object { $ids -contains $_.Id })
if ($adapters.Count -ne $ids.Count) {
    throw "nestvirt: the VM's network adapters changed since nestvirt read them"
}
$null = $adapters | Set-VMNetworkAdapter -MacAddressSpoofing $NvArgs.value
Out-NvJson $null
"""
)

# PowerShell Direct helpers: a credential from the arguments, one attempt at a
# script block inside the guest, its failure returned (not thrown) so that
# nestvirt decides what to retry: a guest still booting, yes; a wrong password, never.
_GUEST = r"""
function Invoke-NvGuest([scriptblock]$Block) {
    $vm = Get-VM -Id $NvArgs.vm_id
    if ($vm.State -ne 'Running') { Start-VM -VM $vm }
    $secret = ConvertTo-SecureString -String $NvArgs.password -AsPlainText -Force
    $cred = New-Object System.Management.Automation.PSCredential ($NvArgs.user, $secret)
    try {
        $r = Invoke-Command -VMId $vm.Id -Credential $cred -ErrorAction Stop -ScriptBlock $Block
        [ordered]@{ ok = $true; result = $r }
    } catch {
        [ordered]@{ ok = $false; error = $_.Exception.Message;
                    error_id = "$($_.FullyQualifiedErrorId)" }
    }
}
"""

# The page's step 3, as Microsoft documents it today: Windows client editions
# `Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All`,
# Windows Server `Install-WindowsFeature -Name Hyper-V -IncludeManagementTools`;
# no restart here (RESTART_GUEST_SCRIPT does it from inside). One attempt.
INSTALL_HYPERVISOR_SCRIPT = (
    _PRELUDE
    + _GUEST
    + r"""
$a = Invoke-NvGuest {
    $WarningPreference = 'SilentlyContinue'
    $ProgressPreference = 'SilentlyContinue'
    if ((Get-CimInstance -ClassName Win32_OperatingSystem).ProductType -ne 1) {
        $r = Install-WindowsFeature -Name Hyper-V -IncludeManagementTools
        [ordered]@{ RestartNeeded = ("$($r.RestartNeeded)" -ne 'No');
                    Method = 'Install-WindowsFeature' }
    } else {
        $r = Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All -NoRestart
        [ordered]@{ RestartNeeded = [bool]$r.RestartNeeded;
                    Method = 'Enable-WindowsOptionalFeature' }
    }
}
if ($a.ok) {
    Out-NvJson ([ordered]@{ ok = $true; RestartNeeded = [bool]$a.result.RestartNeeded;
                            Method = "$($a.result.Method)" })
} else { Out-NvJson $a }
"""
)

# Restart the guest from inside (a clean Windows restart, not Restart-VM's reset).
RESTART_GUEST_SCRIPT = (
    _PRELUDE
    + _GUEST
    + r"""
$a = Invoke-NvGuest { Restart-Computer -Force }
Out-NvJson ([ordered]@{ ok = $a.ok; error = $a.error; error_id = $a.error_id })
"""
)

# The guest's own view (the seed's step 3 expects it): is Hyper-V installed in
# it, and does its own hypervisor run (the Hyper-V Hypervisor counters exist)?
GUEST_CHECK_SCRIPT = (
    _PRELUDE
    + _GUEST
    + r"""
$a = Invoke-NvGuest {
    $ProgressPreference = 'SilentlyContinue'
    $f = $null
    try {
        $f = "$((Get-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V).State)"
    } catch { $f = 'Unknown: ' + $_.Exception.Message }
    $hv = @(Get-CimInstance -ClassName Win32_PerfFormattedData_HvStats_HyperVHypervisor `
        -ErrorAction SilentlyContinue).Count -gt 0
    [ordered]@{ HyperVFeatureState = $f; HypervisorRunning = $hv }
}
if ($a.ok) {
    Out-NvJson ([ordered]@{ ok = $true; HyperVFeatureState = $a.result.HyperVFeatureState;
                            HypervisorRunning = [bool]$a.result.HypervisorRunning })
} else { Out-NvJson $a }
"""
)

# Wraps a fixed script for `powershell.exe -EncodedCommand`: the argument JSON
# arrives on stdin (`$input`); success → JSON on stdout, exit 0; failure → a JSON
# {error, command, category} on stderr, exit 1.
LOCAL_WRAPPER = (
    r"""
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$nvArgsJson = $input | Out-String
try {
    $nvOut = & {
%s
    } -ArgsJson $nvArgsJson
    [Console]::Out.Write((@($nvOut) -join "`n"))
    exit 0
} catch {
    $nvErr = [ordered]@{
        error = $_.Exception.Message
        command = "$($_.InvocationInfo.MyCommand.Name)"
        category = "$($_.CategoryInfo.Category)"
    }
    $nvJson = ConvertTo-Json -InputObject $nvErr -Compress
    $nvJson = [regex]::Replace($nvJson, '[^\x00-\x7F]', {
        param($m) '\u{0:x4}' -f [int][char]$m.Value
    })
    [Console]::Error.Write("`n"""
    + JSON_BEGIN
    + r"""" + $nvJson + '"""
    + JSON_END
    + r"""')
    exit 1
}
"""
)


def extract_json(text: str) -> str | None:
    """The framed JSON in a script's output (the last frame); None when there is none.

    Output without any frame (an older stand-in, a bare `null`) is returned whole.
    """
    end = text.rfind(JSON_END)
    begin = text.rfind(JSON_BEGIN, 0, end) if end >= 0 else -1
    if begin >= 0:
        return text[begin + len(JSON_BEGIN) : end].strip()
    if JSON_BEGIN in text or JSON_END in text:
        return None  # a frame cut short
    stripped = text.strip()
    return stripped or None


def local_script(body: str) -> str:
    """The whole text `powershell.exe -EncodedCommand` runs for one fixed script."""
    return LOCAL_WRAPPER % body


__all__ = [
    "ADAPTER_SPOOFING_SCRIPT",
    "COLLECT_SCRIPT",
    "GUEST_CHECK_SCRIPT",
    "INSTALL_HYPERVISOR_SCRIPT",
    "INVOKE_SCRIPT",
    "JSON_BEGIN",
    "JSON_END",
    "PS_SINGLE_QUOTES",
    "RESTART_GUEST_SCRIPT",
    "WRITE_CMDLETS",
    "Bare",
    "extract_json",
    "local_script",
    "ps_quote",
    "ps_value",
    "render_command",
    "wire_value",
]
