"""The guest side end to end: who runs this machine, who runs the lab VM, and the lab VM
booted with each parent's SMBIOS identity (QEMU -smbios, TCG, direct) naming that parent.

Also NV-V12 against real libvirt: a TCG domain on this host, whose libvirt offers KVM.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from nestvirt import rules
from nestvirt.backends import libvirt as backend
from nestvirt.lab import image
from nestvirt.lab.identity import IDENTITIES, boot_identity
from nestvirt.rules import Platform, Target

# CPUID signature of this machine -> the NV-G code `status` must give it.
EXPECTED_HERE = {"KVMKVMKVM": "NV-G03", "TCGTCGTCGTCG": "NV-G08", "Microsoft Hv": "NV-G01",
                 "VMwareVMware": "NV-G05", "VBoxVBoxVBox": "NV-G06", "XenVMMXenVMM": "NV-G07"}  # fmt: skip
# parent kind -> its code
CODE_OF = {"aws": "NV-G09", "gcp": "NV-G10", "vmware": "NV-G05", "virtualbox": "NV-G06",
           "azure": "NV-G11", "tcg": "NV-G08"}  # fmt: skip
BOOTED = ("aws", "gce", "vmware", "virtualbox", "azure", "tcg")


def nestvirt(*args: str) -> tuple[int, Any, str]:
    done = subprocess.run([sys.executable, "-m", "nestvirt", *args], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_status_names_the_parent_of_this_machine() -> None:
    _, doc, _ = nestvirt("status", "--host-only", "--json")
    host = doc["host"]
    signature = host["facts"]["guest"]["hypervisor"]["signature"]
    assert signature in EXPECTED_HERE, f"this machine's parent {signature!r} is not one we expect"
    guest_codes = [f["code"] for f in host["findings"] if f["code"].startswith("NV-G")]
    assert guest_codes == [EXPECTED_HERE[signature]]
    # the probe names it too
    _, probe, _ = nestvirt("probe", "--json")
    assert EXPECTED_HERE[signature] in [f["code"] for f in probe["findings"]]


@pytest.mark.qemu
@pytest.mark.slow
def test_lab_vm_with_each_parent_identity_names_that_parent() -> None:
    image.ensure_image()  # a cold build is not part of the timing
    started = time.monotonic()
    seen = {}
    for name in BOOTED:
        doc, outcome = boot_identity(name)
        assert doc is not None, (name, outcome.error, outcome.console_tail[-500:])
        assert doc["schema"] == "nestvirt.guestside/1" and doc["guest"] is True, doc
        kind = IDENTITIES[name][1]
        assert doc["parent"]["kind"] == kind, (name, doc["parent"])
        codes = [f["code"] for f in doc["findings"]]
        assert codes == [CODE_OF[kind]], (name, codes)
        (finding,) = doc["findings"]
        # every lab VM is TCG: CPUID says so whatever the firmware claims
        assert doc["facts"]["hypervisor"]["signature"] == "TCGTCGTCGTCG"
        if kind != "tcg":
            assert "CPUID says QEMU TCG" in finding["message"]
        seen[name] = round(outcome.seconds, 1)
    took = time.monotonic() - started
    assert took < 90, f"{len(BOOTED)} identity boots took {took:.1f} s: {seen}"


@pytest.mark.libvirt
def test_tcg_domain_on_this_kvm_host_is_nv_v12(define: Callable[..., Any]) -> None:
    dom = define("v12", type="qemu")
    conn = dom.connect()
    facts = backend.vm_facts(conn, dom)
    assert facts.domain_type == "qemu" and facts.host_kvm is True
    found = [f for f in rules.run(Target.VM, Platform.LIBVIRT, facts) if f.code == "NV-V12"]
    if facts.host_virt_extensions:
        assert len(found) == 1 and "tens of times slower" in found[0].message
    else:  # this machine's KVM passes no vmx/svm: TCG is how its VMs nest, no NV-V12
        assert found == []
        with_svm = dataclasses.replace(facts, host_virt_extensions=("svm",))
        found = [f for f in rules.run(Target.VM, Platform.LIBVIRT, with_svm) if f.code == "NV-V12"]
        assert len(found) == 1 and "tens of times slower" in found[0].message
    kvm = backend.vm_facts(conn, define("v12kvm", type="kvm"))
    assert not [f for f in rules.run(Target.VM, Platform.LIBVIRT, kvm) if f.code == "NV-V12"]
