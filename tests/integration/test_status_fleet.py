"""`nestvirt status` over several libvirt URIs (issue 15), all on this machine, through real
sockets: libvirtd itself, the same daemon behind a proxy (a second "host"), libvirt's
test driver, a socket that accepts and never answers, one that freezes mid-session, one
that answers garbage, and a path nobody listens on. Every host gets its row; the ones
without a usable answer carry NV-H30; none holds up or aborts the others."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nestvirt import fleet
from nestvirt.cli import main

from .libvirt_proxy import Proxy

TIMEOUT = 3.0


class Garbage:
    """A unix socket that answers every connection with bytes no libvirt daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(b"\x00\x00\x00\x1cHTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            client.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


@pytest.fixture()
def hosts(tmp_path: Path) -> Iterator[dict[str, str]]:
    second = Proxy(tmp_path / "second.sock")
    mute = Proxy(tmp_path / "mute.sock", mute=True)
    frozen = Proxy(tmp_path / "frozen.sock", freeze_after=12)
    garbage = Garbage(tmp_path / "garbage.sock")
    try:
        yield {
            "system": "qemu:///system",
            "second": second.uri,
            "test": "test:///default",
            "mute": mute.uri,
            "frozen": frozen.uri,
            "garbage": garbage.uri,
            "stopped": f"qemu+unix:///system?socket={tmp_path / 'nobody.sock'}",
        }
    finally:
        for closing in (second, mute, frozen, garbage):
            closing.close()


def test_inventory_json_every_host_its_row(
    hosts: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    define: Callable[..., object],
) -> None:
    define("fleet", type="qemu", memory=128)  # qemu:///system holds at least this VM
    inventory = tmp_path / "hosts.txt"
    lines = ["# the fleet", *(f"{uri}   # {name}" for name, uri in hosts.items()), ""]
    inventory.write_text("\n".join(lines))
    start = time.monotonic()
    code = main(["status", "--inventory", str(inventory), "--json", "--timeout", str(TIMEOUT)])
    took = time.monotonic() - start
    rows = {row["uri"]: row for row in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert list(rows) == list(hosts.values())
    for name in ("system", "second", "test"):
        row = rows[hosts[name]]
        assert row["error"] is None, row["error"]
        assert row["status"]["schema"] == "nestvirt.status/1"
        assert row["seconds"] >= 0
    assert rows[hosts["test"]]["status"]["vms"][0]["name"] == "test"
    system_vms = {vm["name"] for vm in rows[hosts["system"]]["status"]["vms"]}
    assert system_vms and system_vms == {
        vm["name"] for vm in rows[hosts["second"]]["status"]["vms"]
    }
    expected = {"mute": {"timeout"}, "frozen": {"timeout", "garbage", "unreachable"},
                "garbage": {"garbage", "unreachable"}, "stopped": {"unreachable"}}  # fmt: skip
    for name, problems in expected.items():
        row = rows[hosts[name]]
        assert row["error"]["code"] == "NV-H30", name
        assert row["error"]["problem"] in problems, (name, row["error"])
        host = row["status"]["host"]
        assert host["verdict"] == "not-ready" and host["findings"][0]["code"] == "NV-H30"
    # asked at once: the two hung hosts cost one timeout, not one each
    assert took < 2 * TIMEOUT + 3


def test_table_has_one_row_per_host(
    hosts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["status", "--timeout", str(TIMEOUT)]
    for name in ("system", "test", "stopped"):
        argv += ["-c", hosts[name]]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "hosts ready: 1/3; 1 did not answer (NV-H30)" in captured.out
    assert "NV-H30" in captured.out and "test:///default" in captured.out
    assert captured.err == ""  # no progress when stderr is not a terminal


def test_one_connect_keeps_the_single_document(capsys: pytest.CaptureFixture[str]) -> None:
    main(["status", "-c", "test:///default", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "nestvirt.status/1"


def test_inventory_parsing_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inv"
    inventory.write_text("# none\n\n   # still none\n")
    assert main(["status", "--inventory", str(inventory)]) == 2
    assert "names no URI" in capsys.readouterr().err
    inventory.write_text("test:///default # a\n\ntest:///default\n")
    assert fleet.read_inventory(str(inventory)) == ["test:///default", "test:///default"]
    assert main(["status", "--inventory", str(inventory), "some-vm"]) == 2
    assert "take no VM names" in capsys.readouterr().err
    assert main(["status", "--inventory", str(tmp_path / "missing")]) == 2
    assert "cannot read inventory" in capsys.readouterr().err


def test_a_slow_host_is_reported_not_waited_for() -> None:
    slow = threading.Event()

    def progress(outcome: fleet.HostOutcome, done: int, total: int) -> None:
        seen.append((outcome.uri, done, total))

    seen: list[tuple[str, int, int]] = []
    original = fleet.query

    def query(uri: str, **kwargs: object) -> object:
        if uri == "test:///default?slow":
            slow.wait()  # never set: a host that never finishes its query
        return original(uri.split("?")[0], **kwargs)  # type: ignore[arg-type]

    fleet.query = query  # type: ignore[assignment]
    try:
        outcomes = fleet.fleet_status(
            ["test:///default?slow", "test:///default"], timeout=1.0, progress=progress
        )
    finally:
        fleet.query = original  # type: ignore[assignment]
    assert [o.problem for o in outcomes] == ["timeout", None]
    assert seen[-1][1:] == (2, 2) and {s[0] for s in seen} == {
        "test:///default?slow",
        "test:///default",
    }
