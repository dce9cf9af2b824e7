r"""Plots people would rather look at than read: fitted curves against the truth.

:func:`plot_icrf` takes tensors; it checks them and turns them into arrays
(:func:`icrf_plot_arrays`, which imports torch), then draws the arrays (:func:`draw_icrf`,
which does not: the command line draws its plot in a process of its own, beside the merge,
without paying torch's import there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["plot_icrf"]

_CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")


def plot_icrf(
    curve: Tensor,
    reference: Tensor | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    channel_names: tuple[str, ...] | None = None,
    band: Tensor | None = None,
    observed: Sequence[Sequence[float]] | None = None,
):
    r"""Draw a fitted ICRF per channel, and when a reference is given, the error against it.

    :param torch.Tensor curve: fitted curve ``(C, L)`` on a uniform grid of ``[0, 1]``.
    :param torch.Tensor reference: optional true curve ``(C, L')``: drawn dashed, and the error
        ``curve - reference`` is drawn in a second panel.
    :param str, pathlib.Path path: where to save the figure (PNG); ``None`` only returns it.
    :param str title: figure title.
    :param tuple channel_names: legend names (default ``R, G, B`` for 3 channels, else indices).
    :param torch.Tensor band: optional confidence band ``(2, C, L)`` (lower, upper edges, e.g.
        ``icrf.band``; finite, lower <= upper), drawn shaded around the curve.
    :param Sequence observed: optional lowest and highest code the photos hold per channel
        (``(C, 2)`` fractions of the code range, as
        :func:`~deepinv_icrf.calibration.coverage.observed_code_range` gives them): the codes
        no channel reaches are shaded grey as extrapolated.
    :return: (:class:`matplotlib.figure.Figure`) the figure.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.plot import plot_icrf
    >>> grid = torch.linspace(0, 1, 256).expand(3, 256)
    >>> fig = plot_icrf(grid**2.0, reference=grid**2.2)
    >>> len(fig.axes)
    2
    """
    arrays = icrf_plot_arrays(curve, reference=reference, band=band, observed=observed)
    return draw_icrf(**arrays, path=path, title=title, channel_names=channel_names)


def icrf_plot_arrays(
    curve: Tensor,
    reference: Tensor | None = None,
    band: Tensor | None = None,
    observed: Sequence[Sequence[float]] | None = None,
) -> dict[str, np.ndarray | None]:
    r"""The checked arrays :func:`draw_icrf` draws, from the inputs of :func:`plot_icrf`.

    :param torch.Tensor curve: fitted curve ``(C, L)``.
    :param torch.Tensor reference: optional true curve ``(C, L')``.
    :param torch.Tensor band: optional band ``(2, C, L)`` (finite, lower <= upper).
    :param Sequence observed: optional ``(C, 2)`` observed code fractions in ``[0, 1]``.
    :return: (dict) float64 arrays ``curve``, ``band``, ``reference``, ``error``
        (``curve - reference`` on the curve's grid) and ``observed`` (``None`` where not
        given).
    :raises ValueError: for a band of another shape, not finite or crossed, or observed
        codes outside ``[0, 1]`` or with lowest > highest.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.plot import icrf_plot_arrays
    >>> grid = torch.linspace(0, 1, 5).expand(1, 5)
    >>> arrays = icrf_plot_arrays(grid**2, reference=grid**2.2, observed=[[0.0, 0.9]])
    >>> arrays["curve"].shape, arrays["error"].shape, arrays["band"] is None
    ((1, 5), (1, 5), True)
    """
    import torch

    from deepinv_icrf._checks import check_band
    from deepinv_icrf.functional.interp import interp_curve

    curve = curve.detach().to("cpu", torch.float64)
    c, n_points = curve.shape
    out: dict[str, np.ndarray | None] = {
        "curve": curve.numpy(),
        "band": None,
        "reference": None,
        "error": None,
        "observed": None,
    }
    if band is not None:
        band = band.detach().to("cpu", torch.float64)
        if band.shape != (2, c, n_points):
            raise ValueError(
                f"Expected `band` of shape (2, {c}, {n_points}), but got {tuple(band.shape)}."
            )
        check_band(band[0], band[1], "`band`")
        out["band"] = band.numpy()
    if observed is not None:
        ends = torch.as_tensor(observed, dtype=torch.float64).reshape(-1, 2)
        if not bool(torch.isfinite(ends).all()) or not bool(
            ((ends >= 0) & (ends <= 1) & (ends[:, :1] <= ends[:, 1:])).all()
        ):
            raise ValueError(
                "Expected `observed` as (lowest, highest) code fractions in [0, 1] per "
                f"channel, lowest <= highest, but got {ends.tolist()}."
            )
        out["observed"] = ends.numpy()
    if reference is not None:
        reference = reference.detach().to("cpu", torch.float64)
        grid = torch.linspace(0, 1, n_points, dtype=torch.float64)
        error = curve - interp_curve(grid.expand(c, -1), reference, channel_dim=-2)
        out["reference"], out["error"] = reference.numpy(), error.numpy()
    return out


def draw_icrf(
    curve: np.ndarray,
    band: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    error: np.ndarray | None = None,
    observed: np.ndarray | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    channel_names: tuple[str, ...] | None = None,
) -> Any:
    r"""Draw the arrays of :func:`icrf_plot_arrays` (matplotlib and numpy only, no torch).

    :param numpy.ndarray curve: ``(C, L)`` on a uniform grid of ``[0, 1]``.
    :param numpy.ndarray band: ``(2, C, L)`` or ``None``.
    :param numpy.ndarray reference: ``(C, L')`` or ``None``.
    :param numpy.ndarray error: ``(C, L)`` or ``None`` (drawn in a second panel with
        ``reference``).
    :param numpy.ndarray observed: ``(C, 2)`` or ``None``.
    :param str, pathlib.Path path: where to save the figure (PNG); ``None`` only returns it.
    :param str title: figure title.
    :param tuple channel_names: legend names (default ``R, G, B`` for 3 channels, else indices).
    :return: (:class:`matplotlib.figure.Figure`) the figure.

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.plot import draw_icrf
    >>> grid = np.linspace(0, 1, 256)
    >>> curve = np.stack([grid**2.2, grid**2.0, grid**1.8])
    >>> fig = draw_icrf(curve, observed=np.array([[0.0, 0.8]]))
    >>> len(fig.axes)
    1
    """
    c, n_points = curve.shape
    if channel_names is None:
        channel_names = ("R", "G", "B") if c == 3 else tuple(str(k) for k in range(c))
    colours = _CHANNEL_COLOURS if c == 3 else tuple(f"C{k}" for k in range(c))
    grid = np.linspace(0.0, 1.0, n_points)
    n_panels = 1 if reference is None else 2
    size = (5.0 * n_panels, 4.0)
    if path is None:  # a figure of pyplot's, to show
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size)
    else:  # drawn into the file only: no pyplot (a third of the import time), no backend
        from matplotlib.figure import Figure

        fig = Figure(figsize=size)
    axes = fig.subplots(1, n_panels, squeeze=False)
    ax = axes[0, 0]
    for k in range(c):
        ax.plot(grid, curve[k], color=colours[k], label=f"{channel_names[k]} fitted")
    if band is not None:
        for k in range(c):
            ax.fill_between(
                grid, band[0, k], band[1, k], color=colours[k], alpha=0.25, lw=0
            )
    if reference is not None:
        ref_grid = np.linspace(0.0, 1.0, reference.shape[-1])
        for k in range(c):
            ax.plot(
                ref_grid,
                reference[k],
                "--",
                color=colours[k],
                alpha=0.7,
                label=f"{channel_names[k]} true",
            )
        ax2 = axes[0, 1]
        for k in range(c):
            ax2.plot(grid, error[k], color=colours[k], label=channel_names[k])
        ax2.axhline(0.0, color="k", lw=0.5)
        ax2.set_xlabel("code (normalised)")
        ax2.set_ylabel("fitted - true")
        ax2.set_title("error")
        ax2.legend(fontsize=8)
    if observed is not None:
        low, high = float(observed[:, 0].min()), float(observed[:, 1].max())
        label = "extrapolated (no photo holds these codes)"
        for start, stop in ((0.0, low), (high, 1.0)):
            if stop - start > 0.01:
                ax.axvspan(start, stop, color="0.85", zorder=0, lw=0, label=label)
                label = None
    ax.set_xlabel("code (normalised)")
    ax.set_ylabel("relative irradiance")
    ax.set_title("inverse camera response")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
