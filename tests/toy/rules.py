"""The toy platform's one VM rule, NV-V90 (registered when the toy platform's rules are
first asked for)."""

from __future__ import annotations

from collections.abc import Iterator

from nestvirt.commands import nestvirt
from nestvirt.model import Severity
from nestvirt.rules import Hit, Target, rules_of
from tests.toy.facts import ToyVmFacts

CODE = "NV-V90"
vm_rule = rules_of(Target.VM, "toy")


@vm_rule(CODE, "toy-nesting-off", Severity.ERROR)
def nesting_off(vm: ToyVmFacts) -> Iterator[Hit]:
    """The toy VM does not pass its CPU's extensions through.

    ## What it checks
    The toy definition's `nested` switch.

    ## Why it matters
    Without it no hypervisor runs inside the VM.

    ## Example
    `{"nested": false}`.

    ## Fix
    `nestvirt enable VM -c toy:///HOST.json`.

    ## Sources
    This test platform (tests/toy).
    """
    if not vm.nested:
        yield Hit(f"{vm.name} has nested off", nestvirt("enable", vm.name))
