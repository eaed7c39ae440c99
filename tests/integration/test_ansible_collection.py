"""The Ansible collection nestvirt.nested (issue 15) through ansible-playbook, connection
local, against the real qemu:///system: check mode plans and changes nothing, a real run
fixes the domain, a second run changes nothing, undo restores the exact definition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import NO_SVM_CPU

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "ansible" / "nestvirt" / "nested"
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collections")
    shutil.copytree(COLLECTION, root / "ansible_collections" / "nestvirt" / "nested")
    return root


def play(collections: Path, tmp: Path, task: str, *flags: str) -> dict[str, object]:
    """Run one task on localhost; its result."""
    book, result = tmp / "play.yml", tmp / "result.json"
    book.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - {task}\n      register: out\n"
        "    - ansible.builtin.copy:\n"
        f"        dest: {result}\n"
        "        content: '{{ out | to_json }}'\n"
        "      check_mode: false\n"
        "      diff: false\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    done = subprocess.run(
        [PLAYBOOK, "-c", "local", "-i", "localhost,", str(book), *flags,
         "-e", f"ansible_python_interpreter={sys.executable}"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(result.read_text()))


def test_vm_check_fix_idempotent_undo(
    define: Callable[..., libvirt.virDomain], collections: Path, tmp_path: Path
) -> None:
    dom = define("ansible", type="qemu", memory=512, current=256, cpu=NO_SVM_CPU)
    name = dom.name()
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    before = dom.XMLDesc(flags)
    task = f"nestvirt.nested.nestvirt_vm: {{name: {name}, uri: 'qemu:///system'}}"

    checked = play(collections, tmp_path, task, "--check", "--diff")
    assert checked["changed"] is True
    assert checked["plan"]["changes"] and checked["plan"]["applied"] is False  # type: ignore[index]
    assert "svm" in checked["diff"]["prepared"]  # type: ignore[index]
    assert dom.XMLDesc(flags) == before

    fixed = play(collections, tmp_path, task, "--diff")
    assert fixed["changed"] is True and fixed["journal"]["seq"]  # type: ignore[index]
    assert "svm" in dom.XMLDesc(flags) and dom.XMLDesc(flags) != before

    again = play(collections, tmp_path, task)
    assert again["changed"] is False and "journal" not in again

    facts = play(collections, tmp_path, f"nestvirt.nested.nestvirt_facts: {{vms: [{name}]}}")
    assert "NV-V01" not in facts["vm_codes"][name]  # type: ignore[index]

    undone = play(collections, tmp_path, task.replace("}", ", state: undone}"))
    assert undone["changed"] is True
    assert dom.XMLDesc(flags) == before


def test_host_check_fix_idempotent(collections: Path, tmp_path: Path) -> None:
    """This very host: /dev/kvm put back to root:root 0600 (what a boot without udev leaves),
    then the module plans the NV-H09 fix in check mode, applies it, and finds nothing more."""
    kvm = Path("/dev/kvm")
    kvm_gid = kvm.stat().st_gid
    task = "nestvirt.nested.nestvirt_host: {}"
    os.chown(kvm, 0, 0)
    kvm.chmod(0o600)
    try:
        checked = play(collections, tmp_path, task, "--check", "--diff")
        assert checked["changed"] is True and checked["plan"]["applied"] is False  # type: ignore[index]
        assert "kvm" in checked["diff"]["after"]  # type: ignore[index]
        assert (kvm.stat().st_mode & 0o777, kvm.stat().st_gid) == (0o600, 0)

        fixed = play(collections, tmp_path, task)
        assert fixed["changed"] is True
        assert kvm.stat().st_mode & 0o777 == 0o660 and kvm.stat().st_gid != 0

        again = play(collections, tmp_path, task)
        assert again["changed"] is False
    finally:
        if kvm.stat().st_gid == 0:  # leave the device as the test set-up made it
            os.chown(kvm, 0, kvm_gid)
            kvm.chmod(0o660)


GET_PIP_STAND_IN = """\
# Stand-in for pip's get-pip.py, which ansible-test fetches from a host this machine cannot
# reach: ensurepip, then the pip version asked for, from PyPI.
import subprocess, sys
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "pip==24.2"])
"""


def test_collection_builds_and_is_lint_and_sanity_clean(collections: Path, tmp_path: Path) -> None:
    """`ansible-galaxy collection build`, `ansible-lint` (production profile) and every
    `ansible-test sanity` test that runs without containers (--local)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "ANSIBLE_COLLECTIONS_PATH": str(collections)}  # fmt: skip
    built = subprocess.run(
        [str(bin_dir / "ansible-galaxy"), "collection", "build", str(COLLECTION),
         "--output-path", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "nestvirt-nested-0.1.0.tar.gz").is_file()

    tree = collections / "ansible_collections" / "nestvirt" / "nested"
    subprocess.run(["git", "init", "-q", str(tree)], check=True)  # both tools list git's files
    subprocess.run(["git", "-C", str(tree), "add", "-A"], check=True)
    lint = subprocess.run(
        [str(bin_dir / "ansible-lint"), "--offline", "--profile", "production"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]

    cache = Path.home() / ".ansible" / "test" / "cache" / "get_pip_24_2.py"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(GET_PIP_STAND_IN)
    sanity = subprocess.run(
        [str(bin_dir / "ansible-test"), "sanity", "--local", "--python",
         f"{sys.version_info.major}.{sys.version_info.minor}"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert sanity.returncode == 0, sanity.stdout[-3000:] + sanity.stderr[-3000:]
    assert 'Running sanity test "validate-modules"' in sanity.stdout + sanity.stderr
