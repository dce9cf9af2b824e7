r"""Radiometric linearity loss of a linearised exposure stack, as a deepinv loss."""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from deepinv.loss import Loss
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, compute_dtype
from deepinv_icrf.bracket import check_bit_depth
from deepinv_icrf.functional.histogram import (
    BIT_DEPTHS,
    ContinuousInputError,
    LinearityHistogram,
    _check_max_bins,
    _code_std,
    _std_table,
    build_linearity_histogram,
    linearity_from_histogram,
)
from deepinv_icrf.functional.interp import interp_curve
from deepinv_icrf.functional.linearity import (
    _check_linearity_inputs,
    _check_options,
    _check_pair_chunk,
    _check_std_shape,
    _radiometric_linearity,
    propagate_std,
)
from deepinv_icrf.loss._utils import find_icrf

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["RadiometricLinearityLoss"]

_log = logging.getLogger("deepinv_icrf")

PATHS = ("auto", "histogram", "dense")
#: Pixels per side of the grid on which ``x_net`` is compared with ``ICRF(y)``.
_SPOT_CHECK = 8


class _Ref:
    r"""Identifies a tensor without keeping it alive: the same object, unmodified
    (``_version``), else equal values (small tensors only)."""

    __slots__ = ("ref", "version", "values")

    def __init__(self, t: Tensor | None, keep_values: bool) -> None:
        self.ref = None if t is None else weakref.ref(t)
        self.version = None if t is None else t._version
        self.values = t.detach().clone() if (t is not None and keep_values) else None

    def matches(self, t: Tensor | None) -> bool:
        if t is None or self.ref is None:
            return t is None and self.ref is None
        if self.ref() is t and t._version == self.version:
            return True
        if self.values is None or self.values.shape != t.shape:
            return False
        if self.values.device != t.device or not torch.equal(self.values, t.detach()):
            return False
        self.ref, self.version = weakref.ref(t), t._version
        return True


class _Entry:
    r"""One cached stack: its histogram, or why there is none."""

    __slots__ = ("y", "times", "table", "hist", "reason", "checked", "deferred")

    def __init__(self, y, times, table, hist, reason, deferred=False) -> None:
        self.y = _Ref(y, keep_values=False)
        self.times = _Ref(times, keep_values=True)
        self.table = _Ref(table, keep_values=True)
        self.hist: LinearityHistogram | None = hist
        self.reason: str = reason
        # seen once, not built yet (dense path): built if the same stack is seen again
        self.deferred: bool = deferred
        # id of an ICRF -> whether x_net matched ICRF(y) when first seen with it
        self.checked: dict[int, bool] = {}


def _code_table(y_std: Tensor, channels: int) -> Tensor | None:
    r"""``y_std`` as a per-channel constant table ``(C', 1)`` when it does not vary with the
    sample, exposure or pixel (a function of the code), else ``None`` (per-pixel)."""
    if y_std.ndim > 5:
        return None
    shape = (1,) * (5 - y_std.ndim) + tuple(y_std.shape)
    if shape[0] == shape[1] == shape[3] == shape[4] == 1 and shape[2] in (1, channels):
        return y_std.reshape(shape[2], 1)
    return None


class RadiometricLinearityLoss(Loss):
    r"""Radiometric linearity loss of an ICRF on exposure stacks (clair-torch).

    The measurement ``y`` is a raw exposure stack :math:`Y` ``(B, N, C, H, W)`` whose exposure
    times are ``physics.exposure_times`` (``(N,)``, ``(1, N)`` or ``(B, N)``, any order, set
    per batch with ``physics.update(exposure_times=...)``), and the network output ``x_net``
    is the linearised stack :math:`X = \mathrm{ICRF}(Y)`. For every channel,

    .. math::

        L_c = \sqrt{\sum_{p = (i, j)} m_{p, c}^2}, \qquad
        m_{p, c} = \frac{\sum w\, v\, d(X_i, r X_j)}{\max(\sum w\, v, 10^{-8})},

    over the exposure pairs with :math:`t_i < t_j` and :math:`r = t_i / t_j \geq`
    ``exposure_ratio_threshold``, the pixels :math:`v` valid in both raw images, the relative
    (or absolute) residual :math:`d` and the weights :math:`w = g(Y_i) + g(Y_j)
    [+ 1 / (\sigma + 10^{-6})]`; see :func:`deepinv_icrf.functional.radiometric_linearity`.
    The loss is :math:`\sum_c L_c` per sample (the total that clair-torch minimises with one
    optimizer), or the vector :math:`(L_c)_c` with ``per_channel=True``.

    Per-pixel standard deviations of the raw codes, from the ``y_std`` keyword or from
    ``physics.y_std`` when it exists and is not ``None``, are propagated through the ICRF,
    :math:`s_X = |\mathrm{ICRF}'(Y)|\, s_Y`, using the ICRF found in ``model`` (see
    :func:`deepinv_icrf.loss.find_icrf`). A ready ``x_std`` keyword is used as it is.

    **Two paths, one value.** The *dense* path evaluates every pixel of every exposure pair,
    a few pairs at a time (``pair_chunk``, recomputed in the backward pass so that memory
    grows with the chunk, not with the number of pairs). The *histogram* path evaluates the
    ICRF's curve on the joint code histograms of the stack
    (:func:`deepinv_icrf.functional.build_linearity_histogram`, built once per stack), at a
    cost that does not depend on the image size, with the same value and gradient with
    respect to the curve (exactly, up to float rounding, when every code has its own bin:
    always for 8-bit). It needs integer codes (detected: 8 to 16 bits), an ICRF in ``model``
    whose output is ``x_net`` (checked on a few pixels when a stack is first seen), and no
    per-pixel stds: stds that depend on the code only (``y_std`` constant per channel, or a
    ``y_std_table`` keyword) are fine. With ``path="auto"`` (default) the histogram path is
    used when it applies and pays (see the cache below) and the dense path otherwise;
    ``"histogram"`` raises a :class:`ValueError` saying why it does not apply; ``"dense"``
    always evaluates the dense path. Both give the same value, so the choice only changes the
    speed. The attributes ``last_path`` (``"histogram"`` or ``"dense"``) and ``last_reason``
    say what the last call did, and every change is logged once (logger ``"deepinv_icrf"``,
    level INFO).

    **Statistics cache.** The histograms of the last ``cache_size`` stacks are kept, keyed by
    the identity of ``y`` (the same tensor object, not modified in place since), the values of
    the exposure times, the std table and the options: a fit loop that passes the same stack
    at every step builds them once; a new tensor (e.g. a new batch from a data loader, even
    with the same values) is a new stack. Building costs a few dense steps on a small stack
    and less than one on a large one (measured on CPU: the break-even is near :math:`2^{22}`
    pixel pairs :math:`B C H W N (N - 1) / 2`). So ``path="auto"`` builds at once for a new
    stack unless the last two new stacks were never reused (a data loader) and the new one is
    small: then it takes the dense path and builds only if the same stack comes back
    (``last_reason`` "first sighting of a small stack ..."); any reuse of a stack makes it
    build at once again. With ``cache_size=0`` nothing is reused, so small stacks go dense
    after the first two. Datasets can build the statistics once per item with
    :meth:`precompute` and pass them as the ``stats`` keyword.

    :param bool relative: relative (``True``, default) or absolute residuals.
    :param bool use_uncertainty_weighting: add inverse-uncertainty weights when standard
        deviations are available. Default ``True``.
    :param float exposure_ratio_threshold: smallest accepted ratio :math:`t_i / t_j`, in
        ``[0, 1]``. Default ``0.1``.
    :param float lower: smallest valid raw code, inclusive. Default ``1/255``.
    :param float upper: largest valid raw code, inclusive. Default ``254/255``.
    :param float gaussian_scale: sharpness of the value weights :math:`g`. Default ``10.0``.
    :param bool per_channel: return ``(B, C)`` instead of the channel sum ``(B,)``. Default
        ``False``.
    :param bool detach_std: treat the propagated standard deviations as constants (no gradient
        through :math:`\mathrm{ICRF}'`), as clair-torch does. Default ``True``.
    :param str path: ``"auto"`` (default), ``"histogram"`` or ``"dense"``.
    :param int, None bit_depth: bit depth of the codes for the histogram path, one of (8, 10,
        12, 14, 16), or ``None`` (default) to detect it.
    :param int max_bins: most histogram bins per code axis (a power of two); deeper codes are
        binned (an approximation). Default 4096 (exact up to 12 bits).
    :param int, str, None pair_chunk: exposure pairs evaluated at once on the dense path:
        ``"auto"`` (default, about :math:`2^{22}` values at a time), ``None`` (all) or an int.
    :param int cache_size: stacks whose statistics are kept (0 disables the cache). Default 8.

    |sep|

    :Examples:

    >>> import torch
    >>> from types import SimpleNamespace
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> x = torch.linspace(0.01, 0.2, 35).view(1, 1, 1, 5, 7) * t.view(1, 3, 1, 1, 1)
    >>> y = x ** (1 / 2.2)
    >>> loss = RadiometricLinearityLoss()
    >>> loss(x_net=y, y=y, physics=SimpleNamespace(exposure_times=t))
    tensor([1.3036])
    >>> loss.last_path, loss.last_reason
    ('dense', 'no ICRF found in `model`')

    On 8-bit codes with an ICRF, the histogram path gives the dense value:

    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=1)
    >>> codes = torch.round(y * 255) / 255
    >>> physics = SimpleNamespace(exposure_times=t)
    >>> loss(x_net=icrf(codes), y=codes, physics=physics, model=icrf)
    tensor([1.3056], grad_fn=<SumBackward1>)
    >>> loss.last_path
    'histogram'
    >>> RadiometricLinearityLoss(path="dense")(
    ...     x_net=icrf(codes), y=codes, physics=physics, model=icrf)
    tensor([1.3056], grad_fn=<SumBackward1>)
    """

    #: ``path="auto"``: a new stack with fewer pixel pairs (``B C H W N (N - 1) / 2``) than
    #: this takes the dense path when the recent stacks were not reused (measured: below
    #: it, building the histograms costs more than one dense step).
    _DENSE_FIRST_BELOW: int = 2**22
    #: ``path="auto"``: new stacks seen in a row, none reused, before the rule above applies.
    _STREAM_AFTER: int = 2

    def __init__(
        self,
        relative: bool = True,
        use_uncertainty_weighting: bool = True,
        exposure_ratio_threshold: float = 0.1,
        lower: float = 1 / 255,
        upper: float = 254 / 255,
        gaussian_scale: float = 10.0,
        per_channel: bool = False,
        detach_std: bool = True,
        path: str = "auto",
        bit_depth: int | None = None,
        max_bins: int = 4096,
        pair_chunk: int | str | None = "auto",
        cache_size: int = 8,
    ):
        super().__init__()
        check_in(relative, "relative", (True, False))
        check_in(use_uncertainty_weighting, "use_uncertainty_weighting", (True, False))
        check_in(per_channel, "per_channel", (True, False))
        check_in(detach_std, "detach_std", (True, False))
        check_in(path, "path", PATHS)
        _check_options(exposure_ratio_threshold, lower, upper, gaussian_scale)
        check_bit_depth(bit_depth, allowed=BIT_DEPTHS)
        _check_max_bins(max_bins)
        _check_pair_chunk(pair_chunk)
        if (
            isinstance(cache_size, bool)
            or not isinstance(cache_size, int)
            or cache_size < 0
        ):
            raise ValueError(
                f"Expected `cache_size` to be an int >= 0, but got {cache_size!r}."
            )
        self.relative = relative
        self.use_uncertainty_weighting = use_uncertainty_weighting
        self.exposure_ratio_threshold = float(exposure_ratio_threshold)
        self.lower = float(lower)
        self.upper = float(upper)
        self.gaussian_scale = float(gaussian_scale)
        self.per_channel = per_channel
        self.detach_std = detach_std
        self.path = path
        self.bit_depth = bit_depth
        self.max_bins = max_bins
        self.pair_chunk = pair_chunk
        self.cache_size = cache_size
        #: ``"histogram"`` or ``"dense"``: the path of the last call (``None`` before any).
        self.last_path: str | None = None
        #: why the last call took its path.
        self.last_reason: str | None = None
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._checked_codes: OrderedDict[tuple, bool] = OrderedDict()
        # new stacks seen in a row without any cache hit (a data loader: every batch new)
        self._unrepeated = 0

    # ------------------------------------------------------------------ public helpers
    def precompute(
        self,
        y: Tensor,
        exposure_times: Tensor,
        y_std_table: Tensor | None = None,
    ) -> LinearityHistogram:
        r"""Build (and cache) the histogram statistics of a stack with this loss's options.

        Pass the result as the ``stats`` keyword of :meth:`forward` (e.g. from a dataset that
        builds them once per item), or keep passing the same ``y`` tensor (cache hit).

        :param torch.Tensor y: integer-coded raw stack ``(B, N, C, H, W)``.
        :param torch.Tensor exposure_times: ``(B, N)``, ``(1, N)`` or ``(N,)``.
        :param torch.Tensor, None y_std_table: per-code std of the raw codes (see
            :func:`deepinv_icrf.functional.build_linearity_histogram`). Default ``None``.
        :return: (:class:`deepinv_icrf.functional.LinearityHistogram`) the statistics.
        :raises ValueError: if ``y`` does not hold integer codes.
        """
        entry = self._entry(y, exposure_times, y_std_table, raise_continuous=True)
        return entry.hist

    def clear_cache(self) -> None:
        r"""Forget every cached histogram (and which stacks were seen)."""
        self._cache.clear()
        self._checked_codes.clear()
        self._unrepeated = 0

    def get_extra_state(self) -> dict[str, int]:
        r"""The path rule's memory (new stacks seen in a row), saved in ``state_dict`` so that
        a training resumed from a checkpoint takes the same paths (the same float rounding)
        as an uninterrupted one.

        :return: (dict) ``{"unrepeated": int}``.
        """
        return {"unrepeated": self._unrepeated}

    def set_extra_state(self, state: dict[str, int]) -> None:
        r"""Restore :meth:`get_extra_state`.

        :param dict state: ``{"unrepeated": int}``.
        """
        self._unrepeated = int(state.get("unrepeated", 0))

    def __getstate__(self) -> dict[str, Any]:
        # the cache holds weak references (not picklable) and is cheap to rebuild
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_checked_codes"] = OrderedDict()
        state["_unrepeated"] = 0
        return state

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x_net: Tensor,
        y: Tensor,
        physics: Physics,
        model: nn.Module | None = None,
        y_std: Tensor | None = None,
        x_std: Tensor | None = None,
        y_std_table: Tensor | None = None,
        stats: LinearityHistogram | None = None,
        **kwargs,
    ) -> Tensor:
        r"""Compute the loss.

        :param torch.Tensor x_net: linearised stack :math:`\mathrm{ICRF}(Y)`, ``(B, N, C, H, W)``.
        :param torch.Tensor y: raw exposure stack :math:`Y` in ``[0, 1]``, same shape.
        :param deepinv.physics.Physics physics: physics with an ``exposure_times`` attribute
            (``(N,)``, ``(1, N)`` or ``(B, N)``) and optionally ``y_std``.
        :param torch.nn.Module, None model: the model holding the ICRF, needed for the
            histogram path and to propagate ``y_std``. Default ``None``.
        :param torch.Tensor, None y_std: per-pixel std of ``y`` (overrides ``physics.y_std``),
            shape of ``y`` or broadcastable to it. Default ``None``.
        :param torch.Tensor, None x_std: per-pixel std of ``x_net``, used as given (overrides
            ``y_std``; dense path). Default ``None``.
        :param torch.Tensor, None y_std_table: std of the raw codes as a function of the code,
            ``(2**b,)`` or ``(C, 2**b)`` (overrides ``y_std``). Default ``None``.
        :param deepinv_icrf.functional.LinearityHistogram, None stats: precomputed statistics
            of ``y`` (:meth:`precompute`); the caller vouches that they are those of ``y``
            and that ``x_net`` is the model's ICRF applied to ``y``. Default ``None``.
        :return: (:class:`torch.Tensor`) shape ``(B,)``, or ``(B, C)`` with ``per_channel``.
        """
        times = getattr(physics, "exposure_times", None)
        if times is None:
            raise ValueError(
                "Expected `physics` to have an `exposure_times` tensor of shape (N,) or (B, N), "
                f"but {type(physics).__name__} has none."
            )
        checked = _check_linearity_inputs(y, x_net, times, x_name="x_net")
        if not isinstance(
            times, Tensor
        ):  # a tensor is kept: the cache knows it by identity
            times = checked
        channels = y.shape[2]
        table = None
        if x_std is not None:
            _check_std_shape(x_std, "x_std", y.shape)
        elif y_std_table is not None:
            table = _std_table(y_std_table, channels)
        else:
            if y_std is None:
                y_std = getattr(physics, "y_std", None)
            if y_std is not None:
                _check_std_shape(y_std, "y_std", y.shape)
                table = _code_table(y_std, channels)

        self._check_codes(y)
        hist, icrf, reason = None, None, "path='dense'"
        if self.path != "dense":
            hist, icrf, reason = self._histogram(
                x_net, y, times, model, x_std, y_std, table, stats
            )
            if hist is None and self.path == "histogram":
                raise ValueError(
                    f"RadiometricLinearityLoss(path='histogram') cannot use the histogram "
                    f"path: {reason}. Use path='auto' or path='dense'."
                )
        if hist is not None:
            value = linearity_from_histogram(
                icrf.curve,
                hist,
                relative=self.relative,
                use_uncertainty_weighting=self.use_uncertainty_weighting,
                detach_std=self.detach_std,
            )
            self._record("histogram", reason)
        else:
            if x_std is None:
                if y_std_table is not None:
                    y_std = _code_std(y, table)
                if y_std is not None:
                    x_std = self._propagate(y, y_std, model)
            value = _radiometric_linearity(
                y,
                x_net,
                times,
                x_std,
                self.exposure_ratio_threshold,
                self.lower,
                self.upper,
                self.relative,
                self.use_uncertainty_weighting,
                self.gaussian_scale,
                self.pair_chunk,
            )
            self._record("dense", reason)
        return value if self.per_channel else value.sum(dim=-1)

    # ------------------------------------------------------------------ internals
    def _record(self, path: str, reason: str) -> None:
        if (path, reason) != (self.last_path, self.last_reason):
            _log.info("RadiometricLinearityLoss: %s path (%s)", path, reason)
        self.last_path, self.last_reason = path, reason

    def _histogram(
        self,
        x_net: Tensor,
        y: Tensor,
        times: Tensor,
        model: nn.Module | None,
        x_std: Tensor | None,
        y_std: Tensor | None,
        table: Tensor | None,
        stats: LinearityHistogram | None,
    ) -> tuple[LinearityHistogram | None, nn.Module | None, str]:
        r"""The statistics to use and the ICRF, or ``None`` and the reason why not."""
        if x_std is not None:
            return None, None, "a per-pixel `x_std` is given"
        if y_std is not None and table is None:
            return (
                None,
                None,
                "per-pixel `y_std` (stds that are not a function of the code)",
            )
        icrf = find_icrf(model)
        if icrf is None:
            return None, None, "no ICRF found in `model`"
        n_curve = icrf.curve.shape[0]
        if n_curve not in (1, y.shape[2]):
            return (
                None,
                None,
                (f"the ICRF curve has {n_curve} channels and `y` {y.shape[2]}"),
            )
        if stats is not None:
            self._check_stats(stats, y)
            return stats, icrf, "precomputed `stats`"
        entry = self._entry(
            y, times, table, raise_continuous=False, defer=self.path == "auto"
        )
        if entry.deferred:
            return None, None, entry.reason
        if entry.hist is None:
            if table is not None and table.shape[-1] > 1:
                raise ValueError(
                    f"`y_std_table` gives one std per code, but {entry.reason}."
                )
            return None, None, entry.reason
        key = id(icrf)
        if key not in entry.checked:
            entry.checked[key] = self._matches_icrf(x_net, y, icrf)
        if not entry.checked[key]:
            return None, None, "`x_net` is not the ICRF found in `model` applied to `y`"
        hist = entry.hist
        return (
            hist,
            icrf,
            (
                f"{hist.bit_depth}-bit codes, {hist.n_bins} bins, {hist.n_entries} entries"
            ),
        )

    def _check_stats(self, stats: LinearityHistogram, y: Tensor) -> None:
        if not isinstance(stats, LinearityHistogram):
            raise TypeError(
                "Expected `stats` to be a LinearityHistogram (from `precompute`), "
                f"but got {type(stats).__name__}."
            )
        if tuple(stats.shape) != tuple(y.shape):
            raise ValueError(
                f"Expected `stats` built from a stack of shape {tuple(y.shape)}, but got "
                f"one built from shape {tuple(stats.shape)}."
            )
        mine = (
            self.exposure_ratio_threshold,
            self.lower,
            self.upper,
            self.gaussian_scale,
        )
        if stats.options() != mine:
            raise ValueError(
                "Expected `stats` built with this loss's (threshold, lower, upper, "
                f"gaussian_scale) = {mine}, but got {stats.options()}."
            )
        if stats.device != y.device:
            raise ValueError(
                f"Expected `stats` on the device of `y` ({y.device}), but got {stats.device}."
            )

    def _check_codes(self, y: Tensor) -> None:
        # once per stack tensor (one device sync, not one per step): values far outside
        # [0, 1] (e.g. 16-bit codes divided by 255) would all be masked out and give a silent 0
        key = (*self._key(y), y._version)
        if key in self._checked_codes:
            return
        finite = torch.isfinite(y)
        tol = 1e-3
        if bool((finite & ((y < -tol) | (y > 1 + tol))).any()):
            vals = y[finite]
            raise ValueError(
                "Expected `y` to hold values in [0.0, 1.0] (codes divided by 2**bits - 1), "
                f"but got values in [{float(vals.min()):.6g}, {float(vals.max()):.6g}]."
            )
        self._checked_codes[key] = True
        while len(self._checked_codes) > max(self.cache_size, 1):
            self._checked_codes.popitem(last=False)

    def _key(self, y: Tensor) -> tuple:
        return (
            id(y),
            y.data_ptr(),
            y.storage_offset(),
            tuple(y.shape),
            tuple(y.stride()),
            y.dtype,
            str(y.device),
            self.exposure_ratio_threshold,
            self.lower,
            self.upper,
            self.gaussian_scale,
            self.bit_depth,
            self.max_bins,
        )

    def _entry(
        self,
        y: Tensor,
        times: Tensor,
        table: Tensor | None,
        raise_continuous: bool,
        defer: bool = False,
    ) -> _Entry:
        key = self._key(y)
        entry = self._cache.get(key)
        seen = entry is not None and entry.y.matches(y)
        if (
            seen
            and not entry.deferred
            and entry.times.matches(times)
            and entry.table.matches(table)
        ):
            self._cache.move_to_end(key)
            self._unrepeated = 0
            if entry.hist is None and raise_continuous:
                raise ContinuousInputError(entry.reason)
            return entry
        if seen:  # the same stack again (a deferred build, new times or std table)
            self._unrepeated = 0
        else:
            reason = self._first_sighting(y, table) if defer else None
            self._unrepeated += 1
            if reason is not None:
                entry = _Entry(y, times, table, None, reason, deferred=True)
                self._store(key, entry)
                return entry
        # once per stack (cached): codes outside [0, 1] (e.g. 16-bit values not scaled)
        # would otherwise all be masked out and give a silent 0
        self._check_codes(y)
        try:
            hist = build_linearity_histogram(
                y,
                times,
                threshold=self.exposure_ratio_threshold,
                lower=self.lower,
                upper=self.upper,
                gaussian_scale=self.gaussian_scale,
                bit_depth=self.bit_depth,
                max_bins=self.max_bins,
                y_std_table=table,
            )
            reason = "built"
        except ContinuousInputError as err:
            if raise_continuous:
                raise
            hist = None
            reason = "`y` holds continuous values, not integer codes" + (
                "" if self.bit_depth is None else f" of {self.bit_depth} bits"
            )
            del err
        entry = _Entry(y, times, table, hist, reason)
        self._store(key, entry)
        return entry

    def _store(self, key: tuple, entry: _Entry) -> None:
        if self.cache_size > 0:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _first_sighting(self, y: Tensor, table: Tensor | None) -> str | None:
        r"""Why a stack seen for the first time takes the dense path without building its
        histograms (``path="auto"``), or ``None`` to build them now."""
        if self._unrepeated < self._STREAM_AFTER:
            return None  # recent stacks were reused (or too few seen): build
        if table is not None and table.shape[-1] > 1:
            return None  # a per-code std table needs the code check of the build
        n = y.shape[1]
        work = y.numel() // n * (n * (n - 1) // 2)
        if work >= self._DENSE_FIRST_BELOW:
            return None  # building costs less than one dense step
        return (
            f"first sighting of a small stack ({work} pixel pairs < "
            f"{self._DENSE_FIRST_BELOW}) while recent stacks were not reused"
        )

    @staticmethod
    def _matches_icrf(x_net: Tensor, y: Tensor, icrf: nn.Module) -> bool:
        r"""Whether ``x_net`` is ``interp_curve(y, icrf.curve)`` on a grid of pixels."""
        with torch.no_grad():
            h, w = y.shape[-2:]
            hs = torch.linspace(0, h - 1, min(h, _SPOT_CHECK), device=y.device).long()
            ws = torch.linspace(0, w - 1, min(w, _SPOT_CHECK), device=y.device).long()
            y_s = y[..., hs, :][..., ws]
            x_s = x_net.detach()[..., hs, :][..., ws]
            want = interp_curve(y_s, icrf.curve.detach(), channel_dim=-3)
            dtype = compute_dtype(x_s, want)
            tol = max(1e-4, 4.0 * torch.finfo(x_net.dtype).eps)
            return bool(
                torch.allclose(x_s.to(dtype), want.to(dtype), rtol=tol, atol=tol * 1e-2)
            )

    def _propagate(self, y: Tensor, y_std: Tensor, model: nn.Module | None) -> Tensor:
        icrf = find_icrf(model)
        if icrf is None:
            raise ValueError(
                "Expected `model` to hold an ICRF (a 2-D `curve` and a `derivative` method) "
                "to propagate `y_std`, but none was found; pass `x_std` instead."
            )
        channels = icrf.curve.shape[0]
        if channels != y.shape[2]:
            raise ValueError(
                f"Expected the ICRF `curve` to have {y.shape[2]} channels like `y` "
                f"{tuple(y.shape)}, but got {channels}."
            )
        slope = icrf.derivative(y.to(compute_dtype(y)))
        if self.detach_std:
            slope = slope.detach()
        return propagate_std(y_std, slope)
