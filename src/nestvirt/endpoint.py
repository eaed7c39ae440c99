"""Where a command looks: a libvirt URI, a Hyper-V host, or a collected snapshot file.

The `--connect URI`, `--hyperv [HOST]` and `--snapshot FILE` options are parsed here,
once, into an `Endpoint`; status, preflight, enable/disable/undo/history and collect
branch on its type instead of re-checking the options (docs/architecture.md). Pure:
no backend is imported until a command opens the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nestvirt.errors import UsageError

DEFAULT_URI = "qemu:///system"  # libvirt's system instance: the default everywhere


@dataclass(frozen=True, slots=True)
class Libvirt:
    """A libvirt connection; `uri` None is DEFAULT_URI, as the user left it out."""

    uri: str | None = None

    @property
    def target(self) -> str:
        """The URI to open."""
        return self.uri or DEFAULT_URI


@dataclass(frozen=True, slots=True)
class HyperV:
    """A Hyper-V host: this Windows machine (`host` None) or HOST over PowerShell Remoting;
    with `snapshot`, a collected nestvirt.hyperv-snapshot/1 read instead (offline)."""

    host: str | None = None
    snapshot: str | None = None
    user: str | None = None
    # a library caller's (Ansible's) password; the CLI leaves it to the environment or a
    # prompt. Never shown: not in repr, so not in a traceback or a log line.
    password: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A collected snapshot file (Hyper-V or `collect --linux`), read offline."""

    path: str


Endpoint = Libvirt | HyperV | Snapshot

ONE_OF = "use one of --connect, --hyperv and --snapshot"


def parse(
    connect: str | None = None, hyperv: str | None = None, snapshot: str | None = None
) -> Endpoint:
    """The endpoint of status and preflight: at most one of the three options.

    `hyperv` "" (the flag without HOST) is this Windows machine; None: not given.
    """
    if sum(x is not None for x in (connect, hyperv, snapshot)) > 1:
        raise UsageError(ONE_OF)
    if hyperv is not None:
        return HyperV(host=hyperv or None)
    if snapshot is not None:
        return Snapshot(snapshot)
    return Libvirt(connect)


def parse_subject(
    connect: str | None = None,
    hyperv: str | None = None,
    snapshot: str | None = None,
    user: str | None = None,
) -> Endpoint:
    """The endpoint of enable/disable/undo/history: a Hyper-V snapshot is a HyperV endpoint
    (read-only), and `--hyperv --snapshot FILE` names the same thing twice."""
    if hyperv is None and snapshot is None:
        if user is not None:
            raise UsageError("--user is for --hyperv HOST (PowerShell Remoting)")
        return Libvirt(connect)
    if connect is not None:
        raise UsageError("--connect is a libvirt URI: leave it out with --hyperv or --snapshot")
    if hyperv and snapshot:
        raise UsageError("give either --hyperv HOST or --snapshot FILE, not both")
    return HyperV(host=hyperv or None, snapshot=snapshot, user=user)
