r"""Per-channel losses of :class:`~deepinv_icrf.training.ICRFTrainer`.

The trainer needs each channel's loss (early stopping, ``ReduceLROnPlateau``). The
:class:`_ChannelRecorder` keeps them from the one evaluation of the losses that deepinv
backpropagates; :func:`channel_values` sums them per channel (or evaluates the losses again,
the former bookkeeping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from deepinv_icrf.loss import WeightedLossScheduler
from deepinv_icrf.loss.scheduler import (
    _call_per_channel,
    _channel_sum,
    _has_per_channel,
)

__all__ = ["channel_values", "loss_channels"]


def _acc_dtype(device: torch.device) -> torch.dtype:
    r"""Accumulation dtype of the channel losses: float64, float32 where there is none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _weighted_schedulers(loss: Any) -> Iterator[WeightedLossScheduler]:
    r"""``loss`` if it is a :class:`WeightedLossScheduler`, and the ones among its terms (any
    depth)."""
    if isinstance(loss, WeightedLossScheduler):
        yield loss
        for term in loss.losses:
            yield from _weighted_schedulers(term)


class _ChannelRecorder:
    r"""Within its ``with`` block, the one evaluation of each loss that deepinv backpropagates
    also gives the per-channel values (no second evaluation):

    - every :class:`WeightedLossScheduler` (nested ones too) records its terms' per-channel
      values (``record_channels``, read back from ``last_channel_values``);
    - every other loss module gets a forward hook that keeps its output (detached) in
      ``outputs[k]`` (``k`` its index in the trainer's losses); a loss with a bool
      ``per_channel`` attribute is called with ``per_channel=True`` and the hook hands deepinv
      its channel sum, which is the value it returns with ``per_channel=False``.

    Every flag is restored and every hook removed on exit, also on error.
    """

    def __init__(self, losses: Sequence[Any]) -> None:
        self.losses = list(losses)
        self.outputs: dict[int, Tensor] = {}
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> _ChannelRecorder:
        try:
            for k, loss in enumerate(self.losses):
                if isinstance(loss, WeightedLossScheduler):
                    for sched in _weighted_schedulers(loss):
                        self._set(sched, "record_channels", True)
                elif isinstance(loss, nn.Module):
                    per_channel = _has_per_channel(loss)
                    if per_channel:
                        self._set(loss, "per_channel", True)
                    hook = partial(self._keep, k, per_channel)
                    self._undo.append(loss.register_forward_hook(hook).remove)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> bool:
        while self._undo:
            self._undo.pop()()
        return False

    def _set(self, obj: Any, name: str, value: bool) -> None:
        self._undo.append(partial(setattr, obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def _keep(
        self, k: int, per_channel: bool, module: nn.Module, args: Any, output: Any
    ) -> Any:
        if isinstance(output, Tensor):
            self.outputs[k] = output.detach()
        return _channel_sum(output) if per_channel else None


def channel_values(
    losses: Sequence[Any],
    kwargs: dict[str, Any],
    epoch: int | None,
    channels: int,
    outputs: dict[int, Tensor] | None = None,
) -> Tensor:
    r"""The batch's loss per channel ``(C,)``: from the values kept during the training
    evaluation (``outputs`` of :class:`_ChannelRecorder`, plus the schedulers' records),
    or, with ``outputs=None`` (the former bookkeeping), by evaluating the losses again.

    :param Sequence losses: the trainer's losses.
    :param dict kwargs: the keywords deepinv calls them with (``x``, ``x_net``, ``y``,
        ``physics``, ``model``), without ``epoch``.
    :param int, None epoch: current epoch.
    :param int channels: number of channels ``C`` of the ICRF.
    :param dict, None outputs: the recorder's kept values, ``None`` to evaluate again.
    :return: (:class:`torch.Tensor`) shape ``(C,)``, float64 (float32 on MPS).
    """
    device = kwargs["x_net"].device
    recorded = outputs is not None
    total = torch.zeros(channels, device=device, dtype=_acc_dtype(device))
    for k, loss in enumerate(losses):
        kept = outputs.get(k) if recorded else None
        total = total + loss_channels(loss, kept, kwargs, epoch, channels, recorded)
    return total


def loss_channels(
    loss: nn.Module,
    kept: Tensor | None,
    kwargs: dict[str, Any],
    epoch: int | None,
    channels: int,
    recorded: bool = False,
) -> Tensor:
    r"""One loss per channel ``(C,)``. ``kept`` is its value from the training evaluation:
    ``(B, C)`` for a loss with ``per_channel`` when ``recorded``, else a value whose mean
    counts in every channel; it is re-evaluated where nothing was kept.

    :param torch.nn.Module loss: the loss (a :class:`WeightedLossScheduler` is split into
        its weighted terms).
    :param torch.Tensor, None kept: its value from the training evaluation, if any.
    :param dict kwargs: the keywords deepinv calls the losses with, without ``epoch``.
    :param int, None epoch: current epoch.
    :param int channels: number of channels ``C``.
    :param bool recorded: whether the values were recorded during the training evaluation.
    :return: (:class:`torch.Tensor`) shape ``(C,)``.
    """
    device = kwargs["x_net"].device
    if isinstance(loss, WeightedLossScheduler):
        out = torch.zeros(channels, device=device, dtype=_acc_dtype(device))
        for name, term in zip(loss.names, loss.losses, strict=True):
            w = loss.last_weights.get(name, 0.0)
            if w != 0.0:
                store = (
                    loss.last_channel_values
                    if recorded and _has_per_channel(term)
                    else loss.last_values
                )
                value = loss_channels(
                    term, store.get(name), kwargs, epoch, channels, recorded
                )
                out = out + w * value
        return out
    if _has_per_channel(loss):
        if recorded and kept is not None:
            value = kept
        else:
            value = _call_per_channel(loss, dict(kwargs, epoch=epoch))
        if value.ndim == 2 and value.shape[-1] == channels:
            return value.to(_acc_dtype(device)).mean(0)
        shared = value.to(_acc_dtype(device)).mean()
    elif kept is not None:
        shared = kept.to(device=device, dtype=_acc_dtype(device)).mean()
    else:
        shared = loss(**kwargs, epoch=epoch).to(_acc_dtype(device)).mean()
    return shared.expand(channels)
