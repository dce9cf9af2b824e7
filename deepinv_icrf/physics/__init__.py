r"""Physics: the exposure-stack forward model and the built-in camera response curves."""

from __future__ import annotations

from deepinv_icrf.physics.exposure import BitDepthQuantizer, ExposureStack
from deepinv_icrf.physics.responses import (
    RESPONSE_NAMES,
    ExpResponse,
    FilmicResponse,
    GammaResponse,
    LinearResponse,
    LogResponse,
    ResponseCurve,
    SRGBResponse,
    get_response,
)
from deepinv_icrf.physics.splitting import ExposureSplittingMaskGenerator

__all__ = [
    "BitDepthQuantizer",
    "ExposureSplittingMaskGenerator",
    "ExposureStack",
    "RESPONSE_NAMES",
    "ExpResponse",
    "FilmicResponse",
    "GammaResponse",
    "LinearResponse",
    "LogResponse",
    "ResponseCurve",
    "SRGBResponse",
    "get_response",
]
