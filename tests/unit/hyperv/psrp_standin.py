"""A local stand-in for a Windows WinRM endpoint, at the network boundary only.

A tiny HTTP server on 127.0.0.1 answers the WSMan SOAP POSTs pypsrp sends
(Create, Receive, Command, Signal, Delete) with envelopes shaped like the ones a
Windows Server 2019 WinRM service returns, carrying PSRP fragments whose CLIXML
payloads are in tests/fixtures/hyperv/psrp/ (real-shaped: the element names,
type names and BOM are those Windows sends). pypsrp itself is not patched:
its request building, fragmenting, HTTP and response parsing all run.

Each pipeline the client creates is recorded as the decoded CLIXML of its
CREATE_PIPELINE message, so tests can check what was asked for: which
commands, script or cmdlet, and which parameters with which values.
"""

from __future__ import annotations

import base64
import re
import struct
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

PAYLOADS = Path(__file__).resolve().parents[2] / "fixtures" / "hyperv" / "psrp"

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"

SESSION_CAPABILITY = 0x00010002
CREATE_PIPELINE = 0x00021006
RUNSPACEPOOL_STATE = 0x00021005
APPLICATION_PRIVATE_DATA = 0x00021009
PIPELINE_OUTPUT = 0x00041004
ERROR_RECORD = 0x00041005
PIPELINE_STATE = 0x00041006
TO_CLIENT = 1
BOM = b"\xef\xbb\xbf"


def payload(name: str, **values: str) -> str:
    text = (PAYLOADS / name).read_text(encoding="utf-8").strip()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", escape(value))
    return text


@dataclass
class Pipeline:
    """What the client asked one pipeline to run, decoded from CREATE_PIPELINE."""

    clixml: str

    def commands(self) -> list[dict[str, Any]]:
        """[{"cmd": str, "is_script": bool, "args": [(name or None, CLIXML tag, text)]}]"""
        root = ET.fromstring(self.clixml)
        out = []
        for cmd in root.iter("Obj"):
            ms = cmd.find("MS")
            if ms is None or ms.find("S[@N='Cmd']") is None:
                continue
            args = []
            for arg in ms.findall("Obj[@N='Args']/LST/Obj/MS"):
                name_el = arg.find("*[@N='N']")
                value_el = arg.find("*[@N='V']")
                name = None if name_el is None or name_el.tag == "Nil" else _clixml(name_el.text)
                tag = "Nil" if value_el is None else value_el.tag
                text = None if value_el is None else _clixml(value_el.text)
                args.append((name, tag, text))
            out.append(
                {
                    "cmd": _clixml(ms.findtext("S[@N='Cmd']")),
                    "is_script": ms.findtext("B[@N='IsScript']") == "true",
                    "args": args,
                }
            )
        return out


def _clixml(text: str | None) -> str | None:
    """Undo CLIXML's _xHHHH_ escapes (newlines, control characters, _x itself)."""
    if text is None:
        return None
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


@dataclass
class StandIn:
    """The server's state and script: `respond(pipeline)` → PSRP messages for it."""

    respond: Callable[[Pipeline], list[tuple[int, str]]]
    pipelines: list[Pipeline] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    raw_requests: list[bytes] = field(default_factory=list)
    shell_id: str = "4BDB2D7F-56CA-4903-84A2-DB1AB8950A9E"
    pool_id: uuid.UUID | None = None
    pending: dict[str, list[bytes]] = field(default_factory=dict)  # command id → fragments
    _object_id: int = 0

    def fragment(self, msg_type: int, clixml: str, pid: uuid.UUID | None) -> bytes:
        assert self.pool_id is not None
        data = (
            struct.pack("<II", TO_CLIENT, msg_type)
            + self.pool_id.bytes_le
            + (pid or uuid.UUID(int=0)).bytes_le
            + BOM
            + clixml.encode("utf-8")
        )
        self._object_id += 1
        return struct.pack(">QQBI", self._object_id, 0, 3, len(data)) + data


def _messages(blob: bytes) -> list[tuple[int, uuid.UUID, uuid.UUID, str]]:
    """Client fragments (each one whole here) → (type, rpid, pid, clixml)."""
    out = []
    while blob:
        _obj, _frag, _flags, length = struct.unpack(">QQBI", blob[:21])
        data, blob = blob[21 : 21 + length], blob[21 + length :]
        msg_type = struct.unpack("<I", data[4:8])[0]
        rpid = uuid.UUID(bytes_le=data[8:24])
        pid = uuid.UUID(bytes_le=data[24:40])
        body = data[40:]
        if body.startswith(BOM):
            body = body[3:]
        out.append((msg_type, rpid, pid, body.decode("utf-8")))
    return out


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        f"<s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _streams(fragments: list[bytes], command_id: str | None, done: bool) -> str:
    attr = f' CommandId="{command_id}"' if command_id else ""
    parts = [
        f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(f).decode()}</rsp:Stream>'
        for f in fragments
    ]
    if command_id and done:
        parts.append(
            f'<rsp:CommandState CommandId="{command_id}" State="{SHELL}CommandState/Done"/>'
        )
    return "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        st = self.standin
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        st.raw_requests.append(raw)
        st.auth_headers.append(self.headers.get("Authorization", ""))
        env = ET.fromstring(raw)
        action = env.findtext("s:Header/wsa:Action", namespaces=NS) or ""
        msg_id = env.findtext("s:Header/wsa:MessageID", namespaces=NS) or ""
        st.actions.append(action.rsplit("/", 1)[-1])
        body = env.find("s:Body", NS)
        assert body is not None
        if action == ACTION + "Create":
            creation = body.find(
                "rsp:Shell/{http://schemas.microsoft.com/powershell}creationXml", NS
            )
            assert creation is not None and creation.text
            msgs = _messages(base64.b64decode(creation.text))
            assert [m[0] for m in msgs] == [SESSION_CAPABILITY, 0x00010004]
            st.pool_id = msgs[0][1]
            st.pending[""] = [
                st.fragment(SESSION_CAPABILITY, payload("session_capability.xml"), None),
                st.fragment(
                    APPLICATION_PRIVATE_DATA, payload("application_private_data.xml"), None
                ),
                st.fragment(RUNSPACEPOOL_STATE, payload("runspace_state_opened.xml"), None),
            ]
            reply = _envelope(
                ACTION + "CreateResponse",
                msg_id,
                "<x:ResourceCreated><a:Address>http://127.0.0.1/wsman</a:Address>"
                "<a:ReferenceParameters><w:ResourceURI>"
                "http://schemas.microsoft.com/powershell/Microsoft.PowerShell</w:ResourceURI>"
                f'<w:SelectorSet><w:Selector Name="ShellId">{st.shell_id}</w:Selector>'
                "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
                f"<rsp:Shell><rsp:ShellId>{st.shell_id}</rsp:ShellId>"
                "<rsp:ResourceUri>http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
                "</rsp:ResourceUri><rsp:Owner>HV01\\nestvirt</rsp:Owner>"
                "<rsp:InputStreams>stdin pr</rsp:InputStreams>"
                "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
                "<rsp:State>Connected</rsp:State></rsp:Shell>",
            )
        elif action == SHELL + "Command":
            line = body.find("rsp:CommandLine", NS)
            assert line is not None
            command_id = line.attrib["CommandId"].upper()
            arguments = line.findtext("rsp:Arguments", namespaces=NS) or ""
            msgs = _messages(base64.b64decode(arguments))
            assert msgs[0][0] == CREATE_PIPELINE
            pipeline = Pipeline(msgs[0][3])
            st.pipelines.append(pipeline)
            pid = msgs[0][2]
            st.pending[command_id] = [st.fragment(t, xml, pid) for t, xml in st.respond(pipeline)]
            reply = _envelope(
                SHELL + "CommandResponse",
                msg_id,
                f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId>"
                "</rsp:CommandResponse>",
            )
        elif action == SHELL + "Receive":
            desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
            assert desired is not None
            command_id = desired.attrib.get("CommandId", "").upper()
            frags = st.pending.pop(command_id, [])
            reply = _envelope(
                SHELL + "ReceiveResponse", msg_id, _streams(frags, command_id or None, True)
            )
        elif action == SHELL + "Signal":
            reply = _envelope(SHELL + "SignalResponse", msg_id, "<rsp:SignalResponse/>")
        elif action == ACTION + "Delete":
            reply = _envelope(ACTION + "DeleteResponse", msg_id, "")
        else:
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Server:
    """`with Server(standin) as port:` — serve WSMan on 127.0.0.1:port until the block ends."""

    def __init__(self, standin: StandIn) -> None:
        handler = type("Handler", (_Handler,), {"standin": standin})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return int(self.httpd.server_address[1])

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def output_messages(*texts: str) -> list[tuple[int, str]]:
    """PIPELINE_OUTPUT for each string, then PIPELINE_STATE Completed."""
    msgs = [(PIPELINE_OUTPUT, payload("pipeline_output_string.xml", TEXT=t)) for t in texts]
    return [*msgs, (PIPELINE_STATE, payload("pipeline_state_completed.xml"))]


def error_messages(message: str, command: str) -> list[tuple[int, str]]:
    """An ERROR_RECORD as a cmdlet writes it, then PIPELINE_STATE Completed."""
    return [
        (ERROR_RECORD, payload("error_record.xml", MESSAGE=message, COMMAND=command)),
        (PIPELINE_STATE, payload("pipeline_state_completed.xml")),
    ]


def failed_messages(message: str) -> list[tuple[int, str]]:
    """A terminating error (`throw` under ErrorActionPreference Stop): PIPELINE_STATE Failed."""
    return [(PIPELINE_STATE, payload("pipeline_state_failed.xml", MESSAGE=message))]
