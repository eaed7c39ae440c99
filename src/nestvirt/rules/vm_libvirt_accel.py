"""NV-V12: a libvirt domain emulated by TCG on a host where KVM works. Pure function of facts."""

from __future__ import annotations

from collections.abc import Iterator

from nestvirt.commands import virsh
from nestvirt.facts.libvirt_vm import LibvirtVmFacts
from nestvirt.model import Severity
from nestvirt.rules import Hit, Platform, Target, rules_of

vm_rule = rules_of(Target.VM, Platform.LIBVIRT)


@vm_rule("NV-V12", "domain-emulated", Severity.WARNING)
def domain_emulated(vm: LibvirtVmFacts) -> Iterator[Hit]:
    """The domain runs under QEMU's TCG (`<domain type='qemu'>`) although KVM works on its host.

    ## What it checks
    The domain's `type` attribute against the host's capabilities: libvirt
    lists `<domain type='kvm'/>` for the guest architecture only when QEMU can
    use `/dev/kvm` there, and its host CPU offers vmx/svm to KVM guests. (A
    host whose KVM offers neither can give a guest nested virtualization only
    under TCG: there the rule stays quiet.)

    ## Why it matters
    TCG emulates every instruction: the VM runs tens of times slower than under
    KVM, and it can nest only with an emulated AMD `svm` (never `vmx`, NV-V11).
    A domain left on `type='qemu'` after KVM became available (or copied from a
    host without it) pays that cost for nothing.

    ## Example
    `<domain type='qemu'>` on a host whose capabilities list `kvm` for x86_64.

    ## Fix
    `virsh edit VM` → `<domain type='kvm'>`, and a CPU that can carry the
    extensions (`<cpu mode='host-passthrough'/>`; `nestvirt enable VM`); stop
    and start the VM. If KVM cannot boot Linux here (NV-H10), keep TCG.

    ## Sources
    libvirt "Domain XML format", element `domain` attribute `type`
    (https://libvirt.org/formatdomain.html#element-and-attribute-overview);
    libvirt "Driver capabilities XML format" (https://libvirt.org/formatcaps.html);
    QEMU documentation, "Accelerators" (TCG vs KVM).
    """
    # a host whose KVM gives guests no vmx/svm nests only under TCG: keep it (NV-H01's advice)
    if vm.domain_type == "qemu" and vm.host_kvm is True and vm.host_virt_extensions:
        yield Hit(
            f"{vm.name} runs under TCG (<domain type='qemu'>) although its host offers KVM: "
            "emulated, tens of times slower",
            virsh("edit", vm.name, uri=vm.uri)
            + "  # <domain type='kvm'> with <cpu mode='host-passthrough'/>; "
            "then stop and start it",
        )
