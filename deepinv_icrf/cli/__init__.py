r"""Command line: ``deepinv-icrf`` (no arguments: fit the embedded demo stack).

One module per command (``demo``, ``fit``, ``hdr``, ``linearize``,
``merge``, ``validate``), each with a ``configure(parser)`` that adds its arguments and a
``run(args) -> int``; the table :data:`SUBCOMMANDS` (in ``cli/app.py``, with the parser and
:func:`main`) names them, and a new command is one more entry (see
:func:`register_subcommand`). A command parses, calls the library and prints: the statistics
and summaries it prints are library functions
(:func:`deepinv_icrf.calibration.fit_summary`,
:func:`deepinv_icrf.hdr_summary.radiance_summary`). An option whose default is the library's is
passed on only when given, so that each default is written once, in the library.

Start-up: building the parser imports neither torch nor numpy (the package's top level is
lazy), so ``deepinv-icrf --help``, ``--version`` and usage errors answer at once; a command
imports what it needs when it runs.

Every command writes its output files as one set (:class:`deepinv_icrf.io.OutputSet`): into
a hidden folder beside the targets, moved into place at the end, so that an error, Ctrl-C or a
full disk leaves the previous outputs untouched and two runs into one folder leave one
complete set. An output path that is one of the command's inputs (or a link to one), or
another of its outputs, is refused before anything is computed. Bad input ends with exit
code 2 and one line ``deepinv-icrf: error: ...`` on stderr, no traceback, and no output; a
genuine bug still shows its traceback.
"""

from __future__ import annotations

from deepinv_icrf.cli import app as _app
from deepinv_icrf.cli._common import CLIError
from deepinv_icrf.cli.app import Subcommand, main, register_subcommand
from deepinv_icrf.cli.demo import run_demo
from deepinv_icrf.cli.fit import run_fit
from deepinv_icrf.cli.hdr import run_hdr
from deepinv_icrf.cli.linearize import run_linearize
from deepinv_icrf.cli.merge import run_merge
from deepinv_icrf.cli.validate import run_validate

#: The subcommands by name, in ``--help`` order: :class:`Subcommand` entries (one more with
#: :func:`register_subcommand`).
SUBCOMMANDS = _app.SUBCOMMANDS

__all__ = [
    "main",
    "run_demo",
    "run_fit",
    "run_hdr",
    "run_linearize",
    "run_merge",
    "run_validate",
    "SUBCOMMANDS",
    "Subcommand",
    "register_subcommand",
    "CLIError",
]
