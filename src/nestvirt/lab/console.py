"""Find the lab guest's report in its serial console output.

The guest prints `@@NESTVIRT-LAB-BOOTED@@` as soon as its init runs, then its
report between `@@NESTVIRT-LAB-BEGIN@@` and `@@NESTVIRT-LAB-END <length>@@`
lines: one JSON document, whose length in characters lets the reader reject a
report mangled by interleaved kernel messages. Standard library only (the
guest imports the markers from here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

BOOTED = "@@NESTVIRT-LAB-BOOTED@@"
BEGIN = "@@NESTVIRT-LAB-BEGIN@@"
END_PREFIX = "@@NESTVIRT-LAB-END"
_END = re.compile(r"@@NESTVIRT-LAB-END (\d+)@@")


def frame(payload: dict[str, Any]) -> str:
    """The console text the guest prints for its report."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return f"{BEGIN}\n{text}\n{END_PREFIX} {len(text)}@@\n"


class ConsoleError(ValueError):
    """The report between the markers is not the JSON the guest framed."""


@dataclass
class MarkerReader:
    """Feed console chunks in any split; `report` is set once a whole report arrived."""

    booted: bool = False
    report: dict[str, Any] | None = None
    transcript: list[str] = field(default_factory=list)
    _buffer: str = ""

    def feed(self, chunk: str) -> dict[str, Any] | None:
        self.transcript.append(chunk)
        self._buffer += chunk.replace("\r", "")
        if not self.booted and BOOTED in self._buffer:
            self.booted = True
        if self.report is None:
            self.report = parse_report(self._buffer)
        return self.report

    def tail(self, lines: int = 15) -> str:
        """The console's last lines, for error messages."""
        return "\n".join("".join(self.transcript).replace("\r", "").splitlines()[-lines:])


def parse_report(text: str) -> dict[str, Any] | None:
    """The first complete report in `text`, or None while it has not all arrived.

    Raises ConsoleError when the markers are complete but the content is not
    the JSON object the END marker announces.
    """
    text = text.replace("\r", "")
    start = text.find(BEGIN + "\n")
    if start < 0:
        return None
    body_start = start + len(BEGIN) + 1
    match = _END.search(text, body_start)
    if match is None:
        return None
    body = text[body_start : match.start()].rstrip("\n")
    expected = int(match.group(1))
    if len(body) != expected:
        # Kernel messages may have been interleaved: keep only lines that belong to the JSON.
        body = "".join(line for line in body.split("\n") if line.startswith("{"))
        if len(body) != expected:
            raise ConsoleError(f"guest report is {len(body)} characters, marker says {expected}")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ConsoleError(f"guest report is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConsoleError("guest report is not a JSON object")
    return value
