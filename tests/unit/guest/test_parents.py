"""NV-G01…G13: recorded evidence of each parent → the right parent and its fix.

The evidence goes through the real detection (probe/cpuid.detect with a recorded
CPUID, facts/guest.gather with recorded files): CPUID leaf 0x40000000 signatures
and DMI strings as the vendors ship them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from nestvirt.facts.guest import GuestFacts, gather
from nestvirt.guestside import document, render
from nestvirt.model import Severity
from nestvirt.probe.cpuid import detect
from nestvirt.rules.guest import AZURE_ASSET_TAG, guest_findings, parent_of

CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: fpu {flags}\n"
)


def _registers(signature: str) -> tuple[int, int, int, int]:
    raw = signature.encode("latin-1").ljust(12, b"\0")
    ebx, ecx, edx = (int.from_bytes(raw[i : i + 4], "little") for i in (0, 4, 8))
    return 0x40000001, ebx, ecx, edx


def recorded(
    signature: str | None,
    dmi: dict[str, str] | None = None,
    *,
    kernel: str = "6.1.0-28-amd64",
    flags: str = "",
    model: str = "Intel Xeon Processor (Cascadelake)",
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    **overrides: Any,
) -> GuestFacts:
    """GuestFacts from a recorded CPUID (None: bare metal, bit 31 clear) and recorded files."""

    def cpuid(leaf: int, _sub: int) -> tuple[int, int, int, int]:
        if leaf == 1:
            return 0, 0, (1 << 31) if signature is not None else 0, 0
        if leaf == 0x40000000 and signature is not None:
            return _registers(signature)
        return 0, 0, 0, 0

    table = {f"/sys/class/dmi/id/{k}": v for k, v in (dmi or {}).items()}
    table["/proc/cpuinfo"] = CPUINFO.format(model=model, flags=flags)
    table.update(files or {})

    def read(path: str) -> str:
        if path not in table:
            raise FileNotFoundError(path)
        return table[path]

    facts = gather(hypervisor=detect(cpuid, read), read=read, environ=env or {})
    defaults: dict[str, Any] = {
        "kernel_release": kernel,
        "container": None,
        "kvm_device": False,
        "kvm_accessible": False,
        "kvm_module": None,
    }
    return replace(facts, **{**defaults, **overrides})


QEMU_PC = {"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)",
           "bios_vendor": "SeaBIOS"}  # fmt: skip
HYPERV_DMI = {"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine",
              "bios_vendor": "Microsoft Corporation", "chassis_asset_tag": "0000-0000-0000"}  # fmt: skip
AZURE_DMI = {**HYPERV_DMI, "chassis_asset_tag": AZURE_ASSET_TAG}

# (id, facts, code, kind, a piece of the fix that must be there)
CASES = [
    ("hyper-v", recorded("Microsoft Hv", HYPERV_DMI), "NV-G01", "hyperv",
     "Set-VMProcessor -VMName NAME -ExposeVirtualizationExtensions $true"),
    ("wsl2", recorded("Microsoft Hv", kernel="5.15.153.1-microsoft-standard-WSL2"), "NV-G02",
     "wsl2", "nestedVirtualization=true"),
    ("libvirt-kvm", recorded("KVMKVMKVM", QEMU_PC), "NV-G03", "kvm", "nestvirt enable VM"),
    ("kvm-hyperv-enlightened", recorded("Linux KVM Hv", QEMU_PC), "NV-G03", "kvm",
     "host-passthrough"),
    ("proxmox-kvm64", recorded("KVMKVMKVM", {**QEMU_PC, "product_name":
     "Standard PC (i440FX + PIIX, 1996)"}, model="Common KVM processor"), "NV-G04", "proxmox",
     "qm set VMID --cpu host"),
    ("proxmox-smbios", recorded("KVMKVMKVM", {**QEMU_PC, "sys_vendor": "Proxmox"}), "NV-G04",
     "proxmox", "qm set VMID --cpu host"),
    ("vmware", recorded("VMwareVMware", {"sys_vendor": "VMware, Inc.",
     "product_name": "VMware Virtual Platform", "bios_vendor": "Phoenix Technologies LTD"}),
     "NV-G05", "vmware", 'vhv.enable = "TRUE"'),
    ("vmware-hw20", recorded("VMwareVMware", {"sys_vendor": "VMware, Inc.",
     "product_name": "VMware20,1", "bios_vendor": "VMware, Inc."}), "NV-G05", "vmware",
     "Expose hardware assisted virtualization"),
    ("virtualbox", recorded("VBoxVBoxVBox", {"sys_vendor": "innotek GmbH",
     "product_name": "VirtualBox", "bios_vendor": "innotek GmbH"}), "NV-G06", "virtualbox",
     "VBoxManage modifyvm NAME --nested-hw-virt on"),
    ("virtualbox-kvm-paravirt", recorded("KVMKVMKVM", {"sys_vendor": "innotek GmbH",
     "product_name": "VirtualBox"}), "NV-G06", "virtualbox", "--nested-hw-virt on"),
    ("xen", recorded("XenVMMXenVMM", {"sys_vendor": "Xen", "product_name": "HVM domU"},
     files={"/sys/hypervisor/type": "xen"}), "NV-G07", "xen", "nestedhvm=1"),
    ("qemu-tcg", recorded("TCGTCGTCGTCG", QEMU_PC, model="AMD EPYC Processor"), "NV-G08",
     "tcg", "-cpu EPYC,+svm"),
    ("aws-nitro", recorded("KVMKVMKVM", {"sys_vendor": "Amazon EC2", "product_name": "m5.large",
     "bios_vendor": "Amazon EC2", "chassis_asset_tag": "Amazon EC2"}), "NV-G09", "aws",
     "--cpu-options NestedVirtualization=enabled"),
    ("aws-xen", recorded("XenVMMXenVMM", {"sys_vendor": "Xen", "product_name": "HVM domU",
     "bios_version": "4.11.amazon"}), "NV-G09", "aws", ".metal"),
    ("gce", recorded("KVMKVMKVM", {"sys_vendor": "Google", "product_name":
     "Google Compute Engine", "bios_vendor": "Google"}), "NV-G10", "gcp",
     "--enable-nested-virtualization"),
    ("azure", recorded("Microsoft Hv", AZURE_DMI), "NV-G11", "azure", "--security-type Standard"),
    ("github-hosted", recorded("Microsoft Hv", AZURE_DMI, env={"GITHUB_ACTIONS": "true",
     "RUNNER_ENVIRONMENT": "github-hosted", "RUNNER_ARCH": "X64", "HOME": "/x"},
     kvm_device=True), "NV-G12", "ci", "99-kvm4all.rules"),
    ("unknown", recorded("ZZZZZZZZZZZZ"), "NV-G13", "unknown", "grep -wE 'vmx|svm'"),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "code", "kind", "fix"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_parent_gets_its_rule_and_fix(
    facts: GuestFacts, code: str, kind: str, fix: str
) -> None:
    parent = parent_of(facts)
    assert parent is not None and parent.kind == kind, parent
    found = guest_findings(facts)
    assert [f.code for f in found] == [code]
    (finding,) = found
    assert finding.fix is not None and fix in finding.fix, finding.fix
    assert finding.severity is Severity.WARNING  # no vmx/svm in these recordings
    assert parent.name in finding.message


@pytest.mark.parametrize(
    "facts",
    [
        recorded(None),  # bit 31 clear, no DMI
        recorded(None, {"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R650"}, flags="vmx"),
        recorded(None, env={"GITHUB_ACTIONS": "true", "RUNNER_ENVIRONMENT": "self-hosted"}),
        recorded(None, kernel="4.4.0-19041-Microsoft"),  # WSL1: no VM, no kernel of its own
    ],
    ids=["bare", "dell-server", "self-hosted-runner-on-metal", "wsl1"],
)
def test_a_machine_that_is_not_a_guest_gets_no_nv_g_finding(facts: GuestFacts) -> None:
    assert not facts.is_guest
    assert parent_of(facts) is None
    assert guest_findings(facts) == []


def test_exposed_extensions_make_it_info() -> None:
    facts = recorded("KVMKVMKVM", {"sys_vendor": "Google", "product_name": "Google Compute Engine"},
                     flags="vmx")  # fmt: skip
    (finding,) = guest_findings(facts)
    assert (finding.code, finding.severity) == ("NV-G10", Severity.INFO)
    assert "passes vmx through" in finding.message


def test_kvm_without_extensions_that_still_runs_guests_says_so() -> None:
    facts = recorded("KVMKVMKVM", kvm_device=True, kvm_module="kvm_pvm", kvm_runs_guests=True)
    (finding,) = guest_findings(facts)
    assert finding.code == "NV-G03" and "kvm_pvm" in finding.message


def test_a_copied_cloud_identity_under_tcg_is_named_and_flagged() -> None:
    facts = recorded("TCGTCGTCGTCG", {"sys_vendor": "Amazon EC2", "product_name": "m5.large"})
    (finding,) = guest_findings(facts)
    assert finding.code == "NV-G09"
    assert "CPUID says QEMU TCG" in finding.message


def test_github_runner_with_usable_kvm_is_info_and_without_kvm_says_which_runner() -> None:
    env = {"GITHUB_ACTIONS": "true", "RUNNER_ENVIRONMENT": "github-hosted", "RUNNER_ARCH": "ARM64"}
    usable = recorded("Microsoft Hv", AZURE_DMI, env=env, kvm_device=True, kvm_accessible=True)
    (finding,) = guest_findings(usable)
    assert (finding.code, finding.severity, finding.fix) == ("NV-G12", Severity.INFO, None)
    (missing,) = guest_findings(recorded("Microsoft Hv", AZURE_DMI, env=env))
    assert "ARM64" in missing.message and "ubuntu-latest" in (missing.fix or "")


def test_ci_markers_keep_only_the_whitelist() -> None:
    facts = recorded("KVMKVMKVM", env={"GITHUB_ACTIONS": "true", "GITHUB_TOKEN": "secret",
                                       "AWS_SECRET_ACCESS_KEY": "x"})  # fmt: skip
    assert facts.ci == {"GITHUB_ACTIONS": "true"}


def test_guestside_document_and_text_on_this_machine() -> None:
    doc = document()
    assert set(doc) == {"schema", "guest", "parent", "facts", "findings"}
    assert doc["schema"] == "nestvirt.guestside/1"
    assert all(f["code"].startswith("NV-G") for f in doc["findings"])
    assert bool(doc["findings"]) == doc["guest"]
    assert render(doc)
