"""`nestvirt lab`: the seed's four steps on this machine, end to end (see the package doc).

depth 0 (here: its own probe) → image (cached) → accel → define + expose (rules,
enable plan) → boot (libvirt or QEMU) → the lab VM loads KVM with nested=1 and
runs the probe, whose guest is depth 2 → report. SIGINT/SIGTERM at any point
stop the VM and remove its files; libvirt's autodestroy and QEMU's parent-death
signal cover even a SIGKILL of this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestvirt import rules
from nestvirt.endpoint import DEFAULT_URI
from nestvirt.errors import UsageError
from nestvirt.lab import boot, domain, expose, image, paths, report
from nestvirt.lab.report import LabReport
from nestvirt.model import Finding, Severity
from nestvirt.probe.result import ProbeResult
from nestvirt.rules.container import lab_failure, libvirt_cannot_start
from nestvirt.rules.host_linux import linux_boot_hits
from nestvirt.statedir import atomic_write
from nestvirt.vocabulary import vendor_name

ACCELS = ("auto", "kvm", "tcg")
BOOT_TEST_S = 8.0  # a Linux kernel reaches init in ~1 s under working KVM
REPORT_TIMEOUT_S = 90.0  # TCG boot + nested probe: ~8 s here
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LabOptions:
    expose: bool = True
    accel: str = "auto"
    keep: bool = False
    kernel: str | None = None
    direct: bool = False
    uri: str = DEFAULT_URI
    timeout: float = REPORT_TIMEOUT_S


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (like SIGINT) so every `finally` cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def host_vendor() -> str | None:
    """The CPU vendor as libvirt names it, from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                value = line.split(":", 1)[1].strip()
                return vendor_name(value)
    return None


def host_probe() -> tuple[ProbeResult | None, str | None]:
    try:
        from nestvirt.probe import run_probe
    except ImportError as exc:
        return None, f"the probe is not available: {exc}"
    return run_probe(timeout=2.0, modes=("real", "long")), None


# -- accel --------------------------------------------------------------------------------------


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "unknown"


def choose_accel(
    wanted: str, img: image.Image, probe: ProbeResult | None, progress: Progress
) -> tuple[str, list[Finding], list[str]]:
    """kvm or tcg; with auto, KVM only when the lab kernel actually boots under it."""
    if wanted in ("kvm", "tcg"):
        return wanted, [], [f"accel {wanted} (as asked)"]
    if probe is None or not probe.ok:
        why = "the probe ran no guest on /dev/kvm here"
        if probe is not None and probe.failure is not None:
            why += f" ({probe.failure.stage}: {probe.failure.detail})"
        return "tcg", [], [f"accel tcg: {why}"]
    cache = paths.state_dir() / "accel.json"
    key = f"{_boot_id()}:{img.kernel.ident}"  # this host boot, this lab kernel
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return _accel_verdict(known, probe, cached=True)
    progress(f"accel: boot test of the lab kernel under KVM (up to {BOOT_TEST_S:.0f} s)")
    spec = domain.LabSpec(
        f"nestvirt-lab-boottest-{os.getpid()}", "kvm", host_vendor(), img.vmlinuz, img.initrd,
        None, boot_test=True,
    )  # fmt: skip
    outcome = boot.boot_direct(
        domain.base_xml(spec), BOOT_TEST_S, lambda _e: None, until_booted=True
    )
    verdict = {
        "key": key,
        "kvm_boots": outcome.booted,
        "seconds": round(outcome.boot_seconds or outcome.seconds, 2),
        "error": outcome.error,
    }
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(verdict) + "\n", mode=0o644, what="the lab's KVM verdict")
    return _accel_verdict(verdict, probe, cached=False)


def _accel_verdict(
    verdict: dict[str, Any], probe: ProbeResult, *, cached: bool
) -> tuple[str, list[Finding], list[str]]:
    when = " (boot test cached for this host boot)" if cached else ""
    if verdict.get("kvm_boots"):
        return "kvm", [], [f"accel kvm: the lab kernel booted under KVM in {verdict['seconds']} s"
                           + when]  # fmt: skip
    served = f"/dev/kvm served by {probe.vendor_module}; " if probe.vendor_module else ""
    why = verdict.get("error") or f"no init within {BOOT_TEST_S:.0f} s"
    findings = rules.findings_from(
        "NV-H10", rules.Platform.LINUX, linux_boot_hits(False, f"{served}{why}; the lab uses TCG")
    )
    return "tcg", findings, [f"accel tcg: Linux did not boot under KVM{when}"]


# -- the run ------------------------------------------------------------------------------------


def run_lab(options: LabOptions, progress: Progress | None = None) -> LabReport:
    if options.accel not in ACCELS:
        raise UsageError(f"--accel {options.accel}: choose one of {', '.join(ACCELS)}")
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    with terminate_as_interrupt():
        say("depth 0: probing /dev/kvm on this host")
        probe, probe_error = host_probe()
        host = report.host_level(probe, probe_error)
        say(f"depth 0: {_level_line(host)}")
        say("image: looking for the lab image (kernel, busybox, CPython, nestvirt)")
        img = image.ensure_image(options.kernel, say)
        say(
            f"image: {'built' if img.built else 'cached'} {img.key} in {img.seconds:.1f} s "
            f"({img.kernel.origin}; {img.size_bytes / 1e6:.0f} MB)"
        )
        accel, findings, accel_notes = choose_accel(options.accel, img, probe, say)
        say(accel_notes[-1])
        notes: list[str] = []
        outcome, exposure = _boot(options, img, accel, say)
        findings += exposure.after
        if outcome.report is None:
            failed = _no_report(outcome, accel, via_libvirt=not options.direct)
            if not options.direct and libvirt_cannot_start(failed.code):
                say(f"boot: libvirt cannot start VMs here ({failed.code}); trying QEMU directly")
                direct = dataclasses.replace(options, direct=True)
                outcome, _ = _boot(direct, img, accel, say)
                if outcome.report is not None:
                    notes.append(
                        f"libvirt could not start the lab VM here ({failed.code}): "
                        "fell back to QEMU directly (--direct), which ran it"
                    )
                    failed = dataclasses.replace(failed, severity=Severity.WARNING)
                findings.append(failed)
                if outcome.report is None:
                    findings.append(_no_report(outcome, accel, via_libvirt=False))
            else:
                findings.append(failed)
        guest = outcome.report
        if outcome.notes:
            notes += outcome.notes
        result = report.build(
            accel=accel, seconds=time.monotonic() - t0, host=host, guest=guest,
            findings=findings, notes=notes, accel_reason=accel_notes[-1],
        )  # fmt: skip
        if len(result.levels) > 1:
            say(f"guest probe: {_level_line(result.levels[1])}")
        return result


def _level_line(level: report.Level) -> str:
    us = f", {level.us_per_exit:.1f} µs/exit" if level.us_per_exit is not None else ""
    return f"kvm_ok={level.kvm_ok}{us} ({level.detail})"


def _no_report(outcome: boot.BootOutcome, accel: str, *, via_libvirt: bool) -> Finding:
    """The finding of the layer that failed (rules/container.py); NV-H07 when KVM's."""
    started = outcome.start_seconds is not None
    layer = lab_failure(
        outcome.error or "", via_libvirt=via_libvirt, started=started, booted=outcome.booted,
        accel=accel,
    )  # fmt: skip
    if layer is not None:
        code, layer_hit = layer
        (found,) = rules.findings_from(code, rules.Platform.LINUX, [layer_hit])
        return found
    tail = outcome.console_tail.strip().splitlines()
    last = f"; console: {tail[-1][:160]}" if tail else ""
    stage = "booted but" if outcome.booted else "did not boot and"
    hit = rules.Hit(
        f"lab VM (depth 1, {accel}) {stage} gave no report: {outcome.error}{last}",
        "nestvirt lab --keep keeps the console log; --accel tcg if KVM hangs",
    )
    (finding,) = rules.findings_from("NV-H07", rules.Platform.LINUX, [hit])
    return finding


def _boot(
    options: LabOptions, img: image.Image, accel: str, say: Progress
) -> tuple[boot.BootOutcome, expose.Exposure]:
    name = f"nestvirt-lab-{os.getpid()}-{secrets.token_hex(3)}"
    via = "QEMU directly" if options.direct else f"libvirt ({options.uri})"

    def event(what: str) -> None:
        if what == "started":
            say(f"boot: {name} started through {via}, accel {accel}")
        elif what == "booted":
            say("boot: kernel up; guest probe: loading KVM (nested=1), probing inside")

    if options.direct:
        spec = domain.LabSpec(name, accel, host_vendor(), img.vmlinuz, img.initrd, None)
        exposure = _expose(spec, options, "qemu:///direct", say)
        if options.keep:
            kept = paths.state_dir() / "runs" / name
            kept.mkdir(parents=True, exist_ok=True)
            (kept / "domain.xml").write_text(exposure.xml)
        return boot.boot_direct(exposure.xml, options.timeout, event), exposure
    return _boot_libvirt(name, options, img, accel, say, event)


def _expose(spec: domain.LabSpec, options: LabOptions, uri: str, say: Progress) -> expose.Exposure:
    exposure = expose.expose(
        domain.base_xml(spec), lambda xml: domain.facts_of(xml, spec, uri), enabled=options.expose
    )
    codes = ", ".join(f.code for f in exposure.before) or "none"
    if exposure.plan is None:
        say(f"expose: skipped (--no-expose, the negative control); rules: {codes}")
    else:
        changes = "; ".join(c.summary for c in exposure.plan.changes) or "nothing to change"
        left = ", ".join(f.code for f in exposure.after) or "none"
        say(f"expose: rules {codes} → enable plan: {changes} → rules: {left}")
    return exposure


def _boot_libvirt(
    name: str, options: LabOptions, img: image.Image, accel: str, say: Progress,
    event: boot.Event,
) -> tuple[boot.BootOutcome, expose.Exposure]:  # fmt: skip
    from nestvirt.backends import libvirt as backend

    run_dir = paths.LIBVIRT_IMAGES / name
    conn = backend.open_connection(options.uri)
    try:
        run_dir.mkdir(mode=0o755, parents=True)
        try:
            shutil.copyfile(img.vmlinuz, run_dir / "vmlinuz")
            shutil.copyfile(img.initrd, run_dir / "initrd.gz")
            spec = domain.LabSpec(
                name, accel, host_vendor(), run_dir / "vmlinuz", run_dir / "initrd.gz",
                run_dir / "console.log",
            )  # fmt: skip
            exposure = _expose(spec, options, options.uri, say)
            verified: list[str] = []

            def verify(dom: Any) -> None:
                # The running definition, read back by the backend, judged by the rules again.
                try:
                    after = expose.judge(backend.vm_facts(conn, dom))
                except Exception as exc:  # the VM may already be gone: no verdict
                    verified.append(f"could not re-read the lab VM: {exc}")
                    return
                if options.expose and any(f.code == "NV-V01" for f in after):
                    verified.append("libvirt dropped the exposed extension (NV-V01 after start)")

            outcome = boot.boot_libvirt(
                conn, exposure.xml, spec.console_log or run_dir / "console.log",
                options.timeout, event, keep=options.keep, on_started=verify,
            )  # fmt: skip
            outcome.notes += verified
            if options.keep:
                say(f"kept: domain {name} (defined, stopped) and its files in {run_dir}")
            return outcome, exposure
        finally:
            if not options.keep:
                with boot.shielded():
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
