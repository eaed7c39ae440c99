"""Domain XML → LibvirtVmFacts without a connection; CPU models from libvirt's CPU map files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestvirt.guard.domain import (
    CPU_MAP_DIR,
    DomainXmlError,
    asserts_no_nested_guests,
    facts_from_xml,
    model_extensions,
    parse_domain,
)
from nestvirt.model import Unknown
from nestvirt.rules.vm_libvirt import exposes

REAL_MAP = pytest.mark.skipif(
    not (CPU_MAP_DIR / "x86_EPYC.xml").exists(), reason="libvirt's CPU map is not installed"
)


def facts(xml: str, vendor: str = "amd", cpu_map: Path = CPU_MAP_DIR):  # type: ignore[no-untyped-def]
    return facts_from_xml(parse_domain(xml), host_vendor=vendor, cpu_map=cpu_map)


def test_parse_refuses_what_is_not_a_domain() -> None:
    with pytest.raises(DomainXmlError, match="malformed"):
        parse_domain("<domain")
    with pytest.raises(DomainXmlError, match="root element <network>"):
        parse_domain("<network/>")


def test_required_feature_exposes_without_the_map(tmp_path: Path) -> None:
    vm = facts(
        "<domain type='qemu'><name>a</name><cpu mode='custom'><model>Nope</model>"
        "<feature policy='require' name='svm'/></cpu></domain>",
        cpu_map=tmp_path,
    )
    assert vm.name == "a" and vm.domain_type == "qemu" and vm.cpu_features == {"svm": "require"}
    assert isinstance(vm.cpu_model_extensions, Unknown)
    assert exposes(vm)


def test_host_modes_and_vendor() -> None:
    vm = facts("<domain type='kvm'><name>k</name><cpu mode='host-passthrough'/></domain>", "intel")
    assert vm.host_cpu_vendor == "Intel" and vm.cpu_model_extensions == () and exposes(vm)
    unknown = facts_from_xml(
        parse_domain("<domain type='kvm'><name>k</name><cpu mode='host-model'/></domain>"),
        host_vendor=Unknown("no cpuinfo"),
    )
    assert unknown.host_cpu_vendor is None and not exposes(unknown)


@REAL_MAP
def test_models_from_libvirts_cpu_map() -> None:
    assert model_extensions("custom", "EPYC") == ("svm",)
    assert model_extensions("custom", "Skylake-Client") == ()
    assert model_extensions(None, None) == ("svm",)  # QEMU's default qemu64 carries svm
    assert isinstance(model_extensions("custom", "../../etc/passwd"), Unknown)
    assert isinstance(model_extensions("custom", "NoSuchModel"), Unknown)
    no_cpu = facts("<domain type='qemu'><name>t</name></domain>")
    assert exposes(no_cpu)  # a TCG domain without <cpu> gets qemu64, which has svm
    named = facts("<domain type='kvm'><name>e</name><cpu><model>EPYC</model></cpu></domain>")
    assert exposes(named)


def test_older_maps_with_a_parent_model(tmp_path: Path) -> None:
    (tmp_path / "x86_Base.xml").write_text(
        "<cpus><model name='Base'><feature name='vmx'/></model></cpus>"
    )
    (tmp_path / "x86_Child.xml").write_text(
        "<cpus><model name='Child'><model name='Base'/><feature name='sse4.2'/></model></cpus>"
    )
    (tmp_path / "x86_Loop.xml").write_text(
        "<cpus><model name='Loop'><model name='Loop'/></model></cpus>"
    )
    assert model_extensions("custom", "Child", tmp_path) == ("vmx",)
    assert isinstance(model_extensions("custom", "Loop", tmp_path), Unknown)


def test_metadata_assertion() -> None:
    ns = "https://nestvirt.dev/xmlns/guard/1"
    yes = parse_domain(
        f"<domain><metadata><g:guard xmlns:g='{ns}' nested-guests='none'/></metadata></domain>"
    )
    other_ns = parse_domain("<domain><metadata><guard nested-guests='none'/></metadata></domain>")
    assert asserts_no_nested_guests(yes)
    assert not asserts_no_nested_guests(other_ns)
    assert not asserts_no_nested_guests(parse_domain("<domain/>"))
