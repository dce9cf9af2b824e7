r"""The ``deepinv-icrf`` program: its table of commands, its parser and :func:`main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from deepinv_icrf import __version__
from deepinv_icrf.cli import demo, fit, hdr, linearize, merge, validate
from deepinv_icrf.cli._common import PROG, CLIError

__all__ = [
    "main",
    "run",
    "exit_now",
    "SUBCOMMANDS",
    "Subcommand",
    "register_subcommand",
    "build_parser",
]


@dataclass(frozen=True)
class Subcommand:
    r"""One ``deepinv-icrf`` subcommand.

    :param str help: one-line description shown by ``--help``.
    :param Callable configure: adds the subcommand's arguments to its parser.
    :param Callable run: runs it from the parsed arguments; returns the exit code. It raises
        :class:`ValueError` or :class:`OSError` for bad input (reported as one error line,
        exit code 2); other exceptions are bugs and keep their traceback.
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: the subcommands, by name, in ``--help`` order
SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(demo.HELP, demo.configure, demo.run),
    "fit": Subcommand(fit.HELP, fit.configure, fit.run_fit),
    "hdr": Subcommand(hdr.HELP, hdr.configure, hdr.run_hdr),
    "linearize": Subcommand(
        linearize.HELP, linearize.configure, linearize.run_linearize
    ),
    "merge": Subcommand(merge.HELP, merge.configure, merge.run_merge),
    "validate": Subcommand(validate.HELP, validate.configure, validate.run_validate),
}


def register_subcommand(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    r"""Add a subcommand to :data:`SUBCOMMANDS`; names must be new.

    :param str name: the command's name.
    :param str help: its one-line description.
    :param Callable configure: ``configure(parser)`` adds its arguments.
    :param Callable run: ``run(args) -> int`` runs it.
    """
    if name in SUBCOMMANDS:
        raise ValueError(f"Subcommand {name!r} already exists.")
    SUBCOMMANDS[name] = Subcommand(help, configure, run)


class _Parser(argparse.ArgumentParser):
    r"""An argument parser whose errors are one line: ``deepinv-icrf: error: ...``."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise CLIError(message)


def build_parser() -> argparse.ArgumentParser:
    r"""The parser of ``deepinv-icrf`` and of every command of :data:`SUBCOMMANDS`.

    Building it imports nothing heavy (no torch, no numpy): ``--help`` and usage errors
    answer at once.
    """
    parser = _Parser(
        prog=PROG,
        description="Fit inverse camera response functions (ICRF) with DeepInverse losses, "
        "linearize images and merge HDR radiance maps. With no command, fits the embedded "
        "demo stack.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, command in SUBCOMMANDS.items():
        command.configure(
            sub.add_parser(name, help=command.help, description=command.help)
        )
    return parser


def _error_text(err: ValueError | OSError) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if (
        isinstance(err, OSError)
        and err.strerror
        and err.filename
        and not str(err).startswith(("Cannot", "No such"))
    ):
        text = f"{err.strerror}: {err.filename!r}"
    return text


def _from_interrupt(err: BaseException) -> bool:
    r"""Whether ``err`` was raised from (or while handling) a ``KeyboardInterrupt``."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of the ``deepinv-icrf`` console script; returns the exit code.

    Exit codes: 0 success, 2 bad input or a system limit such as a full disk (one
    ``deepinv-icrf: error: ...`` line on stderr, no output written), 130 interrupted (no
    output written either).

    :param Sequence, None argv: the arguments (default: ``sys.argv[1:]``); none runs ``demo``.
    :return: (int) the exit code.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["demo"])
        return SUBCOMMANDS[args.command].run(args)
    except SystemExit as stop:  # --help / --version
        return stop.code if isinstance(stop.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except ImportError as err:
        # Ctrl-C while a compiled module initialises (torch's, on first use) surfaces as
        # "ImportError: initialization failed" raised from the KeyboardInterrupt
        if not _from_interrupt(err):
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        # bad input (files, values) and system limits (disk full, permissions): one line;
        # anything else is a bug and keeps its traceback
        print(f"{PROG}: error: {_error_text(err)}", file=sys.stderr)
        return 2


def run(argv: Sequence[str] | None = None) -> NoReturn:
    r"""The ``deepinv-icrf`` console script (and ``python -m deepinv_icrf``): :func:`main`, then
    the end of the process (:func:`exit_now`).

    Standard output may be a pipe whose reader leaves early (``deepinv-icrf fit ... | head``):
    the command then goes on without its printed report (:class:`_ReaderMayLeave`) and its
    outputs land, instead of ending with a "Broken pipe" error and no outputs.

    :param Sequence, None argv: the arguments (default: ``sys.argv[1:]``).
    """
    # sys.stdout is None without a console (pythonw): print() then writes nothing
    if sys.stdout is not None:
        sys.stdout = _ReaderMayLeave(sys.stdout)
    exit_now(main(argv))


class _ReaderMayLeave:
    r"""Standard output that turns to ``os.devnull`` when its reader has left (a broken pipe),
    instead of raising into the command; every other attribute is the stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _gone(self) -> None:
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            # the stream's buffer now drains into nothing
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def exit_now(code: int) -> NoReturn:
    r"""End the process with ``code`` once a command is done, without Python's teardown of
    the modules it loaded.

    Python ends a process by clearing every module and collecting what is left: with torch
    loaded that takes 0.4 s, a tenth of ``hdr`` on a 12 MP bracket and paid by every command.
    A command has closed and moved its outputs into place when :func:`main` returns, so
    here the exit handlers (:mod:`atexit`, ``weakref.finalize``) run, the standard streams are
    flushed, and the process ends (:func:`os._exit`). Where torch was never imported (``--help``,
    usage errors), where a thread other than a daemon is still running, or where this Python
    has no way to run its exit handlers first, the process ends as usual
    (:func:`sys.exit`).

    :param int code: the exit status.
    """
    import atexit
    import os
    import threading

    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    running = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if "torch" not in sys.modules or running or run_handlers is None:
        sys.exit(code)
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream
            pass
    os._exit(code)
