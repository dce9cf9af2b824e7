r"""Plots of an :class:`~deepinv_icrf.training.ICRFTrainer`'s state: curves, loss terms,
channel losses and curve RMSE."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_icrf.io import atomic_path

__all__ = ["plot_training"]


def plot_training(trainer: Any, path: str | os.PathLike | None = None):
    r"""Plot an :class:`ICRFTrainer`'s state: curves, loss terms, channel losses and RMSE.

    Panels: the current curve of each channel (the true curve dashed when known); every
    logged loss term and the total per epoch (log scale); the loss of each channel per epoch
    (a cross where a channel was frozen); and the curve RMSE per epoch when a true curve is
    known.

    :param ICRFTrainer trainer: the trainer (during or after training).
    :param str, os.PathLike, None path: PNG file to write (the figure is then closed);
        ``None`` only returns the figure.
    :return: (:class:`matplotlib.figure.Figure`) the figure.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.training import ICRFTrainer
    >>> from deepinv_icrf.training.trainer import plot_training
    >>> y = torch.rand(3, 1, 6, 5)
    >>> trainer = ICRFTrainer.from_stack(y, [1.0, 2.0, 4.0], n_points=9, epochs=2, verbose=False)
    >>> _ = trainer.train()
    >>> len(plot_training(trainer).axes)
    3
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curve = trainer.icrf.curve.detach().to("cpu", torch.float64)
    channels, n_points = curve.shape
    colours = (
        ("tab:red", "tab:green", "tab:blue")
        if channels == 3
        else tuple(f"C{k}" for k in range(channels))
    )
    truth = trainer.true_curve
    n_panels = 3 + (1 if truth is not None and trainer.curve_rmse_history else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.6), squeeze=False)
    axes = axes[0]

    grid = torch.linspace(0, 1, n_points, dtype=torch.float64)
    for c in range(channels):
        axes[0].plot(grid, curve[c], color=colours[c], label=f"channel {c}")
    if truth is not None:
        truth = truth.detach().to("cpu", torch.float64)
        ref_grid = torch.linspace(0, 1, truth.shape[-1], dtype=torch.float64)
        for c in range(channels):
            axes[0].plot(ref_grid, truth[c], "--", color=colours[c], alpha=0.6)
    axes[0].set_xlabel("code")
    axes[0].set_ylabel("relative irradiance")
    axes[0].set_title("ICRF")
    axes[0].legend(fontsize=7)

    histories = dict(getattr(trainer, "term_loss_history", {}))
    for name, values in getattr(trainer, "loss_history", {}).items():
        histories.setdefault(name, values)
    for name, values in histories.items():
        positive = [v if v > 0 else float("nan") for v in values]
        if positive:
            axes[1].plot(range(1, len(positive) + 1), positive, label=name)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("loss terms")
    if histories:
        axes[1].legend(fontsize=7)

    history = np.asarray(trainer.channel_loss_history, dtype=np.float64)
    if history.size:
        epochs = np.arange(1, history.shape[0] + 1)
        for c in range(history.shape[1]):
            axes[2].plot(epochs, history[:, c], color=colours[c], label=f"channel {c}")
            stopped = trainer.stopped_epoch[c]
            if stopped is not None and stopped < history.shape[0]:
                axes[2].plot(
                    stopped + 1, history[stopped, c], "x", color=colours[c], ms=8
                )
    axes[2].set_xlabel("epoch")
    axes[2].set_title("loss per channel")

    if n_panels == 4:
        rmse = np.asarray(trainer.curve_rmse_history, dtype=np.float64)
        for c in range(rmse.shape[1]):
            axes[3].plot(np.arange(1, rmse.shape[0] + 1), rmse[:, c], color=colours[c])
        axes[3].set_yscale("log")
        axes[3].set_xlabel("epoch")
        axes[3].set_title("curve RMSE vs truth")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            fig.savefig(tmp, dpi=90, format=path.suffix.lstrip(".") or "png")
        plt.close(fig)
    return fig
