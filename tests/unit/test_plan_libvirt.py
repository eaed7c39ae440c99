"""build_plan policy: facts built here (pure) and golden in/out XML cases on test:///default.

Golden: `<case>-in.xml` is defined on libvirt's test driver, its facts are read
by the real backend (with the host CPU of CASES[case]), the plan's edits are
applied to the raw in-file and compared with `<case>-out.xml`, which must define
on test:///default and then need no further change (enable∘enable = enable).
Regenerate outs with NESTVIRT_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestvirt import domxml, rules
from nestvirt import plan_libvirt as pl
from nestvirt.errors import UsageError
from nestvirt.facts.libvirt_vm import Interface, LibvirtVmFacts
from nestvirt.model import Unknown

XML_DIR = Path(__file__).parent / "xml"
GIB = 1024 * 1024
AMD = {"host_cpu_vendor": "AMD", "host_virt_extensions": ("svm",)}
INTEL = {"host_cpu_vendor": "Intel", "host_virt_extensions": ("vmx",)}

# case -> (host CPU, plan options, actions expected)
CASES: dict[str, tuple[dict[str, Any], pl.PlanOptions, set[str]]] = {
    "kvm-nocpu": (INTEL, pl.PlanOptions(), {pl.EXPOSE}),
    "kvm-custom-model": (INTEL, pl.PlanOptions(), {pl.EXPOSE}),
    "kvm-passthrough-disabled": (AMD, pl.PlanOptions(), {pl.EXPOSE}),
    "kvm-vendor-mismatch": (AMD, pl.PlanOptions(), {pl.EXPOSE}),
    "tcg-intel-model": (AMD, pl.PlanOptions(), {pl.EXPOSE}),
    "tcg-vmx": (INTEL, pl.PlanOptions(), {pl.EXPOSE}),
    "tcg-host-passthrough": (AMD, pl.PlanOptions(), {pl.EXPOSE}),
    "tcg-host-model": (INTEL, pl.PlanOptions(), {pl.EXPOSE}),  # AMD host: svm already
    "balloon-memory": (AMD, pl.PlanOptions(), {pl.STATIC_MEMORY}),
    "comments-metadata": (INTEL, pl.PlanOptions(), {pl.EXPOSE, pl.STATIC_MEMORY}),
    "mac-filter": (AMD, pl.PlanOptions(mac_spoofing=True), {pl.ALLOW_MAC_SPOOFING}),
    "set-memory-hotplug": (
        AMD,
        pl.PlanOptions(memory_kib=4 * GIB, remove_hotplug=True),
        {pl.SET_MEMORY, pl.REMOVE_MAX_MEMORY},
    ),
}


def facts(**changes: Any) -> LibvirtVmFacts:
    base = LibvirtVmFacts(
        name="vm1",
        uri="qemu:///system",
        state="off",
        domain_type="kvm",
        host_cpu_vendor="AMD",
        host_virt_extensions=("svm",),
        cpu_mode=None,
        cpu_model=None,
        memory_kib=4 * GIB,
        current_memory_kib=4 * GIB,
        balloon_model="none",
    )
    return dataclasses.replace(base, **changes)


def plan_of(f: LibvirtVmFacts, options: pl.PlanOptions | None = None) -> Any:
    return pl.build_plan(f, rules.run(rules.Target.VM, rules.Platform.LIBVIRT, f), options)


def actions(plan: Any) -> list[str]:
    return [c.action for c in plan.changes]


# ------------------------------------------------------------------ pure policy


def test_ready_domain_gives_empty_plan() -> None:
    plan = plan_of(facts(cpu_mode="host-passthrough"))
    assert plan.empty and not plan.unfixable


def test_kvm_without_cpu_becomes_host_passthrough() -> None:
    plan = plan_of(facts())
    assert actions(plan) == [pl.EXPOSE]
    assert plan.changes[0].edits == (domxml.SetCpuMode("host-passthrough"),)
    assert plan.changes[0].codes == ("NV-V01",)


def test_kvm_named_model_is_kept_and_requires_host_flag() -> None:
    plan = plan_of(facts(cpu_mode="custom", cpu_model="Skylake-Client",
                         **INTEL))  # fmt: skip
    assert plan.changes[0].edits == (domxml.SetFeaturePolicy("vmx", "require"),)


def test_kvm_disable_becomes_require() -> None:
    plan = plan_of(facts(cpu_mode="host-model", cpu_features={"svm": "disable"}))
    assert plan.changes[0].edits == (domxml.SetFeaturePolicy("svm", "require"),)


def test_kvm_vendor_mismatch_removes_other_flag() -> None:
    plan = plan_of(facts(cpu_mode="host-passthrough", cpu_features={"vmx": "require"}))
    change = plan.changes[0]
    assert change.edits == (domxml.RemoveFeature("vmx"),)
    assert set(change.codes) == {"NV-V01", "NV-V09"} or change.codes == ("NV-V01", "NV-V09")


def test_kvm_without_host_flag_is_unfixable() -> None:
    plan = plan_of(facts(host_virt_extensions=()))
    assert plan.empty
    assert [f.code for f in plan.unfixable] == ["NV-V01"]
    assert "neither vmx nor svm" in plan.unfixable[0].message


def test_tcg_never_exposes_vmx() -> None:
    plan = plan_of(facts(domain_type="qemu", cpu_mode="custom", cpu_model="qemu64",
                         cpu_features={"vmx": "require"}, **INTEL))  # fmt: skip
    edits = pl.edits_of(plan)
    assert domxml.RenameFeature("vmx", "svm", "require") in edits
    assert all(getattr(e, "name", None) != "vmx" or isinstance(e, domxml.RemoveFeature)
               for e in edits)  # fmt: skip


def test_tcg_intel_model_is_replaced_by_amd_one() -> None:
    plan = plan_of(facts(domain_type="qemu", cpu_mode="custom", cpu_model="Penryn"))
    assert domxml.SetCpuModel("EPYC") in pl.edits_of(plan)
    assert domxml.SetFeaturePolicy("svm", "require") in pl.edits_of(plan)


def test_tcg_amd_model_carrying_svm_is_ready() -> None:
    assert plan_of(facts(domain_type="qemu", cpu_mode="custom", cpu_model="EPYC")).empty


def test_static_memory_and_hotplug_note() -> None:
    plan = plan_of(
        facts(cpu_mode="host-passthrough", current_memory_kib=GIB, max_memory_kib=8 * GIB)
    )
    assert actions(plan) == [pl.STATIC_MEMORY]
    assert any("--remove-hotplug" in n for n in plan.notes)
    plan = plan_of(facts(cpu_mode="host-passthrough", max_memory_kib=8 * GIB, virtio_mem_devices=1),
                   pl.PlanOptions(remove_hotplug=True))  # fmt: skip
    assert actions(plan) == [pl.REMOVE_VIRTIO_MEM, pl.REMOVE_MAX_MEMORY]


def test_set_memory() -> None:
    plan = plan_of(facts(cpu_mode="host-passthrough", memory_kib=GIB, current_memory_kib=GIB),
                   pl.PlanOptions(memory_kib=4 * GIB))  # fmt: skip
    assert plan.changes[0].edits == (domxml.SetMemory(4 * GIB),)
    assert "NV-V03" in plan.changes[0].codes
    same = plan_of(facts(cpu_mode="host-passthrough"), pl.PlanOptions(memory_kib=4 * GIB))
    assert same.empty


def test_mac_spoofing_drops_or_derives_the_filter() -> None:
    libvirt_filters = tuple(
        (p.stem, p.read_text()) for p in (Path(__file__).parent / "nwfilter").glob("*.xml")
    )
    ifaces = (
        Interface("52:54:00:00:00:01", "network", "default", "no-mac-spoofing",
                  ("no-mac-spoofing",), True),
        Interface("52:54:00:00:00:02", "network", "default", "clean-traffic",
                  ("clean-traffic", "no-mac-spoofing", "no-ip-spoofing"), True, libvirt_filters),
        Interface("52:54:00:00:00:03", "network", "default", "x", ("x",), Unknown("gone")),
    )  # fmt: skip
    f = facts(cpu_mode="host-passthrough", interfaces=ifaces)
    without = plan_of(f)
    assert without.empty and any("--mac-spoofing" in n and "NAT" in n for n in without.notes)
    plan = plan_of(f, pl.PlanOptions(mac_spoofing=True))
    assert plan.changes[0].edits == (domxml.DropFilterref(0, "52:54:00:00:00:01",
                                                          "no-mac-spoofing"),)  # fmt: skip
    derived = plan.changes[1]
    assert derived.edits == (domxml.SetFilterref(1, "52:54:00:00:00:02", "clean-traffic",
                                                 "nestvirt-nested-clean-traffic"),)  # fmt: skip
    assert [n for n, _ in derived.nwfilters] == ["nestvirt-nested-clean-traffic"]
    for protection in ("no-mac-spoofing", "no-ip-spoofing", "no-arp-spoofing"):
        assert protection in derived.summary
    assert len(plan.changes) == 2
    assert any("cannot tell" in n for n in plan.notes)  # the unreadable one is left alone


def test_managed_save_discarded_first_and_running_needs_stop() -> None:
    f = facts(has_managed_save=True)
    assert actions(plan_of(f))[0] == pl.DISCARD_MANAGED_SAVE
    running = facts(state="running")
    assert actions(plan_of(running)) == [pl.EXPOSE]
    assert any("--stop" in n for n in plan_of(running).notes)
    stopped = plan_of(running, pl.PlanOptions(stop=True))
    assert actions(stopped) == [pl.STOP, pl.EXPOSE, pl.START]
    # nothing to change: no stop, no discard
    assert plan_of(facts(cpu_mode="host-passthrough", state="running", has_managed_save=True),
                   pl.PlanOptions(stop=True)).empty  # fmt: skip


def test_disable_plan_hides_and_is_idempotent() -> None:
    f = facts(cpu_mode="host-passthrough")
    findings = rules.run(rules.Target.VM, rules.Platform.LIBVIRT, f)
    plan = pl.build_disable_plan(f, findings)
    assert plan.changes[0].edits == (domxml.SetFeaturePolicy("svm", "disable"),)
    hidden = facts(cpu_mode="host-passthrough", cpu_features={"svm": "disable"})
    assert pl.build_disable_plan(
        hidden, rules.run(rules.Target.VM, rules.Platform.LIBVIRT, hidden)
    ).empty


@pytest.mark.parametrize(
    ("text", "kib"),
    [("4GiB", 4 * GIB), ("4096MiB", 4 * GIB), ("4G", 4 * GIB), ("4g", 4 * GIB),
     ("1.5GiB", 3 * GIB // 2), ("4GB", 3906250), (" 2 GiB ", 2 * GIB), ("1024K", 1024)],
)  # fmt: skip
def test_parse_size(text: str, kib: int) -> None:
    assert pl.parse_size(text) == kib


@pytest.mark.parametrize("text", ["", "4", "four GiB", "4XB", "-4GiB", "0GiB", "100TiB", "4 Gi B"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(UsageError):
        pl.parse_size(text)


@given(st.text(max_size=12))
def test_parse_size_never_crashes(text: str) -> None:
    with contextlib.suppress(UsageError):
        assert pl.parse_size(text) > 0


# ------------------------------------------------------------------ golden cases


@pytest.fixture(scope="module")
def test_conn() -> Iterator[Any]:
    from nestvirt.backends import libvirt as backend

    conn = backend.open_connection("test:///default")
    yield conn
    conn.close()


def facts_on_test_driver(conn: Any, xml: str, host: dict[str, Any]) -> LibvirtVmFacts:
    from nestvirt.backends import libvirt as backend

    dom = conn.defineXML(xml)
    try:
        # the test driver has no QEMU: its guest CPU is the table's, judged again for `host`
        return dataclasses.replace(backend.vm_facts(conn, dom), guest_cpu=None, **host)
    finally:
        dom.undefine()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, test_conn: Any) -> None:
    host, options, expected = CASES[case]
    raw = (XML_DIR / f"{case}-in.xml").read_text()
    f = facts_on_test_driver(test_conn, raw, host)
    plan = plan_of(f, options)
    assert not plan.unfixable
    assert {c.action for c in plan.changes} == expected
    out = domxml.render(raw, pl.edits_of(plan))
    golden = XML_DIR / f"{case}-out.xml"
    if os.environ.get("NESTVIRT_REGEN_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()
    # the result is valid libvirt XML, exposes, and needs nothing more
    after = facts_on_test_driver(test_conn, out, host)
    findings = rules.run(rules.Target.VM, rules.Platform.LIBVIRT, after)
    assert "NV-V01" not in {x.code for x in findings}
    assert pl.remaining_definition_changes(pl.build_plan(after, findings, options)) == []


def test_every_golden_file_has_a_case() -> None:
    names = {p.name.removesuffix("-in.xml") for p in XML_DIR.glob("*-in.xml")}
    assert names == set(CASES)


# ------------------------------------------------------------------ hypothesis

EXTRA_DEVICES = [
    "<serial type='pty'><target port='0'/></serial>",
    "<console type='pty'><target type='virtio' port='0'/></console>",
    "<video><model type='vga' vram='16384' heads='1'/></video>",
    "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    "<watchdog model='i6300esb' action='reset'/>",
    "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>",
    "<input type='tablet' bus='usb'/>",
    "<!-- a device comment -->",
]
CPUS = [
    "",
    "<cpu mode='host-passthrough' check='none'/>",
    "<cpu mode='host-model'/>",
    "<cpu mode='custom' match='exact'><model>EPYC</model></cpu>",
    "<cpu mode='custom' match='exact'><model>Penryn</model><feature policy='disable' name='svm'/></cpu>",
    "<cpu mode='custom' match='exact'><model>qemu64</model><feature policy='require' name='vmx'/></cpu>",
    "<cpu><topology sockets='1' cores='2' threads='1'/></cpu>",
    "<cpu mode='host-passthrough'><feature policy='forbid' name='svm'/></cpu>",
    "<cpu mode='maximum'/>",
]  # fmt: skip
METADATA = [
    "",
    "<metadata><a:x xmlns:a='urn:a' k=\"it's\">t &amp; u</a:x></metadata>",
    "<description>line1\nline2 &lt;b&gt;</description>",
    "<!-- top comment -->",
]

domains = st.builds(
    lambda dtype, cpu, devices, meta, mem, cur, qemu_ns: (
        f"<domain type='{dtype}'"
        + (" xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'" if qemu_ns else "")
        + f">\n  <name>hyp</name>\n  {meta}\n  <memory unit='MiB'>{mem}</memory>\n"
        f"  <currentMemory unit='MiB'>{min(cur, mem)}</currentMemory>\n"
        "  <vcpu>2</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
        f"  {cpu}\n  <devices>\n    "
        + "\n    ".join(devices)
        + "\n  </devices>\n"
        + ("  <qemu:commandline><qemu:arg value='-s'/></qemu:commandline>\n" if qemu_ns else "")
        + "</domain>\n"
    ),
    st.sampled_from(["kvm", "qemu"]),
    st.sampled_from(CPUS),
    st.lists(st.sampled_from(EXTRA_DEVICES), max_size=4, unique=True),
    st.sampled_from(METADATA),
    st.sampled_from([512, 2048, 4096]),
    st.sampled_from([256, 2048, 4096]),
    st.booleans(),
)

# What enable may touch (with default options): everything else must stay byte-identical.
TOUCHED = ("cpu", "currentMemory")


def _without_touched(xml: str) -> str:
    root = domxml.parse(xml)
    for tag in TOUCHED:
        for node in root.findall(tag):
            node.getparent().remove(node)
    return domxml.serialize(root)


@settings(max_examples=150, deadline=None)
@given(xml=domains, host=st.sampled_from([AMD, INTEL]))
def test_enable_changes_nothing_unrelated_and_is_idempotent(
    xml: str, host: dict[str, Any], test_conn: Any
) -> None:
    f = facts_on_test_driver(test_conn, xml, host)
    plan = plan_of(f)
    assert not plan.unfixable
    out = domxml.render(xml, pl.edits_of(plan))
    assert _without_touched(out) == _without_touched(xml)
    if plan.empty:
        assert out == xml
    # enable∘enable = enable: the output needs no further change, and renders to itself
    again = facts_on_test_driver(test_conn, out, host)
    plan2 = plan_of(again)
    assert plan2.empty, [c.summary for c in plan2.changes]
    assert domxml.render(out, pl.edits_of(plan2)) == out
