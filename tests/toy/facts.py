"""The toy platform's facts: frozen, read only."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToyVmFacts:
    name: str
    state: str
    nested: bool


def vm_facts(name: str, definition: str) -> ToyVmFacts:
    doc = json.loads(definition)
    return ToyVmFacts(name, doc.get("state", "off"), bool(doc.get("nested")))
