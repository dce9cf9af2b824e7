r"""The ICRF file format and its curve, without deepinv: what a merge needs of a saved curve.

:meth:`ICRF.save <deepinv_icrf.models.ICRF.save>` writes a plain JSON file;
:func:`read_icrf_file` reads and checks one (every rule :meth:`ICRF.load
<deepinv_icrf.models.ICRF.load>` applies: this module is where they are written) and returns
an :class:`ICRFFile`, whose :attr:`~ICRFFile.curve` equals ``ICRF.load(path).curve``. The
module imports torch but neither deepinv nor the :class:`~deepinv_icrf.models.ICRF` module
(a deepinv reconstructor, whose import brings deepinv, torchvision and ``torch._dynamo``,
about 1.4 times torch's own import time and 200 MB more memory): ``deepinv-icrf merge``
reads its curve through it.

The monotone parameterization is written here once, :func:`monotone_curve`:

.. math::

    g_{c,k} = \frac{\sum_{j < k} \mathrm{softplus}(r_{c,j})}
                   {\sum_{j < L - 1} \mathrm{softplus}(r_{c,j})}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from deepinv_icrf._checks import check_band, check_channel_values
from deepinv_icrf.bracket import check_bit_depth

__all__ = [
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "PARAMETERIZATIONS",
    "SAVED_DTYPES",
    "CODE_METADATA",
    "ICRFFile",
    "read_icrf_file",
    "monotone_curve",
]

FORMAT_TAG = "deepinv-icrf/icrf"
FORMAT_VERSION = 1
PARAMETERIZATIONS = ("monotone", "free")
#: parameter dtypes an ICRF file may name
SAVED_DTYPES = ("float32", "float64", "float16", "bfloat16")
#: Metadata the package writes and reads back, one value per channel in [0, 1] code units
#: (:func:`deepinv_icrf.calibration.fit_metadata`: the fit's code noise and floor);
#: :func:`read_icrf_file` checks them.
CODE_METADATA = ("floor", "code_std")
# smallest slope kept when turning a given non-decreasing curve into softplus increments
MIN_SLOPE = 1e-6
# tolerance on the endpoints / monotonicity of a curve given to the monotone form
CURVE_TOL = 1e-4
_SOFTPLUS_LINEAR = 20.0
# largest difference accepted between a file's parameters and its curve
_PARAMETER_TOL = 1e-5


def monotone_curve(raw: Tensor) -> Tensor:
    r"""The monotone curve ``(C, L)`` of raw increments ``(C, L - 1)`` (formula above).

    :param torch.Tensor raw: the raw increments :math:`r`, ``(C, L - 1)``.
    :return: (:class:`torch.Tensor`) the curve, from 0 to 1, in ``raw``'s dtype.

    |sep|

    :Example:

    >>> import torch
    >>> monotone_curve(torch.zeros(1, 2))
    tensor([[0.0000, 0.5000, 1.0000]])
    """
    inc = torch.cumsum(F.softplus(raw), dim=1)
    return torch.cat([torch.zeros_like(inc[:, :1]), inc / inc[:, -1:]], dim=1)


def softplus_inverse(d: Tensor) -> Tensor:
    r"""The inverse of ``F.softplus`` (beta 1, threshold 20): ``log(expm1(d))``, linear
    above 20."""
    safe = d.clamp_max(_SOFTPLUS_LINEAR)
    return torch.where(d > _SOFTPLUS_LINEAR, d, torch.log(torch.expm1(safe)))


def check_monotone_curve(curve: Tensor, name: str) -> None:
    r"""Raise :class:`ValueError` unless ``curve`` ``(C, L)`` starts at 0, ends at 1 and
    never decreases (within :data:`CURVE_TOL`): what the monotone form can represent."""
    diffs = curve.diff(dim=1)
    start_err = float(curve[:, 0].abs().max())
    end_err = float((curve[:, -1] - 1.0).abs().max())
    if start_err > CURVE_TOL or end_err > CURVE_TOL:
        raise ValueError(
            f"Expected `{name}` for the 'monotone' parameterization to start at 0 and end "
            f"at 1 (within {CURVE_TOL}), but got endpoints "
            f"{curve[:, 0].tolist()} and {curve[:, -1].tolist()}."
        )
    if float(diffs.min()) < -CURVE_TOL:
        raise ValueError(
            f"Expected `{name}` for the 'monotone' parameterization to be non-decreasing, "
            f"but it decreases by up to {-float(diffs.min()):.3g}."
        )


def curve_to_raw(curve: Tensor, parameterization: str, name: str) -> list[Tensor]:
    r"""The parameters, one tensor per channel, of a curve ``(C, L)`` (float64): the values
    themselves (``"free"``) or the softplus increments of the monotone form, flat steps
    given a slope of :data:`MIN_SLOPE`."""
    if parameterization == "free":
        return list(curve.unbind(0))
    check_monotone_curve(curve, name)
    slopes = (curve.diff(dim=1) * (curve.shape[1] - 1)).clamp_min(MIN_SLOPE)
    return list(softplus_inverse(slopes).unbind(0))


def curve_of(raw: Tensor, parameterization: str) -> Tensor:
    r"""The curve ``(C, L)`` of the stacked parameters ``raw`` of one parameterization."""
    return raw if parameterization == "free" else monotone_curve(raw)


def read_table(table: object, rows: int, cols: int, key: str, where: str) -> Tensor:
    r"""A ``rows x cols`` table of finite numbers from JSON lists, as float64."""
    if not isinstance(table, list) or len(table) != rows:
        n = len(table) if isinstance(table, list) else type(table).__name__
        raise ValueError(f"{where}: `{key}` must be a list of {rows} rows, got {n}.")
    for c, row in enumerate(table):
        if not isinstance(row, list) or len(row) != cols:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise ValueError(
                f"{where}: `{key}` row {c} must hold {cols} values, got {n}."
            )
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row
        ):
            raise ValueError(f"{where}: `{key}` row {c} must hold numbers only.")
    t = torch.tensor(table, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where}: `{key}` holds NaN or infinite values.")
    return t


@dataclass(frozen=True)
class ICRFFile:
    r"""An ICRF file as read and checked by :func:`read_icrf_file`.

    :param int channels: number of channels :math:`C`.
    :param int n_points: grid size :math:`L`.
    :param int, None bit_depth: bit depth of the codes the curve is meant for.
    :param str parameterization: ``"monotone"`` or ``"free"``.
    :param torch.dtype dtype: dtype of the saved parameters.
    :param torch.Tensor table: the ``curve`` the file lists, float64 ``(C, L)``.
    :param torch.Tensor parameters: the raw parameters, float64 ``(C, L - 1)`` (monotone) or
        ``(C, L)`` (free): the file's, or those of its curve when it lists none.
    :param bool listed_parameters: whether the file lists its parameters.
    :param dict metadata: the saved metadata (``code_std``, ``floor``, ... of a fit).
    :param torch.Tensor, None band: the confidence band, float64 ``(2, C, L)`` (lower and
        upper edge), or ``None``.
    """

    channels: int
    n_points: int
    bit_depth: int | None
    parameterization: str
    dtype: torch.dtype
    table: Tensor
    parameters: Tensor
    listed_parameters: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    band: Tensor | None = None

    @property
    def curve(self) -> Tensor:
        r"""The curve ``(C, L)`` on the CPU, in :attr:`dtype`, as ``ICRF.load(path).curve``
        computes it from the parameters (the same values, bit for bit)."""
        return curve_of(self.parameters.to(self.dtype), self.parameterization)


def _int_field(doc: dict, key: str, low: int, where: str) -> int:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: `{key}` must be an int >= {low}, got {value!r}.")
    return value


def read_icrf_file(path: str | os.PathLike) -> ICRFFile:
    r"""Read an ICRF file written by :meth:`ICRF.save <deepinv_icrf.models.ICRF.save>`,
    checking every field.

    :param str, os.PathLike path: the file.
    :return: (:class:`ICRFFile`) its fields; :attr:`ICRFFile.curve` is the curve.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file and the problem (not JSON, or JSON beyond the limits
        of :func:`deepinv_icrf.io.read_json`: larger than 64 MB, nested deeper than 32, a
        number longer than 40 characters, a key given twice; wrong format tag or version,
        missing keys, wrong lengths, non-finite values, a dtype other than those of
        :data:`SAVED_DTYPES`, a bit depth outside 1..32, a ``floor``/``code_std`` in the
        metadata that is not one value in ``[0, 1]`` per channel, a curve the
        parameterization cannot represent, parameters that disagree with the curve, band
        edges that cross).

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> from deepinv_icrf.models import ICRF
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "icrf.json"
    >>> ICRF(channels=1, n_points=3, init="gamma", gamma=2.0).save(path, camera="x")
    >>> read_icrf_file(path).curve, read_icrf_file(path).metadata
    (tensor([[0.0000, 0.2500, 1.0000]]), {'camera': 'x'})
    """
    from deepinv_icrf.io.jsonfile import read_json  # size, depth, number limits

    where = f"ICRF file {os.fspath(path)!r}"
    doc = read_json(path, where)
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(doc).__name__}.")
    if doc.get("format") != FORMAT_TAG:
        raise ValueError(
            f"{where}: expected format tag {FORMAT_TAG!r}, got {doc.get('format')!r}."
        )
    required = (
        "version",
        "channels",
        "n_points",
        "bit_depth",
        "parameterization",
        "curve",
    )
    missing = [k for k in required if k not in doc]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}.")
    version = doc["version"]
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 1 <= version <= FORMAT_VERSION
    ):
        raise ValueError(f"{where}: unsupported version {version!r} (expected 1).")
    C = _int_field(doc, "channels", 1, where)
    L = _int_field(doc, "n_points", 2, where)
    try:
        bit_depth = check_bit_depth(doc["bit_depth"])
    except (TypeError, ValueError) as err:  # bad file content: a ValueError
        raise ValueError(f"{where}: {err}") from None
    param = doc["parameterization"]
    if param not in PARAMETERIZATIONS:
        raise ValueError(
            f"{where}: `parameterization` must be one of {PARAMETERIZATIONS}, got {param!r}."
        )
    dtype_name = doc.get("dtype", "float32")
    if dtype_name not in SAVED_DTYPES:
        raise ValueError(
            f"{where}: `dtype` must be one of {SAVED_DTYPES}, got {str(dtype_name)[:40]!r}."
        )
    dtype = getattr(torch, dtype_name)
    table = read_table(doc["curve"], C, L, "curve", where)
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(
            f"{where}: `metadata` must be a JSON object, got {type(metadata).__name__}."
        )
    for key in CODE_METADATA:  # what merge reads back (its lower cutoff, deghosting)
        if key in metadata:
            try:
                check_channel_values(metadata[key], f"metadata `{key}`", C)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
    try:
        derived = torch.stack(curve_to_raw(table, param, "curve"))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    listed = "parameters" in doc
    raw = derived
    if listed:
        n_raw = L if param == "free" else L - 1
        raw = read_table(doc["parameters"], C, n_raw, "parameters", where)
        with torch.no_grad():
            rebuilt = curve_of(raw.to(dtype), param).to(torch.float64)
        if not torch.allclose(rebuilt, table, rtol=0.0, atol=_PARAMETER_TOL):
            err = float((rebuilt - table).abs().max())
            raise ValueError(
                f"{where}: `parameters` and `curve` disagree (max difference {err:.3g}); "
                "the file was edited inconsistently."
            )
    band = None
    if doc.get("band") is not None:
        edges = doc["band"]
        if not isinstance(edges, dict) or set(edges) != {"lower", "upper"}:
            raise ValueError(f"{where}: `band` must hold `lower` and `upper` tables.")
        band = torch.stack(
            [read_table(edges[k], C, L, f"band.{k}", where) for k in ("lower", "upper")]
        )
        try:  # lower > upper: edges swapped or edited
            check_band(band[0], band[1], "`band`")
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return ICRFFile(
        channels=C,
        n_points=L,
        bit_depth=bit_depth,
        parameterization=param,
        dtype=dtype,
        table=table,
        parameters=raw,
        listed_parameters=listed,
        metadata=dict(metadata),
        band=band,
    )
