r"""Training: deepinv.Trainer helpers (the ICRF trainer, term logging, distributed fits).

The one-call fit moved to :mod:`deepinv_icrf.calibration`; its old names here
(``fit_icrf``, ``as_stack_tensor``, ``fit_refined``, ``describe_refinement``,
``icrf_confidence_band``) still work and warn.
"""

from __future__ import annotations

import importlib
import warnings

from deepinv_icrf.training.distributed import fit_icrf_distributed  # noqa: F401
from deepinv_icrf.training.logging import (  # noqa: F401
    TermLoggingTrainer,
    term_log_keys,
)
from deepinv_icrf.training.trainer import ICRFTrainer, icrf_objective  # noqa: F401

#: names that moved out of this package: name -> new module
_MOVED = {
    "fit_icrf": "deepinv_icrf.calibration",
    "fit_refined": "deepinv_icrf.calibration",
    "describe_refinement": "deepinv_icrf.calibration",
    "icrf_confidence_band": "deepinv_icrf.calibration",
    "as_stack_tensor": "deepinv_icrf.bracket",
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        module = _MOVED[name]
        warnings.warn(
            f"deepinv_icrf.training.{name} moved to {module}.{name}; import it from there "
            "(the old name will be removed in a future release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'deepinv_icrf.training' has no attribute {name!r}")
