"""The toy platform's I/O: a host is one JSON file {"host": NAME, "vms": {NAME: {...}}},
named by a `toy:///path/to/host.json` URI. Reads and writes only; no policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nestvirt.errors import ConnectError, NotFound
from nestvirt.statedir import atomic_write


def path_of(uri: str) -> Path:
    return Path(uri.removeprefix("toy://"))


def read_host(uri: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path_of(uri).read_text())
    except (OSError, ValueError) as exc:
        raise ConnectError(f"{uri}: the toy host does not answer ({exc})") from None
    return doc


def definition(uri: str, vm: str) -> str:
    """One VM's definition as text (what the journal keeps)."""
    vms = read_host(uri)["vms"]
    if vm not in vms:
        raise NotFound(f"no toy VM {vm!r} on {uri}")
    return json.dumps(vms[vm], sort_keys=True)


def define(uri: str, vm: str, text: str) -> None:
    doc = read_host(uri)
    doc["vms"][vm] = json.loads(text)
    atomic_write(path_of(uri), json.dumps(doc, sort_keys=True), mode=0o600, what="the toy host")
