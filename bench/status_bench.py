"""How long `nestvirt status --host-only --json` takes, against a bare `python -c pass`
and libvirt's own `virt-host-validate qemu` (when installed).

Prints wall-clock medians (default: of 11 runs) and their ratios; all are measured in
this same run, so the ratios are what to compare across machines. The target
(docs/architecture.md, "Lazy imports"): status ≤ 4× virt-host-validate.

The commands take turns (one run of each, then the next round), so that a burst of
load from elsewhere on the machine lands on all of them alike rather than on whichever
was being timed just then.

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


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    import nestvirt

    compileall.compile_dir(Path(nestvirt.__file__).parent, quiet=1)
    status_argv = [NESTVIRT, "status", "--host-only", "--json"]
    done = subprocess.run(status_argv, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # a failing run would be timed as a fast one
        sys.exit(f"{' '.join(status_argv)} exited {done.returncode}:\n{done.stderr}")
    commands = {
        "reference": [sys.executable, "-c", "pass"],
        "status": status_argv,
        "imports": [sys.executable, "-c", "import nestvirt.cli, nestvirt.status"],
    }
    validate = shutil.which("virt-host-validate")
    if validate:
        commands["libvirt"] = [validate, "qemu"]
    for argv in commands.values():  # warm the page cache
        once(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(once(argv))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference, status, imports = median["reference"], median["status"], median["imports"]
    print(f"python -c pass                       {reference * 1000:7.1f} ms  1.00x")
    print(
        f"import nestvirt.cli, nestvirt.status {imports * 1000:7.1f} ms  {imports / reference:.2f}x"
    )
    print(
        f"nestvirt status --host-only --json   {status * 1000:7.1f} ms  {status / reference:.2f}x"
    )
    if "libvirt" in median:
        libvirt = median["libvirt"]
        print(
            f"virt-host-validate qemu              {libvirt * 1000:7.1f} ms  "
            f"{libvirt / reference:.2f}x; status is {status / libvirt:.2f}x of it"
        )


if __name__ == "__main__":
    main()
