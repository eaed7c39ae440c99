"""How long `nestvirt status --host-only --json` takes, against a bare `python -c pass`.

Prints wall-clock medians and their ratio; both are measured in this same run,
so the ratio is what to compare across machines.

    .venv/bin/python bench/status_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

NESTVIRT = str(Path(sys.executable).with_name("nestvirt"))


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    wall([NESTVIRT, "status", "--host-only", "--json"], 2)  # warm the page cache
    reference = wall([sys.executable, "-c", "pass"], runs)
    status = wall([NESTVIRT, "status", "--host-only", "--json"], runs)
    imports = wall([sys.executable, "-c", "import nestvirt.cli, nestvirt.status"], runs)
    print(f"python -c pass                       {reference * 1000:7.1f} ms  1.00x")
    print(
        f"import nestvirt.cli, nestvirt.status {imports * 1000:7.1f} ms  {imports / reference:.2f}x"
    )
    print(
        f"nestvirt status --host-only --json   {status * 1000:7.1f} ms  {status / reference:.2f}x"
    )


if __name__ == "__main__":
    main()
