"""What the rules need to know about one libvirt domain: plain values only.

Filled by nestvirt.backends.libvirt from the inactive (and, when running, the
live) domain XML; tests build it directly. `read_domain_xml` is the one reader of a
domain definition's own fields, shared by the backend, the guard's hook (no libvirt
connection) and the lab (a definition not defined yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestvirt.guestcpu import GuestCpu
from nestvirt.model import Unknown
from nestvirt.vocabulary import xml_kib


@dataclass(frozen=True, slots=True)
class Interface:
    mac: str | None
    kind: str  # <interface type='…'>: network, bridge, direct, user, …
    source: str | None
    filter: str | None  # the top <filterref filter='…'/>, if any
    filter_chain: tuple[str, ...] = ()  # every filter reached through includes
    blocks_foreign_mac: bool | Unknown = False
    filter_xml: tuple[tuple[str, str], ...] = ()  # (name, XML) of each filter in the chain


@dataclass(frozen=True, slots=True)
class LibvirtVmFacts:
    name: str
    uri: str
    state: str  # running | off | paused | saved (managed save, not running) | …
    domain_type: str  # <domain type='…'>: kvm, qemu (TCG), …
    host_cpu_vendor: str | None  # "Intel" | "AMD" | other, from the connection's capabilities
    host_virt_extensions: tuple[str, ...]  # vmx/svm in the host CPU's capabilities features
    cpu_mode: str | None  # None (no <cpu>), custom, host-model, host-passthrough, maximum
    cpu_model: str | None
    cpu_features: dict[str, str] = field(default_factory=dict)  # name -> policy
    # what the guest CPU gets (nestvirt.guestcpu); None: the rules ask the table themselves
    guest_cpu: GuestCpu | None = None
    # CPUID vendor of the named model, for the table ("AMD", "Intel", "Hygon"); None: unknown
    cpu_model_vendor: str | None = None
    live_cpu_features: dict[str, str] | None = None  # expanded CPU of a running domain
    memory_kib: int = 0
    current_memory_kib: int = 0
    max_memory_kib: int | None = None  # <maxMemory> (memory hotplug)
    virtio_mem_devices: int = 0
    balloon_model: str | None = None  # None when there is no <memballoon>
    interfaces: tuple[Interface, ...] = ()
    has_managed_save: bool | Unknown = False
    snapshot_count: int | Unknown = 0
    host_kvm: bool | None = None  # the host's capabilities offer <domain type='kvm'>; None: unknown


@dataclass(frozen=True, slots=True)
class DomainXml:
    """What a <domain> definition says by itself (no connection, no host)."""

    name: str
    domain_type: str  # <domain type='…'>: kvm, qemu (TCG), …
    cpu_mode: str | None  # None (no <cpu>), custom, host-model, host-passthrough, maximum
    cpu_model: str | None  # <model> text ("" for an empty <model/>); None without one
    cpu_features: dict[str, str]  # name -> policy
    memory_kib: int
    current_memory_kib: int  # <currentMemory>, else <memory>
    max_memory_kib: int | None  # <maxMemory> (memory hotplug)
    virtio_mem_devices: int
    balloon_model: str | None  # None when there is no <memballoon>


def read_domain_xml(root: Any) -> DomainXml:
    """The definition's own fields from a parsed <domain> (lxml or xml.etree: the
    ElementTree API only, so the guard's hook stays on the standard library)."""
    return read_domain_parts(root)[0]


def read_domain_parts(root: Any) -> tuple[DomainXml, dict[str, Any]]:
    """read_domain_xml, and the first of each child of <domain> and <devices> it met, by
    tag (devices' children as "devices/TAG"), so a caller need not look for them again.

    One pass over the children instead of a find() a field: what root.find(path) and
    root.findall(path) would answer, the first element in document order for each."""
    first: dict[str, Any] = {}
    features: dict[str, str] = {}
    virtio_mem = 0
    for child in root:
        tag = child.tag
        if tag not in first:
            first[tag] = child
        if tag == "cpu":  # cpu/feature: of every <cpu>, as findall would
            for f in child:
                if f.tag == "feature":
                    name = f.get("name")
                    if name:
                        features[name] = f.get("policy", "require")
        elif tag == "devices":
            for device in child:
                key = f"devices/{device.tag}" if isinstance(device.tag, str) else None
                if key is not None and key not in first:
                    first[key] = device
                if key == "devices/memory" and device.get("model") == "virtio-mem":
                    virtio_mem += 1
    cpu = first.get("cpu")
    balloon = first.get("devices/memballoon")
    max_memory = first.get("maxMemory")
    memory = first.get("memory")
    current = first.get("currentMemory")
    name = first.get("name")
    domain = DomainXml(
        name=(name.text or "") if name is not None else "",
        domain_type=root.get("type", ""),
        cpu_mode=None if cpu is None else cpu.get("mode", "custom"),
        cpu_model=None if cpu is None else cpu.findtext("model"),
        cpu_features=features,
        memory_kib=_kib(memory),
        current_memory_kib=_kib(memory if current is None else current),
        max_memory_kib=None if max_memory is None else _kib(max_memory),
        virtio_mem_devices=virtio_mem,
        balloon_model=None if balloon is None else balloon.get("model"),
    )
    return domain, first


def cpu_features_of(root: Any) -> dict[str, str]:
    """{feature name: policy} of a <domain>'s <cpu> (policy defaults to require)."""
    return {
        f.get("name"): f.get("policy", "require")
        for f in root.findall("cpu/feature")
        if f.get("name")
    }


def _kib(element: Any) -> int:
    return 0 if element is None else xml_kib(element.text, element.get("unit", "KiB"))
