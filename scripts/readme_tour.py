"""Run every command on this machine and write their real output into README.md.

    .venv/bin/python scripts/readme_tour.py

Defines one throw-away TCG domain (`nestvirt-tour`) on qemu:///system, runs the
tour against it, and removes it. Needs root, libvirtd and the lab's image cache
(a cold first lab run downloads Debian's kernel package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NESTVIRT = str(Path(sys.executable).with_name("nestvirt"))
BEGIN, END = "<!-- tour:begin -->", "<!-- tour:end -->"
VM = "nestvirt-tour"
SNAPSHOT = "tests/fixtures/hyperv/ws2025-intel-demo.json"
LINUX_SNAPSHOT = "/tmp/nestvirt-tour-linux.json"

DOMAIN = f"""<domain type='qemu'>
  <name>{VM}</name>
  <memory unit='MiB'>2048</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>Penryn</model></cpu>
  <devices>
    <interface type='network'>
      <source network='default'/><filterref filter='clean-traffic'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>"""

# (heading, explanation, argv); output is shown as the user sees it at 100 columns
TOUR: list[tuple[str, str, list[str]]] = [
    ("status", "Is this host ready, and which of its VMs can run a hypervisor?",
     ["status", "--host-only"]),
    ("status VM", "One VM: a TCG domain with a Penryn CPU, a balloon and clean-traffic.",
     ["status", VM]),
    ("explain", "The full text of a rule.", ["explain", "NV-H09"]),
    ("probe", "Prove that /dev/kvm runs guests: a real-mode and a 64-bit guest, timed.",
     ["probe"]),
    ("enable --dry-run", "The plan and the diff of the domain XML; nothing changes.",
     ["enable", VM, "--dry-run", "--mac-spoofing"]),
    ("enable", "Apply it: one defineXML, journaled, then re-checked.",
     ["enable", VM, "--yes", "--mac-spoofing"]),
    ("enable again", "Idempotent.", ["enable", VM, "--yes"]),
    ("history", "The journal of changes.", ["history", VM]),
    ("preflight", "Is saving this VM safe now that it can run nested guests?",
     ["preflight", VM, "save"]),
    ("undo", "Back to the exact previous definition.", ["undo", VM, "--yes"]),
    ("host enable --dry-run", "What the host set-up would change.",
     ["host", "enable", "--dry-run"]),
    ("host undo --dry-run", "`host enable` goes through the same journaled flow as "
     "`enable`: `host undo` would put the files and /dev/kvm back as they were.",
     ["host", "undo", "--dry-run"]),
    ("guard status", "The libvirt hook that refuses restore/migrate of nested VMs.",
     ["guard", "status"]),
    ("guard install --dry-run", "Installing it is a journaled change too (`guard undo`).",
     ["guard", "install", "--dry-run"]),
    ("status --snapshot", "Hyper-V, offline: a snapshot collected with `nestvirt collect`.",
     ["status", "--snapshot", SNAPSHOT]),
    ("enable --snapshot --dry-run", "The PowerShell that enable would run, quoted safely.",
     ["enable", "--snapshot", SNAPSHOT, "--dry-run", "DemoVM"]),
    ("lab", "The whole nested procedure on this machine (a TCG lab VM, KVM inside it).",
     ["lab"]),
    ("lab --identity aws", "Inside a VM: the lab VM dressed as an EC2 instance (SMBIOS), and "
     "what nestvirt tells someone stuck in it.", ["lab", "--identity", "aws"]),
    ("status over several hosts", "A fleet: one row per libvirt daemon; one that does not "
     "answer is a finding of its own (NV-H30), not an abort.",
     ["status", "-c", "qemu:///system", "-c", "test:///default", "-c",
      "qemu+unix:///system?socket=/run/nestvirt-tour-nobody.sock", "--timeout", "5"]),
    ("collect --linux", "A bug report's facts in one file, nothing secret in it.",
     ["collect", "--linux", "-o", LINUX_SNAPSHOT]),
]  # fmt: skip


def run(argv: list[str]) -> tuple[str, int]:
    env = dict(os.environ, COLUMNS="100", TERM="dumb", NO_COLOR="1")
    proc = subprocess.run(
        [NESTVIRT, *argv], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    text = proc.stdout + proc.stderr
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines()), proc.returncode


def virsh(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], input=stdin, text=True,
                   capture_output=True, check=False)  # fmt: skip


def main() -> int:
    if shutil.which("virsh") is None:
        print("needs virsh and a running libvirtd (scripts/setup.sh)", file=sys.stderr)
        return 1
    virsh("undefine", VM)
    xml = ROOT / ".tour-domain.xml"
    xml.write_text(DOMAIN)
    try:
        virsh("define", str(xml))
        sections = []
        for heading, text, argv in TOUR:
            output, code = run(argv)
            sections.append(
                f"### {heading}\n\n{text}\n\n```console\n$ nestvirt {' '.join(argv)}\n"
                f"{output}\n```\n(exit {code})\n"
            )
    finally:
        xml.unlink(missing_ok=True)
        virsh("undefine", VM)
    current = README.read_text()
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    body = "## A tour, with real output from this machine\n\n" + "\n".join(sections)
    README.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
