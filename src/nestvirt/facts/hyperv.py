"""What the rules need to know about a Hyper-V host and its VMs: plain values only.

Read from the `nestvirt.hyperv-snapshot/1` JSON document (PRODUCT.md, "Hyper-V
snapshot format"). The live transports (local PowerShell, PowerShell Remoting)
produce that same document, so one strict parser serves all three.

Strictness: every key of the format must be present with the right JSON type;
anything else is a `UsageError` naming the key. A fact Windows could not give
is written `null` (or `{"unknown": "reason"}`) and becomes `Unknown(reason)`,
never `False`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from nestvirt.errors import NotFound, UsageError
from nestvirt.model import Unknown

SCHEMA = "nestvirt.hyperv-snapshot/1"

GIB = 1024**3
KIB = 1024

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

    @property
    def cpu_vendor(self) -> str | Unknown:
        """The vendor: "intel", "amd", or the raw manufacturer string."""
        if isinstance(self.cpu_manufacturer, Unknown):
            return self.cpu_manufacturer
        return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(
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
        feature_state = marker
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
    return HyperVVmFacts(
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
