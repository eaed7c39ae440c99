"""LibvirtVmFacts from a domain XML document, without a libvirt connection.

The libvirt hook must not call back into libvirtd (libvirtd waits for the hook:
a call back deadlocks it), nor can it know the `-cpu` argument libvirt built,
so the guest CPU is judged by nestvirt.guestcpu's table, not by QEMU:

- the host CPU vendor from /proc/cpuinfo (libvirt's names: "Intel", "AMD");
- the host is taken to offer its vendor's extension: for an incoming
  migration the guest's CPU was made on the source host, which this one cannot
  see, and the guard would rather judge a VM than wave it through;
- a named model's CPUID vendor (which TCG guests see) from libvirt's CPU map
  files (/usr/share/libvirt/cpu_map/x86_<model>.xml).

Only what `rules.vm_libvirt.exposes`/`hidden_reasons` read is filled in; the
rest keeps the dataclass defaults. Standard library only (xml.etree).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from nestvirt.endpoint import DEFAULT_URI
from nestvirt.facts.libvirt_vm import LibvirtVmFacts, read_domain_xml
from nestvirt.guestcpu import EXTENSION_OF_VENDOR, HOST_MODES, QEMU_DEFAULT_MODEL
from nestvirt.model import Unknown
from nestvirt.vocabulary import LIBVIRT_NAME_OF_KEY

CPU_MAP_DIR = Path("/usr/share/libvirt/cpu_map")
LIBVIRT_VENDOR = LIBVIRT_NAME_OF_KEY
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")

# Our own metadata element: `nested-guests="none"` asserts that no nested guests
# run in the domain (preflight's --no-nested-guests), e.g.
#   virsh metadata VM https://nestvirt.dev/xmlns/guard/1 --key nestvirt \
#       --set '<guard nested-guests="none"/>'
GUARD_NS = "https://nestvirt.dev/xmlns/guard/1"


class DomainXmlError(ValueError):
    """The hook's stdin is not a libvirt domain definition."""


def parse_domain(xml: bytes | str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"malformed domain XML: {exc}") from None
    if root.tag != "domain":
        raise DomainXmlError(f"not a libvirt domain definition (root element <{root.tag}>)")
    return root


def facts_from_xml(
    root: ET.Element,
    *,
    host_vendor: str | Unknown,
    state: str = "running",
    cpu_map: Path = CPU_MAP_DIR,
    uri: str = DEFAULT_URI,
) -> LibvirtVmFacts:
    """The facts `exposes()` needs, from a parsed <domain> (`host_vendor`: "intel", "amd", …)."""
    domain = read_domain_xml(root)
    mode, model = domain.cpu_mode, domain.cpu_model or None
    vendor = None if isinstance(host_vendor, Unknown) else LIBVIRT_VENDOR.get(host_vendor)
    extension = EXTENSION_OF_VENDOR.get(vendor or "")
    return LibvirtVmFacts(
        name=domain.name,
        uri=uri,
        state=state,
        domain_type=domain.domain_type,
        host_cpu_vendor=vendor,
        host_virt_extensions=(extension,) if extension else (),
        cpu_mode=mode,
        cpu_model=model,
        cpu_features=domain.cpu_features,
        cpu_model_vendor=model_vendor(mode, model, cpu_map),
    )


def asserts_no_nested_guests(root: ET.Element) -> bool:
    """Whether the domain's metadata carries <guard nested-guests="none"/> in our namespace."""
    metadata = root.find("metadata")
    if metadata is None:
        return False
    return any(el.get("nested-guests") == "none" for el in metadata.iter(f"{{{GUARD_NS}}}guard"))


def model_vendor(mode: str | None, model: str | None, cpu_map: Path = CPU_MAP_DIR) -> str | None:
    """The CPUID vendor libvirt's CPU map gives a named model (None: host modes, or unknown)."""
    if mode in HOST_MODES:
        return None
    name = (model or QEMU_DEFAULT_MODEL).strip()
    if not _MODEL_NAME.match(name):
        return None
    try:
        root = ET.parse(cpu_map / f"x86_{name}.xml").getroot()
    except (OSError, ET.ParseError):
        return None
    for node in root.iter("model"):
        if node.get("name") == name:
            vendor = node.find("vendor")
            return None if vendor is None else vendor.get("name")
    return None
