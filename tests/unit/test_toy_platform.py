"""A test-only platform ("toy", tests/toy/) goes through `nestvirt status`, `enable`,
`undo`, `history` and `explain` with one registration line and no change to nestvirt
(docs/architecture.md, "Adding a platform")."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestvirt import registry, rules
from nestvirt.cli import main
from tests.toy import REGISTRATION

CODE = "NV-V90"  # tests/toy/rules.py: imported only while the toy platform is registered

SRC = Path(__file__).resolve().parents[2] / "src" / "nestvirt"


@pytest.fixture()
def toy_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    store = tmp_path / "host.json"
    vms = {"toy-vm": {"nested": False, "memory": 4096}, "ready-vm": {"nested": True}}
    store.write_text(json.dumps({"host": "toyhost", "vms": vms}))
    registry.register(REGISTRATION)  # the one registration line
    yield f"toy://{store}", store
    registry.unregister("toy")
    rules.forget(CODE)  # the next test imports the toy rules afresh
    rules._loaded.discard("tests.toy.rules")
    for module in ("tests.toy.rules", "tests.toy.plan", "tests.toy.platform"):
        sys.modules.pop(module, None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_enable_undo_and_history_of_a_toy_vm(
    toy_host: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, store = toy_host
    before = store.read_text()

    code, out, _ = run(capsys, "status", "-c", uri, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["host"]["name"] == "toyhost" and doc["host"]["platform"] == "toy"
    found = {vm["name"]: [f["code"] for f in vm["findings"]] for vm in doc["vms"]}
    assert found == {"ready-vm": [], "toy-vm": [CODE]}
    assert {vm["backend"] for vm in doc["vms"]} == {"toy"}

    code, out, _ = run(capsys, "enable", "toy-vm", "-c", uri, "--dry-run")
    assert code == 0 and "toy set toy-vm nested=on" in out and store.read_text() == before

    code, out, _ = run(capsys, "enable", "toy-vm", "-c", uri, "--yes")
    assert code == 0 and "applied (journal entry #1)" in out
    assert json.loads(store.read_text())["vms"]["toy-vm"] == {"nested": True, "memory": 4096}
    code, out, _ = run(capsys, "status", "toy-vm", "-c", uri)
    assert code == 0 and "VM toy-vm (toy, off)" in out

    code, out, _ = run(capsys, "enable", "toy-vm", "-c", uri, "--yes")
    assert code == 0 and "nothing to change" in out

    code, out, _ = run(capsys, "undo", "toy-vm", "-c", uri, "--yes")
    assert code == 0 and "applied (journal entry #2)" in out
    assert json.loads(store.read_text()) == json.loads(before)
    code, out, _ = run(capsys, "status", "toy-vm", "-c", uri, "--json")
    assert code == 1 and json.loads(out)["vms"][0]["findings"][0]["code"] == CODE

    code, out, _ = run(capsys, "history", "toy-vm", "-c", uri, "--json")
    entries = json.loads(out)["entries"]
    assert [(e["action"], e["status"], e["undone"]) for e in entries] == [
        ("enable", "done", True),
        ("undo", "done", False),
    ]


def test_the_toy_platform_refuses_what_it_cannot_do(
    toy_host: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, _ = toy_host
    code, _, err = run(capsys, "enable", "toy-vm", "-c", uri, "--memory", "8GiB", "--yes")
    assert code == 2 and "only switches nesting on" in err
    code, _, err = run(capsys, "preflight", "toy-vm", "migrate", "-c", uri)
    assert code == 2 and "no operation rules" in err
    code, _, err = run(capsys, "enable", "no-such-vm", "-c", uri, "--yes")
    assert code == 2 and "no toy VM 'no-such-vm'" in err


def test_the_toy_rule_is_known_only_while_the_platform_is_registered(
    toy_host: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "explain", CODE)
    assert code == 0 and "toy-nesting-off" in out
    registry.unregister("toy")
    assert "tests.toy.rules" not in rules.modules()
    uri, _ = toy_host  # an unclaimed scheme is libvirt's again: libvirt refuses it
    code, _, err = run(capsys, "status", "-c", uri)
    assert code == 2 and err


def test_no_toy_rule_outside_the_toy_tests() -> None:
    assert "tests.toy.rules" not in sys.modules and CODE not in rules._REGISTRY


def test_the_toy_platform_is_the_documented_six_files() -> None:
    # docs/architecture.md names the files of a new platform; tests/toy has one each
    toy = sorted(p.name for p in (Path(__file__).parents[1] / "toy").glob("*.py"))
    assert toy == ["__init__.py", "backend.py", "facts.py", "plan.py", "platform.py", "rules.py"]
    assert not [p for p in SRC.rglob("*.py") if re.search(r"\btoy\b", p.read_text())]
