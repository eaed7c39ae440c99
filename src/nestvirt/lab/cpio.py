"""A reproducible newc cpio writer (the initramfs format the kernel unpacks).

Same entries in → same bytes out: entries are sorted by path, every mtime is
fixed, owners are root, inode numbers are assigned in order, and the gzip
header carries no name and mtime 0.
"""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class Entry:
    """One file, directory, symlink or device node of the archive (path without leading /)."""

    path: str
    mode: int  # full st_mode: type bits | permission bits
    data: bytes = b""  # file content, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes

    @staticmethod
    def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
        return Entry(path, stat.S_IFREG | perm, data)

    @staticmethod
    def directory(path: str, perm: int = 0o755) -> Entry:
        return Entry(path, stat.S_IFDIR | perm)

    @staticmethod
    def symlink(path: str, target: str) -> Entry:
        return Entry(path, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return Entry(path, stat.S_IFCHR | perm, b"", (major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name: bytes, mtime: int) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino, entry.mode, 0, 0, nlink, mtime, len(entry.data),
        0, 0, entry.rdev[0], entry.rdev[1], len(name) + 1, 0,
    )  # fmt: skip
    return MAGIC + b"".join(b"%08X" % v for v in fields)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """The entries plus a directory entry for every missing parent, sorted by path."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = entry.path.strip("/")
        if not path or path in by_path:
            raise ValueError(f"cpio: empty or duplicate path {entry.path!r}")
        by_path[path] = Entry(path, entry.mode, entry.data, entry.rdev)
    for path in list(by_path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            by_path.setdefault(parent, Entry.directory(parent))
    return [by_path[p] for p in sorted(by_path)]


def write_cpio(entries: Iterable[Entry], mtime: int = 0) -> bytes:
    """The newc archive of the entries (parents added, sorted), ending with the trailer."""
    out = io.BytesIO()
    for ino, entry in enumerate(with_parents(entries), start=1):
        name = entry.path.encode()
        header = _header(ino, entry, name, mtime)
        out.write(header + name + b"\0")
        out.write(_pad(len(header) + len(name) + 1))
        out.write(entry.data)
        out.write(_pad(len(entry.data)))
    trailer = TRAILER.encode()
    header = _header(0, Entry(TRAILER, 0), trailer, 0)
    out.write(header + trailer + b"\0" + _pad(len(header) + len(trailer) + 1))
    return out.getvalue()


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """gzip with no file name and mtime 0 (like `gzip -n`), so the output is reproducible."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=level, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def read_cpio(data: bytes) -> list[Entry]:
    """Parse a newc archive (for tests and `--keep` inspection); stops at the trailer."""
    entries: list[Entry] = []
    pos = 0
    while True:
        if data[pos : pos + 6] != MAGIC:
            raise ValueError(f"cpio: bad magic at offset {pos}")
        values = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = values[1], values[6], values[9], values[10], values[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        content = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == TRAILER:
            return entries
        entries.append(Entry(name, mode, content, (rmaj, rmin)))
