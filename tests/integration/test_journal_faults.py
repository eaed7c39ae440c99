"""The journal and the lock tell the truth after crashes, cut connections, full and
read-only state directories and racing URI spellings (issue 11).

Real processes (`python -m nestvirt`) against the real libvirtd (qemu:///system),
no mocks. Domains are small TCG definitions named nv11-<random> that never start;
every test removes its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from nestvirt import enable
from nestvirt.backends.libvirt_session import daemon_identity
from nestvirt.journal import DONE, FAILED, PENDING, Journal
from nestvirt.platforms.libvirt import LibvirtSubject

from .conftest import domain_xml
from .libvirt_proxy import DEFINE_PROCS, Proxy

pytestmark = pytest.mark.libvirt

EPYC_SVM = ("<cpu mode='custom' match='exact' check='none'><model fallback='allow'>EPYC</model>"
            "<feature policy='require' name='svm'/></cpu>")  # fmt: skip
SOCKET_URI = "qemu+unix:///system?socket=/run/libvirt/libvirt-sock"


def inactive(dom: Any) -> str:
    return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(path))
    return path


@pytest.fixture()
def nv11(qemu_conn: Any) -> Iterator[Callable[[], Any]]:
    """Define nv11-<random> domains (TCG, 512 MiB, svm exposed: only --memory changes)."""
    made: list[Any] = []

    def make() -> Any:
        name = f"nv11-{uuid.uuid4().hex[:10]}"
        dom = qemu_conn.defineXML(domain_xml(name, type="qemu", memory=512, cpu=EPYC_SVM))
        made.append(dom)
        return dom

    yield make
    for dom in made:
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


def nestvirt(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "nestvirt", *args],
        capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ),
    )  # fmt: skip


def journal_of(conn: Any, dom: Any, root: Path) -> Journal:
    return Journal(daemon_identity(conn), dom.UUIDString(), root=root)


def assert_clean(proc: subprocess.CompletedProcess[str] | tuple[int, str], what: str) -> None:
    code, err = (proc.returncode, proc.stderr) if not isinstance(proc, tuple) else proc
    assert code != 3 and "Traceback" not in err, f"{what}: exit {code}\n{err}"


# ------------------------------------------------------------------ signals


def _fault_loop(conn: Any, dom: Any, root: Path, runs: int, rng: random.Random,
                log: list[str]) -> dict[str, int]:  # fmt: skip
    """`runs` nestvirt enable/undo processes, each hit by SIGKILL or SIGINT at a random
    moment; after each, `history` (a real command) settles the journal, then the
    domain must be exactly the old or the new definition and the journal say which."""
    name = dom.name()
    book = journal_of(conn, dom, root)
    counts = {"runs": 0, "changed": 0, "unchanged": 0, "undo-checks": 0, "reconciled": 0,
              "aimed": 0}  # fmt: skip
    sizes = iter(rng.choice([300, 320, 340, 360, 380]) for _ in range(10**6))
    # how long an undisturbed run takes here and now: the signals aim across all of it,
    # half of them at its second half, where the journal and the define are
    started = time.monotonic()
    first = nestvirt("enable", name, "--memory", "290MiB", "--yes")
    full = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    # ... and how long the interpreter takes to reach nestvirt's code: a SIGINT before
    # that lands in Python's own start-up (Python prints that KeyboardInterrupt)
    started = time.monotonic()
    assert nestvirt("--version").returncode == 0
    startup = max(0.06, 1.5 * (time.monotonic() - started))
    for run in range(runs):
        old = inactive(dom)
        seqs = {e.seq for e in book.entries()}
        action = "undo" if rng.random() < 0.35 else "enable"
        argv = [action, name, "--yes"]
        if action == "enable":
            argv += ["--memory", f"{next(sizes)}MiB"]
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        low = 0.0 if sig == signal.SIGKILL else startup
        aim = rng.random() < 0.35  # aimed at the write: wait for the write-ahead entry
        if rng.random() < 0.5:
            delay = rng.uniform(low, full * 1.1)
        else:
            delay = rng.uniform(max(low, full * 0.55), full * 1.02)
        proc = subprocess.Popen(
            [sys.executable, "-m", "nestvirt", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if aim:
            delay = rng.uniform(0.0, 0.03)
            seen = _wait_for_new_entry(book, seqs, proc, timeout=30)
            if seen:
                counts["aimed"] += 1
        time.sleep(delay)  # a randomized moment, not synchronisation
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        what = f"run {run}: {' '.join(argv)} + {sig.name} after {delay * 1000:.0f} ms"
        assert_clean((proc.returncode, err), what)
        # -2: SIGINT after main() returned, while the interpreter shuts down (no handler left)
        assert proc.returncode in (0, 2, 130, -2, -9), f"{what}: exit {proc.returncode}\n{err}"

        # the next command settles the journal: `history`, in-process (same code, no
        # interpreter start-up)
        said: list[str] = []
        subject = LibvirtSubject("qemu:///system", name)
        try:
            enable.history(subject, progress=said.append)
        finally:
            subject.close()
        if any("was left pending" in line for line in said):
            counts["reconciled"] += 1
            assert any(("was applied" in x) or ("was not applied" in x) for x in said), said
        entries = book.entries()
        assert not book.skipped, book.skipped
        assert not list(book.directory.glob(".*.tmp")), f"{what}: temp files left"
        live = inactive(dom)
        new = [e for e in entries if e.seq not in seqs]
        assert len(new) <= 1, f"{what}: {len(new)} new entries"
        if not new:
            assert live == old, f"{what}: changed without a journal entry"
            counts["unchanged"] += 1
        else:
            (entry,) = new
            assert entry.status in (DONE, FAILED), f"{what}: entry #{entry.seq} {entry.status}"
            assert entry.before == old, f"{what}: entry #{entry.seq} has the wrong 'before'"
            if entry.status == DONE:
                assert live == entry.after and live != old, f"{what}: done but not the new one"
                counts["changed"] += 1
            else:
                assert live == old, f"{what}: failed, yet the domain changed"
                counts["unchanged"] += 1
        counts["runs"] += 1
        log.append(what)
        if run % 12 == 11:  # undo, undisturbed: the exact previous definition, or a reason
            counts["undo-checks"] += 1
            target = book.last_undoable()
            undo = nestvirt("undo", name, "--yes")
            assert_clean(undo, f"{what}, then undo")
            if target is None:
                assert undo.returncode == 2 and "nothing to undo" in undo.stderr, undo.stderr
            else:
                assert undo.returncode == 0, undo.stderr
                assert inactive(dom) == target.before, f"{what}: undo did not restore #{target.seq}"
    return counts


def _wait_for_new_entry(book: Journal, seqs: set[int], proc: subprocess.Popen[str],
                        timeout: float) -> bool:  # fmt: skip
    """Poll until the run has written a new journal entry (or has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if book.directory.is_dir() and any(
            int(p.name[:6]) not in seqs for p in book.directory.glob("[0-9]*.json")
        ):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    raise AssertionError("no journal entry and no exit within the timeout")


def test_sigkill_and_sigint_at_random_points(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path
) -> None:
    """≥ 200 killed or interrupted enable/undo runs (two domains in parallel)."""
    seed = int(os.environ.get("NV11_SEED", time.time_ns() % 10**6))
    runs = int(os.environ.get("NV11_RUNS", 110))
    doms = [nv11(), nv11()]
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    logs: list[list[str]] = [[], []]

    def worker(index: int) -> None:
        try:
            rng = random.Random(seed * 10 + index)
            results.append(_fault_loop(qemu_conn, doms[index], state, runs, rng, logs[index]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not errors, f"seed {seed}: {errors[0]}"
    total = {k: sum(r[k] for r in results) for k in results[0]}
    print(f"fault loop (seed {seed}): {total}")
    assert total["runs"] >= 200
    assert total["changed"] > 0 and total["unchanged"] > 0  # the signals hit both sides
    assert total["reconciled"] > 0  # some killed between the write-ahead and the define's record


# ------------------------------------------------------------------ cut connection


@pytest.mark.parametrize("mode", ["cut-after-reply", "reply-lost"])
def test_connection_cut_at_the_define(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path, tmp_path: Path, mode: str
) -> None:
    dom = nv11()
    before = inactive(dom)
    kwargs = (
        {"cut_after_procs": DEFINE_PROCS}
        if mode == "cut-after-reply"
        else {"drop_procs": DEFINE_PROCS}
    )
    with Proxy(tmp_path / "libvirt.sock", **kwargs) as proxy:  # type: ignore[arg-type]
        run = nestvirt("enable", dom.name(), "-c", proxy.uri, "--memory", "384MiB", "--yes")
        assert proxy.cut.is_set() and proxy.cuts == 1
    assert_clean(run, mode)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    after = inactive(dom)
    assert after != before and "393216" in after
    assert f"{dom.name()} was changed (journal entry #1), but then" in run.stderr
    assert (
        f"`nestvirt undo -c '{proxy.uri}' {dom.name()}` puts the previous definition back"
        in run.stderr
    )

    (entry,) = journal_of(qemu_conn, dom, state).entries()
    assert (entry.status, entry.after, entry.before) == (DONE, after, before)
    # the same daemon through the default spelling: same journal, and undo works
    history = nestvirt("history", dom.name(), "--json")
    assert [e["status"] for e in json.loads(history.stdout)["entries"]] == ["done"]
    undo = nestvirt("undo", dom.name(), "--yes")
    assert undo.returncode == 0, undo.stderr
    assert inactive(dom) == before


def test_hung_daemon_times_out(tmp_path: Path, state: Path) -> None:
    with Proxy(tmp_path / "mute.sock", mute=True) as proxy:
        for argv in (["status"], ["enable", "nv11-any", "--yes"], ["history", "nv11-any"],
                     ["preflight", "nv11-any", "migrate"]):  # fmt: skip
            started = time.monotonic()
            run = nestvirt(*argv, "-c", proxy.uri, "--timeout", "1.5", timeout=30)
            took = time.monotonic() - started
            assert_clean(run, " ".join(argv))
            assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
            assert "no answer from" in run.stderr and "within 1.5 s" in run.stderr
            assert took < 10


# With one domain defined, status makes ~20 calls; the open takes the first 5 (auth list,
# feature checks, open): freeze after the 5th (before the domain list) and the 8th (amid
# the batched domain calls), whatever else the daemon holds.
@pytest.mark.parametrize("replies", [5, 8])
def test_daemon_that_stops_answering_mid_session(
    tmp_path: Path, state: Path, replies: int, nv11: Callable[[], Any]
) -> None:
    """libvirt's keepalive (set up with the connection) ends a call the daemon never answers."""
    nv11()  # at least one domain: the session has calls after the open to freeze in
    with Proxy(tmp_path / "freeze.sock", freeze_after=replies) as proxy:
        started = time.monotonic()
        run = nestvirt("status", "-c", proxy.uri, "--timeout", "2", timeout=30)
        took = time.monotonic() - started
        assert proxy.frozen.is_set()
    assert_clean(run, f"status, frozen after {replies} replies")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "nestvirt: libvirt: " in run.stderr and took < 10


# ------------------------------------------------------------------ spellings


def test_two_spellings_race_without_lost_updates(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path
) -> None:
    dom = nv11()
    name = dom.name()
    rounds = int(os.environ.get("NV11_ROUNDS", 20))
    for round_ in range(rounds):
        sizes = (300 + 2 * round_, 400 + 2 * round_)
        argvs = [
            [sys.executable, "-m", "nestvirt", "enable", name, "-c", uri,
             "--memory", f"{size}MiB", "--yes", "--wait", "30"]
            for uri, size in zip(("qemu:///system", SOCKET_URI), sizes, strict=True)
        ]  # fmt: skip
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for argv in argvs
        ]
        results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
        for _out, err, code in results:
            assert code == 0 and "Traceback" not in err, f"round {round_}: {code} {err}"
        seqs = [int(out.split("journal entry #")[1].split(")")[0]) for out, _e, _c in results]
        assert len(set(seqs)) == 2, f"round {round_}: both said entry #{seqs[0]}"
    entries = journal_of(qemu_conn, dom, state).entries()
    assert len(entries) == 2 * rounds
    assert all(e.status == DONE for e in entries)
    for earlier, later in itertools.pairwise(entries):
        assert later.before == earlier.after  # each planned on top of the other: none lost
    assert inactive(dom) == entries[-1].after
    for spelling in ("qemu:///system", "qemu+unix:///system", SOCKET_URI):
        doc = json.loads(nestvirt("history", name, "-c", spelling, "--json").stdout)
        assert len(doc["entries"]) == 2 * rounds


def test_hints_name_the_connection(nv11: Callable[[], Any], state: Path) -> None:
    dom = nv11()
    run = nestvirt("enable", dom.name(), "-c", "qemu+unix:///system", "--memory", "300MiB", "--yes")
    assert run.returncode == 0
    assert f"`nestvirt undo -c qemu+unix:///system {dom.name()}` puts the previous" in run.stdout
    undo = nestvirt("undo", dom.name(), "--yes")
    assert undo.returncode == 0
    assert "puts the previous definition back" not in undo.stdout
    assert "no earlier change" in undo.stdout


def test_legacy_journal_keyed_by_uri_text_is_adopted(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path
) -> None:
    dom = nv11()
    before = inactive(dom)
    assert nestvirt("enable", dom.name(), "--memory", "300MiB", "--yes").returncode == 0
    book = journal_of(qemu_conn, dom, state)
    legacy = Journal("qemu:///system", dom.UUIDString(), root=state)
    legacy.directory.parent.mkdir(parents=True, exist_ok=True)
    book.directory.rename(legacy.directory)  # as an older nestvirt left it
    undo = nestvirt("undo", dom.name(), "-c", "qemu+unix:///system", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert inactive(dom) == before
    assert not legacy.directory.exists()
    assert [e.action for e in book.entries()] == ["enable", "undo"]


# ------------------------------------------------------------------ hand edits


def test_undo_refuses_after_hand_edits_whatever_the_state(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path
) -> None:
    dom = nv11()
    name = dom.name()
    original = inactive(dom)
    assert nestvirt("enable", name, "--memory", "300MiB", "--yes").returncode == 0
    book = journal_of(qemu_conn, dom, state)
    assert len(book.entries()) == 1
    # as if killed between the define and the journal's "done": pending, planned after
    path = book.directory / "000001.json"
    doc = json.loads(path.read_text())
    doc["status"] = PENDING
    path.write_text(json.dumps(doc))
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, "edited by hand", None, None,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG)  # fmt: skip
    edited = inactive(dom)
    refused = nestvirt("undo", name, "--yes")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "someone else" in refused.stderr and "--force" in refused.stderr
    assert inactive(dom) == edited
    assert "changed by someone else" in refused.stderr  # the reconciliation said which
    dry = nestvirt("undo", name, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "--force would discard" in dry.stdout and "+  <description>edited by hand" in dry.stdout
    assert inactive(dom) == edited
    forced = nestvirt("undo", name, "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert inactive(dom) == original


# ------------------------------------------------------------------ state directory faults


def _namespace_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) in a private mount namespace: its mounts vanish with it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


def test_full_state_directory(qemu_conn: Any, nv11: Callable[[], Any], tmp_path: Path) -> None:
    """ENOSPC at every point of the journal's writes (k free pages on a full tmpfs):
    one line, exit 2, nothing changed unless journaled; once there is room, the next
    command settles the entry and undo restores the exact previous definition."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    keep = tmp_path / "keep"
    exe = sys.executable
    script = f"""
mount -t tmpfs -o size=256k,nr_inodes=400 nv11 {mnt}
mkdir -p {mnt}/state
c=0
fill() {{ while dd if=/dev/zero of={mnt}/fill$c bs=4096 count=1 2>/dev/null; do c=$((c+1)); done; rm -f {mnt}/fill$c; }}
k=0
for vm in $NV11_VMS; do
  fill
  j=0; while [ $j -lt $k ] && [ $c -gt 0 ]; do c=$((c-1)); rm -f {mnt}/fill$c; j=$((j+1)); done
  set +e
  NESTVIRT_STATE_DIR={mnt}/state/$vm {exe} -m nestvirt enable $vm --memory 300MiB --yes \
      >{keep}/$vm.out 2>{keep}/$vm.err
  echo $? >{keep}/$vm.rc
  set -e
  k=$((k+1))
done
rm -f {mnt}/fill*
for vm in $NV11_VMS; do
  NESTVIRT_STATE_DIR={mnt}/state/$vm {exe} -m nestvirt history $vm >{keep}/$vm.hist 2>{keep}/$vm.histerr || true
  cp -r {mnt}/state/$vm {keep}/state-$vm 2>/dev/null || true
done
"""
    keep.mkdir()
    doms = [nv11() for _ in range(8)]  # 0 to 7 free pages
    befores = {d.name(): inactive(d) for d in doms}
    done = _namespace_script(script, {"NV11_VMS": " ".join(befores)})
    assert done.returncode == 0, done.stderr
    outcomes = []
    for dom in doms:
        name = dom.name()
        code = int((keep / f"{name}.rc").read_text())
        err = (keep / f"{name}.err").read_text()
        assert code in (0, 2) and "Traceback" not in err, f"{name}: {code} {err}"
        live = inactive(dom)
        root = keep / f"state-{name}"
        if code == 2:
            assert err.count("\n") == 1, err
            assert "No space left on device" in err, err
            if live == befores[name]:
                assert "was changed" not in err, err
                outcomes.append("refused")
            else:
                assert f"{name} was changed" in err and "nestvirt undo" in err, err
                hist_err = (keep / f"{name}.histerr").read_text()
                assert "was applied; now recorded as done" in hist_err, hist_err
                outcomes.append("changed, settled later")
        else:
            outcomes.append("applied")
        if live != befores[name]:  # whatever happened, undo restores the exact definition
            env = {**os.environ, "NESTVIRT_STATE_DIR": str(root)}
            undo = nestvirt("undo", name, "--yes", env=env)
            assert undo.returncode == 0, undo.stderr
            assert inactive(dom) == befores[name]
    print("ENOSPC outcomes by free pages:", outcomes)
    assert outcomes[0] == "refused" and outcomes[-1] == "applied"
    # with room for the write-ahead entry but not its rewrite: changed, said, settled later
    assert "changed, settled later" in outcomes


def test_read_only_state_directory(qemu_conn: Any, nv11: Callable[[], Any], tmp_path: Path) -> None:
    dom = nv11()
    name = dom.name()
    state = tmp_path / "state"
    env = {**os.environ, "NESTVIRT_STATE_DIR": str(state)}
    assert nestvirt("enable", name, "--memory", "300MiB", "--yes", env=env).returncode == 0
    changed = inactive(dom)
    keep = tmp_path / "out"
    keep.mkdir()
    commands = {
        "enable": f"enable {name} --memory 320MiB --yes",
        "undo": f"undo {name} --yes",
        "history": f"history {name}",
        "undo-dry": f"undo {name} --dry-run",
    }
    runs = "\n".join(
        f"NESTVIRT_STATE_DIR={state} {sys.executable} -m nestvirt {cmd} "
        f">{keep}/{tag}.out 2>{keep}/{tag}.err; echo $? >{keep}/{tag}.rc"
        for tag, cmd in commands.items()
    )
    script = f"mount --bind {state} {state}\nmount -o remount,bind,ro {state}\nset +e\n{runs}\n"
    done = _namespace_script(script, {})
    assert done.returncode == 0, done.stderr
    results = {}
    for rc in keep.glob("*.rc"):
        tag = rc.stem
        results[tag] = (int(rc.read_text()), (keep / f"{tag}.err").read_text(),
                        (keep / f"{tag}.out").read_text())  # fmt: skip
    for tag, (code, err, _out) in results.items():
        assert code != 3 and "Traceback" not in err, f"{tag}: {err}"
    enable_code, enable_err, _ = results["enable"]
    assert enable_code == 2 and enable_err.count("\n") == 1
    assert "Read-only file system" in enable_err and "nothing changed" in enable_err
    undo_code, undo_err, _ = results["undo"]
    assert undo_code == 2 and "Read-only file system" in undo_err
    hist_code, _err, hist_out = results["history"]
    assert hist_code == 0 and "enable" in hist_out
    assert results["undo-dry"][0] == 0
    assert inactive(dom) == changed  # nothing changed without a journal


def test_state_directory_without_permission(
    qemu_conn: Any, nv11: Callable[[], Any], tmp_path: Path
) -> None:
    """EACCES, as root: the commands run without CAP_DAC_OVERRIDE (setpriv), so the
    modes of the state directory bind them like any user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    dom = nv11()
    name = dom.name()
    state = tmp_path / "state"
    env = {**os.environ, "NESTVIRT_STATE_DIR": str(state)}
    assert nestvirt("enable", name, "--memory", "300MiB", "--yes", env=env).returncode == 0
    changed = inactive(dom)
    book = journal_of(qemu_conn, dom, state)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*drop, sys.executable, "-m", "nestvirt", *argv],
                              capture_output=True, text=True, timeout=60, env=env)  # fmt: skip

    book.directory.chmod(0o500)  # the journal cannot be written, the lock can
    try:
        refused = run("enable", name, "--memory", "320MiB", "--yes")
        history = run("history", name)
    finally:
        book.directory.chmod(0o700)
    assert_clean(refused, "enable, journal not writable")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "cannot write the journal" in refused.stderr and "Permission denied" in refused.stderr
    assert "nothing changed" in refused.stderr
    assert history.returncode == 0 and "enable" in history.stdout
    locks = list((state / "locks").iterdir())
    for path in [*locks, state / "locks"]:
        path.chmod(0o400 if path in locks else 0o500)  # the lock cannot be taken
    try:
        locked = run("undo", name, "--yes")
    finally:
        for path in [state / "locks", *locks]:
            path.chmod(0o700 if path not in locks else 0o600)
    assert_clean(locked, "undo, lock not writable")
    assert locked.returncode == 2 and "Permission denied" in locked.stderr
    assert inactive(dom) == changed


@pytest.mark.parametrize("shape", ["truncated", "empty", "deep", "huge-int", "wrong-types"])
def test_a_corrupt_entry_never_blocks(
    qemu_conn: Any, nv11: Callable[[], Any], state: Path, shape: str
) -> None:
    dom = nv11()
    name = dom.name()
    original = inactive(dom)
    assert nestvirt("enable", name, "--memory", "300MiB", "--yes").returncode == 0
    book = journal_of(qemu_conn, dom, state)
    first = (book.directory / "000001.json").read_bytes()
    broken = {
        "truncated": first[: len(first) // 3],
        "empty": b"",
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "huge-int": b'{"seq": ' + b"1" * 100_000 + b"}",
        "wrong-types": first.replace(b'"seq": 1', b'"seq": "2"'),
    }[shape]
    (book.directory / "000002.json").write_bytes(broken)
    (book.directory / ".000003.json.k1ll3d99.tmp").write_text('{"half')  # a kill -9's leftover

    history = nestvirt("history", name, "--json")
    assert_clean(history, "history")
    assert history.returncode == 0
    doc = json.loads(history.stdout)
    assert [e["seq"] for e in doc["entries"]] == [1]
    assert [Path(s["path"]).name for s in doc["skipped"]] == ["000002.json"]
    assert "skipped journal file" in history.stderr and history.stderr.count("\n") == 1
    assert not list(book.directory.glob("*.tmp"))

    again = nestvirt("enable", name, "--memory", "320MiB", "--yes")
    assert_clean(again, "enable")
    assert again.returncode == 0 and "journal entry #3" in again.stdout, again.stderr
    for _ in range(2):  # undo #3, then #1: back to the very first definition
        undo = nestvirt("undo", name, "--yes")
        assert_clean(undo, "undo")
        assert undo.returncode == 0, undo.stderr
    assert inactive(dom) == original
    assert (book.directory / "000002.json").read_bytes() == broken  # kept as evidence
