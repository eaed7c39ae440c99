"""Commands nestvirt prints for people to paste: quoted for their shell, one place.

`nestvirt …` and `virsh …` lines are POSIX shell words (shlex.quote); a VM name
that starts with "-" goes after `--` (nestvirt) or `--domain` (virsh), so it is
never read as an option. PowerShell lines are one cmdlet with named parameters
(`render_command`), every string a single-quoted literal (`ps_quote`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from nestvirt.endpoint import DEFAULT_URI


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


# PowerShell's tokenizer ends a single-quoted string at any of these five
# characters (ASCII ' and the Unicode quotes it treats alike: U+2018 ‘, U+2019 ’,
# U+201A ‚, U+201B ‛); a pair of them inside the literal stands for one.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_quote(value: str) -> str:
    """`value` as a PowerShell single-quoted literal that evaluates to exactly `value`.

    Inside '…' PowerShell expands nothing (`$()`, backticks, `;` and newlines are
    plain characters); only the quote characters need care, and each is doubled.
    """
    return "'" + "".join(c + c if c in PS_SINGLE_QUOTES else c for c in value) + "'"


def ps_value(value: Any) -> str:
    """A Python value as PowerShell source text: str → '…', bool → $true/$false, int → digits."""
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return ps_quote(value)
    raise TypeError(f"no PowerShell literal for {type(value).__name__}")


def render_command(cmdlet: str, parameters: Mapping[str, Any]) -> str:
    """One cmdlet with named parameters as pasteable text; a None value is a switch.

    Enum-valued parameters (MacAddressSpoofing On) are shown bare when the value is
    a plain identifier, as people type them; anything else is quoted.
    """
    parts = [cmdlet]
    for name, value in parameters.items():
        if value is None:
            parts.append(f"-{name}")
        elif isinstance(value, Bare):
            parts.append(f"-{name} {value.text}")
        else:
            parts.append(f"-{name} {ps_value(value)}")
    return " ".join(parts)


class Bare:
    """A bare enum word for a shown command (`-MacAddressSpoofing On`); sent as its string."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        if not text.isascii() or not text.isalpha():
            raise ValueError(f"not an enum word: {text!r}")
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bare) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Bare({self.text!r})"
