"""Time `nestvirt lab`: cold (image build, kernel download included) vs warm, direct vs libvirt.

    python bench/lab_bench.py [--runs N] [--skip-cold]

Cold uses a fresh cache directory (NESTVIRT_LAB_CACHE), so the shared cache
is left alone. Prints seconds per case, µs/exit at each depth, and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nestvirt", "lab", "--json", *args],
        capture_output=True, text=True, check=False, env=env, timeout=600,
    )  # fmt: skip
    took = time.monotonic() - started
    doc = json.loads(done.stdout)
    if not doc.get("ok"):
        raise SystemExit(f"lab {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return took, doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    opts = parser.parse_args()
    results: dict[str, list[float]] = {}
    exits: dict[str, list[float]] = {"depth 0": [], "depth 1": []}
    if not opts.skip_cold:
        with tempfile.TemporaryDirectory(prefix="nestvirt-lab-bench-") as cache:
            env = {**os.environ, "NESTVIRT_LAB_CACHE": cache}
            results["cold (libvirt)"] = [run([], env)[0]]
    run([])  # make sure the shared cache is warm
    for name, args in (("warm libvirt", []), ("warm direct", ["--direct"])):
        for _ in range(opts.runs):
            took, doc = run(args)
            results.setdefault(name, []).append(took)
            for level in doc["levels"]:
                if level["us_per_exit"] is not None:
                    exits[f"depth {level['depth']}"].append(level["us_per_exit"])
    print(f"{'case':18} {'median s':>9} {'min s':>7}  runs")
    for name, times in results.items():
        print(f"{name:18} {statistics.median(times):9.2f} {min(times):7.2f}  {len(times)}")
    for depth, values in exits.items():
        if values:
            print(f"µs/exit {depth}: median {statistics.median(values):.1f} "
                  f"(guest at depth {int(depth[-1]) + 1})")  # fmt: skip
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"ratio libvirt/direct (warm): {med['warm libvirt'] / med['warm direct']:.2f}")
    if "cold (libvirt)" in med:
        print(f"ratio cold/warm (libvirt): {med['cold (libvirt)'] / med['warm libvirt']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
