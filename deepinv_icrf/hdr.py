r"""HDR from bracketed codes: linearise with a fitted ICRF, merge, tone-map, save.

Layouts follow the input: numpy arrays as image readers return them (codes ``uint8``/``uint16``,
channels last: ``(H, W, C)``, stacks ``(N, H, W, C)``) give numpy results, channels last; float
tensors (codes in ``[0, 1]``, channels at dimension -3: ``(N, C, H, W)`` or ``(B, N, C, H, W)``)
give tensors. The merge itself is :func:`deepinv_icrf.functional.weighted_radiance_merge`.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import (
    check_bounds,
    check_channel_values,
    check_in,
    check_range,
    check_threshold,
)
from deepinv_icrf._threads import run_blocks
from deepinv_icrf.bracket import (
    check_bit_depth,
    check_exposure_times,
    codes_to_unit,
    image_codes,
)
from deepinv_icrf.functional.exposure_order import check_exposure_order
from deepinv_icrf.functional.interp import (
    code_values,
    curve_slope,
    interp_curve,
    lookup_codes,
)
from deepinv_icrf.functional.merge import (  # the merges' cores: inputs checked here
    _consistent_exposures,
    _radiance_merge,
    _radiance_merge_codes,
    _radiance_merge_std,
    merge_weights,
)
from deepinv_icrf.functional.tonemap import TONEMAP_METHODS, tonemap_radiance
from deepinv_icrf.models.curve_file import ICRFFile

if TYPE_CHECKING:
    from deepinv_icrf.models import ICRF

__all__ = [
    "linearize",
    "merge_hdr",
    "merge_bounds",
    "floor_cutoff",
    "tonemap",
    "save_radiance",
    "TONEMAP_METHODS",
]


def _is_icrf(value: object) -> bool:
    r"""Whether ``value`` is an :class:`~deepinv_icrf.models.ICRF` (or the
    :class:`~deepinv_icrf.models.icrf_base.ICRFBase` of a fit), without importing its module
    when it is not imported: then there is no ICRF to be."""
    module = sys.modules.get("deepinv_icrf.models.icrf_base")
    return module is not None and isinstance(value, module.ICRFBase)


def _curve(icrf: ICRF | ICRFFile | Tensor) -> tuple[Tensor, int | None]:
    if _is_icrf(icrf) or isinstance(icrf, ICRFFile):
        return icrf.curve.detach(), icrf.bit_depth
    if isinstance(icrf, Tensor) and icrf.ndim == 2 and icrf.is_floating_point():
        return icrf.detach(), None
    raise TypeError(
        "Expected `icrf` to be an ICRF, an ICRFFile or a float curve tensor (C, L), but got "
        f"{type(icrf).__name__}"
        + (f" of shape {tuple(icrf.shape)}" if isinstance(icrf, Tensor) else "")
        + "."
    )


def _codes(images: np.ndarray | Tensor, name: str) -> tuple[Tensor, int | None, bool]:
    r"""Codes as a tensor with channels at -3 (integer codes of numpy input as decoded, no
    copy), their bit depth, and whether numpy came in."""
    codes, bits = image_codes(images, name, float_arrays=False)
    from_numpy = isinstance(images, np.ndarray)
    if codes.ndim < 3:
        layout = "(..., H, W, C)" if from_numpy else "(..., C, H, W)"
        raise ValueError(
            f"Expected `{name}` to have shape {layout}, but got shape "
            f"{tuple(codes.shape)}."
        )
    return (codes.movedim(-1, -3) if from_numpy else codes), bits, from_numpy


def _check_channels(codes: Tensor, curve: Tensor, name: str) -> None:
    if curve.shape[0] not in (1, codes.shape[-3]):
        raise ValueError(
            f"Expected `{name}` to have {curve.shape[0]} channel(s) to match the ICRF, but got "
            f"{codes.shape[-3]}."
        )


def linearize(
    images: np.ndarray | Tensor, icrf: ICRF | ICRFFile | Tensor
) -> np.ndarray | Tensor:
    r"""Linearise camera codes with an ICRF: :math:`x = g_c(y)` per channel.

    .. math::

        x_{c}(p) = g_c\!\left(\frac{\text{code}_c(p)}{2^b - 1}\right)

    :param numpy.ndarray, torch.Tensor images: ``uint8``/``uint16`` codes ``(..., H, W, C)``
        (e.g. one image or a stack from :func:`deepinv_icrf.data.read_exposure_folder`), or a
        float tensor of codes in ``[0, 1]``, ``(..., C, H, W)``.
    :param deepinv_icrf.models.ICRF, deepinv_icrf.models.ICRFFile, torch.Tensor icrf: the
        ICRF, a curve file (:func:`~deepinv_icrf.models.read_icrf_file`) or its curve ``(C, L)``
        (``C = 1`` applies to every channel).
    :return: (:class:`numpy.ndarray`, :class:`torch.Tensor`) relative irradiance in
        ``[0, 1]``: float32 ``(..., H, W, C)`` for numpy input (looked up tile by tile: the
        peak memory is the images and the result), else a tensor shaped like ``images`` (on
        its device, float32 or float64; codes of the ICRF's bit depth are looked up,
        :func:`~deepinv_icrf.functional.interp_curve` with ``bit_depth``).

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF.from_response("gamma", channels=1)
    >>> x = linearize(np.array([[[0], [128], [255]]], dtype=np.uint8), icrf)
    >>> x.shape, [round(float(v), 4) for v in x.ravel()]
    ((1, 3, 1), [0.0, 0.2195, 1.0])
    """
    curve, icrf_bits = _curve(icrf)
    codes, bits, from_numpy = _codes(images, "images")
    _check_channels(codes, curve, "images")
    if codes.is_floating_point():  # a table lookup when they are the ICRF's codes
        return interp_curve(
            codes.to(curve.device), curve, channel_dim=-3, bit_depth=icrf_bits
        )
    # integer codes (numpy, channels last): the curve at every code once, then a lookup
    # tile by tile into the float32 result, with no other copy of the images
    grid = code_values(bits, curve.dtype, curve.device)
    table = interp_curve(grid.expand(curve.shape[0], -1), curve, channel_dim=0)
    x = lookup_codes(codes.movedim(-3, -1), table.to(torch.float32), channel_dim=-1)
    return x.cpu().numpy()


#: Code stds above the fitted floor at which :func:`floor_cutoff` puts the lower cutoff.
FLOOR_MARGIN_STDS = 3.0
#: Code std assumed by :func:`floor_cutoff` when the ICRF records none (2 codes of 8 bits).
FLOOR_DEFAULT_CODE_STD = 2.0 / 255.0


def _recorded(icrf: object, key: str) -> list[float] | None:
    r"""A per-channel value an ICRF records: its file's metadata, else its fit report;
    checked (:func:`~deepinv_icrf._checks.check_channel_values`: one number in ``[0, 1]``
    per channel), ``None`` when neither records it."""
    value = (getattr(icrf, "metadata", None) or {}).get(key)
    where = f"the ICRF's metadata `{key}`"
    if value is None:
        report = getattr(icrf, "fit_report", None)
        value = getattr(report, "floor" if key == "floor" else "sigma", None)
        where = f"the ICRF's fit_report.{'floor' if key == 'floor' else 'sigma'}"
    if value is None:
        return None
    channels = icrf.channels if _is_icrf(icrf) or isinstance(icrf, ICRFFile) else 1
    return check_channel_values(value, where, channels)


def floor_cutoff(
    icrf: ICRF | ICRFFile | Tensor, margin: float = FLOOR_MARGIN_STDS
) -> float | None:
    r"""A lower merge cutoff above the floor the fit found, or ``None`` without a floor.

    Film scans and some cameras never reach code 0: the fit
    (:func:`~deepinv_icrf.calibration.fit_icrf`) records the code of no light per channel
    (``fit_report.floor``, saved in the curve file as ``metadata["floor"]``). Codes near
    that floor say almost nothing about the exposure, but a hat-weighted merge still counts
    them, and divided by a short exposure time their noise dominates the radiance of dark
    pixels. The cutoff is

    .. math::

        \ell = \max_c b_c + m\, \sigma,

    with :math:`b_c` the floors, :math:`\sigma` the largest code noise the fit recorded
    (``code_std``; 2/255 when none) and :math:`m` = ``margin``. ``None`` when no floor is
    recorded or the largest is below one 8-bit code (a digital camera): then the merge's
    default applies.

    :param deepinv_icrf.models.ICRF, deepinv_icrf.models.ICRFFile, torch.Tensor icrf: a
        fitted or loaded ICRF, or a curve file (a bare curve
        has no floor: ``None``).
    :param float margin: :math:`m`, in code stds (default 3).
    :return: (float, None) the cutoff in ``[0, 1]`` code units, or ``None``.
    :raises ValueError: when the recorded floor or code noise is not one number in
        ``[0, 1]`` per channel (a string, a NaN, a negative value, a list of another length).

    |sep|

    :Example:

    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=3, n_points=4)
    >>> floor_cutoff(icrf) is None
    True
    >>> icrf.metadata.update(floor=[0.05, 0.07, 0.06], code_std=[0.007, 0.006, 0.008])
    >>> round(floor_cutoff(icrf), 4)
    0.094
    """
    floors = _recorded(icrf, "floor")
    if floors is None or max(floors) < 1.0 / 255.0:
        return None
    noise = _recorded(icrf, "code_std")
    std = max(noise) if noise else FLOOR_DEFAULT_CODE_STD
    return min(max(floors) + float(margin) * std, 0.5)


def merge_bounds(
    bit_depth: int,
    lower: float | None = None,
    upper: float | None = None,
    icrf: ICRF | Tensor | None = None,
) -> tuple[float, float]:
    r"""The range of codes :math:`[\ell, u]` a merge uses, checked: ``lower`` and ``upper`` as
    given, else their defaults.

    The defaults are one code step :math:`\Delta = 1/(2^b - 1)` inside the code range,
    :math:`\ell = \Delta` and :math:`u = 1 - \Delta`, except that an ICRF that records a
    floor (film scans) moves :math:`\ell` above it (:func:`floor_cutoff`). The range must
    satisfy :math:`0 \le \ell < u \le 1`: an empty or inverted range would merge nothing.

    :param int bit_depth: bits :math:`b` of the codes (8 for JPEG, 16 for 16-bit PNG/TIFF).
    :param float, None lower: smallest valid code, as a fraction of the code range (default
        above).
    :param float, None upper: largest valid code (default above).
    :param deepinv_icrf.models.ICRF, torch.Tensor, None icrf: the curve of the merge, for its
        floor (default ``None``: no floor).
    :return: (tuple) ``(lower, upper)`` as floats.
    :raises TypeError: for a bound that is not a number.
    :raises ValueError: for a NaN, a bound outside ``[0, 1]`` or ``lower >= upper``, naming
        the bound that came from a default.

    |sep|

    :Example:

    >>> [round(v, 4) for v in merge_bounds(8)]
    [0.0039, 0.9961]
    >>> merge_bounds(8, lower=0.999)
    Traceback (most recent call last):
    ...
    ValueError: Expected 0 <= `lower` < `upper` <= 1, but got lower=0.999 and upper=0.996078 (upper: the default, one code step below white for 8-bit codes).
    """
    bit_depth = check_bit_depth(bit_depth, optional=False)
    step = 1.0 / (2**bit_depth - 1)
    defaults = []
    if lower is None and icrf is not None:
        lower = floor_cutoff(icrf)
        if lower is not None:
            defaults.append("lower: above the floor the ICRF records, floor_cutoff")
    if lower is None:
        lower = step
        defaults.append(
            f"lower: the default, one code step above black for {bit_depth}-bit codes"
        )
    if upper is None:
        upper = 1.0 - step
        defaults.append(
            f"upper: the default, one code step below white for {bit_depth}-bit codes"
        )
    try:
        return check_bounds(lower, upper)
    except ValueError as err:
        if not defaults:
            raise
        raise ValueError(f"{str(err)[:-1]} ({'; '.join(defaults)}).") from None


def merge_hdr(
    stack: np.ndarray | Tensor,
    exposure_times: np.ndarray | Tensor | Sequence[float],
    icrf: ICRF | ICRFFile | Tensor,
    *,
    weights: str = "hat",
    return_std: bool = False,
    return_saturated: bool = False,
    return_count: bool = False,
    band: Tensor | None = None,
    code_std: float = 0.0,
    lower: float | None = None,
    upper: float | None = None,
    deghost: float | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray | Tensor | tuple:
    r"""Merge a bracketed stack into one HDR radiance map, with per-pixel uncertainty.

    With :math:`x_k = g(y_k)` the linearised exposures (:func:`linearize`),
    :math:`w_k = w(y_k)\,[\ell \le y_k \le u]` (:func:`~deepinv_icrf.functional.merge_weights`)
    and :math:`s_k` the std of :math:`x_k`, per pixel and channel:

    .. math::

        E = \frac{\sum_k w_k\, x_k / t_k}{\sum_k w_k}, \qquad
        \sigma_E = \frac{\sqrt{\sum_k w_k^2\, s_k^2 / t_k^2}}{\sum_k w_k}, \qquad
        s_k^2 = \left(g'(y_k)\,\sigma_y\right)^2 + \beta(y_k)^2,

    where :math:`\sigma_y^2 = \Delta^2/12 + \sigma_{\text{code}}^2` (quantisation step
    :math:`\Delta = 1/(2^b - 1)` plus ``code_std``) and :math:`\beta` the ICRF confidence band
    (``band``, per-code std of the curve; zero when ``None``). The weights are treated as
    fixed (:func:`~deepinv_icrf.functional.weighted_radiance_merge_std`). Pixels with no
    valid exposure take one exposure's estimate
    (:func:`~deepinv_icrf.functional.weighted_radiance_merge`): pixels saturated (:math:`y > u`)
    in every exposure take the shortest exposure's :math:`x/t` (a lower bound) and are
    flagged: their std is ``inf`` and they are ``True`` in the saturation mask.

    Memory stays bounded: integer codes (numpy arrays as decoded) are merged from per-code
    tables of every term (:func:`~deepinv_icrf.functional.weighted_radiance_merge_codes`),
    tile by tile and channels last, so that the peak memory is the stack and the results plus
    a few small tiles (no floating-point copy of the stack; with ``deghost``, blocks of rows
    of the float path). Float tensors are merged in blocks of rows. Tiles and blocks are
    larger on a GPU. On the CPU the tiles and blocks go to a pool of
    ``torch.get_num_threads()`` threads, each running torch single-threaded: meanwhile
    torch's thread count is 1 for the whole process (other threads' torch operations
    included), and it is restored when the merge returns (a busy core then slows one thread
    of the pool instead of stalling every operation).

    With ``deghost`` set (a threshold :math:`\tau` in stds; 4 is a good value), exposures
    that saw something else than the reference exposure at a pixel (a moving person, a
    branch) are left out of the weights there
    (:func:`~deepinv_icrf.functional.consistent_exposures`): the reference is the middle
    exposure of the time-sorted stack, or the valid exposure nearest to it where it is
    clipped or black, and exposure :math:`k` is dropped where
    :math:`|x_k / t_k - x_r / t_r| > \tau \sqrt{s_k^2 / t_k^2 + s_r^2 / t_r^2}` in any
    channel, with :math:`s_k` computed as above but with :math:`\sigma_y` floored at one
    code step :math:`\Delta` (so that quantisation alone never flags a pixel). Moving
    objects then appear as in the reference exposure, without semi-transparent ghosts.
    The test is only as good as the noise model: pass the camera's code noise as
    ``code_std`` (e.g. ``icrf.fit_report.sigma`` of :func:`deepinv_icrf.fit_icrf`,
    its largest channel) and the ICRF ``band`` when there is one, or static pixels with
    more noise than assumed are needlessly dropped (noisier, still unbiased).

    :param numpy.ndarray, torch.Tensor stack: ``uint8``/``uint16`` codes ``(N, H, W, C)``, or a
        float tensor of codes in ``[0, 1]``, ``(N, C, H, W)`` or ``(B, N, C, H, W)``.
    :param numpy.ndarray, torch.Tensor, Sequence exposure_times: ``(N,)`` (or ``(B, N)``)
        seconds, ``> 0``, distinct, any order; times whose order the images contradict (a
        longer exposure darker at most pixels) are refused at half the steps or more, and
        warned about at fewer
        (:func:`~deepinv_icrf.functional.exposure_order.check_exposure_order`).
    :param deepinv_icrf.models.ICRF, deepinv_icrf.models.ICRFFile, torch.Tensor icrf: the
        ICRF, a curve file (:func:`~deepinv_icrf.models.read_icrf_file`: the same curve and
        metadata without importing deepinv) or its curve ``(C, L)``.
    :param str weights: ``"hat"`` (default) or ``"gaussian"``.
    :param bool return_std: also return :math:`\sigma_E` (default ``False``).
    :param bool return_saturated: also return the mask of pixels saturated in every
        exposure (default ``False``).
    :param bool return_count: also return, per pixel and channel, the number of exposures
        that entered the merge (valid code, weight > 0, kept by ``deghost``; int32, default
        ``False``).
    :param torch.Tensor, None band: per-code std of the ICRF ``(C, L')`` (a confidence band
        on any uniform grid), propagated into :math:`\sigma_E`. Default ``None``.
    :param float code_std: std of the code noise in ``[0, 1]`` units (a number in
        ``[0, 1]``), added to the quantisation noise (default 0).
    :param float, None lower: smallest valid code :math:`\ell` (default: above the floor the
        fit found, :func:`floor_cutoff`, for an ICRF that records one (film scans); else
        :math:`1/(2^b-1)`, ``b`` the images' bit depth, or the ICRF's, or 8).
    :param float, None upper: largest valid code :math:`u` (default :math:`1 - 1/(2^b-1)`);
        the range must satisfy :math:`0 \le \ell < u \le 1` (:func:`merge_bounds`).
    :param float, None deghost: threshold :math:`\tau > 0` (in stds, e.g. 4) of the
        consistency test that leaves moving objects out of the non-reference exposures;
        ``None`` (default) merges every valid exposure.
    :param str, torch.device, None device: where to merge (e.g. ``"cuda"``; default: the
        curve's device). The stack moves there block by block; numpy results come back on
        the CPU.
    :return: radiance (relative units: :math:`x/t` per second of exposure), ``(H, W, C)``
        float32 for numpy input, else ``(C, H, W)`` / ``(B, C, H, W)`` tensors; with
        ``return_std`` / ``return_saturated`` / ``return_count`` a tuple
        ``(radiance, [std], [saturated], [count])``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.models import ICRF
    >>> from deepinv_icrf.physics import ExposureStack
    >>> x = torch.full((1, 3, 2, 2), 0.3)
    >>> t = torch.tensor([0.5, 1.0, 2.0])
    >>> y = ExposureStack(t, response="srgb", bit_depth=16)(x)
    >>> merge_hdr(y[0], t, ICRF.from_response("srgb", n_points=4096))[0, 0, 0]
    tensor(0.3000)
    """
    check_in(weights, "weights", ("hat", "gaussian"))
    curve, icrf_bits = _curve(icrf)
    if device is not None:
        curve = curve.to(device)
    codes, bits, from_numpy = _codes(stack, "stack")
    squeeze = codes.ndim == 4
    if squeeze:
        codes = codes.unsqueeze(0)
    if codes.ndim != 5:
        raise ValueError(
            "Expected `stack` to have shape (N, H, W, C) (numpy), (N, C, H, W) or "
            f"(B, N, C, H, W), but got shape {tuple(stack.shape)}."
        )
    batch, n, channels, height, width = codes.shape
    if n < 2:
        raise ValueError(f"Expected `stack` to hold at least 2 exposures, but got {n}.")
    _check_channels(codes, curve, "stack")
    bits = bits if bits is not None else (icrf_bits if icrf_bits is not None else 8)
    step = 1.0 / (2**bits - 1)
    lower, upper = merge_bounds(bits, lower, upper, icrf)
    if isinstance(code_std, bool) or not isinstance(code_std, numbers.Real):
        raise TypeError(
            f"Expected `code_std` to be a number, but got {type(code_std).__name__} "
            f"{code_std!r}."
        )
    if not 0.0 <= code_std <= 1.0:
        raise ValueError(
            "Expected `code_std` to be a number in [0, 1] (a std of codes as a fraction of "
            f"the code range), but got {code_std!r}."
        )
    device = curve.device
    dtype = (
        torch.float64 if torch.float64 in (codes.dtype, curve.dtype) else torch.float32
    )
    times = check_exposure_times(exposure_times, n, batch, distinct=True)
    times = times.to(device=device, dtype=dtype)
    white = 1.0 if codes.is_floating_point() else 2**bits - 1
    for b in range(batch):  # times in the order the images show (a sample of the codes)
        check_exposure_order(
            # channels last as decoded: a view, never a copy of the stack
            codes[b].movedim(-3, -1) if from_numpy else codes[b],
            times.reshape(-1, n)[min(b, times.numel() // n - 1)],
            white,
        )
    if band is not None:
        if not isinstance(band, Tensor) or band.ndim != 2:
            shape = f" of shape {tuple(band.shape)}" if isinstance(band, Tensor) else ""
            raise ValueError(
                "Expected `band` to be a tensor (C, L) of per-code ICRF stds, but got "
                f"{type(band).__name__}{shape}."
            )
        if band.shape[0] not in (1, curve.shape[0]):
            raise ValueError(
                f"Expected `band` to have {curve.shape[0]} channel(s) like the ICRF, but "
                f"got shape {tuple(band.shape)}."
            )
        check_range(band, "band", 0.0, math.inf)
        band = band.to(device)
    deghost = check_threshold(deghost, "deghost", optional=True)
    var_y = step**2 / 12.0 + float(code_std) ** 2
    # the deghosting test floors the code std at one step: quantisation never flags
    code_vars = ([var_y] if return_std else []) + (
        [max(var_y, step**2)] if deghost is not None else []
    )

    def x_and_var(unit: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = interp_curve(unit, curve, channel_dim=-3).to(dtype)
        if not code_vars:
            return x, []
        slope2 = curve_slope(unit, curve, channel_dim=-3).to(dtype) ** 2
        band2 = None
        if band is not None:
            band2 = interp_curve(unit, band, channel_dim=-3).to(dtype) ** 2
        return x, [
            slope2 * v if band2 is None else slope2 * v + band2 for v in code_vars
        ]

    lut = None
    if not codes.is_floating_point():
        # integer codes: evaluate curve, slope and band once per code, then look them up
        levels = 2**bits
        grid = code_values(bits, dtype, device)
        lut_x, lut_vars = x_and_var(grid.expand(channels, 1, levels))
        if deghost is None and not return_count:
            # every per-pixel term is a function of the code: merged from per-code tables,
            # channels last as decoded, tile by tile (no float copy of the stack)
            radiance, std, saturated = _radiance_merge_codes(
                codes.movedim(-3, -1),
                times,
                lut_x.reshape(channels, levels),
                lut_vars[0].reshape(channels, levels) if return_std else None,
                weights,
                lower,
                upper,
                eps=1e-8,
                cd=codes.ndim - 1,  # channels last
                out_dtype=torch.float32,  # numpy results are float32
            )
            outputs = [radiance]
            if std is not None:
                outputs.append(std.masked_fill_(saturated, math.inf))
            if return_saturated:
                outputs.append(saturated)
            return _outputs(outputs, squeeze, channels_last=True)
        offsets = (torch.arange(channels, device=device) * levels).view(channels, 1, 1)
        lut = (lut_x.reshape(-1), [v.reshape(-1) for v in lut_vars])

    # numpy results are float32: blocks computed in `dtype` are rounded into them
    out_dtype = torch.float32 if from_numpy else dtype
    radiance = torch.empty(
        batch, channels, height, width, device=device, dtype=out_dtype
    )
    std = torch.empty_like(radiance) if return_std else None
    saturated = torch.empty(radiance.shape, device=device, dtype=torch.bool)
    count = (
        torch.empty(radiance.shape, device=device, dtype=torch.int32)
        if return_count
        else None
    )
    block = _BLOCK_ELEMENTS.get(device.type, _BLOCK_ELEMENTS["cuda"])
    rows = max(1, block // max(1, batch * n * channels * width))

    def merge_rows(top: int) -> None:
        # one block of rows, written into its slice of the outputs
        block = codes[..., top : top + rows, :].to(device)
        if lut is None:
            unit = block.to(dtype)
            x, variances = x_and_var(unit)
        else:
            idx = block.long() + offsets
            unit = codes_to_unit(block, bits, dtype)
            x = lut[0].take(idx)
            variances = [v.take(idx) for v in lut[1]]
        w: str | Tensor = weights
        if deghost is not None:
            t_b = times.reshape(-1, n, 1, 1, 1)
            keep = _consistent_exposures(
                x / t_b,
                variances[-1] / t_b**2,
                (unit >= lower) & (unit <= upper),
                times,
                None,
                deghost,
            )
            w = merge_weights(unit, weights) * keep.to(dtype)
        part = slice(top, top + rows)
        radiance[..., part, :] = _radiance_merge(unit, x, times, w, lower, upper)
        sat = (unit > upper).all(dim=1)
        saturated[..., part, :] = sat
        if count is not None:
            w_num = merge_weights(unit, w) if isinstance(w, str) else w
            used = (unit >= lower) & (unit <= upper) & (w_num > 0)
            count[..., part, :] = used.sum(dim=1, dtype=torch.int32)
        if std is not None:
            part_std = _radiance_merge_std(unit, variances[0], times, w, lower, upper)
            std[..., part, :] = part_std.masked_fill(sat, math.inf)

    run_blocks(merge_rows, range(0, height, rows), device)
    outputs = [radiance] + ([std] if std is not None else [])
    if return_saturated:
        outputs.append(saturated)
    if count is not None:
        outputs.append(count)
    if from_numpy:
        outputs = [o.movedim(-3, -1) for o in outputs]
    return _outputs(outputs, squeeze, channels_last=from_numpy)


def _outputs(
    outputs: list[Tensor], squeeze: bool, channels_last: bool
) -> np.ndarray | Tensor | tuple:
    r"""``merge_hdr``'s results: float32 numpy arrays ``(..., H, W, C)`` when the channels
    are last (numpy input; counts int32, masks bool), else the tensors; without the batch
    dimension if ``squeeze``.
    """
    if squeeze:
        outputs = [o.squeeze(0) for o in outputs]
    if channels_last:
        outputs = [
            o.cpu()
            .numpy()
            .astype(
                (
                    np.float32
                    if o.is_floating_point()
                    else (bool if o.dtype == torch.bool else np.int32)
                ),
                copy=False,
            )
            for o in outputs
        ]
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


# elements of the (B, N, C, rows, W) stack merged at once by the floating-point path, per
# device type: bounds the peak memory; on the CPU a block's temporaries stay in cache (1/4 of
# the time of 4M-element blocks at 12 MP), a GPU gets large blocks
_BLOCK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 25}


def tonemap(
    radiance: np.ndarray | Tensor,
    method: str = "reinhard",
    *,
    key: float = 0.18,
    gamma: float = 2.2,
    percentile: float = 99.0,
) -> np.ndarray | Tensor:
    r"""Compress an HDR radiance map to display values in ``[0, 1]``: Reinhard's global
    operator or a gamma curve with a percentile as white
    (:func:`~deepinv_icrf.functional.tonemap.tonemap_radiance`, where the formulas are).

    :param numpy.ndarray, torch.Tensor radiance: ``(H, W, C)`` numpy array or a tensor
        ``(..., C, H, W)``, finite, ``>= 0``.
    :param str method: ``"reinhard"`` (default) or ``"gamma"``.
    :param float key: Reinhard's key value :math:`a` (default 0.18).
    :param float gamma: display gamma (default 2.2).
    :param float percentile: percentile mapped to white by ``"gamma"`` (default 99).
    :return: display values in ``[0, 1]``, same layout and type as ``radiance``.

    |sep|

    :Example:

    >>> import torch
    >>> out = tonemap(torch.tensor([0.01, 1.0, 100.0]).view(1, 1, 3), method="gamma")
    >>> [round(v, 3) for v in out.flatten().tolist()]
    [0.015, 0.123, 1.0]
    """
    check_in(method, "method", TONEMAP_METHODS)
    from_numpy = isinstance(radiance, np.ndarray)
    e = checked = radiance
    if from_numpy:
        # float32 / float64 arrays are used as they are (no full-size copy)
        arr = radiance
        if arr.dtype not in (np.float32, np.float64):
            arr = np.asarray(arr, np.float64)
        with warnings.catch_warnings():  # read-only arrays are fine: never written to
            warnings.simplefilter("ignore", UserWarning)
            checked = torch.from_numpy(np.ascontiguousarray(arr))
            e = checked.movedim(-1, -3)
    if not isinstance(e, Tensor) or not e.is_floating_point() or e.ndim < 3:
        raise TypeError(
            "Expected `radiance` as a float array (H, W, C) or a float tensor (..., C, H, W)."
        )
    # checked in memory order (channels last for an array): torch's reductions over the
    # channels-first view of an (H, W, C) array take twice as long
    check_range(checked, "radiance", 0.0, math.inf)
    if not gamma > 0 or not key > 0 or not 0 < percentile <= 100:
        raise ValueError(
            f"Expected `gamma` > 0, `key` > 0 and `percentile` in (0, 100], but got {gamma}, "
            f"{key} and {percentile}."
        )
    out = tonemap_radiance(e, method, key, gamma, percentile)
    if from_numpy:
        return out.movedim(-3, -1).numpy().astype(np.float32, copy=False)
    return out


def _radiance_hwc(value: np.ndarray | Tensor, name: str) -> np.ndarray:
    r"""A ``(C, H, W)``/``(1, C, H, W)`` tensor or an ``(H, W[, C])`` array as ``(H, W, C)``."""
    if isinstance(value, Tensor):
        r = value.detach()
        if r.ndim == 4 and r.shape[0] == 1:
            r = r[0]
        if r.ndim != 3:
            raise ValueError(
                f"Expected `{name}` of shape (C, H, W) or (1, C, H, W), but got shape "
                f"{tuple(value.shape)}."
            )
        return r.movedim(0, -1).cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(
            f"Expected `{name}` as an array (H, W, C), but got shape {arr.shape}."
        )
    return arr


def save_radiance(
    path: str | os.PathLike,
    radiance: np.ndarray | Tensor,
    *,
    std: np.ndarray | Tensor | None = None,
    saturated: np.ndarray | Tensor | None = None,
    count: np.ndarray | Tensor | None = None,
    exr_compression: str = "none",
) -> None:
    r"""Write a float radiance map, atomically (no partial file on failure), with optional
    layers in one OpenEXR file.

    Formats by extension: ``.exr`` (OpenEXR through its official bindings, exact 32-bit
    float, uncompressed unless ``exr_compression`` says otherwise), ``.hdr`` (Radiance RGBE, about 1 % relative precision), ``.npy`` (float32
    ``(H, W, C)``) or ``.tif``/``.tiff`` (32-bit float). See
    :func:`deepinv_icrf.io.write_image`.

    An ``.exr`` file also carries, when given, the std of the radiance (layer ``std``:
    channels ``std.R, std.G, std.B``; ``-1`` where it is unbounded, i.e. pixels saturated in
    every exposure), the saturation mask (layer ``saturated``, 0/1) and the number of
    exposures merged per pixel (layer ``count``), the names OpenEXR viewers show as layers
    (:func:`deepinv_icrf.io.read_exr_layers` reads them back). Other formats hold one image:
    write the std to a file of its own.

    :param str, os.PathLike path: destination file.
    :param numpy.ndarray, torch.Tensor radiance: ``(H, W, C)`` array, or a tensor
        ``(C, H, W)`` or ``(1, C, H, W)``; finite.
    :param numpy.ndarray, torch.Tensor, None std: the std of the radiance, same layout
        (``inf`` allowed: stored as ``-1``). ``.exr`` only.
    :param numpy.ndarray, torch.Tensor, None saturated: boolean mask, same layout. ``.exr``
        only.
    :param numpy.ndarray, torch.Tensor, None count: exposures merged per pixel, same layout.
        ``.exr`` only.
    :param str exr_compression: compression of an ``.exr`` file, one of
        :data:`deepinv_icrf.io.exr.EXR_COMPRESSIONS` (default ``"none"``). A float32
        radiance map merged from camera photos carries noise in every mantissa bit: the
        lossless codecs shrink it by only 10-16 % (``"zip"`` 13 %, ``"zips"`` 10 %,
        ``"piz"`` 16 %, measured on a 12 MP map) for 10-20 times the time of writing it
        as it is (``"zip"``: 2 s of CPU at 12 MP, single-threaded). ``"pxr24"``, ``"b44"``,
        ``"dwaa"`` and ``"dwab"`` are lossy.

    |sep|

    :Example:

    >>> import tempfile, pathlib, torch
    >>> from deepinv_icrf.io import read_image, read_exr_layers
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hdr.npy"
    >>> save_radiance(path, torch.full((3, 2, 4), 12.5))
    >>> read_image(path).shape
    (2, 4, 3)
    >>> exr = path.with_suffix(".exr")
    >>> save_radiance(exr, torch.ones(3, 2, 4), std=torch.full((3, 2, 4), 0.1))
    >>> sorted(read_exr_layers(exr))
    ['', 'std']
    """
    from deepinv_icrf.io import RADIANCE_EXTENSIONS, write_exr, write_image
    from deepinv_icrf.io.exr import EXR_COMPRESSIONS

    check_in(exr_compression, "exr_compression", tuple(EXR_COMPRESSIONS))
    ext = os.fspath(path).lower().rsplit(".", 1)[-1]
    if "." + ext not in RADIANCE_EXTENSIONS:
        raise ValueError(
            f"Cannot save radiance to {os.fspath(path)!r}: expected one of the extensions "
            f"{RADIANCE_EXTENSIONS}."
        )
    arr = _radiance_hwc(radiance, "radiance")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"Expected `radiance` as a float array (H, W, C), but got dtype {arr.dtype} "
            f"and shape {arr.shape}."
        )
    arr = arr.astype(np.float32, copy=False)  # written as it is: no copy of float32
    if not np.isfinite(arr).all():
        raise ValueError(
            f"Cannot save radiance to {os.fspath(path)!r}: it holds NaN or inf values."
        )
    layers: dict[str, np.ndarray] = {}
    for name, value in (("std", std), ("saturated", saturated), ("count", count)):
        if value is None:
            continue
        if ext != "exr":
            raise ValueError(
                f"Cannot save the `{name}` layer to {os.fspath(path)!r}: only OpenEXR "
                "(.exr) files hold layers; write it to a file of its own."
            )
        layer = _radiance_hwc(value, name)
        if layer.shape[:2] != arr.shape[:2]:
            raise ValueError(
                f"Expected `{name}` of the radiance's size {arr.shape[:2]}, but got "
                f"{layer.shape[:2]}."
            )
        if name == "std":
            layer = np.where(np.isfinite(layer), layer, -1.0).astype(
                np.float32, copy=False
            )
        elif name == "saturated":
            layer = layer.astype(bool)
        else:
            layer = layer.astype(np.int32)
        layers[name] = layer
    if ext == "exr":
        write_exr(path, arr, layers=layers, compression=exr_compression)
    else:
        write_image(path, arr)
