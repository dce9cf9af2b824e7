r"""Helpers shared by the ICRF losses."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["find_icrf"]

#: Attributes through which an ICRF can be reached from a wrapping model, in search order:
#: an explicit ``.icrf``, ``DataParallel``/``DistributedDataParallel`` (``.module``),
#: ``torch.compile`` (``._orig_mod``) and deepinv wrappers (``.model``, ``.backbone_net``).
_WRAPPER_ATTRIBUTES = ("icrf", "module", "_orig_mod", "model", "backbone_net")
_MAX_DEPTH = 8


def _is_icrf(obj: object) -> bool:
    curve = getattr(obj, "curve", None)
    return (
        isinstance(curve, Tensor)
        and curve.ndim == 2
        and callable(getattr(obj, "derivative", None))
    )


def find_icrf(model: nn.Module | None) -> nn.Module | None:
    r"""Find the ICRF inside a (possibly wrapped) model, by duck typing.

    An ICRF is any object with a 2-D ``curve`` tensor ``(C, L)`` and a callable ``derivative``
    (such as :class:`deepinv_icrf.models.ICRF`). The model itself is returned if it is one;
    otherwise its attributes ``icrf``, ``module`` (``DataParallel``/``DDP``), ``_orig_mod``
    (``torch.compile``), ``model`` and ``backbone_net`` (deepinv wrappers) are searched,
    depth first, in that order.

    :param torch.nn.Module, None model: the model passed to the loss, or ``None``.
    :return: the ICRF, or ``None`` when there is none.

    :Example:

    >>> import torch
    >>> class Curve(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.curve = torch.nn.Parameter(torch.linspace(0, 1, 4).expand(3, 4).clone())
    ...     def derivative(self, y):
    ...         return torch.ones_like(y)
    >>> wrapped = torch.nn.DataParallel(torch.nn.Sequential())
    >>> wrapped.module.icrf = Curve()
    >>> find_icrf(wrapped).curve.shape
    torch.Size([3, 4])
    >>> find_icrf(torch.nn.Identity()) is None
    True
    """
    seen: set[int] = set()

    def search(obj: object, depth: int) -> nn.Module | None:
        if obj is None or id(obj) in seen or depth > _MAX_DEPTH:
            return None
        seen.add(id(obj))
        if _is_icrf(obj):
            return obj  # type: ignore[return-value]
        for name in _WRAPPER_ATTRIBUTES:
            found = search(getattr(obj, name, None), depth + 1)
            if found is not None:
                return found
        return None

    return search(model, 0)
