r"""Weighted, scheduled sum of losses.

:class:`WeightedLossScheduler` adds up several losses with per-term weights that may follow a
schedule over epochs or optimisation steps (constant, linear ramp / warm-up, step on/off,
cosine), registers the wrapped losses as submodules, and keeps each term's last value so that a
trainer can log every term under its own name (see
:class:`deepinv_icrf.training.TermLoggingTrainer`).

The schedule objects (:class:`ConstantWeight`, :class:`LinearRampWeight`, :class:`StepWeight`,
:class:`CosineWeight`) are pure configuration: frozen, picklable, no tensors. Their formulas live
in :mod:`deepinv_icrf.functional.schedules`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

import torch
from deepinv.loss import BaseLossScheduler
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, compute_dtype
from deepinv_icrf.functional.schedules import (
    constant_weight,
    cosine_weight,
    linear_ramp_weight,
    step_weight,
)

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = [
    "WeightSchedule",
    "ConstantWeight",
    "LinearRampWeight",
    "StepWeight",
    "CosineWeight",
    "WeightedLossScheduler",
]

_UNITS = ("epoch", "step")


def _check_number(value: object, name: str, nonnegative: bool = False) -> float:
    r"""Return ``value`` as a float; raise unless it is a finite real (and ``>= 0``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"Expected `{name}` to be a real number, but got {type(value).__name__}."
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be finite, but got {value!r}.")
    if nonnegative and value < 0:
        raise ValueError(f"Expected `{name}` to be >= 0, but got {value!r}.")
    return value


def _has_per_channel(loss: object) -> bool:
    r"""Whether ``loss`` has a bool ``per_channel`` attribute (``(B, C)`` values on request).

    :param object loss: a loss.
    :return: (bool) ``True`` for the ICRF losses.
    """
    return isinstance(getattr(loss, "per_channel", None), bool)


def _channel_sum(value: Any) -> Any:
    r"""The per-sample value of a per-channel loss value: the sum over the last axis of a
    ``(B, C)`` tensor; anything else is returned unchanged.

    :param torch.Tensor value: a loss value, ``(B, C)`` (or already ``(B,)`` / scalar).
    :return: (:class:`torch.Tensor`) shape ``(B,)`` for a ``(B, C)`` input.
    """
    if isinstance(value, Tensor) and value.ndim == 2:
        return value.sum(dim=-1)
    return value


def _call_per_channel(loss: nn.Module, kwargs: dict[str, Any]) -> Any:
    r"""Call ``loss(**kwargs)`` with ``per_channel=True``, restoring the flag afterwards."""
    flag = loss.per_channel
    loss.per_channel = True
    try:
        return loss(**kwargs)
    finally:
        loss.per_channel = flag


class WeightSchedule:
    r"""Base class of weight schedules: a callable mapping progress :math:`t` to a weight.

    Subclasses are frozen dataclasses holding plain numbers and implement
    :meth:`__call__`. ``unit`` (``"epoch"``, ``"step"`` or ``None``) says which counter the
    schedule reads; ``None`` inherits the unit of the :class:`WeightedLossScheduler` using it.
    Weights must be finite and ``>= 0``.
    """

    unit: str | None = None

    def __call__(self, t: float) -> float:
        r"""Weight at progress ``t``.

        :param float t: progress value (epoch or step, from 0).
        :return: (float) the weight.
        """
        raise NotImplementedError("Subclasses of WeightSchedule implement __call__.")

    def _check_unit(self) -> None:
        if self.unit is not None:
            check_in(self.unit, "unit", _UNITS)


@dataclass(frozen=True)
class ConstantWeight(WeightSchedule):
    r"""Constant weight, :math:`w(t) = w`.

    :param float value: the weight, ``>= 0``, default ``1.0``.
    :param str, None unit: ``"epoch"``, ``"step"`` or ``None`` (inherit), default ``None``.

    :Example:

    >>> ConstantWeight(0.5)(3)
    0.5
    """

    value: float = 1.0
    unit: str | None = None

    def __post_init__(self) -> None:
        _check_number(self.value, "value", nonnegative=True)
        self._check_unit()

    def __call__(self, t: float) -> float:
        return constant_weight(t, self.value)


@dataclass(frozen=True)
class _RampWeight(WeightSchedule):
    r"""Shared fields and checks of the ramps from ``w0`` (until ``start``) to ``w1`` (from ``end``)."""

    start: float
    end: float
    w0: float = 0.0
    w1: float = 1.0
    unit: str | None = None

    def __post_init__(self) -> None:
        start = _check_number(self.start, "start", nonnegative=True)
        end = _check_number(self.end, "end", nonnegative=True)
        if end < start:
            raise ValueError(
                f"Expected `end` >= `start`, but got start={start!r}, end={end!r}."
            )
        _check_number(self.w0, "w0", nonnegative=True)
        _check_number(self.w1, "w1", nonnegative=True)
        self._check_unit()


@dataclass(frozen=True)
class LinearRampWeight(_RampWeight):
    r"""Linear ramp from ``w0`` to ``w1`` between ``start`` and ``end`` (warm-up by default).

    .. math::

        w(t) = w_0 + (w_1 - w_0)\, \mathrm{clip}\!\left(\frac{t - t_0}{t_1 - t_0}, 0, 1\right)

    :param float start: :math:`t_0`, progress where the ramp starts, ``>= 0``.
    :param float end: :math:`t_1 \geq t_0`, progress where the ramp ends (``end == start``
        gives a step at ``start``).
    :param float w0: weight up to ``start``, ``>= 0``, default ``0.0``.
    :param float w1: weight from ``end`` on, ``>= 0``, default ``1.0``.
    :param str, None unit: ``"epoch"``, ``"step"`` or ``None`` (inherit), default ``None``.

    :Example:

    >>> warmup = LinearRampWeight(start=0, end=4)
    >>> [warmup(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __call__(self, t: float) -> float:
        return linear_ramp_weight(t, self.start, self.end, self.w0, self.w1)


@dataclass(frozen=True)
class StepWeight(WeightSchedule):
    r"""Step schedule: ``before`` until ``at``, ``after`` from ``at`` on (inclusive).

    With the defaults it switches a term on at ``at``; ``StepWeight(at, before=1.0, after=0.0)``
    switches it off.

    :param float at: first progress value with weight ``after``, ``>= 0``.
    :param float before: weight before ``at``, ``>= 0``, default ``0.0``.
    :param float after: weight from ``at`` on, ``>= 0``, default ``1.0``.
    :param str, None unit: ``"epoch"``, ``"step"`` or ``None`` (inherit), default ``None``.

    :Example:

    >>> off_after_2 = StepWeight(2, before=1.0, after=0.0)
    >>> [off_after_2(t) for t in range(4)]
    [1.0, 1.0, 0.0, 0.0]
    """

    at: float
    before: float = 0.0
    after: float = 1.0
    unit: str | None = None

    def __post_init__(self) -> None:
        _check_number(self.at, "at", nonnegative=True)
        _check_number(self.before, "before", nonnegative=True)
        _check_number(self.after, "after", nonnegative=True)
        self._check_unit()

    def __call__(self, t: float) -> float:
        return step_weight(t, self.at, self.before, self.after)


@dataclass(frozen=True)
class CosineWeight(_RampWeight):
    r"""Half-cosine ramp from ``w0`` to ``w1`` between ``start`` and ``end``.

    .. math::

        w(t) = w_0 + (w_1 - w_0)\,\frac{1 - \cos(\pi s)}{2}, \qquad
        s = \mathrm{clip}\!\left(\frac{t - t_0}{t_1 - t_0}, 0, 1\right)

    :param float start: :math:`t_0`, progress where the ramp starts, ``>= 0``.
    :param float end: :math:`t_1 \geq t_0`, progress where the ramp ends.
    :param float w0: weight up to ``start``, ``>= 0``, default ``0.0``.
    :param float w1: weight from ``end`` on, ``>= 0``, default ``1.0``.
    :param str, None unit: ``"epoch"``, ``"step"`` or ``None`` (inherit), default ``None``.

    :Example:

    >>> round(CosineWeight(start=0, end=2)(1), 6)
    0.5
    """

    def __call__(self, t: float) -> float:
        return cosine_weight(t, self.start, self.end, self.w0, self.w1)


WeightLike = float | WeightSchedule


def _flatten_modules(items: Any) -> list[nn.Module]:
    r"""Modules held (possibly nested in lists/tuples) by a deepinv scheduler's ``losses``."""
    out: list[nn.Module] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten_modules(item))
        elif isinstance(item, nn.Module):
            out.append(item)
            if _is_foreign_scheduler(item):
                out.extend(_flatten_modules(item.losses))
    return out


def _is_foreign_scheduler(loss: nn.Module) -> bool:
    r"""A deepinv scheduler (not ours): keeps losses unregistered, may break on ``epoch=None``."""
    return isinstance(loss, BaseLossScheduler) and not isinstance(
        loss, WeightedLossScheduler
    )


class WeightedLossScheduler(BaseLossScheduler):
    r"""Weighted sum of losses with per-term weight schedules.

    .. math::

        \mathcal{L}(\hat{x}, x, y; t) = \sum_{k=1}^{K} w_k(t)\, \mathcal{L}_k(\hat{x}, x, y)

    where each weight :math:`w_k(t) = a_k(t)\, s_k(t)` is the product of the term's weight
    :math:`a_k` (a number or a :class:`WeightSchedule`) and its optional schedule :math:`s_k`
    (a :class:`WeightSchedule`, default 1). clair-torch's ICRF objective
    ``linearity + alpha mono + beta range + gamma endpoint + delta smooth`` is
    ``WeightedLossScheduler({"linearity": ..., "mono": ..., ...}, weights={"mono": alpha, ...})``.

    **Progress counters.** A schedule reads the epoch or the step, chosen per schedule by its
    ``unit`` (``None`` inherits this scheduler's ``unit``):

    - *epoch*: the ``epoch`` keyword the caller passes (``deepinv.Trainer`` passes its 0-based
      epoch). When ``epoch`` is ``None`` the epoch is taken as ``0`` (it never falls back to the
      step counter: epochs and steps have different scales).
    - *step*: the ``step`` keyword when given (used as is, the internal counter is unchanged);
      otherwise an internal counter of training calls: it starts at 0, the call reads it, and
      each call made while the module is in training mode (``self.training``) increments it
      afterwards. ``deepinv.Trainer`` calls the loss once per batch per training dataloader, so
      with one dataloader a step is an optimiser step. ``deepinv.Trainer`` never switches losses
      to eval mode, so validation losses (``compute_eval_losses=True``) would count too:
      :class:`deepinv_icrf.training.TermLoggingTrainer` stops the counter during validation.
      The counter is saved in ``state_dict()`` (as extra state) and restored by
      ``load_state_dict()``.

    **Terms.** Terms whose weight is exactly 0 are not computed. Each term's value is brought
    to shape ``(B,)`` (a scalar is broadcast over the batch; ``B`` is the batch size of
    ``x_net``, else of ``y``); half-precision values are promoted to float32. When every weight
    is 0 the result is zeros ``(B,)`` on the input's device (float32, or float64 for float64
    inputs) that requires grad when grad is enabled, so ``backward()`` works and leaves the
    model's gradients untouched.

    **Children.** The losses are held in an :class:`torch.nn.ModuleList` (``self.losses``), so
    ``.to()`` and ``state_dict()`` reach them. A deepinv scheduler
    (:class:`deepinv.loss.RandomLossScheduler`, :class:`deepinv.loss.StepLossScheduler`, ...)
    may be a term: its own losses, which deepinv keeps in a plain tuple, are registered here too
    (``self.wrapped_losses``), and it receives ``epoch=0`` when ``epoch`` is ``None`` (deepinv's
    step and epoch-interleaved schedulers fail on ``None``); every other term receives ``epoch``
    unchanged. :meth:`adapt_model` chains every term's ``adapt_model`` once.

    **Logging.** After each call, ``last_values[name]`` is the detached batch mean of the
    term's *unweighted* value (0-dim tensor, on the device, no host sync), for the terms computed
    in that call only; ``last_weights[name]`` is the float weight of every term at that call,
    ``last_weighted_values`` the products, ``last_batch_size`` the batch size.

    **Per-channel values** (opt-in, for trainers that need each channel's loss, such as
    :class:`deepinv_icrf.training.ICRFTrainer`). With the attribute ``record_channels = True``
    (default ``False``), every computed term that has a bool ``per_channel`` attribute (the
    ICRF losses) is called once with ``per_channel=True``: its ``(B, C)`` value is kept,
    detached, in ``last_channel_values[name]``, and its channel sum (the value it returns with
    ``per_channel=False``) enters the total as usual. Totals, gradients and ``last_values`` are
    those of ``record_channels = False``; no term is evaluated twice.

    :param list, dict losses: the terms: a sequence of :class:`deepinv.loss.Loss` (any
        :class:`torch.nn.Module` with deepinv's loss interface), or a dict ``name -> loss``
        (then ``names`` must be ``None``). A single loss is taken as a list of one.
    :param list, dict, None weights: per-term weights, numbers ``>= 0`` or
        :class:`WeightSchedule` objects, as a sequence (one per term) or a dict ``name -> weight``
        (missing names get 1). Default ``None``: all 1. Negative weights raise
        :class:`ValueError` (a loss to maximise must be written as such).
    :param list[str], None names: term names for logging, unique, one per loss. Default
        ``None``: the class names, repeats suffixed ``_1``, ``_2``, ... (``RangeLoss``,
        ``RangeLoss_1``).
    :param list, dict, None schedules: optional per-term :class:`WeightSchedule` factors
        (sequence with ``None`` for "no schedule", or dict ``name -> schedule``), multiplied with
        the weights. Default ``None``: no schedules.
    :param str unit: default progress unit of the schedules, ``"epoch"`` (default) or
        ``"step"``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv.loss import SupLoss, TVLoss
    >>> from deepinv_icrf.loss import LinearRampWeight, WeightedLossScheduler
    >>> loss = WeightedLossScheduler(
    ...     {"sup": SupLoss(), "tv": TVLoss()},
    ...     weights={"tv": LinearRampWeight(start=0, end=10, w0=0.0, w1=0.1)},
    ... )
    >>> x, x_net = torch.ones(2, 1, 4, 5), torch.zeros(2, 1, 4, 5)
    >>> loss(x_net=x_net, x=x, epoch=5)
    tensor([1., 1.])
    >>> loss.last_weights
    {'sup': 1.0, 'tv': 0.05}

    Per-channel values of the ICRF terms:

    >>> from deepinv_icrf.loss import EndpointLoss, RangeLoss
    >>> f = torch.tensor([[0.0, 0.2, 0.4, 0.6, 0.9], [0.0, 0.3, 0.5, 0.7, 1.0]])
    >>> curves = WeightedLossScheduler({"end": EndpointLoss(curve=f), "range": RangeLoss(curve=f)})
    >>> curves.record_channels = True
    >>> curves(x_net=torch.zeros(3, 2, 2, 4, 4))
    tensor([0.0100, 0.0100, 0.0100])
    >>> curves.last_channel_values["end"]
    tensor([[0.0100, 0.0000],
            [0.0100, 0.0000],
            [0.0100, 0.0000]])
    """

    def __init__(
        self,
        losses: Sequence[nn.Module] | Mapping[str, nn.Module] | nn.Module,
        weights: Sequence[WeightLike] | Mapping[str, WeightLike] | None = None,
        names: Sequence[str] | None = None,
        schedules: (
            Sequence[WeightSchedule | None] | Mapping[str, WeightSchedule] | None
        ) = None,
        unit: str = "epoch",
    ) -> None:
        super().__init__()
        check_in(unit, "unit", _UNITS)

        if isinstance(losses, nn.Module):
            losses = [losses]
        if isinstance(losses, Mapping):
            if names is not None:
                raise ValueError(
                    "Expected `names` to be None when `losses` is a dict (its keys are the "
                    f"names), but got names={list(names)!r}."
                )
            names = list(losses.keys())
            losses = list(losses.values())
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            losses = list(losses)
        else:
            raise TypeError(
                "Expected `losses` to be a list or dict of losses, but got "
                f"{type(losses).__name__}."
            )
        if len(losses) == 0:
            raise ValueError(
                "Expected `losses` to hold at least one loss, but got none."
            )
        for k, loss in enumerate(losses):
            if not isinstance(loss, nn.Module):
                raise TypeError(
                    f"Expected `losses[{k}]` to be a deepinv Loss (torch.nn.Module), but "
                    f"got {type(loss).__name__}."
                )

        self.names: list[str] = self._resolve_names(losses, names)
        self.weights: list[WeightLike] = self._per_term(
            weights, "weights", default=1.0, allow_none=False
        )
        self.schedules: list[WeightSchedule | None] = self._per_term(
            schedules, "schedules", default=None, allow_none=True
        )
        self.unit = unit

        # Registered children (deepinv's base keeps a plain tuple in ``self.losses``).
        self.losses = nn.ModuleList(losses)
        wrapped: list[nn.Module] = []
        for loss in losses:
            if _is_foreign_scheduler(loss):
                wrapped.extend(_flatten_modules(loss.losses))
        self.wrapped_losses = nn.ModuleList(wrapped)

        self._step = 0
        self._record_channels = False
        self.last_values: dict[str, Tensor] = {}
        self.last_channel_values: dict[str, Tensor] = {}
        self.last_weights: dict[str, float] = {}
        self.last_batch_size: int = 0

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _resolve_names(
        losses: list[nn.Module], names: Sequence[str] | None
    ) -> list[str]:
        if names is not None:
            if isinstance(names, str) or not isinstance(names, Sequence):
                raise TypeError(
                    f"Expected `names` to be a list of str, but got {type(names).__name__}."
                )
            names = list(names)
            if len(names) != len(losses):
                raise ValueError(
                    f"Expected `names` to hold one name per loss ({len(losses)}), but got "
                    f"{len(names)}."
                )
            for k, name in enumerate(names):
                if not isinstance(name, str) or name == "":
                    raise ValueError(
                        f"Expected `names[{k}]` to be a non-empty str, but got {name!r}."
                    )
            if len(set(names)) != len(names):
                raise ValueError(f"Expected `names` to be unique, but got {names!r}.")
            return names
        out: list[str] = []
        counts: dict[str, int] = {}
        for loss in losses:
            base = loss.__class__.__name__
            name = base
            while name in out:
                counts[base] = counts.get(base, 0) + 1
                name = f"{base}_{counts[base]}"
            out.append(name)
        return out

    def _per_term(
        self,
        values: Sequence[Any] | Mapping[str, Any] | None,
        arg: str,
        default: Any,
        allow_none: bool,
    ) -> list[Any]:
        n = len(self.names)
        if values is None:
            return [default] * n
        if isinstance(values, Mapping):
            unknown = [key for key in values if key not in self.names]
            if unknown:
                raise ValueError(
                    f"Expected the keys of `{arg}` to be term names {self.names!r}, but got "
                    f"unknown {unknown!r}."
                )
            items = [values.get(name, default) for name in self.names]
            labels = [f"{arg}[{name!r}]" for name in self.names]
        elif isinstance(values, Sequence) and not isinstance(values, str):
            items = list(values)
            if len(items) != n:
                raise ValueError(
                    f"Expected `{arg}` to hold one entry per loss ({n}), but got "
                    f"{len(items)}."
                )
            labels = [f"{arg}[{k}]" for k in range(n)]
        else:
            raise TypeError(
                f"Expected `{arg}` to be a list or dict, but got {type(values).__name__}."
            )
        out = []
        for item, label in zip(items, labels, strict=True):
            if item is None and allow_none:
                out.append(None)
            elif isinstance(item, WeightSchedule):
                out.append(item)
            elif not allow_none:
                out.append(_check_number(item, label, nonnegative=True))
            else:
                raise TypeError(
                    f"Expected `{label}` to be a WeightSchedule or None, but got "
                    f"{type(item).__name__}."
                )
        return out

    # ------------------------------------------------------------------ state
    @property
    def step_count(self) -> int:
        r"""Internal step counter (number of training-mode calls without ``step=``)."""
        return self._step

    @step_count.setter
    def step_count(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"Expected `step_count` to be an int >= 0, but got {value!r}."
            )
        self._step = value

    @property
    def record_channels(self) -> bool:
        r"""Keep the per-channel values of the terms with a ``per_channel`` attribute in
        ``last_channel_values`` (default ``False``)."""
        return self._record_channels

    @record_channels.setter
    def record_channels(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(
                f"Expected `record_channels` to be a bool, but got {value!r}."
            )
        self._record_channels = value

    def get_extra_state(self) -> dict[str, int]:
        r"""Extra state saved in ``state_dict()``: the step counter."""
        return {"step_count": self._step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        r"""Restore the step counter from ``state_dict()``."""
        self.step_count = int(state["step_count"])

    @property
    def last_weighted_values(self) -> dict[str, Tensor]:
        r"""Weighted batch means ``last_weights[name] * last_values[name]`` of the last call."""
        return {
            name: self.last_weights[name] * value
            for name, value in self.last_values.items()
        }

    # ------------------------------------------------------------------ schedule
    def weights_at(
        self, epoch: float | None = None, step: float | None = None
    ) -> dict[str, float]:
        r"""Weight of every term at a given epoch and step.

        :param float, None epoch: epoch, ``>= 0``; ``None`` reads as 0.
        :param float, None step: step, ``>= 0``; ``None`` reads the internal counter.
        :return: (dict) ``name -> weight``.
        """
        t_epoch = 0.0 if epoch is None else _check_number(epoch, "epoch", True)
        t_step = (
            float(self._step) if step is None else _check_number(step, "step", True)
        )
        out: dict[str, float] = {}
        for name, weight, sched in zip(
            self.names, self.weights, self.schedules, strict=True
        ):
            w = self._evaluate(weight, t_epoch, t_step, name)
            if sched is not None and w != 0.0:
                w = w * self._evaluate(sched, t_epoch, t_step, name)
            out[name] = w
        return out

    def _evaluate(
        self, weight: WeightLike, t_epoch: float, t_step: float, name: str
    ) -> float:
        if not isinstance(weight, WeightSchedule):
            return weight
        unit = weight.unit if weight.unit is not None else self.unit
        w = float(weight(t_epoch if unit == "epoch" else t_step))
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(
                f"Expected the schedule of term {name!r} to give a finite weight >= 0, "
                f"but got {w!r}."
            )
        return w

    def schedule(self, epoch: int | None) -> list[nn.Module]:
        r"""Terms with a non-zero weight at ``epoch`` (and the current step).

        Kept for compatibility with :class:`deepinv.loss.BaseLossScheduler`.

        :param int, None epoch: current epoch (``None`` reads as 0).
        :return: (list) the active losses.
        """
        weights = self.weights_at(epoch=epoch)
        return [
            loss
            for loss, name in zip(self.losses, self.names, strict=True)
            if weights[name] != 0.0
        ]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x_net: Tensor | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        physics: Physics | None = None,
        model: nn.Module | None = None,
        epoch: int | None = None,
        step: int | None = None,
        **kwargs,
    ) -> Tensor:
        r"""Weighted sum of the terms at the current epoch/step.

        :param torch.Tensor x_net: reconstruction, ``(B, ...)``.
        :param torch.Tensor, None x: ground truth (``None`` without one).
        :param torch.Tensor y: measurement, ``(B, ...)``.
        :param deepinv.physics.Physics physics: forward operator.
        :param torch.nn.Module model: reconstruction model.
        :param int, None epoch: current epoch (0-based); ``None`` reads as 0.
        :param int, None step: explicit step for step-unit schedules; ``None`` reads (and, in
            training mode, then increments) the internal counter.
        :return: (:class:`torch.Tensor`) loss of shape ``(B,)``.
        """
        weights = self.weights_at(epoch=epoch, step=step)
        ref = next((t for t in (x_net, y, x) if isinstance(t, Tensor)), None)
        if ref is None or ref.ndim == 0:
            raise ValueError(
                "Expected `x_net` or `y` to be a batched tensor (B, ...) to size the loss, "
                f"but got x_net={type(x_net).__name__}, y={type(y).__name__}."
            )
        batch = ref.shape[0]

        total: Tensor | None = None
        values: dict[str, Tensor] = {}
        channel_values: dict[str, Tensor] = {}
        for name, loss in zip(self.names, self.losses, strict=True):
            w = weights[name]
            if w == 0.0:
                continue
            child_epoch = (
                0 if (epoch is None and _is_foreign_scheduler(loss)) else epoch
            )
            term_kwargs = dict(
                x_net=x_net,
                x=x,
                y=y,
                physics=physics,
                model=model,
                epoch=child_epoch,
                **kwargs,
            )
            if self._record_channels and _has_per_channel(loss):
                raw = _call_per_channel(loss, term_kwargs)
                if isinstance(raw, Tensor):
                    channel_values[name] = raw.detach()
                value = _channel_sum(raw)
            else:
                value = loss(**term_kwargs)
            value = self._per_sample(value, batch, ref.device, name)
            values[name] = value.detach().mean()
            term = value * w
            total = term if total is None else total + term

        if total is None:
            total = torch.zeros(batch, dtype=compute_dtype(ref), device=ref.device)
            if torch.is_grad_enabled():
                total.requires_grad_(True)

        if self.training and step is None:
            self._step += 1
        self.last_values = values
        self.last_channel_values = channel_values
        self.last_weights = weights
        self.last_batch_size = batch
        return total

    @staticmethod
    def _per_sample(
        value: Tensor, batch: int, device: torch.device, name: str
    ) -> Tensor:
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, device=device)
        elif value.device != device:
            # deepinv's schedulers return a CPU ``tensor(0.)`` when they select no loss.
            value = value.to(device)
        if value.numel() == 1:
            value = value.reshape(1).expand(batch)
        elif value.numel() == batch:
            value = value.reshape(batch)
        else:
            raise ValueError(
                f"Expected loss term {name!r} to return a scalar or one value per sample "
                f"(B={batch}), but got shape {tuple(value.shape)}."
            )
        return value.to(compute_dtype(value))

    def adapt_model(self, model: nn.Module, **kwargs) -> nn.Module:
        r"""Chain every term's ``adapt_model`` (each term once, in order).

        :param torch.nn.Module model: reconstruction model.
        :return: (:class:`torch.nn.Module`) the adapted model.
        """
        for loss in self.losses:
            model = loss.adapt_model(model, **kwargs)
        return model

    def extra_repr(self) -> str:
        return f"names={self.names}, weights={self.weights}, unit={self.unit!r}"
