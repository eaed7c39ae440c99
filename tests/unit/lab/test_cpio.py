"""The initramfs writer: valid newc, parents added, same entries → same bytes."""

from __future__ import annotations

import gzip
import hashlib
import stat

from hypothesis import given
from hypothesis import strategies as st

from nestvirt.lab import cpio


def sample() -> list[cpio.Entry]:
    return [
        cpio.Entry.file("usr/bin/python3", b"\x7fELF...", 0o755),
        cpio.Entry.symlink("bin/sh", "busybox"),
        cpio.Entry.chardev("dev/console", 5, 1),
        cpio.Entry.file("init", b"#!/bin/sh\n", 0o755),
    ]


def test_round_trip_adds_parents_and_sorts() -> None:
    entries = cpio.read_cpio(cpio.write_cpio(sample()))
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    assert {"usr", "usr/bin", "bin", "dev"} <= set(paths)
    by_path = {e.path: e for e in entries}
    assert by_path["usr/bin/python3"].data == b"\x7fELF..."
    assert stat.S_ISLNK(by_path["bin/sh"].mode) and by_path["bin/sh"].data == b"busybox"
    assert by_path["dev/console"].rdev == (5, 1)
    assert stat.S_ISDIR(by_path["usr"].mode)


def test_same_entries_in_any_order_give_the_same_bytes_and_hash() -> None:
    one = cpio.gzip_bytes(cpio.write_cpio(sample()))
    two = cpio.gzip_bytes(cpio.write_cpio(list(reversed(sample()))))
    assert one == two
    assert hashlib.sha256(one).digest() == hashlib.sha256(two).digest()
    assert one[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert gzip.decompress(one) == cpio.write_cpio(sample())


def test_archive_is_aligned_and_ends_with_the_trailer() -> None:
    data = cpio.write_cpio(sample())
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data[-128:]


def test_duplicate_paths_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError):
        cpio.write_cpio([cpio.Entry.file("a", b"1"), cpio.Entry.file("/a", b"2")])


names = st.text(alphabet="abcxyz_.", min_size=1, max_size=6)


@given(st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=40),
                       max_size=8))  # fmt: skip
def test_any_files_round_trip(files: dict[str, bytes]) -> None:
    # a path that is also a parent directory of another cannot be a file
    files = {p: d for p, d in files.items() if not any(o.startswith(p + "/") for o in files)}
    entries = [cpio.Entry.file(p, d) for p, d in files.items()]
    back = {
        e.path: e.data for e in cpio.read_cpio(cpio.write_cpio(entries)) if stat.S_ISREG(e.mode)
    }
    assert back == files
