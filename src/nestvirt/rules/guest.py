"""Guest-side rules NV-G01…NV-G13: this machine is a guest; name its parent and the switch there.

Pure functions of GuestFacts (facts/guest.py). `parent_of()` decides which
parent runs this machine, from ordered evidence: WSL2's kernel, a hosted CI
runner, the cloud's or the desktop hypervisor's DMI identity (it names the
product whose owner must act), then the CPUID signature (it names the engine).
Exactly one NV-G rule fires for a guest; none for a machine that is not one.
Each says whether the parent already passes VT-x/AMD-V through (info) or not
(warning) and gives that parent's fix as a command or setting to paste.

Standard library only: `python -m nestvirt.probe` and `python -m nestvirt.guestside`
run these rules inside minimal lab guests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from nestvirt.facts.guest import GuestFacts, is_wsl2
from nestvirt.model import Finding, Severity
from nestvirt.probe.result import HypervisorInfo
from nestvirt.rules import Hit, Platform, Target, rules_of, run

guest_rule = rules_of(Target.GUEST, Platform.LINUX)

# Azure's documented chassis asset tag for every Azure VM.
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"


@dataclass(frozen=True, slots=True)
class Parent:
    """Who runs this machine, as the NV-G rules name it and where its switch is."""

    kind: str  # hyperv wsl2 kvm proxmox vmware virtualbox xen tcg aws gcp azure ci unknown
    name: str  # for people: "Amazon EC2", "VMware", …
    evidence: str  # one line: what named it
    engine: str | None = None  # what CPUID names, when it is something else


def _dmi(g: GuestFacts, key: str) -> str:
    return g.dmi.get(key, "")


def _engine(g: GuestFacts) -> str | None:
    return g.hypervisor.name if isinstance(g.hypervisor, HypervisorInfo) else None


def _signature(g: GuestFacts) -> str | None:
    return g.hypervisor.signature if isinstance(g.hypervisor, HypervisorInfo) else None


def _dmi_parent(g: GuestFacts) -> tuple[str, str, str] | None:
    """(kind, name, evidence) from the firmware's identity: it names the product."""
    vendor, product = _dmi(g, "sys_vendor"), _dmi(g, "product_name")
    tag = _dmi(g, "chassis_asset_tag")
    bios = _dmi(g, "bios_version")
    if "Amazon EC2" in (vendor, product) or product.startswith("Amazon EC2"):
        return "aws", "Amazon EC2", f"DMI {vendor!r} / {product!r}"
    if bios.lower().endswith(".amazon"):  # Xen-based EC2 (before Nitro): bios_version 4.2.amazon
        return "aws", "Amazon EC2", f"DMI bios_version {bios!r} (Xen-based EC2)"
    if product.startswith("Google Compute Engine") or vendor == "Google":
        return "gcp", "Google Compute Engine", f"DMI {vendor!r} / {product!r}"
    if tag == AZURE_ASSET_TAG:
        return "azure", "Microsoft Azure", f"DMI chassis asset tag {tag!r} (Azure's)"
    if any("proxmox" in v.lower() for v in g.dmi.values()):
        return "proxmox", "Proxmox VE", "DMI names Proxmox"
    if vendor.startswith("VMware") or product.startswith("VMware"):
        return "vmware", "VMware", f"DMI {vendor!r} / {product!r}"
    innotek = vendor in ("innotek GmbH", "Oracle Corporation")
    if (innotek and "VirtualBox" in product) or product == "VirtualBox":
        return "virtualbox", "VirtualBox", f"DMI {vendor!r} / {product!r}"
    if vendor.startswith("Xen") or product.startswith("HVM domU"):
        return "xen", "Xen", f"DMI {vendor!r} / {product!r}"
    if vendor.startswith("Microsoft") and product == "Virtual Machine":
        return "hyperv", "Microsoft Hyper-V", f"DMI {vendor!r} / {product!r}"
    return None


_ENGINE_KINDS = (  # CPUID names (probe/cpuid.py SIGNATURES) -> parent kind
    ("QEMU (TCG)", "tcg", "QEMU TCG (emulation)"),
    ("KVM", "kvm", "KVM/QEMU"),
    ("VMware", "vmware", "VMware"),
    ("VirtualBox", "virtualbox", "VirtualBox"),
    ("Xen", "xen", "Xen"),
    ("Hyper-V", "hyperv", "Microsoft Hyper-V"),
    ("QEMU", "kvm", "KVM/QEMU"),
)


def parent_of(g: GuestFacts) -> Parent | None:
    """Who runs this machine; None when it is not a guest."""
    if not g.is_guest:
        return None
    engine = _engine(g)
    signature = _signature(g)
    seen = f"CPUID {signature!r}" if signature else f"detected {engine or 'a hypervisor'}"
    if is_wsl2(g.kernel_release):
        return Parent("wsl2", "WSL2 (Windows)", f"kernel {g.kernel_release!r}", engine)
    if g.ci.get("GITHUB_ACTIONS") == "true" and g.ci.get("RUNNER_ENVIRONMENT") == "github-hosted":
        return Parent("ci", "a GitHub-hosted Actions runner", "RUNNER_ENVIRONMENT=github-hosted",
                      engine)  # fmt: skip
    dmi = _dmi_parent(g)
    if dmi is not None:
        kind, name, evidence = dmi
        return Parent(kind, name, f"{evidence}; {seen}", engine)
    for needle, kind, name in _ENGINE_KINDS:
        if engine and needle in engine:
            if kind == "kvm" and (g.cpu_model or "").startswith("Common KVM processor"):
                return Parent("proxmox", "Proxmox VE or another QEMU/KVM host",
                              f"{seen}; CPU model {g.cpu_model!r} (kvm64, Proxmox's old default)",
                              engine)  # fmt: skip
            return Parent(kind, name, seen, engine)
    return Parent("unknown", engine or "an unidentified hypervisor", seen, engine)


def _state(g: GuestFacts, parent: Parent) -> tuple[str, Severity]:
    """What this machine got from the parent, and how much it matters."""
    mismatch = ""
    if parent.engine == "QEMU (TCG)" and parent.kind != "tcg":
        mismatch = (
            f" — but CPUID says QEMU TCG: the firmware claims {parent.name} while the CPU is "
            "emulated (a copied identity, e.g. QEMU -smbios)"
        )
    if g.nesting_exposed:
        ext = "/".join(g.cpu_virt_flags)
        return f"it passes {ext} through: nesting is on{mismatch}", Severity.INFO
    if g.kvm_runs_guests:
        return (
            f"it does not pass vmx/svm through (KVM here runs guests through "
            f"{g.kvm_module or 'a module'} without them, so VMs started here get none){mismatch}",
            Severity.WARNING,
        )
    return f"it does not pass vmx/svm through{mismatch}", Severity.WARNING


def _hit(g: GuestFacts, kind: str, fix: str, extra: str = "") -> Iterator[Hit]:
    parent = parent_of(g)
    if parent is None or parent.kind != kind:
        return
    state, severity = _state(g, parent)
    text = f"this machine is a guest of {parent.name} ({parent.evidence}): {state}"
    yield Hit(text + (f"; {extra}" if extra else ""), fix, severity=severity)


@guest_rule("NV-G01", "parent-hyperv", Severity.WARNING)
def parent_hyperv(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a Hyper-V VM: the Hyper-V host must expose the extensions.

    ## What it checks
    The parent named by DMI (`Microsoft Corporation` / `Virtual Machine`) or
    by the CPUID signature `Microsoft Hv` (weak on its own: QEMU with Hyper-V
    enlightenments shows it too, with `KVMKVMKVM` at 0x40000100 — then the
    KVM rule fires instead). Azure and WSL2 have their own rules.

    ## Why it matters
    Hyper-V hides VT-x/AMD-V from its VMs unless `ExposeVirtualizationExtensions`
    is set on the VM's processor, which only the host's administrator can do,
    with the VM off.

    ## Example
    `dmi sys_vendor = Microsoft Corporation`, `product_name = Virtual Machine`,
    no `vmx` in `/proc/cpuinfo`.

    ## Fix
    On the Hyper-V host, VM off:
    `Stop-VM -Name NAME;
    Set-VMProcessor -VMName NAME -ExposeVirtualizationExtensions $true; Start-VM -Name NAME`
    — or `nestvirt enable --hyperv HOST NAME`, which also checks the rest:
    host build ≥ 14393 (Windows 10 1607 / Server 2016) for Intel, ≥ 20348
    (Windows 11 / Server 2022) for AMD, VM configuration version ≥ 8.0 (Intel)
    / 9.3 (AMD), static memory, MAC spoofing for nested networking
    (NV-H20…H26, NV-V01…V08: `nestvirt status --hyperv HOST NAME`).

    ## Sources
    Microsoft Learn, "What is nested virtualization" and "Run Hyper-V in a
    virtual machine with nested virtualization"
    (https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization,
    https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/enable-nested-virtualization);
    Microsoft's Enable-NestedVm.ps1
    (https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/main/hyperv-tools/Nested/Enable-NestedVm.ps1);
    systemd `src/basic/virt.c` (Microsoft Hv ambiguity,
    https://github.com/systemd/systemd/blob/main/src/basic/virt.c).
    """
    yield from _hit(
        g, "hyperv",
        "on the Hyper-V host, VM off: Stop-VM -Name NAME; "
        "Set-VMProcessor -VMName NAME -ExposeVirtualizationExtensions $true; Start-VM -Name NAME "
        "(or: nestvirt enable --hyperv HOST NAME)",
    )  # fmt: skip


@guest_rule("NV-G02", "parent-wsl2", Severity.WARNING)
def parent_wsl2(g: GuestFacts) -> Iterator[Hit]:
    """This machine is WSL2: nesting is a `.wslconfig` switch on the Windows side.

    ## What it checks
    The kernel release: WSL2's kernel names itself `…-microsoft-standard-WSL2`.

    ## Why it matters
    WSL2 distributions run in one lightweight Hyper-V VM; whether it sees
    VT-x/AMD-V (and so `/dev/kvm` works) is WSL's `nestedVirtualization`
    setting. WSL's build 20175 notes made it the default on amd64; it works on
    Windows 11, while Windows 10 refuses it ("Nested virtualization is not
    supported on this machine") or silently overrides it. WSL2 has no udev by
    default, so `/dev/kvm` may also be root-only.

    ## Example
    `uname -r` = `5.15.153.1-microsoft-standard-WSL2`, no `vmx` in `/proc/cpuinfo`.

    ## Fix
    In `%UserProfile%\\.wslconfig` on Windows: `[wsl2]` then
    `nestedVirtualization=true`; run `wsl --shutdown` and start the distribution
    again. Then `sudo usermod -aG kvm $USER` (or `sudo chmod 0660 /dev/kvm` and
    `chgrp kvm`) for non-root access.

    ## Sources
    WSL release notes, build 20175
    (https://github.com/MicrosoftDocs/WSL/releases/tag/20175); Microsoft Learn
    "Advanced settings configuration in WSL" (`.wslconfig`, Windows 11 only);
    microsoft/WSL issues 11216 (Windows 10 22H2: "not supported on this
    machine") and 40735 (Windows 10: the setting silently overridden).
    """
    extra = ""
    if g.kvm_device and not g.kvm_accessible:
        extra = "/dev/kvm exists but this user cannot open it"
    yield from _hit(
        g, "wsl2",
        "Windows 11: in %UserProfile%\\.wslconfig put '[wsl2]' and 'nestedVirtualization=true', "
        "then run 'wsl --shutdown' and start the distribution again; inside: "
        "sudo usermod -aG kvm $USER (Windows 10 does not support it)",
        extra,
    )  # fmt: skip


@guest_rule("NV-G03", "parent-kvm", Severity.WARNING)
def parent_kvm(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a KVM/QEMU guest (libvirt or plain QEMU): the host must pass vmx/svm.

    ## What it checks
    The CPUID signature `KVMKVMKVM` (or `Linux KVM Hv`, or DMI `QEMU`) when no
    more specific parent (a cloud, Proxmox) is named by DMI.

    ## Why it matters
    QEMU gives a VM the extensions only with a CPU model that has them
    (`host-passthrough`, `host-model`, or `+vmx`/`+svm`), and only when the
    host's `kvm_intel`/`kvm_amd` has `nested=1` (the default for kvm_intel
    since Linux 4.20, for kvm_amd much longer). A paravirtual module such as
    `kvm_pvm` runs guests here without vmx/svm: VMs started here get none.

    ## Example
    `KVMKVMKVM`, `Common KVM processor` or `QEMU Virtual CPU` as the model, no
    `vmx`/`svm` in `/proc/cpuinfo`.

    ## Fix
    On the host, with nestvirt: `nestvirt enable VM` (adds `<feature
    policy='require' name='vmx'/>` or uses host-passthrough) and `nestvirt
    host enable` (`nested=1`). By hand: `virsh edit VM` → `<cpu
    mode='host-passthrough'/>`, `echo 'options kvm_intel nested=1' >
    /etc/modprobe.d/kvm-nested.conf`; plain QEMU: `-accel kvm -cpu host`. The
    VM needs a full stop and start.

    ## Sources
    Linux `Documentation/virt/kvm/x86/running-nested-guests.rst` (Linux 5.8+;
    https://docs.kernel.org/virt/kvm/x86/running-nested-guests.html); Linux
    `nested-vmx.rst`; libvirt "Domain XML format", CPU model and topology
    (https://libvirt.org/formatdomain.html#cpu-model-and-topology).
    """
    yield from _hit(
        g, "kvm",
        "on the KVM host: nestvirt enable VM && nestvirt host enable (by hand: virsh edit VM -> "
        "<cpu mode='host-passthrough'/>; options kvm_intel nested=1 in /etc/modprobe.d; "
        "plain QEMU: -accel kvm -cpu host); then stop and start the VM",
    )  # fmt: skip


@guest_rule("NV-G04", "parent-proxmox", Severity.WARNING)
def parent_proxmox(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a Proxmox VE VM: set the VM's CPU type to `host` on the node.

    ## What it checks
    A QEMU/KVM guest whose DMI names Proxmox (set with `qm set VMID --smbios1
    manufacturer=…`), or whose CPU model is `Common KVM processor` (kvm64,
    Proxmox's default CPU type before PVE 8, which has no vmx/svm).

    ## Why it matters
    Proxmox VE does not expose the extensions by default: its wiki says to set
    the VM's CPU type to `host` and to check `nested` on the node (kernel 3+,
    PVE 4.x and later can expose them).

    ## Example
    CPU model `Common KVM processor`, CPUID `KVMKVMKVM`, no `vmx`.

    ## Fix
    On the Proxmox node: `qm set VMID --cpu host`, check
    `cat /sys/module/kvm_intel/parameters/nested` (or kvm_amd) is `Y`/`1`, else
    `echo 'options kvm-intel nested=Y' > /etc/modprobe.d/kvm-intel.conf` and
    reload the module; then `qm stop VMID && qm start VMID` (a reboot inside
    the VM is not enough).

    ## Sources
    Proxmox VE wiki, "Nested Virtualization"
    (https://pve.proxmox.com/wiki/Nested_Virtualization); Proxmox VE admin guide,
    `qm` CPU type.
    """
    yield from _hit(
        g, "proxmox",
        "on the Proxmox node: qm set VMID --cpu host; nested must be Y in "
        "/sys/module/kvm_intel/parameters/nested (or kvm_amd); then qm stop VMID && qm start VMID",
    )  # fmt: skip


@guest_rule("NV-G05", "parent-vmware", Severity.WARNING)
def parent_vmware(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a VMware VM: enable virtualized HV (`vhv.enable`) for it.

    ## What it checks
    DMI `VMware, Inc.` / `VMware Virtual Platform`, or CPUID `VMwareVMware`.

    ## Why it matters
    VMware hides VT-x/AMD-V unless "virtualized HV" is on for the VM. It is
    offered since Workstation 8 / Player 4 / Fusion 4 / ESXi 5.0 and fully
    supported for virtual hardware version 9 or later. Known conflict: on a
    Windows host with Hyper-V, VBS/Memory Integrity or WSL2 active, VMware
    Workstation runs on the Windows Hypervisor Platform and cannot virtualize
    VT-x.

    ## Example
    `dmi sys_vendor = VMware, Inc.`, no `vmx`.

    ## Fix
    VM powered off: vSphere Client → Edit Settings → CPU → "Expose hardware
    assisted virtualization to the guest OS"; Workstation/Fusion: Processors →
    "Virtualize Intel VT-x/EPT or AMD-V/RVI"; or in the `.vmx`: `vhv.enable =
    "TRUE"`. Upgrade the virtual hardware to version 9 or later first. On a
    Windows host, turn Hyper-V off for Workstation: `bcdedit /set
    hypervisorlaunchtype off` and disable Memory Integrity, then reboot.

    ## Sources
    VMware Communities, "Running Nested VMs" (DOC-8970,
    https://communities.vmware.com/docs/DOC-8970): per-product versions and
    virtual hardware 9; VMware KB 2009916 (nested ESXi support policy).
    """
    yield from _hit(
        g, "vmware",
        "VM powered off: vhv.enable = \"TRUE\" in the .vmx (vSphere: CPU -> 'Expose hardware "
        "assisted virtualization to the guest OS'; Workstation: 'Virtualize Intel VT-x/EPT or "
        "AMD-V/RVI'); virtual hardware version >= 9; Workstation on Windows: Hyper-V/VBS off",
    )  # fmt: skip


@guest_rule("NV-G06", "parent-virtualbox", Severity.WARNING)
def parent_virtualbox(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a VirtualBox VM: turn on nested VT-x/AMD-V for it.

    ## What it checks
    DMI `innotek GmbH` / `VirtualBox` (or `Oracle Corporation`), or CPUID
    `VBoxVBoxVBox`. VirtualBox's KVM paravirtualization interface shows
    `KVMKVMKVM`: the DMI identity wins.

    ## Why it matters
    VirtualBox passes VT-x/AMD-V only with "Nested VT-x/AMD-V" on: AMD hosts
    since VirtualBox 6.0, Intel hosts since 6.1. When Hyper-V is active on a
    Windows host, VirtualBox runs on it (the turtle icon) and cannot nest.

    ## Example
    `dmi sys_vendor = innotek GmbH`, `product_name = VirtualBox`, no `svm`.

    ## Fix
    VM powered off, on the VirtualBox host: `VBoxManage modifyvm NAME
    --nested-hw-virt on` (GUI: System → Processor → "Enable Nested
    VT-x/AMD-V"); VirtualBox 6.1 or later on Intel; on Windows hosts turn
    Hyper-V off (`bcdedit /set hypervisorlaunchtype off`).

    ## Sources
    Oracle VM VirtualBox User Manual, "Nested Virtualization" and `VBoxManage
    modifyvm` (`--nested-hw-virt`, https://www.virtualbox.org/manual/);
    VirtualBox ticket 4032 (Intel support in 6.1.0).
    """
    yield from _hit(
        g, "virtualbox",
        "VM powered off, on the host: VBoxManage modifyvm NAME --nested-hw-virt on "
        "(VirtualBox >= 6.1 on Intel, >= 6.0 on AMD; Hyper-V off on a Windows host)",
    )  # fmt: skip


@guest_rule("NV-G07", "parent-xen", Severity.WARNING)
def parent_xen(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a Xen HVM guest: `nestedhvm=1` in its domain configuration.

    ## What it checks
    CPUID `XenVMMXenVMM`, `/sys/hypervisor/type` = `xen`, or DMI `Xen` / `HVM domU`.

    ## Why it matters
    Xen exposes VMX/SVM to an HVM guest only with `nestedhvm` set, and nested
    HVM needs hardware-assisted paging (`hap=1`, the default where EPT/NPT
    exist). Xen documents nested virtualization as experimental.

    ## Example
    `/sys/hypervisor/type = xen`, no `vmx`.

    ## Fix
    In the guest's `xl.cfg` on dom0: `nestedhvm=1` (and keep `hap=1`), then
    `xl shutdown NAME && xl create /etc/xen/NAME.cfg`. With libvirt's libxl
    driver: `<cpu mode='host-passthrough'>` with `<feature policy='require'
    name='vmx'/>`.

    ## Sources
    xl.cfg(5), `nestedhvm` and `hap`
    (https://xenbits.xen.org/docs/unstable/man/xl.cfg.5.html); libvirt libxl
    driver (https://libvirt.org/drvxen.html; Xen 4.10 moved the nested flag
    inside libxl, the `xl.cfg` key is unchanged).
    """
    yield from _hit(
        g, "xen",
        "on dom0: nestedhvm=1 (with hap=1) in the guest's xl.cfg, then "
        "xl shutdown NAME && xl create /etc/xen/NAME.cfg",
    )  # fmt: skip


@guest_rule("NV-G08", "parent-qemu-tcg", Severity.WARNING)
def parent_qemu_tcg(g: GuestFacts) -> Iterator[Hit]:
    """This machine runs under QEMU's TCG: emulated, so nesting works only with an svm CPU, slowly.

    ## What it checks
    The CPUID signature `TCGTCGTCGTCG`, which QEMU's TCG accelerator presents.

    ## Why it matters
    TCG emulates AMD SVM (not Intel VMX): a guest with an AMD CPU model and
    `svm` can run `kvm_amd` and nested guests. Everything is emulated: tens of
    times slower than KVM (measured by `nestvirt lab` here: a guest exit costs
    7.6 µs with KVM at depth 1 and 315 µs inside the TCG lab VM, about 40×).

    ## Example
    The `nestvirt lab` VM under TCG: `TCGTCGTCGTCG`, CPU model EPYC.

    ## Fix
    On the QEMU host: if KVM works there, use it (`-accel kvm`, libvirt
    `<domain type='kvm'>`, see NV-V12); else give the VM an AMD model with svm:
    `-cpu EPYC,+svm` (libvirt `<cpu mode='custom'><model>EPYC</model><feature
    policy='require' name='svm'/></cpu>`).

    ## Sources
    QEMU `target/i386/cpu.c` (TCG signature, SVM under TCG); QEMU
    documentation "QEMU / KVM CPU model configuration"
    (https://www.qemu.org/docs/master/system/i386/cpu.html); this project's lab
    measurements (README).
    """
    yield from _hit(
        g, "tcg",
        "on the QEMU host: use KVM if it works there (-accel kvm / <domain type='kvm'>); else an "
        "AMD model with svm: -cpu EPYC,+svm (libvirt: <feature policy='require' name='svm'/>)",
        "emulated: expect tens of times slower than KVM",
    )  # fmt: skip


@guest_rule("NV-G09", "parent-aws", Severity.WARNING)
def parent_aws(g: GuestFacts) -> Iterator[Hit]:
    """This machine is an Amazon EC2 instance: nesting needs a family that allows it, or metal.

    ## What it checks
    DMI `Amazon EC2` (sys_vendor/product_name; Nitro instances show
    `KVMKVMKVM`, older ones Xen).

    ## Why it matters
    For years EC2 offered KVM only on bare-metal (`*.metal`) instances. Nested
    virtualization on virtual instances came with the 8th-generation Intel
    families (C8i, M8i, R8i and their flex variants) through the CPU option
    `NestedVirtualization=enabled` (which disables Virtual Secure Mode); other
    types still hide VT-x.

    ## Example
    `dmi sys_vendor = Amazon EC2`, `product_name = m5.large`, no `vmx`.

    ## Fix
    Launch a supported type with the CPU option:
    `aws ec2 run-instances --instance-type m8i.large --cpu-options NestedVirtualization=enabled …`
    (list them: `aws ec2 describe-instance-types --filters
    Name=processor-info.supported-features,Values=nested-virtualization`), or
    use a `*.metal` instance.

    ## Sources
    Amazon EC2 API, `CpuOptionsRequest` / `LaunchTemplateCpuOptionsRequest`
    `NestedVirtualization` ("supported only on 8th generation Intel-based
    instance types (c8i, m8i, r8i, and their flex variants)";
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CpuOptionsRequest.html);
    `DescribeInstanceTypes` `ProcessorInfo.SupportedFeatures`; AWS "Amazon EC2
    bare metal instances" (2019).
    """
    yield from _hit(
        g, "aws",
        "launch an 8th-gen Intel type (c8i/m8i/r8i, flex too) with: aws ec2 run-instances "
        "--instance-type m8i.large --cpu-options NestedVirtualization=enabled ... ; or a *.metal "
        "instance (list: aws ec2 describe-instance-types --filters "
        "Name=processor-info.supported-features,Values=nested-virtualization)",
    )  # fmt: skip


@guest_rule("NV-G10", "parent-gcp", Severity.WARNING)
def parent_gcp(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a Google Compute Engine VM: create it with nested virtualization enabled.

    ## What it checks
    DMI `Google` / `Google Compute Engine` (CPUID `KVMKVMKVM`).

    ## Why it matters
    Compute Engine adds VT-x to a VM only when it is created (or updated) with
    `enableNestedVirtualization`; Intel only (Haswell or later; no AMD or Arm
    VMs, no E2 or N2D), Linux L1 with KVM as the only supported L2 hypervisor.
    An organization policy, `constraints/compute.disableNestedVirtualization`,
    can forbid it for a project. Expect 10 % or more overhead.

    ## Example
    `dmi product_name = Google Compute Engine`, no `vmx`.

    ## Fix
    `gcloud compute instances create NAME --enable-nested-virtualization
    --machine-type=n2-standard-4 --min-cpu-platform="Intel Haswell"` (an
    existing VM: stop it, `gcloud compute instances export`, set
    `advancedMachineFeatures.enableNestedVirtualization: true`,
    `update-from-file`); check the policy: `gcloud resource-manager
    org-policies describe compute.disableNestedVirtualization --project=PROJECT
    --effective`.

    ## Sources
    Google Cloud, "About nested virtualization" and "Enable nested
    virtualization" (https://cloud.google.com/compute/docs/instances/nested-virtualization/overview,
    https://cloud.google.com/compute/docs/instances/nested-virtualization/enabling;
    restrictions as of 2025-07).
    """
    yield from _hit(
        g, "gcp",
        "gcloud compute instances create NAME --enable-nested-virtualization "
        "--machine-type=n2-standard-4 --min-cpu-platform=\"Intel Haswell\" "
        "(Intel only; not E2/N2D); "
        "check: gcloud resource-manager org-policies describe "
        "compute.disableNestedVirtualization --project=PROJECT --effective",
    )  # fmt: skip


@guest_rule("NV-G11", "parent-azure", Severity.WARNING)
def parent_azure(g: GuestFacts) -> Iterator[Hit]:
    """This machine is an Azure VM: pick a size that supports nesting, security type Standard.

    ## What it checks
    Azure's chassis asset tag `7783-7084-3265-9085-8269-3286-77` (with the
    `Microsoft Hv` signature).

    ## Why it matters
    Azure exposes VT-x only on sizes whose page lists "Nested Virtualization:
    Supported" (since 2017 the Dv3/Ev3 families, then their v4/v5 successors;
    not the A, B or F series). Confidential VMs never get it, and older
    Trusted Launch VMs listed nesting among unsupported features.

    ## Example
    A `Standard_B2s` VM: `Microsoft Hv`, the Azure asset tag, no `vmx`.

    ## Fix
    `az vm deallocate -g RG -n VM && az vm resize -g RG -n VM --size
    Standard_D4s_v5 && az vm start -g RG -n VM`; if it still hides vmx,
    recreate it with `az vm create … --size Standard_D4s_v5 --security-type
    Standard`.

    ## Sources
    Microsoft Learn, Azure VM size pages ("Nested Virtualization" row) and
    "Azure compute unit (ACU)" (https://learn.microsoft.com/azure/virtual-machines/acu);
    Azure blog "Nested Virtualization in Azure" (2017, Dv3/Ev3); "Trusted launch
    for Azure virtual machines" and its FAQ
    (https://learn.microsoft.com/azure/virtual-machines/trusted-launch-faq).
    """
    yield from _hit(
        g, "azure",
        "az vm deallocate -g RG -n VM && az vm resize -g RG -n VM --size Standard_D4s_v5 && "
        "az vm start -g RG -n VM (a size with 'Nested Virtualization: Supported'; not A/B/F); "
        "else recreate with --security-type Standard",
    )  # fmt: skip


@guest_rule("NV-G12", "parent-ci-runner", Severity.WARNING)
def parent_ci_runner(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a GitHub-hosted Actions runner: KVM depends on the runner class.

    ## What it checks
    `GITHUB_ACTIONS=true` with `RUNNER_ENVIRONMENT=github-hosted` (a
    self-hosted runner is judged by its own parent's rule).

    ## Why it matters
    GitHub-hosted x64 Linux runners (standard and larger) have `/dev/kvm`;
    arm64, macOS and Windows runners do not. The device is `root:kvm 0660`, so
    the runner user needs a udev rule before QEMU or an emulator can use it.

    ## Example
    `ubuntu-latest`: `/dev/kvm` present but not writable by `runner`.

    ## Fix
    `runs-on: ubuntu-latest` (x64), and a step:
    `echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' | sudo tee
    /etc/udev/rules.d/99-kvm4all.rules && sudo udevadm control --reload-rules &&
    sudo udevadm trigger --name-match=kvm`.

    ## Sources
    GitHub blog, "Hardware accelerated Android virtualization on Actions
    Windows and Linux larger hosted runners" (2023) and the 2024 changelog for
    standard runners; reactivecircus/android-emulator-runner README (the udev
    rule); WarpBuild docs "Nested Virtualization"
    (https://warpbuild.com/docs/ci/nested-virtualization).
    """
    parent = parent_of(g)
    if parent is None or parent.kind != "ci":
        return
    udev = (
        'echo \'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\' | '
        "sudo tee /etc/udev/rules.d/99-kvm4all.rules && sudo udevadm control --reload-rules && "
        "sudo udevadm trigger --name-match=kvm"
    )
    arch = g.ci.get("RUNNER_ARCH", "")
    if g.kvm_device and g.kvm_accessible:
        yield Hit(f"this machine is {parent.name}: /dev/kvm is there and usable",
                  severity=Severity.INFO)  # fmt: skip
    elif g.kvm_device:
        yield Hit(f"this machine is {parent.name}: /dev/kvm exists but the runner user cannot "
                  "open it", udev)  # fmt: skip
    else:
        yield Hit(
            f"this machine is {parent.name} ({arch or 'arch unknown'}) without /dev/kvm: "
            "this runner class has no KVM",
            f"runs-on: ubuntu-latest (x64 Linux runners have /dev/kvm), then: {udev}",
        )


@guest_rule("NV-G13", "parent-unknown", Severity.WARNING)
def parent_unknown(g: GuestFacts) -> Iterator[Hit]:
    """This machine is a guest of a hypervisor nestvirt cannot name: the evidence, and the advice.

    ## What it checks
    A hypervisor is present (CPUID bit 31, or another source) but neither its
    signature nor the firmware identity matches a known parent.

    ## Why it matters
    Every hypervisor hides VT-x/AMD-V from its guests unless told otherwise;
    only the parent's owner can change it.

    ## Example
    CPUID bit 31 set with an empty or unknown signature, no DMI.

    ## Fix
    Ask the owner of the parent to expose hardware-assisted virtualization
    (usually called "nested virtualization", "expose VT-x/AMD-V" or CPU type
    "host") and to restart the VM; then `grep -wE 'vmx|svm' /proc/cpuinfo`
    and `nestvirt probe` here.

    ## Sources
    Intel SDM vol. 2A, CPUID leaf 1 ECX[31] and leaves 0x40000000–0x4FFFFFFF;
    systemd `src/basic/virt.c` (the evidence order).
    """
    parent = parent_of(g)
    if parent is None or parent.kind != "unknown":
        return
    state, severity = _state(g, parent)
    dmi = ", ".join(f"{k}={v!r}" for k, v in g.dmi.items()) or "no DMI"
    yield Hit(
        f"this machine is a guest of {parent.name} ({parent.evidence}; {dmi}): {state}",
        'ask the parent\'s owner to expose VT-x/AMD-V ("nested virtualization", CPU type '
        "'host'), restart the VM, then: grep -wE 'vmx|svm' /proc/cpuinfo",
        severity=severity,
    )


def guest_findings(g: GuestFacts) -> list[Finding]:
    """Every NV-G finding for these facts (none when this machine is not a guest)."""
    return run(Target.GUEST, Platform.LINUX, g)
