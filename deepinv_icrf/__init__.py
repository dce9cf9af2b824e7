r"""deepinv-icrf: inverse camera response fitting and training losses for DeepInverse.

The subpackages (``deepinv_icrf.data``, ``deepinv_icrf.loss``, ...) and the top-level
:func:`~deepinv_icrf.calibration.fit_icrf` are imported on first use (PEP 562), so that
``import deepinv_icrf`` (and the command line's ``--help``) does not pay for torch and
deepinv until something needs them.
"""

from __future__ import annotations

from deepinv_icrf._lazy import lazy_names as _lazy_names

#: The package version, written only here (pyproject.toml reads it for the build).
__version__ = "0.1.0"

__all__ = ["fit_icrf"]

#: Subpackages and modules reachable as attributes of the package, imported on first use.
_SUBMODULES = frozenset(
    {
        "bracket",
        "calibration",
        "cli",
        "data",
        "functional",
        "hdr",
        "hdr_summary",
        "io",
        "loss",
        "models",
        "physics",
        "plot",
        "training",
        "validate",
    }
)
#: Top-level names, by the module that defines them.
_NAMES = {"fit_icrf": "deepinv_icrf.calibration"}


__getattr__, __dir__ = _lazy_names(__name__, _NAMES, globals(), _SUBMODULES)
