"""The local transport: powershell.exe argv, stdin arguments, JSON out, errors as one line."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
from fake_powershell import FakePowerShell
from helpers import HOSTILE

from nestvirt.backends import hyperv, hyperv_ps
from nestvirt.backends.hyperv_transport import LocalTransport, PowerShellError
from nestvirt.errors import ConnectError
from nestvirt.platforms import hyperv as hyperv_platform


def transport(fake: Any) -> LocalTransport:
    return LocalTransport(executable="powershell.exe", runner=fake)


def test_argv_shape(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    transport(fake).collect([])
    (call,) = fake.calls
    argv = call["argv"]
    assert argv[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    assert sum(len(a) + 3 for a in argv) < 32767  # CreateProcess limit
    script = base64.b64decode(argv[4]).decode("utf-16-le")
    assert "param([string]$ArgsJson)" in script and "ConvertTo-Json" in script
    assert "$input | Out-String" in script  # the argument comes from stdin


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_travel_as_data(demo_doc: dict[str, Any], name: str) -> None:
    demo_doc["vms"][0]["Get-VM"]["Name"] = name
    fake = FakePowerShell(demo_doc)
    snap = hyperv.read_facts(transport(fake), [name])
    assert snap.vms[0].name == name
    (call,) = fake.calls
    assert call["args"] == {"vm_names": [name]}
    script = base64.b64decode(call["argv"][4]).decode("utf-16-le")
    assert name not in script
    assert all(name not in a for a in call["argv"])


def test_write_is_a_fixed_script_with_parameters(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    t = transport(fake)
    vm_id = demo_doc["vms"][0]["Get-VM"]["Id"]
    t.run_cmdlet(vm_id, "Set-VMMemory", {"StartupBytes": 4294967296})
    (call,) = fake.calls
    assert call["script"] == "invoke"
    assert call["args"] == {
        "vm_id": vm_id,
        "cmdlet": "Set-VMMemory",
        "parameters": {"StartupBytes": 4294967296},
    }
    with pytest.raises(ValueError):
        t.run_cmdlet(vm_id, "Invoke-Expression", {"Command": "x"})


def test_invoke_script_only_runs_allowed_cmdlets() -> None:
    text = hyperv_ps.INVOKE_SCRIPT
    assert "& $NvArgs.cmdlet @splat" in text and "-notcontains $NvArgs.cmdlet" in text
    for cmdlet in hyperv_ps.WRITE_CMDLETS:
        assert f"'{cmdlet}'" in text
    for script in (
        hyperv_ps.COLLECT_SCRIPT,
        hyperv_ps.INVOKE_SCRIPT,
        hyperv_ps.ADAPTER_SPOOFING_SCRIPT,
        hyperv_ps.INSTALL_HYPERVISOR_SCRIPT,
    ):
        assert script.lstrip().startswith("param([string]$ArgsJson)")
        assert "Invoke-Expression" not in script and "iex " not in script


def test_powershell_error_is_one_line_with_cmdlet_message(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(
        demo_doc, fail={"Set-VMProcessor": "Failed to modify device\n'Processor'."}
    )
    with pytest.raises(PowerShellError) as exc:
        transport(fake).run_cmdlet("x", "Set-VMProcessor", {"ExposeVirtualizationExtensions": True})
    assert str(exc.value) == "Set-VMProcessor: Failed to modify device 'Processor'."


def test_non_json_error_and_output() -> None:
    def runner(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            argv,
            1,
            "",
            "Get-VM : You do not have the required\r\npermission to complete this task.\r\n",
        )

    with pytest.raises(PowerShellError, match=r"^Get-VM : You do not have the required permission"):
        transport(runner).collect([])

    def garbage(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, "WARNING: something\n{", "")

    with pytest.raises(PowerShellError, match="not JSON"):
        transport(garbage).collect([])


def test_timeout_and_missing_executable() -> None:
    def slow(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    with pytest.raises(ConnectError, match="did not answer"):
        transport(slow).collect([])

    def missing(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    with pytest.raises(ConnectError, match="cannot run"):
        transport(missing).collect([])


def test_no_powershell_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConnectError, match="--hyperv HOST"):
        LocalTransport().executable()


def test_status_report_over_local_transport(demo_doc: dict[str, Any]) -> None:
    fake = FakePowerShell(demo_doc)
    r = hyperv_platform.status_report(
        host=None, snapshot=None, vm_names=["DemoVM"], transport=transport(fake)
    )
    doc = r.to_json()
    assert doc["schema"] == "nestvirt.status/1"
    assert doc["host"]["platform"] == "windows"
    assert doc["vms"][0]["backend"] == "hyperv" and doc["vms"][0]["state"] == "off"
    json.dumps(doc)  # serialisable as it is
