"""plan_enable (pure), apply_plan and undo (plan_restore) over the local transport's process boundary."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import GIB
from fake_powershell import FakePowerShell
from helpers import DEMO_PLAN, HOSTILE
from test_quoting import tokens

from nestvirt import enable_hyperv, plan_hyperv
from nestvirt.backends import hyperv
from nestvirt.backends.hyperv_transport import LocalTransport, PowerShellError
from nestvirt.errors import NotFound, UsageError
from nestvirt.facts.hyperv import parse_snapshot


def plan_for(doc: dict[str, Any], **opts: Any) -> Any:
    snap = parse_snapshot(doc)
    vm = snap.vms[0]
    findings = enable_hyperv.vm_findings(vm, snap.host)
    options = {
        "stop": False,
        "mac_spoofing": False,
        "memory_bytes": None,
        "install_hypervisor": False,
        **opts,
    }
    return plan_hyperv.plan_enable(vm, snap.host, findings, **options)


def actions(plan: Any) -> list[str]:
    return [c.action for c in plan.changes]


def test_full_order_of_the_issue(demo_doc: dict[str, Any]) -> None:
    demo_doc["vms"][0]["Get-VM"]["State"] = "Saved"
    plan = plan_for(
        demo_doc,
        stop=True,
        mac_spoofing=True,
        memory_bytes=8 * GIB,
        install_hypervisor=True,
        restart=True,
    )
    assert actions(plan) == [
        "remove-saved-state",
        "expose-virtualization-extensions",
        "disable-dynamic-memory",
        "enable-mac-spoofing",
        "set-startup-memory",
        "install-hypervisor",
        "restart-vm",
    ]
    assert [c.command for c in plan.changes[:5]] == [
        "Remove-VMSavedState -VMName 'DemoVM'",
        "Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true",
        "Set-VMMemory -VMName 'DemoVM' -DynamicMemoryEnabled $false",
        "Set-VMNetworkAdapter -VMName 'DemoVM' -MacAddressSpoofing On",
        "Set-VMMemory -VMName 'DemoVM' -StartupBytes 8589934592",
    ]
    assert "saved state will be removed" in plan.notes[0]
    # issue 12: Microsoft's documented command has -All; the restart is Windows' own
    # (PowerShell Direct Restart-Computer), not Restart-VM -Force's hard reset
    assert plan.changes[5].command.startswith(
        "Start-VM -Name 'DemoVM'; Invoke-Command -VMName 'DemoVM' -Credential (Get-Credential) "
        "-ScriptBlock { Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V "
        "-All -NoRestart }"
    )
    assert "Install-WindowsFeature -Name Hyper-V -IncludeManagementTools" in plan.changes[5].command
    assert plan.changes[6].command == (
        "Invoke-Command -VMName 'DemoVM' -Credential (Get-Credential) -ScriptBlock "
        "{ Restart-Computer -Force }"
    )


def test_running_vm_stop_or_refuse(demo_doc: dict[str, Any]) -> None:
    demo_doc["vms"][0]["Get-VM"]["State"] = "Running"
    with pytest.raises(UsageError, match=r"'DemoVM' is running: .* pass --stop"):
        plan_for(demo_doc)
    plan = plan_for(demo_doc, stop=True)
    assert actions(plan) == [
        "stop-vm",
        "expose-virtualization-extensions",
        "disable-dynamic-memory",
    ]
    assert plan.changes[0].command == "Stop-VM -Name 'DemoVM' -Force"
    assert plan.changes[0].codes == ("NV-V07",)


def test_running_vm_only_mac_spoofing_needs_no_stop(demo_doc: dict[str, Any]) -> None:
    vm = demo_doc["vms"][0]
    vm["Get-VM"]["State"] = "Running"
    vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = True
    vm["Get-VMMemory"]["DynamicMemoryEnabled"] = False
    assert actions(plan_for(demo_doc, mac_spoofing=True)) == ["enable-mac-spoofing"]


def test_ready_vm_gives_empty_plan(demo_doc: dict[str, Any]) -> None:
    vm = demo_doc["vms"][0]
    vm["Get-VM"]["State"] = "Running"
    vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = True
    vm["Get-VMMemory"]["DynamicMemoryEnabled"] = False
    vm["Get-VMMemory"]["Startup"] = 4 * GIB
    vm["Get-VMNetworkAdapter"][0]["MacAddressSpoofing"] = "On"
    plan = plan_for(demo_doc, mac_spoofing=True, memory_bytes=4 * GIB)
    assert plan.empty
    assert plan_hyperv.plan_json(plan) == {
        "schema": "nestvirt.plan/1",
        "vm": "DemoVM",
        "changes": [],
        "applied": False,
    }


def test_plan_json(demo_doc: dict[str, Any]) -> None:
    doc = plan_hyperv.plan_json(plan_for(demo_doc))
    assert doc == DEMO_PLAN
    json.dumps(doc)


@pytest.mark.parametrize("memory", [0, -2 * 1024**2, 4 * GIB + 1, 1000])
def test_memory_must_be_2mib_multiple(demo_doc: dict[str, Any], memory: int) -> None:
    with pytest.raises(UsageError, match="multiple of 2 MiB"):
        plan_for(demo_doc, memory_bytes=memory)


def test_unfixable_errors_are_reported(demo_doc: dict[str, Any]) -> None:
    demo_doc["vms"][0]["Get-VM"]["Version"] = "5.0"
    plan = plan_for(demo_doc)
    assert [f.code for f in plan.unfixable] == ["NV-V08"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_single_literals(demo_doc: dict[str, Any], name: str) -> None:
    demo_doc["vms"][0]["Get-VM"]["Name"] = name
    plan = plan_for(demo_doc, mac_spoofing=True, memory_bytes=8 * GIB)
    for change in plan.changes:
        toks = tokens(change.command)
        assert toks[1] == "-VMName" and toks[2] == name, change.command
        assert len(toks) % 2 == 1  # cmdlet, then -Param value pairs: nothing leaked out


# --- apply and undo ----------------------------------------------------------


def apply_journaled(t: LocalTransport, plan: Any, journaled: list[str] | None = None) -> Entryish:
    """apply_plan as the flow journals it: the settings before, the actions done, after."""
    before = plan_hyperv.definition_of(hyperv.select_one(hyperv.read_facts(t, [plan.vm]), plan.vm))
    done: list[str] = [] if journaled is None else journaled
    applied = hyperv.apply_plan(t, plan, done=lambda c: done.append(c.action))
    assert applied == done
    after = plan_hyperv.definition_of(hyperv.select_one(hyperv.read_facts(t, [plan.vm]), plan.vm))
    return Entryish(before, after, tuple(applied))


class Entryish:
    """What a journal Entry holds of a change: before, after, the actions."""

    def __init__(self, before: str, after: str, changes: tuple[str, ...]) -> None:
        self.before, self.after, self.changes = before, after, changes


def undo(t: LocalTransport, entry: Entryish, vm_id: str, *, stop: bool = False) -> Any:
    """The flow's undo: plan_restore of the entry for the VM (by Id) as it is now, then run."""
    vm = hyperv.select_by_id(hyperv.read_facts(t, []), vm_id, "DemoVM")
    plan = plan_hyperv.plan_restore(
        entry.before, vm, after=entry.after, actions=entry.changes, stop=stop
    )
    if not plan.empty:
        hyperv.apply_plan(t, plan, vm_id=vm_id)
    return plan


def test_apply_then_undo_restores(demo_doc: dict[str, Any]) -> None:
    demo_doc["vms"][0]["Get-VM"]["State"] = "Running"
    original = copy.deepcopy(demo_doc["vms"][0])
    fake = FakePowerShell(demo_doc)
    t = LocalTransport(executable="powershell.exe", runner=fake)
    snap = hyperv.read_facts(t, ["DemoVM"])
    vm = hyperv.select_one(snap, "DemoVM")
    plan = plan_hyperv.plan_enable(
        vm,
        snap.host,
        enable_hyperv.vm_findings(vm, snap.host),
        stop=True,
        mac_spoofing=True,
        memory_bytes=4 * GIB,
        install_hypervisor=False,
    )
    journaled: list[str] = []
    entry = apply_journaled(t, plan, journaled)
    assert list(entry.changes) == actions(plan) == journaled
    assert json.loads(entry.before)["ExposeVirtualizationExtensions"] is False

    after = hyperv.select_one(hyperv.read_facts(t, ["DemoVM"]), "DemoVM")
    assert enable_hyperv.vm_findings(after, snap.host) == []  # ready: V01..V04 cleared, VM off

    writes = [c for c in fake.calls if c["script"] == "invoke"]
    assert [c["args"]["cmdlet"] for c in writes] == [
        "Stop-VM",
        "Set-VMProcessor",
        "Set-VMMemory",
        "Set-VMNetworkAdapter",
        "Set-VMMemory",
    ]
    assert writes[1]["args"]["parameters"] == {"ExposeVirtualizationExtensions": True}
    assert writes[3]["args"]["parameters"] == {"MacAddressSpoofing": "On"}
    assert all(c["args"]["vm_id"] == original["Get-VM"]["Id"] for c in writes)

    undo_plan = undo(t, entry, original["Get-VM"]["Id"])
    assert [c.action for c in undo_plan.changes] == [
        "restore-virtualization-extensions",
        "restore-dynamic-memory",
        "restore-startup-memory",
        "restore-mac-spoofing",
    ]
    now = demo_doc["vms"][0]
    for key in ("Get-VMProcessor", "Get-VMMemory", "Get-VMNetworkAdapter"):
        assert now[key] == original[key], key
    # a second undo has nothing left to do
    assert undo(t, entry, original["Get-VM"]["Id"]).empty


def test_old_undo_records_are_adopted(demo_doc: dict[str, Any]) -> None:
    """A `nestvirt.hyperv-undo/1` record of older nestvirt restores like a journal entry."""
    original = copy.deepcopy(demo_doc["vms"][0])
    vm_id = original["Get-VM"]["Id"]
    fake = FakePowerShell(demo_doc)
    t = LocalTransport(executable="powershell.exe", runner=fake)
    plan = plan_for(demo_doc, mac_spoofing=True, memory_bytes=8 * GIB)
    entry = apply_journaled(t, plan)
    old = json.loads(entry.before)
    record = {
        "schema": "nestvirt.hyperv-undo/1",
        "host": "HV01",
        "vm": "DemoVM",
        "vm_id": vm_id,
        "before": {"State": "Off", **old},
        "applied": list(entry.changes),
    }
    before, after, applied = plan_hyperv.adopt_record(record)
    assert json.loads(before) == old and applied == entry.changes
    plan = undo(t, Entryish(before, after, applied), vm_id)
    assert [c.action for c in plan.changes] == [
        "restore-virtualization-extensions",
        "restore-dynamic-memory",
        "restore-startup-memory",
        "restore-mac-spoofing",
    ]
    for key in ("Get-VMProcessor", "Get-VMMemory", "Get-VMNetworkAdapter"):
        assert demo_doc["vms"][0][key] == original[key], key
    with pytest.raises(UsageError, match="not a Hyper-V undo record"):
        plan_hyperv.adopt_record({"schema": "x"})
    with pytest.raises(UsageError, match="'applied' missing"):
        plan_hyperv.adopt_record({k: v for k, v in record.items() if k != "applied"})


def test_apply_failure_names_step_and_what_was_done(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc, fail={"Set-VMMemory": "Failed to modify device 'Memory'."})
    t = LocalTransport(executable="powershell.exe", runner=fake)
    plan = plan_for(demo_doc)
    journaled: list[str] = []
    with pytest.raises(PowerShellError) as exc:
        hyperv.apply_plan(t, plan, done=lambda c: journaled.append(c.action))
    assert str(exc.value) == (
        "step 2 (disable-dynamic-memory) failed: Set-VMMemory: Failed to modify device "
        "'Memory'. — applied before it: expose-virtualization-extensions"
    )
    assert journaled == ["expose-virtualization-extensions"]


def test_apply_refuses_when_vm_started_since_planning(demo_doc: dict[str, Any]) -> None:
    plan = plan_for(demo_doc)
    demo_doc["vms"][0]["Get-VM"]["State"] = "Running"
    fake = FakePowerShell(demo_doc)
    with pytest.raises(UsageError, match="now running"):
        hyperv.apply_plan(LocalTransport(executable="p", runner=fake), plan)
    assert not [c for c in fake.calls if c["script"] == "invoke"]


def test_apply_refuses_duplicate_names(demo_doc: dict[str, Any]) -> None:
    twin = copy.deepcopy(demo_doc["vms"][0])
    twin["Get-VM"]["Id"] = "00000000-0000-0000-0000-000000000002"
    demo_doc["vms"].append(twin)
    fake = FakePowerShell(demo_doc)
    with pytest.raises(UsageError, match="2 Hyper-V VMs are named 'DemoVM'"):
        hyperv.apply_plan(
            LocalTransport(executable="p", runner=fake),
            plan_for({**demo_doc, "vms": demo_doc["vms"][:1]}),
        )


def test_install_hypervisor_passes_credentials_as_data(
    demo_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NESTVIRT_GUEST_USER", "admin")
    monkeypatch.setenv("NESTVIRT_GUEST_PASSWORD", "p'w$(x)")
    fake = FakePowerShell(demo_doc)
    t = LocalTransport(executable="powershell.exe", runner=fake)
    plan = plan_for(demo_doc, install_hypervisor=True)
    hyperv.apply_plan(t, plan, guest_credentials=enable_hyperv.guest_credentials())
    (call,) = [c for c in fake.calls if c["script"] == "install"]
    assert call["args"]["user"] == "admin" and call["args"]["password"] == "p'w$(x)"
    assert all("p'w$(x)" not in a for a in call["argv"])


def test_install_hypervisor_without_credentials_refuses(
    demo_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NESTVIRT_GUEST_USER", raising=False)
    monkeypatch.delenv("NESTVIRT_GUEST_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UsageError, match="NESTVIRT_GUEST_USER"):
        enable_hyperv.guest_credentials()
    assert enable_hyperv.guest_credentials(("u", "p")) == ("u", "p")
    fake = FakePowerShell(demo_doc)
    plan = plan_for(demo_doc, install_hypervisor=True)
    with pytest.raises(UsageError, match="NESTVIRT_GUEST_USER"):
        hyperv.apply_plan(LocalTransport(executable="p", runner=fake), plan)
    assert not [c for c in fake.calls if c["script"] != "collect"]  # nothing ran


def test_snapshot_transport_is_read_only(tmp_path: Any, demo_doc: dict[str, Any]) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(demo_doc))
    t = hyperv.open_transport(host=None, snapshot=str(p))
    with pytest.raises(UsageError, match="read-only"):
        hyperv.apply_plan(t, plan_for(demo_doc))


def test_undo_running_vm_needs_stop(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    t = LocalTransport(executable="p", runner=fake)
    vm_id = demo_doc["vms"][0]["Get-VM"]["Id"]
    entry = apply_journaled(t, plan_for(demo_doc))
    demo_doc["vms"][0]["Get-VM"]["State"] = "Running"
    with pytest.raises(UsageError, match="pass --stop"):
        undo(t, entry, vm_id)
    plan = undo(t, entry, vm_id, stop=True)
    assert plan.changes[0].action == "stop-vm"


def test_undo_vm_gone(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    t = LocalTransport(executable="p", runner=fake)
    vm_id = demo_doc["vms"][0]["Get-VM"]["Id"]
    entry = apply_journaled(t, plan_for(demo_doc))
    vm = parse_snapshot(demo_doc).vms[0]
    demo_doc["vms"].clear()
    with pytest.raises(NotFound, match="no longer exists"):
        undo(t, entry, vm_id)
    with pytest.raises(UsageError, match="does not hold Hyper-V settings"):
        plan_hyperv.plan_restore("<domain/>", vm)


def test_restore_puts_back_only_what_nestvirt_changed(demo_doc: dict[str, Any]) -> None:
    """plan_restore with an `after`: settings someone else changed since stay as they are."""
    vm_doc = demo_doc["vms"][0]
    vm_doc["Get-VMNetworkAdapter"][0]["MacAddressSpoofing"] = "On"
    before = plan_hyperv.definition_of(parse_snapshot(demo_doc).vms[0])
    after_doc = json.loads(before)
    after_doc["ExposeVirtualizationExtensions"] = True  # nestvirt's change
    after = plan_hyperv.dump_settings(after_doc)
    # now: exposed (nestvirt), startup memory and spoofing changed by someone else
    vm_doc["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = True
    vm_doc["Get-VMMemory"]["Startup"] = 8 * GIB
    vm_doc["Get-VMNetworkAdapter"][0]["MacAddressSpoofing"] = "Off"
    vm = parse_snapshot(demo_doc).vms[0]
    plan = plan_hyperv.plan_restore(before, vm, after=after)
    assert actions(plan) == ["restore-virtualization-extensions"]
    assert plan.changes[0].command == (
        "Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $false"
    )
    # without `after` (a rollback): every setting of `before` that differs now
    full = plan_hyperv.plan_restore(before, vm)
    assert actions(full) == [
        "restore-virtualization-extensions",
        "restore-startup-memory",
        "restore-mac-spoofing",
    ]
    (spoof,) = [c for c in full.changes if c.action == "restore-mac-spoofing"]
    assert dict(spoof.script_args)["value"] == "On" and "on again" in spoof.summary
    rendered = json.loads(plan_hyperv.render_settings(plan_hyperv.definition_of(vm), full))
    assert rendered == json.loads(before)
