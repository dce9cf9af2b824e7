r"""Public names of a package imported on first access (PEP 562), written once.

A package's ``__init__`` lists its names by the module that defines them and takes its
module-level ``__getattr__`` and ``__dir__`` from :func:`lazy_names`; nothing is imported
until a name is used, so that ``import deepinv_icrf`` and the command line's ``--help`` do
not pay for torch and deepinv.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str,
    names: Mapping[str, str],
    namespace: dict[str, Any],
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    r"""The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    :param str package: the package's ``__name__``.
    :param Mapping names: public name -> the module that defines it.
    :param dict namespace: the package's ``globals()``: a loaded name is stored there, so
        later lookups do not come back to ``__getattr__``.
    :param Iterable submodules: submodules reachable as attributes, imported on first use.
    :return: (tuple) ``(__getattr__, __dir__)``.

    |sep|

    :Example:

    >>> space = {"__name__": "pkg"}
    >>> getattr_, dir_ = lazy_names("pkg", {"sqrt": "math"}, space)
    >>> getattr_("sqrt")(4.0), "sqrt" in space, dir_()
    (2.0, True, ['__name__', 'sqrt'])
    """
    subs = frozenset(submodules)

    def __getattr__(name: str) -> object:
        if name in subs:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value  # once: later lookups do not come back here
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        dunders = {name for name in namespace if name.startswith("__")}
        return sorted(dunders | subs | set(names))

    return __getattr__, __dir__
