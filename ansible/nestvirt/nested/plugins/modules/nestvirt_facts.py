#!/usr/bin/python
# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""Ansible module: nestvirt status as facts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nestvirt_facts
short_description: Nested-virtualization readiness of a libvirt host and its VMs as facts
version_added: "0.1.0"
description:
  - Runs nestvirt's status (its library, not its CLI) on the managed node and returns the
    C(nestvirt.status/1) document as the fact C(nestvirt), plus the finding codes.
  - Read-only; supports check mode.
options:
  vms:
    description: Only these domains (default every domain).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - nestvirt.nested.nestvirt
author:
  - nestvirt contributors (@nestvirt)
"""

EXAMPLES = r"""
- name: Read nestvirt's verdicts
  nestvirt.nested.nestvirt_facts:
    uri: qemu:///system

- name: Fail when a VM cannot nest
  ansible.builtin.fail:
    msg: >-
      {{ ansible_facts.nestvirt.vms | selectattr('verdict', 'ne', 'ready')
         | map(attribute='name') }}
  when: "'NV-V01' in nestvirt_codes"
"""

RETURN = r"""
ansible_facts:
  description: C(nestvirt) is the nestvirt.status/1 document.
  returned: always
  type: dict
verdict:
  description: C(ready) or C(not-ready), for the host and all its VMs together.
  returned: always
  type: str
  sample: not-ready
codes:
  description: Every finding code of the host and its VMs, sorted, once each.
  returned: always
  type: list
  elements: str
  sample: [NV-V01, NV-V03]
vm_codes:
  description: Finding codes per VM name.
  returned: always
  type: dict
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
    LIBVIRT_ARGUMENT_SPEC,
    jsonable,
    nestvirt_errors,
    require_nestvirt,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **LIBVIRT_ARGUMENT_SPEC,
            "vms": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    require_nestvirt(module)
    from nestvirt.status import status

    with nestvirt_errors(module):
        report = status(
            module.params["vms"], connect=module.params["uri"], timeout=module.params["timeout"]
        )
    document = jsonable(report.to_json())
    vm_codes = {vm.name: sorted({f.code for f in vm.findings}) for vm in report.vms}
    codes = sorted(
        {f.code for f in report.host.findings} | {c for cs in vm_codes.values() for c in cs}
    )
    module.exit_json(
        changed=False,
        ansible_facts={"nestvirt": document, "nestvirt_codes": codes},
        verdict=str(report.verdict),
        codes=codes,
        vm_codes=vm_codes,
    )


if __name__ == "__main__":
    main()
