"""The lab VM's definition: libvirt domain XML (the one source of truth, also for --direct).

The lab VM is born *without* the extensions (`<feature policy='disable'>` of
the one it could get), exactly like a user's VM that hides them: step 2 then
exposes them through the rules and the enable plan (expose.py). `--direct`
turns the same judged definition into QEMU arguments, so both boot paths run
the very CPU the rules saw.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from nestvirt.facts.libvirt_vm import LibvirtVmFacts, read_domain_xml
from nestvirt.vocabulary import EXTENSION_OF_VENDOR

TCG_MODEL = "EPYC"  # TCG emulates AMD SVM (not Intel VMX): an AMD model
MEMORY_MIB = 1024
CMDLINE = "console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off"


@dataclass(frozen=True, slots=True)
class LabSpec:
    name: str  # nestvirt-lab-…
    accel: str  # "kvm" | "tcg"
    host_vendor: str | None  # "AMD" | "Intel" | None, as libvirt names it
    vmlinuz: Path
    initrd: Path
    console_log: Path | None  # <serial type='file'> (libvirt); None: serial on stdio (direct)
    memory_mib: int = MEMORY_MIB
    boot_test: bool = False
    guestside: bool = False  # run `python -m nestvirt.guestside` instead of the nested probe


def hidden_extension(spec: LabSpec) -> str:
    """The extension the lab VM could be given, which its first definition disables."""
    if spec.accel == "tcg":
        return "svm"
    return EXTENSION_OF_VENDOR.get(spec.host_vendor or "", "svm")


def cmdline(spec: LabSpec) -> str:
    mode = " nestvirt.lab=boot-test" if spec.boot_test else ""
    return CMDLINE + mode + (" nestvirt.lab=guestside" if spec.guestside else "")


def base_xml(spec: LabSpec) -> str:
    """The lab VM as built: a small TCG (or KVM) machine booting our kernel, extensions off."""
    ext = hidden_extension(spec)
    if spec.accel == "tcg":
        cpu = (
            "  <cpu mode='custom' match='exact' check='none'>\n"
            f"    <model fallback='forbid'>{TCG_MODEL}</model>\n"
            f"    <feature policy='disable' name='{ext}'/>\n"
            "  </cpu>\n"
        )
    else:
        cpu = (
            "  <cpu mode='host-passthrough' check='none'>\n"
            f"    <feature policy='disable' name='{ext}'/>\n"
            "  </cpu>\n"
        )
    serial = (
        f"    <serial type='file'>\n      <source path={quoteattr(str(spec.console_log))}/>\n"
        "      <target port='0'/>\n    </serial>\n"
        if spec.console_log
        else "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n"
    )
    return (
        f"<domain type='{'qemu' if spec.accel == 'tcg' else 'kvm'}'>\n"
        f"  <name>{escape(spec.name)}</name>\n"
        f"  <description>nestvirt lab VM (depth 1); removed after the run</description>\n"
        f"  <memory unit='MiB'>{spec.memory_mib}</memory>\n"
        f"  <currentMemory unit='MiB'>{spec.memory_mib}</currentMemory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type arch='x86_64' machine='pc'>hvm</type>\n"
        f"    <kernel>{escape(str(spec.vmlinuz))}</kernel>\n"
        f"    <initrd>{escape(str(spec.initrd))}</initrd>\n"
        f"    <cmdline>{escape(cmdline(spec))}</cmdline>\n"
        "  </os>\n"
        "  <features>\n    <acpi/>\n  </features>\n"
        f"{cpu}"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>destroy</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <controller type='usb' model='none'/>\n"  # UHCI polling costs seconds under TCG
        f"{serial}"
        "    <memballoon model='none'/>\n"
        "  </devices>\n"
        "</domain>\n"
    )


def facts_of(xml: str, spec: LabSpec, uri: str) -> LibvirtVmFacts:
    """The rules' facts for a lab definition not defined anywhere yet (it is ours: no
    interfaces, snapshots or managed save). After defineXML the backend re-reads them."""
    root = ET.fromstring(xml)
    domain = read_domain_xml(root)
    host_ext = EXTENSION_OF_VENDOR.get(spec.host_vendor or "")
    return LibvirtVmFacts(
        name=domain.name or spec.name,
        uri=uri,
        state="off",
        domain_type=domain.domain_type,
        host_cpu_vendor=spec.host_vendor,
        host_virt_extensions=(host_ext,) if host_ext and spec.accel == "kvm" else (),
        cpu_mode=domain.cpu_mode,
        cpu_model=domain.cpu_model,
        cpu_features=domain.cpu_features,
        memory_kib=domain.memory_kib,
        current_memory_kib=domain.current_memory_kib,
        balloon_model=domain.balloon_model,
    )


def qemu_args(
    xml: str, *, qemu: str = "qemu-system-x86_64", smbios: tuple[str, ...] = ()
) -> list[str]:
    """`qemu-system-x86_64` arguments (a list, never a shell string) for this definition;
    each `smbios` entry becomes one `-smbios` option (a firmware identity, lab/identity.py)."""
    root = ET.fromstring(xml)
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") == "host-passthrough":
        cpu_arg = "host"
    else:
        cpu_arg = (cpu.findtext("model") if cpu is not None else None) or "qemu64"
    for feature in [] if cpu is None else cpu.findall("feature"):
        sign = "-" if feature.get("policy") in ("disable", "forbid") else "+"
        cpu_arg += f",{sign}{feature.get('name')}"
    accel = "tcg" if root.get("type") == "qemu" else "kvm"
    memory_mib = max(read_domain_xml(root).memory_kib // 1024, 64)
    return [
        qemu, "-name", root.findtext("name") or "nestvirt-lab", "-machine", "pc",
        "-accel", accel, "-cpu", cpu_arg, "-m", str(memory_mib), "-smp", "1",
        "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", root.findtext("os/kernel") or "", "-initrd", root.findtext("os/initrd") or "",
        "-append", root.findtext("os/cmdline") or "",
        *(arg for entry in smbios for arg in ("-smbios", entry)),
    ]  # fmt: skip
