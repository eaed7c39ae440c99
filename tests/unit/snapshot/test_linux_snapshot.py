"""nestvirt.linux-snapshot/1: redaction, facts round trip, status --snapshot on edited facts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nestvirt import linux_snapshot
from nestvirt.cli import main
from nestvirt.facts.guest import GuestFacts
from nestvirt.facts.linux_host import LinuxHostFacts
from nestvirt.model import Unknown, to_jsonable
from nestvirt.probe.result import HypervisorInfo
from tests.unit.rules.factories import bare_metal_intel


@pytest.mark.parametrize(
    ("word", "kept", "gone"),
    [
        ("secret,id=sec0,data=c2VjcmV0,format=base64", "id=sec0", "c2VjcmV0"),
        ("secret,id=sec1,file=/run/keys/disk.key", "id=sec1", "/run/keys/disk.key"),
        ("driver=luks,key-secret=sec0,file.filename=/x.img", "driver=luks", "sec0"),
        ("-vnc", "-vnc", "\0"),
        ("password=hunter2", "password=", "hunter2"),
        ("console=ttyS0 api_token=abc", "console=ttyS0", "abc"),
    ],
)
def test_redact_removes_secret_values(word: str, kept: str, gone: str) -> None:
    out = linux_snapshot.redact(word)
    assert kept in out and gone not in out


def snapshot(facts: LinuxHostFacts, tmp_path: Path) -> str:
    doc = {
        "schema": linux_snapshot.SCHEMA,
        "collected_at": "2026-01-01T00:00:00Z",
        "host": {"facts": to_jsonable(facts)},
        "qemu": {"version": None, "processes": []},
    }
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(doc))
    return str(path)


KVM_GUEST = GuestFacts(HypervisorInfo(True, "KVMKVMKVM", "KVM"), kernel_release="6.1.0")


def test_facts_round_trip_exactly() -> None:
    facts = bare_metal_intel(
        firmware_virt=Unknown("MSR readable by root only"), guest=KVM_GUEST,
        hypervisor=HypervisorInfo(True, "KVMKVMKVM", "KVM"),
    )  # fmt: skip
    assert linux_snapshot.decode(LinuxHostFacts, to_jsonable(facts)) == facts


Cap = pytest.CaptureFixture[str]


def run(capsys: Cap, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_snapshot_reruns_host_and_guest_rules(tmp_path: Path, capsys: Cap) -> None:
    facts = bare_metal_intel(nested={"kvm_intel": "N"}, guest=KVM_GUEST)
    code, out, err = run(capsys, "status", "--snapshot", snapshot(facts, tmp_path), "--json")
    assert code == 1, err
    doc = json.loads(out)
    codes = [f["code"] for f in doc["host"]["findings"]]
    assert "NV-H04" in codes and "NV-G03" in codes
    assert doc["vms"] == []


def test_status_snapshot_of_a_ready_bare_metal_host(tmp_path: Path, capsys: Cap) -> None:
    code, out, err = run(capsys, "status", "--snapshot", snapshot(bare_metal_intel(), tmp_path),
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["host"]["findings"] == []


def test_bad_snapshots_and_vm_names_are_usage_errors(tmp_path: Path, capsys: Cap) -> None:
    good = snapshot(bare_metal_intel(), tmp_path)
    assert run(capsys, "status", "--snapshot", good, "vm1")[0] == 2
    broken = tmp_path / "broken.json"
    doc = json.loads(Path(good).read_text())
    doc["host"]["facts"]["kvm_device"] = "yes"
    broken.write_text(json.dumps(doc))
    code, _, err = run(capsys, "status", "--snapshot", str(broken))
    assert code == 2 and "malformed host facts" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_collect_linux_refuses_hyperv_options(tmp_path: Path, capsys: Cap) -> None:
    code, _, _ = run(capsys, "collect", "--linux", "-o", str(tmp_path / "x.json"), "vm1")
    assert code == 2 and not (tmp_path / "x.json").exists()


def test_round_trip_keeps_guest_facts() -> None:
    facts = replace(bare_metal_intel(), guest=KVM_GUEST)
    back = linux_snapshot.decode(LinuxHostFacts, json.loads(json.dumps(to_jsonable(facts))))
    assert back.guest == KVM_GUEST
