"""A unix-socket proxy between a libvirt client and libvirtd that can cut the connection.

Real sockets, real RPC: the proxy forwards bytes both ways and parses the
daemon's replies (libvirt's framing: a 4-byte big-endian length including
itself, then prog, vers, proc, type, serial, status). Modes:

- cut_after_proc=P: forward the reply to procedure P, then close both sides;
- drop_proc=P: close both sides instead of forwarding the reply to P (the
  daemon has done the work; the client never hears of it);
- mute=True: accept connections and never answer (a hung daemon);
- freeze_after=N: forward the first N replies of each connection, then nothing
  more (a daemon that hangs in the middle of a session; keepalive pongs too);
- delay=S: hold every reply back S seconds (a slow daemon that still answers).

Point a client at it with `qemu+unix:///system?socket=PATH`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path

UPSTREAM = "/run/libvirt/libvirt-sock"
REMOTE_PROGRAM = 0x20008086
PROC_DOMAIN_DEFINE_XML = 11
PROC_DOMAIN_DEFINE_XML_FLAGS = 350
DEFINE_PROCS = frozenset({PROC_DOMAIN_DEFINE_XML, PROC_DOMAIN_DEFINE_XML_FLAGS})
REPLY = 1


class Proxy:
    def __init__(
        self,
        path: Path,
        *,
        cut_after_procs: frozenset[int] = frozenset(),
        drop_procs: frozenset[int] = frozenset(),
        mute: bool = False,
        freeze_after: int | None = None,
        delay: float = 0.0,
        upstream: str = UPSTREAM,
    ) -> None:
        self.path = str(path)
        self.cut_after, self.drop, self.mute = cut_after_procs, drop_procs, mute
        self.upstream = upstream
        self.freeze_after = freeze_after
        self.delay = delay  # seconds each reply is held back: a slow host, not a hung one
        self.frozen = threading.Event()
        self.cuts = 0  # connections cut so far
        self.cut = threading.Event()
        self.replies: list[int] = []  # procedures the daemon answered, in order
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in list(self._open):
            _close(sock)
        self._thread.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(client)
            if self.mute:
                continue  # keep it open, never read, never answer
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            self._open.append(server)
            threading.Thread(target=self._pump_up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client), daemon=True).start()

    def _pump_up(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        _close(client, server)

    def _pump_down(self, server: socket.socket, client: socket.socket) -> None:
        buffer = b""
        forwarded = 0
        try:
            while data := server.recv(65536):
                buffer += data
                while len(buffer) >= 4:
                    (length,) = struct.unpack(">I", buffer[:4])
                    if len(buffer) < length:
                        break
                    message, buffer = buffer[:length], buffer[length:]
                    prog, _vers, proc, kind = struct.unpack(">IIII", message[4:20])
                    ours = prog == REMOTE_PROGRAM and kind == REPLY
                    if ours:
                        self.replies.append(proc)
                    if ours and proc in self.drop:
                        self._cut(client, server)
                        return
                    if self.freeze_after is not None and forwarded >= self.freeze_after:
                        self.frozen.set()
                        continue  # swallowed: the client hears nothing more
                    forwarded += ours
                    if ours and self.delay:
                        time.sleep(self.delay)  # the slowness itself, not a wait for an event
                    client.sendall(message)
                    if ours and proc in self.cut_after:
                        self._cut(client, server)
                        return
        except OSError:
            pass
        _close(client, server)

    def _cut(self, *socks: socket.socket) -> None:
        self.cuts += 1
        _close(*socks)
        self.cut.set()


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
