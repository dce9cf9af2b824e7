r"""Plots people would rather look at than read: fitted curves against the truth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from deepinv_icrf._checks import check_band

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
    from deepinv_icrf.functional.interp import interp_curve

    curve = curve.detach().to("cpu", torch.float64)
    c, n_points = curve.shape
    if channel_names is None:
        channel_names = ("R", "G", "B") if c == 3 else tuple(str(k) for k in range(c))
    colours = _CHANNEL_COLOURS if c == 3 else tuple(f"C{k}" for k in range(c))
    grid = torch.linspace(0, 1, n_points, dtype=torch.float64)
    if band is not None:  # checked before any figure is made
        band = band.detach().to("cpu", torch.float64)
        if band.shape != (2, c, n_points):
            raise ValueError(
                f"Expected `band` of shape (2, {c}, {n_points}), but got {tuple(band.shape)}."
            )
        check_band(band[0], band[1], "`band`")
    if observed is not None:  # checked before any figure is made
        ends = torch.as_tensor(observed, dtype=torch.float64).reshape(-1, 2)
        if not bool(torch.isfinite(ends).all()) or not bool(
            ((ends >= 0) & (ends <= 1) & (ends[:, :1] <= ends[:, 1:])).all()
        ):
            raise ValueError(
                "Expected `observed` as (lowest, highest) code fractions in [0, 1] per "
                f"channel, lowest <= highest, but got {ends.tolist()}."
            )
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
        reference = reference.detach().to("cpu", torch.float64)
        ref_grid = torch.linspace(0, 1, reference.shape[-1], dtype=torch.float64)
        for k in range(c):
            ax.plot(
                ref_grid,
                reference[k],
                "--",
                color=colours[k],
                alpha=0.7,
                label=f"{channel_names[k]} true",
            )
        err = curve - interp_curve(grid.expand(c, -1), reference, channel_dim=-2)
        ax2 = axes[0, 1]
        for k in range(c):
            ax2.plot(grid, err[k], color=colours[k], label=channel_names[k])
        ax2.axhline(0.0, color="k", lw=0.5)
        ax2.set_xlabel("code (normalised)")
        ax2.set_ylabel("fitted - true")
        ax2.set_title("error")
        ax2.legend(fontsize=8)
    if observed is not None:
        low, high = float(ends[:, 0].min()), float(ends[:, 1].max())
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
