"""The Ansible collection nestvirt.nested (issue 15) through ansible-playbook, connection
local, against the real qemu:///system: check mode plans and changes nothing, a real run
fixes the domain, a second run changes nothing, undo restores the exact definition.

Hyper-V VMs through nestvirt's remote transport from this Linux node: check mode against
a collected snapshot (tests/fixtures/hyperv), and a whole enable/undo over PowerShell
Remoting to the WinRM stand-in of the unit tests (tests/unit/hyperv/psrp_standin.py: a
local HTTPS server answering WSMan as Windows does; pypsrp itself runs unpatched)."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import shutil
import ssl
import subprocess
import sys
import venv
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest

from tests.integration.conftest import NO_SVM_CPU

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "ansible" / "nestvirt" / "nested"
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
HYPERV_FIXTURES = ROOT / "tests" / "fixtures" / "hyperv"
VERSION = next(
    line.split(":", 1)[1].strip()
    for line in (COLLECTION / "galaxy.yml").read_text().splitlines()
    if line.startswith("version:")
)


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collections")
    shutil.copytree(COLLECTION, root / "ansible_collections" / "nestvirt" / "nested")
    return root


def play(
    collections: Path,
    tmp: Path,
    task: str,
    *flags: str,
    env: Mapping[str, str | None] | None = None,
    fails: bool = False,
    python: str = sys.executable,
    output: list[str] | None = None,
) -> dict[str, Any]:
    """Run one task on localhost; its result. `env` adds to the environment (None: removes);
    `fails`: the task must fail (and the play goes on to save the result); `output` collects
    ansible-playbook's stdout and stderr."""
    book, result = tmp / "play.yml", tmp / "result.json"
    result.unlink(missing_ok=True)
    book.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - {task}\n      register: out\n"
        + ("      ignore_errors: true\n" if fails else "")
        + "    - ansible.builtin.copy:\n"
        f"        dest: {result}\n"
        "        content: '{{ out | to_json }}'\n"
        "      check_mode: false\n"
        "      diff: false\n"
    )
    environment = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    done = subprocess.run(
        [PLAYBOOK, "-c", "local", "-i", "localhost,", str(book), *flags,
         "-e", f"ansible_python_interpreter={python}"],
        env=environment, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if output is not None:
        output.append(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = dict(json.loads(result.read_text()))
    assert bool(out.get("failed")) is fails, out
    return out


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
    assert checked["plan"]["changes"] and checked["plan"]["applied"] is False
    assert "svm" in checked["diff"]["prepared"]
    assert dom.XMLDesc(flags) == before

    fixed = play(collections, tmp_path, task, "--diff")
    assert fixed["changed"] is True and fixed["journal"]["seq"]
    assert "svm" in dom.XMLDesc(flags) and dom.XMLDesc(flags) != before

    again = play(collections, tmp_path, task)
    assert again["changed"] is False and "journal" not in again

    facts = play(collections, tmp_path, f"nestvirt.nested.nestvirt_facts: {{vms: [{name}]}}")
    assert "NV-V01" not in facts["vm_codes"][name]

    # changed by hand since: undo refuses, in the module's words, until force is set
    fixed_xml = dom.XMLDesc(flags)
    dom.connect().defineXML(
        fixed_xml.replace("</name>", "</name>\n  <description>by hand</description>", 1)
    )
    refused = play(collections, tmp_path, task.replace("}", ", state: undone}"), fails=True)
    assert refused["error"] == "UsageError" and "changed after" in refused["msg"]
    assert "force=true" in refused["msg"] and "--force" not in refused["msg"].split("`")[0]
    assert "by hand" in dom.XMLDesc(flags)

    undone = play(collections, tmp_path, task.replace("}", ", state: undone, force: true}"))
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
        assert checked["changed"] is True and checked["plan"]["applied"] is False
        assert "kvm" in checked["diff"]["after"]
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


def _state_files(state: Path) -> list[str]:
    """What nestvirt wrote under its state directory, locks aside (a lock is not a change)."""
    if not state.exists():
        return []
    return sorted(
        str(p.relative_to(state))
        for p in state.rglob("*")
        if p.is_file() and "locks" not in p.parts
    )


def test_hyperv_snapshot_check_mode_plans_and_changes_nothing(
    collections: Path, tmp_path: Path
) -> None:
    """A collected Hyper-V snapshot from this Linux node (delegate_to: localhost): check mode
    gives the plan, the settings diff and the cmdlets; a VM that is ready plans nothing; a
    run outside check mode fails cleanly, and nothing is written anywhere."""
    state = tmp_path / "state"
    env = {"NESTVIRT_STATE_DIR": str(state)}
    demo, ready = tmp_path / "demo.json", tmp_path / "ready.json"
    shutil.copy(HYPERV_FIXTURES / "ws2025-intel-demo.json", demo)
    shutil.copy(HYPERV_FIXTURES / "ws2025-intel-ready.json", ready)
    snapshots = {demo: demo.read_bytes(), ready: ready.read_bytes()}
    task = (
        f"nestvirt.nested.nestvirt_vm: {{name: DemoVM, hyperv_snapshot: '{demo}'}}\n"
        "      delegate_to: localhost"
    )

    checked = play(collections, tmp_path, task, "--check", "--diff", env=env)
    assert checked["changed"] is True
    plan = checked["plan"]
    assert plan["vm"] == "DemoVM" and plan["applied"] is False
    assert [c["action"] for c in plan["changes"]] == [
        "expose-virtualization-extensions",
        "disable-dynamic-memory",
    ]
    assert plan["changes"][0]["command"] == (
        "Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true"
    )
    prepared = checked["diff"]["prepared"]
    assert '-  "ExposeVirtualizationExtensions": false,' in prepared
    assert '+  "ExposeVirtualizationExtensions": true,' in prepared
    assert '+  "DynamicMemoryEnabled": false,' in prepared
    assert "# Set-VMMemory -VMName 'DemoVM' -DynamicMemoryEnabled $false" in prepared
    assert "journal" not in checked

    with_options = play(
        collections, tmp_path,
        f"nestvirt.nested.nestvirt_vm: {{name: DemoVM, hyperv_snapshot: '{demo}', "
        "memory: 4096, mac_spoofing: true}",
        "--check", env=env,
    )  # fmt: skip
    actions = [c["action"] for c in with_options["plan"]["changes"]]
    assert {"set-startup-memory", "enable-mac-spoofing"} <= set(actions), actions
    assert "diff" not in with_options  # not asked for

    nothing = play(
        collections, tmp_path,
        f"nestvirt.nested.nestvirt_vm: {{name: Nested01, hyperv_snapshot: '{ready}'}}",
        "--check", "--diff", env=env,
    )  # fmt: skip
    assert nothing["changed"] is False and nothing["plan"]["changes"] == []
    assert "diff" not in nothing

    refused = play(collections, tmp_path, task, env=env, fails=True)
    assert "read-only" in refused["msg"] and "check mode" in refused["msg"]
    assert refused["error"] == "UsageError"
    assert "Traceback" not in refused.get("exception", "")  # 2.19: "(traceback unavailable)"
    assert refused["changed"] is False

    missing = play(
        collections, tmp_path,
        f"nestvirt.nested.nestvirt_vm: {{name: NoSuchVM, hyperv_snapshot: '{demo}'}}",
        "--check", env=env, fails=True,
    )  # fmt: skip
    assert missing["error"] == "NotFound" and "NoSuchVM" in missing["msg"], missing

    running = tmp_path / "states.json"
    shutil.copy(HYPERV_FIXTURES / "vm-states.json", running)
    snapshots[running] = running.read_bytes()
    hide = f"nestvirt.nested.nestvirt_vm: {{name: Running1, hyperv_snapshot: '{running}', "
    no_stop = play(collections, tmp_path, hide + "state: disabled}", "--check", env=env, fails=True)
    assert "is running" in no_stop["msg"] and "stop=true" in no_stop["msg"], no_stop
    assert "--stop" not in no_stop["msg"]
    stop = play(collections, tmp_path, hide + "state: disabled, stop: true}", "--check", env=env)
    assert stop["changed"] is True
    assert [c["action"] for c in stop["plan"]["changes"]] == [
        "stop-vm",
        "hide-virtualization-extensions",
        "start-vm",
    ]

    assert {path: path.read_bytes() for path in snapshots} == snapshots
    assert _state_files(state) == []


def test_hyperv_option_checks(collections: Path, tmp_path: Path) -> None:
    """Option mistakes fail before anything is opened: a libvirt URI together with a Hyper-V
    host, and a user without a password (the library would prompt; a module cannot)."""
    both = play(
        collections, tmp_path,
        "nestvirt.nested.nestvirt_vm: {name: DemoVM, uri: 'qemu:///system', "
        "hyperv_host: hv01.invalid}",
        "--check", fails=True,
    )  # fmt: skip
    assert "mutually exclusive" in both["msg"] and "hyperv_host" in both["msg"]

    no_password = play(
        collections, tmp_path,
        "nestvirt.nested.nestvirt_vm: {name: DemoVM, hyperv_host: hv01.invalid, "
        "hyperv_user: nestvirt}",
        "--check", env={"NESTVIRT_HYPERV_PASSWORD": None}, fails=True,
    )  # fmt: skip
    assert no_password["msg"].startswith("no password for nestvirt on hv01.invalid"), no_password


def test_missing_library_fails_clearly(collections: Path, tmp_path: Path) -> None:
    """A node whose Python lacks nestvirt: every module says so and names the interpreter."""
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # the same Python, without the project's packages
    python = str(bare / "bin" / "python")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert subprocess.run(
        [python, "-c", "import nestvirt"], env=clean, capture_output=True, check=False
    ).returncode
    for task in (
        "nestvirt.nested.nestvirt_facts: {}",
        "nestvirt.nested.nestvirt_vm: {name: lab1}",
        "nestvirt.nested.nestvirt_host: {}",
    ):
        failed = play(
            collections, tmp_path, task, "--check",
            env={"PYTHONPATH": None}, python=python, fails=True,
        )  # fmt: skip
        assert "Failed to import the required Python library (nestvirt)" in failed["msg"], failed
        assert python in failed["msg"] or str(bare) in failed["msg"], failed["msg"]


# ---------------------------------------------------------------- Hyper-V over WinRM


def _standin() -> ModuleType:
    """tests/unit/hyperv/psrp_standin.py (the unit tests import it as `psrp_standin`)."""
    if "psrp_standin" in sys.modules:
        return sys.modules["psrp_standin"]
    path = ROOT / "tests" / "unit" / "hyperv" / "psrp_standin.py"
    spec = importlib.util.spec_from_file_location("psrp_standin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _HyperV:
    """The stand-in's Hyper-V host: the collect script answers from `doc`; Set-VMProcessor
    and Set-VMMemory change it, as Hyper-V would."""

    def __init__(self, ps: ModuleType, doc: dict[str, Any]) -> None:
        self.ps, self.doc = ps, doc
        self.cmdlets: list[str] = []

    def __call__(self, pipeline: Any) -> list[tuple[int, str]]:
        commands = pipeline.commands()
        if commands[0]["is_script"]:
            wanted = json.loads(commands[0]["args"][0][2])["vm_names"]
            doc = copy.deepcopy(self.doc)
            doc["vms"] = [v for v in doc["vms"] if v["Get-VM"]["Name"] in wanted]
            return list(self.ps.output_messages(json.dumps(doc)))
        get_vm, cmdlet = commands
        (vm,) = [v for v in self.doc["vms"] if v["Get-VM"]["Id"] == get_vm["args"][0][2]]
        values = {name: text for name, _tag, text in cmdlet["args"]}
        self.cmdlets.append(cmdlet["cmd"])
        if cmdlet["cmd"] == "Set-VMProcessor":
            vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] = (
                values["ExposeVirtualizationExtensions"] == "true"
            )
        elif cmdlet["cmd"] == "Set-VMMemory":
            vm["Get-VMMemory"]["DynamicMemoryEnabled"] = values["DynamicMemoryEnabled"] == "true"
        else:
            raise AssertionError(f"unexpected cmdlet {cmdlet['cmd']}")
        return list(self.ps.output_messages())


@pytest.fixture
def winrm(tmp_path: Path) -> Iterator[tuple[str, Any, _HyperV]]:
    """An HTTPS WinRM stand-in on 127.0.0.1 (self-signed): its https://HOST:PORT, its
    record of requests, and its Hyper-V host (DemoVM not yet set up)."""
    ps = _standin()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    doc = json.loads((HYPERV_FIXTURES / "ws2025-intel-demo.json").read_text())
    host = _HyperV(ps, doc)
    standin = ps.StandIn(host)
    server = ps.Server(standin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    with server as port:
        yield f"https://127.0.0.1:{port}", standin, host


PASSWORD = "nv-Pa55.w0rd-7f3c"


def test_hyperv_remote_check_fix_idempotent_undo(
    collections: Path, tmp_path: Path, winrm: tuple[str, Any, _HyperV]
) -> None:
    """nestvirt_vm with hyperv_host from this Linux node, over PowerShell Remoting (HTTPS,
    basic auth) to the stand-in: check mode asks Hyper-V nothing but the facts, a real run
    runs the cmdlets, a second run changes nothing, undo puts the settings back. The
    password reaches the transport (the Authorization header) and nothing else: not the
    requests' bodies, not the result, not ansible-playbook's output."""
    url, standin, hyperv = winrm
    state = tmp_path / "state"
    env = {
        "NESTVIRT_STATE_DIR": str(state),
        "NESTVIRT_HYPERV_AUTH": "basic",
        "NESTVIRT_HYPERV_CERT_VALIDATION": "0",
        "NESTVIRT_HYPERV_PASSWORD": None,
        "NESTVIRT_HYPERV_USER": None,
    }
    vm = hyperv.doc["vms"][0]
    before = copy.deepcopy(vm)
    task = (
        f"nestvirt.nested.nestvirt_vm: {{name: DemoVM, hyperv_host: '{url}', "
        f"hyperv_user: nestvirt, hyperv_password: '{PASSWORD}'}}\n"
        "      delegate_to: localhost"
    )
    output: list[str] = []

    checked = play(collections, tmp_path, task, "--check", "--diff", env=env, output=output)
    assert checked["changed"] is True and checked["plan"]["applied"] is False
    assert (
        "# Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true"
        in (checked["diff"]["prepared"])
    )
    assert hyperv.cmdlets == [] and vm == before

    fixed = play(collections, tmp_path, task, "-v", env=env, output=output)
    assert fixed["changed"] is True and fixed["plan"]["applied"] is True
    assert fixed["journal"]["seq"] and "--hyperv" in fixed["journal"]["undo"]
    assert hyperv.cmdlets == ["Set-VMProcessor", "Set-VMMemory"]
    assert vm["Get-VMProcessor"]["ExposeVirtualizationExtensions"] is True
    assert vm["Get-VMMemory"]["DynamicMemoryEnabled"] is False

    again = play(collections, tmp_path, task, env=env, output=output)
    assert again["changed"] is False and "journal" not in again
    assert hyperv.cmdlets == ["Set-VMProcessor", "Set-VMMemory"]

    undone = play(
        collections, tmp_path, task.replace("}", ", state: undone}", 1), env=env, output=output
    )
    assert undone["changed"] is True
    assert vm == before

    assert standin.auth_headers and all(
        h == "Basic " + base64.b64encode(f"nestvirt:{PASSWORD}".encode()).decode()
        for h in standin.auth_headers
    )
    assert PASSWORD.encode() not in b"".join(standin.raw_requests)
    results = json.dumps([checked, fixed, again, undone])
    assert PASSWORD not in results and PASSWORD not in "".join(output)


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
    assert (tmp_path / f"nestvirt-nested-{VERSION}.tar.gz").is_file()

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
