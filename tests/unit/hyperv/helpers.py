"""Plain helpers shared by the Hyper-V tests here and tests/cli/test_hyperv_cli.py."""

from __future__ import annotations

from typing import Any

import pytest

from nestvirt.cli import main

# VM names that must travel as data: quotes of every kind, PowerShell syntax, newline
HOSTILE = [
    "it's",
    "a;b",
    "$(Stop-Computer)",
    "back`tick",
    "new\nline",
    "Ünïcødé ☃",
    "‘curly’",
    "‘curly’ ‚low‛",
    "'; Remove-Item C:\\ -Recurse; '",
]

# nestvirt.plan/1 of DemoVM in ws2025-intel-demo.json (PRODUCT.md), nothing asked for but nesting
DEMO_PLAN = {
    "schema": "nestvirt.plan/1",
    "vm": "DemoVM",
    "applied": False,
    "changes": [
        {
            "code": "NV-V01",
            "action": "expose-virtualization-extensions",
            "command": "Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true",
        },
        {
            "code": "NV-V02",
            "action": "disable-dynamic-memory",
            "command": "Set-VMMemory -VMName 'DemoVM' -DynamicMemoryEnabled $false",
        },
    ],
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`nestvirt ARGV` in-process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def use_fake_powershell(monkeypatch: pytest.MonkeyPatch, fake: Any) -> None:
    """Make `--hyperv` without HOST run `fake` as powershell.exe here."""
    from nestvirt.backends import hyperv_transport

    real = hyperv_transport.LocalTransport.__init__

    def init(
        self: Any, executable: str | None = None, runner: Any = None, timeout: float = 900.0
    ) -> None:
        real(self, executable="powershell.exe", runner=fake, timeout=timeout)

    monkeypatch.setattr(hyperv_transport.LocalTransport, "__init__", init)
