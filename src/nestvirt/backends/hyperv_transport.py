"""How nestvirt talks to Hyper-V: three transports behind one interface.

* `LocalTransport`: `powershell.exe -NoProfile -NonInteractive -EncodedCommand …`
  on this Windows machine; the fixed script is the encoded command, its one
  argument (JSON) goes in on stdin.
* `RemoteTransport`: PowerShell Remoting (WSMan/PSRP) with pypsrp, imported only
  when used; scripts get their argument as a PSRP parameter and cmdlets are
  built with `add_cmdlet`/`add_parameter`.
* `SnapshotTransport`: a `nestvirt.hyperv-snapshot/1` file; read-only.

All three hand back the same snapshot document, so one parser makes the facts.
Nothing a user typed (VM names, ids, credentials) is ever part of script text.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from nestvirt.backends import hyperv_ps
from nestvirt.errors import ConnectError, NestvirtError, PermissionRequired, UsageError

ENV_USER = "NESTVIRT_HYPERV_USER"
ENV_PASSWORD = "NESTVIRT_HYPERV_PASSWORD"
ENV_AUTH = "NESTVIRT_HYPERV_AUTH"  # negotiate (default), kerberos, ntlm, credssp, basic
ENV_CERT_VALIDATION = "NESTVIRT_HYPERV_CERT_VALIDATION"  # "0" to accept any certificate

MAX_COMMAND_LINE = 32767  # CreateProcess limit, in UTF-16 units


class PowerShellError(NestvirtError):
    """A cmdlet failed; the text is its own message, on one line."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Transport(Protocol):
    label: str  # "this computer", "HOST", "snapshot FILE": for messages

    def collect(self, vm_names: Sequence[str] = ()) -> Any:
        """The snapshot document (decoded JSON) for the host and the named VMs (all if none)."""
        ...

    def run_script(self, script: str, args: Mapping[str, Any]) -> Any:
        """Run one of hyperv_ps's fixed scripts with `args` as its only argument; its JSON out."""
        ...

    def run_cmdlet(self, vm_id: str, cmdlet: str, parameters: Mapping[str, Any]) -> None:
        """`Get-VM -Id vm_id | cmdlet -Name value …`, the values passed as parameters."""
        ...

    def close(self) -> None: ...


def _check_cmdlet(cmdlet: str) -> None:
    if cmdlet not in hyperv_ps.WRITE_CMDLETS:
        raise ValueError(f"not a cmdlet nestvirt runs: {cmdlet!r}")


# ---------------------------------------------------------------------------


class LocalTransport:
    """Windows PowerShell on this machine."""

    label = "this computer"

    def __init__(
        self,
        executable: str | None = None,
        runner: Callable[..., subprocess.CompletedProcess[str]] | None = None,
        timeout: float = 900.0,
    ) -> None:
        self._executable = executable
        self._runner = runner or subprocess.run
        self.timeout = timeout

    def executable(self) -> str:
        if self._executable:
            return self._executable
        for name in ("powershell.exe", "powershell", "pwsh.exe", "pwsh"):
            found = shutil.which(name)
            if found:
                self._executable = found
                return found
        raise ConnectError(
            "no Windows PowerShell here: on Linux use `--hyperv HOST` (PowerShell Remoting) "
            "or `--snapshot FILE`"
        )

    def argv(self, script: str) -> list[str]:
        """The command line for one fixed script: the script text is never a user value."""
        encoded = base64.b64encode(hyperv_ps.local_script(script).encode("utf-16-le")).decode()
        argv = [self.executable(), "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
        if sum(len(a) + 3 for a in argv) > MAX_COMMAND_LINE:
            raise AssertionError("encoded script exceeds the Windows command-line limit")
        return argv

    def run_script(self, script: str, args: Mapping[str, Any]) -> Any:
        argv = self.argv(script)
        stdin = json.dumps(dict(args), ensure_ascii=True)
        try:
            proc = self._runner(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self.timeout,
            )
        except FileNotFoundError:
            raise ConnectError(f"cannot run {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise ConnectError(f"PowerShell did not answer within {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            raise _local_error(proc.stderr or "", proc.returncode)
        out = hyperv_ps.extract_json(proc.stdout or "")
        if out is None:
            return None
        try:
            return json.loads(out)
        except ValueError as exc:  # also Python's limit on an integer's digits
            why = getattr(exc, "msg", exc)
            raise PowerShellError(
                f"PowerShell printed something that is not JSON ({why}): {one_line(out)[:200]}"
            ) from None

    def collect(self, vm_names: Sequence[str] = ()) -> Any:
        return self.run_script(hyperv_ps.COLLECT_SCRIPT, {"vm_names": list(vm_names)})

    def run_cmdlet(self, vm_id: str, cmdlet: str, parameters: Mapping[str, Any]) -> None:
        _check_cmdlet(cmdlet)
        wire = {k: hyperv_ps.wire_value(v) for k, v in parameters.items()}
        self.run_script(
            hyperv_ps.INVOKE_SCRIPT, {"vm_id": vm_id, "cmdlet": cmdlet, "parameters": wire}
        )

    def close(self) -> None:
        pass


def _local_error(stderr: str, code: int) -> PowerShellError:
    """The one-line error of a failed local run: the wrapper's framed JSON, else the text.

    powershell.exe -EncodedCommand with redirected streams writes CLIXML records
    (`#< CLIXML` then `<Objs …>` with progress and error records) on stderr:
    progress is noise; an error record's text is kept.
    """
    framed = _framed(stderr)
    if framed is not None:
        return _error_json(framed)
    text, clixml_errors = _strip_clixml(stderr)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            err = json.loads(line)
        except ValueError:  # also Python's limit on an integer's digits
            continue
        if isinstance(err, dict) and "error" in err:
            return _error_json(err)
    text = one_line(" ".join(lines + clixml_errors)) or f"PowerShell exited with code {code}"
    return PowerShellError(text[:500])


def _framed(text: str) -> dict[str, Any] | None:
    if hyperv_ps.JSON_BEGIN not in text:
        return None
    inner = hyperv_ps.extract_json(text)
    try:
        err = json.loads(inner or "")
    except ValueError:  # also Python's limit on an integer's digits
        return None
    return err if isinstance(err, dict) and "error" in err else None


def _error_json(err: dict[str, Any]) -> PowerShellError:
    command = err.get("command") or ""
    prefix = f"{command}: " if command else ""
    return PowerShellError(one_line(f"{prefix}{err['error']}"))


_CLIXML_ERROR = re.compile(r'<S S="Error">(.*?)</S>', re.S)


def _strip_clixml(stderr: str) -> tuple[str, list[str]]:
    """(stderr without CLIXML, the text of its error records)."""
    if "#< CLIXML" not in stderr:
        return stderr, []
    errors: list[str] = []
    kept: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("#< CLIXML"):
            continue
        if line.lstrip().startswith("<Objs"):
            for raw in _CLIXML_ERROR.findall(line):
                text = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), raw)
                errors.append(html.unescape(text).strip())
            continue
        kept.append(line)
    return "\n".join(kept), [e for e in errors if e]


# ---------------------------------------------------------------------------


def parse_host_spec(spec: str) -> tuple[str, int, bool]:
    """'HOST', 'HOST:PORT', 'http://HOST[:PORT]' or 'https://HOST[:PORT]' → (host, port, ssl).

    Plain names use HTTP on 5985 (WinRM's default listener; negotiate/Kerberos
    encrypt the messages); https:// uses 5986.
    """
    text = spec.strip()
    if not text:
        raise UsageError("--hyperv: empty host name")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--hyperv {spec!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--hyperv {spec!r}: expected HOST, HOST:PORT or https://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise UsageError(f"--hyperv {spec!r}: expected HOST, HOST:PORT or https://HOST[:PORT]")
    ssl = parts.scheme == "https"
    return parts.hostname, port or (5986 if ssl else 5985), ssl


def resolve_credentials(
    host: str, user: str | None, password: str | None, *, interactive: bool | None = None
) -> tuple[str | None, str | None]:
    """Options first, then NESTVIRT_HYPERV_USER / _PASSWORD, then a hidden prompt.

    No user at all means the current Kerberos/Windows identity. The password is
    never printed, logged, or put in an error message.
    """
    user = user or os.environ.get(ENV_USER) or None
    password = password if password is not None else os.environ.get(ENV_PASSWORD)
    if user and password is None:
        if interactive is None:
            interactive = sys.stdin.isatty()
        if not interactive:
            raise UsageError(
                f"no password for {user} on {host}: set {ENV_PASSWORD} or run on a terminal"
            )
        import getpass

        password = getpass.getpass(f"Password for {user} on {host}: ")
    return user, password


class RemoteTransport:
    """PowerShell Remoting to HOST with pypsrp (a RunspacePool opened on first use)."""

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        ssl: bool | None = None,
        auth: str | None = None,
        cert_validation: bool | None = None,
        encryption: str = "auto",
        operation_timeout: int = 300,
    ) -> None:
        name, spec_port, spec_ssl = parse_host_spec(host)
        self.host = name
        self.label = name
        self.port = port or spec_port
        self.ssl = spec_ssl if ssl is None else ssl
        self.auth = auth or os.environ.get(ENV_AUTH) or "negotiate"
        if cert_validation is None:
            cert_validation = os.environ.get(ENV_CERT_VALIDATION, "1") != "0"
        self.cert_validation = cert_validation
        self.encryption = encryption
        self.operation_timeout = operation_timeout
        self._user = user
        self._password = password
        self._pool: Any = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"RemoteTransport({self.host!r}, port={self.port}, ssl={self.ssl}, auth={self.auth!r})"
        )

    def _open(self) -> Any:
        if self._pool is not None:
            return self._pool
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        try:
            wsman = self._wsman(WSMan)
        except ValueError as exc:  # pypsrp refuses an option combination
            raise UsageError(f"PowerShell Remoting to {self.host}: {one_line(str(exc))}") from None
        pool = RunspacePool(wsman)
        with self._errors("open a PowerShell session"):
            pool.open()
        self._pool = pool
        return pool

    def _wsman(self, wsman_class: Any) -> Any:
        return wsman_class(
            self.host,
            port=self.port,
            ssl=self.ssl,
            username=self._user,
            password=self._password,
            auth=self.auth,
            cert_validation=self.cert_validation,
            encryption=self.encryption,
            operation_timeout=min(self.operation_timeout, 60),
            read_timeout=self.operation_timeout + 10,
        )

    def _errors(self, doing: str) -> Any:
        return _RemoteErrors(self, doing)

    def _invoke(self, build: Callable[[Any], None], doing: str) -> list[Any]:
        from pypsrp.powershell import PowerShell

        pool = self._open()
        ps = PowerShell(pool)
        build(ps)
        with self._errors(doing):
            output = ps.invoke()
        # a cmdlet's non-terminating error only lands in the error stream
        if ps.had_errors or ps.streams.error:
            raise PowerShellError(_psrp_error_text(ps.streams.error) or f"{doing} failed")
        return list(output)

    def run_script(self, script: str, args: Mapping[str, Any]) -> Any:
        payload = json.dumps(dict(args), ensure_ascii=True)

        def build(ps: Any) -> None:
            ps.add_script(script).add_parameter("ArgsJson", payload)

        output = self._invoke(build, "the nestvirt script")
        text = hyperv_ps.extract_json("\n".join(str(o) for o in output if o is not None))
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:  # also Python's limit on an integer's digits
            raise PowerShellError(
                f"{self.host} returned something that is not JSON: {getattr(exc, 'msg', exc)}"
            ) from None

    def collect(self, vm_names: Sequence[str] = ()) -> Any:
        return self.run_script(hyperv_ps.COLLECT_SCRIPT, {"vm_names": list(vm_names)})

    def run_cmdlet(self, vm_id: str, cmdlet: str, parameters: Mapping[str, Any]) -> None:
        _check_cmdlet(cmdlet)

        from pypsrp.serializer import TaggedValue

        def psrp_value(value: Any) -> Any:
            if value is None:
                return None  # a switch, for pypsrp too
            wire = hyperv_ps.wire_value(value)
            if isinstance(wire, int) and not isinstance(wire, bool):
                # pypsrp tags every int I32; byte counts (StartupBytes) need Int64
                return TaggedValue("I64", wire)
            return wire

        def build(ps: Any) -> None:
            ps.add_cmdlet("Get-VM").add_parameter("Id", vm_id)
            ps.add_cmdlet(cmdlet)
            for name, value in parameters.items():
                ps.add_parameter(name, psrp_value(value))

        self._invoke(build, cmdlet)

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            # closing a broken session must not hide the real error
            with contextlib.suppress(Exception):
                pool.close()


class _RemoteErrors:
    """Turn pypsrp/requests failures into one-line ConnectError/PermissionRequired."""

    def __init__(self, transport: RemoteTransport, doing: str) -> None:
        self.t = transport
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, NestvirtError):
            return
        import requests
        from pypsrp import exceptions as pe

        where = f"{self.t.host}:{self.t.port}"
        if isinstance(exc, pe.AuthenticationError):
            raise PermissionRequired(
                f"{where}: authentication failed: {one_line(str(exc))}"
            ) from None
        if isinstance(exc, pe.WSManFaultError):
            reason = exc.reason or exc.message or str(exc)
            raise ConnectError(f"{where}: cannot {self.doing}: {one_line(str(reason))}") from None
        if isinstance(exc, pe.WinRMTransportError):
            if exc.code in (401, 403):
                raise PermissionRequired(f"{where}: access denied (HTTP {exc.code})") from None
            raise ConnectError(f"{where}: WinRM answered HTTP {exc.code}") from None
        if isinstance(exc, requests.exceptions.SSLError):
            raise ConnectError(f"{where}: TLS failed: {one_line(str(exc))[:200]}") from None
        if isinstance(exc, requests.exceptions.RequestException):
            raise ConnectError(
                f"cannot reach {where} (PowerShell Remoting): {type(exc).__name__}"
            ) from None
        if isinstance(exc, pe.WinRMError):
            raise ConnectError(f"{where}: {one_line(str(exc))[:300]}") from None


def _psrp_error_text(records: Sequence[Any]) -> str:
    for record in records:
        # InvocationInfo is only there with extended info; ErrorCategory_Activity
        # carries the cmdlet's name in records Windows sends either way.
        command = (
            getattr(record, "invocation_name", None) or getattr(record, "activity", None) or ""
        )
        message = None
        exception = getattr(record, "exception", None)
        adapted = getattr(exception, "adapted_properties", None) or {}
        if isinstance(adapted, dict):
            message = adapted.get("Message")
        if not message:
            message = str(record) or getattr(record, "message", None)
        if message:
            prefix = f"{command}: " if command and not str(message).startswith(command) else ""
            return one_line(f"{prefix}{message}")
    return ""


# ---------------------------------------------------------------------------


class SnapshotTransport:
    """A collected snapshot file: facts only, nothing can be changed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = f"snapshot {self.path}"

    def collect(self, vm_names: Sequence[str] = ()) -> Any:
        raise AssertionError("read snapshot files with facts.hyperv.load_snapshot")

    def run_script(self, script: str, args: Mapping[str, Any]) -> Any:
        raise UsageError(f"{self.label} is read-only: use --hyperv [HOST] to change a VM")

    def run_cmdlet(self, vm_id: str, cmdlet: str, parameters: Mapping[str, Any]) -> None:
        raise UsageError(f"{self.label} is read-only: use --hyperv [HOST] to change a VM")

    def close(self) -> None:
        pass


def open_transport(
    *,
    host: str | None,
    snapshot: str | Path | None,
    user: str | None = None,
    password: str | None = None,
) -> Transport:
    """--snapshot FILE, --hyperv HOST (remote) or --hyperv alone / nothing (local)."""
    if host and snapshot:
        raise UsageError("give either --hyperv HOST or --snapshot FILE, not both")
    if snapshot:
        return SnapshotTransport(snapshot)
    if host:
        name, _, _ = parse_host_spec(host)
        user, password = resolve_credentials(name, user, password)
        return RemoteTransport(host, user=user, password=password)
    return LocalTransport()


__all__ = [
    "ENV_PASSWORD",
    "ENV_USER",
    "LocalTransport",
    "PowerShellError",
    "RemoteTransport",
    "SnapshotTransport",
    "Transport",
    "open_transport",
    "parse_host_spec",
    "resolve_credentials",
]
