"""The libvirt qemu hook: refuse `migrate begin`/`restore begin` of a domain judged unsafe.

libvirt runs `/etc/libvirt/hooks/qemu.d/nestvirt DOMAIN OPERATION SUB-OPERATION EXTRA`
with the domain XML on stdin; the installed script execs this module's `main`
only for `migrate begin` and `restore begin` (everything else exits 0 in the
shell, before Python starts), and `main` decides from argv again before
importing anything.

- Unsafe (an NV-O01/NV-O02 error for this domain on this host): exit 1, one
  line per reason on stderr — libvirt aborts the operation and shows them.
- Anything else, including malformed XML and any internal error: exit 0
  ("fail open": a bug in the guard must never stop the VMs of a host), logged
  to /var/log/nestvirt/guard.log (root; else the state directory; or
  $NESTVIRT_GUARD_LOG).
- Nothing is ever written to stdout: for these two operations libvirt reads
  the hook's stdout as a replacement domain XML (empty = unchanged).
- No libvirt connection: libvirtd waits for its hooks, a call back deadlocks.

The host capability is read from /dev/kvm here; `NESTVIRT_NESTED_STATE_CAP`
overrides it (tests; libvirtd passes hooks a clean environment, so it cannot
be set for a hook libvirtd runs).

Standard library only. `python -m nestvirt.guard.hook DOMAIN OP SUB EXTRA` works too.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ms on the fast path
if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO

JUDGED = frozenset({("migrate", "begin"), ("restore", "begin")})
ENV_LOG = "NESTVIRT_GUARD_LOG"
ROOT_LOG = "/var/log/nestvirt/guard.log"


def main(
    argv: list[str] | None = None, stdin: BinaryIO | None = None, stderr: TextIO | None = None
) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or (args[1], args[2]) not in JUDGED:
        return 0
    err = stderr or sys.stderr
    saved_stdout = sys.stdout
    sys.stdout = err  # libvirt takes our stdout for a new domain XML: never write there
    try:
        return _judge(args[0], args[1], stdin or sys.stdin.buffer, err)
    except Exception as exc:  # fail open, always
        _log(
            f"ALLOW {args[0]} {args[1]}: internal error, failing open: {type(exc).__name__}: {exc}"
        )
        return 0
    finally:
        sys.stdout = saved_stdout


def _judge(domain: str, op: str, stdin: BinaryIO, err: TextIO) -> int:
    from nestvirt.guard.domain import (
        DomainXmlError,
        asserts_no_nested_guests,
        facts_from_xml,
        parse_domain,
    )
    from nestvirt.model import Severity
    from nestvirt.preflight import (
        cpu_vendor_here,
        libvirt_operation_facts,
        nested_state_capability,
    )
    from nestvirt.rules import Platform
    from nestvirt.rules.operations import Operation, judge_facts

    xml = stdin.read()
    try:
        root = parse_domain(xml)
    except DomainXmlError as exc:
        _log(f"ALLOW {domain} {op}: {exc} (failing open)")
        return 0
    operation = Operation.MIGRATE if op == "migrate" else Operation.RESTORE
    vendor = cpu_vendor_here()
    facts = facts_from_xml(root, host_vendor=vendor)
    name = facts.name or domain
    host = "this host (the destination)" if op == "migrate" else "this host"
    of = libvirt_operation_facts(
        facts,
        operation,
        nested_state_cap=nested_state_capability(),
        assume_no_nested_guests=asserts_no_nested_guests(root),
        host=host,
    )
    findings = judge_facts(of, Platform.LIBVIRT)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    summary = "; ".join(f"{f.code} {f.severity}: {f.message}" for f in findings)
    if not errors:
        _log(f"ALLOW {name} {op}: {summary}")
        return 0
    for f in errors:
        fix = f" Instead: {f.fix}." if f.fix else ""
        err.write(f"nestvirt guard refuses {op} of {name} ({f.code} {f.name}): {f.message}.{fix}\n")
    err.write(
        f"nestvirt guard: `nestvirt explain {errors[0].code}` says why; if no nested guests run "
        f'in {name}, set <guard nested-guests="none"/> in its nestvirt metadata '
        "or `nestvirt guard uninstall`\n"
    )
    err.flush()
    _log(f"REFUSE {name} {op}: {summary}")
    return 1


def log_path() -> str:
    override = os.environ.get(ENV_LOG)
    if override:
        return override
    if os.geteuid() == 0:
        return ROOT_LOG
    from nestvirt.statedir import state_dir

    return str(state_dir() / "guard.log")


def _log(line: str) -> None:
    """Append one line; logging must never make the hook fail."""
    import time

    try:
        path = log_path()
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = f"{stamp} pid={os.getpid()} {' '.join(line.split())}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception:  # nowhere left to report to
        pass


def run(argv: Any = None) -> None:
    sys.exit(main(argv))


if __name__ == "__main__":
    run()
