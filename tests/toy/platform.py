"""The toy platform's adapter (the contract: nestvirt.platforms): status, preflight and
the enable flow's subject."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from nestvirt import enable, rules
from nestvirt.endpoint import Endpoint, Libvirt
from nestvirt.errors import UsageError
from nestvirt.journal import Entry
from nestvirt.model import Change, HostReport, Plan, StatusReport, VmReport
from tests.toy import backend
from tests.toy.facts import vm_facts
from tests.toy.plan import SET_NESTED, build_plan
from tests.toy.rules import CODE

NAME = "toy"


def _uri(where: Endpoint) -> str:
    assert isinstance(where, Libvirt) and where.uri  # a --connect URI this platform claims
    return where.uri


def status(
    where: Endpoint, vm_names: list[str], *, host_only: bool, timeout: float | None
) -> StatusReport:
    uri = _uri(where)
    doc = backend.read_host(uri)
    host = HostReport(doc["host"], NAME, {"uri": uri}, ())
    if host_only:
        return StatusReport(host)
    reports = []
    for name in vm_names or sorted(doc["vms"]):
        facts = vm_facts(name, backend.definition(uri, name))
        found = rules.run(rules.Target.VM, NAME, facts)
        reports.append(VmReport(name, NAME, facts.state, tuple(found)))
    return StatusReport(host, tuple(reports))


def preflight(where: Endpoint, vm: str, op: Any, **_: Any) -> NoReturn:
    raise UsageError("the toy platform has no operation rules")


class ToySubject:
    def __init__(self, uri: str, name: str) -> None:
        backend.definition(uri, name)  # NotFound now, not later
        self.uri, self.name, self.key = uri, name, (uri, name)
        self.undoing = ""  # the definition an undo puts back

    def close(self) -> None:
        pass

    def read(self) -> enable.Snapshot:
        text = backend.definition(self.uri, self.name)
        facts = vm_facts(self.name, text)
        found = rules.run(rules.Target.VM, NAME, facts)
        return enable.Snapshot(text, facts, tuple(found), running=facts.state == "running")

    def plan(self, snap: enable.Snapshot, action: str, undo: Entry | None) -> Plan:
        if action == enable.UNDO and undo is not None:
            self.undoing = undo.before
            return Plan(vm=self.name, changes=(Change("restore", (), "toy restore", "restore"),))
        if action == enable.DISABLE:
            raise UsageError("the toy platform cannot disable")
        return build_plan(snap.facts, {f.code for f in snap.findings})

    def render(self, snap: enable.Snapshot, plan: Plan) -> str:
        if plan.changes[0].action == "restore":
            return self.undoing
        assert plan.changes[0].action == SET_NESTED
        return json.dumps({**json.loads(snap.definition), "nested": True}, sort_keys=True)

    def diff(self, before: str, after: str) -> str:
        return f"--- before\n+++ after\n-{before}\n+{after}\n"

    def stop(self, timeout: float, progress: Callable[[str], None]) -> None:
        raise UsageError("toy VMs are never running")

    def start(self) -> None:
        raise UsageError("toy VMs are never running")

    def write(self, plan: Plan, definition: str) -> str:
        backend.define(self.uri, self.name, definition)
        return backend.definition(self.uri, self.name)

    def restore(self, definition: str) -> str:
        return self.write(Plan(vm=self.name), definition)

    def verify(self, plan: Plan, action: str) -> str | None:
        fired = {f.code for f in self.read().findings}
        return "nesting still off" if action == enable.ENABLE and CODE in fired else None


def subject(
    where: Endpoint,
    vm: str,
    request: enable.ChangeRequest,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float | None = None,
) -> ToySubject:
    if request.memory_kib is not None or request.mac_spoofing or request.remove_hotplug:
        raise UsageError("the toy platform only switches nesting on")
    return ToySubject(_uri(where), vm)
