"""The registry's own promises: every code documented, tested, unique, well-formed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nestvirt import rules
from nestvirt.errors import NotFound
from nestvirt.model import Severity
from nestvirt.rules import HEADINGS, Platform, Target

TESTS = Path(__file__).resolve().parents[2]
RULES_MD = TESTS.parent.parent / "shared" / "docs" / "RULES.md"


def test_every_registered_code_has_a_test_naming_it() -> None:
    text = "\n".join(
        p.read_text() for p in TESTS.rglob("test_*.py") if p.resolve() != Path(__file__).resolve()
    )
    named = {c.upper().replace("_", "-") for c in re.findall(r"nv[-_][hvogc]\d\d", text, re.I)}
    missing = sorted({r.code for r in rules.all_rules()} - named)
    assert not missing, f"no test names {missing}"


def test_every_rule_has_the_doc_headings() -> None:
    for r in rules.all_rules():
        for heading in HEADINGS:
            assert f"## {heading}" in r.doc, (r.code, heading)


@pytest.mark.skipif(not RULES_MD.exists(), reason="shared/docs not beside the checkout")
def test_names_and_severities_match_rules_md() -> None:
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| (NV-[HVO]\d\d) \| ([\w-]+) \|", RULES_MD.read_text(), re.M)
    }
    assert len(table) >= 30
    for r in rules.all_rules():
        # codes added after RULES.md was written (NV-H10) are new, never renamed ones
        assert table.get(r.code, r.name) == r.name, r.code


def test_linux_and_libvirt_rule_sets_are_complete() -> None:
    linux = {r.code for r in rules.rules_for(Target.HOST, Platform.LINUX)}
    libvirt = {r.code for r in rules.rules_for(Target.VM, Platform.LIBVIRT)}
    assert linux == {f"NV-H0{i}" for i in range(1, 10)} | {"NV-H10"} | {
        f"NV-C0{i}" for i in range(1, 10)
    }
    assert libvirt == {f"NV-V0{i}" for i in (1, 2, 3, 4, 5, 6, 7, 9)} | {
        "NV-V10",
        "NV-V11",
        "NV-V12",
    }


def test_lookup_by_code_name_and_short_code() -> None:
    assert rules.lookup("NV-V01")[0].name == "virt-extensions-hidden"
    assert rules.lookup("v01")[0].code == "NV-V01"
    assert rules.lookup("nested-param-off")[0].code == "NV-H04"
    with pytest.raises(NotFound):
        rules.lookup("NV-X99")


def test_registry_refuses_bad_rules() -> None:
    doc = "x\n" + "\n".join(f"## {h}" for h in HEADINGS)

    def check() -> list[rules.Hit]:
        return []

    check.__doc__ = doc
    with pytest.raises(ValueError, match="look like"):
        rules.rule("NV-Z01", "z", Severity.INFO, target=Target.HOST, platform=Platform.ANY)(check)
    with pytest.raises(ValueError, match=r"registered twice|name"):
        rules.rule("NV-H01", "cpu-virt-missing", Severity.ERROR, target=Target.HOST,
                   platform=Platform.LINUX)(check)  # fmt: skip
    check.__doc__ = "no headings"
    with pytest.raises(ValueError, match="headings"):
        rules.rule("NV-H98", "h98", Severity.INFO, target=Target.HOST, platform=Platform.ANY)(check)


def test_rule_modules_declare_the_platforms_they_judge() -> None:
    # rules.run(target, platform) imports only the modules declared for that platform
    declared = rules.modules()
    for r in rules.all_rules():
        module = r.check.__module__
        assert module in declared, (r.code, module)
        assert r.platform in declared[module] | {Platform.ANY}, (r.code, module)
