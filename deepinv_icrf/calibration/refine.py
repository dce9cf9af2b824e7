r"""Exposure refinement: fit the curve and the relative exposure times together.

Real EXIF times are nominal (a camera's "1/60" is often 1/64; aperture and gain drift a few
percent) or missing. :func:`fit_refined` alternates a curve fit at the current times
(:func:`~deepinv_icrf.calibration.fit_icrf`) with a closed-form re-estimate of the log-times from
the linearized stack (:func:`estimate_log_exposures`), the EXIF times acting as a Gaussian prior.

The joint problem has an exact ambiguity: if the curve :math:`f` and the times :math:`t_k` explain
a stack, so do :math:`f^g` and :math:`c\, t_k^g` for every :math:`g > 0, c > 0` (the radiance
becomes :math:`E^g / c`). The data fix the log-times only up to this affine map
:math:`\tau \mapsto g \tau + \log c`; the prior picks :math:`g` and :math:`c`. Without any times
there is no prior: a convention (exposures a fixed number of stops apart, in order of
brightness) is assumed and a warning says so.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_int, check_positive
from deepinv_icrf.models import ICRF

__all__ = [
    "AMBIGUITY_WARNING",
    "estimate_log_exposures",
    "fit_refined",
    "pairwise_log_ratios",
    "describe_refinement",
]

AMBIGUITY_WARNING = (
    "exposure_times is None: the curve exponent and the exposure ratios are not identifiable "
    "together (the curve f**g with the times t**g fits the stack equally well for every g > 0). "
    "Assumed exposures {stops:g} stop(s) apart in order of increasing brightness "
    "(times 2**({stops:g} k)); the fitted curve and the refined times are correct only up to "
    "that exponent."
)
# smallest number of well-exposed pixel values for a pair of exposures to count
_MIN_PAIR_PIXELS = 20


def pairwise_log_ratios(
    x: Tensor,
    select: Tensor,
    lower: float = 0.15,
    upper: float = 0.9,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Log exposure ratio of every pair of images of a linearized stack, by a ratio of sums.

    For images :math:`a < b` and the set :math:`S_{ab}` of values whose *selection codes* lie
    in :math:`[l, u]` in both images (every channel pooled),

    .. math::

        \rho_{ab} = \log \frac{\sum_{S_{ab}} x_a}{\sum_{S_{ab}} x_b}, \qquad
        \mathrm{se}_{ab}^2 = \frac{\sum_{S_{ab}} (x_a - R x_b)^2}{\left(\sum_{S_{ab}} x_a\right)^2},
        \quad R = e^{\rho_{ab}}.

    Any set of unclipped values gives the exact ratio without noise. With noise, selecting on
    the codes that are averaged biases the estimate (values pushed into the range by their
    own noise); selecting on the codes of a neighbouring pixel (independent noise, nearly the
    same scene value) avoids it, which is how :func:`fit_refined` calls it.

    :param torch.Tensor x: linearized values :math:`f(y)`, shape ``(N, ...)``.
    :param torch.Tensor select: codes in :math:`[0, 1]` deciding which values count, shape of ``x``.
    :param float lower: smallest accepted selection code :math:`l` (default 0.15).
    :param float upper: largest accepted selection code :math:`u` (default 0.9).
    :return: (tuple) ``(a_idx, b_idx, rho, se)`` of shape ``(P,)``, ``P = N (N - 1) / 2``, with
        ``se = inf`` where a pair has fewer than 20 selected values.

    |sep|

    :Example:

    >>> import torch
    >>> x = torch.rand(1, 500) * 0.2 + 0.3
    >>> x = x * torch.tensor([1.0, 2.0, 0.5]).view(3, 1)
    >>> a, b, rho, se = pairwise_log_ratios(x, x, lower=0.0, upper=1.0)
    >>> [round(v, 4) for v in rho.tolist()]
    [-0.6931, 0.6931, 1.3863]
    """
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
    work = torch.float64
    x = x.reshape(n, -1).to(work)
    select = select.reshape(n, -1)
    ok = (select >= lower) & (select <= upper)
    a_idx, b_idx = torch.triu_indices(n, n, offset=1, device=x.device)
    valid = (ok[a_idx] & ok[b_idx]).to(work)
    sum_a = (valid * x[a_idx]).sum(-1)
    sum_b = (valid * x[b_idx]).sum(-1)
    usable = (valid.sum(-1) >= _MIN_PAIR_PIXELS) & (sum_a > 0) & (sum_b > 0)
    tiny = torch.finfo(work).tiny
    ratio = sum_a / sum_b.clamp_min(tiny)
    resid = valid * (x[a_idx] - ratio.unsqueeze(-1) * x[b_idx])
    se = (resid**2).sum(-1).sqrt() / sum_a.clamp_min(tiny)
    rho = torch.where(usable, ratio.clamp_min(tiny).log(), 0.0)
    se = torch.where(usable, se.clamp_min(1e-12), torch.inf)
    return a_idx, b_idx, rho, se


def estimate_log_exposures(
    a_idx: Tensor,
    b_idx: Tensor,
    rho: Tensor,
    se: Tensor,
    prior_log_times: Tensor,
    prior_std: float = 0.1,
    iterations: int = 50,
) -> tuple[Tensor, float, Tensor]:
    r"""MAP log exposure times from pairwise log ratios, resolving the exponent by a prior.

    The log ratios :math:`\rho_{ab}` measured through a curve :math:`f` give the log-times in the
    units of :math:`f`; the same data read through :math:`f^g` give :math:`g \rho_{ab}`. So the
    log-times are :math:`\tau = g u + c` with :math:`u` (mean zero) and the exponent :math:`g`
    and offset :math:`c` chosen jointly with the Gaussian prior :math:`\tau \sim
    \mathcal{N}(\tau^0, \sigma_p^2)`:

    .. math::

        \min_{u, g, c}\ \sum_{(a, b)} \frac{(\rho_{ab} - u_a + u_b)^2}{\mathrm{se}_{ab}^2}
        + \sum_k \frac{(g u_k + c - \tau^0_k)^2}{\sigma_p^2},
        \qquad \textstyle\sum_k u_k = 0,

    solved by alternating the linear least-squares problems in :math:`u` and in :math:`(g, c)`.

    :param torch.Tensor a_idx: first image of each pair, shape ``(P,)``.
    :param torch.Tensor b_idx: second image of each pair, shape ``(P,)``.
    :param torch.Tensor rho: log ratios :math:`\log t_a - \log t_b` in the curve's units, ``(P,)``.
    :param torch.Tensor se: their standard errors ``(P,)`` (``inf``: pair unused).
    :param torch.Tensor prior_log_times: :math:`\tau^0`, shape ``(N,)``.
    :param float prior_std: :math:`\sigma_p`, prior std of each log-time (default 0.1, about 10%).
    :param int iterations: alternations (default 50).
    :return: (tuple) log-times :math:`\tau` ``(N,)`` (float64), the exponent :math:`g` (the curve
        that goes with :math:`\tau` is :math:`f^g`) and the posterior std of :math:`\tau` ``(N,)``
        (exponent held fixed).

    |sep|

    :Example:

    >>> import torch
    >>> a, b = torch.triu_indices(3, 3, offset=1)
    >>> true = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    >>> rho = 0.5 * (true[a] - true[b])  # measured through f**0.5
    >>> tau, g, _ = estimate_log_exposures(a, b, rho, torch.full((3,), 1e-3), true)
    >>> [round(v, 4) for v in tau.tolist()], round(g, 4)
    ([0.0, 1.0, 2.0], 2.0)
    """
    if not prior_std > 0 or not math.isfinite(prior_std):
        raise ValueError(
            f"Expected `prior_std` to be a finite float > 0, but got {prior_std!r}."
        )
    work = torch.float64
    tau0 = prior_log_times.detach().to("cpu", work)
    n = tau0.shape[0]
    a_idx, b_idx = a_idx.to("cpu"), b_idx.to("cpu")
    rho, se = rho.detach().to("cpu", work), se.detach().to("cpu", work)
    w = torch.where(torch.isfinite(se), 1.0 / se.clamp_min(1e-12) ** 2, 0.0)
    lap = torch.zeros(n, n, dtype=work)
    rhs = torch.zeros(n, dtype=work)
    e = torch.zeros(rho.shape[0], n, dtype=work)
    e[torch.arange(rho.shape[0]), a_idx] = 1.0
    e[torch.arange(rho.shape[0]), b_idx] = -1.0
    lap = e.T @ (w.unsqueeze(-1) * e)
    rhs = e.T @ (w * rho)
    ones = torch.ones(n, n, dtype=work)
    gauge = (lap.diagonal().sum() / n).clamp_min(1.0) * ones
    prec = 1.0 / prior_std**2
    # start: the prior's own spread, g from the data's spread
    u = tau0 - tau0.mean()
    g, c = 1.0, float(tau0.mean())
    for _ in range(iterations):
        system = lap + gauge + g * g * prec * torch.eye(n, dtype=work)
        u = torch.linalg.solve(system, rhs + g * prec * (tau0 - c))
        u = u - u.mean()
        denom = float((u * u).sum())
        if denom > 0:
            g_new = float((u * (tau0 - tau0.mean())).sum()) / denom
            g = g_new if g_new > 0 else g
        c = float((tau0 - g * u).mean())
    system = lap + gauge + g * g * prec * torch.eye(n, dtype=work)
    std = g * torch.linalg.inv(system).diagonal().clamp_min(0).sqrt()
    return g * u + c, g, std


def _fit_callable():
    from deepinv_icrf.calibration.fit import fit_icrf

    return fit_icrf


def _assumed_log_times(y: Tensor, stops: float) -> Tensor:
    # rank of each image by mean code: brightest = longest
    brightness = y.reshape(y.shape[0], -1).to(torch.float64).mean(-1).cpu()
    rank = torch.argsort(torch.argsort(brightness))
    return rank.to(torch.float64) * stops * math.log(2.0)


def _pixels_with_neighbours(
    y: Tensor, max_pixels: int, seed: int
) -> tuple[Tensor, Tensor]:
    # (N, C, H, W) -> codes (N, C, 1, P) of random pixels and of their right (or lower) neighbours
    n, c, h, w = y.shape
    if w > 1:
        own, other = y[..., :, :-1], y[..., :, 1:]
    elif h > 1:
        own, other = y[..., :-1, :], y[..., 1:, :]
    else:
        own, other = y, y
    own = own.reshape(n, c, 1, -1)
    other = other.reshape(n, c, 1, -1)
    count = own.shape[-1]
    if count > max_pixels:
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(count, generator=generator)[:max_pixels].to(y.device)
        own, other = own.index_select(-1, idx), other.index_select(-1, idx)
    return own, other


def fit_refined(
    stack: np.ndarray | Tensor,
    exposure_times: Tensor | np.ndarray | list[float] | None,
    *,
    prior_std: float = 0.1,
    max_iter: int = 4,
    tol: float = 1e-3,
    assumed_stops: float = 1.0,
    ratio_lower: float = 0.15,
    ratio_upper: float = 0.9,
    ratio_pixels: int = 50_000,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **fit_options: Any,
) -> ICRF:
    r"""Fit the ICRF and refine the relative exposure times, the EXIF times as a prior.

    Alternates (at most ``max_iter`` times): a curve fit :math:`f` at the current times
    (:func:`~deepinv_icrf.calibration.fit_icrf`), the robust pairwise log ratios of the linearized
    stack (:func:`pairwise_log_ratios`), and the MAP log-times :math:`\tau = g u + c` with the
    exponent :math:`g` (:func:`estimate_log_exposures`): the curve consistent with them is
    :math:`f^g`, the warm start of the next fit. It stops when the log-times move less than
    ``tol``; a last fit at the refined times gives the returned curve.

    With ``exposure_times=None`` the exponent is not identifiable (:math:`f^g` and
    :math:`t^g` fit the stack equally well): the exposures are assumed ``assumed_stops``
    stops apart in order of increasing mean brightness, the prior is made very weak
    (:math:`\sigma_p = 10`) so the measured spacing wins except for the exponent and the
    offset, and a :class:`UserWarning` says so.

    :param numpy.ndarray, torch.Tensor stack: as for :func:`~deepinv_icrf.calibration.fit_icrf`.
    :param torch.Tensor, list, None exposure_times: nominal times ``(N,)`` in seconds, or ``None``.
    :param float prior_std: std of the nominal log-times (default 0.1, about 10%).
    :param int max_iter: curve/time alternations (default 4).
    :param float tol: stop when no log-time moves more than this (default 1e-3).
    :param float assumed_stops: spacing assumed without times (default 1.0).
    :param float ratio_lower: smallest well-exposed code for the ratios (default 0.15).
    :param float ratio_upper: largest well-exposed code for the ratios (default 0.9).
    :param int ratio_pixels: pixel positions used for the ratios (default 50000).
    :param int seed: seed of the pixel sampling, passed to the curve fits (default 0).
    :param str, torch.device device: where to fit (default: the stack's device).
    :param bool progress: progress bars of the curve fits (default False).
    :param fit_options: other options of :func:`~deepinv_icrf.calibration.fit_icrf`.
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF; ``icrf.fit_report`` holds
        ``exposure_times`` (refined, float64 ``(N,)``), ``nominal_exposure_times`` (the given
        ones or ``None``) and in ``extra``: ``exponent`` (total :math:`g` applied),
        ``exponent_std`` (std of the exponent, which only the prior sets:
        :math:`\sigma_p / \lVert \tau - \bar\tau \rVert`; 0 without times, where it is
        assumed),
        ``iterations``, ``log_time_std``, ``assumed_exposure_times`` (without times).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.calibration.refine import fit_refined
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack
    >>> t = demo_exposure_times(4, shortest=1 / 8)
    >>> y = ExposureStack(t, response="gamma")(demo_scene(24, 32, channels=1))
    >>> icrf = fit_refined(y[0], t * torch.tensor([1.05, 0.95, 1.0, 1.02]), steps=30, max_iter=1)
    >>> icrf.fit_report.exposure_times.shape
    torch.Size([4])
    """
    from deepinv_icrf.bracket import as_stack_tensor

    start = time.perf_counter()
    for name, value in (("max_iter", max_iter), ("ratio_pixels", ratio_pixels)):
        check_int(value, name, 1)
    if not tol > 0:
        raise ValueError(f"Expected `tol` > 0, but got {tol!r}.")
    if not assumed_stops > 0:
        raise ValueError(f"Expected `assumed_stops` > 0, but got {assumed_stops!r}.")
    for key in ("exposure_times", "refine_exposures", "band"):
        if key in fit_options:
            raise TypeError(f"fit_refined() got an unexpected option `{key}`.")
    y, _ = as_stack_tensor(stack)
    n = y.shape[1]
    nominal = None
    if exposure_times is None:
        warnings.warn(
            AMBIGUITY_WARNING.format(stops=assumed_stops), UserWarning, stacklevel=2
        )
        tau0 = _assumed_log_times(y[0], assumed_stops)
        prior_std = 10.0
    else:
        nominal = torch.as_tensor(exposure_times, dtype=torch.float64).detach().cpu()
        if nominal.ndim != 1 or nominal.shape[0] != n:
            raise ValueError(
                f"Expected `exposure_times` of shape ({n},) to match the {n} exposures of "
                f"`stack`, but got shape {tuple(nominal.shape)}."
            )
        check_positive(nominal, "exposure_times")
        tau0 = nominal.log()
    fit = _fit_callable()
    accepted = inspect.signature(fit).parameters
    call = dict(fit_options, seed=seed, device=device, progress=progress)
    if "refine_exposures" in accepted:
        call["refine_exposures"] = False
    fit_device = torch.device(device) if device is not None else y.device
    sample, neighbour = _pixels_with_neighbours(y[0], ratio_pixels, seed)
    sample, neighbour = sample.to(fit_device), neighbour.to(fit_device)

    tau = tau0.clone()
    exponent = 1.0
    steps = 0
    iterations = 0
    log_std = torch.full((n,), math.inf, dtype=torch.float64)
    converged = False
    inner = None
    for _ in range(max_iter):
        icrf = fit(y[0], tau.exp(), **call)
        inner = getattr(icrf, "fit_report", None)
        steps += _steps_of(inner, fit_options)
        iterations += 1
        with torch.no_grad():
            x = icrf(sample)
        a_idx, b_idx, rho, se = pairwise_log_ratios(
            x, neighbour, ratio_lower, ratio_upper
        )
        new_tau, g, log_std = estimate_log_exposures(
            a_idx, b_idx, rho, se, tau0, prior_std=prior_std
        )
        delta = float((new_tau - tau).abs().max())
        tau = new_tau
        exponent *= g
        call["init"] = icrf.curve.detach().clamp(0.0, 1.0) ** g
        if delta < tol:
            converged = True
            break
    if converged:
        # the last fit raised to the exponent g is the curve of the refined times
        icrf = ICRF(
            channels=icrf.channels,
            n_points=icrf.n_points,
            parameterization=icrf.parameterization,
            init=call["init"],
            bit_depth=icrf.bit_depth,
        ).to(fit_device)
        icrf.eval()
    else:
        icrf = fit(y[0], tau.exp(), **call)
        inner = getattr(icrf, "fit_report", None)
        steps += _steps_of(inner, fit_options)
    # the exponent of the log-times is set by the prior only: its std is that of the slope of
    # a regression of the prior log-times on the (centred) refined ones
    centred = tau - tau.mean()
    exponent_std = (
        0.0
        if nominal is None
        else prior_std / max(float(centred.square().sum().sqrt()), 1e-12)
    )
    extra: dict[str, Any] = {
        "exponent": exponent,
        "exponent_std": exponent_std,
        "iterations": iterations,
        "converged": converged,
        "log_time_std": log_std.tolist(),
        "prior_std": prior_std,
    }
    if nominal is None:
        extra["assumed_exposure_times"] = tau0.exp().tolist()
    # what the last inner fit reported of the stack (noise level, pixels, outliers left out)
    for key, value in (getattr(inner, "extra", None) or {}).items():
        extra.setdefault(key, value)
    fields = {
        "method": f"{getattr(inner, 'method', 'fit_icrf')}+refined_exposures",
        "steps": steps,
        "wall_time_s": time.perf_counter() - start,
        "final_loss": getattr(inner, "final_loss", None),
        "exposure_times": tau.exp(),
        "nominal_exposure_times": nominal,
        "band": None,
        "extra": extra,
    }
    from deepinv_icrf.calibration.fit import FitReport

    icrf.fit_report = FitReport(**fields)
    return icrf


def _steps_of(report: object, fit_options: dict[str, Any]) -> int:
    steps = getattr(report, "steps", None)
    if isinstance(steps, int):
        return steps
    value = fit_options.get("steps", 0)
    return value if isinstance(value, int) else 0


def describe_refinement(icrf: ICRF) -> str:
    r"""A small table of nominal vs refined exposure times, for the command line.

    :param deepinv_icrf.models.ICRF icrf: a model returned by :func:`fit_refined`.
    :return: (str) one line per exposure: index, nominal, refined, change in percent (relative
        to the geometric mean, so a common scale does not count); then, when the report says
        how well the prior pins the exponent (``extra["exponent_std"]``) or that there were no
        times, a note on the exponent ambiguity.

    |sep|

    :Example:

    >>> import torch
    >>> from types import SimpleNamespace
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=1, n_points=4)
    >>> icrf.fit_report = SimpleNamespace(exposure_times=torch.tensor([1.0, 2.1]),
    ...     nominal_exposure_times=torch.tensor([1.0, 2.0]))
    >>> print(describe_refinement(icrf))
    exposure  nominal (s)  refined (s)  change
           0            1            1   -2.41%
           1            2          2.1   +2.47%
    """
    report = getattr(icrf, "fit_report", None)
    refined = getattr(report, "exposure_times", None)
    if refined is None:
        raise ValueError(
            "Expected an ICRF fitted with refine_exposures=True (its `fit_report` holds "
            "`exposure_times`), but it has none."
        )
    refined = torch.as_tensor(refined, dtype=torch.float64)
    nominal = getattr(report, "nominal_exposure_times", None)
    extra = getattr(report, "extra", None) or {}
    lines = [f"{'exposure':>8}  {'nominal (s)':>11}  {'refined (s)':>11}  change"]
    if nominal is None:
        for k, t in enumerate(refined.tolist()):
            lines.append(f"{k:>8}  {'-':>11}  {t:>11.4g}  {'-':>7}")
        if "assumed_exposure_times" in extra:
            lines.append(
                "note: no exposure times: the images fix the times only up to a common "
                "power t**g (with the curve f**g); the spacing of the assumed times sets g, "
                "so these times are relative and valid only up to that power."
            )
        return "\n".join(lines)
    nominal = torch.as_tensor(nominal, dtype=torch.float64)
    rel = (refined.log() - refined.log().mean()) - (
        nominal.log() - nominal.log().mean()
    )
    for k, (t0, t1, r) in enumerate(
        zip(nominal.tolist(), refined.tolist(), rel.tolist(), strict=True)
    ):
        lines.append(f"{k:>8}  {t0:>11.4g}  {t1:>11.4g}  {100 * math.expm1(r):>+6.2f}%")
    std = extra.get("exponent_std")
    if isinstance(std, (int, float)) and std > 0:
        spread = float((refined.log() - refined.log().mean()).abs().max())
        lines.append(
            "note: the images fix the times only up to a common power t**g (with the curve "
            f"f**g); the EXIF prior sets g to +-{100 * std:.1f}%, about "
            f"+-{100 * math.expm1(std * spread):.1f}% on the extreme times (and every ratio of "
            "two times is raised to the same power g)."
        )
    return "\n".join(lines)
