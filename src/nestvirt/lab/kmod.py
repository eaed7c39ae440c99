"""Kernel modules for the lab VM: read `depends=` from a module's .modinfo, order by dependency.

Debian's kernel package ships no modules.dep (depmod writes it at install), so
the dependency list is read from each module's ELF `.modinfo` section.
"""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

from nestvirt.errors import NotFound


def modinfo(data: bytes) -> dict[str, list[str]]:
    """key -> values of a module's `.modinfo` section (ELF64 little-endian)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF module")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize
        )
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off : end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    return {}


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (dashes as underscores) -> its file, for every .ko(.xz) under modules_dir."""
    index: dict[str, Path] = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        if path.name.endswith((".ko", ".ko.xz")):
            name = path.name.split(".ko")[0].replace("-", "_")
            index.setdefault(name, path)
    return index


def load_order(wanted: list[str], index: dict[str, Path]) -> list[str]:
    """Every module needed to load `wanted`, dependencies first (a depth-first post-order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"module dependency cycle through {name}")
        if name not in index:
            raise NotFound(f"kernel module {name} not found in {len(index)} modules")
        visiting.add(name)
        deps = modinfo(read_module(index[name])).get("depends", [""])[0]
        for dep in sorted(d for d in deps.split(",") if d):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order
