"""Every `nestvirt …` fix that status prints works (issue 10), on the real libvirtd.

For every domain fixture of the suite (the golden definitions in tests/unit/xml,
the guest-CPU matrix, and shapes for memory, hotplug, filters, managed save and
snapshots) defined on qemu:///system: run each printed `nestvirt` fix as a real
process (with --yes), re-run status, and the finding it was printed for is gone.
A fix that is not a `nestvirt` command is not run; a finding nestvirt cannot fix
here must not offer one (checked by running it all the same).

Also `--mac-spoofing` end to end behind clean-traffic: libvirt accepts the
derived filter, a TCG domain starts with it (its nwfilter binding names it),
a second VM shares it, and `undo` puts the original reference back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import domain_xml
from tests.integration.test_guest_cpu_matrix import CASES

XML_DIR = Path(__file__).parent.parent / "unit" / "xml"
IFACE = (
    "<interface type='ethernet'><mac address='52:54:00:{mac}'/><model type='virtio'/>"
    "<filterref filter='{filter}'/></interface>"
)
OWN_FILTER = """<filter name='{name}' chain='root'>
  <filterref filter='no-ip-spoofing'/>
  <filterref filter='no-arp-mac-spoofing'/>
  <filterref filter='allow-arp'/>
</filter>"""


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nestvirt", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)  # fmt: skip


def findings(name: str, env: dict[str, str]) -> list[dict[str, Any]]:
    done = run("status", name, "--json", env=env)
    assert done.returncode in (0, 1), done.stderr
    (vm,) = json.loads(done.stdout)["vms"]
    return list(vm["findings"])


def fixtures() -> list[tuple[str, str]]:
    """(label, domain XML with NAME for the name)."""
    out = []
    for path in sorted(XML_DIR.glob("*-in.xml")):
        text = re.sub(r"<name>[^<]*</name>", "<name>NAME</name>", path.read_text())
        out.append((path.stem, text))
    for index, (kind, cpu) in enumerate(CASES[::3]):  # every third matrix definition
        out.append((f"matrix-{index}", domain_xml("NAME", type=kind, cpu=cpu, memory=256)))
    tcg = "<cpu mode='custom' match='exact' check='none'><model>Penryn</model></cpu>"
    out += [
        ("balloon", domain_xml("NAME", type="qemu", memory=2048, current=1024, cpu=tcg,
                               devices="<memballoon model='virtio'/>")),
        ("hotplug", domain_xml("NAME", type="qemu", cpu=tcg.replace(
            "</cpu>", "<numa><cell id='0' cpus='0' memory='4' unit='GiB'/></numa></cpu>"),
            extra_top="<maxMemory slots='4' unit='GiB'>16</maxMemory>")),
        ("clean-traffic", domain_xml("NAME", type="qemu", cpu=tcg, devices=IFACE.format(
            mac="aa:00:01", filter="clean-traffic"))),
        ("kvm-clean-traffic", domain_xml("NAME", type="kvm", devices=IFACE.format(
            mac="aa:00:02", filter="clean-traffic"))),
        ("tcg-vmx", domain_xml("NAME", type="qemu", cpu=tcg.replace(
            "</model>", "</model><feature policy='require' name='vmx'/>"))),
    ]  # fmt: skip
    return out


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NESTVIRT_STATE_DIR": str(tmp_path / "state"),
            "NESTVIRT_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip


@pytest.fixture()
def cleanup(qemu_conn: Any) -> Iterator[list[str]]:
    import libvirt

    names: list[str] = []
    yield names
    for name in names:
        try:
            dom = qemu_conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)  # fmt: skip
        except libvirt.libvirtError:
            pass


@pytest.mark.libvirt
@pytest.mark.slow
def test_every_printed_nestvirt_fix_removes_its_finding(
    qemu_conn: Any, env: dict[str, str], cleanup: list[str]
) -> None:
    import libvirt

    ran, not_offered, broken, rejected = 0, 0, [], []
    for label, template in fixtures():
        name = f"nvtest-fix-{label[:20]}-{uuid.uuid4().hex[:6]}"
        try:
            dom = qemu_conn.defineXML(template.replace("<name>NAME</name>", f"<name>{name}</name>"))
        except libvirt.libvirtError:
            rejected.append(label)  # valid for the test driver only
            continue
        cleanup.append(name)
        if label == "balloon":  # a managed-save image too (NV-V05), from a real start
            dom.create()
            dom.managedSave(0)
        for finding in findings(name, env):
            fix = finding.get("fix") or ""
            if not fix.startswith("nestvirt "):
                not_offered += 1
                continue
            argv = shlex.split(fix.split("  #")[0])[1:]
            done = run(*argv, "--yes", env=env)
            ran += 1
            gone = finding["code"] not in {f["code"] for f in findings(name, env)}
            if done.returncode != 0 or not gone:
                broken.append((label, finding["code"], fix, done.returncode, done.stderr[-300:]))
    assert broken == []
    assert rejected == ["set-memory-hotplug-in"]  # maxMemory without NUMA: see "hotplug"
    assert ran >= 20 and not_offered >= 10  # both kinds occur in the fixtures
    print(f"fixes run: {ran}; findings with no nestvirt fix: {not_offered}")


@pytest.mark.libvirt
def test_mac_spoofing_behind_clean_traffic_and_own_chain(
    qemu_conn: Any, env: dict[str, str], cleanup: list[str]
) -> None:
    import libvirt

    own = f"nvtest-own-{uuid.uuid4().hex[:6]}"
    qemu_conn.nwfilterDefineXML(OWN_FILTER.format(name=own))
    tcg = "<cpu mode='custom' match='exact' check='none'><model>EPYC</model></cpu>"
    names = []
    for index, top in enumerate(("clean-traffic", "clean-traffic", own)):
        name = f"nvtest-mac-{index}-{uuid.uuid4().hex[:6]}"
        qemu_conn.defineXML(
            domain_xml(
                name,
                type="qemu",
                memory=128,
                cpu=tcg,
                devices=IFACE.format(mac=f"bb:00:0{index}", filter=top),
            )
        )
        cleanup.append(name)
        names.append(name)
    try:
        before = qemu_conn.lookupByName(names[0]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        done = run("enable", names[0], "--mac-spoofing", "--yes", "--json", env=env)
        assert done.returncode == 0, done.stderr
        (change,) = json.loads(done.stdout)["changes"]
        assert change["code"] == "NV-V04" and change["action"] == "allow-mac-spoofing"
        derived = qemu_conn.nwfilterLookupByName("nestvirt-nested-clean-traffic")
        chain = derived.XMLDesc(0)
        assert "no-mac-spoofing" not in chain and "no-ip-spoofing" not in chain
        assert "no-other-l2-traffic" in chain and "allow-incoming-ipv4" in chain
        assert "NV-V04" not in {f["code"] for f in findings(names[0], env)}
        # a second VM behind the same chain shares the derived filter
        uuid_before = derived.UUIDString()
        assert run("enable", names[1], "--mac-spoofing", "--yes", env=env).returncode == 0
        assert qemu_conn.nwfilterLookupByName("nestvirt-nested-clean-traffic").UUIDString() \
            == uuid_before  # fmt: skip
        # a running TCG domain starts with it: its port binding names the derived filter
        dom = qemu_conn.lookupByName(names[0])
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        bindings = {b.filterName() for b in qemu_conn.listAllNWFilterBindings(0)}
        assert "nestvirt-nested-clean-traffic" in bindings
        dom.destroy()
        # the user's own chain: its anti-spoofing includes dropped, allow-arp kept
        assert run("enable", names[2], "--mac-spoofing", "--yes", env=env).returncode == 0
        mine = qemu_conn.nwfilterLookupByName(f"nestvirt-nested-{own}").XMLDesc(0)
        assert "allow-arp" in mine and "no-ip-spoofing" not in mine
        assert "no-arp-mac-spoofing" not in mine
        # undo puts the original reference back; the shared filter stays for the other VM
        assert run("undo", names[0], "--yes", env=env).returncode == 0
        assert qemu_conn.lookupByName(names[0]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
        assert qemu_conn.nwfilterLookupByName("nestvirt-nested-clean-traffic")
    finally:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                qemu_conn.lookupByName(name).undefine()
        for filter_name in (f"nestvirt-nested-{own}", own):
            with contextlib.suppress(libvirt.libvirtError):
                qemu_conn.nwfilterLookupByName(filter_name).undefine()
