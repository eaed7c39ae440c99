"""Runs inside the lab VM (depth 1): load KVM with nested=1, look around, run the probe.

Standard library plus nestvirt.{model,errors,rules,probe,lab.console} only: the
lab image carries the host's CPython and nestvirt's own source, nothing else.
Prints one framed report (see console.py) on stdout, which is the serial console.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nestvirt.lab.console import frame
from nestvirt.vocabulary import AMD, INTEL, KVM_MODULE_OF_VENDOR

SCHEMA = "nestvirt.lab-guest/1"
MODULES_FILE = Path("/lab/modules.json")  # written by the image build
PROBE_TIMEOUT_S = 20.0  # per probe guest; a nested one needs ~0.1 s


def cpu_facts(cpuinfo: str) -> dict[str, Any]:
    """Vendor, model and the virtualization-relevant flags of the first CPU in /proc/cpuinfo."""
    facts: dict[str, Any] = {"vendor": None, "model": None, "flags": []}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and facts["vendor"] is None:
            facts["vendor"] = value
        elif key == "model name" and facts["model"] is None:
            facts["model"] = value
        elif key == "flags":
            flags = set(value.split())
            facts["flags"] = sorted(flags & {"vmx", "svm", "hypervisor", "npt", "ept"})
            break
    return facts


def vendor_module(vendor: str | None, flags: list[str]) -> str:
    if "vmx" in flags or vendor == INTEL:
        return KVM_MODULE_OF_VENDOR[INTEL]
    return KVM_MODULE_OF_VENDOR[AMD]


def load_modules(wanted: str) -> list[dict[str, Any]]:
    """insmod the vendor module and its dependencies (in order), the vendor one with nested=1."""
    plan = json.loads(MODULES_FILE.read_text())
    results: list[dict[str, Any]] = []
    for item in plan[wanted]:
        args = ["insmod", item["file"]]
        if item["name"] == wanted:
            args.append("nested=1")
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        error = (done.stderr or done.stdout).strip() or None
        results.append({"name": item["name"], "ok": done.returncode == 0, "error": error})
    return results


def hypervisor() -> dict[str, Any] | None:
    """What CPUID says we run under, through the probe's own detection."""
    try:
        from nestvirt.probe.cpuid import detect_hypervisor
    except ImportError as exc:
        return {"present": None, "signature": None, "name": None, "error": str(exc)}
    info = detect_hypervisor()
    return {"present": info.present, "signature": info.signature, "name": info.name}


def run_probe() -> tuple[dict[str, Any] | None, str | None]:
    """`python3 -m nestvirt.probe --json` in this guest — its own main(), in this interpreter
    (a second CPython start costs ~1 s under TCG). Its guest is the nested (depth 2) VM."""
    out, err = io.StringIO(), io.StringIO()
    try:
        from nestvirt.probe.__main__ import main as probe_main

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = probe_main(["--json", "--timeout", str(PROBE_TIMEOUT_S)])
    except Exception as exc:
        return None, f"the probe could not run: {type(exc).__name__}: {exc}"
    try:
        return json.loads(out.getvalue()), None
    except json.JSONDecodeError:
        tail = (err.getvalue() or out.getvalue()).strip().splitlines()[-3:]
        return None, f"probe exit {code}: " + " | ".join(tail)


def read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def report() -> dict[str, Any]:
    cpu = cpu_facts(read("/proc/cpuinfo") or "")
    module = vendor_module(cpu["vendor"], cpu["flags"])
    started = time.monotonic()
    modules = load_modules(module)
    probe, probe_error = run_probe()
    return {
        "schema": SCHEMA,
        "kernel": os.uname().release,
        "cpu": cpu,
        "virt_extensions": [f for f in cpu["flags"] if f in ("vmx", "svm")],
        "hypervisor": hypervisor(),
        "vendor_module": module,
        "modules": modules,
        "nested_param": read(f"/sys/module/{module}/parameters/nested"),
        "dev_kvm": os.path.exists("/dev/kvm"),
        "probe": probe,
        "probe_error": probe_error,
        "probe_seconds": round(time.monotonic() - started, 3),
        "uptime_s": float((read("/proc/uptime") or "0").split()[0]),
    }


def main() -> int:
    try:
        payload = report()
    except Exception as exc:  # the host must hear about any failure, not wait for a timeout
        payload = {"schema": SCHEMA, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(frame(payload))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
