r"""Models: the ICRF (a deepinv reconstructor), the stack reconstructors, the ICRF file.

The names are imported on first use (PEP 562): :mod:`deepinv_icrf.models.curve_file` (the
ICRF file format, which ``deepinv-icrf merge`` reads) is reachable without importing deepinv,
which the other modules subclass.
"""

from __future__ import annotations

import importlib as _importlib

__all__ = [
    "ICRF",
    "ICRFFile",
    "read_icrf_file",
    "EquivariantSplittingModel",
    "StackReconstructor",
]

#: Public names, by the module that defines them.
_NAMES = {
    "ICRF": "deepinv_icrf.models.icrf",
    "ICRFFile": "deepinv_icrf.models.curve_file",
    "read_icrf_file": "deepinv_icrf.models.curve_file",
    "EquivariantSplittingModel": "deepinv_icrf.models.splitting",
    "StackReconstructor": "deepinv_icrf.models.stack_reconstructor",
}


def __getattr__(name: str) -> object:
    if name in _NAMES:
        value = getattr(_importlib.import_module(_NAMES[name]), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(_NAMES))
