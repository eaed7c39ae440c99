#!/usr/bin/python
# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""Ansible module: nestvirt enable / disable / undo for one libvirt domain or Hyper-V VM."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nestvirt_vm
short_description: Make a libvirt or Hyper-V VM ready for nested virtualization (or undo it)
version_added: "0.1.0"
description:
  - Runs nestvirt's enable, disable or undo flow (its library, not its CLI) for one VM.
    Every change is journaled; O(state=undone) puts back what nestvirt's latest change
    replaced exactly.
  - By default the VM is a libvirt domain of the managed node's daemon (O(uri)).
  - With O(hyperv_host) it is a Hyper-V VM reached over PowerShell Remoting through
    nestvirt's own transport, from the Linux node the module runs on (for example the
    control node, with C(delegate_to) V(localhost)); the plan's changes are
    Set-VMProcessor, Set-VMMemory and Set-VMNetworkAdapter cmdlets, run one by one.
    With O(hyperv_snapshot) the VM is read from a collected snapshot file, in check mode
    only.
  - Check mode returns the plan and changes nothing; diff mode returns the domain XML diff
    (libvirt) or the diff of the Hyper-V settings followed by the cmdlets (Hyper-V).
  - C(changed) is true only when the VM's definition or settings changed (in check mode,
    when the plan has changes).
options:
  name:
    description: The domain's or Hyper-V VM's name.
    type: str
    required: true
  state:
    description:
      - V(enabled) exposes vmx/svm (Hyper-V's ExposeVirtualizationExtensions) and fixes
        what blocks nesting; V(disabled) hides them again; V(undone) restores the
        definition or settings before nestvirt's latest change.
    type: str
    choices: [enabled, disabled, undone]
    default: enabled
  memory:
    description:
      - Also set the VM's memory (Hyper-V its startup memory) to this many MiB (enable only).
    type: int
  mac_spoofing:
    description:
      - Also let nested guests' MAC addresses through (enable only); libvirt drops the
        no-mac-spoofing nwfilter, Hyper-V turns on MacAddressSpoofing of the adapters.
    type: bool
    default: false
  stop:
    description: Stop a running VM for the change and start it again.
    type: bool
    default: false
  force:
    description:
      - With O(state=undone), undo even though the VM was changed since nestvirt's change
        (what that discards is lost). Without it such an undo fails and says so.
    type: bool
    default: false
    version_added: "0.2.0"
extends_documentation_fragment:
  - nestvirt.nested.nestvirt
  - nestvirt.nested.nestvirt.hyperv
requirements:
  - pypsrp on the node for O(hyperv_host)
author:
  - nestvirt contributors (@nestvirt)
"""

EXAMPLES = r"""
- name: Ready a VM for nested guests
  nestvirt.nested.nestvirt_vm:
    name: lab1
    memory: 4096

- name: Undo nestvirt's latest change
  nestvirt.nested.nestvirt_vm:
    name: lab1
    state: undone

- name: Ready a Hyper-V VM, from the control node over PowerShell Remoting
  nestvirt.nested.nestvirt_vm:
    name: DemoVM
    hyperv_host: https://hv01.example.com
    hyperv_user: EXAMPLE\nestvirt
    hyperv_password: "{{ vault_hyperv_password }}"
    stop: true
  delegate_to: localhost

- name: What enable would change, from a collected snapshot (check mode only)
  nestvirt.nested.nestvirt_vm:
    name: DemoVM
    hyperv_snapshot: /srv/snapshots/hv01.json
  delegate_to: localhost
  check_mode: true
  diff: true
"""

RETURN = r"""
plan:
  description:
    - The nestvirt.plan/1 document (what was, or in check mode would be, done). For a
      Hyper-V VM each change's C(command) is the PowerShell that makes it by hand.
  returned: always
  type: dict
  sample:
    schema: nestvirt.plan/1
    vm: DemoVM
    changes:
      - code: NV-V01
        action: expose-virtualization-extensions
        command: Set-VMProcessor -VMName 'DemoVM' -ExposeVirtualizationExtensions $true
    applied: false
journal:
  description: The journal entry of the change, and the nestvirt command that undoes it.
  returned: when something changed
  type: dict
  sample: {seq: 3, undo: "nestvirt undo lab1"}
messages:
  description: What the flow reported besides the plan (notes, refusals, progress).
  returned: always
  type: list
  elements: str
error:
  description:
    - When nestvirt refused or failed, the kind of its error, to branch on (the message is
      in C(msg)) - C(UsageError), C(NotFound), C(ConnectError), C(PermissionRequired),
      C(Busy), C(CannotFix), C(Interrupted) or C(NestvirtError).
  returned: on failure
  type: str
  sample: UsageError
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (after the docs)
from ansible_collections.nestvirt.nested.plugins.module_utils.nestvirt import (  # noqa: E402
    HYPERV_ARGUMENT_SPEC,
    HYPERV_REQUIRED_BY,
    LIBVIRT_ARGUMENT_SPEC,
    hyperv_target,
    nestvirt_errors,
    plan_json,
    require_nestvirt,
    run_flow,
    text_diff,
    vm_subject,
)

ACTIONS = {"enabled": "enable", "disabled": "disable", "undone": "undo"}


def _subject(module, progress):
    """The flow's subject: a Hyper-V VM when a Hyper-V option is given, else libvirt."""
    p = module.params
    target = hyperv_target(module)
    subject = vm_subject(
        p["name"],
        target,
        uri=p["uri"],
        timeout=p["timeout"],
        memory_mib=p["memory"],
        mac_spoofing=p["mac_spoofing"],
        stop=p["stop"],
        check_mode=module.check_mode,
        progress=progress,
    )
    return subject, target is not None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "enabled", "choices": list(ACTIONS)},
            "memory": {"type": "int"},
            "mac_spoofing": {"type": "bool", "default": False},
            "stop": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            **LIBVIRT_ARGUMENT_SPEC,
            **HYPERV_ARGUMENT_SPEC,
        },
        mutually_exclusive=[
            ("uri", "hyperv_host", "hyperv_snapshot"),
            ("timeout", "hyperv_host", "hyperv_snapshot"),
        ],
        required_by=HYPERV_REQUIRED_BY,
        supports_check_mode=True,
    )
    require_nestvirt(module)
    p = module.params
    progress: list[str] = []
    with nestvirt_errors(module):
        subject, hyperv = _subject(module, progress.append)
        try:
            outcome, undo = run_flow(
                subject,
                ACTIONS[p["state"]],
                check_mode=module.check_mode,
                stop=p["stop"],
                force=p["force"],
                progress=progress.append,
            )
        finally:
            subject.close()
    changed = (not outcome.plan.empty) if module.check_mode else outcome.changed
    failures = list(getattr(subject, "failures", ()))
    result = {
        "changed": changed,
        "plan": plan_json(subject, outcome),
        "messages": [*progress, *outcome.messages, *failures],
    }
    if changed and module._diff:
        prepared = outcome.diff
        if hyperv:
            prepared += "".join(f"# {change.command}\n" for change in outcome.plan.changes)
        result["diff"] = text_diff(p["name"], prepared)
    if outcome.changed:
        result["journal"] = {"seq": outcome.journal_seq, "undo": undo}
    if failures:
        module.fail_json(msg="; ".join(failures), error="NestvirtError", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
