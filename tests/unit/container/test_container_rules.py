"""NV-C01…C09 over facts built here, and the lab's failure attribution from libvirt's and
QEMU's real error texts (the NV-C05 text is the one issue 16 quotes from a Debian 12 root)."""

from __future__ import annotations

import dataclasses

from nestvirt import rules
from nestvirt.facts.container import ContainerFacts, KvmNode, qemu_conf_namespaces
from nestvirt.model import Severity, Unknown
from nestvirt.rules import Platform, Target
from nestvirt.rules.container import container_findings, lab_failure, libvirt_cannot_start

MOUNT_ERROR = (
    "libvirt could not start the lab VM: internal error: Process exited prior to exec: "
    "libvirt: error : Failed disable mount propagation out of the root filesystem: "
    "Invalid argument"
)


def facts(**overrides: object) -> ContainerFacts:
    base = ContainerFacts(
        kind="docker", evidence=("/.dockerenv exists",), ci=None, ci_variables=(), ci_detail={},
        kvm=KvmNode(True, True, "0660", 0, 107, "kvm"), kvm_group_gid=107, user="job",
        uid=1000, groups=(1000,), root_is_mount_point=True, libvirt_qemu=True,
    )  # fmt: skip
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def codes(c: ContainerFacts) -> list[str]:
    return [f.code for f in container_findings(c)]


def test_nv_c01_names_the_container_and_its_evidence() -> None:
    (found,) = container_findings(facts())
    assert (found.code, found.severity) == ("NV-C01", Severity.INFO)
    assert "docker" in found.message and "/.dockerenv" in found.message
    assert codes(facts(kind=None, evidence=())) == []


def test_nv_c02_names_the_ci_by_variable_names_only() -> None:
    c = facts(kind=None, ci="GitHub Actions", ci_variables=("GITHUB_ACTIONS", "CI"),
              ci_detail={"RUNNER_ENVIRONMENT": "github-hosted"})  # fmt: skip
    (found,) = container_findings(c)
    assert found.code == "NV-C02" and "GitHub Actions" in found.message
    assert "RUNNER_ENVIRONMENT=github-hosted" in found.message


def test_nv_c03_kvm_not_passed_in_gives_the_runtimes_flag() -> None:
    for kind, flag in (("docker", "--device /dev/kvm"), ("podman", "--device /dev/kvm"),
                       ("kubernetes", "devices.kubevirt.io/kvm"),
                       ("systemd-nspawn", "--bind=/dev/kvm")):  # fmt: skip
        found = [f for f in container_findings(facts(kind=kind, kvm=KvmNode(False)))]
        (c03,) = [f for f in found if f.code == "NV-C03"]
        assert c03.severity is Severity.ERROR and flag in (c03.fix or ""), kind
    assert "privileged" in (
        container_findings(facts(kind="kubernetes", kvm=KvmNode(False)))[1].fix or ""
    )
    # outside a container a missing /dev/kvm is NV-H05's, not a container fix
    assert codes(facts(kind=None, kvm=KvmNode(False))) == []


def test_nv_c04_names_gids_inside_and_outside() -> None:
    c = facts(kind="systemd-nspawn", kvm=KvmNode(True, False, "0660", 0, 107, None),
              kvm_group_gid=993)  # fmt: skip
    (c04,) = [f for f in container_findings(c) if f.code == "NV-C04"]
    assert "0:107" in c04.message and "GID with no name here" in c04.message
    assert "group kvm here is GID 993" in c04.message and "uid 1000" in c04.message
    assert "--group-add 107" in (c04.fix or "")


def test_nv_c04_in_a_ci_job_gives_the_udev_rule() -> None:
    c = facts(kind=None, ci="GitHub Actions", ci_variables=("GITHUB_ACTIONS",),
              kvm=KvmNode(True, False, "0660", 0, 107, "kvm"))  # fmt: skip
    (c04,) = [f for f in container_findings(c) if f.code == "NV-C04"]
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666"' in (c04.fix or "")
    assert "udevadm trigger" in (c04.fix or "")
    assert "NV-C04" not in codes(dataclasses.replace(c, kvm=KvmNode(True, True, "0666", 0, 107)))


def test_nv_c05_root_not_a_mount_point_with_libvirt_namespaces() -> None:
    c = facts(kind="chroot", root_is_mount_point=False)
    (c05,) = [f for f in container_findings(c) if f.code == "NV-C05"]
    assert "namespaces = []" in (c05.fix or "") and "--direct" in (c05.fix or "")
    assert "NV-C05" not in codes(dataclasses.replace(c, libvirt_namespaces=()))
    assert "NV-C05" not in codes(dataclasses.replace(c, libvirt_qemu=False))
    assert "NV-C05" not in codes(dataclasses.replace(c, root_is_mount_point=Unknown("x")))
    assert "NV-C05" not in codes(dataclasses.replace(c, root_is_mount_point=True))


def test_qemu_conf_namespaces() -> None:
    assert qemu_conf_namespaces('#namespaces = [ "mount" ]\n') is None
    assert qemu_conf_namespaces("namespaces = []\n") == ()
    assert qemu_conf_namespaces('namespaces = [ "mount" ]  # default\n') == ("mount",)


def test_status_runs_the_container_rules_over_host_facts() -> None:
    host_rules = {r.code for r in rules.rules_for(Target.HOST, Platform.LINUX)}
    assert {"NV-C01", "NV-C03", "NV-C04", "NV-C05"} <= host_rules


def test_lab_mount_propagation_error_is_nv_c05_not_kvm() -> None:
    code, hit = lab_failure(MOUNT_ERROR, via_libvirt=True, started=False, booted=False,
                            accel="kvm") or ("", None)  # fmt: skip
    assert code == "NV-C05" and hit is not None and hit.severity is Severity.ERROR
    assert "namespaces = []" in (hit.fix or "")
    assert libvirt_cannot_start(code)


def test_lab_denials_are_named() -> None:
    cases = {
        'libvirt could not start the lab VM: … apparmor="DENIED" operation="open"': "AppArmor",
        "QEMU exited (1) before the report: Could not access KVM kernel module: "
        "Operation not permitted": "device cgroup",
        "QEMU exited (159) before the report: Bad system call": "seccomp",
    }
    for text, what in cases.items():
        via = text.startswith("libvirt")
        found = lab_failure(text, via_libvirt=via, started=not via, booted=False, accel="kvm")
        assert found is not None and found[0] == "NV-C06" and what in found[1].message, text


def test_lab_layers() -> None:
    def code(text: str, **kw: bool) -> str | None:
        found = lab_failure(text, accel="kvm", **kw)
        return found[0] if found else None

    other = "libvirt could not start the lab VM: internal error: qemu unexpectedly closed"
    assert code(other, via_libvirt=True, started=False, booted=False) == "NV-C07"
    assert code("cannot run qemu-system-x86_64: No such file or directory",
                via_libvirt=False, started=False, booted=False) == "NV-C08"  # fmt: skip
    assert code("no report within 90 s", via_libvirt=False, started=True, booted=False) == "NV-C09"
    # booted, then no report: KVM inside the lab VM (NV-H07 stays the lab's verdict)
    assert code("no report within 90 s", via_libvirt=True, started=True, booted=True) is None
    assert not libvirt_cannot_start("NV-C08")


def test_nv_h05_in_a_container_points_at_the_container_not_usermod() -> None:
    from nestvirt.facts.linux_host import KvmDevice
    from tests.unit.rules.factories import bare_metal_intel

    def h05(**overrides: object) -> str:
        host = bare_metal_intel(**overrides)
        (hit,) = [f for f in rules.run(Target.HOST, Platform.LINUX, host) if f.code == "NV-H05"]
        return hit.fix or ""

    denied = KvmDevice(True, False, "0660", "root", "kvm")
    missing = KvmDevice(False, False, None, None, None)
    assert "usermod" in h05(kvm_device=denied, probe=None)
    assert "usermod" not in h05(kvm_device=denied, probe=None, container=facts())
    assert "NV-C04" in h05(kvm_device=denied, probe=None, container=facts())
    assert "modprobe" in h05(kvm_device=missing, probe=None)
    assert "NV-C03" in h05(kvm_device=missing, probe=None, container=facts())
