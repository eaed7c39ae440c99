# Copyright: nestvirt contributors
# SPDX-License-Identifier: MIT (the license of nestvirt and of this collection)
"""What the nestvirt.nested modules share: the import of nestvirt's library (and a clear
failure when the node's Python lacks it), the common argument specs, the conversion of
library results to JSON, and the mapping of nestvirt's errors to a failed result.

    from ansible_collections.nestvirt.nested.plugins.module_utils.nestvirt import (
        LIBVIRT_ARGUMENT_SPEC, nestvirt_errors, require_nestvirt)
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import traceback
from contextlib import contextmanager
from pathlib import PurePath

from ansible.module_utils.basic import missing_required_lib

try:
    from nestvirt.errors import NestvirtError
except ImportError:
    NESTVIRT_IMPORT_ERROR = traceback.format_exc()

    class NestvirtError(Exception):  # type: ignore[no-redef]
        """Stands in while nestvirt is missing (require_nestvirt fails the module first)."""

else:
    NESTVIRT_IMPORT_ERROR = None

NESTVIRT_URL = "https://example.invalid/nestvirt"

# libvirt: the daemon to talk to (nestvirt_facts, nestvirt_vm); documented by the doc
# fragment nestvirt.nested.nestvirt (its DOCUMENTATION)
LIBVIRT_ARGUMENT_SPEC = {
    "uri": {"type": "str", "default": "qemu:///system"},
    "timeout": {"type": "float", "default": 30.0},
}

# Hyper-V through nestvirt's own remote transport (PowerShell Remoting) or a collected
# snapshot file; documented by the doc fragment nestvirt.nested.nestvirt.hyperv
HYPERV_ARGUMENT_SPEC = {
    "hyperv_host": {"type": "str"},
    "hyperv_user": {"type": "str"},
    "hyperv_password": {"type": "str", "no_log": True},
    "hyperv_snapshot": {"type": "path"},
}
HYPERV_REQUIRED_BY = {"hyperv_user": "hyperv_host", "hyperv_password": "hyperv_host"}
# the transport's own environment variables (nestvirt.backends.hyperv_transport)
ENV_HYPERV_USER = "NESTVIRT_HYPERV_USER"
ENV_HYPERV_PASSWORD = "NESTVIRT_HYPERV_PASSWORD"


def require_nestvirt(module):
    """Fail the module, saying which Python lacks it, when nestvirt cannot be imported."""
    if NESTVIRT_IMPORT_ERROR is not None:
        module.fail_json(
            msg=missing_required_lib("nestvirt", url=NESTVIRT_URL),
            exception=NESTVIRT_IMPORT_ERROR,
        )


# nestvirt's messages name its command-line options; a module's user sets module options
CLI_OPTIONS = (
    ("--dry-run", "check mode"),
    ("--stop", "stop=true"),
    ("--force", "force=true"),
    ("--memory", "memory"),
    ("--mac-spoofing", "mac_spoofing=true"),
    ("--hyperv [HOST]", "hyperv_host"),
    ("--hyperv HOST", "hyperv_host"),
    ("--snapshot FILE", "hyperv_snapshot"),
    ("--connect URI", "uri"),
    ("--timeout", "timeout"),
)
_CLI_OPTION = re.compile(
    "|".join(rf"(?<![\w-]){re.escape(cli)}(?![\w-])" for cli, _module in CLI_OPTIONS)
)


def module_words(message):
    """`message` with nestvirt's command-line options named as the module's options; text
    in backquotes (a nestvirt command to run by hand) is left as it is."""
    names = dict(CLI_OPTIONS)
    parts = message.split("`")
    for index in range(0, len(parts), 2):  # outside `...`
        parts[index] = _CLI_OPTION.sub(lambda m: names[m.group(0)], parts[index])
    return "`".join(parts)


@contextmanager
def nestvirt_errors(module):
    """Turn a nestvirt error (its one-line message, in the module's option names) into a
    failed result; `error` names the kind (UsageError, NotFound, ConnectError,
    PermissionRequired, Busy, CannotFix, ...)."""
    try:
        yield
    except NestvirtError as exc:
        module.fail_json(msg=module_words(str(exc) or type(exc).__name__), error=type(exc).__name__)


def jsonable(value):
    """Library values (dataclasses, enums, paths, tuples, sets) as plain JSON values."""
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, (str, int, float, bool)) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


def text_diff(name, prepared):
    """The `diff` of a result whose change is a unified diff nestvirt prepared."""
    return {
        "before_header": f"{name} (before)",
        "after_header": f"{name} (after)",
        "prepared": prepared,
    }


def hyperv_target(module):
    """The Hyper-V options as HyperVSubject's keywords, or None when none is given (libvirt).

    Fails the module for what the library would otherwise ask on a terminal (a password)
    or refuse with its command-line wording (a snapshot outside check mode).
    """
    p = module.params
    host, snapshot = p.get("hyperv_host"), p.get("hyperv_snapshot")
    if not host and not snapshot:
        return None
    if snapshot and not module.check_mode:
        module.fail_json(
            msg=f"hyperv_snapshot {snapshot} is a collected snapshot and read-only: run in "
            "check mode to see the plan, or use hyperv_host to change the VM",
            error="UsageError",
        )
    user = p.get("hyperv_user") or os.environ.get(ENV_HYPERV_USER) or None
    password = p.get("hyperv_password")
    if password is None:
        password = os.environ.get(ENV_HYPERV_PASSWORD)
    if user and password is None:
        # the transport would prompt on a terminal; a module has none to ask on
        module.fail_json(
            msg=f"no password for {user} on {host}: set hyperv_password (or "
            f"{ENV_HYPERV_PASSWORD} in the module's environment)",
            error="UsageError",
        )
    if password is not None and not user:
        module.fail_json(
            msg=f"hyperv_password without a user: set hyperv_user (or {ENV_HYPERV_USER})",
            error="UsageError",
        )
    return {"host": host, "snapshot": snapshot, "user": user, "password": password}


def vm_subject(name, target, *, uri, timeout, memory_mib, mac_spoofing, stop, check_mode, progress):
    """The enable flow's Subject of VM `name`, from the platform nestvirt registers for the
    endpoint (nestvirt.enable.subject_for): libvirt at `uri`, or Hyper-V with `target` from
    hyperv_target(). The password goes to the transport as a value, never into a command
    line or script text."""
    from nestvirt import enable, endpoint

    if target is None:
        where = endpoint.Libvirt(uri)
    else:
        where = endpoint.HyperV(
            host=target["host"],
            snapshot=target["snapshot"],
            user=target["user"],
            password=target["password"],
        )
    request = enable.ChangeRequest(
        memory_kib=None if memory_mib is None else memory_mib * 1024,
        mac_spoofing=mac_spoofing,
        stop=stop,
    )
    return enable.subject_for(
        where, name, request, dry_run=check_mode, progress=progress, timeout=timeout
    )


def plan_json(subject, outcome):
    """The nestvirt.plan/1 document of an outcome, as the CLI's --json prints it (a Hyper-V
    plan's commands are pasteable PowerShell)."""
    from nestvirt import enable

    return jsonable(enable.outcome_json(subject, outcome))


def run_flow(subject, action, *, check_mode, stop, force, progress):
    """nestvirt's enable/disable/undo flow on `subject`, unattended: plan and, unless in
    check mode, apply without asking. Returns (outcome, undo command)."""
    from nestvirt import enable

    outcome = enable.run(
        subject,
        action,
        enable.FlowOptions(dry_run=check_mode, stop=stop, force=force),
        show=lambda _outcome: None,
        confirm=lambda _outcome: True,
        progress=progress,
    )
    return outcome, enable.undo_command(subject)
