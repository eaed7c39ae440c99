"""Step 2: expose the extensions to the lab VM the way `nestvirt enable` does for any VM.

The lab VM's definition is judged by the same VM rules (NV-V01 …) and changed by
the same enable plan (`plan_libvirt.build_plan` → `domxml` edits) as a user's
VM; nothing here decides how to expose. `--no-expose` stops after judging: the
definition keeps its finding (the negative control).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nestvirt import domxml, plan_libvirt, rules
from nestvirt.facts.libvirt_vm import LibvirtVmFacts
from nestvirt.model import Finding, Plan, Severity

FactsOf = Callable[[str], LibvirtVmFacts]


@dataclass(frozen=True, slots=True)
class Exposure:
    xml: str  # the definition to boot
    before: tuple[Finding, ...]  # the rules on the lab VM as built
    after: tuple[Finding, ...]  # the rules on the definition to boot
    plan: Plan | None  # the enable plan applied (None with --no-expose)


def judge(facts: LibvirtVmFacts) -> tuple[Finding, ...]:
    """The VM rules' errors (the lab VM's 1 GiB and other warnings are by design)."""
    found = rules.run(rules.Target.VM, rules.Platform.LIBVIRT, facts)
    return tuple(f for f in found if f.severity is Severity.ERROR)


def expose(xml: str, facts_of: FactsOf, *, enabled: bool) -> Exposure:
    facts = facts_of(xml)
    before = judge(facts)
    if not enabled:
        return Exposure(xml, before, before, None)
    plan = plan_libvirt.build_plan(facts, before)
    new_xml = domxml.render(xml, plan_libvirt.edits_of(plan))
    return Exposure(new_xml, before, judge(facts_of(new_xml)), plan)
