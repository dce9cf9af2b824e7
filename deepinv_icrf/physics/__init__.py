r"""Physics: the exposure-stack forward model and the built-in camera response curves.

The names are imported on first use (PEP 562): the response curves
(:mod:`deepinv_icrf.physics.responses`, which the fits and the ICRF use) are reachable
without importing deepinv, which the forward model and the mask generator subclass.
"""

from __future__ import annotations

from deepinv_icrf._lazy import lazy_names as _lazy_names

_EXPOSURE = "deepinv_icrf.physics.exposure"
_RESPONSES = "deepinv_icrf.physics.responses"
#: Public names, by the module that defines them.
_NAMES = {
    "BitDepthQuantizer": _EXPOSURE,
    "ExposureStack": _EXPOSURE,
    "ExposureSplittingMaskGenerator": "deepinv_icrf.physics.splitting",
    **{
        name: _RESPONSES
        for name in (
            "RESPONSE_NAMES",
            "ExpResponse",
            "FilmicResponse",
            "GammaResponse",
            "LinearResponse",
            "LogResponse",
            "ResponseCurve",
            "SRGBResponse",
            "get_response",
        )
    },
}


__all__ = list(_NAMES)

__getattr__, __dir__ = _lazy_names(__name__, _NAMES, globals())
