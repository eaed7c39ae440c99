"""Container and CI evidence from injected files and environments (facts/container.py)."""

from __future__ import annotations

from collections.abc import Mapping

from nestvirt.facts.container import ci_job, detect, root_is_mount_point
from nestvirt.model import Unknown

MOUNTINFO_ROOT = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"


def files(found: Mapping[str, str]) -> tuple[object, object]:
    def read(path: str) -> str:
        if path in found:
            return found[path]
        raise FileNotFoundError(path)

    return read, lambda path: path in found


def kind_of(found: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str | None:
    read, exists = files({"/proc/self/mountinfo": MOUNTINFO_ROOT, **found})
    kind, _ = detect(read, exists, environ or {}, lambda: True)  # type: ignore[arg-type]
    return kind


def test_engines_orchestrators_and_managers() -> None:
    assert kind_of({}) is None
    assert kind_of({"/.dockerenv": ""}) == "docker"
    assert kind_of({"/run/.containerenv": 'engine="podman-4.3.1"\n'}) == "podman"
    assert kind_of({"/.dockerenv": ""}, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    assert kind_of({"/run/systemd/container": "lxc\n"}) == "lxc"
    assert kind_of({"/proc/1/environ": "PATH=/bin\0container=systemd-nspawn\0"}) == (
        "systemd-nspawn"
    )


def test_chroot_by_pid1_root_or_by_a_root_that_is_no_mount_point() -> None:
    read, exists = files({"/proc/self/mountinfo": MOUNTINFO_ROOT})
    assert detect(read, exists, {}, lambda: False)[0] == "chroot"  # type: ignore[arg-type]
    read, exists = files({"/proc/self/mountinfo": "23 22 8:1 /usr /usr ro - ext4 /dev/vda\n"})
    kind, evidence = detect(read, exists, {}, lambda: Unknown("EACCES"))  # type: ignore[arg-type]
    assert kind == "chroot" and "not a mount point" in evidence[-1]
    assert root_is_mount_point(read) is False  # type: ignore[arg-type]


def test_ci_reads_the_allowlist_and_reports_names_only() -> None:
    environ = {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_TOKEN": "secret", "AWS_KEY": "x"}
    assert ci_job(environ) == ("GitHub Actions", ("GITHUB_ACTIONS", "CI"))
    assert ci_job({"JENKINS_URL": "https://ci.example/"}) == ("Jenkins", ("JENKINS_URL",))
    assert ci_job({"GITHUB_ACTIONS": "false"}) == (None, ())
    assert ci_job({"TF_BUILD": "True"})[0] == "Azure Pipelines"
