"""Opening a libvirt connection with a deadline, and naming the daemon behind it.

**Timeouts.** libvirt-python has no per-call timeout, and a socket that accepts
but never answers blocks `virConnectOpen` for ever. Two mechanisms, both
libvirt's own or thin:

- the open runs in a worker thread and the caller waits at most `timeout`
  seconds for it (a hung open is abandoned: the thread is a daemon thread and
  dies with the process, which exits right after the error);
- once open, the connection gets libvirt's keepalive (what `virsh` does): ping
  every few seconds, and libvirt itself closes the connection when about
  `timeout` seconds pass without an answer — so a daemon that hangs *during* a
  call ends that call with an error instead of blocking. Keepalive needs an
  event loop: libvirt's default one, registered once per process (before the
  first open) and run in a daemon thread.

The default (30 s) lets a slow host answer (a QEMU capability re-probe takes
tens of seconds on a cold libvirtd, see NV-H09) and still ends a hang well
before a user gives up.

**Identity.** `qemu:///system`, `qemu+unix:///system` and
`qemu+unix:///system?socket=/run/libvirt/libvirt-sock` are one daemon. The lock
and the journal are keyed by `daemon_identity`: the driver and path of the URI
(transport and parameters dropped) and the host name the daemon reports
(`virConnectGetHostname`, asked over the connection), e.g. `qemu://vm/system`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nestvirt.endpoint import DEFAULT_URI
from nestvirt.errors import ConnectError

if TYPE_CHECKING:
    import libvirt as libvirt_t

DEFAULT_TIMEOUT = 30.0

_loop_lock = threading.Lock()
_loop_running = False


def _libvirt() -> Any:
    from nestvirt.backends.libvirt import _libvirt as loaded

    return loaded()


def _ensure_event_loop() -> bool:
    """Register libvirt's default event loop (once) and run it in a daemon thread."""
    global _loop_running
    with _loop_lock:
        if _loop_running:
            return True
        lv = _libvirt()
        try:
            if lv.virEventRegisterDefaultImpl() < 0:
                return False
        except lv.libvirtError:
            return False

        def run() -> None:
            while True:
                if lv.virEventRunDefaultImpl() < 0:
                    return

        threading.Thread(target=run, name="nestvirt-libvirt-events", daemon=True).start()
        _loop_running = True
        return True


def keepalive(timeout: float) -> tuple[int, int]:
    """(interval, count) so libvirt drops a silent connection after about `timeout` s."""
    interval = max(1, min(5, int(timeout) // 3))
    count = max(1, int(timeout) // interval - 1)
    return interval, count


def open_connection(
    uri: str | None, *, readonly: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> libvirt_t.virConnect:
    """backends.libvirt.open_connection, but at most `timeout` s, and with keepalive."""
    from nestvirt.backends import libvirt as backend

    target = uri or DEFAULT_URI
    _ensure_event_loop()
    result: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            result["conn"] = backend.open_connection(uri, readonly=readonly)
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=work, name="nestvirt-libvirt-open", daemon=True).start()
    if not finished.wait(timeout):
        raise ConnectError(
            f"no answer from {target} within {timeout:g} s: libvirtd accepts the connection "
            "but does not respond (hung or overloaded?); check it, or allow more with --timeout"
        )
    if "error" in result:
        raise result["error"]
    conn = result["conn"]
    backend.CALL_TIMEOUTS[conn] = timeout
    interval, count = keepalive(timeout)
    with contextlib.suppress(Exception):  # drivers without keepalive (test:///) say no
        conn.setKeepAlive(interval, count)
    return conn


def daemon_identity(conn: Any) -> str:
    """driver://daemon-hostname/path: one string for every spelling of one daemon's URI."""
    uri = str(conn.getURI())
    try:
        parts = urlsplit(uri)
        driver = parts.scheme.split("+", 1)[0] or uri
        path = parts.path or "/"
        spelled_host = parts.hostname or ""
    except ValueError:
        return uri
    try:
        host = str(conn.getHostname())
    except Exception:  # a driver without it: the URI's host is the best we have
        host = spelled_host or "localhost"
    return f"{driver}://{host}{path}"


def legacy_uris(conn: Any) -> list[str]:
    """URI texts older nestvirt keyed this daemon's journals by (the same daemon, locally)."""
    uri = str(conn.getURI())
    uris = [uri]
    with contextlib.suppress(ValueError):
        parts = urlsplit(uri)
        if not parts.hostname:
            driver = parts.scheme.split("+", 1)[0]
            uris += [
                f"{driver}://{parts.path}",
                f"{driver}+unix://{parts.path}",
                f"{driver}+unix://{parts.path}?socket=/run/libvirt/libvirt-sock",
            ]
    return uris


def connect_option(uri: str | None) -> str:
    """' -c URI' (shell-quoted) for a hint when `uri` is not the default, else ''."""
    import shlex

    if not uri or uri == DEFAULT_URI:
        return ""
    return f" -c {shlex.quote(uri)}"


def undo_command(vm: str, uri: str | None) -> str:
    """`nestvirt undo [-c URI] [--] VM`, quoted for a POSIX shell."""
    import shlex

    dashes = " --" if vm.startswith("-") else ""
    return f"nestvirt undo{connect_option(uri)}{dashes} {shlex.quote(vm)}"
