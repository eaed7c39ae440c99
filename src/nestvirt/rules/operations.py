"""Operation rules NV-O01…NV-O04 (docs/rules.md): is this operation safe for this VM now?

Pure functions of `OperationFacts`, one per code and platform: the libvirt rules
(`Platform.LIBVIRT`: KVM or TCG domains) and the Hyper-V rules
(`Platform.HYPERV`) are registered in the one registry (`rules.rules_of`) under
the same codes and names, and share the pure helpers below; `judge()` runs the
ones for a platform. The preflight command (`nestvirt.preflight`) and the
libvirt hook (`nestvirt.guard`) both call `judge()`, so they cannot disagree.
A Hyper-V rule's fix is a nestvirt command (`nestvirt enable VM --hyperv HOST
…`, quoted by nestvirt.commands); the cmdlets it runs are the plan's
(nestvirt.plan_hyperv).

Standard library only, and cheap to import: the libvirt hook imports this.

Decision table, as implemented (op = migrate, save, restore, snapshot-revert,
memory-resize; "judged" = the VM exposes vmx/svm and the user did not assert
that no nested guests run: nestvirt cannot see inside a VM):

  any platform
    VM does not expose vmx/svm ................................ safe (info)
    --no-nested-guests ........ safe (info); not Hyper-V memory-resize (below)
    migrate, VM not running ......................... safe (offline move, info)
    save, VM not running .................... safe, nothing to save (info)
    snapshot-revert, VM not running ........ safe (warning: a snapshot taken
                                   while it ran resumes vCPU state, see restore)
    memory-resize, VM not running ............................. safe (info)
  KVM (domain type kvm), judged migrate/save/restore/snapshot-revert
  (restore: always judged, an image holds a running VM)
    KVM_CAP_NESTED_STATE > 0, Intel host ...................... safe (info)
    KVM_CAP_NESTED_STATE > 0, AMD or Hygon host ....... UNSAFE (kernel docs)
    KVM_CAP_NESTED_STATE > 0, other/unknown vendor ............. UNSAFE
    KVM_CAP_NESTED_STATE = 0 (any vendor) ......................... UNSAFE
    capability unknown (remote URI, /dev/kvm unreadable) .......... UNSAFE
  TCG (domain type qemu), judged migrate/save/restore/snapshot-revert
    any capability, any vendor (the KVM capability does not apply) . UNSAFE
  KVM or TCG, judged memory-resize of a running VM
    ...................... safe (warning: shrinking can starve nested guests)
  Hyper-V, judged (VM running; restore: always)
    migrate ....................................................... UNSAFE
    save, restore, snapshot-revert, VM version >= 8.0 and host build
      not below 14361 ........................... safe (warning: Microsoft
                                       lifted it in builds 14361+)
    save, restore, snapshot-revert, VM version < 8.0 or unknown, or a
      preview host (10565 <= build < 14361: the preview page) ... UNSAFE
    (rows and sources: nestvirt.rules.hyperv_table, `nestvirt explain NV-O02`)
    memory-resize (even with --no-nested-guests) .................. UNSAFE

When whether the VM exposes the extensions could not be told (`exposes` is
Unknown), every UNSAFE above becomes a warning that says so: missing evidence
is never an error (docs/rules.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from nestvirt.commands import nestvirt, quote, virsh
from nestvirt.model import Finding, Severity, Unknown
from nestvirt.rules import Check, Hit, Platform, Rule, Target, rules_of
from nestvirt.rules.hyperv_table import LIFTED_BUILD, LIFTED_VERSION, preview_limits, versioned
from nestvirt.vocabulary import vendor_key


class Operation(StrEnum):
    MIGRATE = "migrate"
    SAVE = "save"
    RESTORE = "restore"
    SNAPSHOT_REVERT = "snapshot-revert"
    MEMORY_RESIZE = "memory-resize"


# VM configuration version from which Microsoft's notes say save/restore and
# applying checkpoints work with nesting enabled (Insider builds 14361+).
HYPERV_LIFTED_VERSION = LIFTED_VERSION  # one table: nestvirt.rules.hyperv_table

NOT_READ = Unknown("not read")

KERNEL_DOC = (
    'Linux Documentation/virt/kvm/x86/running-nested-guests.rst, "Live migration with nested KVM"'
)


@dataclass(frozen=True, slots=True)
class OperationFacts:
    """What the operation rules read: built by preflight (backend facts) or the guard (XML)."""

    vm: str
    operation: Operation
    exposes: bool | Unknown  # the VM's CPU carries vmx/svm
    exposure: str = ""  # why it does (not), one phrase, e.g. "requires svm"
    running: bool = True  # live vCPU state exists (running or paused); restore: always
    state: str = "running"
    assume_no_nested_guests: bool = False
    # libvirt / KVM
    # "kvm"; "tcg" for <domain type='qemu'>; "hyperv" (kept for callers: the platform
    # passed to judge_facts decides which rules run, not this field)
    accel: str = "kvm"
    nested_state_cap: int | Unknown = NOT_READ  # KVM_CAP_NESTED_STATE of the host
    host_vendor: str | Unknown = NOT_READ  # "intel" | "amd" | "hygon" | other
    host: str = "this host"  # whose capability and vendor these are (Hyper-V: the host name)
    # Hyper-V
    config_version: tuple[int, ...] | Unknown | None = None
    host_build: int | Unknown | None = None  # the Hyper-V host's Windows build


def normalize_vendor(vendor: str | None) -> str | Unknown:
    """CPUID/libvirt/WMI vendor names → "intel", "amd", "hygon" or the lower-cased name."""
    if not vendor:
        return Unknown("CPU vendor not known")
    return vendor_key(vendor)


def parse_operation(text: str) -> Operation:
    from nestvirt.errors import UsageError

    try:
        return Operation(text.strip().lower())
    except ValueError:
        choices = ", ".join(o.value for o in Operation)
        raise UsageError(f"unknown operation {text!r}: choose one of {choices}") from None


# ---------------------------------------------------------------------------
# Registration: every rule is registered in the one registry (rules_of) for its
# platform; `judge` runs this module's own rules so the libvirt hook does not
# import every rule module.

_RULES: list[Rule] = []
_OPERATIONS: dict[str, tuple[Operation, ...]] = {}

OperationRule = Callable[[str, str, tuple[Operation, ...]], Callable[[Check], Check]]


def operation_rules(platform: Platform) -> OperationRule:
    """`@rules_of(Target.OPERATION, platform)` that also says which operations a code judges."""
    register_in_registry = rules_of(Target.OPERATION, platform)

    def decorator(
        code: str, name: str, operations: tuple[Operation, ...]
    ) -> Callable[[Check], Check]:
        def register(check: Check) -> Check:
            register_in_registry(code, name, Severity.ERROR)(check)
            doc = check.__doc__ or ""
            _RULES.append(Rule(code, name, Severity.ERROR, Target.OPERATION, platform, check, doc))
            if _OPERATIONS.setdefault(code, operations) != operations:
                raise ValueError(f"{code}: judges other operations on {platform}")
            return check

        return register

    return decorator


libvirt_rule = operation_rules(Platform.LIBVIRT)  # KVM and TCG domains
hyperv_rule = operation_rules(Platform.HYPERV)


def judge_facts(facts: OperationFacts, platform: Platform) -> list[Finding]:
    """Every operation rule for `platform` over `facts`, in code order."""
    found: list[Finding] = []
    for r in _RULES:
        if r.platform == platform and facts.operation in _OPERATIONS[r.code]:
            found.extend(r.findings(facts))
    if isinstance(facts.exposes, Unknown):
        found = [
            replace(f, severity=Severity.WARNING) if f.severity is Severity.ERROR else f
            for f in found
        ]
    return found


def judge(
    operation: Operation | str,
    *,
    platform: Platform,
    exposes: bool | Unknown,
    running: bool,
    nested_state_cap: int | Unknown = NOT_READ,
    host_vendor: str | Unknown = NOT_READ,
    assume_no_nested_guests: bool = False,
    vm: str = "VM",
    state: str | None = None,
    accel: str = "kvm",
    config_version: tuple[int, ...] | Unknown | None = None,
    exposure: str = "",
    host: str = "this host",
) -> list[Finding]:
    """The findings for one operation on one VM; unsafe exactly when one is an error."""
    facts = OperationFacts(
        vm=vm,
        operation=Operation(operation),
        exposes=exposes,
        exposure=exposure,
        running=running,
        state=state or ("running" if running else "off"),
        assume_no_nested_guests=assume_no_nested_guests,
        accel=accel,
        nested_state_cap=nested_state_cap,
        host_vendor=host_vendor
        if isinstance(host_vendor, Unknown)
        else normalize_vendor(host_vendor),
        host=host,
        config_version=config_version,
    )
    return judge_facts(facts, platform)


def is_safe(findings: list[Finding]) -> bool:
    return not any(f.severity is Severity.ERROR for f in findings)


# ---------------------------------------------------------------------------
# Shared pure helpers (every platform)


def _what(f: OperationFacts) -> str:
    return {
        Operation.MIGRATE: "a live migration",
        Operation.SAVE: "a save",
        Operation.RESTORE: "a restore of a saved image",
        Operation.SNAPSHOT_REVERT: "a snapshot revert",
        Operation.MEMORY_RESIZE: "a memory resize",
    }[f.operation]


def _not_exposed(f: OperationFacts) -> Iterator[Hit]:
    """A VM that does not expose vmx/svm: one info hit, nothing to judge."""
    if f.exposes is False:
        why = f" ({f.exposure})" if f.exposure else ""
        yield Hit(
            f"{f.vm} does not expose vmx/svm{why}: it cannot run nested guests, so "
            f"{f.operation} is not affected by nesting",
            severity=Severity.INFO,
        )


def _assumed(f: OperationFacts) -> Iterator[Hit]:
    """--no-nested-guests: one info hit, nothing to judge (where nested guests are the risk)."""
    if f.assume_no_nested_guests:
        yield Hit(
            f"{f.vm} exposes vmx/svm, but you asserted that no nested guests run in it: "
            f"{_what(f)} of a VM merely configured for nesting is expected to work",
            severity=Severity.INFO,
        )


def _unknown_prefix(f: OperationFacts) -> str:
    if isinstance(f.exposes, Unknown):
        return f"if {f.vm} exposes vmx/svm (could not tell: {f.exposes.reason}): "
    return ""


def _inside(f: OperationFacts) -> str:
    return (
        f"{f.vm} exposes vmx/svm{f' ({f.exposure})' if f.exposure else ''}; nestvirt cannot see "
        "inside it, so it judges as if nested guests run"
    )


def _offline_migration(f: OperationFacts) -> Iterator[Hit]:
    if not f.running:
        yield Hit(
            f"{f.vm} is {f.state}: an offline migration moves only its definition; there is "
            "no vCPU state to carry",
            severity=Severity.INFO,
        )


def _nothing_to_save(f: OperationFacts) -> Iterator[Hit]:
    if f.operation is Operation.SAVE and not f.running:
        yield Hit(
            f"{f.vm} is {f.state}: there is nothing to save (only a running or paused VM can "
            "be saved); safe, but meaningless",
            severity=Severity.INFO,
        )


def _revert_while_off(f: OperationFacts) -> Iterator[Hit]:
    if not f.running:
        yield Hit(
            f"{f.vm} is {f.state}: reverting to a snapshot taken while it was off is safe; "
            "one taken while it ran resumes saved vCPU state, with the limits of a restore "
            "(`nestvirt preflight VM restore`)",
            severity=Severity.WARNING,
        )


def _resize_while_off(f: OperationFacts) -> Iterator[Hit]:
    if not f.running:
        yield Hit(
            f"{f.vm} is {f.state}: its memory is set in its definition and takes effect at "
            "the next start",
            severity=Severity.INFO,
        )


Step = Callable[[OperationFacts], Iterator[Hit]]


def _first(f: OperationFacts, *steps: Step) -> Iterator[Hit]:
    """The hits of the first step that has any: a rule's decision, case by case."""
    for step in steps:
        hits = list(step(f))
        if hits:
            yield from hits
            return


# ---------------------------------------------------------------------------
# libvirt (KVM and TCG domains)


def _kvm_nested_state(f: OperationFacts, fix: str) -> Iterator[Hit]:
    """KVM: the vCPU state of an L1 running L2 guests must be carried across the operation."""
    pre, what = _unknown_prefix(f), _what(f)
    cap = f.nested_state_cap
    if isinstance(cap, Unknown):
        yield Hit(
            f"{pre}{_inside(f)}; whether {f.host} can carry nested vCPU state is unknown "
            f"(KVM_CAP_NESTED_STATE: {cap.reason})",
            fix,
        )
        return
    if cap <= 0:
        yield Hit(
            f"{pre}{_inside(f)}; the kernel of {f.host} cannot save nested vCPU state "
            f"(KVM_CAP_NESTED_STATE=0): {what} of a VM running nested guests is undefined "
            "behaviour (kernel BUG, oops or panic; the VM must be restarted)",
            fix,
        )
        return
    vendor = f.host_vendor
    if vendor in ("amd", "hygon"):
        yield Hit(
            f"{pre}{_inside(f)}; {f.host} reports KVM_CAP_NESTED_STATE={cap} but is AMD: the "
            "kernel documentation says an L1 that started nested guests should not be migrated "
            "or saved on AMD until they shut down",
            fix,
        )
        return
    if vendor != "intel":
        shown = vendor.reason if isinstance(vendor, Unknown) else vendor
        yield Hit(
            f"{pre}{_inside(f)}; {f.host} reports KVM_CAP_NESTED_STATE={cap} but its CPU vendor "
            f"({shown}) is not Intel, the only vendor the kernel documentation says this works on",
            fix,
        )
        return
    yield Hit(
        f"{f.host} carries nested vCPU state (KVM_CAP_NESTED_STATE={cap}, Intel): {what} of "
        f"{f.vm} keeps its nested guests (the kernel documentation: Linux 5.3+, QEMU 4.2+)",
        severity=Severity.INFO,
    )


def _tcg_nested_state(f: OperationFacts, fix: str) -> Iterator[Hit]:
    """TCG: QEMU emulates svm itself; no source promises the nested state survives."""
    yield Hit(
        f"{_unknown_prefix(f)}{_inside(f)}. Under TCG QEMU emulates svm itself, so the host's "
        f"KVM_CAP_NESTED_STATE does not apply, and no QEMU or kernel source promises that "
        f"a running nested guest survives {_what(f)}",
        fix,
    )


# How a domain's accelerator carries nested vCPU state (libvirt's <domain type>): TCG
# emulates it, anything else is KVM and its KVM_CAP_NESTED_STATE.
_NESTED_STATE: dict[str, Callable[[OperationFacts, str], Iterator[Hit]]] = {
    "tcg": _tcg_nested_state
}


def _nested_state(f: OperationFacts, fix: str) -> Iterator[Hit]:
    yield from _NESTED_STATE.get(f.accel, _kvm_nested_state)(f, fix)


@libvirt_rule("NV-O01", "live-migration-unsafe", (Operation.MIGRATE,))
def live_migration_unsafe(f: OperationFacts) -> Iterator[Hit]:
    """Live-migrating a VM that runs nested guests can crash it or them.

    ## What it checks
    `migrate` of a running libvirt domain that exposes vmx/svm (judged as if
    it runs nested guests: nestvirt cannot see inside; `--no-nested-guests`
    asserts none run). KVM: the host must carry nested vCPU state — the real
    `KVM_CAP_NESTED_STATE` of the host the VM runs on, read through
    `/dev/kvm` (never guessed from versions) — and be Intel: the kernel
    documentation says not to migrate an L1 running L2 guests on AMD. For a
    remote libvirt URI the capability of that host cannot be read from here:
    it is Unknown and the operation is judged unsafe (run preflight on that
    host). TCG domains (`type='qemu'`): QEMU emulates svm, the KVM capability
    does not apply and no source promises the nested state survives: unsafe.
    A VM that is not running is moved offline: safe.

    ## Why it matters
    Without nested state the L2 guests' vCPU state is lost in flight: the
    kernel documentation lists a kernel BUG, an oops or a panic, and the
    migrated L1 "can no longer be considered stable or secure".

    ## Example
    `virsh migrate --live L1 qemu+ssh://dst/system` on a host whose
    `KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE)` returns 0, or on an AMD host.
    The same check covers the destination: `nestvirt guard install` there
    refuses the incoming migration (libvirt's `migrate begin` hook).

    ## Fix
    Shut the nested guests down inside the VM first, then migrate (and say so:
    `--no-nested-guests`); or shut the VM down and move it offline
    (`virsh migrate --offline --persistent`, then start it on the destination).

    ## Sources
    Linux `Documentation/virt/kvm/x86/running-nested-guests.rst`, "Live
    migration with nested KVM" (Intel: Linux 5.3 + QEMU 4.2; AMD: should not
    be migrated or saved while L2 runs; an L1 merely configured for nesting
    migrates normally),
    https://docs.kernel.org/virt/kvm/x86/running-nested-guests.html. QEMU
    `target/i386/machine.c` (nested state and TCG svm state subsections).
    """
    fix = (
        f"shut the nested guests down inside {f.vm}, then migrate with --no-nested-guests "
        f"asserted; or shut {f.vm} down and "
        f"`{virsh('migrate', f.vm, '--offline', '--persistent', 'DEST')}`"
    )
    yield from _first(
        f, _not_exposed, _assumed, _offline_migration, lambda f: _nested_state(f, fix)
    )


@libvirt_rule("NV-O02", "save-restore-unsafe", (Operation.SAVE, Operation.RESTORE))
def save_restore_unsafe(f: OperationFacts) -> Iterator[Hit]:
    """Saving a VM that runs nested guests, or restoring such an image, can crash it.

    ## What it checks
    `save` of a running (or paused) libvirt domain, and `restore` of a saved
    image (which always holds a running VM), for a VM that exposes vmx/svm.
    KVM: the same test as NV-O01 — the real `KVM_CAP_NESTED_STATE` of the
    host (the one saving, the one restoring) and an Intel CPU; TCG: unsafe
    (the KVM capability does not apply). Saving a VM that is not running is
    meaningless (libvirt refuses; there is nothing to save): safe, said as
    info.

    ## Why it matters
    A save image without the nested vCPU state resumes the L1 in the middle
    of an L2 it no longer knows: the kernel documentation calls this
    undefined behaviour (BUG, oops, panic) and says the VM must be restarted.

    ## Example
    `virsh save L1 /var/tmp/l1.sav` then `virsh restore /var/tmp/l1.sav`, or
    `virsh managedsave L1` + `virsh start L1`, on a host with
    `KVM_CAP_NESTED_STATE` = 0.

    ## Fix
    Shut the nested guests down first (then `--no-nested-guests`), or shut
    the VM down instead of saving it. For an image already saved: boot the VM
    fresh (`virsh managedsave-remove VM`; for `virsh save` files, define and
    start the VM instead of restoring).

    ## Sources
    Linux `running-nested-guests.rst` ("migrated, saved, or loaded";
    AMD: "should no longer be migrated or saved"),
    https://docs.kernel.org/virt/kvm/x86/running-nested-guests.html; libvirt
    "Hooks for specific system management" (`restore begin`),
    https://libvirt.org/hooks.html.
    """
    if f.operation is Operation.SAVE:
        fix = f"shut the nested guests down inside {f.vm} first, or shut {f.vm} down instead"
    else:
        fix = (
            f"boot {f.vm} fresh instead of restoring (`{virsh('managedsave-remove', f.vm)}`, "
            "or define and start it without the saved file)"
        )
    yield from _first(f, _not_exposed, _assumed, _nothing_to_save, lambda f: _nested_state(f, fix))


@libvirt_rule("NV-O03", "checkpoint-apply-unsafe", (Operation.SNAPSHOT_REVERT,))
def checkpoint_apply_unsafe(f: OperationFacts) -> Iterator[Hit]:
    """Reverting a running VM to a snapshot can crash its nested guests.

    ## What it checks
    `snapshot-revert` of a running libvirt domain that exposes vmx/svm.
    Reverting a running VM loads saved vCPU state in place: KVM needs the same
    nested state support as a restore (NV-O02: `KVM_CAP_NESTED_STATE`, Intel;
    TCG: unsafe). A VM that is off: safe, with a warning that a snapshot taken
    while it ran carries vCPU state too.

    ## Why it matters
    The nested guests running now are dropped without a shutdown, and the
    state loaded from the snapshot may itself lack the nested vCPU state.

    ## Example
    `virsh snapshot-revert L1 before-upgrade` while L1 runs KVM guests.

    ## Fix
    Shut the VM down first and revert to a snapshot taken while it was off,
    or shut the nested guests down (then `--no-nested-guests`).

    ## Sources
    Linux `running-nested-guests.rst` (saved/loaded state),
    https://docs.kernel.org/virt/kvm/x86/running-nested-guests.html. libvirt
    hooks (https://libvirt.org/hooks.html): none runs on snapshot revert, so
    the guard cannot refuse it.
    """
    fix = f"shut {f.vm} down and revert to a snapshot taken while it was off"
    yield from _first(f, _not_exposed, _assumed, _revert_while_off, lambda f: _nested_state(f, fix))


@libvirt_rule("NV-O04", "memory-resize-unsafe", (Operation.MEMORY_RESIZE,))
def memory_resize_unsafe(f: OperationFacts) -> Iterator[Hit]:
    """Changing the memory of a running VM that runs a hypervisor fails or starves its guests.

    ## What it checks
    `memory-resize` of a running libvirt domain that exposes vmx/svm. The
    resize (balloon, `virsh setmem`; hot-unplug) works under KVM and TCG,
    but takes memory from the L1's OS, which holds its nested guests' memory:
    warning (safe). An off VM: safe.

    ## Why it matters
    Shrinking an L1 running nested guests can push it to swap or to OOM-kill
    a nested guest.

    ## Example
    `virsh setmem L1 2G --live`.

    ## Fix
    Only grow it, or shut the nested guests down first; or stop the VM,
    change its memory, start it. `nestvirt enable VM` pins currentMemory to
    memory (NV-V02).

    ## Sources
    libvirt `virsh setmem` (balloon), https://libvirt.org/manpages/virsh.html#setmem.
    """
    yield from _first(f, _not_exposed, _assumed, _resize_while_off, _kvm_resize)


def _kvm_resize(f: OperationFacts) -> Iterator[Hit]:
    yield Hit(
        f"{_unknown_prefix(f)}{_inside(f)}: the resize works, but shrinking it takes memory "
        "from the L1 that holds its nested guests' memory (swap, OOM kills)",
        f"only grow {f.vm}'s memory, or shut its nested guests down first",
        severity=Severity.WARNING,
    )


# ---------------------------------------------------------------------------
# Hyper-V


def _hyperv_lifted(f: OperationFacts, lifted: str, fix: str) -> Iterator[Hit]:
    """Hyper-V save/restore and checkpoint-apply: failed in the preview, lifted for
    build 14361 / VM version 8.0 (nestvirt.rules.hyperv_table)."""
    pre, what = _unknown_prefix(f), _what(f)
    version = f.config_version
    preview = (
        f"the Hyper-V nesting preview (build 10565) lists {what} as failing for a VM hosting VMs"
    )
    shown = ".".join(map(str, version)) if isinstance(version, tuple) else "unknown"
    limits = preview_limits(f.host_build, version if isinstance(version, tuple) else None)
    if limits is False:
        yield Hit(
            f"{pre}{_inside(f)}; {preview}, and Microsoft lifted it for VM configuration "
            f"version 8.0 (Insider builds {LIFTED_BUILD}+, June 2016: {lifted}); this VM is "
            f"version {shown}",
            fix,
            severity=Severity.WARNING,
        )
        return
    if isinstance(f.host_build, int) and f.host_build < LIFTED_BUILD:
        yield Hit(
            f"{pre}{_inside(f)}; {preview}, and this host runs preview build {f.host_build} "
            f"(Microsoft lifted it from build {LIFTED_BUILD}, VM version 8.0)",
            fix,
        )
        return
    yield Hit(
        f"{pre}{_inside(f)}; {preview}; Microsoft lifted it only for VM configuration version "
        f"8.0+ and this VM is version {shown}",
        fix,
    )


def hyperv_host_option(host: str) -> str:
    """`--hyperv HOST`: the host's name when the facts know it ("" is the Windows machine
    nestvirt runs on: `--hyperv ''`, which a following VM name cannot be taken for), else
    the placeholder HOST."""
    if host == "":
        return "--hyperv ''"
    if host == "this host":
        return "--hyperv HOST"
    return f"--hyperv {quote(host)}"


def _hyperv_enable(f: OperationFacts, *options: str) -> str:
    """`nestvirt enable --hyperv HOST OPTIONS VM`, every word quoted (nestvirt.commands)."""
    return nestvirt("enable", f.vm, hyperv_host_option(f.host), *options)


@hyperv_rule("NV-O01", "live-migration-unsafe", (Operation.MIGRATE,))
@versioned("NV-O01")
def live_migration_unsafe_hyperv(f: OperationFacts) -> Iterator[Hit]:
    """Live-migrating a VM that runs nested guests can crash it or them.

    ## What it checks
    Live migration of a running Hyper-V VM whose processor has
    `ExposeVirtualizationExtensions` on (judged as if it runs nested VMs:
    nestvirt cannot see inside; `--no-nested-guests` asserts none run):
    unsafe. A VM that is not running is moved offline: safe.

    ## Why it matters
    The Hyper-V nesting preview says a VM that hosts other VMs cannot be live
    migrated; Microsoft's pages still listed it in June 2016 and the GA page
    (Windows Server 2016 / Windows 10 1607) dropped the line without saying it
    works, so nestvirt keeps judging it unsafe.

    ## Example
    `Move-VM L1 HV02` while Hyper-V inside L1 runs VMs.

    ## Fix
    Shut the nested VMs down inside the VM first, then migrate (and say so:
    `nestvirt preflight VM migrate --hyperv HOST --no-nested-guests`); or stop
    the VM and move it while off.

    ## Sources
    The facts and the builds they hold for: docs/hyperv-facts.md#live-migration. Microsoft, "Windows
    Insider Preview: Nested Virtualization" (build 10565, October 2015),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 nesting page (builds 14361+),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md;
    the GA page (September 2016),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/4eb3e733990ca86f28620e23bf408ff71b879173/virtualization/hyperv_on_windows/user_guide/nesting.md;
    the Hyper-V TLFS, "Nested Virtualization" (live migration notifications for L1 hypervisors),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/nested-virtualization.
    """
    yield from _first(f, _not_exposed, _assumed, _offline_migration, _hyperv_migrate)


def _hyperv_migrate(f: OperationFacts) -> Iterator[Hit]:
    yield Hit(
        f"{_unknown_prefix(f)}{_inside(f)}; the Hyper-V nesting preview says a VM hosting "
        "other VMs cannot be live migrated (still listed in June 2016; the GA page dropped "
        "the line without saying it works)",
        f"shut the nested VMs down inside {f.vm} (then --no-nested-guests), or stop "
        f"{f.vm} and move it while off",
    )


@hyperv_rule("NV-O02", "save-restore-unsafe", (Operation.SAVE, Operation.RESTORE))
@versioned("NV-O02")
def save_restore_unsafe_hyperv(f: OperationFacts) -> Iterator[Hit]:
    """Saving a VM that runs nested guests, or restoring such an image, can crash it.

    ## What it checks
    Saving a running Hyper-V VM that exposes the virtualization extensions,
    and restoring (starting) a saved one. The preview said save/restore
    fails; Microsoft lifted that for VM configuration version 8.0 (builds
    14361+), so a version 8.0+ VM on such a host gets a warning (safe), an
    older or unknown one, or any VM on a preview host, an error. Saving a VM
    that is not running is meaningless (Hyper-V refuses; there is nothing to
    save): safe, said as info.

    ## Why it matters
    On a preview host, or with an older VM configuration version, the saved
    state of a VM running Hyper-V cannot be saved or started again.

    ## Example
    `Save-VM L1` then `Start-VM L1` on a build 10586 host.

    ## Fix
    Shut the nested VMs down first (then `--no-nested-guests`), or shut the
    VM down instead of saving it; an older VM: upgrade its configuration
    version (8.0+) with the VM off.

    ## Sources
    The facts and the builds they hold for: docs/hyperv-facts.md#save-and-restore. Microsoft,
    "Windows Insider Preview: Nested Virtualization" (build 10565),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 nesting page (builds 14361+, VM version 8.0: "You can now Save and Start
    nested-enabled VM's"),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md.
    """
    if f.operation is Operation.SAVE:
        fix = f"shut the nested guests down inside {f.vm} first, or shut {f.vm} down instead"
    else:  # Hyper-V's words, not libvirt's: there is no saved file to define without
        fix = (
            f"boot {f.vm} fresh instead of restoring: delete its saved state (Hyper-V "
            "Manager: Delete Saved State), then start it"
        )
    lifted = '"You can now Save and Start nested-enabled VMs"'
    yield from _first(
        f, _not_exposed, _assumed, _nothing_to_save, lambda f: _hyperv_lifted(f, lifted, fix)
    )


@hyperv_rule("NV-O03", "checkpoint-apply-unsafe", (Operation.SNAPSHOT_REVERT,))
@versioned("NV-O03")
def checkpoint_apply_unsafe_hyperv(f: OperationFacts) -> Iterator[Hit]:
    """Reverting a running VM to a snapshot can crash its nested guests.

    ## What it checks
    Applying a checkpoint to a running Hyper-V VM that exposes the
    virtualization extensions. The preview said this fails; Microsoft lifted
    that for VM configuration version 8.0 (builds 14361+): warning for 8.0+
    on such a host, error otherwise. A VM that is off: safe, with a warning
    that a checkpoint taken while it ran carries vCPU state too.

    ## Why it matters
    The nested VMs running now are dropped without a shutdown, and on a
    preview host or an older VM the apply fails.

    ## Example
    `Restore-VMSnapshot -VMName L1 -Name before-upgrade` while L1 runs VMs.

    ## Fix
    Shut the VM down first and apply a checkpoint taken while it was off, or
    shut the nested VMs down (then `--no-nested-guests`).

    ## Sources
    The facts and the builds they hold for: docs/hyperv-facts.md#checkpoints. Microsoft, "Windows
    Insider Preview: Nested Virtualization" (build 10565),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    the June 2016 nesting page (builds 14361+: "Creating and applying checkpoints now work for VM's
    with nested virtualization enabled"),
    https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/nesting.md.
    """
    fix = f"shut {f.vm} down and revert to a snapshot taken while it was off"
    lifted = '"Creating and applying checkpoints now work for VM\'s with nested virtualization"'
    yield from _first(
        f, _not_exposed, _assumed, _revert_while_off, lambda f: _hyperv_lifted(f, lifted, fix)
    )


@hyperv_rule("NV-O04", "memory-resize-unsafe", (Operation.MEMORY_RESIZE,))
@versioned("NV-O04")
def memory_resize_unsafe_hyperv(f: OperationFacts) -> Iterator[Hit]:
    """Changing the memory of a running VM that runs a hypervisor fails or starves its guests.

    ## What it checks
    Resizing the memory of a running Hyper-V VM that exposes the
    virtualization extensions. Microsoft (the preview and today's page) says
    that while Hyper-V runs inside a VM its memory cannot change at run time
    and attempts fail — this depends on the hypervisor running inside, not on
    nested guests, so `--no-nested-guests` does not lift it: error. An off
    VM: safe.

    ## Why it matters
    The resize fails.

    ## Example
    Raising the startup memory of a running VM that runs Hyper-V inside.

    ## Fix
    Stop the VM, change its memory, start it:
    `nestvirt enable VM --hyperv HOST --memory SIZE --stop` does the three
    (the plan's cmdlets: stop, set the startup memory, start again), and sets
    the other nesting settings while the VM is off.

    ## Sources
    The facts and the builds they hold for: docs/hyperv-facts.md#runtime-memory-resize. Microsoft,
    "Windows Insider Preview: Nested Virtualization" (build 10565),
    https://techcommunity.microsoft.com/t5/virtualization/windows-insider-preview-nested-virtualization/ba-p/382256;
    "What is Nested Virtualization for Hyper-V?" ("Dynamic Memory and Runtime Memory Resize": "the
    virtual machine must be turned off to adjust its memory"),
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization.
    """
    yield from _first(f, _not_exposed, _resize_while_off, _hyperv_resize)


def _hyperv_resize(f: OperationFacts) -> Iterator[Hit]:
    asserted = (
        " (asserting no nested guests does not help: the limit applies while Hyper-V runs "
        "inside the VM)"
        if f.assume_no_nested_guests
        else ""
    )
    yield Hit(
        f"{_unknown_prefix(f)}{f.vm} exposes the virtualization extensions; Microsoft says "
        "that while Hyper-V runs inside a VM its memory cannot change at run time and the "
        f"attempt fails{asserted}",
        _hyperv_enable(f, "--memory", "SIZE", "--stop"),
    )


__all__ = [
    "HYPERV_LIFTED_VERSION",
    "Operation",
    "OperationFacts",
    "hyperv_host_option",
    "is_safe",
    "judge",
    "judge_facts",
    "normalize_vendor",
    "operation_rules",
    "parse_operation",
]
