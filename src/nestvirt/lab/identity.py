"""Boot the lab VM with a parent's firmware identity and ask it who runs it.

QEMU's `-smbios type=0/1/3,…` sets the BIOS vendor, system manufacturer and
product, and the chassis asset tag the guest reads from `/sys/class/dmi/id`:
the strings clouds and desktop hypervisors put there. The guest (TCG, direct
QEMU, kernel option `nestvirt.lab=guestside`) runs `python -m nestvirt.guestside`
and prints its `nestvirt.guestside/1` document on the console. Under TCG the
CPUID signature stays `TCGTCGTCGTCG`: the guest names the DMI parent and says
the identity does not match the emulated CPU. Identity "tcg" is the plain lab VM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from nestvirt.errors import UsageError
from nestvirt.lab import boot, domain, image

IDENTITY_TIMEOUT_S = 60.0

# name -> (-smbios entries, the parent kind the guest must name). Values as the vendors
# ship them; a comma inside a value is doubled (QEMU's option syntax).
IDENTITIES: dict[str, tuple[tuple[str, ...], str]] = {
    "aws": (
        (
            "type=0,vendor=Amazon EC2",
            "type=1,manufacturer=Amazon EC2,product=m5.large",
            "type=3,manufacturer=Amazon EC2,asset=Amazon EC2",
        ),
        "aws",
    ),
    "gce": (
        (
            "type=0,vendor=Google",
            "type=1,manufacturer=Google,product=Google Compute Engine",
            "type=3,manufacturer=Google",
        ),
        "gcp",
    ),
    "vmware": (
        (
            "type=0,vendor=Phoenix Technologies LTD",
            "type=1,manufacturer=VMware,, Inc.,product=VMware Virtual Platform",
            "type=3,manufacturer=No Enclosure",
        ),
        "vmware",
    ),
    "virtualbox": (
        (
            "type=0,vendor=innotek GmbH",
            "type=1,manufacturer=innotek GmbH,product=VirtualBox",
            "type=3,manufacturer=Oracle Corporation",
        ),
        "virtualbox",
    ),
    "azure": (
        (
            "type=0,vendor=Microsoft Corporation",
            "type=1,manufacturer=Microsoft Corporation,product=Virtual Machine",
            "type=3,manufacturer=Microsoft Corporation,asset=7783-7084-3265-9085-8269-3286-77",
        ),
        "azure",
    ),
    "tcg": ((), "tcg"),
}


def boot_identity(
    name: str,
    *,
    timeout: float = IDENTITY_TIMEOUT_S,
    kernel: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any] | None, boot.BootOutcome]:
    """Boot the lab VM (TCG, QEMU directly) as `name`; its guestside document, or None."""
    if name not in IDENTITIES:
        raise UsageError(f"--identity {name}: choose one of {', '.join(IDENTITIES)}")
    entries, _kind = IDENTITIES[name]
    img = image.ensure_image(kernel, progress)
    spec = domain.LabSpec(
        f"nestvirt-lab-{name}-{os.getpid()}", "tcg", None, img.vmlinuz, img.initrd, None,
        guestside=True,
    )  # fmt: skip
    outcome = boot.boot_direct(domain.base_xml(spec), timeout, lambda _e: None, smbios=entries)
    return outcome.report, outcome
