"""What the guest-CPU oracle costs `nestvirt status` over many domains (issue 10).

    .venv/bin/python bench/guestcpu_bench.py [--domains 200] [--rounds 3]

Defines DOMAINS transient-free test domains on qemu:///system (kvm and qemu types
over 14 CPU shapes), then, in the same rounds, times:

- the floor: a bare libvirt-python loop fetching every domain's XML and state;
- status (the library call) with the oracle's disk cache emptied first (cold:
  QEMU started once per emulator and accel);
- status with the disk cache from the cold run (warm: no QEMU);

Prints the median seconds and each ratio to the floor, and the QEMU processes
each status run started. Undefines its domains at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [
    "", "<cpu mode='host-passthrough'/>", "<cpu mode='host-model'/>", "<cpu mode='maximum'/>",
    "<cpu mode='custom'><model>EPYC</model></cpu>",
    "<cpu mode='custom'><model>Penryn</model><feature policy='require' name='svm'/></cpu>",
    "<cpu mode='custom'><model>qemu64</model><feature policy='disable' name='svm'/></cpu>",
]  # fmt: skip


def main() -> None:
    import os

    import libvirt
    from tests.integration.conftest import domain_xml

    from nestvirt import status
    from nestvirt.backends import libvirt as backend

    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    conn = libvirt.open("qemu:///system")
    names = []
    try:
        for index in range(args.domains):
            kind = ("kvm", "qemu")[index % 2]
            cpu = SHAPES[(index // 2) % len(SHAPES)]
            name = f"nvbench-{index}-{uuid.uuid4().hex[:6]}"
            conn.defineXML(domain_xml(name, type=kind, cpu=cpu, memory=64))
            names.append(name)
        times: dict[str, list[float]] = {"floor": [], "cold": [], "warm": []}
        starts: dict[str, list[int]] = {"cold": [], "warm": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            for name in names:
                dom = conn.lookupByName(name)
                dom.XMLDesc(0)
                dom.state()
            times["floor"].append(time.perf_counter() - started)
            with tempfile.TemporaryDirectory() as cache:
                os.environ["NESTVIRT_CACHE_DIR"] = cache
                for kind in ("cold", "warm"):
                    backend.oracle.cache_clear()
                    started = time.perf_counter()
                    status.status(names)
                    times[kind].append(time.perf_counter() - started)
                    starts[kind].append(backend.oracle().started)
                    backend.oracle().close()
        floor = statistics.median(times["floor"])
        for kind, values in times.items():
            median = statistics.median(values)
            extra = f", QEMU started {starts[kind]}" if kind in starts else ""
            print(f"{kind:6} {median:6.3f} s  ×{median / floor:5.1f} of the floor{extra}")
    finally:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).undefine()
        conn.close()


if __name__ == "__main__":
    main()
