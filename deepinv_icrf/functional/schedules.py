r"""Weight schedules: pure functions of a progress counter.

A weight schedule maps a progress value :math:`t` (an epoch or an optimisation step, counted
from 0) to a non-negative loss weight :math:`w(t)`. These functions are the single place where
the schedule formulas live; :class:`deepinv_icrf.loss.WeightedLossScheduler` and its schedule
objects (:class:`deepinv_icrf.loss.LinearRampWeight`, ...) only store parameters and call them.

They take and return Python numbers (never tensors): a schedule is evaluated once per loss call
on the host, so it never synchronises with an accelerator.
"""

from __future__ import annotations

import math

__all__ = [
    "constant_weight",
    "linear_ramp_weight",
    "step_weight",
    "cosine_weight",
]


def _ramp_fraction(t: float, start: float, end: float) -> float:
    r"""Fraction :math:`s = \mathrm{clip}((t - t_0) / (t_1 - t_0), 0, 1)` of a ramp.

    A zero-length ramp (``start == end``) is a step at ``start``: 0 before, 1 from ``start`` on.
    """
    if end < start:
        raise ValueError(
            f"Expected `end` >= `start` for a ramp, but got start={start!r}, end={end!r}."
        )
    if t >= end:
        return 1.0
    if t <= start:
        return 0.0
    return (t - start) / (end - start)


def constant_weight(t: float, value: float = 1.0) -> float:
    r"""Constant weight schedule.

    .. math::

        w(t) = w

    :param float t: progress value (epoch or step); unused, kept for a uniform signature.
    :param float value: the weight :math:`w`, default ``1.0``.
    :return: (float) the weight.

    :Example:

    >>> constant_weight(7, 0.5)
    0.5
    """
    return float(value)


def linear_ramp_weight(
    t: float, start: float, end: float, w0: float = 0.0, w1: float = 1.0
) -> float:
    r"""Linear ramp (warm-up or cool-down) between two weights.

    .. math::

        w(t) = w_0 + (w_1 - w_0)\, \mathrm{clip}\!\left(\frac{t - t_0}{t_1 - t_0}, 0, 1\right)

    so :math:`w = w_0` up to :math:`t_0`, :math:`w = w_1` from :math:`t_1` on, linear in between.
    With ``start == end`` it is a step to :math:`w_1` at :math:`t_0` (inclusive).

    :param float t: progress value (epoch or step).
    :param float start: :math:`t_0`, where the ramp starts.
    :param float end: :math:`t_1 \geq t_0`, where the ramp ends.
    :param float w0: weight before the ramp, default ``0.0`` (warm-up).
    :param float w1: weight after the ramp, default ``1.0``.
    :return: (float) the weight.

    :Example:

    >>> linear_ramp_weight(5, start=0, end=10, w0=0.0, w1=2.0)
    1.0
    """
    s = _ramp_fraction(t, start, end)
    return float(w0 + (w1 - w0) * s)


def step_weight(t: float, at: float, before: float = 0.0, after: float = 1.0) -> float:
    r"""Step (on/off) weight schedule.

    .. math::

        w(t) = \begin{cases} w_{\mathrm{before}} & t < t_s \\ w_{\mathrm{after}} & t \geq t_s \end{cases}

    The switch is inclusive: at :math:`t = t_s` the weight is already ``after``. (deepinv's
    :class:`deepinv.loss.StepLossScheduler` switches strictly after its threshold.)

    :param float t: progress value (epoch or step).
    :param float at: :math:`t_s`, the first progress value with weight ``after``.
    :param float before: weight before the switch, default ``0.0`` (term off).
    :param float after: weight from the switch on, default ``1.0`` (term on).
    :return: (float) the weight.

    :Example:

    >>> [step_weight(t, at=2) for t in range(4)]
    [0.0, 0.0, 1.0, 1.0]
    """
    return float(after if t >= at else before)


def cosine_weight(
    t: float, start: float, end: float, w0: float = 0.0, w1: float = 1.0
) -> float:
    r"""Half-cosine ramp between two weights (smooth warm-up or cool-down).

    .. math::

        w(t) = w_0 + (w_1 - w_0)\, \frac{1 - \cos(\pi s)}{2}, \qquad
        s = \mathrm{clip}\!\left(\frac{t - t_0}{t_1 - t_0}, 0, 1\right)

    :param float t: progress value (epoch or step).
    :param float start: :math:`t_0`, where the ramp starts.
    :param float end: :math:`t_1 \geq t_0`, where the ramp ends.
    :param float w0: weight before the ramp, default ``0.0``.
    :param float w1: weight after the ramp, default ``1.0``.
    :return: (float) the weight.

    :Example:

    >>> round(cosine_weight(5, start=0, end=10, w0=1.0, w1=0.0), 6)
    0.5
    """
    s = _ramp_fraction(t, start, end)
    return float(w0 + (w1 - w0) * 0.5 * (1.0 - math.cos(math.pi * s)))
