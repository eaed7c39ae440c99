"""LibvirtVmFacts from a domain XML document, without a libvirt connection.

The libvirt hook must not call back into libvirtd (libvirtd waits for the hook:
a call back deadlocks it), so what the backend learns from the connection is
read from files here:

- the host CPU vendor from /proc/cpuinfo (libvirt's names: "Intel", "AMD");
- the vmx/svm a named CPU model carries from libvirt's CPU map files
  (/usr/share/libvirt/cpu_map/x86_<model>.xml, the data behind
  `virConnectBaselineCPU`, which the backend asks instead).

Only what `rules.vm_libvirt.exposes`/`hidden_reasons` read is filled in; the
rest keeps the dataclass defaults. Standard library only (xml.etree).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from nestvirt.backends.libvirt import QEMU_DEFAULT_MODEL, cpu_features_of
from nestvirt.facts.libvirt_vm import LibvirtVmFacts
from nestvirt.model import Unknown

CPU_MAP_DIR = Path("/usr/share/libvirt/cpu_map")
HOST_MODES = frozenset({"host-passthrough", "host-model", "maximum"})
LIBVIRT_VENDOR = {"intel": "Intel", "amd": "AMD", "hygon": "Hygon"}
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
    uri: str = "qemu:///system",
) -> LibvirtVmFacts:
    """The facts `exposes()` needs, from a parsed <domain> (`host_vendor`: "intel", "amd", …)."""
    cpu = root.find("cpu")
    mode = None if cpu is None else cpu.get("mode", "custom")
    model = None if cpu is None else (cpu.findtext("model") or None)
    vendor = None if isinstance(host_vendor, Unknown) else LIBVIRT_VENDOR.get(host_vendor)
    return LibvirtVmFacts(
        name=root.findtext("name") or "",
        uri=uri,
        state=state,
        domain_type=root.get("type", ""),
        host_cpu_vendor=vendor,
        host_virt_extensions=(),
        cpu_mode=mode,
        cpu_model=model,
        cpu_features=cpu_features_of(root),
        cpu_model_extensions=model_extensions(mode, model, cpu_map),
    )


def asserts_no_nested_guests(root: ET.Element) -> bool:
    """Whether the domain's metadata carries <guard nested-guests="none"/> in our namespace."""
    metadata = root.find("metadata")
    if metadata is None:
        return False
    return any(el.get("nested-guests") == "none" for el in metadata.iter(f"{{{GUARD_NS}}}guard"))


def model_extensions(
    mode: str | None, model: str | None, cpu_map: Path = CPU_MAP_DIR
) -> tuple[str, ...] | Unknown:
    """vmx/svm carried by the named model itself, by libvirt's CPU map (like the backend's)."""
    if mode in HOST_MODES:
        return ()
    name = (model or QEMU_DEFAULT_MODEL).strip()
    features = _model_features(name, cpu_map, set())
    if features is None:
        return Unknown(f"CPU model {name!r} not found in {cpu_map}")
    return tuple(n for n in ("vmx", "svm") if n in features)


def _model_features(name: str, cpu_map: Path, seen: set[str]) -> set[str] | None:
    if name in seen or not _MODEL_NAME.match(name):
        return None
    seen.add(name)
    try:
        root = ET.parse(cpu_map / f"x86_{name}.xml").getroot()
    except (OSError, ET.ParseError):
        return None
    for node in root.iter("model"):
        if node.get("name") != name or not len(node):
            continue
        features = {f.get("name", "") for f in node.findall("feature")}
        for parent in node.findall("model"):  # older maps: a model built on another
            inherited = _model_features(parent.get("name", ""), cpu_map, seen)
            if inherited is None:
                return None
            features |= inherited
        return features
    return None
