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

from collections.abc import Mapping
from typing import Any

# PowerShell's tokenizer ends a single-quoted string at any of these five
# characters (ASCII ' and the Unicode quotes it treats alike: U+2018 ‘, U+2019 ’,
# U+201A ‚, U+201B ‛); a pair of them inside the literal stands for one.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_quote(value: str) -> str:
    """`value` as a PowerShell single-quoted literal that evaluates to exactly `value`.

    Inside '…' PowerShell expands nothing (`$()`, backticks, `;` and newlines are
    plain characters); only the quote characters need care, and each is doubled.
    """
    return "'" + "".join(c + c if c in PS_SINGLE_QUOTES else c for c in value) + "'"


def ps_value(value: Any) -> str:
    """A Python value as PowerShell source text: str → '…', bool → $true/$false, int → digits."""
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return ps_quote(value)
    raise TypeError(f"no PowerShell literal for {type(value).__name__}")


def render_command(cmdlet: str, parameters: Mapping[str, Any]) -> str:
    """One cmdlet with named parameters as pasteable text; a None value is a switch.

    Enum-valued parameters (MacAddressSpoofing On) are shown bare when the value is
    a plain identifier, as people type them; anything else is quoted.
    """
    parts = [cmdlet]
    for name, value in parameters.items():
        if value is None:
            parts.append(f"-{name}")
        elif isinstance(value, Bare):
            parts.append(f"-{name} {value.text}")
        else:
            parts.append(f"-{name} {ps_value(value)}")
    return " ".join(parts)


class Bare:
    """A bare enum word for a shown command (`-MacAddressSpoofing On`); sent as its string."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        if not text.isascii() or not text.isalpha():
            raise ValueError(f"not an enum word: {text!r}")
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bare) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Bare({self.text!r})"


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

_PRELUDE = r"""
param([string]$ArgsJson)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$NvArgs = $ArgsJson | ConvertFrom-Json
function Out-NvJson($Value) {
    $json = ConvertTo-Json -InputObject $Value -Depth 8 -Compress
    [regex]::Replace($json, '[^\x00-\x7F]', { param($m) '\u{0:x4}' -f [int][char]$m.Value })
}
function NvText($Value) { if ($null -eq $Value) { $null } else { $Value.ToString() } }
"""

COLLECT_SCRIPT = (
    _PRELUDE
    + r"""
function NvUnknown([string]$Reason) { [ordered]@{ unknown = $Reason } }
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
$vms = @()
if (Get-Command -Name Get-VM -ErrorAction SilentlyContinue) { $vms = @(Get-VM) }
$wanted = @($NvArgs.vm_names | Where-Object { $null -ne $_ })
if ($wanted.Count -gt 0) { $vms = @($vms | Where-Object { $wanted -contains $_.Name }) }
$vmOut = @(foreach ($vm in $vms) {
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
})
Out-NvJson ([ordered]@{
    schema = 'nestvirt.hyperv-snapshot/1'
    host = [ordered]@{
        Win32_ComputerSystem = [ordered]@{
            Name = $cs.Name; HypervisorPresent = $cs.HypervisorPresent
            TotalPhysicalMemory = $cs.TotalPhysicalMemory
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

# The page's step 3 over PowerShell Direct: start the VM if needed, wait until
# the guest answers, enable the Hyper-V feature inside it (no restart here).
INSTALL_HYPERVISOR_SCRIPT = (
    _PRELUDE
    + r"""
$vm = Get-VM -Id $NvArgs.vm_id
if ($vm.State -ne 'Running') { Start-VM -VM $vm }
$secret = ConvertTo-SecureString -String $NvArgs.password -AsPlainText -Force
$cred = New-Object System.Management.Automation.PSCredential ($NvArgs.user, $secret)
$deadline = (Get-Date).AddSeconds([int]$NvArgs.timeout_seconds)
while ($true) {
    try {
        $r = Invoke-Command -VMId $vm.Id -Credential $cred -ErrorAction Stop -ScriptBlock {
            Enable-WindowsOptionalFeature -FeatureName Microsoft-Hyper-V -Online -NoRestart
        }
        break
    } catch {
        if ((Get-Date) -gt $deadline) { throw }
        Start-Sleep -Seconds 5
    }
}
Out-NvJson ([ordered]@{ RestartNeeded = [bool]$r.RestartNeeded })
"""
)

# Wraps a fixed script for `powershell.exe -EncodedCommand`: the argument JSON
# arrives on stdin (`$input`); success → JSON on stdout, exit 0; failure → a JSON
# {error, command, category} on stderr, exit 1.
LOCAL_WRAPPER = r"""
$ErrorActionPreference = 'Stop'
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
    [Console]::Error.Write($nvJson)
    exit 1
}
"""


def local_script(body: str) -> str:
    """The whole text `powershell.exe -EncodedCommand` runs for one fixed script."""
    return LOCAL_WRAPPER % body


__all__ = [
    "ADAPTER_SPOOFING_SCRIPT",
    "COLLECT_SCRIPT",
    "INSTALL_HYPERVISOR_SCRIPT",
    "INVOKE_SCRIPT",
    "PS_SINGLE_QUOTES",
    "WRITE_CMDLETS",
    "Bare",
    "local_script",
    "ps_quote",
    "ps_value",
    "render_command",
    "wire_value",
]
