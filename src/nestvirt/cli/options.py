"""Options several commands share, defined once. Imports click and nestvirt.endpoint only
(startup stays fast)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from nestvirt.endpoint import DEFAULT_URI

F = TypeVar("F", bound=Callable[..., Any])

CONNECT_HELP = f"libvirt URI (default: {DEFAULT_URI})."
HYPERV_HELP = "Hyper-V: this Windows machine, or HOST over PowerShell Remoting."


def connect(func: F) -> F:
    """`--connect/-c URI`: the libvirt connection (None: libvirt's default)."""
    return click.option("--connect", "-c", metavar="URI", help=CONNECT_HELP)(func)


def hyperv(
    help: str = HYPERV_HELP, *, metavar: str = "[HOST]", default: str | None = None
) -> Callable[[F], F]:
    """`--hyperv [HOST]`: "" (given without HOST) is this Windows machine; None: not given."""
    return click.option(
        "--hyperv", metavar=metavar, is_flag=False, flag_value="", default=default, help=help
    )


def snapshot(help: str) -> Callable[[F], F]:
    """`--snapshot FILE`: a collected nestvirt.hyperv-snapshot/1."""
    return click.option("--snapshot", metavar="FILE", help=help)


def user(func: F) -> F:
    """`--user`: who logs in over PowerShell Remoting."""
    return click.option(
        "--user",
        default=None,
        help="User for PowerShell Remoting (default: $NESTVIRT_HYPERV_USER, else your Kerberos "
        "identity). The password comes from $NESTVIRT_HYPERV_PASSWORD or a prompt.",
    )(func)


def json_output(help: str) -> Callable[[F], F]:
    """`--json` into the parameter `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def yes(help: str) -> Callable[[F], F]:
    """`--yes/-y`: do not ask before applying."""
    return click.option("--yes", "-y", is_flag=True, help=help)


def combine(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying `decorators` as if stacked in this order (first outermost)."""

    def apply(func: F) -> F:
        for decorate in reversed(decorators):
            func = decorate(func)
        return func

    return apply


def libvirt_timeout(func: F) -> F:
    """`--timeout SECONDS`: how long libvirtd may stay silent (libvirt_session)."""
    return click.option(
        "--timeout",
        type=click.FloatRange(0.1, 3600),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="libvirt: give up when the daemon does not answer for this long.",
    )(func)


def wait(what: str) -> Callable[[F], F]:
    """`--wait SECONDS`: queue behind another nestvirt changing `what` (the VM, the host)."""
    return click.option(
        "--wait",
        type=click.FloatRange(0, 3600),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help=f"If another nestvirt is changing {what}, wait this long for it (then plan afresh).",
    )
