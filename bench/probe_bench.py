"""Per-exit cost of nestvirt's Python KVM probe against its C twin, in the same run.

    .venv/bin/python bench/probe_bench.py [--rounds 7] [--reps 20] [--count 200]

Builds bench/c/probe_twin.c with gcc into a temporary directory (never into the tree),
writes the probe's own guest code (nestvirt.probe.guests) to a file for it, and then, in
each round and for each mode, runs the guest `reps` times in Python (nestvirt.probe.kvm,
the probe's code path) and `reps` times in C. Prints the median µs/exit of each and the
ratio Python / C (target: within 1.5×). Needs root (or access to /dev/kvm) and gcc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nestvirt.probe import kvm
from nestvirt.probe.guests import MODES, loop_guest

TWIN = Path(__file__).resolve().parent / "c" / "probe_twin.c"
TARGET = 1.5


def build(work: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit("probe_bench: needs gcc (apt-get install gcc linux-libc-dev)")
    binary = work / "probe_twin"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(TWIN)], check=True)
    return binary


def python_runs(mode: str, count: int, reps: int) -> list[float]:
    fd, failure = kvm.open_device("/dev/kvm")
    if fd is None:
        sys.exit(f"probe_bench: {failure}")
    try:
        run_size = int(kvm.capabilities(fd)["vcpu_mmap_size"])
        guest = loop_guest(mode, count)
        results = []
        for _ in range(reps):
            r = kvm.run_guest(fd, guest, timeout=10.0, run_size=run_size, set_tss=True)
            if not r.ok or r.us_per_exit is None:
                sys.exit(f"probe_bench: Python {mode} guest failed: {r.failure}")
            results.append(r.us_per_exit)
        return results
    finally:
        os.close(fd)


def c_runs(binary: Path, code_file: Path, mode: str, count: int, reps: int) -> list[float]:
    guest = loop_guest(mode, count)
    args = [str(binary), mode, str(code_file), str(count), str(guest.port), str(reps)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [float(line) for line in out.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=20, help="guest runs per round and side")
    parser.add_argument("--count", type=int, default=200, help="outs per guest (probe: 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nestvirt-bench-") as tmp:
        work = Path(tmp)
        binary = build(work)
        samples: dict[tuple[str, str], list[float]] = {}
        for mode in MODES:
            code_file = work / f"{mode}.bin"
            code_file.write_bytes(loop_guest(mode, args.count).code)
            python_runs(mode, args.count, 2)  # warm up (imports, page cache)
            c_runs(binary, code_file, mode, args.count, 2)
            for _ in range(args.rounds):  # interleaved, so drift hits both sides alike
                samples.setdefault((mode, "python"), []).extend(
                    python_runs(mode, args.count, args.reps)
                )
                samples.setdefault((mode, "c"), []).extend(
                    c_runs(binary, code_file, mode, args.count, args.reps)
                )
    per_side = f"{args.rounds} rounds × {args.reps} guests per side"
    print(f"KVM probe loop, {args.count} outs + hlt per guest, {per_side}")
    print(f"{'mode':<6} {'Python µs/exit':>15} {'C µs/exit':>10} {'ratio':>6}")
    worst = 0.0
    for mode in MODES:
        py = statistics.median(samples[(mode, "python")])
        c = statistics.median(samples[(mode, "c")])
        ratio = py / c
        worst = max(worst, ratio)
        print(f"{mode:<6} {py:>15.2f} {c:>10.2f} {ratio:>5.2f}×")
    verdict = "within" if worst <= TARGET else "ABOVE"
    print(f"worst ratio {worst:.2f}×: {verdict} the {TARGET}× target")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
