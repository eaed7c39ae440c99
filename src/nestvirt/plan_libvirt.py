"""What `enable` / `disable` would change on a libvirt domain: pure policy, no I/O.

`build_plan(facts, findings, options)` turns the rules' findings (and the facts
behind them) into a Plan of LibvirtChanges. Each change carries the in-memory
XML edits (nestvirt.domxml) that make it, the rule codes it clears, and the
equivalent manual command, for display only. An empty plan means "already set up
for nesting".

Policy (see `_expose`):

- kvm domains take vmx/svm from the host CPU. A domain without <cpu>, or with a
  custom <cpu> that names no model, becomes host-passthrough. A domain that
  names a model keeps it (the user chose it, e.g. for migration) and gets
  `<feature policy='require' name='svm|vmx'/>` for the host's vendor.
  host-passthrough / host-model / maximum already carry the host's flag: only a
  `disable`/`forbid` of it is turned into `require`. A require of the other
  vendor's flag (NV-V09) is removed. A host CPU without vmx/svm cannot be fixed
  from the domain: the plan says so (unfixable).
- qemu (TCG) domains: QEMU emulates SVM but not VMX, and the guest's kvm_amd
  loads only on an AMD (or Hygon) CPU vendor. So: `require` of `svm`; a require of
  `vmx` becomes that require of `svm` (in place); a model of another vendor is
  replaced by EPYC; no <cpu>, host-passthrough (which TCG cannot run), or
  host-model on a host whose vendor is not AMD (the guest would see it) becomes
  `<cpu mode='custom' match='exact' check='none'><model fallback='allow'>EPYC
  </model><feature policy='require' name='svm'/></cpu>`. host-model of an AMD
  host under TCG gets an explicit require of svm; maximum (QEMU's `max`) carries it.
  Whether the guest already gets svm, and its vendor, is the guest-CPU oracle's
  answer (rules.vm_libvirt.guest_cpu_of: QEMU's own, or nestvirt.guestcpu's table).
- memory: currentMemory = memory. <maxMemory> and virtio-mem devices (memory
  hotplug) are removed only with `remove_hotplug`; otherwise a note says so.
  `memory_kib` sets <memory> (and currentMemory) to that size.
- `mac_spoofing`: an interface whose filterref is `no-mac-spoofing` loses it;
  one behind a chain that also carries other protections (clean-traffic, or a
  user's filter including the anti-spoofing filters or its own drop rules on
  $MAC/$IP) is pointed at a derived copy of the chain without those parts
  (nestvirt.nwfilter_derive), defined before the domain; the plan lists each
  protection dropped.
- a managed-save image is discarded (its own change, shown before anything is
  done) when the domain definition changes; a running domain is shut down and
  started again only with `stop`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from nestvirt import domxml
from nestvirt.commands import virsh
from nestvirt.domxml import Edit
from nestvirt.errors import UsageError
from nestvirt.facts.libvirt_vm import Interface, LibvirtVmFacts
from nestvirt.model import Change, Finding, Plan, Severity, Unknown
from nestvirt.vocabulary import HOST_CPU_MODES, RUNNING_STATES, SIZE_UNITS

GIB_KIB = 1024 * 1024
TCG_DEFAULT_MODEL = "EPYC"
_ON = ("require", "force")
_OFF = ("disable", "forbid")
_PASSTHROUGH_MODES = HOST_CPU_MODES

# Stable identifiers of the kinds of change (Change.action).
EXPOSE = "expose-virt"
HIDE = "hide-virt"
STATIC_MEMORY = "static-memory"
SET_MEMORY = "set-memory"
REMOVE_MAX_MEMORY = "remove-max-memory"
REMOVE_VIRTIO_MEM = "remove-virtio-mem"
ALLOW_MAC_SPOOFING = "allow-mac-spoofing"
DISCARD_MANAGED_SAVE = "discard-managed-save"
STOP = "stop"
START = "start"
RESTORE = "restore"
# Changes of the definition itself (the rest act on the domain's state).
DEFINITION_ACTIONS = frozenset(
    {EXPOSE, HIDE, STATIC_MEMORY, SET_MEMORY, REMOVE_MAX_MEMORY, REMOVE_VIRTIO_MEM,
     ALLOW_MAC_SPOOFING, RESTORE}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LibvirtChange(Change):
    """A Change plus the XML edits that make it (empty for state actions), and the
    network filters (name, XML) to define before the domain (`--mac-spoofing`)."""

    edits: tuple[Edit, ...] = ()
    nwfilters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PlanOptions:
    memory_kib: int | None = None  # --memory
    mac_spoofing: bool = False  # --mac-spoofing
    remove_hotplug: bool = False  # --remove-hotplug
    stop: bool = False  # --stop
    stop_timeout: int = 120


@dataclass(slots=True)
class _Builder:
    facts: LibvirtVmFacts
    findings: Sequence[Finding]
    changes: list[LibvirtChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unfixable: list[Finding] = field(default_factory=list)

    def fires(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def cannot(self, code: str, name: str, reason: str, fix: str | None = None) -> None:
        found = self.finding(code)
        self.unfixable.append(
            Finding(code, name, found.severity if found else Severity.ERROR, reason, fix)
        )

    def add(self, action: str, summary: str, command: str, codes: Sequence[str],
            edits: Sequence[Edit] = (), needs_stop: bool = True,
            nwfilters: Sequence[tuple[str, str]] = ()) -> None:  # fmt: skip
        self.changes.append(
            LibvirtChange(
                action=action,
                codes=tuple(codes),
                command=command,
                summary=summary,
                needs_stop=needs_stop,
                edits=tuple(edits),
                nwfilters=tuple(nwfilters),
            )
        )

    def plan(self) -> Plan:
        return Plan(
            vm=self.facts.name,
            changes=tuple(self.changes),
            notes=tuple(self.notes),
            unfixable=tuple(self.unfixable),
        )


# ------------------------------------------------------------------ sizes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = SIZE_UNITS
MAX_MEMORY_BYTES = 64 * 1024**4


def parse_size(text: str) -> int:
    """'4GiB', '4096MiB', '4G', '1.5GiB' → KiB (rounded up). G/GiB = 1024³, GB = 10⁹ (as virsh)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"cannot read memory size {text!r}: write it like 4GiB, 4096MiB or 4G")
    number, unit = match.groups()
    if not unit:
        raise UsageError(f"memory size {text!r} has no unit: write it like 4GiB or 4096MiB")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise UsageError(f"unknown unit {unit!r} in {text!r}: use KiB, MiB, GiB or TiB")
    size = float(number) * factor
    if size < 1024**2:
        raise UsageError(f"memory size {text!r} is below 1 MiB")
    if size > MAX_MEMORY_BYTES:
        raise UsageError(f"memory size {text!r} is larger than 64 TiB")
    return -(-int(size) // 1024)


def format_kib(kib: int) -> str:
    if kib % GIB_KIB == 0:
        return f"{kib // GIB_KIB} GiB"
    if kib % 1024 == 0:
        return f"{kib // 1024} MiB"
    return f"{kib} KiB"


# ---------------------------------------------------------------- policy


def is_tcg(facts: LibvirtVmFacts) -> bool:
    return facts.domain_type == "qemu"


def wanted_flag(facts: LibvirtVmFacts) -> str | None:
    """The flag this domain can expose: svm under TCG, the host vendor's under KVM (as NV-V01)."""
    from nestvirt.rules import vm_libvirt

    return vm_libvirt.wanted_extension(facts)


def _other(flag: str) -> str:
    return "vmx" if flag == "svm" else "svm"


def _has_svm_vendor(f: LibvirtVmFacts) -> bool:
    """Whether the guest's CPUID vendor is one kvm_amd accepts (the oracle's answer)."""
    from nestvirt.guestcpu import SVM_VENDORS
    from nestvirt.rules.vm_libvirt import guest_cpu_of

    return guest_cpu_of(f).vendor in SVM_VENDORS


def _expose(b: _Builder, opts: PlanOptions) -> None:
    f = b.facts
    if f.domain_type not in ("kvm", "qemu"):
        if b.fires("NV-V01"):
            b.cannot("NV-V01", "virt-extensions-hidden",
                     f"domain type {f.domain_type!r}: nestvirt exposes vmx/svm on kvm and "
                     "qemu (TCG) domains only")  # fmt: skip
        return
    flag = wanted_flag(f)
    if _exposed(f, flag):
        return
    if flag is None:
        b.cannot("NV-V01", "virt-extensions-hidden",
                 f"the host CPU vendor ({f.host_cpu_vendor or 'unknown'}) has no known "
                 "virtualization extension nestvirt could expose")  # fmt: skip
        return
    if not is_tcg(f) and flag not in f.host_virt_extensions:
        b.cannot("NV-V01", "virt-extensions-hidden",
                 f"the host CPU does not offer {flag} to KVM guests (libvirt's host CPU has "
                 "neither vmx nor svm), so no kvm domain can get it: enable nesting on the "
                 "host (nestvirt host enable), or use a qemu (TCG) domain, which emulates svm",
                 "nestvirt host enable")  # fmt: skip
        return
    edits: list[Edit] = []
    why: list[str] = []
    other = _other(flag)
    features = f.cpu_features
    mode = f.cpu_mode
    codes = ["NV-V01"]
    if features.get(other) in _ON:
        codes.append("NV-V11" if is_tcg(f) else "NV-V09")
        if is_tcg(f) and other == "vmx":
            edits.append(domxml.RenameFeature("vmx", "svm", "require"))
            why.append("turn the require of vmx (which TCG cannot emulate) into svm")
        else:
            edits.append(domxml.RemoveFeature(other))
            why.append(f"drop the require of {other} (the host CPU is {f.host_cpu_vendor})")
    if is_tcg(f):
        host_model_of_other_vendor = mode == "host-model" and not _has_svm_vendor(f)
        if (
            mode == "host-passthrough"
            or mode is None
            or (mode == "custom" and not f.cpu_model)
            or host_model_of_other_vendor
        ):
            edits.append(domxml.SetCpuCustom(TCG_DEFAULT_MODEL))
            why.append(
                f"use CPU model {TCG_DEFAULT_MODEL} (TCG cannot run host-passthrough)"
                if mode == "host-passthrough"
                else f"use CPU model {TCG_DEFAULT_MODEL} (host-model gives the guest the "
                f"{f.host_cpu_vendor} vendor, which kvm_amd refuses)"
                if host_model_of_other_vendor
                else f"give the domain CPU model {TCG_DEFAULT_MODEL}"
            )
        elif mode == "custom" and not _has_svm_vendor(f):
            edits.append(domxml.SetCpuModel(TCG_DEFAULT_MODEL))
            why.append(f"replace CPU model {f.cpu_model} by {TCG_DEFAULT_MODEL}: kvm_amd in the "
                       "guest loads only on an AMD CPU vendor")  # fmt: skip
        if features.get("svm") not in _ON:
            edits.append(domxml.SetFeaturePolicy("svm", "require"))
        why.append("require svm (TCG emulates AMD-V)")
        command = virsh("edit", f.name, uri=f.uri) + "  # <cpu mode='custom'><model>EPYC" \
                  "</model><feature policy='require' name='svm'/></cpu>"  # fmt: skip
    elif mode in _PASSTHROUGH_MODES:
        if features.get(flag) in _OFF:
            edits.append(domxml.SetFeaturePolicy(flag, "require"))
            why.append(f"turn the {features[flag]} of {flag} into require")
        command = (
            virsh("edit", f.name, uri=f.uri) + f"  # <feature policy='require' name='{flag}'/>"
        )
    elif mode == "custom" and f.cpu_model:
        edits.append(domxml.SetFeaturePolicy(flag, "require"))
        why.append(f"keep CPU model {f.cpu_model} and require {flag}")
        command = virsh("edit", f.name, uri=f.uri) + (
            f"  # in <cpu>: <feature policy='require' name='{flag}'/>"
        )
    else:
        edits.append(domxml.SetCpuMode("host-passthrough"))
        if features.get(flag) in _OFF:
            edits.append(domxml.SetFeaturePolicy(flag, "require"))
        why.append(f"give the guest the host CPU (host-passthrough), {flag} included")
        command = virsh("edit", f.name, uri=f.uri) + "  # <cpu mode='host-passthrough'/>"
    if b.fires("NV-V09") and "NV-V09" not in codes:
        codes.append("NV-V09")
    b.add(EXPOSE, f"expose {flag} to the guest: " + "; ".join(why), command, codes, edits)


def _exposed(f: LibvirtVmFacts, flag: str | None) -> bool:
    """Does the definition already expose `flag` (and nothing it cannot run)?

    NV-V01's own test (rules.vm_libvirt.exposes: the guest CPU oracle, the
    vendor kvm_amd needs under TCG included), plus a require of the other
    vendor's flag (NV-V09, or vmx under TCG: NV-V11), which it leaves to others.
    """
    from nestvirt.rules import vm_libvirt

    if flag is None or not vm_libvirt.exposes(f):
        return False
    return f.cpu_features.get(_other(flag)) not in _ON


def _memory(b: _Builder, opts: PlanOptions) -> None:
    f = b.facts
    if opts.memory_kib is not None:
        if opts.memory_kib != f.memory_kib or f.current_memory_kib != f.memory_kib:
            kib = opts.memory_kib
            codes = ["NV-V02"] if 0 < f.current_memory_kib < f.memory_kib else []
            if b.fires("NV-V03") and kib >= 4 * GIB_KIB:
                codes.append("NV-V03")
            b.add(SET_MEMORY,
                  f"set memory to {format_kib(kib)} (was {format_kib(f.memory_kib)}), "
                  "all of it present from boot",
                  virsh("setmaxmem", f.name, f"{kib}KiB", "--config", uri=f.uri) + " && "
                  + virsh("setmem", f.name, f"{kib}KiB", "--config", uri=f.uri),
                  codes, [domxml.SetMemory(kib)])  # fmt: skip
    elif 0 < f.current_memory_kib < f.memory_kib:
        b.add(STATIC_MEMORY,
              f"make memory static: currentMemory {format_kib(f.current_memory_kib)} → "
              f"{format_kib(f.memory_kib)} (= memory)",
              virsh("setmem", f.name, f"{f.memory_kib}KiB", "--config", uri=f.uri), ["NV-V02"],
              [domxml.CurrentMemoryToMemory()])  # fmt: skip
    if f.memory_kib and f.memory_kib < 4 * GIB_KIB and opts.memory_kib is None:
        b.notes.append(
            f"memory is {format_kib(f.memory_kib)}, below 4 GiB: nested guests need room "
            "(NV-V03); add --memory 4GiB to raise it"
        )
    hotplug = []
    if f.max_memory_kib is not None:
        hotplug.append("<maxMemory>")
    if f.virtio_mem_devices:
        hotplug.append(f"{f.virtio_mem_devices} virtio-mem device(s)")
    if hotplug and not opts.remove_hotplug:
        b.notes.append(
            f"memory hotplug ({' and '.join(hotplug)}) lets memory change at run time (NV-V02); "
            "nestvirt leaves it unless you add --remove-hotplug"
        )
    elif hotplug:
        if f.virtio_mem_devices:
            b.add(REMOVE_VIRTIO_MEM, f"remove {f.virtio_mem_devices} virtio-mem device(s)",
                  virsh("edit", f.name, uri=f.uri)
                  + "  # delete <memory model='virtio-mem'> devices", ["NV-V02"],
                  [domxml.RemoveVirtioMem()])  # fmt: skip
        if f.max_memory_kib is not None:
            b.add(REMOVE_MAX_MEMORY, "remove <maxMemory> (memory hotplug)",
                  virsh("edit", f.name, uri=f.uri) + "  # delete <maxMemory>", ["NV-V02"],
                  [domxml.RemoveMaxMemory()])  # fmt: skip
    if f.balloon_model not in (None, "none") and b.fires("NV-V10"):
        b.notes.append(
            f"the {f.balloon_model} memballoon stays: it lets the host shrink the guest at run "
            "time (virsh setmem --live); don't, while the guest runs a hypervisor (NV-V10)"
        )


def _mac_spoofing(b: _Builder, opts: PlanOptions) -> None:
    f = b.facts
    for index, iface in enumerate(f.interfaces):
        label = f"interface {iface.mac or index}"
        if isinstance(iface.blocks_foreign_mac, Unknown):
            b.notes.append(f"{label}: cannot tell whether its filter blocks foreign MACs "
                           f"({iface.blocks_foreign_mac.reason})")  # fmt: skip
            continue
        if not iface.blocks_foreign_mac or not iface.filter:
            continue
        nat = ("or keep it and use NAT inside the VM (the nested guests then leave through "
               "the VM's own MAC)")  # fmt: skip
        if not opts.mac_spoofing:
            b.notes.append(
                f"{label}: nwfilter {iface.filter!r} drops frames from other MACs, so nested "
                f"guests get no network (NV-V04): add --mac-spoofing, {nat}"
            )
            continue
        if iface.filter == "no-mac-spoofing":
            b.add(ALLOW_MAC_SPOOFING,
                  f"{label}: drop nwfilter 'no-mac-spoofing' so nested guests' frames pass",
                  virsh("edit", f.name, uri=f.uri) + "  # delete <filterref filter="
                  "'no-mac-spoofing'/> of that interface",
                  ["NV-V04"], [domxml.DropFilterref(index, iface.mac, iface.filter)])  # fmt: skip
        else:
            _derived_filter(b, index, label, iface, nat)


def _derived_filter(b: _Builder, index: int, label: str, iface: Interface, nat: str) -> None:
    """Reference a copy of the chain without the parts that match the VM's own addresses."""
    from nestvirt.nwfilter_derive import DeriveError, derive

    assert iface.filter is not None
    try:
        derived = derive(iface.filter, dict(iface.filter_xml))
    except DeriveError as exc:
        b.cannot("NV-V04", "mac-spoofing-blocked", f"{label}: {exc}; {nat}")
        return
    if not derived.top:
        edit: Edit = domxml.DropFilterref(index, iface.mac, iface.filter)
        target = "drop it"
    else:
        edit = domxml.SetFilterref(index, iface.mac, iface.filter, derived.top)
        target = f"reference {derived.top!r} instead"
    b.add(ALLOW_MAC_SPOOFING,
          f"{label}: nwfilter {iface.filter!r} drops nested guests' frames: {target}, the same "
          f"chain without {', '.join(derived.dropped)} (those protections no longer apply to "
          "this interface)",
          "virsh nwfilter-define FILE && " + virsh("edit", b.facts.name, uri=b.facts.uri) + "  # "
          f"<filterref filter='{derived.top}'/> on that interface",
          ["NV-V04"], [edit], nwfilters=derived.definitions)  # fmt: skip


def _state(b: _Builder, opts: PlanOptions) -> None:
    """Managed save, stop and start: only when the definition changes."""
    f = b.facts
    if not any(c.needs_stop for c in b.changes):
        return
    if f.has_managed_save is True:
        b.changes.insert(0, LibvirtChange(
            action=DISCARD_MANAGED_SAVE, codes=("NV-V05",),
            command=virsh("managedsave-remove", f.name, uri=f.uri),
            summary="discard the managed-save image (the saved memory state is lost; the VM "
                    "boots fresh, otherwise it would resume with the old CPU)",
            needs_stop=True))  # fmt: skip
    elif isinstance(f.has_managed_save, Unknown):
        b.notes.append(f"could not check for a managed-save image ({f.has_managed_save.reason})")
    if isinstance(f.snapshot_count, int) and f.snapshot_count:
        b.notes.append(f"{f.snapshot_count} snapshot(s) keep the old definition: reverting "
                       "one brings the old CPU back (NV-V06)")  # fmt: skip
    if f.state in RUNNING_STATES:
        if opts.stop:
            b.changes.insert(0, LibvirtChange(
                action=STOP, codes=("NV-V07",), command=virsh("shutdown", f.name, uri=f.uri),
                summary=f"shut the VM down gracefully (wait up to {opts.stop_timeout} s)",
                needs_stop=True))  # fmt: skip
            b.changes.append(LibvirtChange(
                action=START, codes=("NV-V07",), command=virsh("start", f.name, uri=f.uri),
                summary="start the VM again", needs_stop=True))  # fmt: skip
        else:
            b.notes.append(f"the VM is {f.state}: the changes need a full stop and start; "
                           "add --stop to shut it down gracefully and start it again")  # fmt: skip


def build_plan(
    facts: LibvirtVmFacts, findings: Sequence[Finding], options: PlanOptions | None = None
) -> Plan:
    """Everything `enable` would change on this domain, and what it cannot fix."""
    opts = options or PlanOptions()
    b = _Builder(facts, findings)
    _expose(b, opts)
    _memory(b, opts)
    _mac_spoofing(b, opts)
    _state(b, opts)
    return b.plan()


def build_disable_plan(
    facts: LibvirtVmFacts, findings: Sequence[Finding], options: PlanOptions | None = None
) -> Plan:
    """Hide vmx/svm again, and only that: `disable` of each flag the guest could see."""
    opts = options or PlanOptions()
    b = _Builder(facts, findings)
    f = facts
    candidates = {n for n in ("vmx", "svm") if f.cpu_features.get(n) in _ON}
    flag = wanted_flag(f)
    if flag and _exposed(f, flag):
        candidates.add(flag)
    if f.cpu_mode in _PASSTHROUGH_MODES and not is_tcg(f):
        candidates.update(f.host_virt_extensions)
    if is_tcg(f) and f.cpu_mode in ("host-model", "maximum"):
        candidates.add("svm")
    shown = sorted(n for n in candidates if f.cpu_features.get(n) not in _OFF)
    if shown:
        b.add(HIDE, f"hide {' and '.join(shown)} from the guest (feature policy 'disable')",
              virsh("edit", f.name, uri=f.uri) + "  # "
              + " ".join(f"<feature policy='disable' name='{n}'/>" for n in shown),
              ["NV-V01"], [domxml.SetFeaturePolicy(n, "disable") for n in shown])  # fmt: skip
    _state(b, opts)
    return b.plan()


def restore_change(before: str, seq: int, what: str) -> LibvirtChange:
    """The single change of `undo`: define the journaled previous definition again."""
    return LibvirtChange(
        action=RESTORE,
        codes=(),
        command="virsh define FILE  # FILE: the 'before' of journal entry "
        f"#{seq} (nestvirt history)",
        summary=f"restore the definition from before change #{seq} ({what})",
        needs_stop=True,
        edits=(domxml.ReplaceAll(before),),
    )


def plan_with_state(plan: Plan, facts: LibvirtVmFacts, options: PlanOptions) -> Plan:
    """Add managed-save / stop / start changes to a plan built elsewhere (undo)."""
    b = _Builder(facts, ())
    b.changes.extend(c for c in plan.changes if isinstance(c, LibvirtChange))
    b.notes.extend(plan.notes)
    _state(b, options)
    return b.plan()


def edits_of(plan: Plan) -> list[Edit]:
    return [e for c in plan.changes if isinstance(c, LibvirtChange) for e in c.edits]


def remaining_definition_changes(plan: Plan) -> list[Change]:
    """The changes of a re-built plan that touch the definition (verification)."""
    return [c for c in plan.changes if c.action in DEFINITION_ACTIONS]
