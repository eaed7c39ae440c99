"""What the rules need to know about one libvirt domain: plain values only.

Filled by nestvirt.backends.libvirt from the inactive (and, when running, the
live) domain XML; tests build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nestvirt.guestcpu import GuestCpu
from nestvirt.model import Unknown


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
