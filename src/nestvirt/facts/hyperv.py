"""What the rules need to know about a Hyper-V host and its VMs: plain values only.

Read from the `nestvirt.hyperv-snapshot/1` JSON document (docs/contracts.md,
"Snapshots"). The live transports (local PowerShell, PowerShell Remoting)
produce that same document, so one strict parser serves all three.

Strictness: every key of the format must be present with the right JSON type;
anything else is a `UsageError` naming the key. A fact Windows could not give
is written `null` (or `{"unknown": "reason"}`) and becomes `Unknown(reason)`,
never `False`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from nestvirt.errors import NotFound, UsageError
from nestvirt.model import Unknown
from nestvirt.vocabulary import AMD, INTEL

SCHEMA = "nestvirt.hyperv-snapshot/1"

GIB = 1024**3
KIB = 1024

NOT_COLLECTED = Unknown("not in this snapshot (collected by an older nestvirt)")

# Win32_ComputerSystem Model/Manufacturer substrings of virtual machines (systemd's
# detect_vm list, as Windows reports it): Hyper-V and Azure say Model "Virtual Machine".
VM_SIGNATURES = (
    "virtual machine",
    "vmware",
    "virtualbox",
    "qemu",
    "kvm",
    "xen",
    "parallels",
    "bhyve",
    "google compute engine",
    "amazon ec2",
)
# Azure's fixed SMBIOS chassis asset tag (Win32_SystemEnclosure.SMBIOSAssetTag)
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"

# VMState names (Microsoft.HyperV.PowerShell.VMState) that mean "saved to disk".
SAVED_STATES = frozenset({"Saved", "FastSaved", "SavedCritical", "FastSavedCritical", "Hibernated"})


@dataclass(frozen=True, slots=True)
class HyperVHostFacts:
    name: str
    build: int | Unknown  # Win32_OperatingSystem.BuildNumber, as an integer
    os_caption: str | Unknown
    cpu_manufacturer: str | Unknown  # "GenuineIntel" | "AuthenticAMD" | …
    cpu_name: str | Unknown
    virtualization_firmware_enabled: bool | Unknown
    slat: bool | Unknown  # SecondLevelAddressTranslationExtensions (EPT / RVI)
    hypervisor_present: bool | Unknown
    hyperv_feature_state: str | Unknown  # "Enabled", "Disabled", "EnablePending", …
    vbs_status: int | Unknown  # 0 off, 1 enabled not running, 2 running
    security_services_running: tuple[int, ...] | Unknown
    bcd_hypervisor_load_options: str | Unknown | None  # None: not set
    total_physical_memory_bytes: int | Unknown
    free_physical_memory_bytes: int | Unknown  # FreePhysicalMemory (KiB) * 1024
    # Optional keys (issue 12); a snapshot without them gives Unknown("… not in this snapshot")
    model: str | Unknown = NOT_COLLECTED  # Win32_ComputerSystem.Model ("Virtual Machine")
    manufacturer: str | Unknown = NOT_COLLECTED  # Win32_ComputerSystem.Manufacturer
    logical_processors: int | Unknown = NOT_COLLECTED  # …NumberOfLogicalProcessors
    # the "Hyper-V Hypervisor" performance counters exist only where that hypervisor runs
    # in this partition: True/False here, whatever HypervisorPresent (a guest's bit) says
    hypervisor_counters: bool | Unknown = NOT_COLLECTED
    chassis_asset_tag: str | Unknown = NOT_COLLECTED  # Win32_SystemEnclosure.SMBIOSAssetTag
    secure_boot: bool | Unknown = NOT_COLLECTED  # Confirm-SecureBootUEFI
    tpm_present: bool | Unknown = NOT_COLLECTED  # Get-Tpm .TpmPresent
    vm_inventory: Unknown | None = None  # None: Get-VM answered; Unknown(reason) when it failed
    caller_may_manage_vms: bool | Unknown = NOT_COLLECTED  # Administrators or S-1-5-32-578
    # Not read from the host: how the user reached it, for the fixes that name it
    # (`nestvirt enable --hyperv HOST`). The Remoting host as given, the snapshot's host
    # by name, or "" for this Windows machine (`--hyperv ''`); None when whoever read the
    # facts did not say (the fixes show the placeholder HOST). Set by
    # HyperVSnapshot.reached_through.
    reached_as: str | None = None

    @property
    def machine_is_vm(self) -> bool | Unknown:
        """Is this Windows itself a VM? From Model/Manufacturer (strong evidence), in order."""
        model, maker = self.model, self.manufacturer
        if isinstance(model, Unknown) and isinstance(maker, Unknown):
            return model
        text = " ".join(v for v in (model, maker) if isinstance(v, str)).casefold()
        if any(sig in text for sig in VM_SIGNATURES):
            return True
        if isinstance(model, Unknown) or isinstance(maker, Unknown):
            return Unknown("Win32_ComputerSystem Model/Manufacturer only partly known")
        return False

    @property
    def is_azure(self) -> bool | Unknown:
        """An Azure VM: its SMBIOS chassis asset tag is Azure's fixed one."""
        tag = self.chassis_asset_tag
        if isinstance(tag, Unknown):
            return tag
        return tag.strip() == AZURE_ASSET_TAG

    @property
    def own_hypervisor_running(self) -> bool | Unknown:
        """Does *this* machine's Hyper-V hypervisor run?

        The Hyper-V Hypervisor counters answer directly. Without them,
        HypervisorPresent answers on a physical machine (and, as before, when
        nothing says what the machine is); inside a VM it is the parent's
        hypervisor bit, so it proves nothing.
        """
        if not isinstance(self.hypervisor_counters, Unknown):
            return self.hypervisor_counters
        if self.machine_is_vm is True:
            return Unknown(
                "this machine is a VM, where HypervisorPresent is its parent's; the Hyper-V "
                f"Hypervisor counters could not be read ({self.hypervisor_counters.reason})"
            )
        return self.hypervisor_present

    @property
    def cpu_vendor(self) -> str | Unknown:
        """The vendor: "intel", "amd", or the raw manufacturer string."""
        if isinstance(self.cpu_manufacturer, Unknown):
            return self.cpu_manufacturer
        return {INTEL: "intel", AMD: "amd"}.get(
            self.cpu_manufacturer.strip(), self.cpu_manufacturer.strip()
        )


@dataclass(frozen=True, slots=True)
class NetworkAdapter:
    name: str
    mac_address_spoofing: str  # "On" | "Off"
    switch_name: str | None
    adapter_id: str | None = None  # Get-VMNetworkAdapter .Id; names need not be unique


@dataclass(frozen=True, slots=True)
class Checkpoint:
    name: str
    snapshot_type: str | None = None  # "Standard", "Production", … when known


@dataclass(frozen=True, slots=True)
class HyperVVmFacts:
    name: str
    vm_id: str | None  # Get-VM .Id (GUID); live transports always have it
    state: str  # VMState name as Hyper-V gives it: "Off", "Running", "Saved", …
    version: str  # configuration version, "10.0"
    generation: int
    parent_checkpoint_id: str | None
    expose_virtualization_extensions: bool
    processor_count: int
    dynamic_memory_enabled: bool
    startup_bytes: int
    minimum_bytes: int
    maximum_bytes: int
    adapters: tuple[NetworkAdapter, ...]
    checkpoints: tuple[Checkpoint, ...]
    # Get-NetNat inside the guest (PowerShell Direct), when it was read: NAT names.
    # None: not looked at (the usual case); Unknown: looked, could not read.
    guest_nat: tuple[str, ...] | Unknown | None = None

    @property
    def is_off(self) -> bool:
        return self.state == "Off"

    @property
    def is_saved(self) -> bool:
        return self.state in SAVED_STATES

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    @property
    def state_word(self) -> str:
        """The status/1 word: "Off" → "off", "FastSaved" → "fast-saved"."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", self.state).lower()


@dataclass(frozen=True, slots=True)
class HyperVSnapshot:
    host: HyperVHostFacts
    vms: tuple[HyperVVmFacts, ...]

    def reached_through(self, *, host: str | None, from_snapshot: bool) -> HyperVSnapshot:
        """These facts with `host.reached_as` saying how the user reached the host.

        A snapshot file names the host it was collected on (the fixes then reach that
        host by name: `--hyperv NAME`); else the Remoting host as given, or "" for
        local PowerShell on this machine (`host` None or "").
        """
        if from_snapshot:
            reached: str | None = self.host.name or None
        else:
            reached = host or ""
        return replace(self, host=replace(self.host, reached_as=reached))

    def select(self, names: list[str] | tuple[str, ...]) -> tuple[HyperVVmFacts, ...]:
        """The VMs named, in the order asked (all VMs when none); unknown name → NotFound.

        Hyper-V compares VM names case-insensitively; so do we. A name shared by
        several VMs (Hyper-V allows it) selects all of them.
        """
        if not names:
            return self.vms
        chosen: list[HyperVVmFacts] = []
        for wanted in names:
            found = [vm for vm in self.vms if vm.name.casefold() == wanted.casefold()]
            if not found:
                known = ", ".join(repr(vm.name) for vm in self.vms) or "none"
                raise NotFound(f"no Hyper-V VM named {wanted!r} on {self.host.name} (VMs: {known})")
            chosen.extend(vm for vm in found if vm not in chosen)
        return tuple(chosen)


def parse_version(text: str) -> tuple[int, ...]:
    """ "9.3" → (9, 3); compared numerically, so "10.0" > "9.3" (a string compare says no)."""
    if not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        raise ValueError(f"not a version number: {text!r}")
    return tuple(int(p) for p in text.strip().split("."))


# ---------------------------------------------------------------------------
# Parsing


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> NoReturn:
        raise UsageError(f"{self.source}: {path}: {message}")

    def key(self, obj: dict[str, Any], key: str, path: str) -> Any:
        if key not in obj:
            self.fail(f"{path}.{key}" if path else key, "missing")
        return obj[key]

    def obj(self, value: Any, path: str, *, first_of_list: bool = False) -> dict[str, Any]:
        if first_of_list and isinstance(value, list):
            if not value:
                self.fail(path, "is an empty list (expected at least one instance)")
            value = value[0]
            path = f"{path}[0]"
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {_jtype(value)}")
        return value

    @staticmethod
    def unknown_marker(value: Any) -> Unknown | None:
        if (
            isinstance(value, dict)
            and set(value) == {"unknown"}
            and isinstance(value["unknown"], str)
        ):
            return Unknown(value["unknown"])
        return None

    def section(
        self, obj: dict[str, Any], key: str, *, first_of_list: bool = False, nullable: bool = False
    ) -> dict[str, Any] | Unknown:
        value = self.key(obj, key, "host")
        marker = self.unknown_marker(value)
        if marker is not None:
            return marker
        if value is None and nullable:
            return Unknown(f"{key} is not available on this host")
        return self.obj(value, f"host.{key}", first_of_list=first_of_list)

    def fact(self, section: dict[str, Any] | Unknown, key: str, path: str, kind: str) -> Any:
        """A nullable host fact of `kind` ("bool", "int", "str", "build", "ints")."""
        if isinstance(section, Unknown):
            return section
        value = self.key(section, key, path)
        marker = self.unknown_marker(value)
        if marker is not None:
            return marker
        if value is None:
            return Unknown(f"{path}.{key} is null")
        return self.typed(value, f"{path}.{key}", kind)

    def opt_fact(self, section: dict[str, Any] | Unknown, key: str, path: str, kind: str) -> Any:
        """Like `fact`, for a key newer than the format's first version: absent → not collected."""
        if isinstance(section, dict) and key not in section:
            return NOT_COLLECTED
        return self.fact(section, key, path, kind)

    def opt_section(self, obj: dict[str, Any], key: str) -> dict[str, Any] | Unknown:
        """An optional host section: absent → not collected; null → not available here."""
        if key not in obj:
            return NOT_COLLECTED
        return self.section(obj, key, first_of_list=True, nullable=True)

    def typed(self, value: Any, path: str, kind: str) -> Any:
        if kind == "bool":
            if not isinstance(value, bool):
                self.fail(path, f"expected true or false, got {_jtype(value)}")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(path, f"expected an integer, got {_jtype(value)}")
            if value < 0:
                self.fail(path, f"expected a non-negative integer, got {value}")
            return value
        if kind == "str":
            if not isinstance(value, str):
                self.fail(path, f"expected a string, got {_jtype(value)}")
            return value
        if kind == "build":  # WMI gives BuildNumber as a string of digits
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            digits = value.strip() if isinstance(value, str) else ""
            if digits.isdigit() and digits.isascii() and len(digits) <= MAX_DIGITS:
                return int(digits)
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            self.fail(path, f'expected a build number like "26100", got {shown}')
        if kind == "ints":
            if not isinstance(value, list):
                self.fail(path, f"expected a list of integers, got {_jtype(value)}")
            return tuple(self.typed(v, f"{path}[{i}]", "int") for i, v in enumerate(value))
        raise AssertionError(kind)

    def enum(self, value: Any, path: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            self.fail(path, f"got the number {value}: enum values must be written as strings")
        if not isinstance(value, str) or not value:
            self.fail(path, f"expected an enum name (a string), got {_jtype(value)}")
        return value


def _jtype(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_host(p: _Parser, doc: dict[str, Any]) -> HyperVHostFacts:
    host = p.obj(p.key(doc, "host", ""), "host")
    cs = p.obj(
        p.key(host, "Win32_ComputerSystem", "host"), "host.Win32_ComputerSystem", first_of_list=True
    )
    cpu = p.section(host, "Win32_Processor", first_of_list=True)
    os_ = p.section(host, "Win32_OperatingSystem", first_of_list=True)
    dg = p.section(host, "Win32_DeviceGuard", first_of_list=True, nullable=True)
    name = p.typed(
        p.key(cs, "Name", "host.Win32_ComputerSystem"), "host.Win32_ComputerSystem.Name", "str"
    )
    csp, cpup = "host.Win32_ComputerSystem", "host.Win32_Processor"
    osp, dgp = "host.Win32_OperatingSystem", "host.Win32_DeviceGuard"
    feature = p.key(host, "HyperVFeatureState", "host")
    feature_state: str | Unknown
    if (marker := p.unknown_marker(feature)) is not None:
        # Windows Home has no Hyper-V: Get-WindowsOptionalFeature fails with
        # "Feature name Microsoft-Hyper-V is unknown." — an answer, not a failure to read
        feature_state = NOT_AVAILABLE if _FEATURE_UNKNOWN.search(marker.reason) else marker
    elif feature is None:
        feature_state = Unknown("the Hyper-V feature state could not be read")
    else:
        feature_state = p.enum(feature, "host.HyperVFeatureState")
    bcd = p.key(host, "BcdHypervisorLoadOptions", "host")
    bcd_value: str | Unknown | None
    if (marker := p.unknown_marker(bcd)) is not None:
        bcd_value = marker
    elif bcd is None:
        bcd_value = None  # not set: the normal case
    else:
        bcd_value = p.typed(bcd, "host.BcdHypervisorLoadOptions", "str")
    free_kib = p.fact(os_, "FreePhysicalMemory", osp, "int")
    return HyperVHostFacts(
        model=p.opt_fact(cs, "Model", csp, "str"),
        manufacturer=p.opt_fact(cs, "Manufacturer", csp, "str"),
        logical_processors=p.opt_fact(cs, "NumberOfLogicalProcessors", csp, "int"),
        hypervisor_counters=_counters(p, host),
        chassis_asset_tag=p.opt_fact(
            p.opt_section(host, "Win32_SystemEnclosure"),
            "SMBIOSAssetTag",
            "host.Win32_SystemEnclosure",
            "str",
        ),
        secure_boot=_optional_host_fact(p, host, "SecureBootUEFI", "bool"),
        tpm_present=p.opt_fact(
            p.opt_section(host, "Get-Tpm"), "TpmPresent", "host.Get-Tpm", "bool"
        ),
        vm_inventory=_vm_inventory(p, host),
        caller_may_manage_vms=_optional_host_fact(p, host, "CallerMayManageVMs", "bool"),
        name=name,
        build=p.fact(os_, "BuildNumber", osp, "build"),
        os_caption=p.fact(os_, "Caption", osp, "str"),
        cpu_manufacturer=p.fact(cpu, "Manufacturer", cpup, "str"),
        cpu_name=p.fact(cpu, "Name", cpup, "str"),
        virtualization_firmware_enabled=p.fact(cpu, "VirtualizationFirmwareEnabled", cpup, "bool"),
        slat=p.fact(cpu, "SecondLevelAddressTranslationExtensions", cpup, "bool"),
        hypervisor_present=p.fact(cs, "HypervisorPresent", csp, "bool"),
        hyperv_feature_state=feature_state,
        vbs_status=p.fact(dg, "VirtualizationBasedSecurityStatus", dgp, "int"),
        security_services_running=p.fact(dg, "SecurityServicesRunning", dgp, "ints"),
        bcd_hypervisor_load_options=bcd_value,
        total_physical_memory_bytes=p.fact(cs, "TotalPhysicalMemory", csp, "int"),
        free_physical_memory_bytes=(free_kib if isinstance(free_kib, Unknown) else free_kib * KIB),
    )


NOT_AVAILABLE = "NotAvailable"  # HyperVFeatureState: this edition has no Microsoft-Hyper-V
_FEATURE_UNKNOWN = re.compile(r"(?i)feature name \S*hyper-v\S* is unknown")
HV_COUNTERS = "Win32_PerfFormattedData_HvStats_HyperVHypervisor"


def _counters(p: _Parser, host: dict[str, Any]) -> bool | Unknown:
    """The Hyper-V Hypervisor counters: an object (they exist: the hypervisor runs here),
    null (no instance: it does not), an unknown marker, or absent (older snapshot)."""
    if HV_COUNTERS not in host:
        return NOT_COLLECTED
    value = host[HV_COUNTERS]
    if (marker := p.unknown_marker(value)) is not None:
        return marker
    if value is None or value == []:
        return False
    p.obj(value, f"host.{HV_COUNTERS}", first_of_list=True)
    return True


def _optional_host_fact(p: _Parser, host: dict[str, Any], key: str, kind: str) -> Any:
    if key not in host:
        return NOT_COLLECTED
    value = host[key]
    if (marker := p.unknown_marker(value)) is not None:
        return marker
    if value is None:
        return Unknown(f"host.{key} is null")
    return p.typed(value, f"host.{key}", kind)


def _vm_inventory(p: _Parser, host: dict[str, Any]) -> Unknown | None:
    """host.VmInventory: null or absent when Get-VM answered; {"unknown": why} when it failed."""
    value = host.get("VmInventory")
    if value is None:
        return None
    marker = p.unknown_marker(value)
    if marker is None:
        p.fail("host.VmInventory", f'expected null or {{"unknown": "reason"}}, got {_jtype(value)}')
    return marker


def _as_list(p: _Parser, value: Any, path: str) -> list[Any]:
    """PowerShell unwraps one-element arrays and turns empty ones into null: accept both."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        p.fail(path, f"expected a list, got {_jtype(value)}")
    return value


def parse_vm(p: _Parser, raw: Any, path: str) -> HyperVVmFacts:
    vm = p.obj(raw, path)
    gvm = p.obj(p.key(vm, "Get-VM", path), f"{path}.Get-VM")
    proc = p.obj(p.key(vm, "Get-VMProcessor", path), f"{path}.Get-VMProcessor")
    mem = p.obj(p.key(vm, "Get-VMMemory", path), f"{path}.Get-VMMemory")
    gp, pp, mp = f"{path}.Get-VM", f"{path}.Get-VMProcessor", f"{path}.Get-VMMemory"

    def req(section: dict[str, Any], key: str, spath: str, kind: str) -> Any:
        return p.typed(p.key(section, key, spath), f"{spath}.{key}", kind)

    def opt_str(section: dict[str, Any], key: str, spath: str) -> str | None:
        value = p.key(section, key, spath)
        return None if value is None else p.typed(value, f"{spath}.{key}", "str")

    name = req(gvm, "Name", gp, "str")
    vm_id = gvm.get("Id")  # optional: not in hand-written snapshots
    if vm_id is not None:
        vm_id = p.typed(vm_id, f"{gp}.Id", "str")
    version = req(gvm, "Version", gp, "str")
    try:
        parse_version(version)
    except ValueError:
        p.fail(f"{gp}.Version", f'expected a version like "10.0", got {version!r}')
    adapters = []
    ap = f"{path}.Get-VMNetworkAdapter"
    for i, a in enumerate(_as_list(p, p.key(vm, "Get-VMNetworkAdapter", path), ap)):
        aobj = p.obj(a, f"{ap}[{i}]")
        adapters.append(
            NetworkAdapter(
                name=req(aobj, "Name", f"{ap}[{i}]", "str"),
                mac_address_spoofing=p.enum(
                    p.key(aobj, "MacAddressSpoofing", f"{ap}[{i}]"), f"{ap}[{i}].MacAddressSpoofing"
                ),
                switch_name=opt_str(aobj, "SwitchName", f"{ap}[{i}]"),
                adapter_id=(
                    None if aobj.get("Id") is None else p.typed(aobj["Id"], f"{ap}[{i}].Id", "str")
                ),
            )
        )
    checkpoints = []
    sp = f"{path}.Get-VMSnapshot"
    for i, s in enumerate(_as_list(p, p.key(vm, "Get-VMSnapshot", path), sp)):
        if isinstance(s, str):  # a bare list of names
            checkpoints.append(Checkpoint(s))
            continue
        sobj = p.obj(s, f"{sp}[{i}]")
        stype = sobj.get("SnapshotType")
        checkpoints.append(
            Checkpoint(
                name=req(sobj, "Name", f"{sp}[{i}]", "str"),
                snapshot_type=None if stype is None else p.enum(stype, f"{sp}[{i}].SnapshotType"),
            )
        )
    guest_nat: tuple[str, ...] | Unknown | None = None
    if "Get-NetNat" in vm:
        raw_nat = vm["Get-NetNat"]
        if (marker := p.unknown_marker(raw_nat)) is not None:
            guest_nat = marker
        else:
            np_ = f"{path}.Get-NetNat"
            guest_nat = tuple(
                req(p.obj(n, f"{np_}[{i}]"), "Name", f"{np_}[{i}]", "str")
                for i, n in enumerate(_as_list(p, raw_nat, np_))
            )
    return HyperVVmFacts(
        guest_nat=guest_nat,
        name=name,
        vm_id=vm_id,
        state=p.enum(p.key(gvm, "State", gp), f"{gp}.State"),
        version=version.strip(),
        generation=req(gvm, "Generation", gp, "int"),
        parent_checkpoint_id=opt_str(gvm, "ParentCheckpointId", gp),
        expose_virtualization_extensions=req(proc, "ExposeVirtualizationExtensions", pp, "bool"),
        processor_count=req(proc, "Count", pp, "int"),
        dynamic_memory_enabled=req(mem, "DynamicMemoryEnabled", mp, "bool"),
        startup_bytes=req(mem, "Startup", mp, "int"),
        minimum_bytes=req(mem, "Minimum", mp, "int"),
        maximum_bytes=req(mem, "Maximum", mp, "int"),
        adapters=tuple(adapters),
        checkpoints=tuple(checkpoints),
    )


def parse_snapshot(doc: Any, source: str = "snapshot") -> HyperVSnapshot:
    """A decoded `nestvirt.hyperv-snapshot/1` document → facts; UsageError names the bad key."""
    p = _Parser(source)
    top = p.obj(doc, "(top level)")
    schema = p.key(top, "schema", "")
    if schema != SCHEMA:
        p.fail("schema", f"is {schema!r}, expected {SCHEMA!r}")
    host = parse_host(p, top)
    raw_vms = p.key(top, "vms", "")
    if not isinstance(raw_vms, list):
        p.fail("vms", f"expected a list, got {_jtype(raw_vms)}")
    vms = tuple(parse_vm(p, v, f"vms[{i}]") for i, v in enumerate(raw_vms))
    return HyperVSnapshot(host, vms)


MAX_DIGITS = 30  # no count, size or build number Hyper-V reports is longer


def parse_snapshot_text(text: str, source: str = "snapshot") -> HyperVSnapshot:
    """JSON text → facts; malformed or truncated JSON is a UsageError with its position."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source}: not valid JSON (malformed or truncated) at line {exc.lineno}, "
            f"column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise UsageError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError:  # Python's limit on the digits of an integer (4300)
        raise UsageError(
            f"{source}: a number is too long to read (more digits than Python converts)"
        ) from None
    return parse_snapshot(doc, source)


def load_snapshot(path: str | Path) -> HyperVSnapshot:
    """Read a snapshot file (UTF-8, a BOM tolerated: Windows PowerShell writes one)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"snapshot {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"snapshot {str(p)!r} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read snapshot {str(p)!r}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{p}: not UTF-8 text (byte {exc.start}); write snapshots with `nestvirt collect`"
        ) from None
    return parse_snapshot_text(text, str(p))


__all__ = [
    "GIB",
    "SCHEMA",
    "Checkpoint",
    "HyperVHostFacts",
    "HyperVSnapshot",
    "HyperVVmFacts",
    "NetworkAdapter",
    "load_snapshot",
    "parse_snapshot",
    "parse_snapshot_text",
    "parse_version",
]
