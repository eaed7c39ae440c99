"""Real libvirt for integration tests: qemu:///system (libvirtd started by scripts/test.sh)
and test:///default (libvirt's in-process driver, no daemon)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from nestvirt.backends import libvirt as backend

# A CPU TCG can run with svm exposed (the guest's kvm_amd accepts it), and one without.
SVM_CPU = (
    "<cpu mode='custom' match='exact' check='none'><model fallback='allow'>EPYC</model>"
    "<feature policy='require' name='svm'/></cpu>"
)
NO_SVM_CPU = (
    "<cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model>"
    "<feature policy='disable' name='svm'/></cpu>"
)

DOMAIN_TEMPLATE = """<domain type='{type}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <currentMemory unit='MiB'>{current}</currentMemory>
  <vcpu>1</vcpu>
  {extra_top}
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  {cpu}
  <devices>
    {devices}
  </devices>
</domain>"""


def domain_xml(
    name: str,
    *,
    type: str = "kvm",
    memory: int = 4096,
    current: int | None = None,
    cpu: str = "",
    devices: str = "<memballoon model='none'/>",
    extra_top: str = "",
) -> str:
    return DOMAIN_TEMPLATE.format(
        type=type,
        name=name,
        memory=memory,
        current=memory if current is None else current,
        cpu=cpu,
        devices=devices,
        extra_top=extra_top,
    )


@pytest.fixture(scope="session")
def qemu_conn() -> Iterator[object]:
    """qemu:///system; the test command starts libvirtd, so a failure here is a real failure."""
    conn = backend.open_connection("qemu:///system")
    yield conn
    conn.close()


@pytest.fixture()
def define(qemu_conn: object) -> Iterator[Callable[..., object]]:
    """Define domains named nvtest-<prefix>-<random>; undefine them (and their state) after."""
    made: list[object] = []

    def _define(prefix: str, **kwargs: object) -> object:
        name = f"nvtest-{prefix}-{uuid.uuid4().hex[:8]}"
        dom = qemu_conn.defineXML(domain_xml(name, **kwargs))  # type: ignore[attr-defined]
        made.append(dom)
        return dom

    yield _define
    import libvirt

    for dom in made:
        try:
            if dom.isActive():  # type: ignore[attr-defined]
                dom.destroy()  # type: ignore[attr-defined]
            dom.undefineFlags(  # type: ignore[attr-defined]
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
        except libvirt.libvirtError:
            pass


@pytest.fixture()
def test_conn() -> Iterator[object]:
    """A fresh test:///default driver (in-process, state lost on close)."""
    conn = backend.open_connection("test:///default")
    yield conn
    conn.close()
