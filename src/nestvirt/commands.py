"""Commands nestvirt prints for people to paste: quoted for their shell, one place.

`nestvirt …` and `virsh …` lines are POSIX shell words (shlex.quote); a VM name
that starts with "-" goes after `--` (nestvirt) or `--domain` (virsh), so it is
never read as an option. PowerShell lines use nestvirt.backends.hyperv_ps.ps_quote.
"""

from __future__ import annotations

import shlex

DEFAULT_URI = "qemu:///system"


def quote(word: str) -> str:
    return shlex.quote(word)


def connect_option(uri: str | None) -> str:
    """' -c URI' when `uri` is not libvirt's default for nestvirt, else ''."""
    if not uri or uri == DEFAULT_URI:
        return ""
    return f" -c {quote(uri)}"


def nestvirt(subcommand: str, vm: str, *options: str, uri: str | None = None) -> str:
    """`nestvirt SUBCOMMAND [-c URI] [OPTIONS] [--] VM`, every word quoted."""
    words = [f"nestvirt {subcommand}{connect_option(uri)}", *options]
    if vm.startswith("-"):
        words.append("--")
    words.append(quote(vm))
    return " ".join(words)


def virsh(subcommand: str, vm: str, *args: str, uri: str | None = None) -> str:
    """`virsh [-c URI] SUBCOMMAND --domain VM [ARGS]`, every word quoted."""
    return " ".join([f"virsh{connect_option(uri)} {subcommand} --domain {quote(vm)}", *args])
