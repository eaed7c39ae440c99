"""Read libvirt domains into LibvirtVmFacts. Read-only: writes live in libvirt_write.py.

libvirt and lxml are imported here only, so commands that never touch
libvirt do not pay for them.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from nestvirt.endpoint import DEFAULT_URI
from nestvirt.errors import ConnectError, NotFound, PermissionRequired
from nestvirt.facts.libvirt_vm import (
    DomainXml,
    Interface,
    LibvirtVmFacts,
    cpu_features_of,
    read_domain_parts,
)
from nestvirt.guestcpu import LIBVIRT, QEMU_DEFAULT_MODEL, GuestCpu
from nestvirt.model import Unknown
from nestvirt.nwfilter_derive import ANTI_SPOOFING
from nestvirt.vocabulary import HOST_CPU_MODES

if TYPE_CHECKING:
    import libvirt as libvirt_t

    from nestvirt.qemu_cpu import QemuCpuOracle

T = TypeVar("T")


# virDomainState numbers → the words of the status/1 contract.
_STATES = {
    0: "unknown",
    1: "running",
    2: "running",  # blocked: running, waiting on a resource
    3: "paused",
    4: "shutting-down",
    5: "off",
    6: "crashed",
    7: "suspended",
}

# Filters that drop frames whose source MAC or IP is not the interface's own.
_MAC_SPOOF_FILTERS = ANTI_SPOOFING


@cache
def _libvirt() -> Any:
    import libvirt

    # libvirt prints every error to stderr by default; we report errors ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def uri_host(uri: str) -> str | None:
    """The host a libvirt URI names; None for this machine (qemu:///system, test:///default)."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(uri).hostname
    except ValueError:  # malformed: never take it for this machine
        return uri


def open_connection(uri: str | None, *, readonly: bool = False) -> libvirt_t.virConnect:
    """Open a libvirt connection or raise ConnectError with libvirt's own reason."""
    lv = _libvirt()
    target = uri or DEFAULT_URI
    try:
        conn = lv.openReadOnly(target) if readonly else lv.open(target)
    except lv.libvirtError as exc:
        reason = exc.get_error_message() or str(exc)
        if exc.get_error_code() == lv.VIR_ERR_AUTH_FAILED or "ermission denied" in reason:
            raise PermissionRequired(f"cannot open {target}: {reason}") from exc
        raise ConnectError(f"cannot connect to {target}: {reason}") from exc
    if conn is None:
        raise ConnectError(f"cannot connect to {target}")
    return conn


@contextmanager
def connection(uri: str | None, *, readonly: bool = False) -> Iterator[libvirt_t.virConnect]:
    conn = open_connection(uri, readonly=readonly)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except _libvirt().libvirtError:
            pass


def lookup_domain(conn: libvirt_t.virConnect, name: str) -> libvirt_t.virDomain:
    lv = _libvirt()
    try:
        return conn.lookupByName(name)
    except lv.libvirtError as exc:
        if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"no VM named {name!r} on {conn.getURI()}") from exc
        raise ConnectError(f"cannot look up {name!r}: {exc.get_error_message()}") from exc


def list_domains(conn: libvirt_t.virConnect) -> list[libvirt_t.virDomain]:
    return sorted(conn.listAllDomains(0), key=lambda d: d.name())


def inactive_xml(dom: libvirt_t.virDomain) -> str:
    """The persistent definition, as `virsh dumpxml --inactive` prints it."""
    lv = _libvirt()
    flags = lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE
    denied = _SECURE_DENIED.get(dom.connect(), False)
    if not denied:
        try:
            return str(dom.XMLDesc(flags))
        except lv.libvirtError as exc:  # read-only connections may not see secure data
            if exc.get_error_code() != lv.VIR_ERR_OPERATION_DENIED:
                raise
            _SECURE_DENIED[dom.connect()] = True  # asked once per connection, not per domain
    return str(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))


def domain_state(dom: libvirt_t.virDomain) -> str:
    state = _STATES.get(dom.state()[0], "unknown")
    if state == "off" and _has_managed_save(dom) is True:
        return "saved"
    return state


@dataclass(frozen=True, slots=True)
class Fetched:
    """What libvirt said about one domain, fetched ahead (see `all_vm_facts`)."""

    xml: str
    live_xml: str | None
    state: str
    has_managed_save: bool | Unknown
    snapshot_count: int | Unknown


def vm_facts(
    conn: libvirt_t.virConnect, dom: libvirt_t.virDomain, fetched: Fetched | None = None
) -> LibvirtVmFacts:
    """Everything the VM rules read, from the inactive (and live) definition."""
    if fetched is None:
        running = dom.isActive() == 1
        managed_save = _has_managed_save(dom)
        state = _STATES.get(dom.state()[0], "unknown")
        fetched = Fetched(
            xml=inactive_xml(dom),
            live_xml=str(dom.XMLDesc(0)) if running else None,
            state="saved" if state == "off" and managed_save is True else state,
            has_managed_save=managed_save,
            snapshot_count=_snapshot_count(dom),
        )
    read, root = _read(fetched)
    return _assemble(conn, dom, fetched, read, root)


@dataclass(frozen=True, slots=True)
class _Read:
    """What a domain's definitions say by themselves: read_domain_xml, the key of its
    guest CPU's answer (guest_cpu), its interfaces before their nwfilters are followed."""

    domain: DomainXml
    cpu_key: tuple[Any, ...]
    interfaces: tuple[
        tuple[str | None, str, str | None, str | None], ...
    ]  # mac, type, source, filter
    live_features: dict[str, str] | None


def _read(fetched: Fetched) -> tuple[_Read, Any]:
    """The parse of one domain (no libvirt call): the _Read and the parsed inactive XML."""
    root = _parse(fetched.xml)
    live_features = None
    if fetched.live_xml is not None:
        live_features = cpu_features_of(_parse(fetched.live_xml))
    domain, first = read_domain_parts(root)
    interfaces = []
    for iface in root.findall("devices/interface"):
        ref = iface.find("filterref")
        source = iface.find("source")
        source_name = None
        if source is not None:
            source_name = next(
                (source.get(k) for k in ("network", "bridge", "dev", "name") if source.get(k)),
                None,
            )
        mac = iface.find("mac")
        interfaces.append(
            (
                None if mac is None else mac.get("address"),
                iface.get("type", ""),
                source_name,
                None if ref is None else ref.get("filter"),
            )
        )
    read = _Read(domain, _guest_cpu_key(root, first), tuple(interfaces), live_features)
    return read, root


def _assemble(
    conn: libvirt_t.virConnect, dom: libvirt_t.virDomain, fetched: Fetched, read: _Read, root: Any
) -> LibvirtVmFacts:
    """The facts of a read domain, with the connection's answers (each asked once).
    `root`: a parsed definition with the guest CPU of `read` (any domain of that key)."""
    domain = read.domain
    vendor, extensions = host_cpu(conn)
    return LibvirtVmFacts(
        name=domain.name or dom.name(),  # <name> is the domain's name (no call into libvirt)
        uri=_uri(conn),
        state=fetched.state,
        domain_type=domain.domain_type,
        host_cpu_vendor=vendor,
        host_virt_extensions=extensions,
        cpu_mode=domain.cpu_mode,
        cpu_model=domain.cpu_model,
        cpu_features=domain.cpu_features,
        guest_cpu=_once(conn, read.cpu_key, lambda: _guest_cpu(conn, root, domain)),
        live_cpu_features=read.live_features,
        memory_kib=domain.memory_kib,
        current_memory_kib=domain.current_memory_kib,
        max_memory_kib=domain.max_memory_kib,
        virtio_mem_devices=domain.virtio_mem_devices,
        balloon_model=domain.balloon_model,
        interfaces=tuple(_interface(conn, *i) for i in read.interfaces),
        has_managed_save=fetched.has_managed_save,
        snapshot_count=fetched.snapshot_count,
        host_kvm=host_kvm(conn),
    )


def _parse(xml: str) -> Any:
    """A domain's XML as libvirt gives it (a str without an encoding declaration: parsed
    as it is, no encode() of every definition first)."""
    from lxml import etree

    try:
        return etree.fromstring(xml)
    except ValueError:  # "Unicode strings with encoding declaration are not supported"
        return etree.fromstring(xml.encode())


# Threads fetching domain XML at once: libvirt-python drops the GIL while it waits, the
# remote driver keeps several calls in flight on one connection, libvirtd answers them
# with its worker pool (20 by default).
FETCH_WORKERS = 8


def all_vm_facts(
    conn: libvirt_t.virConnect,
    domains: list[libvirt_t.virDomain],
    *,
    workers: int = FETCH_WORKERS,
) -> Iterator[LibvirtVmFacts]:
    """vm_facts for many domains, with batched libvirt calls where libvirt has them;
    yielded in the order of `domains` as they are read, so the caller judges the first
    while the rest are still fetched.

    State, managed-save images and snapshot presence come from three calls for all the
    domains (domainListGetStats, listAllDomains with filters); each domain's XML is one
    call, made by a small thread pool. A domain undefined meanwhile is left out."""
    from collections import deque

    lv = _libvirt()
    if not domains:
        return
    # `answers` asks what is asked once: the three batched calls (while the pool already
    # fetches the XML), the capabilities, and then, as soon as a domain needs them, the
    # guest CPU of each distinct definition and each nwfilter chain, side by side; a
    # domain is read while the pool still fetches the ones after it, and its facts are
    # yielded (in order) once its answers are in.
    answers = _Workers(ANSWER_WORKERS)
    fetching = None
    limit = CALL_TIMEOUTS.get(conn)
    stalled = False
    try:
        batched_states = answers.submit(_batched_states, conn, domains)
        managed_saves = answers.submit(_uuids_listed, conn, lv.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
        snapshots = answers.submit(_uuids_listed, conn, lv.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)
        for ask in (host_cpu, host_kvm, _uri):
            answers.submit(ask, conn)

        def fetch(dom: libvirt_t.virDomain) -> Fetched | None:
            key = dom.UUIDString()
            try:
                xml = inactive_xml(dom)
                raw = batched_states.result().get(key)
                if raw is None:
                    raw = dom.state()[0]
                state = _STATES.get(raw, "unknown")
                running = raw not in (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_CRASHED)
                if raw == lv.VIR_DOMAIN_CRASHED:
                    running = dom.isActive() == 1
                saved, with_snapshots = managed_saves.result(), snapshots.result()
                managed: bool | Unknown = _has_managed_save(dom) if saved is None else key in saved
                if with_snapshots is None:
                    count: int | Unknown = _snapshot_count(dom)
                else:
                    count = _snapshot_count(dom) if key in with_snapshots else 0
                return Fetched(
                    xml=xml,
                    live_xml=str(dom.XMLDesc(0)) if running else None,
                    state="saved" if state == "off" and managed is True else state,
                    has_managed_save=managed,
                    snapshot_count=count,
                )
            except lv.libvirtError as exc:
                if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                    return None  # undefined while we looked
                raise

        waiting: deque[tuple[libvirt_t.virDomain, Fetched, _Read, Any]] = deque()
        roots: dict[tuple[Any, ...], Any] = {}  # a parsed definition for each guest-CPU key
        filters: set[str] = set()
        fetching = _Workers(max(1, min(workers, len(domains))))
        jobs = [fetching.submit(fetch, dom) for dom in domains]
        for dom, job in zip(domains, jobs, strict=True):
            fetched = job.result(limit)
            if fetched is None:
                continue
            read, root = _read(fetched)
            if read.cpu_key not in roots:
                roots[read.cpu_key] = root
                answers.submit(_once, conn, read.cpu_key, _asker(conn, root, read.domain))
            for *_, top in read.interfaces:
                if top and top not in filters:
                    filters.add(top)
                    answers.submit(_filter_chain, conn, top)
            waiting.append((dom, fetched, read, roots[read.cpu_key]))
            while waiting and _answered(conn, waiting[0][2]):
                yield _assemble(conn, *waiting.popleft())
        while waiting:
            yield _assemble(conn, *waiting.popleft())
    except _Stalled:
        stalled = True
        raise
    finally:  # also when the caller stops early: what is not started yet is dropped
        if fetching is not None:
            fetching.close(wait=not stalled)
        answers.close(wait=not stalled)


class _Job:
    """One call run by _Workers; result() waits for it (and raises what it raised)."""

    __slots__ = ("_args", "_call", "_done", "_error", "_started", "_value")

    def __init__(self, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._call, self._args = call, args
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._started: float | None = None

    def run(self, dropped: bool) -> None:
        self._started = time.monotonic()
        try:
            if dropped:
                raise RuntimeError("dropped: the caller stopped waiting")
            self._value = self._call(*self._args)
        except BaseException as exc:  # handed to whoever waits in result()
            self._error = exc
        finally:
            self._args = ()
            self._done.set()

    def result(self, limit: float | None = None) -> Any:
        """The call's value; with `limit`, ConnectError once the call has run that long
        unanswered (a call queued behind others is not timed until it starts)."""
        while not self._done.wait(None if limit is None else min(0.25, limit)):
            started = self._started
            if limit is not None and started is not None and time.monotonic() - started > limit:
                raise _Stalled(
                    f"libvirt: no answer from the daemon for {limit:g} s (libvirtd stopped "
                    "answering for longer than --timeout)"
                )
        if self._error is not None:
            raise self._error
        return self._value


class _Stalled(ConnectError):
    """A call all_vm_facts waited for longer than the connection's --timeout."""


class _Workers:
    """A few threads running submitted calls in turn: what all_vm_facts needs of
    concurrent.futures, without importing it (it imports logging and more: milliseconds
    of every status run's start)."""

    def __init__(self, count: int) -> None:
        import queue

        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name="nestvirt-libvirt-fetch", daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[..., Any], *args: Any) -> _Job:
        job = _Job(call, args)
        self._jobs.put(job)
        return job

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run(dropped=self._closed)

    def close(self, *, wait: bool = True) -> None:
        """Drop the jobs not started yet, wait for the running ones (unless `wait` is
        False: a stalled call may never return), end the threads."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _answered(conn: libvirt_t.virConnect, read: _Read) -> bool:
    """Whether _assemble(read) would find every answer it needs asked already."""
    answers = _ANSWERS.get(conn)
    if answers is None:
        return False
    keys = [("host-cpu",), ("host-kvm",), ("uri",), read.cpu_key]
    keys += [("filter-chain", top) for *_, top in read.interfaces if top]
    return all(k in answers for k in keys)


# Threads asking the once-per-connection questions of all_vm_facts side by side.
ANSWER_WORKERS = 4


def _asker(conn: libvirt_t.virConnect, root: Any, domain: DomainXml) -> Callable[[], GuestCpu]:
    return lambda: _guest_cpu(conn, root, domain)


def _batched_states(
    conn: libvirt_t.virConnect, domains: list[libvirt_t.virDomain]
) -> dict[str, int]:
    """UUID → virDomainState for `domains` in one call ({} when the driver lacks it)."""
    lv = _libvirt()
    try:
        stats = conn.domainListGetStats(domains, lv.VIR_DOMAIN_STATS_STATE, 0)
    except lv.libvirtError:
        return {}
    return {dom.UUIDString(): int(values.get("state.state", 0)) for dom, values in stats}


def _uuids_listed(conn: libvirt_t.virConnect, flag: int) -> set[str] | None:
    """UUIDs of the domains listAllDomains(flag) returns; None when the driver refuses."""
    lv = _libvirt()
    try:
        return {d.UUIDString() for d in conn.listAllDomains(flag)}
    except lv.libvirtError:
        return None


def _host_cpu_from_caps(caps: str) -> tuple[str | None, tuple[str, ...]]:
    from lxml import etree

    cpu = etree.fromstring(caps.encode()).find("host/cpu")
    if cpu is None:
        return None, ()
    vendor = cpu.findtext("vendor")
    names = {f.get("name") for f in cpu.findall("feature")}
    return vendor, tuple(sorted(n for n in names if n in ("vmx", "svm")))


# What a connection's capabilities say does not change while it is open: each
# answer is asked once per connection, not once per domain.
_ANSWERS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
# How long a call on a connection may go unanswered (libvirt_session.open_connection's
# --timeout): all_vm_facts gives up on a call its workers wait for longer than that, in
# case libvirt's keepalive does not end it (calls from several threads at once)
CALL_TIMEOUTS: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_SECURE_DENIED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


_KEY_LOCKS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], threading.Lock]] = (
    weakref.WeakKeyDictionary()
)
_LOCKS_LOCK = threading.Lock()


def _once(conn: libvirt_t.virConnect, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """compute() once per connection and key, also when all_vm_facts' workers ask at once
    (the others wait for the first). An answer never waits on one that waits on it: the
    guest CPU asks the URI, the translator and the host CPU, which ask nothing."""
    answers = _ANSWERS.setdefault(conn, {})
    if key in answers:
        return cast(T, answers[key])
    with _LOCKS_LOCK:
        lock = _KEY_LOCKS.setdefault(conn, {}).setdefault(key, threading.Lock())
    with lock:
        if key not in answers:
            answers[key] = compute()
    return cast(T, answers[key])


def _expanded_extensions(conn: libvirt_t.virConnect, cpu_xml: str) -> tuple[str, ...]:
    """vmx/svm in a CPU definition expanded to every feature (raises libvirtError)."""
    lv = _libvirt()
    expanded = conn.baselineCPU([cpu_xml], lv.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
    return tuple(n for n in ("vmx", "svm") if f"name='{n}'" in (expanded or ""))


def host_cpu(conn: libvirt_t.virConnect) -> tuple[str | None, tuple[str, ...]]:
    """The host CPU vendor and its vmx/svm, as the connection's capabilities report it.

    Capabilities list features beyond the named model only, so the model is
    expanded through baselineCPU to see every feature.
    """
    return _once(conn, ("host-cpu",), lambda: _host_cpu(conn))


def host_kvm(conn: libvirt_t.virConnect) -> bool | None:
    """Whether the connection's capabilities offer KVM domains (None: could not ask)."""

    def ask() -> bool | None:
        try:
            return "<domain type='kvm'" in str(conn.getCapabilities())
        except _libvirt().libvirtError:
            return None

    return _once(conn, ("host-kvm",), ask)


def _host_cpu(conn: libvirt_t.virConnect) -> tuple[str | None, tuple[str, ...]]:
    caps = str(conn.getCapabilities())
    vendor, extensions = _host_cpu_from_caps(caps)
    if extensions:
        return vendor, extensions
    start, end = caps.find("<cpu>"), caps.find("</cpu>")
    if start < 0 or end < 0:
        return vendor, ()
    try:
        return vendor, _expanded_extensions(conn, caps[start : end + len("</cpu>")])
    except _libvirt().libvirtError:
        return vendor, ()


# ------------------------------------------------------------ the guest CPU


# QemuCpuOracle is not thread-safe: all_vm_facts' workers make and ask it one at a time.
_ORACLE_LOCK = threading.Lock()


@cache
def oracle() -> QemuCpuOracle:
    """This process's QEMU oracle; its QEMUs quit and its cache is saved at exit."""
    import atexit

    from nestvirt.qemu_cpu import QemuCpuOracle

    answers = QemuCpuOracle()
    atexit.register(answers.close)
    return answers


def guest_cpu(
    conn: libvirt_t.virConnect, root: Any, domain: DomainXml, first: dict[str, Any] | None = None
) -> GuestCpu:
    """What the guest CPU of this definition gets (nestvirt.guestcpu): QEMU's answer on
    a local connection, the table otherwise or when QEMU cannot be asked. `domain` and
    `first` are `root` as read_domain_parts reads it."""
    if first is None:
        first = read_domain_parts(root)[1]
    return _once(conn, _guest_cpu_key(root, first), lambda: _guest_cpu(conn, root, domain))


def _guest_cpu_key(root: Any, first: dict[str, Any]) -> tuple[Any, ...]:
    """The parts _cpu_query_xml copies, as nested tuples (no copy, no serialisation per
    domain: lxml's tostring lets go of the GIL, and winning it back from the fetching
    threads costs more than the tuples)."""
    os_node = first.get("os")
    types = [] if os_node is None else [t for t in os_node if t.tag == "type"]
    nodes = (*types, first.get("features"), first.get("cpu"), first.get("devices/emulator"))
    return ("guest-cpu", root.get("type", "kvm"), len(types), *map(_element_key, nodes))


def _element_key(node: Any) -> tuple[Any, ...] | None:
    """An element as a tuple: equal tuples, equal elements (but for whitespace between
    children, which says nothing to libvirt)."""
    if node is None:
        return None
    return (node.tag, tuple(node.attrib.items()), node.text, tuple(map(_element_key, node)))


def _guest_cpu(conn: libvirt_t.virConnect, root: Any, domain: DomainXml) -> GuestCpu:
    why = "a remote host's QEMU cannot be run from here"
    if uri_host(_uri(conn)) is None:
        argv = _qemu_argv(conn, _cpu_query_xml(root))
        if isinstance(argv, Refused):
            vendor = host_cpu(conn)[0]
            return GuestCpu((), vendor, LIBVIRT, "domxml-to-native", refused=argv.reason)
        if isinstance(argv, str):
            why = argv
        else:
            emulator, accel, cpu_arg = argv
            with _ORACLE_LOCK:
                answer = oracle().expand(emulator, accel, cpu_arg)
            if not isinstance(answer, str):
                return answer
            why = answer
    return _table(conn, domain, why)


def _table(conn: libvirt_t.virConnect, domain: DomainXml, why: str) -> GuestCpu:
    from nestvirt.guestcpu import table_answer

    vendor, extensions = host_cpu(conn)
    return table_answer(
        domain,
        host_vendor=vendor,
        host_extensions=extensions,
        model_vendor=_model_vendor(conn, domain.domain_type, domain.cpu_mode, domain.cpu_model),
        why=why,
    )


def _uri(conn: libvirt_t.virConnect) -> str:
    """The connection's URI, asked of libvirt once."""
    return _once(conn, ("uri",), lambda: str(conn.getURI()))


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


def _cpu_query_xml(root: Any) -> Any:
    """The parts of a definition that decide QEMU's -cpu: type, os, features, cpu, emulator."""
    from copy import deepcopy

    from lxml import etree

    query = etree.Element("domain", type=root.get("type", "kvm"))
    etree.SubElement(query, "name").text = "nestvirt-cpu-query"
    etree.SubElement(query, "memory", unit="MiB").text = "64"
    for tag in ("os", "features", "cpu"):
        node = root.find(tag)
        if node is not None:
            kept = deepcopy(node)
            if tag == "os":  # boot files and loaders do not change the CPU
                for child in list(kept):
                    if child.tag != "type":
                        kept.remove(child)
            query.append(kept)
    emulator = root.find("devices/emulator")
    devices = etree.SubElement(query, "devices")
    if emulator is not None:
        devices.append(deepcopy(emulator))
    return query


def _qemu_argv(conn: libvirt_t.virConnect, query: Any) -> tuple[str, str, str] | Refused | str:
    """(emulator, accel, -cpu argument) libvirt would run; Refused: libvirt will not run
    this CPU here; a str: why libvirt could not be asked."""
    import shlex

    from lxml import etree

    lv = _libvirt()
    try:
        native = _translator(conn).domainXMLToNative("qemu-argv", etree.tostring(query).decode(), 0)
    except lv.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        # errors that say nothing about the domain: the driver (test:///default) or the
        # caller cannot ask, or the connection broke
        cannot_ask = (lv.VIR_ERR_NO_SUPPORT, lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_SYSTEM_ERROR,
                      lv.VIR_ERR_OPERATION_DENIED)  # fmt: skip
        if exc.get_error_code() in cannot_ask:
            return f"libvirt cannot build the command line here: {message}"
        return Refused(message)
    try:
        argv = parse_qemu_argv(shlex.split(native))
    except ValueError:
        argv = None
    return argv or f"unreadable QEMU command line from libvirt: {native[:80]!r}"


def _translator(conn: libvirt_t.virConnect) -> libvirt_t.virConnect:
    """A connection allowed to build command lines: libvirt denies read-only ones, so a
    read-only `conn` (status, preflight) gets a read-write sibling used for that alone."""
    # never store `conn` itself: a value that refers to its weak key keeps it open forever
    sibling = _once(conn, ("translator",), lambda: _read_write_sibling(conn))
    return conn if sibling is None else sibling


def _read_write_sibling(conn: libvirt_t.virConnect) -> libvirt_t.virConnect | None:
    lv = _libvirt()
    if str(conn.getType()) != "QEMU":  # only QEMU drivers build QEMU command lines
        return None
    try:
        conn.domainXMLToNative("qemu-argv", "<domain/>", 0)
    except lv.libvirtError as exc:
        if exc.get_error_code() != lv.VIR_ERR_OPERATION_DENIED:
            return None
    else:
        return None
    try:
        sibling = lv.open(str(conn.getURI()))
    except lv.libvirtError:
        return None
    if sibling is None:
        return None
    import atexit

    atexit.register(_close_quietly, sibling)
    return sibling


def _close_quietly(conn: libvirt_t.virConnect) -> None:
    try:
        conn.close()
    except _libvirt().libvirtError:
        pass


def parse_qemu_argv(words: list[str]) -> tuple[str, str, str] | None:
    """(emulator, accel, cpu) from a QEMU command line (env assignments first)."""
    import itertools
    import re

    assignment = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
    rest = list(words)
    while rest and assignment.match(rest[0]):
        rest.pop(0)
    if not rest:
        return None
    emulator = rest[0]
    accel, cpu = None, QEMU_DEFAULT_MODEL
    for flag, value in itertools.pairwise(rest):
        if flag == "-accel":
            accel = value.split(",")[0]
        elif flag == "-machine" and accel is None:
            for part in value.split(","):
                if part.startswith("accel="):
                    accel = part[len("accel=") :].split(":")[0]
        elif flag == "-cpu":
            cpu = value
    return emulator, accel or "tcg", cpu


def _model_vendor(
    conn: libvirt_t.virConnect, virt_type: str, mode: str | None, model: str | None
) -> str | None:
    """The CPUID vendor of a named model, from domain capabilities (for the table)."""
    if mode in HOST_CPU_MODES:
        return None
    name = (model or QEMU_DEFAULT_MODEL).strip()
    kind = virt_type or "kvm"
    vendors = _once(conn, ("model-vendors", kind), lambda: _model_vendors(conn, kind))
    vendor = vendors.get(name, "unknown")
    return None if vendor == "unknown" else vendor


def _model_vendors(conn: libvirt_t.virConnect, virt_type: str) -> dict[str, str]:
    from lxml import etree

    lv = _libvirt()
    try:
        caps = conn.getDomainCapabilities(None, "x86_64", None, virt_type, 0)
    except lv.libvirtError:
        return {}
    models = etree.fromstring(caps.encode()).findall("cpu/mode[@name='custom']/model")
    return {(m.text or "").strip(): m.get("vendor", "unknown") for m in models}


def _interface(
    conn: libvirt_t.virConnect, mac: str | None, kind: str, source: str | None, top: str | None
) -> Interface:
    chain: tuple[str, ...] = ()
    blocks: bool | Unknown = False
    xml: tuple[tuple[str, str], ...] = ()
    if top:
        chain, blocks, xml = _filter_chain(conn, top)
    return Interface(
        mac=mac,
        kind=kind,
        source=source,
        filter=top,
        filter_chain=chain,
        blocks_foreign_mac=blocks,
        filter_xml=xml,
    )


def _filter_chain(
    conn: libvirt_t.virConnect, top: str
) -> tuple[tuple[str, ...], bool | Unknown, tuple[tuple[str, str], ...]]:
    """Follow <filterref> includes from `top`; say whether any filter drops foreign MACs;
    every filter's XML (for `--mac-spoofing`'s derived chain)."""
    return _once(conn, ("filter-chain", top), lambda: _walk_filters(conn, top))


def _walk_filters(
    conn: libvirt_t.virConnect, top: str
) -> tuple[tuple[str, ...], bool | Unknown, tuple[tuple[str, str], ...]]:
    from lxml import etree

    lv = _libvirt()
    texts: list[tuple[str, str]] = []
    seen: list[str] = []
    pending = [top]
    blocks: bool | Unknown = False
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.append(name)
        if name in _MAC_SPOOF_FILTERS:
            blocks = True
        try:
            xml = conn.nwfilterLookupByName(name).XMLDesc(0)
        except lv.libvirtError as exc:
            if blocks is False:
                blocks = Unknown(f"nwfilter {name!r} unreadable: {exc.get_error_message()}")
            continue
        texts.append((name, str(xml)))
        node = etree.fromstring(xml.encode())
        if _drops_foreign_mac(node):
            blocks = True
        pending.extend(
            str(ref.get("filter")) for ref in node.findall("filterref") if ref.get("filter")
        )
    return tuple(seen), blocks, tuple(texts)


def _drops_foreign_mac(filter_root: Any) -> bool:
    """A rule that drops outgoing frames whose source MAC/IP is not the VM's ($MAC, $IP)."""
    for rule_node in filter_root.findall("rule"):
        if rule_node.get("action") not in ("drop", "reject"):
            continue
        if rule_node.get("direction") not in ("out", "inout"):
            continue
        for node in rule_node:
            own = (node.get("srcmacaddr"), node.get("srcipaddr"), node.get("arpsrcmacaddr"),
                   node.get("arpsrcipaddr"))  # fmt: skip
            if node.get("match") == "no" and any(v in ("$MAC", "$IP") for v in own):
                return True
    return False


def _has_managed_save(dom: libvirt_t.virDomain) -> bool | Unknown:
    lv = _libvirt()
    try:
        return bool(dom.hasManagedSaveImage(0))
    except lv.libvirtError as exc:
        return Unknown(f"managed-save check failed: {exc.get_error_message()}")


def _snapshot_count(dom: libvirt_t.virDomain) -> int | Unknown:
    lv = _libvirt()
    try:
        return int(dom.snapshotNum(0))
    except lv.libvirtError as exc:
        return Unknown(f"snapshot count failed: {exc.get_error_message()}")
