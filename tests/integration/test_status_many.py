"""status over many domains (issue 15): the batched, threaded fetch says exactly what
one-domain-at-a-time vm_facts says, and skips nothing. Timing lives in bench/."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import libvirt
import pytest

from nestvirt.backends import libvirt as backend
from nestvirt.backends import libvirt_session as session
from nestvirt.cli import main
from tests.integration.conftest import NO_SVM_CPU, SVM_CPU, domain_xml

COUNT = 200
_CPUS = ("<cpu mode='host-passthrough'/>", "<cpu mode='host-model'/>", SVM_CPU, NO_SVM_CPU, "")
_BALLOONS = ("<memballoon model='virtio'/>", "<memballoon model='none'/>", "")
_FILTERS = ("clean-traffic", "no-mac-spoofing", None)


@pytest.fixture(scope="module")
def many(qemu_conn: libvirt.virConnect) -> Iterator[list[str]]:
    tag = uuid.uuid4().hex[:6]
    names = []
    for i in range(COUNT):
        nwfilter = _FILTERS[i % 3]
        ref = f"<filterref filter='{nwfilter}'/>" if nwfilter else ""
        devices = (
            f"<interface type='network'><source network='default'/>{ref}</interface>"
            + _BALLOONS[(i // 3) % 3]
        )
        name = f"nvtest-many-{i}-{tag}"
        qemu_conn.defineXML(
            domain_xml(
                name,
                type="kvm" if i % 4 == 0 else "qemu",
                memory=128 * (1 + i % 3),
                cpu=_CPUS[i % 5],
                devices=devices,
            )
        )
        names.append(name)
    yield names
    for name in names:
        qemu_conn.lookupByName(name).undefine()


def test_batched_facts_equal_one_by_one(many: list[str]) -> None:
    conn = session.open_connection("qemu:///system", readonly=True)
    try:
        doms = [backend.lookup_domain(conn, n) for n in many]
        batched = list(backend.all_vm_facts(conn, doms))
        one_by_one = [backend.vm_facts(conn, d) for d in doms]
    finally:
        conn.close()
    assert [f.name for f in batched] == many
    assert batched == one_by_one


def test_status_json_lists_every_domain(
    many: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    main(["status", "-c", "qemu:///system", "--json", *many[:50]])
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "nestvirt.status/1"
    assert [vm["name"] for vm in document["vms"]] == many[:50]
    codes = {f["code"] for vm in document["vms"] for f in vm["findings"]}
    assert {"NV-V03", "NV-V04", "NV-V10"} <= codes


def test_a_domain_undefined_meanwhile_is_left_out(qemu_conn: libvirt.virConnect) -> None:
    name = f"nvtest-gone-{uuid.uuid4().hex[:6]}"
    dom = qemu_conn.defineXML(domain_xml(name, type="qemu"))
    conn = session.open_connection("qemu:///system", readonly=True)
    try:
        listed = backend.lookup_domain(conn, name)
        dom.undefine()
        assert list(backend.all_vm_facts(conn, [listed])) == []
    finally:
        conn.close()


def test_a_caller_that_stops_early_leaves_no_fetching_behind(many: list[str]) -> None:
    """The caller judges each VM as it comes; stopping after the first drops the fetches
    not started yet and ends the workers (none left running against a closed connection)."""
    import threading

    conn = session.open_connection("qemu:///system", readonly=True)
    try:
        doms = [backend.lookup_domain(conn, n) for n in many]
        facts = backend.all_vm_facts(conn, doms)
        assert next(facts).name == many[0]
        facts.close()
        workers = [t for t in threading.enumerate() if t.name == "nestvirt-libvirt-fetch"]
        assert workers == []
    finally:
        conn.close()
