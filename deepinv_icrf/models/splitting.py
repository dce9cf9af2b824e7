r"""Measurement-splitting reconstructor with optional Reynolds averaging.

:class:`EquivariantSplittingModel` is the model side of
:class:`deepinv_icrf.loss.EquivariantSplittingLoss`: it splits the measurement with a random
mask, reconstructs from the kept part (averaged over a transform group when one is given) and
records the random draw (masks and transform parameters) next to the output, so that the loss
can evaluate its terms, and re-evaluate the very same function, without a registry.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from deepinv.loss.measplit import SplittingLoss
from deepinv.models import Reconstructor
from deepinv.physics.generator import PhysicsGenerator
from deepinv.physics.virtual import VirtualLinearPhysics
from deepinv.transform import Transform
from torch import Tensor, nn

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = [
    "EquivariantSplittingModel",
    "SplittingDraw",
    "check_draw",
    "find_splitting_model",
]

#: Attributes through which a wrapped model is reached: ``DataParallel``/``DDP`` (``module``),
#: ``torch.compile`` (``_orig_mod``) and deepinv model wrappers such as ``R2RModel`` (``model``).
_WRAPPER_ATTRIBUTES = ("module", "_orig_mod", "model")
_MAX_DEPTH = 8
#: How many recent forward draws a model remembers (a step makes one, plus a few inner calls).
_MAX_RECORDS = 4


class SplittingDraw(NamedTuple):
    r"""The random part of one :class:`EquivariantSplittingModel` forward pass.

    :param tuple masks: one splitting mask per Monte Carlo sample, each ``(B, C or 1, H, W)``.
    :param tuple g_params: per sample, the list of transform parameters used for Reynolds
        averaging, or ``None`` without a transform.
    :param bool training: whether the draw was made in training mode (selects ``transform``
        or ``eval_transform`` when it is replayed).
    """

    masks: tuple[Tensor, ...]
    g_params: tuple[list[dict[str, Any]] | None, ...]
    training: bool


class _Record(NamedTuple):
    output: weakref.ReferenceType
    explicit: bool
    draw: SplittingDraw


def check_draw(draw: SplittingDraw, batch: int) -> SplittingDraw:
    r"""Raise :class:`ValueError` unless the masks of ``draw`` fit a batch of ``batch``.

    :param SplittingDraw draw: a recorded draw.
    :param int batch: the batch size of the measurement it is used with.
    :return: (:class:`SplittingDraw`) ``draw``.
    """
    size = draw.masks[0].size(0)
    if size not in (1, batch):
        raise ValueError(
            f"Expected the recorded splitting masks to have batch size {batch} (or 1) like "
            f"`y`, but got {size} (was the model replicated across devices by "
            "DataParallel? Use DistributedDataParallel)."
        )
    return draw


def find_splitting_model(model: object) -> EquivariantSplittingModel | None:
    r"""Find the :class:`EquivariantSplittingModel` inside a (possibly wrapped) model.

    The model itself is returned if it is one; otherwise its attributes ``module``
    (``DataParallel``/``DistributedDataParallel``), ``_orig_mod`` (``torch.compile``) and
    ``model`` (deepinv wrappers such as the one of :class:`deepinv.loss.R2RLoss`) are searched,
    depth first, in that order, at most 8 levels deep.

    :param object model: the model handed to the loss (or to ``adapt_model``).
    :return: the splitting model, or ``None`` when there is none.

    |sep|

    :Example:

    >>> import torch
    >>> import deepinv as dinv
    >>> gen = dinv.physics.generator.BernoulliSplittingMaskGenerator((1, 8, 8), 0.9)
    >>> inner = dinv.models.ArtifactRemoval(dinv.models.MedianFilter())
    >>> split = EquivariantSplittingModel(inner, gen)
    >>> find_splitting_model(torch.nn.DataParallel(split)) is split
    True
    >>> find_splitting_model(inner) is None
    True
    """
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(model, 0)]
    while stack:
        obj, depth = stack.pop()
        if obj is None or id(obj) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(obj))
        if isinstance(obj, EquivariantSplittingModel):
            return obj
        children = [getattr(obj, name, None) for name in _WRAPPER_ATTRIBUTES]
        stack.extend((child, depth + 1) for child in reversed(children))
    return None


class EquivariantSplittingModel(Reconstructor):
    r"""Reconstruct from a random split of the measurement, optionally Reynolds-averaged.

    With a splitting mask :math:`M_1` drawn by ``mask_generator`` (a subset of the physics
    mask when the physics has one), :math:`y_1 = M_1 y` and :math:`A_1 = M_1 A`, the output is

    .. math::

        R(y, A) = \frac{1}{N}\sum_{i=1}^{N} \frac{1}{|\mathcal{G}|}\sum_{g\in\mathcal{G}}
        T_g \tilde{R}\big(y_1^{(i)}, A_1^{(i)} T_g\big)

    where :math:`\tilde{R}` is ``model``, :math:`\mathcal{G}` the parameters drawn by the
    transform (no averaging without one), :math:`N = 1` in training mode and
    :math:`N =` ``eval_n_samples`` in evaluation mode (``transform`` in training mode,
    ``eval_transform`` in evaluation mode). This is what deepinv builds from
    ``SplittingLoss.SplittingModel`` and :class:`deepinv.models.EquivariantReconstructor`, in one
    module that also records each draw (masks and transform parameters) with its output, so that
    :class:`deepinv_icrf.loss.EquivariantSplittingLoss` finds the draw that produced ``x_net``
    and can re-evaluate the same function at a perturbed measurement (:meth:`replay`), as the
    divergence of :class:`deepinv.loss.SureGaussianLoss` needs.

    Gradients are enabled in training mode and disabled in evaluation mode, as in deepinv.

    :param torch.nn.Module model: the base reconstructor :math:`\tilde{R}`, called as
        ``model(y, physics)``.
    :param deepinv.physics.generator.PhysicsGenerator mask_generator: the splitting mask
        generator, e.g. :class:`deepinv.physics.generator.BernoulliSplittingMaskGenerator`;
        ``step(batch_size, input_mask=...)`` must return ``{"mask": (B, C or 1, H, W)}``.
    :param deepinv.transform.Transform, None transform: transforms for Reynolds averaging in
        training mode (default ``None``: no averaging).
    :param deepinv.transform.Transform, None eval_transform: transforms in evaluation mode
        (default ``None``: ``transform``). Giving it without ``transform`` is an error.
    :param int eval_n_samples: number of splittings averaged in evaluation mode, ``>= 1``
        (default 5).

    |sep|

    :Example:

    >>> import torch
    >>> import deepinv as dinv
    >>> physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    >>> gen = dinv.physics.generator.BernoulliSplittingMaskGenerator(
    ...     (1, 8, 8), split_ratio=0.9, rng=torch.Generator().manual_seed(0)
    ... )
    >>> model = EquivariantSplittingModel(
    ...     dinv.models.ArtifactRemoval(dinv.models.MedianFilter()), gen, eval_n_samples=3
    ... )
    >>> y = physics(torch.ones(2, 1, 8, 8))
    >>> x_net = model(y, physics)
    >>> len(model.get_masks()), tuple(x_net.shape)
    (1, (2, 1, 8, 8))
    >>> bool((model.get_masks()[0] <= physics.mask).all())  # a split of the measured pixels
    True
    >>> _ = model.eval()
    >>> x_avg = model(y, physics)
    >>> len(model.get_masks())  # evaluation averages eval_n_samples splittings
    3
    """

    def __init__(
        self,
        model: nn.Module,
        mask_generator: PhysicsGenerator,
        *,
        transform: Transform | None = None,
        eval_transform: Transform | None = None,
        eval_n_samples: int = 5,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(
                f"Expected `model` to be a callable reconstructor, but got "
                f"{type(model).__name__}."
            )
        if not isinstance(mask_generator, PhysicsGenerator):
            raise TypeError(
                "Expected `mask_generator` to be a deepinv PhysicsGenerator, but got "
                f"{type(mask_generator).__name__}."
            )
        for name, value in (
            ("transform", transform),
            ("eval_transform", eval_transform),
        ):
            if value is not None and not isinstance(value, Transform):
                raise TypeError(
                    f"Expected `{name}` to be a deepinv Transform or None, but got "
                    f"{type(value).__name__}."
                )
        if eval_transform is not None and transform is None:
            raise ValueError(
                "Expected `transform` to be given when `eval_transform` is given, but got "
                "transform=None."
            )
        if (
            isinstance(eval_n_samples, bool)
            or not isinstance(eval_n_samples, int)
            or eval_n_samples < 1
        ):
            raise ValueError(
                f"Expected `eval_n_samples` to be an int >= 1, but got {eval_n_samples!r}."
            )
        self.model = model
        self.mask_generator = mask_generator
        self.transform = transform
        self.eval_transform = transform if eval_transform is None else eval_transform
        self.eval_n_samples = eval_n_samples
        self._records: list[_Record] = []

    def __getstate__(self) -> dict[str, Any]:
        # Recorded draws belong to outputs of this object only: copies start without them.
        state = self.__dict__.copy()
        state["_records"] = []
        return state

    def _transform_for(self, training: bool) -> Transform | None:
        return self.transform if training else self.eval_transform

    # Random draws run eagerly under torch.compile (data-dependent shapes, generators).
    @torch.compiler.disable
    def _draw_mask(self, batch: int, input_mask: Tensor | None) -> Tensor:
        return self.mask_generator.step(batch, input_mask=input_mask)["mask"]

    @staticmethod
    @torch.compiler.disable
    def _draw_params(transform: Transform, x0: Tensor) -> list[dict[str, Any]]:
        return transform.iterate_params(transform.get_params(x0))

    def _reconstruct_split(
        self,
        y: Tensor,
        physics: Physics,
        mask: Tensor,
        transform: Transform | None,
        g_params: list[dict[str, Any]] | None,
    ) -> tuple[Tensor, list[dict[str, Any]] | None]:
        r"""Reconstruct from ``M y`` (Reynolds-averaged); draw ``g_params`` when ``None``."""
        y1, physics1 = SplittingLoss.split(mask, y, physics)
        if transform is None:
            return self.model(y1, physics1), None
        if g_params is None:
            g_params = self._draw_params(transform, physics1.A_adjoint(y1))
        terms = []
        for g in g_params:
            virtual = VirtualLinearPhysics(
                physics=physics1, transform=transform, g_params=g
            )
            terms.append(transform.transform(self.model(y1, virtual), **g))
        return torch.stack(terms, dim=1).mean(dim=1), g_params

    def forward(
        self, y: Tensor, physics: Physics, update_parameters: bool | None = None
    ) -> Tensor:
        r"""Split, reconstruct and average; record the draw with the output.

        :param torch.Tensor y: measurement ``(B, C, ..., H, W)``.
        :param deepinv.physics.Physics physics: its physics; its ``mask`` (if any) is split.
        :param bool, None update_parameters: ``True`` records the draw as *the* one for the
            loss (deepinv's ``Trainer`` passes it), ``None`` (default) records it too, at lower
            priority (wrappers such as ``DataParallel`` or ``torch.compile`` hide this argument
            from the ``Trainer``), ``False`` does not record.
        :return: (:class:`torch.Tensor`) the reconstruction.
        """
        training = self.training
        n = 1 if training else self.eval_n_samples
        transform = self._transform_for(training)
        input_mask = getattr(physics, "mask", None)
        masks: list[Tensor] = []
        params: list[list[dict[str, Any]] | None] = []
        with torch.set_grad_enabled(training):
            out: Tensor | float = 0.0
            for _ in range(n):
                mask = self._draw_mask(y.size(0), input_mask)
                x_hat, g = self._reconstruct_split(y, physics, mask, transform, None)
                out = out + x_hat / n
                masks.append(mask)
                params.append(g)
        if update_parameters is not False:
            self._record(
                out,
                bool(update_parameters),
                SplittingDraw(tuple(masks), tuple(params), training),
            )
        return out

    @torch.compiler.disable
    def _record(self, out: Tensor, explicit: bool, draw: SplittingDraw) -> None:
        self._records.append(_Record(weakref.ref(out), explicit, draw))
        del self._records[:-_MAX_RECORDS]

    def replay(self, y: Tensor, physics: Physics, draw: SplittingDraw) -> Tensor:
        r"""Evaluate the reconstruction of a recorded draw at another measurement.

        Same masks and same transform parameters as the forward pass that made ``draw``, so
        ``replay(y, physics, draw)`` equals that pass's output for the same ``y``, and
        ``replay(y + d, physics, draw)`` is the same function at a perturbed measurement.

        :param torch.Tensor y: measurement ``(B, C, ..., H, W)``.
        :param deepinv.physics.Physics physics: its (unsplit) physics.
        :param SplittingDraw draw: a draw recorded by :meth:`forward` (see :meth:`find_draw`).
        :return: (:class:`torch.Tensor`) the reconstruction.
        """
        check_draw(draw, y.size(0))
        transform = self._transform_for(draw.training)
        n = len(draw.masks)
        out: Tensor | float = 0.0
        for mask, g in zip(draw.masks, draw.g_params, strict=True):
            out = out + self._reconstruct_split(y, physics, mask, transform, g)[0] / n
        return out

    def find_draw(self, x_net: Tensor) -> SplittingDraw:
        r"""The recorded draw that produced ``x_net``.

        The record whose output *is* ``x_net`` when there is one; otherwise (``x_net`` went
        through a wrapper that made a new tensor) the latest draw recorded with
        ``update_parameters=True``, else the latest draw.

        :param torch.Tensor x_net: the reconstruction the loss is evaluated at.
        :return: (:class:`SplittingDraw`) the draw.
        """
        if not self._records:
            raise RuntimeError(
                "Expected a recorded splitting draw, but the model has none: call the "
                "adapted model, model(y, physics), before computing the loss."
            )
        for record in reversed(self._records):
            if record.output() is x_net:
                return record.draw
        for record in reversed(self._records):
            if record.explicit:
                return record.draw
        return self._records[-1].draw

    def get_masks(self) -> list[Tensor]:
        r"""The splitting masks of the latest recorded draw (deepinv's ``get_masks``).

        :return: (list) one mask per Monte Carlo sample.
        """
        if not self._records:
            raise RuntimeError(
                "Expected a recorded splitting draw, but the model has none: call the "
                "adapted model, model(y, physics), first."
            )
        return list(self._records[-1].draw.masks)
