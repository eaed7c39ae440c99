"""`nestvirt status` over ~1,000 domains on one real libvirtd, against the floor: a bare
libvirt-python loop that fetches every domain's XML and state.

Defines the domains itself on qemu:///system (a mix of TCG/KVM, CPU modes, balloons,
nwfilters; never started), times in the same run the floor, `nestvirt status --json` and
the table view as real processes (median of N), prints the ratios and the peak RSS of the
status processes, and undefines the domains again (also on Ctrl-C).

Goals (issue 15): --json ≤ 2× the floor, table ≤ 3×, memory ≤ 100 MiB.

    .venv/bin/python bench/fleet_status_bench.py [--count 1000] [--runs 5] [--uri URI]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import libvirt

NESTVIRT = str(Path(sys.executable).with_name("nestvirt"))
PREFIX = "nvbench-"

_CPUS = (
    "<cpu mode='host-passthrough'/>",
    "<cpu mode='host-model'/>",
    "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>",
    "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model>"
    "<feature policy='require' name='svm'/></cpu>",
    "",
)
_BALLOONS = ("<memballoon model='virtio'/>", "<memballoon model='none'/>", "")
_FILTERS = ("clean-traffic", "no-mac-spoofing", None)


def domain_xml(i: int) -> str:
    kind = "kvm" if i % 3 == 0 else "qemu"
    cpu = _CPUS[i % len(_CPUS)]
    if kind == "kvm" and "svm" in cpu:
        cpu = _CPUS[0]
    balloon = _BALLOONS[i % len(_BALLOONS)]
    nwfilter = _FILTERS[(i // 2) % len(_FILTERS)]
    ref = f"<filterref filter='{nwfilter}'/>" if nwfilter else ""
    memory = 65536 * (1 + i % 4)
    return f"""<domain type='{kind}'>
  <name>{PREFIX}{i:04d}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='KiB'>{memory}</memory>
  <currentMemory unit='KiB'>{memory // (2 if i % 7 == 0 else 1)}</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  {cpu}
  <devices>
    <interface type='network'><source network='default'/>{ref}</interface>
    {balloon}
  </devices>
</domain>"""


def define(conn: libvirt.virConnect, count: int) -> None:
    for i in range(count):
        conn.defineXML(domain_xml(i))


def undefine(conn: libvirt.virConnect) -> int:
    gone = 0
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(PREFIX):
            dom.undefine()
            gone += 1
    return gone


def floor(uri: str) -> None:
    """The bare fetch: every domain's inactive XML and state, one after another."""
    conn = libvirt.openReadOnly(uri)
    for dom in conn.listAllDomains(0):
        try:
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            dom.state()
        except libvirt.libvirtError as exc:  # another program's test domain, gone meanwhile
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    conn.close()


def median_time(call, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_status(argv: list[str], cpu: list[float] | None = None) -> int:
    """Run one status process; its peak RSS in KiB (from wait4), its CPU seconds (user and
    system, all threads) appended to `cpu`. A run that fails (exit code other than 0 ready
    / 1 not ready) stops the bench: its time would mean nothing."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()  # a few lines at most; read before wait4 reaps the process
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {errors.decode()[-2000:]}")
    if cpu is not None:
        cpu.append(usage.ru_utime + usage.ru_stime)
    return int(usage.ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args()
    import nestvirt

    compileall.compile_dir(Path(nestvirt.__file__).parent, quiet=1)
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(args.uri)
    undefine(conn)  # leftovers of an interrupted run
    start = time.perf_counter()
    try:
        define(conn, args.count)
        total = len(conn.listAllDomains(0))
        took = time.perf_counter() - start
        print(f"defined {args.count} domains in {took:.1f} s; {total} in all")
        json_argv = [NESTVIRT, "status", "-c", args.uri, "--json"]
        table_argv = [NESTVIRT, "status", "-c", args.uri]
        run_status(json_argv)  # warm: the guest-CPU cache on disk, the page cache
        rss: list[int] = []
        json_cpu: list[float] = []
        table_cpu: list[float] = []
        base = median_time(lambda: floor(args.uri), args.runs)
        as_json = median_time(lambda: rss.append(run_status(json_argv, json_cpu)), args.runs)
        table = median_time(lambda: rss.append(run_status(table_argv, table_cpu)), args.runs)
        base2 = median_time(lambda: floor(args.uri), args.runs)
        base = min(base, base2)
        # the CPU time of the status processes (median): on a busy machine the wall
        # clock follows it, and it does not move with what else runs meanwhile
        cpu_json, cpu_table = statistics.median(json_cpu), statistics.median(table_cpu)
        print(f"floor (bare libvirt-python loop) {base * 1000:8.0f} ms  1.00x")
        print(
            f"nestvirt status --json           {as_json * 1000:8.0f} ms  {as_json / base:.2f}x"
            f"  (cpu {cpu_json * 1000:.0f} ms)"
        )
        print(
            f"nestvirt status (table)          {table * 1000:8.0f} ms  {table / base:.2f}x"
            f"  (cpu {cpu_table * 1000:.0f} ms)"
        )
        print(f"peak RSS of status               {max(rss) / 1024:8.1f} MiB")
    finally:
        print(f"undefined {undefine(conn)} domains")
        conn.close()


if __name__ == "__main__":
    main()
