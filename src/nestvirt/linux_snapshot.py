"""`nestvirt collect --linux -o FILE` and `nestvirt status --snapshot FILE` for a Linux/KVM host.

One JSON file with what a nested-virtualization bug report needs — the kernel's
"Running nested guests with KVM" checklist (Documentation/virt/kvm/x86/
running-nested-guests.rst, "Reporting bugs from nested setups"): kernel
versions, KVM module parameters, CPU flags, the QEMU command lines of running
guests, hypervisor evidence, the kernel log's KVM lines — plus nestvirt's own
host facts, so `status --snapshot FILE` re-runs the host and guest rules on
another machine. Schema `nestvirt.linux-snapshot/1`:

    {"schema": "nestvirt.linux-snapshot/1", "collected_at": ISO-8601 UTC, "nestvirt": version,
     "host": {"facts": {…LinuxHostFacts as `status --json` shows them…}},
     "kernel": {"release": str, "version": str, "proc_version": str, "cmdline": str},
     "kvm_parameters": {module: {parameter: value}},
     "cpu": {"vendor": str|null, "model": str|null, "flags": [str]},
     "qemu": {"version": str|null, "processes": [{"pid": int, "argv": [str]}]},
     "dmesg": [str] | {"unknown": reason}}

Nothing secret: no environment, no serial numbers or UUIDs from DMI, and in
command lines every `…pass…=`, `…secret…=`, `…key…=`, `…token…=`, `…cred…=`
value and a `secret` object's `data=`/`file=`/`iv=` are replaced by `<redacted>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import types
import typing
from dataclasses import fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from nestvirt.errors import NotFound, UsageError
from nestvirt.model import Unknown

SCHEMA = "nestvirt.linux-snapshot/1"
DMESG_PATTERN = re.compile(r"kvm|vmx|svm|nested|hypervisor|virtualiz", re.I)
DMESG_LINES = 200
_SECRET_KEY = re.compile(r"(?i)(\b[\w.-]*(?:pass|secret|key|token|cred)[\w.-]*)=([^,\s]*)")
_SECRET_OBJECT = re.compile(r"(?i)\b(data|file|iv)=([^,]*)")
QEMU_NAMES = ("qemu-system-", "qemu-kvm")


# -- collect --------------------------------------------------------------------------------------


def redact(arg: str) -> str:
    """One command-line word with every secret-looking value replaced."""
    if arg.startswith(("secret,", "secret_keyring,")):
        arg = _SECRET_OBJECT.sub(r"\1=<redacted>", arg)
    return _SECRET_KEY.sub(r"\1=<redacted>", arg)


def qemu_processes(proc: Path = Path("/proc")) -> list[dict[str, Any]]:
    """Running QEMU processes: pid and redacted argv (never their environment)."""
    found = []
    for entry in sorted(proc.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv if w]
        if words and os.path.basename(words[0]).startswith(QEMU_NAMES):
            found.append({"pid": int(entry.name), "argv": [redact(w) for w in words]})
    return found


def kvm_parameters(sys_module: Path = Path("/sys/module")) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    with contextlib.suppress(OSError):
        for module in sorted(sys_module.glob("kvm*")):
            params: dict[str, str] = {}
            with contextlib.suppress(OSError):
                for p in sorted((module / "parameters").iterdir()):
                    with contextlib.suppress(OSError):
                        params[p.name] = p.read_text().strip()
            result[module.name] = params
    return result


def _run(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def dmesg_lines() -> list[str] | dict[str, str]:
    out = _run(["dmesg"])
    if out is None:
        return {"unknown": "dmesg could not be read (kernel.dmesg_restrict: run as root)"}
    return [line for line in out.splitlines() if DMESG_PATTERN.search(line)][-DMESG_LINES:]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def cpu_section() -> dict[str, Any]:
    entry: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        entry.setdefault(key.strip(), value.strip())
    return {
        "vendor": entry.get("vendor_id"),
        "model": entry.get("model name"),
        "flags": entry.get("flags", "").split(),
    }


def collect() -> dict[str, Any]:
    """The snapshot document of this machine (runs the KVM probe, as `status` does)."""
    from nestvirt import __version__
    from nestvirt.facts import linux_host
    from nestvirt.model import to_jsonable

    facts = linux_host.gather()
    uname = os.uname()
    version = _run(["qemu-system-x86_64", "--version"])
    return {
        "schema": SCHEMA,
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nestvirt": __version__,
        "host": {"facts": to_jsonable(facts)},
        "kernel": {
            "release": uname.release,
            "version": uname.version,
            "proc_version": _read("/proc/version"),
            "cmdline": " ".join(redact(w) for w in _read("/proc/cmdline").split()),
        },
        "kvm_parameters": kvm_parameters(),
        "cpu": cpu_section(),
        "qemu": {
            "version": version.splitlines()[0] if version else None,
            "processes": qemu_processes(),
        },
        "dmesg": dmesg_lines(),
    }


def write(output: str | Path, doc: dict[str, Any]) -> Path:
    """Write via a temporary file in the same directory + rename: never a half file
    (nestvirt.statedir.atomic_write, the one atomic write)."""
    from nestvirt.statedir import atomic_write

    target = Path(output)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise NotFound(f"directory {str(directory)!r} does not exist")
    atomic_write(target, json.dumps(doc, indent=2) + "\n", what="the snapshot")
    return target


# -- read back ------------------------------------------------------------------------------------


def sniff(path: str) -> bool:
    """Whether `path` is a Linux snapshot (anything else goes to the Hyper-V reader)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"{SCHEMA}"' in head


def decode(tp: Any, value: Any) -> Any:
    """JSON (as model.to_jsonable wrote it) back into the annotated type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, dict) and set(value) == {"unknown"} and Unknown in args:
            return Unknown(str(value["unknown"]))
        if value is None and type(None) in args:
            return None
        for option in args:
            if option in (type(None), Unknown):
                continue
            with contextlib.suppress(TypeError, ValueError, KeyError):
                return decode(option, value)
        raise ValueError(f"{value!r} is none of {tp}")
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        return tuple(decode(args[0], v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        return {str(k): decode(args[1], v) for k, v in value.items()}
    if is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {value!r}")
        hints = typing.get_type_hints(tp)
        known = {
            f.name: decode(hints[f.name], value[f.name]) for f in fields(tp) if f.name in value
        }
        return tp(**known)
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected {tp}, got {value!r}")


def read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"no snapshot file {path!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON snapshot ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UsageError(f"{path}: not a {SCHEMA} document")
    return doc


def status_report(path: str, vm_names: list[str], *, host_only: bool) -> Any:
    """The StatusReport of a snapshot: host and guest rules re-run on its facts."""
    from nestvirt import rules
    from nestvirt.facts import summary
    from nestvirt.facts.linux_host import LinuxHostFacts
    from nestvirt.model import HostReport, StatusReport
    from nestvirt.rules import Platform, Target

    if vm_names:
        raise UsageError("a Linux snapshot holds no VM definitions: name no VMs")
    doc = read(path)
    raw = doc.get("host", {}).get("facts")
    try:
        facts = decode(LinuxHostFacts, raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: malformed host facts ({exc})") from None
    findings = rules.run(Target.HOST, Platform.LINUX, facts)
    if facts.guest is not None:
        findings += rules.run(Target.GUEST, Platform.LINUX, facts.guest)
    host = HostReport(facts.hostname, "linux", raw, tuple(findings), summary.linux_host(raw))
    running = len(doc.get("qemu", {}).get("processes", []))
    notes = () if host_only else (
        f"snapshot {path} taken {doc.get('collected_at', '?')}: host rules re-run on its facts; "
        f"it holds {running} QEMU command line(s), not VM definitions (no VM verdicts)",
    )  # fmt: skip
    return StatusReport(host, (), notes)
