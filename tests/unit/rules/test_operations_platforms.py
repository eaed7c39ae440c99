"""NV-O01…NV-O04 are one rule per platform in the one registry (issue 13)."""

from __future__ import annotations

import inspect
import json
import re
import shlex
from pathlib import Path

import pytest

from nestvirt import rules
from nestvirt.cli import main
from nestvirt.rules import Platform, operations
from nestvirt.rules.operations import judge

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hyperv"
CODES = ("NV-O01", "NV-O02", "NV-O03", "NV-O04")
CMDLET = re.compile(r"\b(?:Set|Stop|Start|Get|Save|Restore|Move)-VM\w*")


def section(doc: str, heading: str) -> str:
    text = inspect.cleandoc(doc)
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("code", CODES)
def test_each_code_has_a_libvirt_and_a_hyperv_rule(code: str) -> None:
    by_platform = {r.platform: r for r in rules.lookup(code)}
    assert set(by_platform) == {Platform.LIBVIRT, Platform.HYPERV}
    libvirt, hyperv = by_platform[Platform.LIBVIRT], by_platform[Platform.HYPERV]
    assert libvirt.check is not hyperv.check
    assert (libvirt.name, libvirt.severity) == (hyperv.name, hyperv.severity)
    assert libvirt.summary == hyperv.summary  # the README's one row per code
    assert "Hyper-V" not in libvirt.doc and "## Versions" not in libvirt.doc
    assert "## Versions" in hyperv.doc  # the build/version table rows
    # a Hyper-V fix is a nestvirt step or plain words, never a cmdlet to paste
    assert not CMDLET.findall(section(hyperv.doc, "Fix")), code


def test_the_platform_decides_not_the_accelerator_field() -> None:
    (hyperv,) = judge("migrate", platform=Platform.HYPERV, exposes=True, running=True)
    assert "Hyper-V nesting preview" in hyperv.message
    (kvm,) = judge("migrate", platform=Platform.LIBVIRT, exposes=True, running=True, accel="hyperv")
    assert "KVM_CAP_NESTED_STATE" in kvm.message


def test_hyperv_fixes_are_nestvirt_commands() -> None:
    (found,) = judge("memory-resize", platform=Platform.HYPERV, exposes=True, running=True, vm="L1")
    assert found.fix == "nestvirt enable --hyperv HOST --memory SIZE --stop L1"
    assert not CMDLET.findall(found.fix)
    assert operations.hyperv_host_option("HV01") == "--hyperv HV01"
    assert operations.hyperv_host_option("this host") == "--hyperv HOST"


def test_no_branch_on_the_accelerator_name() -> None:
    source = inspect.getsource(operations)
    assert not re.search(r"accel\s*==", source)


def test_hyperv_fixes_name_the_host_as_the_user_reached_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a snapshot: the host it was collected on, by name (the placeholder before)
    snapshot = str(FIXTURES / "vm-states.json")
    code = main(["preflight", "--snapshot", snapshot, "--json", "Running1", "memory-resize"])
    (found,) = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["code"] == "NV-O04"]
    assert (
        code == 1 and found["fix"] == "nestvirt enable --hyperv HV01 --memory SIZE --stop Running1"
    )
    # this Windows machine: `--hyperv ''`, so the VM name is not read as HOST
    assert operations.hyperv_host_option("") == "--hyperv ''"
    (local,) = judge(
        "memory-resize", platform=Platform.HYPERV, exposes=True, running=True, vm="L1", host=""
    )
    assert shlex.split(local.fix or "")[2:4] == ["--hyperv", ""]


def test_a_hyperv_restore_fix_is_not_libvirts() -> None:
    (found,) = judge(
        "restore", platform=Platform.HYPERV, exposes=True, running=True, vm="L1",
        config_version=(5, 0),
    )  # fmt: skip
    assert "virsh" not in (found.fix or "") and "Delete Saved State" in (found.fix or "")
