"""How long `nestvirt status --host-only --json` takes, against a bare `python -c pass`
and libvirt's own `virt-host-validate qemu` (when installed).

Prints wall-clock medians (default: of 11 runs) and their ratios; all are measured in
this same run, so the ratios are what to compare across machines. The target
(docs/architecture.md, "Lazy imports"): status ≤ 4× virt-host-validate.

nestvirt is byte-compiled first, as pip does when it installs a wheel: with
PYTHONDONTWRITEBYTECODE set (as in some CI containers) every run would otherwise
compile each module from source, and the bench would measure the compiler.

    .venv/bin/python bench/status_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import shutil
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
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    import nestvirt

    compileall.compile_dir(Path(nestvirt.__file__).parent, quiet=1)
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
    validate = shutil.which("virt-host-validate")
    if validate:
        libvirt = wall([validate, "qemu"], runs)
        print(
            f"virt-host-validate qemu              {libvirt * 1000:7.1f} ms  "
            f"{libvirt / reference:.2f}x; status is {status / libvirt:.2f}x of it"
        )


if __name__ == "__main__":
    main()
