r"""Exposure times against the images: measured ratios, a check of the listed times, and the
exponent that only a prior can set.

Two neighbouring exposures :math:`a, b` of a static scene, linearized by an ICRF :math:`f`,
satisfy :math:`f(y_b) = (t_b / t_a) f(y_a)` wherever both are well exposed, so the images
measure every exposure ratio. Listed (EXIF) times are usually right to a few percent, but
cameras that hit a shutter limit write times that double while the frames stay equally
bright: a consecutive ratio of 1 where the list says 2. :func:`check_exposure_ratios` finds
such steps from the measured consecutive ratios, which need no more than a rough curve (equal
frames give a ratio of 1 through any curve).

The images fix the exposure times only up to a common scale and a common power: the curve
:math:`f^g` with the times :math:`c\, t^g` explains a stack exactly as well as :math:`f` with
:math:`t`. :func:`exponent_from_prior` picks :math:`g` and :math:`c` from the listed times
(a robust regression, so a frame with a grossly wrong listed time does not drag them).
Ratios read through a curve share that ambiguity: a curve bent by wrong listed times reads
every step raised to a common power, and :func:`common_exponent` takes that power back from
the listed steps that agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_threshold
from deepinv_icrf.bracket import check_exposure_times

__all__ = [
    "pairwise_log_ratios",
    "consecutive_log_ratios",
    "TimeCheck",
    "check_exposure_ratios",
    "exponent_from_prior",
    "common_exponent",
    "HALF_STOP",
]

#: Smallest number of well-exposed values for a pair of exposures to count.
MIN_PAIR_PIXELS = 20
#: Default tolerance of :func:`check_exposure_ratios`: half a stop, in log units.
HALF_STOP = 0.5 * math.log(2.0)
#: How close a step must come to its listed value to set :func:`common_exponent`: cameras
#: round times (1/60 for 1/64: 6.5%) and drift by a few percent.
EXPONENT_TOLERANCE = math.log(1.15)
#: The common powers :func:`common_exponent` considers.
EXPONENT_RANGE = (0.5, 2.0)
#: Standard deviation of a normal distribution per unit of median absolute deviation.
_MAD_TO_STD = 1.482602218505602


def _selected(
    x: Tensor, select: Tensor, lower: float, upper: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``x`` (float64) and ``select`` flattened to ``(N, P)``, and the mask of the values
    whose selection codes lie in ``[lower, upper]``; checks the range and the shapes."""
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(
            f"Expected 0 <= `lower` < `upper` <= 1, but got {lower!r} and {upper!r}."
        )
    if select.shape != x.shape:
        raise ValueError(
            f"Expected `select` to have the shape of `x` {tuple(x.shape)}, "
            f"but got {tuple(select.shape)}."
        )
    n = x.shape[0]
    x = x.reshape(n, -1).to(torch.float64)
    select = select.reshape(n, -1)
    return x, select, (select >= lower) & (select <= upper)


def pairwise_log_ratios(
    x: Tensor,
    select: Tensor,
    lower: float = 0.15,
    upper: float = 0.9,
    pairs: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Log exposure ratio of pairs of images of a linearized stack, by a ratio of sums.

    For images :math:`a < b` and the set :math:`S_{ab}` of values whose *selection codes* lie
    in :math:`[l, u]` in both images (every channel pooled),

    .. math::

        \rho_{ab} = \log \frac{\sum_{S_{ab}} x_a}{\sum_{S_{ab}} x_b}, \qquad
        \mathrm{se}_{ab}^2 = \frac{\sum_{S_{ab}} (x_a - R x_b)^2}{\left(\sum_{S_{ab}} x_a\right)^2},
        \quad R = e^{\rho_{ab}}.

    Any set of unclipped values gives the exact ratio without noise. With noise, selecting on
    the codes that are averaged biases the estimate (values pushed into the range by their
    own noise); selecting on the codes of a neighbouring pixel (independent noise, nearly the
    same scene value) avoids it.

    :param torch.Tensor x: linearized values :math:`f(y)`, shape ``(N, ...)``.
    :param torch.Tensor select: codes in :math:`[0, 1]` deciding which values count, shape of
        ``x``.
    :param float lower: smallest accepted selection code :math:`l` (default 0.15).
    :param float upper: largest accepted selection code :math:`u` (default 0.9).
    :param tuple, None pairs: the pairs ``(a_idx, b_idx)`` to measure; default every pair
        :math:`a < b`.
    :return: (tuple) ``(a_idx, b_idx, rho, se)`` of shape ``(P,)``, with ``se = inf`` where
        a pair has fewer than 20 selected values.

    |sep|

    :Example:

    >>> import torch
    >>> x = torch.rand(1, 500) * 0.2 + 0.3
    >>> x = x * torch.tensor([1.0, 2.0, 0.5]).view(3, 1)
    >>> a, b, rho, se = pairwise_log_ratios(x, x, lower=0.0, upper=1.0)
    >>> [round(v, 4) for v in rho.tolist()]
    [-0.6931, 0.6931, 1.3863]
    """
    x, select, ok = _selected(x, select, lower, upper)
    n, work = x.shape[0], x.dtype
    if pairs is None:
        a_idx, b_idx = torch.triu_indices(n, n, offset=1, device=x.device)
    else:
        a_idx, b_idx = (p.to(x.device) for p in pairs)
    valid = (ok[a_idx] & ok[b_idx]).to(work)
    sum_a = (valid * x[a_idx]).sum(-1)
    sum_b = (valid * x[b_idx]).sum(-1)
    usable = (valid.sum(-1) >= MIN_PAIR_PIXELS) & (sum_a > 0) & (sum_b > 0)
    tiny = torch.finfo(work).tiny
    ratio = sum_a / sum_b.clamp_min(tiny)
    resid = valid * (x[a_idx] - ratio.unsqueeze(-1) * x[b_idx])
    se = (resid**2).sum(-1).sqrt() / sum_a.clamp_min(tiny)
    rho = torch.where(usable, ratio.clamp_min(tiny).log(), 0.0)
    se = torch.where(usable, se.clamp_min(1e-12), torch.inf)
    return a_idx, b_idx, rho, se


def consecutive_log_ratios(
    x: Tensor,
    select: Tensor,
    order: Tensor,
    lower: float = 0.15,
    upper: float = 0.9,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Measured :math:`\log(t_{k+1} / t_k)` of consecutive exposures, robustly.

    For the exposures ``order[k]`` and ``order[k + 1]`` and the values whose selection codes
    lie in :math:`[l, u]` in both, the per-pixel log ratios
    :math:`d = \log x_{k+1} - \log x_k` give the median :math:`\hat\rho_k`, the robust spread
    :math:`s_k = 1.4826\, \mathrm{MAD}(d)` and the standard error
    :math:`1.2533\, s_k / \sqrt{n_k}`. A moving object or a few misregistered edges do not move
    the median; a spread far above the noise says the two images do not match pixel for pixel
    (a handheld bracket before alignment), where no ratio can be read.

    :param torch.Tensor x: linearized values ``(N, ...)``.
    :param torch.Tensor select: selection codes, shape of ``x`` (e.g. the codes of a
        neighbouring pixel, whose noise is independent of ``x``'s).
    :param torch.Tensor order: the exposures in increasing listed time ``(N,)``.
    :param float lower: smallest accepted selection code (default 0.15).
    :param float upper: largest accepted selection code (default 0.9).
    :return: (tuple) the log ratios, their standard errors and spreads, ``(N - 1,)`` float64
        each (``se = inf`` where fewer than 20 values are well exposed in both).

    |sep|

    :Example:

    >>> import torch
    >>> x = (torch.rand(1, 400) * 0.2 + 0.2) * torch.tensor([1.0, 2.0, 2.0]).view(3, 1)
    >>> rho, se, spread = consecutive_log_ratios(x, x, torch.tensor([0, 1, 2]), 0.0, 1.0)
    >>> [round(abs(v), 3) for v in rho.tolist()]
    [0.693, 0.0]
    """
    x, select, ok = _selected(x, select, lower, upper)
    work = x.dtype
    ok = ok & (x > 0)
    a, b = order[:-1].to(x.device), order[1:].to(x.device)
    valid = ok[a] & ok[b]
    diff = (x[b].clamp_min(1e-300).log() - x[a].clamp_min(1e-300).log()).where(
        valid, math.nan
    )
    rho = diff.nanmedian(dim=-1).values
    spread = _MAD_TO_STD * (diff - rho.unsqueeze(-1)).abs().nanmedian(dim=-1).values
    count = valid.sum(-1)
    usable = count >= MIN_PAIR_PIXELS
    se = 1.2533 * spread / count.clamp_min(1).to(work).sqrt()
    se = torch.where(usable, se.clamp_min(1e-12), torch.inf)
    rho = torch.where(usable, rho, 0.0)
    spread = torch.where(usable, spread, math.nan)
    return rho, se, spread


@dataclass
class TimeCheck:
    r"""Result of :func:`check_exposure_ratios`: the listed exposure times against the images.

    Frames and steps are indexed as the exposures were given (not sorted).

    :param torch.Tensor listed: the listed times ``(N,)`` (seconds).
    :param torch.Tensor implied: times that agree with the images ``(N,)``: the listed ones,
        except across the steps that disagree, where the measured ratio replaces the listed
        one; scaled to agree with the largest group of frames whose steps agree.
    :param torch.Tensor order: the exposures by increasing listed time ``(N,)``.
    :param torch.Tensor listed_step: listed ratios :math:`t_{k+1} / t_k` along ``order``
        ``(N - 1,)``.
    :param torch.Tensor measured_step: the ratios the images show ``(N - 1,)`` (NaN where
        too few pixels were well exposed in both frames).
    :param torch.Tensor step_se: standard errors of the measured log ratios ``(N - 1,)``.
    :param list disagreeing_steps: the steps ``(earlier, later)`` (frame indices) whose
        measured ratio disagrees with the listed one beyond the tolerance.
    :param list suspect_frames: the frames outside the largest group of frames whose steps
        agree (their listed times disagree with that group's by the factor ``factor``).
    :param torch.Tensor factor: listed over implied time per frame ``(N,)`` (1 in the group).
    :param float tolerance: the tolerance in log units (default half a stop).
    :param list unmatched_steps: the steps that looked off but whose images do not match
        pixel for pixel (the spread of the per-pixel ratios exceeds the tolerance: motion or
        misregistration), so no ratio could be read; they count as agreeing.
    :param float exponent: the common power the measured log ratios were multiplied by
        (:func:`common_exponent`; 1 when they were taken as read).
    """

    listed: Tensor
    implied: Tensor
    order: Tensor
    listed_step: Tensor
    measured_step: Tensor
    step_se: Tensor
    disagreeing_steps: list[tuple[int, int]] = field(default_factory=list)
    suspect_frames: list[int] = field(default_factory=list)
    factor: Tensor | None = None
    tolerance: float = HALF_STOP
    unmatched_steps: list[tuple[int, int]] = field(default_factory=list)
    exponent: float = 1.0

    @property
    def consistent(self) -> bool:
        r"""``True`` when every step of the listed times agrees with the images."""
        return not self.disagreeing_steps

    def describe(self, names: list[str] | None = None) -> str:
        r"""A short report for people: one line per disagreeing step and per suspect frame.

        :param list, None names: a name per frame (file names); default ``frame k``.
        :return: (str) the report (one line ``listed exposure times agree ...`` when
            consistent).
        """
        name = (lambda k: names[k]) if names is not None else (lambda k: f"frame {k}")
        unmatched = [
            f"  {name(a)} -> {name(b)}: not checked, the images do not match pixel for "
            "pixel (a moving camera or scene: align the bracket)"
            for a, b in self.unmatched_steps
        ]
        if self.consistent:
            head = (
                "listed exposure times agree with the images (every step within "
                f"x{math.exp(self.tolerance):.2f})"
            )
            return "\n".join([head + (":" if unmatched else "")] + unmatched)
        lines = ["listed exposure times disagree with the images:"]
        position = {int(k): i for i, k in enumerate(self.order.tolist())}
        for a, b in self.disagreeing_steps:
            i = position[a]
            lines.append(
                f"  {name(a)} -> {name(b)}: the images show x{float(self.measured_step[i]):.2f}"
                f" where the listed times say x{float(self.listed_step[i]):.2f}"
            )
        if self.exponent != 1.0:
            lines.append(
                "  (the images fix the steps only up to a common power: the listed steps "
                f"that agree set it, the measured ratios are raised to {self.exponent:.3g})"
            )
        if self.suspect_frames and self.factor is not None:
            lines.append(
                "  listed times off against the frames that agree: "
                + ", ".join(
                    f"{name(k)} x{float(self.factor[k]):.3g}"
                    for k in self.suspect_frames
                )
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        r"""The check as JSON-ready values (for ``summary.json``).

        :return: (dict) ``consistent``, ``tolerance_factor``, ``listed``, ``implied``,
            ``disagreeing_steps`` (with the listed and measured ratios),
            ``suspect_frames`` (with their factors) and ``unmatched_steps``.
        """
        position = {int(k): i for i, k in enumerate(self.order.tolist())}

        def number(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "consistent": self.consistent,
            "tolerance_factor": math.exp(self.tolerance),
            "listed": self.listed.tolist(),
            "implied": self.implied.tolist(),
            "disagreeing_steps": [
                {
                    "frames": [a, b],
                    "listed_ratio": number(float(self.listed_step[position[a]])),
                    "measured_ratio": number(float(self.measured_step[position[a]])),
                }
                for a, b in self.disagreeing_steps
            ],
            "suspect_frames": [
                {
                    "frame": k,
                    "factor": (
                        None if self.factor is None else number(float(self.factor[k]))
                    ),
                }
                for k in self.suspect_frames
            ],
            "unmatched_steps": [list(step) for step in self.unmatched_steps],
            "exponent": self.exponent,
        }


def check_exposure_ratios(
    log_ratio: Tensor,
    se: Tensor,
    listed_times: Tensor,
    tolerance: float = HALF_STOP,
    z: float = 4.0,
    spread: Tensor | None = None,
    free_exponent: bool = False,
) -> TimeCheck:
    r"""Check listed exposure times against the consecutive ratios the images show.

    With the exposures in increasing listed time, step :math:`k` (exposure :math:`k` to
    :math:`k + 1`) disagrees when the measured log ratio :math:`\hat\rho_k` (e.g. from
    :func:`consecutive_log_ratios`) is off the listed :math:`\rho_k` by more than the
    tolerance and the noise,

    .. math::

        |\hat\rho_k - \rho_k| > \tau + z\, \mathrm{se}_k .

    The default :math:`\tau` is half a stop: cameras round times (1/60 for 1/64) and drift by
    a few percent, and the ratios measured through a fitted curve carry its errors, but a
    frame at the wrong stop is off by a whole one. The steps that agree split the frames into
    groups; the largest group (ties: the one with the shortest times) anchors the times
    implied by the images, which take the measured ratio across every disagreeing step. A
    disagreeing step whose per-pixel ratios spread by more than the tolerance (``spread``)
    has images that do not match pixel for pixel (motion, misregistration): its ratio is
    not trusted and it is reported as unmatched instead.

    Ratios read through a curve fitted at wrong times can all be off by a common power
    (:math:`f^g` with :math:`t^g` explains the images as well as :math:`f` with :math:`t`):
    with ``free_exponent``, where some steps disagree as read and the frames span more than
    the tolerance as read, the measured log ratios are multiplied by the power that brings
    the most steps back to their listed values (:func:`common_exponent`), so the steps that
    agree anchor the others (listed times that agree as read are never questioned by it,
    and frames that barely differ stay so).

    :param torch.Tensor log_ratio: measured :math:`\hat\rho_k` ``(N - 1,)``, along
        increasing listed time.
    :param torch.Tensor se: their standard errors ``(N - 1,)`` (``inf``: not measured; such
        a step counts as agreeing).
    :param torch.Tensor listed_times: the listed times ``(N,)``, finite, ``> 0``, any order.
    :param float tolerance: :math:`\tau` in log units (default :math:`\log\sqrt 2`).
    :param float z: noise multiplier (default 4).
    :param torch.Tensor, None spread: robust spread of the per-pixel log ratios of each step
        ``(N - 1,)`` (from :func:`consecutive_log_ratios`); ``None``: not used.
    :param bool free_exponent: take the common power of the measured ratios from the steps
        that agree (:func:`common_exponent`) instead of reading them as they are (default).
    :return: (:class:`TimeCheck`) the check.

    |sep|

    :Example:

    >>> import math, torch
    >>> listed = torch.tensor([1.0, 2.0, 4.0, 8.0])
    >>> measured = torch.tensor([math.log(2.0), 0.0, math.log(2.0)])  # frames 1, 2 equal
    >>> check = check_exposure_ratios(measured, torch.full((3,), 0.01), listed)
    >>> check.consistent, check.disagreeing_steps
    (False, [(1, 2)])
    >>> [round(v, 3) for v in check.implied.tolist()]
    [1.0, 2.0, 2.0, 4.0]
    """
    check_float(log_ratio, "log_ratio")
    check_float(se, "se")
    listed = check_exposure_times(listed_times, name="listed_times")[0]
    tolerance = check_threshold(tolerance, "tolerance")
    z = check_threshold(z, "z")
    listed = listed.detach().to("cpu", torch.float64)
    n = listed.shape[0]
    if log_ratio.shape != (n - 1,) or se.shape != (n - 1,):
        raise ValueError(
            f"Expected `log_ratio` and `se` of shape ({n - 1},) for {n} listed times, but "
            f"got {tuple(log_ratio.shape)} and {tuple(se.shape)}."
        )
    order = torch.argsort(listed)
    lt = listed[order].log()
    listed_step = lt.diff()
    rho = log_ratio.detach().to("cpu", torch.float64)
    err = se.detach().to("cpu", torch.float64)
    measured = torch.isfinite(err) & torch.isfinite(rho)
    if spread is not None:
        if spread.shape != (n - 1,):
            raise ValueError(
                f"Expected `spread` of shape ({n - 1},), but got {tuple(spread.shape)}."
            )
        spread = spread.detach().to("cpu", torch.float64)

    def classify(
        rho: Tensor, err: Tensor, spread: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        off = measured & ((rho - listed_step).abs() > tolerance + z * err)
        if spread is None:
            return off, torch.zeros_like(off)
        # a ratio read from images that do not match pixel for pixel says nothing
        unmatched = off & (spread > tolerance)
        return off & ~unmatched, unmatched

    off, unmatched = classify(rho, err, spread)
    exponent = 1.0
    # only where the ratios as read disagree (listed times that agree as read are never
    # questioned by it) and span more than the tolerance (no power makes frames that
    # barely differ a bracket)
    if (
        free_exponent
        and bool(off.any())
        and float(rho.where(measured, 0.0).sum()) > tolerance
    ):
        g = common_exponent(rho.where(measured, math.nan), listed_step)
        if g != 1.0:
            exponent, rho, err = g, rho * g, err * g
            off, unmatched = classify(rho, err, None if spread is None else spread * g)
    step = torch.where(off, rho, listed_step)
    # groups of frames joined by agreeing steps; the largest anchors the implied times
    group = torch.cat([torch.zeros(1, dtype=torch.long), off.long().cumsum(0)])
    sizes = torch.bincount(group)
    anchor = int(torch.argmax(sizes))  # first of the largest: the shortest times
    implied_log = torch.cat([lt[:1], lt[0] + step.cumsum(0)])
    members = group == anchor
    implied_log = implied_log + (lt[members] - implied_log[members]).mean()
    implied = torch.empty(n, dtype=torch.float64)
    implied[order] = implied_log.exp()
    factor = listed / implied
    suspects = sorted(int(order[i]) for i in range(n) if not bool(members[i]))
    steps = [(int(order[i]), int(order[i + 1])) for i in range(n - 1) if bool(off[i])]
    return TimeCheck(
        listed=listed,
        implied=implied,
        order=order,
        listed_step=listed_step.exp(),
        measured_step=torch.where(measured, rho.exp(), math.nan),
        step_se=err,
        disagreeing_steps=steps,
        suspect_frames=suspects,
        factor=factor,
        tolerance=float(tolerance),
        unmatched_steps=[
            (int(order[i]), int(order[i + 1]))
            for i in range(n - 1)
            if bool(unmatched[i])
        ],
        exponent=exponent,
    )


def _agreeing(g: float, rho_hat: Tensor, rho: Tensor, tolerance: float) -> Tensor:
    r"""The steps whose measured log ratio times ``g`` lies within ``tolerance`` of the
    listed one."""
    return (g * rho_hat - rho).abs() <= tolerance


def _slope(rho_hat: Tensor, rho: Tensor, keep: Tensor) -> float | None:
    r"""The least-squares slope through the origin of ``rho`` on ``rho_hat`` over the steps
    ``keep`` (``None`` when their measured ratios are all 0)."""
    denom = float((rho_hat[keep] ** 2).sum())
    return None if denom <= 0 else float((rho_hat[keep] * rho[keep]).sum()) / denom


def common_exponent(
    log_ratio: Tensor,
    listed_log_step: Tensor,
    tolerance: float = EXPONENT_TOLERANCE,
) -> float:
    r"""The common power of measured exposure steps that brings the most of them back to the
    listed ones.

    Steps read through a curve are known only up to a common power :math:`g` (a curve bent
    by wrong listed times reads every step :math:`r` as :math:`r^{1/g}`). The power is the
    one under which the most steps agree with their listed values within ``tolerance``,

    .. math::

        g = \arg\max_{g \in [1/2,\, 2]} \#\{k : |g \hat\rho_k - \rho_k| \le \tau\},

    refined by least squares over those steps. It is 1 unless it makes strictly more steps
    agree than the ratios as read (right listed times, or a few wrong frames, keep the
    ratios as they are). Between powers that bring back as many steps, the one that brings
    back the step of the shortest exposures wins, as the anchor of
    :func:`check_exposure_ratios` does: cameras write wrong times at their long-exposure
    limit.

    :param torch.Tensor log_ratio: measured log ratios :math:`\hat\rho_k` ``(N - 1,)``
        along increasing listed time (NaN: not measured, ignored).
    :param torch.Tensor listed_log_step: listed log ratios :math:`\rho_k` ``(N - 1,)``.
    :param float tolerance: :math:`\tau` in log units (default :math:`\log 1.15`).
    :return: (float) :math:`g`.

    |sep|

    :Example:

    >>> import math, torch
    >>> listed = torch.full((4,), math.log(8.0))  # listed 3 stops apart
    >>> # read through a bent curve: the two right steps as x13, the two wrong ones smaller
    >>> read = torch.tensor([13.0, 13.0, 1.5, 3.0]).log()
    >>> g = common_exponent(read, listed)
    >>> round(g, 3), [round(v, 2) for v in (g * read).exp().tolist()]
    (0.811, [8.0, 8.0, 1.39, 2.44])
    """
    tolerance = check_threshold(tolerance, "tolerance")
    rho_hat = log_ratio.detach().to("cpu", torch.float64).reshape(-1)
    rho = listed_log_step.detach().to("cpu", torch.float64).reshape(-1)
    if rho_hat.shape != rho.shape:
        raise ValueError(
            "Expected `log_ratio` and `listed_log_step` of one shape (N - 1,), but got "
            f"{tuple(log_ratio.shape)} and {tuple(listed_log_step.shape)}."
        )
    ok = torch.isfinite(rho_hat) & torch.isfinite(rho)
    rho_hat, rho = rho_hat[ok], rho[ok]

    def agreeing(g: float) -> Tensor:
        return _agreeing(g, rho_hat, rho, tolerance)

    low, high = EXPONENT_RANGE
    best, best_count = 1.0, int(agreeing(1.0).sum())
    # the powers under which each step agrees form an interval: the most steps agree at
    # an end or the middle of one (step by step, so ties go to the earlier step)
    usable = (rho_hat >= tolerance).nonzero().squeeze(1).tolist()
    shrink = 1.0 - 1e-6
    candidates = [
        (float(rho[k]) + d * shrink * tolerance) / float(rho_hat[k])
        for k in usable
        for d in (0.0, -1.0, 1.0)
    ]
    for g in candidates:
        if not low <= g <= high:
            continue
        count = int(agreeing(g).sum())
        if count > best_count:  # ties: the earlier step's power (shorter exposures)
            best, best_count = g, count
    if best == 1.0:
        return 1.0
    # the best candidate's own step agrees, and it was measured (>= tolerance): a slope
    g = _slope(rho_hat, rho, agreeing(best))
    return min(max(g, low), high)


def exponent_from_prior(
    log_times: Tensor,
    prior_log_times: Tensor,
    tolerance: float = HALF_STOP,
    iterations: int = 20,
    return_spread: bool = False,
) -> tuple[float, float] | tuple[float, float, float]:
    r"""The common power and scale of exposure times that only a prior can set.

    The images fix log-times :math:`\tau_k` only up to :math:`g \tau_k + c`. With the listed
    log-times :math:`\tau^0_k` as the prior, and the steps between neighbours in listed
    order :math:`\hat\rho_k = \Delta\tau_k`, :math:`\rho_k = \Delta\tau^0_k`, the exponent is
    the least-squares slope through the origin over the steps that agree,

    .. math::

        g = \frac{\sum_{k \in A} \hat\rho_k \rho_k}{\sum_{k \in A} \hat\rho_k^2},
        \qquad A = \{k : |g \hat\rho_k - \rho_k| \le \tau\},

    iterated from :math:`A` = every step, so a frame at the wrong stop (a camera at its
    shutter limit writing doubling times for equally bright frames) does not drag it. The
    scale :math:`c` makes :math:`g\tau + c` agree on average with the listed times of the
    largest group of frames joined by agreeing steps (ties: the shortest times). The curve
    that goes with :math:`g \tau + c` is :math:`f^g`.

    :param torch.Tensor log_times: log-times :math:`\tau` as the images give them ``(N,)``.
    :param torch.Tensor prior_log_times: listed log-times :math:`\tau^0` ``(N,)``.
    :param float tolerance: :math:`\tau`, log units (default half a stop).
    :param int iterations: most reclassifications (default 20).
    :param bool return_spread: also return the spread of the log-times within the groups of
        frames joined by agreeing steps, :math:`s = (\sum_G \sum_{k \in G} (\tau_k -
        \bar\tau_G)^2)^{1/2}`: with listed log-times off by :math:`\sigma_p` each, the std
        of :math:`g` is about :math:`\sigma_p / s` (only the steps that agree inform it).
    :return: (tuple) :math:`(g, c)`, or :math:`(g, c, s)` with ``return_spread``.

    |sep|

    :Example:

    >>> import math, torch
    >>> listed = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]).log()
    >>> # frames 2 and 3 equally bright although listed a stop apart; data in units of f**0.5
    >>> data = 0.5 * torch.tensor([1.0, 2.0, 4.0, 4.0, 8.0]).log()
    >>> g, c = exponent_from_prior(data, listed)
    >>> round(g, 3), [round(v, 3) for v in (g * data + c).exp().tolist()]
    (2.0, [1.0, 2.0, 4.0, 4.0, 8.0])
    """
    tolerance = check_threshold(tolerance, "tolerance")
    tau = log_times.detach().to("cpu", torch.float64).reshape(-1)
    tau0 = prior_log_times.detach().to("cpu", torch.float64).reshape(-1)
    if tau.shape != tau0.shape or tau.numel() < 2:
        raise ValueError(
            "Expected `log_times` and `prior_log_times` of one shape (N,) with N >= 2, but "
            f"got {tuple(log_times.shape)} and {tuple(prior_log_times.shape)}."
        )
    order = torch.argsort(tau0)
    rho_hat, rho = tau[order].diff(), tau0[order].diff()
    agree = torch.ones_like(rho, dtype=torch.bool)
    g = 1.0
    for _ in range(iterations):
        slope = _slope(rho_hat, rho, agree)
        if slope is None:
            break
        g = slope
        new = _agreeing(g, rho_hat, rho, tolerance)
        if not bool(new.any()) or bool((new == agree).all()):
            break
        agree = new
    # the frames joined by agreeing steps: the largest group anchors the scale
    group = torch.cat([torch.zeros(1, dtype=torch.long), (~agree).long().cumsum(0)])
    members = group == int(torch.argmax(torch.bincount(group)))
    c = float((tau0[order] - g * tau[order])[members].mean())
    if not return_spread:
        return g, c
    means = (
        torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(
            0, group, tau[order]
        )
        / torch.bincount(group).double()
    )
    spread = float((tau[order] - means[group]).square().sum().sqrt())
    return g, c, spread
