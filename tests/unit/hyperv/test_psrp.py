"""The remote transport against a WinRM stand-in on 127.0.0.1 (network boundary only).

pypsrp runs unpatched: it builds and fragments the PSRP messages, POSTs WSMan
envelopes, and parses the stand-in's real-shaped responses. The stand-in
decodes each CREATE_PIPELINE so the tests see exactly what would run on the
Windows host: the fixed script with one ArgsJson parameter, or
`Get-VM -Id … | <cmdlet> -Param value`.
"""

from __future__ import annotations

import base64
import copy
import json
import shlex
from typing import Any

import psrp_standin as ps
import pytest
from helpers import HOSTILE

from nestvirt import plan_hyperv
from nestvirt.backends import hyperv, hyperv_ps
from nestvirt.backends.hyperv_transport import (
    PowerShellError,
    RemoteTransport,
    parse_host_spec,
    resolve_credentials,
)
from nestvirt.errors import ConnectError, UsageError
from nestvirt.platforms import hyperv as hyperv_platform

PASSWORD = "s3cr3t-'$(pw)"


def remote(port: int) -> RemoteTransport:
    return RemoteTransport(
        f"127.0.0.1:{port}",
        user="HV01\\nestvirt",
        password=PASSWORD,
        auth="basic",
        encryption="never",
    )


class HyperVHost:
    """The stand-in's answers: a snapshot for the collect script, a cmdlet may fail."""

    def __init__(self, doc: dict[str, Any], fail: dict[str, tuple[str, bool]] | None = None):
        self.doc = doc
        self.fail = fail or {}

    def __call__(self, pipeline: ps.Pipeline) -> list[tuple[int, str]]:
        cmds = pipeline.commands()
        if cmds[0]["is_script"]:
            (_name, _tag, value) = cmds[0]["args"][0]
            args = json.loads(value)
            doc = copy.deepcopy(self.doc)
            wanted = [n.casefold() for n in args.get("vm_names", [])]
            if wanted:
                doc["vms"] = [v for v in doc["vms"] if v["Get-VM"]["Name"].casefold() in wanted]
            return ps.output_messages(json.dumps(doc))
        cmdlet = cmds[-1]["cmd"]
        if cmdlet in self.fail:
            message, terminating = self.fail[cmdlet]
            if terminating:
                return ps.failed_messages(message)
            return ps.error_messages(message, cmdlet)
        return ps.output_messages()


def test_collect_builds_script_with_one_parameter(demo_doc: dict[str, Any]) -> None:
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        t = remote(port)
        snap = hyperv.read_facts(t, ["DemoVM"])
        t.close()
    assert snap.vms[0].name == "DemoVM" and snap.host.build == 26100
    assert st.actions == ["Create", "Receive", "Command", "Receive", "Delete"]
    (pipeline,) = st.pipelines
    (cmd,) = pipeline.commands()
    assert cmd["is_script"] is True
    assert cmd["cmd"] == hyperv_ps.COLLECT_SCRIPT  # the fixed text, byte for byte
    assert cmd["args"] == [("ArgsJson", "S", '{"vm_names": ["DemoVM"]}')]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_parameters_not_script(demo_doc: dict[str, Any], name: str) -> None:
    demo_doc["vms"][0]["Get-VM"]["Name"] = name
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        t = remote(port)
        snap = hyperv.read_facts(t, [name])
        vm = hyperv.select_one(snap, name)
        plan = plan_hyperv.plan_enable(
            vm,
            snap.host,
            [],
            stop=False,
            mac_spoofing=True,
            memory_bytes=None,
            install_hypervisor=False,
        )
        hyperv.apply_plan(t, plan)
        t.close()
    assert vm.name == name
    scripts = [c for p in st.pipelines for c in p.commands() if c["is_script"]]
    assert scripts and all(name not in c["cmd"] for c in scripts)
    assert json.loads(scripts[0]["args"][0][2]) == {"vm_names": [name]}
    writes = [p.commands() for p in st.pipelines if not p.commands()[0]["is_script"]]
    assert [[c["cmd"] for c in w] for w in writes] == [
        ["Get-VM", "Set-VMProcessor"],
        ["Get-VM", "Set-VMMemory"],
        ["Get-VM", "Set-VMNetworkAdapter"],
    ]
    vm_id = demo_doc["vms"][0]["Get-VM"]["Id"]
    assert all(w[0]["args"] == [("Id", "S", vm_id)] for w in writes)
    assert writes[0][1]["args"] == [("ExposeVirtualizationExtensions", "B", "true")]
    assert writes[1][1]["args"] == [("DynamicMemoryEnabled", "B", "false")]
    assert writes[2][1]["args"] == [("MacAddressSpoofing", "S", "On")]


def test_switch_and_integer_parameters(demo_doc: dict[str, Any]) -> None:
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        t = remote(port)
        t.run_cmdlet("id-1", "Stop-VM", {"Force": None})
        t.run_cmdlet("id-1", "Set-VMMemory", {"StartupBytes": 8 * 1024**3})
        t.close()
    stop, mem = (p.commands() for p in st.pipelines)
    assert stop[1] == {"cmd": "Stop-VM", "is_script": False, "args": [("Force", "Nil", None)]}
    assert mem[1]["args"] == [("StartupBytes", "I64", str(8 * 1024**3))]


def test_cmdlet_error_is_one_line_with_its_message(demo_doc: dict[str, Any]) -> None:
    message = (
        "Failed to modify device 'Processor'._x000D__x000A_Cannot change the processor "
        "functionality of a virtual machine now."
    )
    st = ps.StandIn(HyperVHost(demo_doc, fail={"Set-VMProcessor": (message, False)}))
    with ps.Server(st) as port:
        t = remote(port)
        with pytest.raises(PowerShellError) as exc:
            t.run_cmdlet("id-1", "Set-VMProcessor", {"ExposeVirtualizationExtensions": True})
        t.close()
    assert str(exc.value) == (
        "Set-VMProcessor: Failed to modify device 'Processor'. Cannot change the processor "
        "functionality of a virtual machine now."
    )


def test_terminating_error(demo_doc: dict[str, Any]) -> None:
    st = ps.StandIn(HyperVHost(demo_doc, fail={"Set-VMMemory": ("nestvirt: boom", True)}))
    with ps.Server(st) as port:
        t = remote(port)
        with pytest.raises(PowerShellError, match=r"^nestvirt: boom$"):
            t.run_cmdlet("id-1", "Set-VMMemory", {"DynamicMemoryEnabled": False})
        t.close()


def test_status_report_remote_same_json_as_snapshot(
    demo_doc: dict[str, Any], tmp_path: Any
) -> None:
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(demo_doc))
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        # reached over Remoting as HV01: the snapshot's fixes name it the same way
        live = hyperv_platform.status_report(
            host="HV01", snapshot=None, vm_names=[], transport=remote(port)
        ).to_json()
    offline = hyperv_platform.status_report(host=None, snapshot=str(path), vm_names=[]).to_json()
    assert live == offline
    assert live["host"]["facts"]["reached_as"] == "HV01"


@pytest.mark.parametrize("host", ["hv01.example.com", "admin@hv 01:5986", "it's"])
def test_status_over_remoting_fixes_name_the_host(demo_doc: dict[str, Any], host: str) -> None:
    """Issue 13: the rules' fixes reach the host as the user did (`--hyperv HOST`)."""
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        report = hyperv_platform.status_report(
            host=host, snapshot=None, vm_names=[], transport=remote(port)
        )
    (vm,) = report.vms
    fix = next(f.fix for f in vm.findings if f.code == "NV-V01")
    assert shlex.split(fix or "") == ["nestvirt", "enable", "--hyperv", host, "DemoVM"]


def test_credentials_never_in_requests_or_errors(demo_doc: dict[str, Any]) -> None:
    st = ps.StandIn(HyperVHost(demo_doc))
    with ps.Server(st) as port:
        t = remote(port)
        t.collect([])
        t.close()
    body = b"".join(st.raw_requests)
    assert PASSWORD.encode() not in body
    # basic auth carries it in the header, as the protocol does; nowhere else
    assert all(h.startswith("Basic ") for h in st.auth_headers)
    assert PASSWORD in base64.b64decode(st.auth_headers[0][6:]).decode()
    assert PASSWORD not in repr(t)


def test_unreachable_host_is_one_line() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = RemoteTransport(
        f"127.0.0.1:{port}",
        user="u",
        password=PASSWORD,
        auth="basic",
        encryption="never",
        operation_timeout=5,
    )
    with pytest.raises(ConnectError) as exc:
        t.collect([])
    assert str(exc.value) == f"cannot reach 127.0.0.1:{port} (PowerShell Remoting): ConnectionError"
    assert PASSWORD not in str(exc.value)


def test_bad_option_combination_is_usage_error() -> None:
    t = RemoteTransport("127.0.0.1:1", user="u", password="p", auth="basic")  # basic over http
    with pytest.raises(UsageError, match="encryption"):
        t.collect([])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hv01", ("hv01", 5985, False)),
        ("hv01:5999", ("hv01", 5999, False)),
        ("https://hv01", ("hv01", 5986, True)),
        ("https://hv01.example.com:443", ("hv01.example.com", 443, True)),
        ("http://10.0.0.5", ("10.0.0.5", 5985, False)),
    ],
)
def test_host_spec(spec: str, expected: tuple[str, int, bool]) -> None:
    assert parse_host_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "ftp://hv01", "hv01:notaport", "https://u@hv01", "hv01/x"])
def test_bad_host_spec(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_host_spec(spec)


def test_credentials_from_env_and_no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTVIRT_HYPERV_USER", "envuser")
    monkeypatch.setenv("NESTVIRT_HYPERV_PASSWORD", "envpw")
    assert resolve_credentials("hv", None, None) == ("envuser", "envpw")
    assert resolve_credentials("hv", "opt", "optpw") == ("opt", "optpw")
    monkeypatch.delenv("NESTVIRT_HYPERV_PASSWORD")
    with pytest.raises(UsageError, match="set NESTVIRT_HYPERV_PASSWORD") as exc:
        resolve_credentials("hv", None, None, interactive=False)
    assert "envpw" not in str(exc.value)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert resolve_credentials("hv", None, None, interactive=True) == ("envuser", "typed")
    monkeypatch.delenv("NESTVIRT_HYPERV_USER")
    assert resolve_credentials("hv", None, None) == (None, None)  # Kerberos identity
