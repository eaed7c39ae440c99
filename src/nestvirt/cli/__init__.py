"""The `nestvirt` command: parse, call the library, render. No policy here.

Each subcommand lives in its own module and is imported only when run, so
`nestvirt status` does not pay for libvirt, rich or PowerShell Remoting. click
itself is imported when the group (`app`) is first used: the console entry point
(`run`) answers `nestvirt status --host-only [--json]` without it (`_fast_status`,
docs/architecture.md "Lazy imports"), with the same output, exit codes and errors.
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

import os  # noqa: E402
import sys  # noqa: E402

from nestvirt import __version__  # noqa: E402
from nestvirt.errors import ExitCode, NestvirtError, from_interrupt  # noqa: E402

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import click

    app: click.Group  # made by _click_app() on first use (module __getattr__)

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


def __getattr__(name: str) -> Any:
    """`app` and `LazyGroup` are made, with click, when first asked for."""
    if name in ("app", "LazyGroup"):
        return _click_app()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _click_app() -> dict[str, Any]:
    """Import click and define the `nestvirt` group (once); the module's globals."""
    made = globals()
    if "app" in made:
        return made
    import importlib

    import click

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

    LazyGroup.__qualname__ = "LazyGroup"

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="nestvirt")
    @click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
    @click.pass_context
    def app(ctx: click.Context, debug: bool) -> None:
        """Check, switch on, prove and keep safe nested virtualization."""
        ctx.obj = {"debug": debug}

    made.update(app=app, LazyGroup=LazyGroup)
    return made


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
            import threading

            again = threading.Timer(0.02, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map library errors to one stderr line and exit 2 (or their own code)."""
    return _with_sigint(argv, fast=False)


def _with_sigint(argv: list[str] | None, *, fast: bool) -> int:
    """main() with Ctrl-C as KeyboardInterrupt (`_sigint`) while it runs; `fast`
    (`_fast_argv`, decided by the console entry point): `status --host-only [--json]`
    without click."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("NESTVIRT_DEBUG"))
    if not fast and _deferring_sigint(_click_app):
        sys.stderr.write("nestvirt: interrupted\n")  # as if it came while this module imported
        return int(ExitCode.INTERRUPTED)
    previous = None
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        try:
            previous = _signal.signal(_signal.SIGINT, _sigint)
        except ValueError:  # not the main thread: Ctrl-C is not ours to handle
            previous = None
    try:
        if fast:
            return _fast_status("--json" in args, debug)
        return _main(argv, debug)
    finally:
        if previous is not None:
            _signal.signal(_signal.SIGINT, previous)


def _deferring_sigint(work: Callable[[], object]) -> bool:
    """work() with Ctrl-C only noted, as while this module imports (click's import is
    where most Ctrl-Cs at start-up land); whether one came."""
    seen: list[int] = []
    if _signal.getsignal(_signal.SIGINT) is not _signal.default_int_handler:
        work()
        return False
    try:
        saved = _signal.signal(_signal.SIGINT, lambda signum, _frame: seen.append(signum))
    except ValueError:  # not the main thread
        work()
        return False
    try:
        work()
    finally:
        _signal.signal(_signal.SIGINT, saved)
    return bool(seen)


def _main(argv: list[str] | None, debug: bool) -> int:
    return _mapped(
        lambda: _click_app()["app"].main(args=argv, prog_name="nestvirt", standalone_mode=False),
        debug,
    )


def _mapped(invoke: Callable[[], Any], debug: bool) -> int:
    """Run `invoke` (app.main, standalone_mode=False) and map what it raises to a line on
    stderr and an exit code. click is imported by then whenever a click exception can be
    raised; without it (the fast path) the click clauses are skipped."""
    try:
        result: Any = invoke()
    except NestvirtError as exc:
        if debug:
            raise
        _echo(f"nestvirt: {exc}")
        return int(exc.exit_code)
    except Exception as exc:
        click = sys.modules.get("click")
        if click is not None and isinstance(exc, click.exceptions.Abort):
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click wraps Ctrl-C in Abort
                _echo("nestvirt: interrupted")
                return int(ExitCode.INTERRUPTED)
            _echo("nestvirt: aborted")
            return int(ExitCode.USAGE)
        if click is not None and isinstance(exc, click.ClickException):
            exc.show()
            return int(ExitCode.USAGE)
        if click is not None and isinstance(exc, click.exceptions.Exit):
            return int(exc.exit_code)
        if debug:
            raise
        if from_interrupt(exc):  # e.g. Ctrl-C while a class is made: RuntimeError from it
            _echo("nestvirt: interrupted")
            return int(ExitCode.INTERRUPTED)
        lost = _libvirt_failure(exc)
        if lost is not None:
            _echo(f"nestvirt: {lost}")
            return int(ExitCode.USAGE)
        import traceback

        traceback.print_exc()
        _echo("nestvirt: internal error (a bug in nestvirt; please report it)")
        return int(ExitCode.INTERNAL)
    except KeyboardInterrupt:
        _echo("nestvirt: interrupted")
        return int(ExitCode.INTERRUPTED)
    return int(result or 0)


def _echo(line: str) -> None:
    """click.echo(line, err=True), as the click path says it."""
    import click

    click.echo(line, err=True)


def _libvirt_failure(exc: Exception) -> str | None:
    """libvirt's own error (a lost or timed-out connection mid-command) as one line."""
    if type(exc).__name__ != "libvirtError" or type(exc).__module__ != "libvirt":
        return None
    message = str(getattr(exc, "get_error_message", lambda: None)() or exc)
    if "keepalive" in message:
        message += " (libvirtd stopped answering for longer than --timeout)"
    return f"libvirt: {message}"


# ---------------------------------------------------------------------------------------------
# `nestvirt status --host-only [--json]` without click
#
# The one command people (and monitoring) run most often, where click's import was a
# third of the run time. It is the body of nestvirt.cli.status.command for exactly these
# arguments; tests/cli/test_fast_path.py runs both paths as real processes and compares
# their stdout, stderr and exit codes, and checks the arguments below against the click
# command's defaults.

# The keyword arguments nestvirt.cli.status.command passes to status() for
# `status --host-only [--json]` (its options' defaults).
FAST_STATUS_ARGS: dict[str, Any] = {
    "connect": None,
    "host_only": True,
    "hyperv": None,
    "snapshot": None,
    "timeout": 30.0,
}
# status.host_report()'s probe: started in a child process at once (nestvirt.probe.prefetch)
# so that it runs while this process imports the rest; same arguments as host_report's.
FAST_PROBE_TIMEOUT = 2.0


def _fast_argv(args: list[str]) -> bool:
    """`status --host-only [--json]`, options in any order, each once; nothing else (no
    --help, no other option, no VM name) and no shell-completion request for click."""
    return (
        len(args) in (2, 3)
        and args[0] == "status"
        and sorted(args[1:]) in (["--host-only"], ["--host-only", "--json"])
        and not os.environ.get("_NESTVIRT_COMPLETE")
    )


def _fast_status(as_json: bool, debug: bool) -> int:
    """nestvirt.cli.status.command(vms=(), --host-only, [--json]) without click. What it
    raises is raised again inside a click command run like `app` (`_replay`), so click's
    handling (Ctrl-C or EOF as Abort after an empty line, a closed stdout as exit 1) and
    `_mapped`'s apply as they do on the click path."""
    try:
        from nestvirt import probe
        from nestvirt.probe import result  # noqa: F401 (before the fork: both processes need it)

        probe.prefetch(timeout=FAST_PROBE_TIMEOUT)
        return _status_command(as_json)
    except (Exception, KeyboardInterrupt) as exc:
        return _replay(exc, debug)
    finally:
        started = sys.modules.get("nestvirt.probe")
        if started is not None:
            started.discard_prefetched()  # a probe status() did not ask for (it always does)


def _status_command(as_json: bool) -> int:
    """The click command's body for these arguments. status() would hand `--host-only`
    without --connect/--hyperv/--snapshot to the default platform (libvirt), whose answer
    is StatusReport(host_report()) and nothing else: asked directly, as here, it loads
    none of the libvirt platform's flows (enable, preflight, plans), only the host's."""
    from nestvirt import rules
    from nestvirt.model import StatusReport
    from nestvirt.render import print_json, print_status
    from nestvirt.status import host_report

    # What host_report() and the output will import anyway, imported while the probe
    # runs in its child (before host_report waits for it): the Linux rules.
    rules.load(rules.Platform.LINUX)
    report = StatusReport(host_report())
    for note in report.notes:
        _echo(f"nestvirt: {note}")
    if as_json:
        print_json(report.to_json())
    else:
        print_status(report)
    return int(ExitCode.READY if report.verdict == "ready" else ExitCode.NOT_READY)


def _replay(exc: BaseException, debug: bool) -> int:
    """Exit code (and stderr) of the click path for a command that raised `exc`."""
    import click

    def fail() -> None:
        raise exc

    command = click.Command("status", callback=fail)
    return _mapped(
        lambda: command.main(args=[], prog_name="nestvirt", standalone_mode=False), debug
    )


def run() -> None:
    fast = _fast_argv(sys.argv[1:])
    if fast:
        # No cyclic garbage collection in this short process: its imports (dataclasses
        # above all) make objects by the thousand and few cycles; collecting them,
        # during the run or once re-enabled, costs milliseconds.
        import gc

        gc.disable()
    try:
        code = _with_sigint(None, fast=fast)
    except KeyboardInterrupt:  # a second Ctrl-C while main() was reporting the first
        code = int(ExitCode.INTERRUPTED)
    # the work is done and said: a Ctrl-C now would only garble the interpreter's exit
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    if fast:
        _exit_at_once(code)
    sys.exit(code)


def _exit_at_once(code: int) -> None:
    """End the process without the interpreter's teardown, which frees every object of
    every module one by one (~8 ms of CPU after `status --host-only`). What of it can be
    seen is done here: atexit functions run, stdout and stderr are flushed. Returns (to
    the ordinary exit) when another thread still runs or a flush fails: that exit then
    joins the thread, or reports the failed flush (exit 120) as it always does."""
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # a closed pipe, say: the ordinary exit reports it
        return
    os._exit(code)


if _saved_sigint is not None:
    _signal.signal(_signal.SIGINT, _saved_sigint)
    if _interrupted:
        sys.stderr.write("nestvirt: interrupted\n")
        raise SystemExit(int(ExitCode.INTERRUPTED))
