"""Is nestvirt running in a container, a chroot or a CI job, and what does /dev/kvm look like there?

Read-only, standard library only. The container rules (NV-C…, rules/container.py)
judge these facts. Detection is ordered evidence, after systemd's
`detect_container()` (docs/sources.md#detection-as-ordered-evidence): each
source is a small check, a missing file is no evidence, and every piece of
evidence seen is kept as a line for people.

Order: the engines' own marker files (`/run/.containerenv` podman,
`/.dockerenv` docker) name the engine; Kubernetes (its service environment or
service-account directory) names the orchestrator over whichever runtime it
uses; `/run/systemd/container` (written by systemd-nspawn, LXC, podman) and
the `container=` variable of PID 1 (what systemd itself reads) name the rest;
a root that differs from PID 1's root is a chroot. CI jobs are named from an
allowlist of documented environment variables: nothing else of the
environment is read.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nestvirt.model import Unknown

KVM_PATH = "/dev/kvm"
QEMU_CONF = "/etc/libvirt/qemu.conf"
K8S_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# (variable, CI name, value it must have or None for "set"). First match names the CI;
# every variable set is evidence. Values are never copied: only the names are reported.
CI_VARIABLES: tuple[tuple[str, str, str | None], ...] = (
    ("GITHUB_ACTIONS", "GitHub Actions", "true"),
    ("GITLAB_CI", "GitLab CI", "true"),
    ("BUILDKITE", "Buildkite", "true"),
    ("CIRCLECI", "CircleCI", "true"),
    ("JENKINS_URL", "Jenkins", None),
    ("TF_BUILD", "Azure Pipelines", "True"),
    ("TRAVIS", "Travis CI", "true"),
    ("DRONE", "Drone", "true"),
    ("WOODPECKER_CI", "Woodpecker", "true"),
    ("BITBUCKET_BUILD_NUMBER", "Bitbucket Pipelines", None),
    ("TEAMCITY_VERSION", "TeamCity", None),
    ("CODEBUILD_BUILD_ID", "AWS CodeBuild", None),
    ("CI", "a CI job", None),  # the generic marker most CIs also set
)
# GitHub says whether the runner is theirs: the udev fix applies to github-hosted ones.
CI_DETAIL_VARIABLES = ("RUNNER_ENVIRONMENT", "RUNNER_OS")

ReadFile = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class KvmNode:
    """/dev/kvm as this process sees it."""

    exists: bool
    accessible: bool = False  # read+write for this process
    mode: str | None = None  # "0660"
    uid: int | None = None
    gid: int | None = None
    group: str | None = None  # the name of `gid` here; None: no such group here


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """The container or CI job nestvirt runs in, and what it lets through to KVM."""

    kind: str | None  # docker podman kubernetes systemd-nspawn lxc chroot <other>; None: none
    evidence: tuple[str, ...]  # what named it, one line each
    ci: str | None  # "GitHub Actions", …; None: no CI variable set
    ci_variables: tuple[str, ...]  # the allowlisted variables that are set (names only)
    ci_detail: dict[str, str]  # RUNNER_ENVIRONMENT, RUNNER_OS when set
    kvm: KvmNode
    kvm_group_gid: int | None  # the GID of group `kvm` here (this root's /etc/group)
    user: str  # who runs nestvirt: name or uid
    uid: int
    groups: tuple[int, ...]  # this process's supplementary groups and its gid
    root_is_mount_point: bool | Unknown  # libvirt's per-VM mount namespace needs it
    libvirt_qemu: bool  # libvirt's QEMU driver is configured here (qemu.conf exists)
    libvirt_namespaces: tuple[str, ...] | None = None  # qemu.conf `namespaces`; None: default
    notes: tuple[str, ...] = field(default=())

    @property
    def contained(self) -> bool:
        return self.kind is not None

    @property
    def libvirt_mount_namespace(self) -> bool:
        """libvirt gives each QEMU its own mount namespace (the default `["mount"]`)."""
        return self.libvirt_namespaces is None or "mount" in self.libvirt_namespaces


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(65536).decode(errors="replace")


def _try(read: ReadFile, path: str) -> str | None:
    try:
        return read(path)
    except OSError:
        return None


def pid1_container_variable(read: ReadFile = _read) -> str | Unknown | None:
    """`container=` in PID 1's environment (systemd reads it there): the one allowlisted key."""
    try:
        raw = read("/proc/1/environ")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Unknown(f"/proc/1/environ: {exc.strerror}")
    for entry in raw.split("\0"):
        if entry.startswith("container="):
            return entry.partition("=")[2][:64] or None
    return None


def _same_root_as_pid1() -> bool | Unknown:
    try:
        mine, theirs = os.stat("/"), os.stat("/proc/1/root/")
    except OSError as exc:
        return Unknown(f"/proc/1/root: {exc.strerror}")
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def detect(
    read: ReadFile = _read,
    exists: Callable[[str], bool] = os.path.exists,
    environ: Mapping[str, str] = os.environ,
    same_root: Callable[[], bool | Unknown] = _same_root_as_pid1,
) -> tuple[str | None, tuple[str, ...]]:
    """(kind, evidence lines): the container this process runs in, if any."""
    evidence: list[str] = []
    kind: str | None = None

    def seen(what: str, line: str) -> None:
        nonlocal kind
        kind = kind or what
        evidence.append(line)

    containerenv = "/run/.containerenv"
    if exists(containerenv):
        engine = next(
            (
                line.partition("=")[2].strip('"')
                for line in (_try(read, containerenv) or "").splitlines()
                if line.startswith("engine=")
            ),
            "",
        )
        seen("podman", f"{containerenv} exists" + (f" (engine {engine})" if engine else ""))
    if exists("/.dockerenv"):
        seen("docker", "/.dockerenv exists")
    if environ.get("KUBERNETES_SERVICE_HOST"):
        evidence.append("KUBERNETES_SERVICE_HOST is set")
        kind = "kubernetes"
    elif exists(K8S_SERVICE_ACCOUNT):
        evidence.append(f"{K8S_SERVICE_ACCOUNT} exists")
        kind = "kubernetes"
    manager = (_try(read, "/run/systemd/container") or "").strip()
    if manager:
        seen(manager, f"/run/systemd/container says {manager!r}")
    variable = pid1_container_variable(read)
    if isinstance(variable, str):
        seen(variable, f"PID 1 has container={variable}")
    elif isinstance(variable, Unknown):
        evidence.append(f"PID 1's environment unreadable ({variable.reason})")
    own = environ.get("container", "")[:64]
    if own and not isinstance(variable, str):
        seen(own, f"container={own} in this process's environment")
    rooted = same_root()
    if rooted is False:
        seen("chroot", "/ is not PID 1's root (a chroot)")
    elif isinstance(rooted, Unknown) and root_is_mount_point(read) is False:
        # PID 1's root hidden (no CAP_SYS_PTRACE): a root that is no mount point is a chroot
        seen("chroot", f"/ is not a mount point ({rooted.reason}: PID 1's root not comparable)")
    return kind, tuple(evidence)


def ci_job(environ: Mapping[str, str] = os.environ) -> tuple[str | None, tuple[str, ...]]:
    name: str | None = None
    found: list[str] = []
    for variable, ci, value in CI_VARIABLES:
        got = environ.get(variable)
        if not got or (value is not None and got.lower() != value.lower()):
            continue
        found.append(variable)
        name = name or ci
    return name, tuple(found)


def kvm_node(path: str = KVM_PATH) -> KvmNode:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return KvmNode(False)
    except OSError:
        return KvmNode(True)
    try:
        group: str | None = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = None
    return KvmNode(
        exists=True,
        accessible=os.access(path, os.R_OK | os.W_OK),
        mode=f"{stat.S_IMODE(st.st_mode):04o}",
        uid=st.st_uid,
        gid=st.st_gid,
        group=group,
    )


def kvm_group_gid() -> int | None:
    try:
        return grp.getgrnam("kvm").gr_gid
    except KeyError:
        return None


def root_is_mount_point(read: ReadFile = _read) -> bool | Unknown:
    """Is / a mount point in this mount namespace? (/proc/self/mountinfo, field 5)

    os.path.ismount("/") is always true; mountinfo lists only mounts reachable
    from this root, so a chroot into a plain directory has no "/" entry."""
    try:
        text = read("/proc/self/mountinfo")
    except OSError as exc:
        return Unknown(f"/proc/self/mountinfo: {exc.strerror}")
    return any(len(p := line.split()) > 4 and p[4] == "/" for line in text.splitlines())


def qemu_conf_namespaces(text: str) -> tuple[str, ...] | None:
    """`namespaces = [ "mount" ]` in qemu.conf; None when unset (libvirt's default: mount)."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip() == "namespaces":
            value = value.strip()
            if not (value.startswith("[") and value.endswith("]")):
                return None
            items = (v.strip().strip('"').strip("'") for v in value[1:-1].split(","))
            return tuple(v for v in items if v)
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def gather(
    read: ReadFile = _read, environ: Mapping[str, str] = os.environ, qemu_conf: str = QEMU_CONF
) -> ContainerFacts:
    kind, evidence = detect(read, environ=environ)
    ci, ci_variables = ci_job(environ)
    conf = _try(read, qemu_conf)
    uid = os.getuid()
    return ContainerFacts(
        kind=kind,
        evidence=evidence,
        ci=ci,
        ci_variables=ci_variables,
        ci_detail={k: environ[k][:32] for k in CI_DETAIL_VARIABLES if ci and environ.get(k)},
        kvm=kvm_node(),
        kvm_group_gid=kvm_group_gid(),
        user=_user(uid),
        uid=uid,
        groups=tuple(sorted({os.getgid(), *os.getgroups()})),
        root_is_mount_point=root_is_mount_point(read),
        libvirt_qemu=conf is not None,
        libvirt_namespaces=qemu_conf_namespaces(conf) if conf is not None else None,
    )
