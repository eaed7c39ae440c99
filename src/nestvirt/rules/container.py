"""Container and CI rules NV-C01…NV-C09: /dev/kvm, libvirt and QEMU in containers and CI jobs.

NV-C01…C05 judge ContainerFacts (facts/container.py) as part of the Linux
host's rules (`status`), and alone for `probe` (`container_findings`).
NV-C05…C09 also judge the lab's failures: `lab_failure_hits` reads the error
text of the layer that failed (libvirt starting the VM, QEMU, the guest
kernel) and names that layer, instead of blaming KVM (NV-H07) for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from nestvirt.facts.container import ContainerFacts
from nestvirt.model import Finding, Severity
from nestvirt.rules import Hit, Platform, Target, findings_from, rules_of

container_rule = rules_of(Target.HOST, Platform.LINUX)

NAMESPACES_FIX = (
    "set 'namespaces = []' in /etc/libvirt/qemu.conf and restart libvirtd "
    "(systemctl restart libvirtd), or run the lab without libvirt: nestvirt lab --direct"
)

# How each runtime passes a device in; KVM's node is char 10:232.
PASS_KVM = {
    "docker": "docker run --device /dev/kvm … (docker compose: devices: ['/dev/kvm:/dev/kvm'])",
    "podman": "podman run --device /dev/kvm … (rootless: the host user must be able to open "
    "/dev/kvm, and add --group-add keep-groups)",
    "kubernetes": "request the device from a KVM device plugin (e.g. resources: limits: "
    "devices.kubevirt.io/kvm: '1') — or, less safely, securityContext: privileged: true with a "
    "hostPath volume for /dev/kvm",
    "systemd-nspawn": "systemd-nspawn --bind=/dev/kvm --property=DeviceAllow='/dev/kvm rw' …",
    "lxc": "lxc.cgroup2.devices.allow = c 10:232 rwm and lxc.mount.entry = /dev/kvm dev/kvm none "
    "bind,optional,create=file (LXD/Incus: lxc config device add NAME kvm unix-char "
    "path=/dev/kvm)",
    "chroot": "mount --bind /dev/kvm ROOT/dev/kvm (or mount devtmpfs on ROOT/dev) before chroot",
}
UDEV_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0666"'
UDEV_FIX = (
    f"echo '{UDEV_RULE}' | sudo tee /etc/udev/rules.d/99-kvm4all.rules && "
    "sudo udevadm control --reload-rules && sudo udevadm trigger --name-match=kvm"
)


def _facts(x: Any) -> ContainerFacts | None:
    """The rules run over LinuxHostFacts (status) or ContainerFacts alone (probe)."""
    if isinstance(x, ContainerFacts):
        return x
    found = getattr(x, "container", None)
    return found if isinstance(found, ContainerFacts) else None


@container_rule("NV-C01", "runs-in-container", Severity.INFO)
def runs_in_container(x: Any) -> Iterator[Hit]:
    """nestvirt runs inside a container or a chroot: name it and the evidence.

    ## What it checks
    Ordered evidence (facts/container.py): `/run/.containerenv` (podman),
    `/.dockerenv` (docker), `KUBERNETES_SERVICE_HOST` or the service-account
    directory (Kubernetes), `/run/systemd/container` and PID 1's `container=`
    (systemd-nspawn, LXC, …), and a root that is not PID 1's (a chroot).

    ## Why it matters
    In a container `/dev/kvm` exists only if the runtime passed it in, its
    group is whatever GID the host gave it, and libvirt's per-VM mount
    namespace needs a root that is a mount point: the fixes are on the
    container's side, not the kernel's.

    ## Example
    `/.dockerenv exists`, `PID 1 has container=systemd-nspawn`.

    ## Fix
    Nothing to fix: NV-C03…C05 name what the container breaks.

    ## Sources
    systemd `src/basic/virt.c` (`detect_container`); podman `run` (`/run/.containerenv`);
    Kubernetes "Accessing the Kubernetes API from a Pod" (service environment).
    """
    c = _facts(x)
    if c is None or not c.contained:
        return
    yield Hit(f"nestvirt runs in a {c.kind} container ({'; '.join(c.evidence)})")


@container_rule("NV-C02", "runs-in-ci-job", Severity.INFO)
def runs_in_ci_job(x: Any) -> Iterator[Hit]:
    """nestvirt runs in a CI job: name the CI from its documented variables.

    ## What it checks
    An allowlist of variables CI services document (`GITHUB_ACTIONS`,
    `GITLAB_CI`, `BUILDKITE`, `CIRCLECI`, `JENKINS_URL`, `TF_BUILD`, `TRAVIS`,
    `CI`, …); only their names are reported, never their values, and no
    other variable is read.

    ## Why it matters
    CI jobs run as a user that is not in group `kvm`, often in a container:
    hosted runners document the udev rule that opens `/dev/kvm` to the job.

    ## Example
    `GITHUB_ACTIONS=true`, `RUNNER_ENVIRONMENT=github-hosted`.

    ## Fix
    Nothing to fix: NV-C03/C04 give the job's fix. docs/ci/ has a GitHub
    Actions workflow that applies it and runs `nestvirt lab`.

    ## Sources
    GitHub Docs "Variables" (default environment variables); GitLab "Predefined
    CI/CD variables"; Buildkite, CircleCI, Azure Pipelines environment references.
    """
    c = _facts(x)
    if c is None or c.ci is None:
        return
    detail = "".join(f", {k}={v}" for k, v in c.ci_detail.items())
    yield Hit(f"nestvirt runs in a {c.ci} job ({', '.join(c.ci_variables)} set{detail})")


@container_rule("NV-C03", "kvm-not-passed-in", Severity.ERROR)
def kvm_not_passed_in(x: Any) -> Iterator[Hit]:
    """The container has no `/dev/kvm`: the runtime did not pass the device in.

    ## What it checks
    In a container or chroot (NV-C01), `/dev/kvm` does not exist.

    ## Why it matters
    Containers get a minimal `/dev`; KVM is there only when the runtime adds
    the device (and allows it in the device cgroup). Without it QEMU, the
    Android emulator and test suites fall back to emulation or fail.

    ## Example
    `docker run debian ls /dev/kvm` → `No such file or directory`.

    ## Fix
    docker/podman: `--device /dev/kvm`; systemd-nspawn: `--bind=/dev/kvm
    --property=DeviceAllow='/dev/kvm rw'`; LXC: `lxc.cgroup2.devices.allow = c
    10:232 rwm` plus a bind mount entry; Kubernetes: a KVM device plugin
    (`devices.kubevirt.io/kvm`), or `privileged: true` with a hostPath volume.
    The host itself must have `/dev/kvm` (NV-H03/H05 there).

    ## Sources
    Docker "docker run" reference (`--device`); podman-run(1); systemd-nspawn(1)
    (`--bind`, `--property`); LXC lxc.container.conf(5); KubeVirt device plugin.
    """
    c = _facts(x)
    if c is None or not c.contained or c.kvm.exists:
        return
    how = PASS_KVM.get(c.kind or "", "pass the host's /dev/kvm (char 10:232) into the container")
    yield Hit(f"no /dev/kvm in this {c.kind} container: the runtime did not pass it in", how)


@container_rule("NV-C04", "kvm-not-writable-for-job", Severity.ERROR)
def kvm_not_writable_for_job(x: Any) -> Iterator[Hit]:
    """`/dev/kvm` is there but this container's or CI job's user cannot open it read+write.

    ## What it checks
    In a container or CI job, `/dev/kvm` exists and `access(R_OK|W_OK)` fails;
    it reports the node's mode, owner GID and that GID's name here, the GID of
    group `kvm` here and the user's groups.

    ## Why it matters
    A bind-mounted node keeps the host's GID: inside, that GID may have another
    name or none, and the container's own `kvm` group (if any) has a different
    GID, so `usermod -aG kvm` inside does nothing. Hosted CI runners leave
    `/dev/kvm` 0660 root:kvm and run the job as a user outside `kvm`.

    ## Example
    `/dev/kvm crw-rw---- 0:107`, no group 107 inside, `kvm` is GID 993 inside,
    user `job` (uid 1000) in groups 1000.

    ## Fix
    Container: add the job's user to the device's GID as the host numbers it:
    `docker run --device /dev/kvm --group-add 107 …` (podman: same, or
    `--group-add keep-groups`), or create the group inside with that GID.
    CI runner: the udev rule GitHub documents,
    `KERNEL=="kvm", GROUP="kvm", MODE="0666"` in
    `/etc/udev/rules.d/99-kvm4all.rules`, then `udevadm control
    --reload-rules && udevadm trigger --name-match=kvm`.

    ## Sources
    GitHub changelog 2023-02-23 "Hardware accelerated Android virtualization
    on Actions Windows and Linux larger hosted runners" (the udev rule);
    Docker `--group-add`; podman-run(1) `--group-add keep-groups`.
    """
    c = _facts(x)
    if c is None or not (c.contained or c.ci) or not c.kvm.exists or c.kvm.accessible:
        return
    node = f"/dev/kvm is {c.kvm.mode or '?'} owner {c.kvm.uid}:{c.kvm.gid}"
    named = f" (group {c.kvm.group!r} here)" if c.kvm.group else " (a GID with no name here)"
    inside = (
        f"group kvm here is GID {c.kvm_group_gid}"
        if c.kvm_group_gid is not None
        else "no group kvm here"
    )
    groups = ",".join(str(g) for g in c.groups)
    where = f"this {c.kind} container" if c.contained else f"this {c.ci} job"
    message = (
        f"{node}{named}; {inside}; {c.user} (uid {c.uid}, groups {groups}) in {where} "
        "cannot open it read+write"
    )
    gid = c.kvm.gid if c.kvm.gid is not None else "GID"
    if c.contained:
        fix = (
            f"give the user the device's GID as the host numbers it: run the container with "
            f"--device /dev/kvm --group-add {gid} (podman: or --group-add keep-groups), or inside: "
            f"groupadd -g {gid} kvmhost && usermod -aG kvmhost {c.user}"
        )
    else:
        fix = f"as the job's first step: {UDEV_FIX}"
    yield Hit(message, fix)


@container_rule("NV-C05", "libvirt-mount-namespace-unusable", Severity.WARNING)
def libvirt_mount_namespace_unusable(x: Any) -> Iterator[Hit]:
    """libvirt's per-VM mount namespace cannot work here: `/` is not a mount point.

    ## What it checks
    libvirt's QEMU driver is configured here (`/etc/libvirt/qemu.conf`) with
    its default `namespaces = ["mount"]`, and `/` is not a mount point in this
    mount namespace (no `/` entry in `/proc/self/mountinfo`: a chroot or a
    container root that is a plain directory). In the lab: libvirt's error
    "Failed disable mount propagation out of the root filesystem".

    ## Why it matters
    Before exec'ing QEMU libvirt makes `/` a slave mount (`mount(MS_SLAVE |
    MS_REC)`); the kernel refuses that with EINVAL on a root that is not a
    mount point, so every VM start fails — though KVM and QEMU work.

    ## Example
    `internal error: Process exited prior to exec: libvirt: error : Failed
    disable mount propagation out of the root filesystem: Invalid argument`.

    ## Fix
    `namespaces = []` in `/etc/libvirt/qemu.conf`, then restart libvirtd; or
    run QEMU without libvirt: `nestvirt lab --direct`. Or make the container's
    root a mount point (`mount --bind ROOT ROOT` before chroot/pivot_root).

    ## Sources
    libvirt qemu.conf (`namespaces`) and `src/qemu/qemu_namespace.c`
    (`qemuDomainSetupNamespace`, `virProcessSetupPrivateMountNS`);
    mount(2), EINVAL for propagation changes on a non-mount point.
    """
    c = _facts(x)
    if c is None or not c.libvirt_qemu or not c.libvirt_mount_namespace:
        return
    if c.root_is_mount_point is not False:
        return
    yield Hit(
        "/ is not a mount point here (no '/' in /proc/self/mountinfo) and libvirt's QEMU driver "
        "gives each VM a mount namespace (qemu.conf namespaces unset): libvirt cannot start VMs "
        "('Failed disable mount propagation out of the root filesystem'); KVM itself is not "
        "the problem",
        NAMESPACES_FIX,
    )


@container_rule("NV-C06", "sandbox-denied", Severity.ERROR)
def sandbox_denied(x: Any) -> Iterator[Hit]:
    """libvirt or QEMU was refused by the device cgroup, AppArmor, SELinux or seccomp.

    ## What it checks
    The lab's error text from libvirt or QEMU: `apparmor="DENIED"` /
    `AppArmor`, `avc: denied` (SELinux), `seccomp`/`Bad system call`, and
    device-cgroup refusals (`Operation not permitted` opening `/dev/kvm`
    or a `cgroup` error). Status judges facts, not logs: this rule fires
    from the lab only.

    ## Why it matters
    These are the container's or the host's confinement, not KVM: the same
    kernel runs guests fine outside it.

    ## Example
    `Could not access KVM kernel module: Operation not permitted`,
    `apparmor="DENIED" operation="open" profile="libvirt-…" name="/dev/kvm"`.

    ## Fix
    Device cgroup: allow `c 10:232 rwm` for the container (docker/podman
    `--device /dev/kvm` does it). AppArmor: `aa-complain` or extend the
    profile; docker: `--security-opt apparmor=unconfined`. seccomp: docker
    `--security-opt seccomp=unconfined`. SELinux: `setsebool -P
    container_use_devices 1`. For libvirt in a container: `nestvirt lab --direct`.

    ## Sources
    Docker "Seccomp security profiles" and "AppArmor security profiles";
    libvirt "QEMU driver: cgroups, AppArmor (security_driver)"; container-selinux
    `container_use_devices`.
    """
    return iter(())  # judged from the lab's error text: lab_failure_hits


@container_rule("NV-C07", "lab-libvirt-start-failed", Severity.ERROR)
def lab_libvirt_start_failed(x: Any) -> Iterator[Hit]:
    """libvirt could not start the lab VM: libvirt's layer failed, before QEMU ran a guest.

    ## What it checks
    `nestvirt lab`: the libvirt start call failed with an error that names
    neither the mount namespace (NV-C05) nor a sandbox (NV-C06).

    ## Why it matters
    Nothing of KVM was tried; NV-H07 (KVM not functional) would blame the
    wrong layer.

    ## Example
    `libvirt could not start the lab VM: internal error: …`.

    ## Fix
    Read libvirtd's log (`journalctl -u libvirtd` or
    `/var/log/libvirt/qemu/NAME.log`); meanwhile `nestvirt lab --direct`
    runs QEMU without libvirt.

    ## Sources
    libvirt "Logging in the library and daemons" (https://libvirt.org/kbase/debuglogs.html).
    """
    return iter(())  # judged from the lab's error text: lab_failure_hits


@container_rule("NV-C08", "lab-qemu-failed", Severity.ERROR)
def lab_qemu_failed(x: Any) -> Iterator[Hit]:
    """QEMU itself failed before the lab guest's kernel printed anything.

    ## What it checks
    `nestvirt lab`: QEMU could not be run, or exited before the guest booted
    (QEMU's last line of stderr is quoted).

    ## Why it matters
    The guest never ran, so this says nothing about KVM inside it.

    ## Example
    `QEMU exited (1) before the report: qemu-system-x86_64: -accel kvm: Could
    not access KVM kernel module: No such file or directory`.

    ## Fix
    Install `qemu-system-x86`; if the error names `/dev/kvm`, see NV-C03/C04
    and NV-H05; `--accel tcg` runs without KVM.

    ## Sources
    QEMU "Invocation" (`-accel`).
    """
    return iter(())  # judged from the lab's error text: lab_failure_hits


@container_rule("NV-C09", "lab-guest-kernel-no-boot", Severity.ERROR)
def lab_guest_kernel_no_boot(x: Any) -> Iterator[Hit]:
    """The lab VM started but its kernel never reached the lab's init.

    ## What it checks
    `nestvirt lab`: QEMU ran (through libvirt or directly) but no BOOTED
    marker came from the guest within the timeout.

    ## Why it matters
    The guest kernel or the accelerator under it hangs: under KVM that is
    NV-H10's territory (a full guest does not boot although the probe runs),
    under TCG a slow or broken image.

    ## Example
    `no report within 90 s`, console tail empty.

    ## Fix
    `nestvirt lab --keep` keeps the console log; try `--accel tcg`; a custom
    `--kernel` needs its console on ttyS0.

    ## Sources
    Linux `Documentation/admin-guide/serial-console.rst`.
    """
    return iter(())  # judged from the lab's error text: lab_failure_hits


def container_findings(facts: ContainerFacts) -> list[Finding]:
    """NV-C01…C05 over the container facts alone (`nestvirt probe`)."""
    checks = (
        ("NV-C01", runs_in_container), ("NV-C02", runs_in_ci_job), ("NV-C03", kvm_not_passed_in),
        ("NV-C04", kvm_not_writable_for_job), ("NV-C05", libvirt_mount_namespace_unusable),
    )  # fmt: skip
    return [f for code, check in checks for f in findings_from(code, Platform.LINUX, check(facts))]


# -- the lab: which layer failed ---------------------------------------------------------------

MOUNT_PROPAGATION = re.compile(r"Failed disable mount propagation|mount propagation", re.I)
DENIALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r'apparmor="?DENIED|AppArmor', re.I), "AppArmor"),
    (re.compile(r"avc:\s+denied|SELinux", re.I), "SELinux"),
    (re.compile(r"seccomp|Bad system call", re.I), "seccomp"),
    (re.compile(r"cgroup|kvm.*Operation not permitted|Operation not permitted.*kvm", re.I),
     "the device cgroup"),
)  # fmt: skip
DENIAL_FIX = {
    "AppArmor": 'docker: --security-opt apparmor=unconfined; libvirt: security_driver = "none" '
    "in /etc/libvirt/qemu.conf, or nestvirt lab --direct",
    "SELinux": "setsebool -P container_use_devices 1 (or run the container with "
    "--security-opt label=disable)",
    "seccomp": "docker/podman: --security-opt seccomp=unconfined",
    "the device cgroup": "allow the device: --device /dev/kvm (docker/podman), "
    "--property=DeviceAllow='/dev/kvm rw' (systemd-nspawn), "
    "lxc.cgroup2.devices.allow = c 10:232 rwm (LXC)",
}


def lab_failure(
    error: str, *, via_libvirt: bool, started: bool, booted: bool, accel: str
) -> tuple[str, Hit] | None:
    """(code, hit) for a lab VM that gave no report, by the layer that failed; None: KVM's."""
    text = error or ""
    if MOUNT_PROPAGATION.search(text):
        return "NV-C05", Hit(
            f"libvirt could not start the lab VM in its per-VM mount namespace (/ is not a mount "
            f"point here): {text}",
            NAMESPACES_FIX,
            severity=Severity.ERROR,
        )
    for pattern, what in DENIALS:
        if pattern.search(text):
            layer = "libvirt" if via_libvirt and not started else "QEMU"
            return "NV-C06", Hit(f"{what} refused {layer}: {text}", DENIAL_FIX[what])
    if via_libvirt and not started:
        return "NV-C07", Hit(
            text, "see libvirtd's log (journalctl -u libvirtd); nestvirt lab --direct runs QEMU "
            "without libvirt",
        )  # fmt: skip
    if not booted and (not started or text.startswith(("QEMU exited", "cannot run"))):
        return "NV-C08", Hit(
            f"QEMU ({accel}) failed before the guest booted: {text}",
            "install qemu-system-x86; for /dev/kvm errors see NV-C03/C04/H05; --accel tcg",
        )
    if not booted:
        return "NV-C09", Hit(
            f"the lab VM ({accel}) started but its kernel never booted: {text}",
            "nestvirt lab --keep keeps the console log; --accel tcg if KVM hangs",
        )
    return None


def libvirt_cannot_start(code: str) -> bool:
    """A lab failure that `--direct` (QEMU without libvirt) may get past."""
    return code in ("NV-C05", "NV-C06", "NV-C07")
