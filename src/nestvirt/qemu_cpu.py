"""Ask QEMU what a `-cpu` argument gives the guest, over QMP, with an on-disk cache.

`QemuCpuOracle.expand(emulator, accel, cpu_arg)` answers with nestvirt.guestcpu's
GuestCpu. One QEMU process per (emulator, accel) serves every question of a
command (`-machine none`: no guest, no vCPU thread, no disk or network), and
answers are kept in `cache_path()` keyed by emulator path + size + mtime, accel
and the argument, so a second run does not start QEMU at all.

The cache is a JSON object; a corrupt or unreadable one is ignored (and
rewritten), and a cache that cannot be written only costs the next run a QEMU
start.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestvirt.guestcpu import EXTENSIONS, QEMU, GuestCpu, from_expansion

QMP_TIMEOUT = 15.0  # s per QEMU start or answer; a loaded 2-core host starts it in ~0.1 s
CACHE_VERSION = 2  # 2: entries hold the answer (extensions, vendor), not props


class QemuUnavailable(Exception):
    """QEMU could not be started or did not answer; the reason is the message."""


def cache_path() -> Path:
    if override := os.environ.get("NESTVIRT_CACHE_DIR"):
        return Path(override) / "guestcpu.json"
    if os.geteuid() == 0:
        return Path("/var/cache/nestvirt/guestcpu.json")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nestvirt" / "guestcpu.json"


def parse_cpu_arg(cpu_arg: str) -> tuple[str, dict[str, Any]]:
    """'EPYC,svm=on,-vmx,hv-spinlocks=0x1fff' → ('EPYC', {'svm': True, 'vmx': False, …})."""
    name, *switches = cpu_arg.split(",")
    props: dict[str, Any] = {}
    for switch in switches:
        if not switch:
            continue
        if switch[0] in "+-" and "=" not in switch:  # legacy +feat / -feat
            props[switch[1:]] = switch[0] == "+"
            continue
        key, _, value = switch.partition("=")
        props[key] = _value(value)
    return name, props


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("on", "true", "yes", ""):
        return True
    if low in ("off", "false", "no"):
        return False
    with contextlib.suppress(ValueError):
        return int(text, 0)
    return text


def _die_with_parent() -> None:
    # a nestvirt killed with SIGKILL must not leave its QEMU behind
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Qmp:
    """One `qemu -machine none -qmp stdio` process."""

    process: subprocess.Popen[bytes]
    emulator: str
    timeout: float = QMP_TIMEOUT
    buffer: bytes = b""
    supported: dict[str, Any] = field(default_factory=dict)  # the expansion of `max`

    @classmethod
    def start(cls, emulator: str, accel: str, timeout: float = QMP_TIMEOUT) -> _Qmp:
        argv = [emulator, "-machine", "none", "-accel", accel, "-display", "none",
                "-nodefaults", "-no-user-config", "-qmp", "stdio"]  # fmt: skip
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise QemuUnavailable(f"cannot run {emulator}: {exc.strerror}") from None
        qmp = cls(process, emulator, timeout)
        try:
            qmp._read("QMP")
            qmp.call("qmp_capabilities")
        except QemuUnavailable:
            qmp.close()
            raise
        return qmp

    def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise QemuUnavailable(f"QEMU closed its QMP channel: {exc.strerror}") from None
        reply = self._read("return", "error")
        if "error" in reply:
            raise ValueError(reply["error"].get("desc", "QMP error"))
        return reply["return"]

    def expand(self, model: dict[str, Any]) -> dict[str, Any]:
        """The props of `model` ({"name", "props"}) after a full expansion."""
        reply = self.call("query-cpu-model-expansion", {"type": "full", "model": model})
        return dict(reply["model"].get("props", {}))

    def _read(self, *keys: str) -> dict[str, Any]:
        """The next message carrying one of `keys` (events are skipped)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while True:
            line, sep, rest = self.buffer.partition(b"\n")
            if sep:
                self.buffer = rest
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and any(k in message for k in keys):
                    return message
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise QemuUnavailable(f"{self.emulator} did not answer within {self.timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise QemuUnavailable(f"QEMU exited: {self._stderr()}")
            self.buffer += chunk

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.process.kill()
            _, err = self.process.communicate(timeout=5)
            text = err.decode(errors="replace").strip().splitlines()
            return text[-1] if text else f"exit status {self.process.returncode}"
        return "no reason given"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.communicate(timeout=5)


@dataclass
class QemuCpuOracle:
    """Answers from QEMU, one process per (emulator, accel), cached on disk."""

    path: Path = field(default_factory=cache_path)
    timeout: float = QMP_TIMEOUT
    started: int = 0  # QEMU processes started by this oracle (tests and benchmarks read it)
    _sessions: dict[tuple[str, str], _Qmp] = field(default_factory=dict)
    _failed: dict[tuple[str, str], str] = field(default_factory=dict)
    _cache: dict[str, Any] | None = None
    _dirty: bool = False

    def expand(self, emulator: str, accel: str, cpu_arg: str) -> GuestCpu | str:
        """QEMU's answer, or the reason QEMU could not give one (a str)."""
        key = self._key(emulator, accel, cpu_arg)
        detail = f"{emulator} -accel {accel} -cpu {cpu_arg}"
        cache = self._load()
        hit = cache.get(key) if key is not None else None
        if isinstance(hit, dict) and isinstance(hit.get("extensions"), list):
            extensions = tuple(e for e in EXTENSIONS if e in hit["extensions"])
            vendor = hit.get("vendor")
            return GuestCpu(extensions, vendor if isinstance(vendor, str) else None, QEMU,
                            detail, cpu_arg=cpu_arg)  # fmt: skip
        try:
            props, supported = self._ask(emulator, accel, cpu_arg)
        except QemuUnavailable as exc:
            return str(exc)
        except ValueError as exc:
            return f"QEMU cannot expand -cpu {cpu_arg}: {exc}"
        answer = from_expansion(props, supported, detail=detail, cpu_arg=cpu_arg)
        if key is not None:
            cache[key] = {"extensions": list(answer.extensions), "vendor": answer.vendor}
            self._dirty = True
        return answer

    def _ask(self, emulator: str, accel: str, cpu_arg: str) -> tuple[dict[str, Any], ...]:
        where = (emulator, accel)
        if where in self._failed:
            raise QemuUnavailable(self._failed[where])
        session = self._sessions.get(where)
        if session is None:
            session = self._start(emulator, accel)
            self.started += 1
            self._sessions[where] = session
        name, props = parse_cpu_arg(cpu_arg)
        model: dict[str, Any] = {"name": name}
        if props:
            model["props"] = props
        return session.expand(model), session.supported

    def _start(self, emulator: str, accel: str) -> _Qmp:
        where = (emulator, accel)
        try:
            session = _Qmp.start(emulator, accel, self.timeout)
        except QemuUnavailable as exc:
            self._failed[where] = str(exc)
            raise
        try:  # `max` is all this accelerator supports: asked once a session
            session.supported = session.expand({"name": "max"})
        except (QemuUnavailable, ValueError) as exc:
            session.close()
            self._failed[where] = f"{emulator} cannot expand its max CPU under {accel}: {exc}"
            raise QemuUnavailable(self._failed[where]) from None
        return session

    @staticmethod
    def _key(emulator: str, accel: str, cpu_arg: str) -> str | None:
        try:
            st = os.stat(emulator)
        except OSError:
            return None
        return f"{CACHE_VERSION}|{emulator}|{st.st_size}|{st.st_mtime_ns}|{accel}|{cpu_arg}"

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError, RecursionError):
                data = {}
            self._cache = data if isinstance(data, dict) else {}
        return self._cache

    def close(self) -> None:
        """Quit every QEMU and save new answers (a failed save only costs a QEMU start later)."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        if self._dirty and self._cache is not None:
            from nestvirt.statedir import atomic_write

            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, json.dumps(self._cache, sort_keys=True), mode=0o644)
            self._dirty = False

    def __enter__(self) -> QemuCpuOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
