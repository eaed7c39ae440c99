"""Issue 12: what a real Windows host does to nestvirt, through the stand-in powershell.exe.

A warning line on stdout, CLIXML progress on stderr, an access denied from
Get-VM, Windows Home's unknown feature, a wrong guest password during install.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import load_doc
from fake_powershell import BAD_CREDENTIAL, CLIXML_ERROR, GUEST_BOOTING, FakePowerShell

from nestvirt.backends import hyperv, hyperv_ps
from nestvirt.backends.hyperv import GuestClock
from nestvirt.backends.hyperv_transport import LocalTransport, PowerShellError, _local_error
from nestvirt.errors import PermissionRequired
from nestvirt.plan_hyperv import HyperVChange
from nestvirt.platforms import hyperv as hyperv_platform


def transport(fake: Any) -> LocalTransport:
    return LocalTransport(executable="powershell.exe", runner=fake)


class Clock:
    """GuestClock's time without sleeping: each sleep moves the clock on."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def guest_clock(self) -> GuestClock:
        return GuestClock(now=self.now, sleep=self.sleep)


def test_warning_on_stdout_and_clixml_on_stderr_do_not_break_json(
    demo_doc: dict[str, Any],
) -> None:
    fake = FakePowerShell(demo_doc, noise=True)
    snap = hyperv.read_facts(transport(fake), [])
    assert [vm.name for vm in snap.vms] == ["DemoVM"]
    out = fake(transport(fake).argv(hyperv_ps.COLLECT_SCRIPT), input='{"vm_names": []}')
    assert out.stdout.startswith("WARNING:") and out.stderr.startswith("#< CLIXML")


def test_error_after_clixml_progress_is_one_line(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc, fail={"Stop-VM": "The VM is locked."}, noise=True)
    with pytest.raises(PowerShellError) as exc:
        transport(fake).run_cmdlet("1b7e8a54-3f0e-4c1e-9d2a-5a3e1f0c0001", "Stop-VM", {})
    assert str(exc.value) == "Stop-VM: The VM is locked."


def test_clixml_error_record_without_frame_keeps_its_text() -> None:
    err = _local_error(CLIXML_ERROR, 1)
    assert "You do not have the required permission" in str(err)
    assert "CLIXML" not in str(err) and "<Objs" not in str(err) and "\n" not in str(err)


def test_extract_json_frames() -> None:
    b, e = hyperv_ps.JSON_BEGIN, hyperv_ps.JSON_END
    assert hyperv_ps.extract_json(f"WARNING: x\r\n{b}[1]{e}\r\ntrailing") == "[1]"
    assert hyperv_ps.extract_json(f"{b}[1]{e} {b}[2]{e}") == "[2]"
    assert hyperv_ps.extract_json("  [3] ") == "[3]"
    assert hyperv_ps.extract_json(f"{b}[1") is None
    assert hyperv_ps.extract_json("") is None


def test_every_fixed_script_silences_warnings_and_progress_and_frames_json() -> None:
    for script in (
        hyperv_ps.COLLECT_SCRIPT,
        hyperv_ps.INVOKE_SCRIPT,
        hyperv_ps.INSTALL_HYPERVISOR_SCRIPT,
        hyperv_ps.RESTART_GUEST_SCRIPT,
        hyperv_ps.GUEST_CHECK_SCRIPT,
    ):
        assert "$WarningPreference = 'SilentlyContinue'" in script
        assert "$ProgressPreference = 'SilentlyContinue'" in script
        assert hyperv_ps.JSON_BEGIN in script and hyperv_ps.JSON_END in script


def test_access_denied_from_get_vm_keeps_the_host_report() -> None:
    doc = load_doc("get-vm-access-denied.json")
    fake = FakePowerShell(doc, noise=True)
    report = hyperv_platform.status_report(
        host=None, snapshot=None, vm_names=[], transport=transport(fake)
    )
    (f,) = report.host.findings
    assert f.code == "NV-H29" and "required permission" in f.message
    assert report.vms == ()


def test_home_edition_through_the_transport() -> None:
    fake = FakePowerShell(load_doc("win11-home.json"))
    report = hyperv_platform.status_report(
        host=None, snapshot=None, vm_names=[], transport=transport(fake)
    )
    found = {f.code: f for f in report.host.findings}
    assert "Microsoft Windows 11 Home" in found["NV-H22"].message
    assert str(report.host.verdict) == "not-ready"


def test_collect_script_turns_each_failure_into_an_unknown_fact() -> None:
    script = hyperv_ps.COLLECT_SCRIPT
    assert "S-1-5-32-578" in script and "CallerMayManageVMs" in script
    assert "VmInventory" in script and "Get-VM" in script
    assert "Win32_PerfFormattedData_HvStats_HyperVHypervisor" in script
    for key in ("Model", "Manufacturer", "NumberOfLogicalProcessors", "SMBIOSAssetTag"):
        assert key in script
    # Get-VM is never called outside a try: a refusal must not lose the host report
    for line in script.splitlines():
        if "@(Get-VM " in line or "@(Get-VM)" in line:
            assert "try" in line


# --- the install step ---------------------------------------------------------------

INSTALL = HyperVChange(
    action="install-hypervisor", codes=(), command="", summary="", script="install-hypervisor"
)
RESTART = HyperVChange(
    action="restart-vm", codes=(), command="", summary="", script="restart-guest"
)
VM_ID = "1b7e8a54-3f0e-4c1e-9d2a-5a3e1f0c0001"


def run(fake: FakePowerShell, change: HyperVChange, clock: Clock) -> None:
    hyperv.run_change(transport(fake), VM_ID, change, ("admin", "pw"), clock.guest_clock())


def test_wrong_guest_password_fails_at_once(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc, guest=[BAD_CREDENTIAL])
    clock = Clock()
    with pytest.raises(PermissionRequired, match="refused the credentials of 'admin'"):
        run(fake, INSTALL, clock)
    assert [c["script"] for c in fake.calls] == ["install"] and clock.slept == []
    assert "pw" not in str([c["argv"] for c in fake.calls])  # the password went on stdin


def test_booting_guest_is_retried_until_it_answers(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc, guest=[GUEST_BOOTING, GUEST_BOOTING])
    clock = Clock()
    run(fake, INSTALL, clock)
    assert [c["script"] for c in fake.calls] == ["install", "install", "install", "guest_check"]
    assert clock.slept == [hyperv.GUEST_RETRY, hyperv.GUEST_RETRY]
    assert fake.guest_feature == "EnablePending"


def test_booting_guest_gives_up_at_the_deadline(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc, guest=[GUEST_BOOTING] * 1000)
    clock = Clock()
    with pytest.raises(PowerShellError, match="no answer within 600 s"):
        run(fake, INSTALL, clock)
    assert clock.t >= hyperv.GUEST_TIMEOUT
    assert len(fake.calls) == int(hyperv.GUEST_TIMEOUT / hyperv.GUEST_RETRY) + 1


def test_restart_then_the_guests_own_hypervisor_must_run(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    clock = Clock()
    run(fake, INSTALL, clock)
    run(fake, RESTART, clock)
    assert fake.guest_feature == "Enabled"
    assert [c["script"] for c in fake.calls][-2:] == ["restart_guest", "guest_check"]


def test_install_that_did_not_install_is_an_error(
    demo_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePowerShell(copy.deepcopy(demo_doc))
    monkeypatch.setattr(
        fake,
        "guest_check",
        lambda args: {"ok": True, "HyperVFeatureState": "Disabled", "HypervisorRunning": False},
    )
    with pytest.raises(PowerShellError, match="not installed in the guest"):
        run(fake, INSTALL, Clock())
