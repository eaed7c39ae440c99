"""The toy platform's plan: pure policy, findings + facts → Plan."""

from __future__ import annotations

from nestvirt.model import Change, Plan
from tests.toy.facts import ToyVmFacts
from tests.toy.rules import CODE

SET_NESTED = "set-nested"


def build_plan(facts: ToyVmFacts, codes: set[str]) -> Plan:
    if CODE not in codes:
        return Plan(vm=facts.name)
    change = Change(SET_NESTED, (CODE,), f"toy set {facts.name} nested=on", "turn nesting on")
    return Plan(vm=facts.name, changes=(change,))
