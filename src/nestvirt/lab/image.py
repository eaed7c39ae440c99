"""Step 1: the lab VM's kernel and initramfs, built from this host's own packages.

Inputs: a kernel with its KVM modules (the host's own when /boot and
/lib/modules have them, else the distribution's kernel package fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into the cache — nothing is
installed), the host's CPython (binary, the libraries `ldd` names, the
standard library without tests and tools), busybox, nestvirt's own source and
the init script below. The image lives in `<cache>/images/<key>/`, where key
is a hash of all inputs; a build is reproducible (see cpio.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nestvirt
from nestvirt.errors import NestvirtError, NotFound
from nestvirt.lab import console, cpio, kmod, paths
from nestvirt.statedir import atomic_write
from nestvirt.vocabulary import HARDWARE_KVM_MODULES

BUILDER_VERSION = "2"  # bump when the layout of the image changes
KERNEL_META_PACKAGE = "linux-image-amd64"
VENDOR_MODULES = tuple(sorted(HARDWARE_KVM_MODULES))  # ("kvm_amd", "kvm_intel")
BUSYBOX_APPLETS = (
    "sh", "mount", "umount", "insmod", "poweroff", "cat", "echo", "ls", "mkdir", "uname",
    "dmesg", "sleep", "printf",
)  # fmt: skip
# Parts of the standard library the probe never needs (and the biggest ones).
STDLIB_SKIP_DIRS = {
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "site-packages", "dist-packages", "__pycache__", "venv",
    "__phello__",
}  # fmt: skip
STDLIB_SKIP_PREFIXES = ("config-",)
DYNLOAD_SKIP = re.compile(
    r"^(_test|_xxtest|xxlimited|_ctypes_test|_tkinter|_ssl|_hashlib|_sqlite3|_curses|readline"
    r"|_dbm|_gdbm|nis|ossaudiodev|audioop)"
)

Progress = Callable[[str], None]

INIT_SCRIPT = """#!/bin/sh
# nestvirt lab VM (depth 1): mount, say we booted, run the guest report, power off.
export PATH=/bin:/usr/bin PYTHONHOME=/usr PYTHONPATH=/lab/py PYTHONDONTWRITEBYTECODE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo {booted}
case " $(cat /proc/cmdline) " in
  *" nestvirt.lab=boot-test "*) poweroff -f ;;
  *" nestvirt.lab=guestside "*)
    python3 -S -m nestvirt.guestside --framed || printf '%s' '{fallback}'
    poweroff -f ;;
esac
python3 -S -m nestvirt.lab.guest || printf '%s' '{fallback}'
poweroff -f
"""


def init_script() -> str:
    fallback = console.frame(
        {"schema": "nestvirt.lab-guest/1", "error": "python3 did not run in the lab VM"}
    )
    return INIT_SCRIPT.format(booted=console.BOOTED, fallback=fallback)


@dataclass(frozen=True, slots=True)
class Kernel:
    release: str  # uname -r of the lab VM
    vmlinuz: Path
    modules_dir: Path  # …/lib/modules/<release>
    ident: str  # what the image key records: package and version, or a file hash
    origin: str  # for people: where it came from


@dataclass(frozen=True, slots=True)
class Python:
    binary: Path
    version: str  # "3.11"
    stdlib: Path
    dynload: Path


@dataclass(frozen=True, slots=True)
class Image:
    key: str
    directory: Path
    kernel: Kernel
    built: bool  # False when it came from the cache
    seconds: float
    size_bytes: int

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.gz"


def _run(args: list[str], **kwargs: Any) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NestvirtError(f"{args[0]} failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bzimage_release(path: Path) -> str | None:
    """The kernel release a bzImage announces (its setup header's kernel_version string)."""
    with path.open("rb") as handle:
        header = handle.read(0x400)
        if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
            return None
        pointer = int.from_bytes(header[0x20E:0x210], "little")
        handle.seek(pointer + 0x200)
        text = handle.read(256).split(b"\0")[0].decode(errors="replace")
    return text.split()[0] if text else None


XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU jumps to for an ELF -kernel


def pvh_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed kernel ELF inside a bzImage, when it has a PVH entry; else None.

    QEMU boots such an ELF directly (PVH): no real-mode setup and, above all, no
    xz decompression of the kernel under TCG (~3 s here). gzip/xz payloads only.
    """
    import lzma
    import zlib

    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start : start + length]
    try:
        if payload.startswith(b"\xfd7zXZ\0"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(wbits=31).decompress(payload)
        else:
            return None
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if _has_pvh_note(elf) else None


def _has_pvh_note(elf: bytes) -> bool:
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _has_kvm(modules_dir: Path) -> bool:
    return (modules_dir / "kernel" / "arch" / "x86" / "kvm").is_dir()


# -- the kernel ---------------------------------------------------------------------------------


def find_kernel(kernel_arg: str | None, cache: Path, progress: Progress) -> Kernel:
    """--kernel PATH (a vmlinuz, an unpacked root or a .deb), the host's, or the distribution's."""
    if kernel_arg:
        return _kernel_from_path(Path(kernel_arg), cache, progress)
    release = os.uname().release
    host = Path(f"/boot/vmlinuz-{release}")
    modules = Path(f"/lib/modules/{release}")
    if os.access(host, os.R_OK) and _has_kvm(modules):
        return Kernel(release, host, modules, f"file:{sha256_file(host)}", f"this host's {host}")
    return _kernel_from_package(cache, progress)


def _kernel_from_path(path: Path, cache: Path, progress: Progress) -> Kernel:
    if not path.exists():
        raise NotFound(f"--kernel {path}: no such file or directory")
    if path.suffix == ".deb":
        unpacked = _unpack_deb(path, cache / "kernel" / f"deb-{sha256_file(path)[:16]}", progress)
        return _kernel_in_root(unpacked, f"deb:{sha256_file(path)}", str(path))
    if path.is_dir():
        return _kernel_in_root(path, f"root:{path}", str(path))
    release = bzimage_release(path)
    if release is None:
        raise NotFound(f"--kernel {path}: not a bzImage kernel, .deb or unpacked kernel root")
    modules = Path(f"/lib/modules/{release}")
    if not _has_kvm(modules):
        raise NotFound(f"--kernel {path}: kernel {release} has no KVM modules in {modules}")
    return Kernel(release, path, modules, f"file:{sha256_file(path)}", str(path))


def _kernel_in_root(root: Path, ident: str, origin: str) -> Kernel:
    for modules in sorted((root / "lib" / "modules").glob("*")):
        vmlinuz = root / "boot" / f"vmlinuz-{modules.name}"
        if vmlinuz.exists() and _has_kvm(modules):
            return Kernel(modules.name, vmlinuz, modules, ident, origin)
    raise NotFound(f"{origin}: no boot/vmlinuz-* with KVM modules under lib/modules/")


def _apt_kernel_package() -> tuple[str, str]:
    """The package and candidate version `linux-image-amd64` depends on (apt's local lists)."""
    if shutil.which("apt-cache") is None:
        raise NotFound(
            "no readable kernel with KVM modules in /boot and /lib/modules, and no apt to fetch "
            "one: pass --kernel PATH (a vmlinuz whose modules are in /lib/modules, or a .deb)"
        )
    depends = _run(["apt-cache", "depends", "--important", KERNEL_META_PACKAGE])
    match = re.search(r"Depends:\s*(linux-image-\S+)", depends)
    if match is None:
        raise NotFound(f"apt-cache: {KERNEL_META_PACKAGE} depends on no linux-image package")
    package = match.group(1)
    policy = _run(["apt-cache", "policy", package])
    version = re.search(r"Candidate:\s*(\S+)", policy)
    if version is None or version.group(1) == "(none)":
        raise NotFound(f"apt-cache: no candidate version of {package} (run apt-get update)")
    return package, version.group(1)


APT_LISTS = Path("/var/lib/apt/lists")


def _apt_lists_stamp() -> str:
    """Changes whenever `apt-get update` changes the package lists."""
    try:
        return ",".join(
            f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(APT_LISTS.glob("*Packages*"))
        )
    except OSError:
        return ""


def _resolved_kernel_package(cache: Path) -> tuple[str, str]:
    """`_apt_kernel_package`, remembered until the package lists change (apt-cache: ~2 s)."""
    memo = cache / "kernel" / "resolved.json"
    stamp = _apt_lists_stamp()
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(memo.read_text())
        if stamp and known["stamp"] == stamp:
            return known["package"], known["version"]
    package, version = _apt_kernel_package()
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        resolved = {"stamp": stamp, "package": package, "version": version}
        atomic_write(memo, json.dumps(resolved), mode=0o644, what="the lab's kernel memo")
    return package, version


def _kernel_from_package(cache: Path, progress: Progress) -> Kernel:
    package, version = _resolved_kernel_package(cache)
    target = cache / "kernel" / f"{package}_{version}"
    ident = f"deb:{package}={version}"
    origin = f"Debian package {package} {version}"
    if (target / "complete").exists():
        return _kernel_in_root(target, ident, origin)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    wanted = [d for d in found if _deb_version(d) == version]
    if not wanted:
        progress(f"downloading {package} {version} (apt-get download)")
        _run(["apt-get", "download", f"{package}={version}"], cwd=debs)
        wanted = [d for d in sorted(debs.glob(f"{package}_*.deb")) if _deb_version(d) == version]
        if not wanted:
            raise NestvirtError(f"apt-get download {package}={version} left no .deb in {debs}")
        for old in found:
            old.unlink(missing_ok=True)
    _unpack_deb(wanted[0], target, progress)
    return _kernel_in_root(target, ident, origin)


def _deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "--field", str(deb), "Version"]).strip()


def _unpack_deb(deb: Path, target: Path, progress: Progress) -> Path:
    """The kernel, its config and the KVM modules (with dependencies) of a kernel .deb."""
    if (target / "complete").exists():
        return target
    progress(f"unpacking {deb.name} (dpkg-deb -x, kept: vmlinuz and the KVM modules)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        root = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        kernel = _kernel_in_root(root, "", str(deb))
        keep = Path(tmp) / "keep"
        (keep / "boot").mkdir(parents=True)
        shutil.copy2(kernel.vmlinuz, keep / "boot" / kernel.vmlinuz.name)
        index = kmod.module_index(kernel.modules_dir)
        for name in kmod.load_order(list(VENDOR_MODULES), index):
            relative = index[name].relative_to(root)
            (keep / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(index[name], keep / relative)
        (keep / "complete").write_text(deb.name + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(keep, target)
    return target


# -- python -------------------------------------------------------------------------------------


def find_python() -> Python:
    """Debian's /usr/bin/python3.11 when present (what the lab was measured with), else ours."""
    candidates = [Path("/usr/bin/python3.11"), Path(os.path.realpath(sys.executable))]
    for binary in candidates:
        if not os.access(binary, os.X_OK):
            continue
        script = (
            "import json,sys,sysconfig;"
            "print(json.dumps([sys.version_info[:2], sysconfig.get_paths()['stdlib'],"
            "sysconfig.get_config_var('DESTSHARED')]))"
        )
        done = subprocess.run(
            [str(binary), "-S", "-c", script], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            (major, minor), stdlib, dynload = json.loads(done.stdout)
            if (major, minor) >= (3, 11):
                dyn = Path(dynload) if dynload else Path(stdlib) / "lib-dynload"
                return Python(binary, f"{major}.{minor}", Path(stdlib), dyn)
    raise NotFound("no CPython 3.11+ found for the lab image (tried /usr/bin/python3.11)")


def _stdlib_files(python: Python) -> Iterator[Path]:
    for directory, dirs, files in os.walk(python.stdlib):
        dirs[:] = sorted(
            d for d in dirs if d not in STDLIB_SKIP_DIRS and not d.startswith(STDLIB_SKIP_PREFIXES)
        )
        here = Path(directory)
        if here == python.dynload:
            continue
        for name in sorted(files):
            # a dangling link (Debian's sitecustomize.py -> /etc/python3.X/, absent in a
            # container root that has /usr alone) is not part of the stdlib
            if name.endswith(".py") and (here / name).exists():
                yield here / name


def _dynload_files(python: Python) -> list[Path]:
    return sorted(p for p in python.dynload.glob("*.so") if not DYNLOAD_SKIP.match(p.name))


def _ldd(paths: list[Path]) -> list[Path]:
    """The shared libraries (and the loader) these ELF files need, as ldd names them."""
    needed: set[Path] = set()
    for path in paths:
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                needed.add(Path(match.group(1)))
    return sorted(needed)


def _nestvirt_sources() -> list[Path]:
    """All of nestvirt's .py files: the probe loads every rule module (and what they import);
    the CLI, rich and libvirt parts are imported lazily and never run in the guest."""
    package = Path(nestvirt.__file__).parent
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


# -- key and build ------------------------------------------------------------------------------


def _tree_signature(files: Iterator[Path] | list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        st = path.stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def nestvirt_snapshot() -> dict[str, bytes]:
    """The guest's part of nestvirt, read once: the key and the build use the same bytes."""
    package = Path(nestvirt.__file__).parent
    return {str(p.relative_to(package)): p.read_bytes() for p in _nestvirt_sources()}


def image_inputs(kernel: Kernel, python: Python, sources: dict[str, bytes]) -> dict[str, Any]:
    """Everything the image is made of; its hash is the cache key."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name] + b"\0")
    return {
        "builder": BUILDER_VERSION,
        "kernel": kernel.ident,
        "kernel_release": kernel.release,
        "python": f"{python.binary}:{sha256_file(python.binary)}",
        "stdlib": _tree_signature([*_stdlib_files(python), *_dynload_files(python)]),
        "busybox": sha256_file(Path(_busybox())),
        "nestvirt": digest.hexdigest(),
        "init": hashlib.sha256(init_script().encode()).hexdigest(),
    }


def image_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _busybox() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise NotFound("busybox not found (Debian: apt-get install busybox-static)")


def _compile(python: Python, staging: Path) -> None:
    """Byte-compile the staged .py files with the guest's own interpreter, reproducibly."""
    script = (
        "import compileall, py_compile, sys;"
        "root = sys.argv[1];"
        "compileall.compile_dir(root, quiet=2, stripdir=root, prependdir='/', workers=0,"
        " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "0"}
    subprocess.run(
        [str(python.binary), "-S", "-c", script, str(staging)], check=False, env=env,
        capture_output=True,
    )  # fmt: skip


def initramfs_entries(
    kernel: Kernel, python: Python, sources: dict[str, bytes], staging: Path
) -> list[cpio.Entry]:
    """Every file of the initramfs (pure layout; `staging` receives the .py files to compile)."""
    entries: list[cpio.Entry] = [
        cpio.Entry.chardev("dev/console", 5, 1),
        cpio.Entry.chardev("dev/null", 1, 3, 0o666),
        *(cpio.Entry.directory(d) for d in ("proc", "sys", "tmp", "run", "root")),
        cpio.Entry.file("init", init_script().encode(), 0o755),
        cpio.Entry.file("bin/busybox", Path(_busybox()).read_bytes(), 0o755),
        *(cpio.Entry.symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS),
        cpio.Entry.file("usr/bin/python3", python.binary.read_bytes(), 0o755),
        cpio.Entry.symlink(f"usr/bin/python{python.version}", "python3"),
    ]
    guest_stdlib = f"usr/lib/python{python.version}"
    dynload = _dynload_files(python)
    for lib in _ldd([python.binary, *dynload]):
        entries.append(cpio.Entry.file(str(lib).lstrip("/"), lib.read_bytes(), 0o755))
    for so in dynload:
        entries.append(cpio.Entry.file(f"{guest_stdlib}/lib-dynload/{so.name}", so.read_bytes()))
    for source in _stdlib_files(python):
        target = staging / guest_stdlib / source.relative_to(python.stdlib)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for name, data in sources.items():
        target = staging / "lab/py/nestvirt" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _compile(python, staging)
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            entries.append(cpio.Entry.file(str(path.relative_to(staging)), path.read_bytes()))
    plan: dict[str, list[dict[str, str]]] = {}
    index = kmod.module_index(kernel.modules_dir)
    for vendor in VENDOR_MODULES:
        plan[vendor] = []
        for name in kmod.load_order([vendor], index):
            guest = f"lib/modules/{kernel.release}/{index[name].relative_to(kernel.modules_dir)}"
            plan[vendor].append({"name": name, "file": "/" + guest})
            if not any(e.path == guest for e in entries):
                entries.append(cpio.Entry.file(guest, kmod.read_module(index[name])))
                plan[vendor][-1]["file"] = "/" + guest
    entries.append(cpio.Entry.file("lab/modules.json", json.dumps(plan, indent=1).encode()))
    return entries


def ensure_image(kernel_arg: str | None = None, progress: Progress | None = None) -> Image:
    """The cached image for the current inputs, built first when missing."""
    say = progress or (lambda _message: None)
    started = time.monotonic()
    cache = paths.cache_dir()
    kernel = find_kernel(kernel_arg, cache, say)
    python = find_python()
    sources = nestvirt_snapshot()
    inputs = image_inputs(kernel, python, sources)
    key = image_key(inputs)
    directory = cache / "images" / key
    if (directory / "manifest.json").exists():
        return _image(directory, key, kernel, built=False, started=started)
    say(f"building the lab image {key} ({kernel.origin}, Python {python.version})")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{key}-") as tmp:
        work = Path(tmp)
        entries = initramfs_entries(kernel, python, sources, work / "staging")
        archive = cpio.gzip_bytes(cpio.write_cpio(entries))
        out = work / "image"
        out.mkdir()
        (out / "initrd.gz").write_bytes(archive)
        bzimage = kernel.vmlinuz.read_bytes()
        elf = pvh_vmlinux(bzimage)
        (out / "vmlinuz").write_bytes(elf if elf is not None else bzimage)
        manifest = {
            "key": key,
            "inputs": inputs,
            "origin": kernel.origin,
            "files": len(entries),
            "initrd_sha256": hashlib.sha256(archive).hexdigest(),
            "kernel_format": "pvh-elf" if elf is not None else "bzImage",
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(out, directory)
        except OSError:
            if not (directory / "manifest.json").exists():  # not a concurrent build: a real error
                raise
    return _image(directory, key, kernel, built=True, started=started)


def _image(directory: Path, key: str, kernel: Kernel, *, built: bool, started: float) -> Image:
    size = (directory / "initrd.gz").stat().st_size + (directory / "vmlinuz").stat().st_size
    return Image(key, directory, kernel, built, time.monotonic() - started, size)
