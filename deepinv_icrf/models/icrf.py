r"""The inverse camera response function (ICRF) as a deepinv reconstructor.

The curve, its evaluation and its files live in :class:`~deepinv_icrf.models.icrf_base.ICRFBase`
(no deepinv import); :class:`ICRF` adds deepinv's :class:`~deepinv.models.Reconstructor` base.
"""

from __future__ import annotations

import torch
from deepinv.models import Reconstructor

from deepinv_icrf.models.icrf_base import (  # noqa: F401 - names this module had, kept
    CODE_METADATA,
    CURVE_TOL,
    FORMAT_TAG,
    FORMAT_VERSION,
    INITS,
    MIN_SLOPE,
    PARAMETERIZATIONS,
    SAVED_DTYPES,
    ICRFBase,
)

__all__ = ["ICRF"]


class ICRF(ICRFBase, Reconstructor):
    r"""Inverse camera response function: codes to relative irradiance, per channel.

    The ICRF :math:`g_c` of channel :math:`c` is piecewise linear on the uniform grid
    :math:`k / (L - 1)` with values :math:`g_{c,k}` (the ``curve``, shape ``(C, L)``), and is
    applied to every code of a stack:

    .. math::

        x_{n,c,h,w} = g_c(y_{n,c,h,w}) = (1 - \theta) g_{c,k} + \theta g_{c,k+1},
        \quad u = y (L - 1),\ k = \lfloor u \rfloor,\ \theta = u - k.

    Two parameterizations:

    - ``"free"``: the curve values are the parameters (as in clair-torch); regularise them
      with the curve penalties (monotonicity, range, endpoints, smoothness).
    - ``"monotone"``: strictly increasing with :math:`g(0) = 0` and :math:`g(1) = 1` by
      construction, from raw increments :math:`r_{c,j}`, :math:`j = 0, \dots, L - 2`:

      .. math::

          g_{c,k} = \frac{\sum_{j < k} \mathrm{softplus}(r_{c,j})}
                         {\sum_{j < L - 1} \mathrm{softplus}(r_{c,j})}.

    The parameters of channel :math:`c` are one tensor in an :class:`torch.nn.ParameterList`
    (:meth:`channel_parameters`), so per-channel optimizers and early stopping work.

    An optional confidence band of the curve lives in the buffer ``band`` (``None`` or a
    float tensor ``(2, C, L)``: lower and upper edges, e.g. from
    :func:`~deepinv_icrf.calibration.icrf_confidence_band`); setting it checks that it is
    finite with lower <= upper everywhere (:class:`ValueError` otherwise).

    :param int channels: number of channels :math:`C \ge 1`. Default 3.
    :param int n_points: grid size :math:`L \ge 2`. Default 256 (one knot per 8-bit code).
    :param str parameterization: ``"monotone"`` (default) or ``"free"``.
    :param str, torch.Tensor init: ``"identity"`` (default), ``"gamma"`` (:math:`y^\gamma`, the
        ICRF of a gamma camera) or a curve of shape ``(C, L)`` or ``(L,)`` (the same for every
        channel). For ``"monotone"`` a given curve must be non-decreasing with endpoints 0
        and 1 (within 1e-4; they are then pinned exactly, and flat steps get a tiny slope).
    :param float, tuple gamma: exponent of the ``"gamma"`` init, one value or one per
        channel. Default 2.2.
    :param int, None bit_depth: bit depth of the codes the curve is meant for (recorded,
        saved, used by callers that bin codes). Default 8.
    :param torch.dtype dtype: dtype of the parameters. Default ``torch.float32``.
    :param torch.device, str device: device of the parameters. Default ``"cpu"``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.models import ICRF
    >>> model = ICRF(channels=1, n_points=5, init="gamma", gamma=2.0)
    >>> model.curve.detach()
    tensor([[0.0000, 0.0625, 0.2500, 0.5625, 1.0000]])
    >>> model(torch.tensor([0.5, 0.625]).view(1, 1, 2, 1)).detach().flatten()
    tensor([0.2500, 0.4062])
    """

    @classmethod
    def from_base(cls, model: ICRFBase) -> ICRF:
        r"""The :class:`ICRF` of an :class:`~deepinv_icrf.models.icrf_base.ICRFBase`: the same
        curve (parameters copied exactly), band, metadata, ``fit_report``, dtype, device and
        training mode. An :class:`ICRF` is returned as it is.

        :param deepinv_icrf.models.icrf_base.ICRFBase model: the model.
        :return: (:class:`ICRF`) the model as a deepinv reconstructor.

        |sep|

        :Example:

        >>> from deepinv_icrf.models import ICRF
        >>> from deepinv_icrf.models.icrf_base import ICRFBase
        >>> base = ICRFBase(channels=1, n_points=5, init="gamma")
        >>> icrf = ICRF.from_base(base)
        >>> bool((icrf.curve == base.curve).all()), type(icrf).__name__
        (True, 'ICRF')
        """
        if isinstance(model, cls):
            return model
        if not isinstance(model, ICRFBase):
            raise TypeError(
                f"Expected `model` to be an ICRFBase, but got {type(model).__name__}."
            )
        first = model.params[0]
        out = cls(
            channels=model.channels,
            n_points=model.n_points,
            parameterization=model.parameterization,
            bit_depth=model.bit_depth,
            dtype=first.dtype,
            device=first.device,
        )
        with torch.no_grad():
            for mine, theirs in zip(out.params, model.params, strict=True):
                mine.copy_(theirs)
                mine.requires_grad_(theirs.requires_grad)
        out.band = model.band
        out.metadata = dict(model.metadata)
        report = getattr(model, "fit_report", None)
        if report is not None:
            out.fit_report = report
        out.train(model.training)
        return out
