"""A test-only platform ("toy"): its facts, one VM rule (NV-V90), a pure plan and a
Subject, plugged into the rule registry, the status report and the enable/undo flow
without touching any module of nestvirt (docs/architecture.md, "Adding a platform")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestvirt import enable, rules
from nestvirt.journal import Entry, Journal
from nestvirt.model import Change, HostReport, Plan, Severity, StatusReport, VmReport

TOY = "toy"  # a platform the Platform enum does not know: the registry only compares it
CODE = "NV-V90"

# ------------------------------------------------------------------ the toy backend's slots


@dataclass(frozen=True, slots=True)
class ToyVmFacts:  # facts: read only
    name: str
    nested: bool


def nesting_off(vm: ToyVmFacts) -> Iterator[rules.Hit]:  # rules: a pure function of facts
    """The toy VM does not pass its CPU's extensions through.

    ## What it checks
    The toy definition's `nested` switch.

    ## Why it matters
    Without it no hypervisor runs inside the VM.

    ## Example
    `{"nested": false}`.

    ## Fix
    `toy set VM nested=on`.

    ## Sources
    This test.
    """
    if not vm.nested:
        yield rules.Hit(f"{vm.name} has nested off", f"toy set {vm.name} nested=on")


def toy_plan(facts: ToyVmFacts, codes: set[str]) -> Plan:  # plan: pure policy
    if CODE not in codes:
        return Plan(vm=facts.name)
    change = Change("set-nested", (CODE,), f"toy set {facts.name} nested=on", "turn nesting on")
    return Plan(vm=facts.name, changes=(change,))


class ToyStore:  # the platform itself: one VM definition (JSON) in memory
    def __init__(self, name: str, nested: bool) -> None:
        self.definition = json.dumps({"name": name, "nested": nested})


class ToySubject:  # apply: the flow's Subject protocol, I/O against the store only
    def __init__(self, store: ToyStore, name: str) -> None:
        self.store, self.name, self.key = store, name, ("toy://", name)

    def facts(self) -> ToyVmFacts:
        doc = json.loads(self.store.definition)
        return ToyVmFacts(doc["name"], doc["nested"])

    def read(self) -> enable.Snapshot:
        facts = self.facts()
        found = rules.run(rules.Target.VM, TOY, facts)
        return enable.Snapshot(self.store.definition, facts, tuple(found), running=False)

    def plan(self, snap: enable.Snapshot, action: str, undo: Entry | None) -> Plan:
        if action == enable.UNDO and undo is not None:
            return Plan(vm=self.name, changes=(Change("restore", (), "toy restore", "restore"),))
        return toy_plan(snap.facts, {f.code for f in snap.findings})

    def render(self, snap: enable.Snapshot, plan: Plan) -> str:
        if plan.changes[0].action == "restore":
            entry = Journal(*self.key).last_undoable()
            assert entry is not None
            return entry.before
        return json.dumps({**json.loads(snap.definition), "nested": True})

    def diff(self, before: str, after: str) -> str:
        return f"- {before}\n+ {after}\n"

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        raise AssertionError("never running")

    def start(self) -> None:
        raise AssertionError("never running")

    def write(self, plan: Plan, definition: str) -> str:
        self.store.definition = definition
        return definition

    def restore(self, definition: str) -> str:
        return self.write(Plan(vm=self.name), definition)

    def verify(self, plan: Plan, action: str) -> str | None:
        fired = {f.code for f in self.read().findings}
        return "nesting still off" if action == enable.ENABLE and CODE in fired else None


# ------------------------------------------------------------------ the tests


@pytest.fixture()
def toy_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path))
    rules.rule(CODE, "toy-nesting-off", Severity.ERROR, target=rules.Target.VM, platform=TOY)(
        nesting_off
    )
    yield
    del rules._REGISTRY[CODE]


def toy_status(store: ToyStore) -> StatusReport:
    facts = ToySubject(store, "toy-vm").facts()
    findings = rules.run(rules.Target.VM, TOY, facts)
    host = HostReport("toyhost", "toy", {}, ())
    return StatusReport(host, (VmReport(facts.name, TOY, "off", tuple(findings)),))


def test_status_enable_and_undo_of_a_toy_vm(toy_rule: None) -> None:
    store = ToyStore("toy-vm", nested=False)
    before = store.definition
    report = toy_status(store)
    assert str(report.verdict) == "not-ready"
    assert [f["code"] for f in report.to_json()["vms"][0]["findings"]] == [CODE]

    subject = ToySubject(store, "toy-vm")
    options = enable.FlowOptions()
    outcome = enable.run(
        subject, enable.ENABLE, options, show=lambda _o: None, confirm=lambda _o: True
    )
    assert outcome.applied and outcome.journal_seq == 1
    assert outcome.to_json()["changes"] == [
        {"code": CODE, "action": "set-nested", "command": "toy set toy-vm nested=on"}
    ]
    assert str(toy_status(store).verdict) == "ready"
    again = enable.run(
        subject, enable.ENABLE, options, show=lambda _o: None, confirm=lambda _o: True
    )
    assert again.plan.empty and not again.changed

    undone = enable.run(
        subject, enable.UNDO, options, show=lambda _o: None, confirm=lambda _o: True
    )
    assert undone.applied and store.definition == before
    assert str(toy_status(store).verdict) == "not-ready"


def test_the_toy_rule_is_in_the_registry_only_while_plugged_in(toy_rule: None) -> None:
    assert [r.code for r in rules.rules_for(rules.Target.VM, TOY)] == [CODE]
    assert rules.lookup("toy-nesting-off")[0].code == CODE
