r"""The one-call ICRF fit: a stack of bracketed images in, a fitted :class:`~deepinv_icrf.models.ICRF` out.

This first version optimises the ICRF with Adam on the package's own losses
(:class:`~deepinv_icrf.loss.RadiometricLinearityLoss` plus the curve penalties) over a random
subset of pixel positions. Later versions route it through :class:`deepinv.Trainer`, the
histogram fast path and a closed-form start.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_in, check_positive, check_range, check_shape
from deepinv_icrf.loss import (
    MonotonicityLoss,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
)
from deepinv_icrf.models import ICRF

__all__ = ["fit_icrf", "as_stack_tensor"]


def as_stack_tensor(
    stack: np.ndarray | Tensor, name: str = "stack"
) -> tuple[Tensor, int | None]:
    r"""Turn images as readers return them into the float stack layout ``(1, N, C, H, W)``.

    Accepts a numpy ``uint8``/``uint16`` array ``(N, H, W, C)`` or ``(N, H, W)`` (codes, divided by
    ``2**bits - 1``), a float tensor or array ``(N, C, H, W)`` in ``[0, 1]``, or a float tensor
    ``(1, N, C, H, W)``.

    :param numpy.ndarray, torch.Tensor stack: the bracketed images.
    :param str name: argument name used in error messages.
    :return: (tuple) the float stack ``(1, N, C, H, W)`` and the bit depth (``None`` for floats).

    |sep|

    :Example:

    >>> import numpy as np
    >>> y, bits = as_stack_tensor(np.full((3, 4, 5, 3), 255, dtype=np.uint8))
    >>> tuple(y.shape), bits, float(y.max())
    ((1, 3, 3, 4, 5), 8, 1.0)
    """
    bits = None
    if isinstance(stack, np.ndarray):
        if stack.dtype == np.uint8 or stack.dtype == np.uint16:
            bits = 8 if stack.dtype == np.uint8 else 16
            if stack.ndim == 3:
                stack = stack[..., None]
            if stack.ndim != 4:
                raise ValueError(
                    f"Expected `{name}` as an integer array of shape (N, H, W, C) or (N, H, W), "
                    f"but got shape {stack.shape}."
                )
            y = torch.from_numpy(stack.astype(np.float32) / (2**bits - 1)).permute(
                0, 3, 1, 2
            )
        elif np.issubdtype(stack.dtype, np.floating):
            y = torch.from_numpy(np.ascontiguousarray(stack))
        else:
            raise TypeError(
                f"Expected `{name}` to be uint8, uint16 or floating point, but got dtype {stack.dtype}."
            )
    elif isinstance(stack, Tensor):
        if not torch.is_floating_point(stack):
            raise TypeError(
                f"Expected `{name}` as a float tensor in [0, 1] (codes divided by 2**bits - 1), "
                f"but got dtype {stack.dtype}."
            )
        y = stack
    else:
        raise TypeError(
            f"Expected `{name}` to be a numpy array or a torch.Tensor, but got {type(stack).__name__}."
        )
    if y.ndim == 4:
        y = y.unsqueeze(0)
    dims = check_shape(y, name, [1, "N", "C", "H", "W"])
    if dims["N"] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures, but got {dims['N']}."
        )
    check_range(y, name, 0.0, 1.0)
    return y, bits


def _sample_pixels(y: Tensor, max_pixels: int, generator: torch.Generator) -> Tensor:
    r"""Keep at most ``max_pixels`` random pixel positions, laid out as ``(1, N, C, 1, P)``."""
    b, n, c, h, w = y.shape
    flat = y.reshape(b, n, c, 1, h * w)
    if h * w <= max_pixels:
        return flat
    idx = torch.randperm(h * w, generator=generator)[:max_pixels].to(y.device)
    return flat.index_select(-1, idx)


def fit_icrf(
    stack: np.ndarray | Tensor,
    exposure_times: Tensor | np.ndarray | list[float],
    *,
    n_points: int = 256,
    parameterization: str = "monotone",
    init: str | Tensor = "gamma",
    steps: int = 300,
    lr: float = 0.05,
    max_pixels: int = 4_000,
    smoothness_weight: float = 1e5,
    relative: bool = True,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, Tensor, ICRF], None] | None = None,
) -> ICRF:
    r"""Fit the inverse camera response of a bracketed stack of one static scene.

    Minimises, over the ICRF :math:`f`, the clair-torch objective

    .. math::

        \mathcal{L}(f) = \sum_c L_c(f) + \alpha\,\mathrm{mono}(f) + \beta\,\mathrm{range}(f)
        + \delta\,\mathrm{smooth}(f)

    where :math:`L_c` is the radiometric linearity of channel :math:`c`
    (:class:`~deepinv_icrf.loss.RadiometricLinearityLoss`). With the default monotone
    parameterization the curve is increasing with :math:`f(0)=0, f(1)=1` by construction.

    :param numpy.ndarray, torch.Tensor stack: ``uint8``/``uint16`` array ``(N, H, W, C)`` as image
        readers return it, or a float tensor ``(N, C, H, W)`` in ``[0, 1]``.
    :param torch.Tensor, list exposure_times: the ``N`` exposure times in seconds, any order.
    :param int n_points: samples of the fitted curve (default 256).
    :param str parameterization: ``"monotone"`` (default) or ``"free"``.
    :param str, torch.Tensor init: initial curve, ``"gamma"`` (default), ``"identity"`` or a tensor.
    :param int steps: Adam steps (default 300).
    :param float lr: Adam learning rate (default 0.05).
    :param int max_pixels: pixel positions sampled from the stack (default 4000).
    :param float smoothness_weight: weight :math:`\delta` of the smoothness penalty (default 1e5: the curve penalties are sums over the 256 samples, and clair-torch's weight 1 barely constrains the curve where few pixels fall).
    :param bool relative: relative (default) or absolute linearity residuals.
    :param str, torch.device device: where to fit (default: the stack's device).
    :param int seed: seed of the pixel sampling (default 0).
    :param bool progress: show a tqdm progress bar (default True).
    :param Callable callback: called as ``callback(step, loss, icrf)`` after every step.
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF, on ``device``, in eval mode.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf import fit_icrf
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack
    >>> t = demo_exposure_times(5, shortest=1.0)
    >>> y = ExposureStack(t, response="gamma")(demo_scene(32, 40))
    >>> icrf = fit_icrf(y[0], t, steps=20, progress=False)
    >>> icrf.curve.shape
    torch.Size([3, 256])
    """
    from tqdm.auto import tqdm

    check_in(parameterization, "parameterization", ("monotone", "free"))
    if steps < 1:
        raise ValueError(f"Expected `steps` >= 1, but got {steps}.")
    if max_pixels < 1:
        raise ValueError(f"Expected `max_pixels` >= 1, but got {max_pixels}.")
    y, bits = as_stack_tensor(stack)
    n = y.shape[1]
    times = torch.as_tensor(exposure_times, dtype=torch.float64)
    if times.ndim != 1 or times.shape[0] != n:
        raise ValueError(
            f"Expected `exposure_times` of shape ({n},) to match the {n} exposures of `stack`, "
            f"but got shape {tuple(times.shape)}."
        )
    check_positive(times, "exposure_times")
    device = torch.device(device) if device is not None else y.device
    generator = torch.Generator().manual_seed(seed)
    y = _sample_pixels(y, max_pixels, generator).to(device=device, dtype=torch.float32)

    from deepinv_icrf.physics import ExposureStack

    physics = ExposureStack(times.to(torch.float32), device=device)
    icrf = ICRF(
        channels=y.shape[2],
        n_points=n_points,
        parameterization=parameterization,
        init=init,
        bit_depth=bits if bits is not None else 8,
    ).to(device)
    losses = [RadiometricLinearityLoss(relative=relative), RangeLoss()]
    if parameterization == "free":
        losses.append(MonotonicityLoss())
    weights = [1.0] * len(losses)
    if smoothness_weight > 0:
        losses.append(SmoothnessLoss())
        weights.append(smoothness_weight)

    optimizer = torch.optim.Adam(icrf.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=lr * 0.02
    )
    icrf.train()
    bar = tqdm(range(steps), desc="fit_icrf", disable=not progress, leave=False)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        x_net = icrf(y)
        total = sum(
            weight * loss(x_net=x_net, x=None, y=y, physics=physics, model=icrf).mean()
            for weight, loss in zip(weights, losses, strict=True)
        )
        total.backward()
        optimizer.step()
        scheduler.step()
        if callback is not None:
            callback(step, total.detach(), icrf)
        if progress and (step % 25 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(total.detach()):.4g}")
    icrf.eval()
    return icrf
