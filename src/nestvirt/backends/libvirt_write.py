"""The only libvirt code that writes: define, discard a managed save, shut down, start.

Policy-free: callers (nestvirt.enable) decide what and when. Every libvirt error
becomes one NestvirtError line; a read-only connection is PermissionRequired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nestvirt.commands import virsh
from nestvirt.errors import ConnectError, NestvirtError, PermissionRequired

if TYPE_CHECKING:
    import libvirt as libvirt_t

SHUTOFF = 5  # VIR_DOMAIN_SHUTOFF


class StopTimeout(NestvirtError):
    """The guest did not power off within the timeout (nothing was changed)."""


def _libvirt() -> Any:
    from nestvirt.backends.libvirt import _libvirt as loaded

    return loaded()


def _fail(what: str, exc: Any) -> NestvirtError:
    lv = _libvirt()
    message = exc.get_error_message() or str(exc)
    if exc.get_error_code() in (lv.VIR_ERR_OPERATION_DENIED, lv.VIR_ERR_AUTH_FAILED) or (
        "read only" in message or "read-only" in message
    ):
        return PermissionRequired(f"cannot {what}: {message} (a read-only connection?)")
    if exc.get_error_code() in (lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_SYSTEM_ERROR):
        return ConnectError(f"cannot {what}: {message}")
    return NestvirtError(f"cannot {what}: {message}")


def define(conn: libvirt_t.virConnect, xml: str) -> libvirt_t.virDomain:
    """Replace the persistent definition in one call (libvirt keeps the old one on error)."""
    lv = _libvirt()
    try:
        return conn.defineXML(xml)
    except lv.libvirtError as exc:
        raise _fail("define the domain", exc) from exc


def managed_save_remove(dom: libvirt_t.virDomain) -> None:
    lv = _libvirt()
    try:
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)
    except lv.libvirtError as exc:
        raise _fail(f"discard the managed-save image of {dom.name()!r}", exc) from exc


def is_off(dom: libvirt_t.virDomain) -> bool:
    return int(dom.state()[0]) == SHUTOFF


def shutdown(
    dom: libvirt_t.virDomain,
    timeout: float,
    *,
    poll: float = 0.25,
    progress: Callable[[str], None] | None = None,
) -> float:
    """Ask the guest to power off (ACPI / agent) and wait until it is off; return seconds.

    On timeout raise StopTimeout, leaving the domain running as it is.
    """
    lv = _libvirt()
    started = time.monotonic()
    if is_off(dom):
        return 0.0
    try:
        dom.shutdown()
    except lv.libvirtError as exc:
        if is_off(dom):
            return time.monotonic() - started
        raise _fail(f"shut down {dom.name()!r}", exc) from exc
    if progress:
        progress(f"waiting up to {timeout:.0f} s for {dom.name()} to shut down")
    while time.monotonic() - started < timeout:
        try:
            if is_off(dom):
                return time.monotonic() - started
        except lv.libvirtError as exc:
            raise _fail(f"read the state of {dom.name()!r}", exc) from exc
        time.sleep(poll)
    raise StopTimeout(
        f"{dom.name()} did not shut down within {timeout:.0f} s (its OS may ignore ACPI "
        f"power-off); nothing was changed: shut it down from inside, or "
        f"`{virsh('destroy', dom.name())}` if that is safe, then run the command again"
    )


def start(dom: libvirt_t.virDomain) -> None:
    lv = _libvirt()
    try:
        dom.create()
    except lv.libvirtError as exc:
        raise _fail(f"start {dom.name()!r}", exc) from exc


def define_nwfilters(conn: libvirt_t.virConnect, filters: list[tuple[str, str]]) -> None:
    """Define network filters (name, XML) unless libvirt has them already with those rules.

    A filter of that name with other rules is redefined under its own UUID (a
    derived filter is shared by every VM behind the same chain, and follows it).
    """
    from lxml import etree

    lv = _libvirt()
    for name, xml in filters:
        wanted = etree.fromstring(xml.encode())
        try:
            existing = conn.nwfilterLookupByName(name)
        except lv.libvirtError:
            existing = None
        if existing is not None:
            current = etree.fromstring(existing.XMLDesc(0).encode())
            uuid = current.find("uuid")
            if uuid is not None:
                current.remove(uuid)
            if etree.tostring(current, method="c14n") == etree.tostring(wanted, method="c14n"):
                continue
            node = etree.SubElement(wanted, "uuid")
            node.text = existing.UUIDString()
            wanted.insert(0, node)
        try:
            conn.nwfilterDefineXML(etree.tostring(wanted, encoding="unicode"))
        except lv.libvirtError as exc:
            raise _fail(f"define nwfilter {name!r}", exc) from exc
