"""What the guard hook adds to libvirt operations it does not judge, and what judging costs.

    .venv/bin/python bench/guard_bench.py [--rounds 5] [--reps 50]

Writes the hook exactly as `nestvirt guard install` would (this venv's Python) into a
temporary directory and calls it the way libvirtd does: fork+exec with DOMAIN OPERATION
SUB-OPERATION EXTRA and the domain XML on stdin, waiting for the exit. Compared, in the
same rounds:

- `/bin/true` and `python3 -c pass` (the no-op baselines the issue names);
- the hook for `started begin` (the fast path: /bin/sh decides from argv and exits 0);
- `python -I -S -m`-style call of nestvirt.guard.hook for `started` (Python's own fast path,
  what the hook would cost without the shell in front);
- the hook for `restore begin` of a domain without exposure (judged, allowed) and of a
  TCG domain requiring svm (judged, refused).

Prints the median ms per call, the ratio to /bin/true, and the ms the fast path adds
(target: a few ms at most).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nestvirt.guard.install import package_root, render_hook

XML_PLAIN = b"""<domain type='qemu'><name>plain</name><memory unit='MiB'>128</memory>
<cpu mode='custom'><model>qemu64</model><feature policy='disable' name='svm'/></cpu>
<devices><memballoon model='none'/></devices></domain>"""
XML_SVM = XML_PLAIN.replace(b"policy='disable'", b"policy='require'").replace(b"qemu64", b"EPYC")
TARGET_MS = 3.0


def call(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    """One call like libvirt's virCommandRun: pipe for stdin, fork+exec, wait. Seconds."""
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    start = time.perf_counter()
    pid = os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, read_end, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
        ],
    )
    os.close(read_end)
    # small: fits the pipe buffer, like a domain XML; a child that exits without reading
    # gives EPIPE, which libvirt ignores too
    with contextlib.suppress(BrokenPipeError):
        os.write(write_end, stdin)
    os.close(write_end)
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    os.close(devnull)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nvguard-bench-"))
    try:
        hook = work / "nestvirt"
        hook.write_text(render_hook())
        hook.chmod(0o755)
        env = {
            "LC_ALL": "C",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "NESTVIRT_GUARD_LOG": str(work / "guard.log"),
        }
        python3 = shutil.which("python3", path=env["PATH"]) or sys.executable
        code = (
            f"import sys; sys.path.insert(0, {str(package_root())!r}); "
            "from nestvirt.guard.hook import main; sys.exit(main(sys.argv[1:]))"
        )
        cases: dict[str, tuple[list[str], bytes]] = {
            "/bin/true": (["/bin/true"], XML_PLAIN),
            "python3 -c pass": ([python3, "-c", "pass"], XML_PLAIN),
            "hook started (sh fast path)": ([str(hook), "vm", "started", "begin", "-"], XML_SVM),
            "hook.main started (python -I -S)": (
                [sys.executable, "-I", "-S", "-c", code, "vm", "started", "begin", "-"],
                XML_SVM,
            ),
            "hook restore, no exposure (allowed)": (
                [str(hook), "plain", "restore", "begin", "-"],
                XML_PLAIN,
            ),
            "hook restore, svm (refused)": ([str(hook), "l1", "restore", "begin", "-"], XML_SVM),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (argv, stdin) in cases.items():
                call(argv, stdin, env)  # warm the page cache for this case
                for _ in range(args.reps):
                    samples[name].append(call(argv, stdin, env))
        base = statistics.median(samples["/bin/true"]) * 1000
        print(f"{'case':<38} {'median ms':>9} {'p90 ms':>8} {'× /bin/true':>12}")
        for name, values in samples.items():
            median = statistics.median(values) * 1000
            p90 = sorted(values)[int(len(values) * 0.9)] * 1000
            print(f"{name:<38} {median:9.2f} {p90:8.2f} {median / base:12.1f}")
        fast = statistics.median(samples["hook started (sh fast path)"]) * 1000
        added = fast - base
        py = statistics.median(samples["python3 -c pass"]) * 1000
        print(
            f"\nthe hook adds {added:.2f} ms to an operation it does not judge "
            f"(vs /bin/true; python3 -c pass costs {py:.2f} ms); target ≤ {TARGET_MS} ms: "
            + ("met" if added <= TARGET_MS else "NOT met")
        )
        return 0 if added <= TARGET_MS else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
