"""`nestvirt enable|disable|undo|history VM --hyperv [HOST]`, the whole CLI in-process.

The generic flow of nestvirt.enable (lock, journal, confirm, apply, verify,
rollback, undo, history) drives a HyperVSubject; Hyper-V is played by
FakePowerShell at powershell.exe's process boundary (it also refuses any script
text that is not one of nestvirt's fixed scripts) and, for `--hyperv HOST`, by
the WinRM stand-in on 127.0.0.1 with pypsrp unpatched.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import psrp_standin as ps
import pytest
from conftest import GIB
from fake_powershell import FakePowerShell
from helpers import HOSTILE, run, use_fake_powershell
from test_quoting import tokens

from nestvirt import lock
from nestvirt.backends import hyperv_ps, hyperv_transport

VM_ID = "1b7e8a54-3f0e-4c1e-9d2a-5a3e1f0c0001"
URI = "hyperv://HV01"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journal and locks under a temporary state directory (statedir's override)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def fake(demo_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, state: Path) -> FakePowerShell:
    """`--hyperv` with no HOST runs powershell.exe here; the fake plays it."""
    fake = FakePowerShell(demo_doc)
    use_fake_powershell(monkeypatch, fake)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    return fake


def writes(fake: FakePowerShell) -> list[tuple[str, dict[str, Any]]]:
    return [
        (c["args"]["cmdlet"], c["args"]["parameters"])
        for c in fake.calls
        if c["script"] == "invoke"
    ]


def vm_doc(fake: FakePowerShell) -> dict[str, Any]:
    return fake.doc["vms"][0]  # type: ignore[no-any-return]


def journal_files(state: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(state.glob("journal/*/*.json"))]


# --- enable, again, undo, history -------------------------------------------


def test_enable_again_undo_history(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, state: Path
) -> None:
    original = copy.deepcopy(vm_doc(fake))
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--memory", "4GiB", "DemoVM")
    assert code == 0, err
    assert "enable DemoVM: 3 change(s)" in out
    assert "by hand: Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true" in out
    assert "by hand: Set-VMMemory -VMName 'DemoVM' -StartupBytes 4294967296" in out
    assert "DemoVM: applied (journal entry #1); `nestvirt undo DemoVM --hyperv`" in out
    assert writes(fake) == [
        ("Set-VMProcessor", {"ExposeVirtualizationExtensions": True}),
        ("Set-VMMemory", {"DynamicMemoryEnabled": False}),
        ("Set-VMMemory", {"StartupBytes": 4 * GIB}),
    ]
    assert all(c["args"]["vm_id"] == VM_ID for c in fake.calls if c["script"] == "invoke")
    now = vm_doc(fake)
    assert now["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is True
    assert now["Get-VMMemory"]["DynamicMemoryEnabled"] is False
    assert now["Get-VMMemory"]["Startup"] == 4 * GIB

    (entry,) = journal_files(state)
    assert (entry["schema"], entry["action"], entry["status"]) == (
        "nestvirt.journal/1",
        "enable",
        "done",
    )
    assert (entry["uri"], entry["uuid"], entry["subject"]) == (URI, VM_ID, "DemoVM")
    before = json.loads(entry["before"])
    assert before["ExposeVirtualizationExtensions"] is False
    assert before["DynamicMemoryEnabled"] is True and before["StartupBytes"] == 2 * GIB
    assert json.loads(entry["after"])["ExposeVirtualizationExtensions"] is True
    assert entry["codes"] == ["NV-V01", "NV-V02", "NV-V03"]

    # a second enable has nothing to do
    fake.calls.clear()
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--memory", "4GiB", "DemoVM")
    assert code == 0, err
    assert out == "DemoVM: already set up for nesting (nothing to change)\n"
    assert writes(fake) == []
    code, out, _ = run(capsys, "enable", "--hyperv", "--yes", "--json", "DemoVM")
    assert code == 0
    assert json.loads(out) == {
        "schema": "nestvirt.plan/1",
        "vm": "DemoVM",
        "changes": [],
        "applied": False,
    }

    # undo puts every previous value back
    code, out, err = run(capsys, "undo", "--hyperv", "--yes", "DemoVM")
    assert code == 0, err
    assert "undo DemoVM: 3 change(s)" in out and "applied (journal entry #2)" in out
    assert vm_doc(fake) == original
    code, out, _ = run(capsys, "undo", "--hyperv", "--yes", "DemoVM")
    assert code == 2 and "nothing to undo" in _

    code, out, err = run(capsys, "history", "DemoVM", "--hyperv")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("#1") and "enable" in lines[0] and "(undone)" in lines[0]
    assert "set-startup-memory" in lines[0]
    assert lines[1].startswith("#2") and "undo" in lines[1] and "(reverts #1)" in lines[1]
    code, out, _ = run(capsys, "history", "DemoVM", "--hyperv", "--json")
    doc = json.loads(out)
    assert (doc["schema"], doc["vm"], doc["uri"]) == ("nestvirt.history/1", "DemoVM", URI)
    assert [(e["seq"], e["action"], e["status"], e["undone"]) for e in doc["entries"]] == [
        (1, "enable", "done", True),
        (2, "undo", "done", False),
    ]


def test_enable_json_applied(capsys: pytest.CaptureFixture[str], fake: FakePowerShell) -> None:
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--json", "DemoVM")
    assert code == 0, err
    doc = json.loads(out)  # stdout is the document only
    assert err == ""  # no progress under --json
    assert doc["schema"] == "nestvirt.plan/1" and doc["applied"] is True
    assert [c["action"] for c in doc["changes"]] == [
        "expose-virtualization-extensions",
        "disable-dynamic-memory",
    ]


def test_history_empty(capsys: pytest.CaptureFixture[str], fake: FakePowerShell) -> None:
    code, out, _ = run(capsys, "history", "DemoVM", "--hyperv")
    assert code == 0 and out == f"DemoVM: no changes by nestvirt on {URI}\n"


def test_dry_run_live_changes_nothing(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, state: Path
) -> None:
    code, out, err = run(capsys, "enable", "--hyperv", "--dry-run", "--mac-spoofing", "DemoVM")
    assert code == 0, err
    assert "by hand: Set-VMNetworkAdapter -VMName 'DemoVM' -MacAddressSpoofing On" in out
    assert '-      "MacAddressSpoofing": "Off"\n' in out
    assert '+      "MacAddressSpoofing": "On"\n' in out
    assert out.endswith("dry run: nothing changed\n")
    assert writes(fake) == [] and journal_files(state) == []


def test_no_terminal_without_yes_refuses(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, state: Path
) -> None:
    code, _out, err = run(capsys, "enable", "DemoVM", "--hyperv")
    assert code == 2
    assert err == (
        "nestvirt: no terminal to ask on: add --yes to apply the plan, or --dry-run to only "
        "show it\n"
    )
    assert writes(fake) == [] and journal_files(state) == []


def test_lock_contention_exit_2(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, state: Path
) -> None:
    with lock.vm_lock(URI, VM_ID, "DemoVM"):
        code, _out, err = run(capsys, "enable", "--hyperv", "--yes", "DemoVM")
    assert code == 2
    assert "another nestvirt" in err and "VM 'DemoVM'" in err and err.count("\n") == 1
    assert writes(fake) == [] and journal_files(state) == []


# --- running VMs, disable --------------------------------------------------------


def test_running_vm_needs_stop(capsys: pytest.CaptureFixture[str], fake: FakePowerShell) -> None:
    vm_doc(fake)["Get-VM"]["State"] = "Running"
    code, _out, err = run(capsys, "enable", "--hyperv", "--yes", "DemoVM")
    assert code == 2 and "pass --stop" in err and err.count("\n") == 1
    assert writes(fake) == []

    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--stop", "DemoVM")
    assert code == 0, err
    assert "by hand: Stop-VM -Name 'DemoVM' -Force" in out
    assert "by hand: Start-VM -Name 'DemoVM'" in out
    assert [w[0] for w in writes(fake)] == [
        "Stop-VM",
        "Set-VMProcessor",
        "Set-VMMemory",
        "Start-VM",
    ]
    assert "nestvirt: shutting down DemoVM" in err and "nestvirt: starting DemoVM again" in err
    assert vm_doc(fake)["Get-VM"]["State"] == "Running"

    # undo of a running VM needs --stop too, and starts it again
    code, _out, err = run(capsys, "undo", "--hyperv", "--yes", "DemoVM")
    assert code == 2 and "pass --stop" in err
    fake.calls.clear()
    code, _out, err = run(capsys, "undo", "--hyperv", "--yes", "--stop", "DemoVM")
    assert code == 0, err
    assert [w[0] for w in writes(fake)] == [
        "Stop-VM",
        "Set-VMProcessor",
        "Set-VMMemory",
        "Start-VM",
    ]
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False


def test_saved_vm_state_removed_after_saying_so(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell
) -> None:
    vm_doc(fake)["Get-VM"]["State"] = "Saved"
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "DemoVM")
    assert code == 0, err
    assert "saved state will be removed" in out
    assert [w[0] for w in writes(fake)] == [
        "Remove-VMSavedState",
        "Set-VMProcessor",
        "Set-VMMemory",
    ]


def test_disable_and_undo(capsys: pytest.CaptureFixture[str], fake: FakePowerShell) -> None:
    code, out, err = run(capsys, "disable", "--hyperv", "--yes", "DemoVM")
    assert code == 0 and out == "DemoVM: vmx/svm already hidden (nothing to change)\n", err
    vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = True
    code, out, err = run(capsys, "disable", "--hyperv", "--yes", "DemoVM")
    assert code == 0, err
    assert "by hand: Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $false" in out
    assert writes(fake) == [("Set-VMProcessor", {"ExposeVirtualizationExtensions": False})]
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False
    code, _out, err = run(capsys, "undo", "--hyperv", "--yes", "DemoVM")
    assert code == 0, err
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is True
    assert vm_doc(fake)["Get-VMMemory"]["DynamicMemoryEnabled"] is True  # untouched


def test_undo_refuses_when_changed_since(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell
) -> None:
    assert run(capsys, "enable", "--hyperv", "--yes", "DemoVM")[0] == 0
    vm_doc(fake)["Get-VMMemory"]["Startup"] = 8 * GIB  # someone else changed it
    code, _out, err = run(capsys, "undo", "--hyperv", "--yes", "DemoVM")
    assert code == 2 and "was changed after nestvirt's change #1" in err and "--force" in err
    code, _out, err = run(capsys, "undo", "--hyperv", "--yes", "--force", "DemoVM")
    assert code == 0, err
    now = vm_doc(fake)
    assert now["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False
    assert now["Get-VMMemory"]["Startup"] == 8 * GIB  # not nestvirt's change: kept


# --- failures: rollback, verify, guest steps -------------------------------------


def test_failed_cmdlet_puts_changed_settings_back(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, state: Path
) -> None:
    fake.fail["Set-VMMemory"] = "Failed to modify device 'Memory'."
    code, _out, err = run(capsys, "enable", "--hyperv", "--yes", "DemoVM")
    assert code == 2
    assert err.splitlines()[-1] + "\n" == (
        "nestvirt: step 2 (disable-dynamic-memory) failed: Set-VMMemory: Failed to modify "
        "device 'Memory'. — applied before it: expose-virtualization-extensions; the settings "
        "it changed are put back\n"
    )
    assert [w[0] for w in writes(fake)] == ["Set-VMProcessor", "Set-VMMemory", "Set-VMProcessor"]
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False
    (entry,) = journal_files(state)
    assert entry["status"] == "failed"


def test_change_that_does_not_stick_is_rolled_back(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake.invoke

    def forgetful(args: dict[str, Any]) -> None:
        if args["parameters"].get("ExposeVirtualizationExtensions") is True:
            return None  # "succeeds" and changes nothing
        return real(args)

    monkeypatch.setattr(fake, "invoke", forgetful)
    code, _out, err = run(capsys, "enable", "--hyperv", "--yes", "DemoVM")
    assert code == 1
    assert "Hyper-V did not keep ExposeVirtualizationExtensions" in err
    assert "the previous definition is restored (journal entry #1)" in err
    assert vm_doc(fake)["Get-VMMemory"]["DynamicMemoryEnabled"] is True  # restored


def test_install_hypervisor_and_restart(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NESTVIRT_GUEST_USER", "admin")
    monkeypatch.setenv("NESTVIRT_GUEST_PASSWORD", "pw-'$(x)")
    code, out, err = run(
        capsys, "enable", "--hyperv", "--yes", "--install-hypervisor", "--restart", "DemoVM"
    )
    assert code == 0, err
    assert "Invoke-Command -VMName 'DemoVM' -Credential (Get-Credential)" in out
    # issue 12: restart from inside the guest (was Restart-VM -Force, a hard reset)
    assert "{ Restart-Computer -Force }" in out and "Restart-VM" not in out
    (install,) = [c for c in fake.calls if c["script"] == "install"]
    assert install["args"]["user"] == "admin" and install["args"]["password"] == "pw-'$(x)"
    assert [w[0] for w in writes(fake)] == ["Set-VMProcessor", "Set-VMMemory"]
    # the guest's own view after the restart: Hyper-V installed and its hypervisor running
    assert [c["script"] for c in fake.calls if c["script"] != "collect"][-3:] == [
        "guest_check",
        "restart_guest",
        "guest_check",
    ]
    assert fake.guest_feature == "Enabled"
    assert "pw-'$(x)" not in out + err


def test_install_hypervisor_needs_credentials_before_anything(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NESTVIRT_GUEST_USER", raising=False)
    monkeypatch.delenv("NESTVIRT_GUEST_PASSWORD", raising=False)
    code, _out, err = run(capsys, "enable", "--hyperv", "--yes", "--install-hypervisor", "DemoVM")
    assert code == 2 and "NESTVIRT_GUEST_USER" in err and err.count("\n") == 1
    assert writes(fake) == []


def test_failed_install_keeps_settings_journaled(
    capsys: pytest.CaptureFixture[str],
    fake: FakePowerShell,
    monkeypatch: pytest.MonkeyPatch,
    state: Path,
) -> None:
    monkeypatch.setenv("NESTVIRT_GUEST_USER", "admin")
    monkeypatch.setenv("NESTVIRT_GUEST_PASSWORD", "secret")

    def refuse(args: dict[str, Any]) -> None:
        raise RuntimeError("The credential is invalid.")

    monkeypatch.setattr(fake, "install", refuse)
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--install-hypervisor", "DemoVM")
    assert code == 2
    assert "applied (journal entry #1)" in out
    assert (
        "nestvirt: DemoVM: the settings are changed (journaled; `undo` restores them), but "
        "step 1 (install-hypervisor) failed: The credential is invalid."
    ) in err
    assert "The credential is invalid." in err and "secret" not in out + err
    (entry,) = journal_files(state)
    assert entry["status"] == "done"
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is True
    assert run(capsys, "undo", "--hyperv", "--yes", "DemoVM")[0] == 0
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False


# --- bad input -------------------------------------------------------------------


def test_unknown_vm_one_line(capsys: pytest.CaptureFixture[str], fake: FakePowerShell) -> None:
    for command in ("enable", "disable", "undo", "history"):
        code, out, err = run(capsys, command, "Nope", "--hyperv")
        assert code == 2 and out == "", command
        assert err.startswith("nestvirt: no Hyper-V VM named 'Nope' on HV01")
        assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--connect", "qemu:///system"], "--connect is a libvirt URI"),
        (["--remove-hotplug"], "--remove-hotplug is for libvirt"),
        (["--restart"], "--restart restarts the VM after --install-hypervisor"),
        (["--memory", "301MiB"], "multiple of 2 MiB"),
        (["--memory", "3MiB"], "below 256 MiB"),
    ],
)
def test_bad_options(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, argv: list[str], message: str
) -> None:
    code, _out, err = run(capsys, "enable", "--hyperv", *argv, "--yes", "DemoVM")
    assert code == 2 and message in err and err.count("\n") == 1
    assert writes(fake) == []


def test_hyperv_options_refused_on_libvirt(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "enable", "--install-hypervisor", "DemoVM")
    assert code == 2 and "add --hyperv" in err


# --- hostile names ---------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_local(
    capsys: pytest.CaptureFixture[str], fake: FakePowerShell, name: str
) -> None:
    vm_doc(fake)["Get-VM"]["Name"] = name
    code, out, err = run(
        capsys, "enable", "--hyperv", "--dry-run", "--json", "--mac-spoofing", name
    )
    assert code == 0, err
    for change in json.loads(out)["changes"]:  # shown: one quoted literal, nothing leaks
        toks = tokens(change["command"])
        assert toks[1] == "-VMName" and toks[2] == name and len(toks) == 5
    code, out, err = run(capsys, "enable", "--hyperv", "--yes", "--mac-spoofing", name)
    assert code == 0, err
    assert run(capsys, "undo", "--hyperv", "--yes", name)[0] == 0
    assert run(capsys, "history", name, "--hyperv")[0] == 0
    assert fake.calls
    for call in fake.calls:  # FakePowerShell accepts only the fixed scripts' text
        assert all(name not in part for part in call["argv"])
    collects = [c for c in fake.calls if c["script"] == "collect"]
    assert all(c["args"]["vm_names"] == [name] for c in collects)
    assert vm_doc(fake)["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False


class StatefulHost:
    """The WinRM stand-in's Hyper-V: answers collect from `doc` and applies Set-* to it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def __call__(self, pipeline: ps.Pipeline) -> list[tuple[int, str]]:
        cmds = pipeline.commands()
        if cmds[0]["is_script"]:
            assert cmds[0]["cmd"] == hyperv_ps.COLLECT_SCRIPT
            args = json.loads(cmds[0]["args"][0][2])
            doc = copy.deepcopy(self.doc)
            wanted = [n.casefold() for n in args["vm_names"]]
            doc["vms"] = [v for v in doc["vms"] if v["Get-VM"]["Name"].casefold() in wanted]
            return ps.output_messages(json.dumps(doc))
        (get_vm, cmdlet) = cmds
        assert get_vm["cmd"] == "Get-VM" and get_vm["args"][0][:2] == ("Id", "S")
        (vm,) = [v for v in self.doc["vms"] if v["Get-VM"]["Id"] == get_vm["args"][0][2]]
        values = {n: text for n, _tag, text in cmdlet["args"]}
        if cmdlet["cmd"] == "Set-VMProcessor":
            vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = (
                values["ExposeVirtualizationExtensions"] == "true"
            )
        elif cmdlet["cmd"] == "Set-VMMemory":
            vm["Get-VMMemory"]["DynamicMemoryEnabled"] = values["DynamicMemoryEnabled"] == "true"
        return ps.output_messages()


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_remote(
    capsys: pytest.CaptureFixture[str],
    demo_doc: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    state: Path,
    name: str,
) -> None:
    password = "s3cr3t-'$(pw)"
    monkeypatch.setenv("NESTVIRT_HYPERV_USER", "HV01\\nestvirt")
    monkeypatch.setenv("NESTVIRT_HYPERV_PASSWORD", password)
    monkeypatch.setenv("NESTVIRT_HYPERV_AUTH", "basic")
    real = hyperv_transport.RemoteTransport.__init__

    def plain_http(self: Any, host: str, **kw: Any) -> None:
        real(self, host, **{**kw, "encryption": "never"})  # basic auth over http: test only

    monkeypatch.setattr(hyperv_transport.RemoteTransport, "__init__", plain_http)
    demo_doc["vms"][0]["Get-VM"]["Name"] = name
    st = ps.StandIn(StatefulHost(demo_doc))
    with ps.Server(st) as port:
        host = f"127.0.0.1:{port}"
        code, out, err = run(capsys, "enable", "--hyperv", host, "--yes", name)
        assert code == 0, err
        assert f"--hyperv 127.0.0.1:{port}`" in out
        again = run(capsys, "enable", "--hyperv", host, "--yes", name)
        assert again[0] == 0 and "already set up for nesting" in again[1]
        assert run(capsys, "undo", "--hyperv", host, "--yes", name)[0] == 0
    assert demo_doc["vms"][0]["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is False
    assert demo_doc["vms"][0]["Get-VMMemory"]["DynamicMemoryEnabled"] is True
    scripts = [c for p in st.pipelines for c in p.commands() if c["is_script"]]
    assert scripts and all(c["cmd"] == hyperv_ps.COLLECT_SCRIPT for c in scripts)
    assert all(json.loads(c["args"][0][2]) == {"vm_names": [name]} for c in scripts)
    cmdlets = [[c["cmd"] for c in p.commands()] for p in st.pipelines if len(p.commands()) == 2]
    assert cmdlets == [["Get-VM", "Set-VMProcessor"], ["Get-VM", "Set-VMMemory"]] * 2
    assert password not in out + err
    assert password.encode() not in b"".join(st.raw_requests)
