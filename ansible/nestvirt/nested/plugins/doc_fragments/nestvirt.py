# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""Shared option documentation of the nestvirt.nested modules."""

from __future__ import annotations


class ModuleDocFragment:
    # the libvirt connection (module_utils.nestvirt.LIBVIRT_ARGUMENT_SPEC)
    DOCUMENTATION = r"""
options:
  uri:
    description: libvirt URI of the daemon.
    type: str
    default: qemu:///system
  timeout:
    description: Seconds libvirt may stay silent before the module fails.
    type: float
    default: 30
requirements:
  - nestvirt (and libvirt-python) in the Python interpreter Ansible uses on the node
"""

    # Hyper-V through nestvirt's remote transport (module_utils.nestvirt.HYPERV_ARGUMENT_SPEC)
    HYPERV = r"""
options:
  hyperv_host:
    description:
      - A Hyper-V host to manage instead of a libvirt domain, over PowerShell Remoting
        (WinRM) with nestvirt's own transport, from the Linux node the module runs on
        (typically the control node, with C(delegate_to) V(localhost)).
      - C(HOST) or C(HOST:PORT) is HTTP (port 5985 by default, messages encrypted by
        Negotiate/Kerberos); C(https://HOST[:PORT]) is HTTPS (port 5986 by default).
      - The environment variables C(NESTVIRT_HYPERV_AUTH) (negotiate, kerberos, ntlm,
        credssp, basic) and C(NESTVIRT_HYPERV_CERT_VALIDATION=0) of the module's
        environment are honoured, as by nestvirt's CLI.
      - Needs C(pypsrp) on the node. Mutually exclusive with O(uri), O(timeout) and
        O(hyperv_snapshot).
    type: str
    version_added: "0.2.0"
  hyperv_user:
    description:
      - The Windows account for O(hyperv_host) (C(DOMAIN\user) or C(user@REALM)).
        Default C(NESTVIRT_HYPERV_USER) of the module's environment, else the node's
        current Kerberos identity.
    type: str
    version_added: "0.2.0"
  hyperv_password:
    description:
      - The password of O(hyperv_user). Default C(NESTVIRT_HYPERV_PASSWORD) of the
        module's environment. It is handed to the transport directly, never put into
        a command or a result.
    type: str
    version_added: "0.2.0"
  hyperv_snapshot:
    description:
      - A C(nestvirt.hyperv-snapshot/1) file (from C(nestvirt collect)) on the node, to
        plan against instead of a live host. A snapshot is read-only, so the module
        only runs in check mode with it and fails otherwise.
    type: path
    version_added: "0.2.0"
"""
