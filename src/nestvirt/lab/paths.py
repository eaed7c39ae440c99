"""Where the lab keeps things (the only places it writes, with libvirt's image directory).

- cache (regenerable, safe to delete): the kernel package, the kernel and modules
  taken from it, and the built images, one directory per input hash.
  root: /var/cache/nestvirt/lab; others: $XDG_CACHE_HOME/nestvirt/lab (~/.cache/…).
- state (worth keeping between runs): the `--accel auto` boot-test verdict for
  this host boot, the console logs of runs kept with `--keep`.
  root: /var/lib/nestvirt/lab; others: $XDG_STATE_HOME/nestvirt/lab (~/.local/state/…).
- libvirt (runs through libvirt only): a per-run copy of kernel and initramfs
  and the serial log, in a `nestvirt-lab-…` directory of libvirt's image
  directory, so libvirt's relabelling never touches the shared cache.

NESTVIRT_LAB_CACHE / NESTVIRT_LAB_STATE override the first two (tests).
"""

from __future__ import annotations

import os
from pathlib import Path

LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")


def _xdg(variable: str, default: str) -> Path:
    value = os.environ.get(variable)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / default


def cache_dir() -> Path:
    if override := os.environ.get("NESTVIRT_LAB_CACHE"):
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/nestvirt/lab")
    return _xdg("XDG_CACHE_HOME", ".cache") / "nestvirt" / "lab"


def state_dir() -> Path:
    if override := os.environ.get("NESTVIRT_LAB_STATE"):
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/lib/nestvirt/lab")
    return _xdg("XDG_STATE_HOME", ".local/state") / "nestvirt" / "lab"
