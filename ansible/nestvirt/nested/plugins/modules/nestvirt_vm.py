#!/usr/bin/python
# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""Ansible module: nestvirt enable / disable / undo for one libvirt domain."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nestvirt_vm
short_description: Make a libvirt VM ready for nested virtualization (or undo it)
version_added: "0.1.0"
description:
  - Runs nestvirt's enable, disable or undo flow (its library, not its CLI) for one libvirt
    domain on the managed node. Every change is journaled; C(state=undone) puts back the
    definition of the latest change exactly.
  - Check mode returns the plan and changes nothing; diff mode returns the domain XML diff.
  - C(changed) is true only when the domain's definition changed.
options:
  name:
    description: The domain's name.
    type: str
    required: true
  state:
    description:
      - C(enabled) exposes vmx/svm and fixes what blocks nesting; C(disabled) hides them
        again; C(undone) restores the definition before nestvirt's latest change.
    type: str
    choices: [enabled, disabled, undone]
    default: enabled
  uri:
    description: libvirt URI of the daemon.
    type: str
    default: qemu:///system
  memory:
    description: Also set the domain's memory to this many MiB (enable only).
    type: int
  mac_spoofing:
    description: Also allow foreign MACs through the domain's nwfilter (enable only).
    type: bool
    default: false
  stop:
    description: Stop a running domain for the change and start it again.
    type: bool
    default: false
  timeout:
    description: Seconds libvirt may stay silent before the module fails.
    type: float
    default: 30
requirements:
  - nestvirt (and libvirt-python) in the Python interpreter Ansible uses on the node
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
"""

RETURN = r"""
plan:
  description: The nestvirt.plan/1 document (what was, or in check mode would be, done).
  returned: always
  type: dict
journal:
  description: The journal entry of the change, and how to undo it by hand.
  returned: when something changed
  type: dict
  sample: {seq: 3, undo: "nestvirt undo lab1"}
messages:
  description: What the flow reported besides the plan (notes, refusals).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

ACTIONS = {"enabled": "enable", "disabled": "disable", "undone": "undo"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "enabled", "choices": list(ACTIONS)},
            "uri": {"type": "str", "default": "qemu:///system"},
            "memory": {"type": "int"},
            "mac_spoofing": {"type": "bool", "default": False},
            "stop": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 30.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        from nestvirt import enable
        from nestvirt.errors import NestvirtError
        from nestvirt.plan_libvirt import PlanOptions
    except ImportError as exc:
        module.fail_json(msg=f"nestvirt is not installed for this Python: {exc}")
        return
    options = PlanOptions(
        memory_kib=None if p["memory"] is None else p["memory"] * 1024,
        mac_spoofing=p["mac_spoofing"],
        stop=p["stop"],
    )
    try:
        subject = enable.LibvirtSubject(p["uri"], p["name"], options, timeout=p["timeout"])
        try:
            outcome = enable.run(
                subject,
                ACTIONS[p["state"]],
                enable.FlowOptions(dry_run=module.check_mode, stop=p["stop"]),
                show=lambda _outcome: None,
                confirm=lambda _outcome: True,
            )
            undo = subject.undo_command()
        finally:
            subject.close()
    except NestvirtError as exc:
        module.fail_json(msg=str(exc))
        return
    changed = (not outcome.plan.empty) if module.check_mode else outcome.changed
    result = {
        "changed": changed,
        "plan": outcome.to_json(),
        "messages": list(outcome.messages),
    }
    if changed and module._diff:
        result["diff"] = {
            "before_header": f"{p['name']} (before)",
            "after_header": f"{p['name']} (after)",
            "prepared": outcome.diff,
        }
    if outcome.changed:
        result["journal"] = {"seq": outcome.journal_seq, "undo": undo}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
