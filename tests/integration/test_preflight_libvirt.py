"""nestvirt preflight against real libvirtd domains (qemu:///system) and the test driver."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from nestvirt.cli import main
from nestvirt.model import Severity
from nestvirt.preflight import nested_state_capability, preflight
from tests.integration.conftest import NO_SVM_CPU, SVM_CPU

pytestmark = [pytest.mark.libvirt]


@pytest.mark.qemu
def test_running_tcg_domain_exposing_svm(
    define: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    dom = define("preflight", type="qemu", memory=128, cpu=SVM_CPU)
    dom.create()  # type: ignore[attr-defined]
    name = dom.name()  # type: ignore[attr-defined]
    for op in ("migrate", "save", "restore", "snapshot-revert"):
        report = preflight(name, op)
        assert not report.safe, op
        assert "TCG" in report.findings[0].message
    resize = preflight(name, "memory-resize")
    assert resize.safe and resize.findings[0].severity is Severity.WARNING
    assert preflight(name, "save", no_nested_guests=True).safe
    assert main(["preflight", name, "migrate", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nestvirt.preflight/1" and doc["findings"][0]["code"] == "NV-O01"


def test_off_domains_and_domains_without_exposure(define: Callable[..., object]) -> None:
    off = define("preflight", type="qemu", memory=128, cpu=SVM_CPU)
    name = off.name()  # type: ignore[attr-defined]
    save = preflight(name, "save")
    assert save.safe and "nothing to save" in save.findings[0].message
    assert preflight(name, "migrate").safe  # offline: only the definition moves
    assert not preflight(name, "restore").safe  # an image always holds a running VM
    hidden = define("preflight", type="qemu", memory=128, cpu=NO_SVM_CPU)
    assert preflight(hidden.name(), "restore").safe  # type: ignore[attr-defined]


def test_kvm_domain_is_judged_by_this_hosts_capability(define: Callable[..., object]) -> None:
    from nestvirt.backends import libvirt as backend

    dom = define("preflight", type="kvm", memory=128, cpu="<cpu mode='host-passthrough'/>")
    report = preflight(dom.name(), "restore")  # type: ignore[attr-defined]
    cap = nested_state_capability()
    with backend.connection("qemu:///system", readonly=True) as conn:
        offered = backend.host_cpu(conn)[1]
    if not offered:  # the guest gets no vmx/svm (this CI machine): nothing nested to break
        assert report.safe
        assert "offers no" in report.findings[0].message
    elif cap == 0:
        assert not report.safe
        assert "KVM_CAP_NESTED_STATE=0" in report.findings[0].message
    else:
        assert "KVM_CAP_NESTED_STATE" in report.findings[0].message


def test_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preflight", "nvtest-preflight-none", "save"]) == 2
    assert main(["preflight", "x", "save", "--connect", "nosuch:///x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2


def test_test_driver() -> None:
    assert preflight("test", "migrate", connect="test:///default").safe
