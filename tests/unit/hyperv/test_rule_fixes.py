"""Issue 13: the Hyper-V VM rules' fixes are `nestvirt enable` where enable makes the change,
naming the host as the user reached it; the cmdlets stay in the plan (and in the fixes
nestvirt has no command for: saved state, checkpoints, configuration version)."""

from __future__ import annotations

import inspect
import re
import shlex
from dataclasses import replace
from typing import Any

import click
import pytest
from conftest import GIB, fixture, load_doc
from fake_powershell import FakePowerShell
from helpers import HOSTILE, use_fake_powershell
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestvirt import enable_hyperv, plan_hyperv, rules
from nestvirt.cli.enable import command as enable_command
from nestvirt.commands import ps_quote
from nestvirt.errors import UsageError
from nestvirt.facts.hyperv import HyperVHostFacts, HyperVVmFacts, NetworkAdapter, parse_snapshot
from nestvirt.model import Finding, Severity
from nestvirt.plan_libvirt import parse_size
from nestvirt.platforms import hyperv as hyperv_platform
from nestvirt.rules import Platform

# the rules whose change `nestvirt enable` makes (NV-V07: the stop and start around it)
ENABLE_FIXES = ("NV-V01", "NV-V02", "NV-V03", "NV-V04", "NV-V07")
CMDLET = re.compile(r"\b(?:Set|Stop|Start|Get|Save|Restore|Move|Remove|Update)-VM\w*")
BASE = parse_snapshot(load_doc("ws2025-intel-demo.json"))  # HV01, build 26100, Intel; DemoVM
READY = replace(
    BASE.vms[0],
    expose_virtualization_extensions=True,
    dynamic_memory_enabled=False,
    startup_bytes=8 * GIB,
    adapters=tuple(replace(a, mac_address_spoofing="On") for a in BASE.vms[0].adapters),
)


def fixes(vm: HyperVVmFacts, host: HyperVHostFacts) -> dict[str, str | None]:
    return {f.code: f.fix for f in enable_hyperv.vm_findings(vm, host)}


def reached(how: str | None = "HV01") -> HyperVHostFacts:
    return replace(BASE.host, reached_as=how)


def section(doc: str, heading: str) -> str:
    return inspect.cleandoc(doc).split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


# (id, VM changes from READY, host changes, code, the fix)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("v01-off", {"expose_virtualization_extensions": False}, {}, "NV-V01",
     "nestvirt enable --hyperv HV01 DemoVM"),
    ("v01-running", {"expose_virtualization_extensions": False, "state": "Running"}, {},
     "NV-V01", "nestvirt enable --hyperv HV01 --stop DemoVM"),
    # enable discards the saved state itself (its plan says the memory is lost)
    ("v01-saved", {"expose_virtualization_extensions": False, "state": "Saved"}, {}, "NV-V01",
     "nestvirt enable --hyperv HV01 DemoVM"),
    ("v01-too-old", {"expose_virtualization_extensions": False, "version": "5.0"}, {},
     "NV-V01", "after NV-V08's Update-VMVersion -Name 'DemoVM': nestvirt enable --hyperv HV01 DemoVM"),
    ("v02-off", {"dynamic_memory_enabled": True}, {}, "NV-V02",
     "nestvirt enable --hyperv HV01 DemoVM"),
    # 14361+: enable turns it off in a running VM only when it stops the VM anyway
    ("v02-running", {"dynamic_memory_enabled": True, "state": "Running"}, {}, "NV-V02",
     "nestvirt enable --hyperv HV01 --stop DemoVM"),
    ("v02-running-preview", {"dynamic_memory_enabled": True, "state": "Running"},
     {"build": 10586}, "NV-V02", "nestvirt enable --hyperv HV01 --stop DemoVM"),
    ("v02-saved-preview", {"dynamic_memory_enabled": True, "state": "Saved"}, {"build": 10586},
     "NV-V02", "nestvirt enable --hyperv HV01 DemoVM"),
    # a saved VM enable leaves alone on 14361+: nestvirt has no command for it
    ("v02-saved", {"dynamic_memory_enabled": True, "state": "Saved"}, {}, "NV-V02",
     "Set-VMMemory -VMName 'DemoVM' -DynamicMemoryEnabled $false"),
    ("v03-off", {"startup_bytes": 2 * GIB}, {}, "NV-V03",
     "nestvirt enable --hyperv HV01 --memory 4GiB DemoVM"),
    ("v03-running", {"startup_bytes": 2 * GIB, "state": "Running"}, {}, "NV-V03",
     "nestvirt enable --hyperv HV01 --memory 4GiB --stop DemoVM"),
    # spoofing needs no stop; exposing the extensions of the same running VM does
    ("v04-running", {"adapters": BASE.vms[0].adapters, "state": "Running"}, {}, "NV-V04",
     "nestvirt enable --hyperv HV01 --mac-spoofing DemoVM"),
    ("v04-running-hidden", {"adapters": BASE.vms[0].adapters, "state": "Running",
     "expose_virtualization_extensions": False}, {}, "NV-V04",
     "nestvirt enable --hyperv HV01 --mac-spoofing --stop DemoVM"),
    ("v07-running", {"state": "Running"}, {}, "NV-V07",
     "nestvirt enable --hyperv HV01 --stop DemoVM"),
    ("v07-saved", {"state": "Saved"}, {}, "NV-V07", "Stop-VM -Name 'DemoVM'"),
    # no nestvirt command: the platform's own
    ("v05", {"state": "Saved"}, {}, "NV-V05", "Remove-VMSavedState -VMName 'DemoVM'"),
    ("v08", {"version": "5.0"}, {}, "NV-V08", "Update-VMVersion -Name 'DemoVM'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("vm_changes", "host_changes", "code", "fix"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_fix(
    vm_changes: dict[str, Any], host_changes: dict[str, Any], code: str, fix: str
) -> None:
    assert fixes(replace(READY, **vm_changes), replace(reached(), **host_changes))[code] == fix


@pytest.mark.parametrize(
    ("how", "option"),
    [("HV01", "--hyperv HV01"), ("", "--hyperv ''"), (None, "--hyperv HOST"),
     ("admin@hv 01:5986", "--hyperv 'admin@hv 01:5986'")],
)  # fmt: skip
def test_the_fix_names_the_host_as_reached(how: str | None, option: str) -> None:
    vm = replace(READY, expose_virtualization_extensions=False)
    assert fixes(vm, reached(how))["NV-V01"] == f"nestvirt enable {option} DemoVM"


def test_reached_through() -> None:
    """A snapshot names its host; Remoting the host as given; local PowerShell ""."""
    assert BASE.host.reached_as is None  # parsed: nobody said
    assert BASE.reached_through(host=None, from_snapshot=True).host.reached_as == "HV01"
    assert BASE.reached_through(host="hv9", from_snapshot=False).host.reached_as == "hv9"
    assert BASE.reached_through(host=None, from_snapshot=False).host.reached_as == ""
    assert BASE.reached_through(host="", from_snapshot=False).host.reached_as == ""
    nameless = replace(BASE, host=replace(BASE.host, name=""))
    assert nameless.reached_through(host=None, from_snapshot=True).host.reached_as is None


def v01_fix(report: Any) -> str | None:
    (vm,) = report.vms
    return next(f.fix for f in vm.findings if f.code == "NV-V01")


def test_status_names_the_host_as_the_user_reached_it(monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(fixture("ws2025-intel-demo.json"))
    snapshot = hyperv_platform.status_report(host=None, snapshot=path, vm_names=[])
    assert v01_fix(snapshot) == "nestvirt enable --hyperv HV01 DemoVM"
    assert snapshot.host.facts["reached_as"] == "HV01"  # in the status JSON's host facts
    # facts nobody said the way to: the placeholder
    assert v01_fix(hyperv_platform.report_of(BASE)) == "nestvirt enable --hyperv HOST DemoVM"
    # this Windows machine (local PowerShell, played by the stand-in)
    use_fake_powershell(monkeypatch, FakePowerShell(load_doc("ws2025-intel-demo.json")))
    local = hyperv_platform.status_report(host=None, snapshot=None, vm_names=[])
    assert v01_fix(local) == "nestvirt enable --hyperv '' DemoVM"
    assert shlex.split(v01_fix(local) or "")[2:] == ["--hyperv", "", "DemoVM"]


def test_the_enable_flow_judges_with_the_host_as_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = str(fixture("ws2025-intel-demo.json"))
    subject = enable_hyperv.HyperVSubject("DemoVM", snapshot=path, dry_run=True)
    try:
        found = {f.code: f.fix for f in subject.read().findings}
    finally:
        subject.close()
    assert found["NV-V01"] == "nestvirt enable --hyperv HV01 DemoVM"
    use_fake_powershell(monkeypatch, FakePowerShell(load_doc("ws2025-intel-demo.json")))
    local = enable_hyperv.HyperVSubject("DemoVM", dry_run=True)
    try:
        found = {f.code: f.fix for f in local.read().findings}
    finally:
        local.close()
    assert found["NV-V04"] == "nestvirt enable --hyperv '' --mac-spoofing DemoVM"


@pytest.mark.parametrize("code", ENABLE_FIXES)
def test_fix_sections_name_nestvirt_not_cmdlets(code: str) -> None:
    (rule,) = [r for r in rules.lookup(code) if r.platform == Platform.HYPERV]
    fix = section(rule.doc, "Fix")
    assert "nestvirt enable --hyperv HOST" in fix, code
    assert not CMDLET.findall(fix), code


# --- the property: hostile VM and host names, every VM state that matters ----------------

names = st.text(
    alphabet=st.one_of(
        st.sampled_from([*"'\u2018\u2019\u201a\u201b\"`$();|&\n\r\t {}@#<>-=\\"]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    min_size=1,
)
# a host as the user typed it ("" this machine, None not known); a host name never starts
# with "-" (`--hyperv -x` would be read as --hyperv and an option -x)
hosts = st.one_of(st.none(), st.just(""), names.filter(lambda h: not h.startswith("-")))
vms = st.builds(
    lambda name, state, expose, dynamic, startup, version, spoofing: replace(
        READY,
        name=name,
        state=state,
        expose_virtualization_extensions=expose,
        dynamic_memory_enabled=dynamic,
        startup_bytes=startup,
        version=version,
        adapters=(NetworkAdapter("Network Adapter", spoofing, "Default Switch"),),
    ),
    names,
    st.sampled_from(["Off", "Running", "Paused", "Saved", "FastSaved"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([2 * GIB, 4 * GIB, 8 * GIB]),
    st.sampled_from(["5.0", "8.0", "9.0", "10.0"]),
    st.sampled_from(["On", "Off"]),
)
host_facts = st.builds(
    lambda how, build, maker: replace(
        BASE.host, reached_as=how, build=build, cpu_manufacturer=maker
    ),
    hosts,
    st.sampled_from([10586, 14393, 26100]),
    st.sampled_from(["GenuineIntel", "AuthenticAMD"]),
)


def parse_enable(argv: list[str]) -> dict[str, Any]:
    """`nestvirt enable ARGV` as the real command line reads it (nothing runs)."""
    assert argv[:2] == ["nestvirt", "enable"], argv
    with click.Context(enable_command, resilient_parsing=True) as ctx:
        enable_command.parse_args(ctx, argv[2:])
        return dict(ctx.params)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vm=vms, host=host_facts)
def test_every_nestvirt_fix_is_one_enable_argv_that_works(
    vm: HyperVVmFacts, host: HyperVHostFacts
) -> None:
    findings = enable_hyperv.vm_findings(vm, host)
    for f in findings:
        if f.code not in ENABLE_FIXES or f.fix is None:
            continue
        fix = f.fix
        blocked = f"after NV-V08's Update-VMVersion -Name {ps_quote(vm.name)}: "
        if fix.startswith(blocked):
            assert any(g.code == "NV-V08" and g.severity is Severity.ERROR for g in findings)
            fix = fix[len(blocked) :]
        if not fix.startswith("nestvirt "):
            # nestvirt has no command: a saved VM enable leaves dynamic memory on, or NV-V07's
            assert (f.code, vm.is_saved) in {("NV-V02", True), ("NV-V07", True)}, f
            continue
        argv = shlex.split(fix)
        # the VM name is exactly one word, the last (after `--` when it looks like an option)
        assert argv[-1] == vm.name, argv
        assert argv[-2] != "--" or vm.name.startswith("-")
        # --hyperv is followed by the host as reached ('' this machine, HOST not known)
        assert argv[2:4] == ["--hyperv", "HOST" if host.reached_as is None else host.reached_as]
        params = parse_enable(argv)
        assert params["vm"] == vm.name and params["hyperv"] == argv[3], params
        assert _enable_works(vm, host, findings, params, f)


def _enable_works(
    vm: HyperVVmFacts,
    host: HyperVHostFacts,
    findings: list[Finding],
    params: dict[str, Any],
    finding: Finding,
) -> bool:
    """Enable with these options plans a change that clears `finding` (NV-V07: one it
    may make), and the flow would not refuse it for want of --stop."""
    memory = params["memory"]
    try:
        plan = plan_hyperv.plan_enable(
            vm, host, findings, stop=params["stop"], mac_spoofing=params["mac_spoofing"],
            memory_bytes=parse_size(memory) * 1024 if memory is not None else None,
            install_hypervisor=False,
        )  # fmt: skip
    except UsageError as exc:
        raise AssertionError(f"{finding.code}: {finding.fix!r} is refused: {exc}") from None
    running = not vm.is_off and not vm.is_saved
    assert params["stop"] or not (running and any(c.needs_stop for c in plan.changes))
    if finding.code == "NV-V07":
        return True
    return any(finding.code in c.codes for c in plan.changes)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_travel_as_one_word(name: str) -> None:
    vm = replace(READY, name=name, expose_virtualization_extensions=False, state="Running")
    fix = fixes(vm, reached("h'v 01"))["NV-V01"] or ""
    assert shlex.split(fix) == ["nestvirt", "enable", "--hyperv", "h'v 01", "--stop", name]


def test_parse_enable_reads_what_a_shell_would() -> None:
    """The harness itself: `--hyperv` without its '' would swallow the VM name."""
    assert parse_enable(["nestvirt", "enable", "--hyperv", "", "VM"])["hyperv"] == ""
    swallowed = parse_enable(["nestvirt", "enable", "--stop", "--hyperv", "VM"])
    assert swallowed["hyperv"] == "VM" and swallowed["vm"] is None
