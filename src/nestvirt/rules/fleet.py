"""A libvirt host of a fleet (`nestvirt status` over several URIs) that gave no usable answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from nestvirt.model import Severity
from nestvirt.rules import Hit, Platform, Target, rules_of

host_rule = rules_of(Target.HOST, Platform.LIBVIRT)


@dataclass(frozen=True, slots=True)
class HostAnswer:
    """How one URI of a fleet answered: `problem` None, or why there is no report."""

    uri: str
    problem: str | None  # "unreachable" | "timeout" | "garbage"
    detail: str = ""
    seconds: float = 0.0


_FIXES = {
    "unreachable": "start libvirtd (virtqemud) there, or check the URI, its socket and its "
    "credentials: virsh -c URI version",
    "timeout": "the daemon is hung or overloaded: check it (virsh -c URI list), "
    "or allow more with --timeout",
    "garbage": "what answers on that URI is not a working libvirt daemon: check the URI, "
    "and the daemon's log",
}


@host_rule("NV-H30", "host-unreachable", Severity.ERROR)
def host_unreachable(answer: HostAnswer) -> Iterator[Hit]:
    """A host of the fleet gave no usable answer: nothing is known of it or its VMs.

    ## What it checks
    `nestvirt status` over several libvirt URIs (`--connect` repeated, `--inventory`):
    whether each URI opened, answered within `--timeout` seconds, and returned what a
    libvirt daemon returns.

    ## Why it matters
    A host that cannot be asked is not known to be ready; it is reported in its own row
    so that the other hosts' answers still arrive.

    ## Example
    `qemu:///session?socket=/run/user/1001/libvirt/libvirt-sock` when that user's daemon
    is stopped: "cannot connect … No such file or directory".

    ## Fix
    Start the daemon or correct the URI; for a slow host, raise `--timeout`.

    ## Sources
    libvirt, "Connection URIs" (https://libvirt.org/uri.html); virConnectSetKeepAlive
    (https://libvirt.org/html/libvirt-libvirt-host.html#virConnectSetKeepAlive).
    """
    if answer.problem is None:
        return
    what = {
        "unreachable": "does not answer",
        "timeout": f"gave no complete answer within {answer.seconds:g} s",
        "garbage": "answered, but not with a usable libvirt reply",
    }.get(answer.problem, answer.problem)
    yield Hit(f"{answer.uri} {what}: {answer.detail}", _FIXES.get(answer.problem))
