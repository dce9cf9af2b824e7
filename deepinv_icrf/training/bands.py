r"""Deprecated location of :mod:`deepinv_icrf.calibration.bands` (moved there): importing this
module warns and re-exports its names."""

from __future__ import annotations

import importlib
import warnings

warnings.warn(
    "deepinv_icrf.training.bands moved to deepinv_icrf.calibration.bands; import it from there "
    "(the old module will be removed in a future release).",
    DeprecationWarning,
    stacklevel=2,
)

_module = importlib.import_module("deepinv_icrf.calibration.bands")
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
