"""Domain XML → LibvirtVmFacts without a connection; model vendors from libvirt's CPU map."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestvirt.guard.domain import (
    CPU_MAP_DIR,
    DomainXmlError,
    asserts_no_nested_guests,
    facts_from_xml,
    model_vendor,
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
    assert vm.cpu_model_vendor is None
    assert exposes(vm)


def test_host_modes_and_vendor() -> None:
    vm = facts("<domain type='kvm'><name>k</name><cpu mode='host-passthrough'/></domain>", "intel")
    assert vm.host_cpu_vendor == "Intel" and vm.host_virt_extensions == ("vmx",) and exposes(vm)
    unknown = facts_from_xml(
        parse_domain("<domain type='kvm'><name>k</name><cpu mode='host-model'/></domain>"),
        host_vendor=Unknown("no cpuinfo"),
    )
    assert unknown.host_cpu_vendor is None and not exposes(unknown)


@REAL_MAP
def test_model_vendors_from_libvirts_cpu_map() -> None:
    assert model_vendor("custom", "EPYC") == "AMD"
    assert model_vendor("custom", "Skylake-Client") == "Intel"
    assert model_vendor("host-model", None) is None
    assert model_vendor("custom", "../../etc/passwd") is None
    assert model_vendor("custom", "NoSuchModel") is None
    no_cpu = facts("<domain type='qemu'><name>t</name></domain>")
    assert exposes(no_cpu)  # TCG: QEMU's default qemu64 (AMD vendor) carries svm


def test_kvm_named_models_need_a_require() -> None:
    # libvirt's CPU map lists svm for EPYC and qemu64; under KVM QEMU turns it off (issue 10)
    for cpu in ("", "<cpu><model>EPYC</model></cpu>", "<cpu><model>qemu64</model></cpu>"):
        vm = facts(f"<domain type='kvm'><name>e</name>{cpu}</domain>")
        assert not exposes(vm), cpu
    required = facts(
        "<domain type='kvm'><name>e</name><cpu><model>EPYC</model>"
        "<feature policy='require' name='svm'/></cpu></domain>"
    )
    assert exposes(required)


def test_tcg_intel_model_without_require(tmp_path: Path) -> None:
    (tmp_path / "x86_Mine.xml").write_text(
        "<cpus><model name='Mine'><vendor name='Intel'/><feature name='svm'/></model></cpus>"
    )
    vm = facts("<domain type='qemu'><name>m</name><cpu><model>Mine</model></cpu></domain>",
               cpu_map=tmp_path)  # fmt: skip
    assert vm.cpu_model_vendor == "Intel" and not exposes(vm)


def test_metadata_assertion() -> None:
    ns = "https://nestvirt.dev/xmlns/guard/1"
    yes = parse_domain(
        f"<domain><metadata><g:guard xmlns:g='{ns}' nested-guests='none'/></metadata></domain>"
    )
    other_ns = parse_domain("<domain><metadata><guard nested-guests='none'/></metadata></domain>")
    assert asserts_no_nested_guests(yes)
    assert not asserts_no_nested_guests(other_ns)
    assert not asserts_no_nested_guests(parse_domain("<domain/>"))
