"""Every command nestvirt prints is one the shell reads back as exactly the words meant:
hostile VM names never run, never become options (issue 11)."""

from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st

from nestvirt import commands, rules
from nestvirt.rules import Platform, Target
from tests.unit.rules.factories import domain, iface

HOSTILE = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["x-$(touch PWNED)", "`id`", "a;b", "--help", "-c", "a b", "'", '"', "\\",
                     "$HOME", "a\nb", "-- x", "*", "~root"]),
)  # fmt: skip


@given(HOSTILE, st.sampled_from([None, "qemu:///system", "qemu+ssh://h/system?x=1&y=$(z)"]))
def test_nestvirt_command_round_trips(name: str, uri: str | None) -> None:
    line = commands.nestvirt("enable", name, "--memory", "4GiB", uri=uri)
    words = shlex.split(line)
    assert words[-1] == name
    if name.startswith("-"):
        assert words[-2] == "--"  # never read as an option
    if uri and uri != commands.DEFAULT_URI:
        assert words[2:4] == ["-c", uri]


@given(HOSTILE)
def test_virsh_command_round_trips(name: str) -> None:
    words = shlex.split(commands.virsh("snapshot-list", name, "--tree"))
    assert words == ["virsh", "snapshot-list", "--domain", name, "--tree"]


@given(HOSTILE)
def test_every_libvirt_fix_quotes_the_name(name: str) -> None:
    # a domain that makes every libvirt rule with a command fire
    vm = domain(name=name, cpu_mode="custom", cpu_model="Skylake-Client", memory_kib=1024,
                current_memory_kib=512, max_memory_kib=2048, has_managed_save=True,
                snapshot_count=1, interfaces=(iface(filter="no-mac-spoofing",
                blocks_foreign_mac=True),))  # fmt: skip
    fixes = [f.fix for f in rules.run(Target.VM, Platform.LIBVIRT, vm) if f.fix]
    assert len(fixes) >= 5
    for fix in fixes:
        command = fix.split("  #")[0]
        if not command.startswith(("nestvirt ", "virsh ")):
            continue
        words = shlex.split(command)
        assert name in words  # the name is one word, exactly as written


@given(HOSTILE)
def test_operation_fixes_quote_the_name(name: str) -> None:
    import re

    from hypothesis import assume

    from nestvirt.rules.operations import Operation, OperationFacts, judge_facts

    assume("`" not in name)  # the prose marks commands with backticks; the test splits on them
    quoted = 0
    for operation in (Operation.MIGRATE, Operation.RESTORE):
        facts = OperationFacts(vm=name, operation=operation, exposes=True, accel="tcg",
                               nested_state_cap=0, host_vendor="amd")  # fmt: skip
        for finding in judge_facts(facts, Platform.LIBVIRT):
            for command in re.findall(r"`(virsh [^`]*)`", finding.fix or ""):
                assert name in shlex.split(command)
                quoted += 1
    assert quoted >= 2
