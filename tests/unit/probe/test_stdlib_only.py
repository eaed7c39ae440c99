"""The probe runs with the standard library alone (`python3 -S -m nestvirt.probe` in lab
guests), and importing nestvirt.probe is cheap (status imports it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[3] / "src"

CHECK = """
import json, sys
before = set(sys.modules)
import nestvirt.probe
imported = sorted(set(sys.modules) - before)
from nestvirt.probe import run_probe, to_json
from nestvirt.rules.probe import probe_findings
from nestvirt.probe.report import render_text
result = run_probe()
render_text(result, probe_findings(result))
to_json(result, probe_findings(result))
third_party = sorted(
    {m.split(".")[0] for m in sys.modules}
    - set(sys.stdlib_module_names) - set(sys.builtin_module_names) - {"nestvirt", "__main__"}
)
print(json.dumps({"third_party": third_party, "on_import": imported, "ok": result.ok}))
"""


def test_probe_path_is_stdlib_only_and_import_is_light() -> None:
    out = subprocess.run(
        [sys.executable, "-S", "-c", CHECK],
        env={"PYTHONPATH": str(SRC)},
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    assert report["third_party"] == []
    assert report["ok"] is True
    on_import = set(report["on_import"])
    assert not on_import & {"ctypes", "nestvirt.probe.kvm", "nestvirt.probe.cpuid", "threading"}
