r"""deepinv-icrf: inverse camera response fitting and training losses for DeepInverse."""

from __future__ import annotations

#: The package version, written only here (pyproject.toml reads it for the build).
__version__ = "0.1.0"

from deepinv_icrf import (  # noqa: F401
    bracket,
    calibration,
    data,
    functional,
    hdr,
    io,
    loss,
    models,
    physics,
    training,
)
from deepinv_icrf.calibration import fit_icrf  # noqa: F401
