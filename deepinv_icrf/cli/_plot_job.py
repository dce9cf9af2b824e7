r"""The fit's plot drawn in a process of its own: ``python -m deepinv_icrf.cli._plot_job``.

``deepinv-icrf hdr`` merges the photos right after the fit; drawing the fit's plot
(matplotlib's import and the drawing: 0.4-0.6 s) in this process meanwhile takes it off the
command's time on a machine with a second core (:class:`deepinv_icrf.cli._common.PlotJobs`).
It reads one JSON object on stdin (``path``, ``title`` and the arrays of
:func:`deepinv_icrf.plot.icrf_plot_arrays`, checked by the command), draws them with
:func:`deepinv_icrf.plot.draw_icrf` and writes the PNG atomically; it imports neither torch
nor deepinv. Exit status 0 when the file is written; anything else is the command's to
handle (it then draws the plot itself). Ctrl-C is the command's to handle too: this process
ignores it, and the command stops it.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any


def draw_job(job: dict[str, Any]) -> None:
    r"""Draw a plot job (``path``, ``title`` and the arrays of
    :func:`deepinv_icrf.plot.icrf_plot_arrays`, as lists or arrays) into its PNG, atomically:
    what this process does, what :meth:`~deepinv_icrf.cli._common.PlotJobs.finish` does itself
    for a plot no process wrote, and what :func:`~deepinv_icrf.cli._common.save_plot` does.
    """
    import numpy as np

    from deepinv_icrf.io import atomic_path
    from deepinv_icrf.plot import draw_icrf

    arrays = {
        name: None if value is None else np.asarray(value, dtype=np.float64)
        for name, value in job["arrays"].items()
    }
    with atomic_path(job["path"]) as tmp:
        draw_icrf(**arrays, path=tmp, title=job["title"])


def main() -> int:
    r"""Draw the plot described on stdin; return the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the job first: the command's write of it does not wait on this process's imports
    job = json.load(sys.stdin)
    draw_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
