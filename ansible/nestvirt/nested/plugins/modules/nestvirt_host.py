#!/usr/bin/python
# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""Ansible module: nestvirt host enable on the managed node (nested=1, /dev/kvm access)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nestvirt_host
short_description: Make a Linux KVM host ready for nested virtualization
version_added: "0.1.0"
description:
  - Runs nestvirt's C(host enable) flow (its library, not its CLI) on the managed node
    turns on the KVM vendor module's C(nested) parameter (a modprobe.d file, and a module
    reload when no VM runs) and gives C(/dev/kvm) group C(kvm) mode 0660 (rule NV-H09), with
    a udev rule where udev runs. Every change is journaled under nestvirt's state directory.
  - Check mode returns the plan and changes nothing; diff mode returns the files and device
    settings that change. C(changed) is true only when something was changed.
  - A host whose KVM module has no C(nested) parameter (for example a paravirtual one) gets
    a note, not a failure.
options: {}
requirements:
  - nestvirt in the Python interpreter Ansible uses on the node; root (become)
author:
  - nestvirt contributors (@nestvirt)
"""

EXAMPLES = r"""
- name: Nested virtualization on every hypervisor host
  become: true
  nestvirt.nested.nestvirt_host:
"""

RETURN = r"""
plan:
  description: What was (or in check mode would be) changed, as nestvirt.host-plan/1.
  returned: always
  type: dict
messages:
  description: What was verified afterwards, and the plan's notes.
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
    jsonable,
    nestvirt_errors,
    require_nestvirt,
)


def _diff(plan: object) -> dict[str, str]:
    """Before/after text of every change, for --diff."""
    before, after = [], []
    for change in getattr(plan, "changes", ()):
        path = getattr(change, "path", None)
        if path is not None and getattr(change, "content", None) is not None:
            try:
                old = path.read_text()
            except OSError:
                old = ""
            before.append(f"# {path}\n{old}")
            after.append(f"# {path}\n{change.content}")
        else:
            before.append(f"# {change.action}")
            after.append(f"# {change.action}: {change.summary}")
    return {"before": "\n".join(before), "after": "\n".join(after)}


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    require_nestvirt(module)
    from nestvirt import hostconf

    shown: list[object] = []
    with nestvirt_errors(module):
        outcome = hostconf.host_enable(
            dry_run=module.check_mode,
            confirm=lambda _plan: True,
            show=shown.append,
        )
    changed = (not outcome.plan.empty) if module.check_mode else outcome.applied
    result = {
        "changed": changed,
        "plan": jsonable(outcome.to_json()),
        "messages": [*outcome.messages, *outcome.plan.notes],
    }
    if changed and module._diff and shown:
        result["diff"] = _diff(shown[0])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
