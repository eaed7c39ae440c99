"""PowerShell output with a 100,000-digit number is one PowerShellError, not a crash
(Python refuses to convert integers of more than 4300 digits)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from nestvirt.backends.hyperv_transport import LocalTransport, PowerShellError


def test_local_output_with_a_huge_integer() -> None:
    def huge(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, '{"StartupBytes": ' + "9" * 100_000 + "}", "")

    transport = LocalTransport(executable="powershell.exe", runner=huge)
    with pytest.raises(PowerShellError, match="not JSON") as info:
        transport.collect([])
    assert "\n" not in str(info.value) and len(str(info.value)) < 500
