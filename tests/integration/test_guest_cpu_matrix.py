"""The guest-CPU oracle against the truth, on the real libvirtd and QEMU (issue 10).

For each of 70 definitions (kvm/qemu × no <cpu> / named models / host modes ×
feature policies on vmx and svm), nestvirt's answer (vmx/svm exposed, CPUID
vendor) must equal what the guest's vCPU really has:

- TCG domains are started paused through libvirt and their vCPU is asked over
  QMP (`qom-get` of svm, vmx, vendor on the path query-cpus-fast gives);
- KVM domains cannot start on this machine (QEMU asserts in kvm_buf_set_msrs),
  so libvirt's exact command line for the whole definition (domxml-to-native)
  is run by hand as a paused `-machine pc -S` QEMU and its realized vCPU asked
  the same way; if that QEMU dies first, the expansion of the exact -cpu string,
  filtered by what the accelerator supports, is the truth (the issue's method).
- A definition libvirt refuses to start (or to build a command line for) gives
  the guest nothing.

The oracle builds its own, minimal query and asks QEMU with -machine none, so
the two sides share no code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nestvirt import status as status_mod
from nestvirt.backends import libvirt as backend
from nestvirt.guestcpu import QEMU, VENDOR_NAMES
from tests.integration.conftest import domain_xml

MODELS = ("qemu64", "kvm64", "EPYC", "Skylake-Client", "Penryn")
POLICIES = (
    "",
    "<feature policy='require' name='svm'/>",
    "<feature policy='require' name='vmx'/>",
    "<feature policy='disable' name='svm'/>",
    "<feature policy='forbid' name='vmx'/><feature policy='require' name='svm'/>",
)
HOST_MODES = (
    "<cpu mode='host-model'/>",
    "<cpu mode='host-passthrough'/>",
    "<cpu mode='maximum'/>",
    "<cpu mode='host-passthrough'><feature policy='disable' name='svm'/></cpu>",
    "<cpu mode='maximum'><feature policy='require' name='svm'/></cpu>",
)


def cpu_variants() -> list[str]:
    named = [
        f"<cpu mode='custom'><model>{m}</model>{p}</cpu>"
        for m, p in itertools.product(MODELS, POLICIES)
    ]
    # the same models with check='none', as nestvirt writes them (libvirt checks nothing)
    unchecked = [
        f"<cpu mode='custom' match='exact' check='none'><model>{m}</model>{POLICIES[1]}</cpu>"
        for m in MODELS
    ]
    return ["", *named, *unchecked, *HOST_MODES]


CASES = [(kind, cpu) for kind in ("qemu", "kvm") for cpu in cpu_variants()]


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 40


# ------------------------------------------------------------------ the truth


def _qmp(argv: list[str], commands: list[dict[str, Any]]) -> list[Any]:
    """Run QEMU with -qmp stdio, send `commands`, return their replies (or raise)."""
    lines = [json.dumps({"execute": "qmp_capabilities"})]
    lines += [json.dumps(c) for c in commands] + [json.dumps({"execute": "quit"})]
    done = subprocess.run(
        [*argv, "-qmp", "stdio"], input="\n".join(lines) + "\n", capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    replies = []
    for line in done.stdout.splitlines():
        message = json.loads(line)
        if "return" in message or "error" in message:
            replies.append(message)
    if len(replies) < len(commands) + 1:
        raise RuntimeError(f"QEMU ended early: {done.stderr.strip()[-300:]}")
    return replies[1 : len(commands) + 1]


def _vcpu_props(ask: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    path = ask({"execute": "query-cpus-fast"})[0]["qom-path"]
    return {
        p: ask({"execute": "qom-get", "arguments": {"path": path, "property": p}})
        for p in ("svm", "vmx", "vendor")
    }


def truth_tcg(conn: Any, dom: Any) -> dict[str, Any] | None:
    """Start the TCG domain paused through libvirt and ask its vCPU; None: it cannot start."""
    import libvirt
    import libvirt_qemu

    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError:
        return None
    try:

        def ask(command: dict[str, Any]) -> Any:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(command), 0))
            return reply["return"]

        return _vcpu_props(ask)
    finally:
        dom.destroy()


def truth_kvm(conn: Any, dom: Any) -> dict[str, Any] | None:
    """libvirt's own command line for the definition, run paused by hand; None: refused."""
    import libvirt

    try:
        native = conn.domainXMLToNative("qemu-argv", dom.XMLDesc(0), 0)
    except libvirt.libvirtError:
        return None
    words = shlex.split(native)
    while "=" in words[0]:
        words.pop(0)
    cpu = words[words.index("-cpu") + 1] if "-cpu" in words else "qemu64"
    argv = [words[0], "-machine", "pc", "-S", "-accel", "kvm", "-cpu", cpu,
            "-m", "64", "-nodefaults", "-display", "none"]  # fmt: skip
    try:
        replies = _qmp(argv, [{"execute": "query-cpus-fast"}])
        path = replies[0]["return"][0]["qom-path"]
        got = _qmp(argv, [
            {"execute": "qom-get", "arguments": {"path": path, "property": p}}
            for p in ("svm", "vmx", "vendor")
        ])  # fmt: skip
        return {p: r["return"] for p, r in zip(("svm", "vmx", "vendor"), got, strict=True)}
    except RuntimeError:
        return _expansion_truth(words[0], cpu)


def _expansion_truth(emulator: str, cpu: str) -> dict[str, Any]:
    from nestvirt.qemu_cpu import parse_cpu_arg

    name, props = parse_cpu_arg(cpu)
    model: dict[str, Any] = {"name": name, **({"props": props} if props else {})}
    argv = [emulator, "-machine", "none", "-accel", "kvm", "-display", "none", "-nodefaults"]
    mine, most = _qmp(argv, [
        {"execute": "query-cpu-model-expansion", "arguments": {"type": "full", "model": model}},
        {"execute": "query-cpu-model-expansion",
         "arguments": {"type": "full", "model": {"name": "max"}}},
    ])  # fmt: skip
    a, b = mine["return"]["model"]["props"], most["return"]["model"]["props"]
    return {"svm": a["svm"] and b["svm"], "vmx": a["vmx"] and b["vmx"], "vendor": a["vendor"]}


# ------------------------------------------------------------------ the test


@pytest.fixture(scope="module")
def matrix(qemu_conn: Any) -> Iterator[list[tuple[str, str, Any, dict[str, Any] | None]]]:
    import uuid

    import libvirt

    made = []
    rows = []
    try:
        for index, (kind, cpu) in enumerate(CASES):
            name = f"nvtest-matrix-{index}-{uuid.uuid4().hex[:6]}"
            dom = qemu_conn.defineXML(domain_xml(name, type=kind, cpu=cpu, memory=64))
            made.append(dom)
            truth = truth_tcg(qemu_conn, dom) if kind == "qemu" else truth_kvm(qemu_conn, dom)
            verdict = backend.vm_facts(qemu_conn, dom).guest_cpu
            rows.append((kind, cpu, verdict, truth))
        yield rows
    finally:
        for dom in made:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass


@pytest.mark.libvirt
@pytest.mark.slow
def test_oracle_equals_the_guests_vcpu(matrix: list[tuple[str, str, Any, Any]]) -> None:
    disagreements = []
    for kind, cpu, verdict, truth in matrix:
        exposed = set(verdict.extensions)
        if truth is None:
            real: set[str] = set()
            vendor_ok = True
        else:
            real = {e for e in ("svm", "vmx") if truth[e]}
            vendor_ok = verdict.vendor == VENDOR_NAMES.get(truth["vendor"], truth["vendor"])
        if exposed != real or not vendor_ok or (truth is None) != bool(verdict.refused):
            disagreements.append((kind, cpu, verdict, truth))
    assert disagreements == []
    # every case that could be asked was answered by QEMU, not the table
    assert all(v.source == QEMU for _, _, v, t in matrix if not v.refused)
    # the matrix is not trivial: TCG cases both expose svm and hide it, vendors differ
    tcg = [(v, t) for k, _, v, t in matrix if k == "qemu" and t is not None]
    assert {bool(t["svm"]) for _, t in tcg} == {True, False}
    assert {t["vendor"] for _, t in tcg} >= {"AuthenticAMD", "GenuineIntel"}
    assert not any(t["vmx"] for _, t in tcg)  # TCG never emulates vmx


# ------------------------------------------------------------------ caching


@pytest.mark.libvirt
@pytest.mark.slow
def test_status_over_200_domains_starts_qemu_once_per_emulator_and_accel(
    qemu_conn: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    import libvirt

    monkeypatch.setenv("NESTVIRT_CACHE_DIR", str(tmp_path))
    variants = [(k, c) for k, c in CASES]
    made, names = [], []
    try:
        for index in range(200):
            kind, cpu = variants[index % len(variants)]
            name = f"nvtest-many-{index}-{uuid.uuid4().hex[:6]}"
            made.append(qemu_conn.defineXML(domain_xml(name, type=kind, cpu=cpu, memory=64)))
            names.append(name)
        timings = []
        for expected_starts in (None, 0):
            backend.oracle.cache_clear()
            started = time.perf_counter()
            report = status_mod.status(names)
            timings.append(time.perf_counter() - started)
            oracle = backend.oracle()
            assert len(report.vms) == 200
            if expected_starts is None:
                assert 1 <= oracle.started <= 2  # one emulator × (kvm, tcg)
            else:
                assert oracle.started == expected_starts  # warm: the disk cache answers
            oracle.close()
        print(f"status over 200 domains: cold {timings[0]:.2f} s, warm {timings[1]:.2f} s")
        assert (tmp_path / "guestcpu.json").exists()
    finally:
        backend.oracle.cache_clear()
        for dom in made:
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
