r"""Models: the ICRF (a deepinv reconstructor, and :class:`ICRFBase`, the same without deepinv),
the stack reconstructors, the ICRF file.

The names are imported on first use (PEP 562): :mod:`deepinv_icrf.models.curve_file` (the
ICRF file format, which ``deepinv-icrf merge`` reads) is reachable without importing deepinv,
which the other modules subclass.
"""

from __future__ import annotations

from deepinv_icrf._lazy import lazy_names as _lazy_names

__all__ = [
    "ICRF",
    "ICRFBase",
    "ICRFFile",
    "read_icrf_file",
    "EquivariantSplittingModel",
    "StackReconstructor",
]

#: Public names, by the module that defines them.
_NAMES = {
    "ICRF": "deepinv_icrf.models.icrf",
    "ICRFBase": "deepinv_icrf.models.icrf_base",
    "ICRFFile": "deepinv_icrf.models.curve_file",
    "read_icrf_file": "deepinv_icrf.models.curve_file",
    "EquivariantSplittingModel": "deepinv_icrf.models.splitting",
    "StackReconstructor": "deepinv_icrf.models.stack_reconstructor",
}


__getattr__, __dir__ = _lazy_names(__name__, _NAMES, globals())
