"""The `nestvirt` command: parse, call the library, render. No policy here.

Each subcommand lives in its own module and is imported only when run, so
`nestvirt status` does not pay for libvirt, rich or PowerShell Remoting.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module: importing `signal` (enums) alone takes milliseconds

# Ctrl-C while this module imports would end in a KeyboardInterrupt traceback
# (main() is not running yet to catch it): until the end of this module it only
# sets a flag, and the module then exits quietly with 130.
_interrupted: list[int] = []
_saved_sigint = None
if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    try:  # noqa: SIM105 (contextlib is one more import before the handler is in place)
        _saved_sigint = _signal.signal(
            _signal.SIGINT, lambda signum, _frame: _interrupted.append(signum)
        )
    except ValueError:  # not the main thread: nothing to defer
        pass

import importlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from nestvirt import __version__  # noqa: E402
from nestvirt.errors import ExitCode, NestvirtError, from_interrupt  # noqa: E402

# command name -> module in nestvirt.cli defining `command`
COMMANDS: dict[str, str] = {
    "status": "status",
    "explain": "explain",
    "probe": "probe",
    "enable": "enable",
    "disable": "enable",
    "undo": "enable",
    "history": "enable",
    "host": "host",
    "lab": "lab",
    "preflight": "preflight",
    "guard": "guard",
    "collect": "collect",
}

# Where a module defines several commands, the attribute for each.
ATTRIBUTES = {"disable": "disable_command", "undo": "undo_command", "history": "history_command"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"nestvirt.cli.{module_name}")
        command: click.Command = getattr(module, ATTRIBUTES.get(cmd_name, "command"))
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nestvirt")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def app(ctx: click.Context, debug: bool) -> None:
    """Check, switch on, prove and keep safe nested virtualization."""
    ctx.obj = {"debug": debug}


# weakref callbacks (a WeakKeyDictionary dropping a closed connection) run as finalizers
_FINALIZER_FILES = ("weakref.py", "_weakrefset.py")


def _sigint(signum: int, frame: Any) -> None:
    """Ctrl-C as KeyboardInterrupt, except inside a finalizer (`__del__`, e.g. of a libvirt
    object, or a weakref callback): Python would print that one as "Exception ignored …
    Traceback" and go on. There the signal is sent again a moment later, to land in
    ordinary code."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith(_FINALIZER_FILES):
            again = threading.Timer(0.02, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map library errors to one stderr line and exit 2 (or their own code)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("NESTVIRT_DEBUG")
    )
    previous = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        previous = signal.signal(signal.SIGINT, _sigint)
    try:
        return _main(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None, debug: bool) -> int:
    try:
        result: Any = app.main(args=argv, prog_name="nestvirt", standalone_mode=False)
    except NestvirtError as exc:
        if debug:
            raise
        click.echo(f"nestvirt: {exc}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click wraps Ctrl-C in Abort
            click.echo("nestvirt: interrupted", err=True)
            return int(ExitCode.INTERRUPTED)
        click.echo("nestvirt: aborted", err=True)
        return int(ExitCode.USAGE)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("nestvirt: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if debug:
            raise
        if from_interrupt(exc):  # e.g. Ctrl-C while a class is made: RuntimeError from it
            click.echo("nestvirt: interrupted", err=True)
            return int(ExitCode.INTERRUPTED)
        lost = _libvirt_failure(exc)
        if lost is not None:
            click.echo(f"nestvirt: {lost}", err=True)
            return int(ExitCode.USAGE)
        import traceback

        traceback.print_exc()
        click.echo("nestvirt: internal error (a bug in nestvirt; please report it)", err=True)
        return int(ExitCode.INTERNAL)
    return int(result or 0)


def _libvirt_failure(exc: Exception) -> str | None:
    """libvirt's own error (a lost or timed-out connection mid-command) as one line."""
    if type(exc).__name__ != "libvirtError" or type(exc).__module__ != "libvirt":
        return None
    message = str(getattr(exc, "get_error_message", lambda: None)() or exc)
    if "keepalive" in message:
        message += " (libvirtd stopped answering for longer than --timeout)"
    return f"libvirt: {message}"


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while main() was reporting the first
        code = int(ExitCode.INTERRUPTED)
    # the work is done and said: a Ctrl-C now would only garble the interpreter's exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if _saved_sigint is not None:
    _signal.signal(_signal.SIGINT, _saved_sigint)
    if _interrupted:
        sys.stderr.write("nestvirt: interrupted\n")
        raise SystemExit(int(ExitCode.INTERRUPTED))
