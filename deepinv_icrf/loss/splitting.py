r"""Equivariant splitting loss (Sechaud et al.) that composes with deepinv's losses."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from deepinv.loss import Loss, MCLoss
from deepinv.loss.measplit import SplittingLoss
from deepinv.loss.metric import MSE
from deepinv.physics.generator import BernoulliSplittingMaskGenerator, PhysicsGenerator
from deepinv.transform import Transform
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, compute_dtype
from deepinv_icrf.models.splitting import (
    EquivariantSplittingModel,
    SplittingDraw,
    check_draw,
    find_splitting_model,
)

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["EquivariantSplittingLoss"]

_CONSISTENCY_NAMES = ("mc",)
_WRAPPER_ATTRIBUTES = ("module", "_orig_mod", "model")


def _find_attribute(obj: object, name: str) -> Any:
    r"""``obj.name``, searching through model wrappers (``module``, ``_orig_mod``, ``model``)."""
    seen: set[int] = set()
    stack = [obj]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            return getattr(current, name)
        except AttributeError:
            pass
        children = [getattr(current, a, None) for a in _WRAPPER_ATTRIBUTES]
        stack.extend(reversed(children))
    raise AttributeError(
        f"Expected the model to provide `{name}` (directly or through a wrapper), but "
        f"{type(obj).__name__} does not."
    )


class _FrozenSplitModel:
    r"""The ``model`` an inner loss sees: the reconstruction that made ``x_net``, frozen.

    Calling it at ``z`` (a perturbed copy of the split measurement ``y_split`` that the inner
    loss received) evaluates the recorded draw (same masks, same transform parameters) at the
    full measurement ``y + (z - y_split)``, so a SURE divergence is taken along one function.
    ``get_corruption`` (:class:`deepinv.loss.R2RLoss`) returns the wrapper's re-corrupted
    measurement split by the term's mask; every other attribute comes from the model given to
    the loss.
    """

    def __init__(
        self,
        split_model: EquivariantSplittingModel,
        draw: SplittingDraw,
        y: Tensor,
        physics: Physics,
        y_split: Tensor,
        mask: Tensor,
        outer: object,
    ) -> None:
        self._split_model = split_model
        self._draw = draw
        self._y = y
        self._physics = physics
        self._y_split = y_split
        self._mask = mask
        self._outer = outer

    def __call__(
        self, y: Tensor, physics: Physics | None = None, **kwargs: Any
    ) -> Tensor:
        # ``physics`` is the split physics of the term: the replay re-splits the full one.
        return self._split_model.replay(
            self._y + (y - self._y_split), self._physics, self._draw
        )

    @property
    def training(self) -> bool:
        return self._split_model.training

    def get_corruption(self) -> Tensor:
        corruption = _find_attribute(self._outer, "get_corruption")()
        return SplittingLoss.split(self._mask, corruption)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_outer", "_split_model"):
            raise AttributeError(name)
        return _find_attribute(self._outer, name)


def _per_sample(value: Tensor, batch: int, name: str) -> Tensor:
    r"""A loss value as ``(B,)``: scalars (batch means) are broadcast to every sample."""
    if value.numel() == 1:
        return value.reshape(()).expand(batch)
    if value.shape != (batch,):
        raise ValueError(
            f"Expected `{name}` to return a scalar or shape ({batch},), but got shape "
            f"{tuple(value.shape)}."
        )
    return value


class EquivariantSplittingLoss(Loss):
    r"""Equivariant splitting loss: consistency on one split, prediction on the other.

    Implements the loss of Sechaud et al. with the semantics of
    :class:`deepinv.loss.EquivariantSplittingLoss`:

    .. math::

        \mathcal{L}_{\mathrm{ES}}(y, A, R) = \mathbb{E}_g \mathbb{E}_{M_1}
        \Big\{ \frac{\ell_1(A_1 R(y_1, A_1), y_1)}{\overline{M_1}}
        + \frac{\ell_2(A_2 R(y_1, A_1), y_2)}{\overline{M_2}} \Big\}

    with :math:`A T_g = [A_1^\top, A_2^\top]^\top` split by a random mask :math:`M_1` of
    ``mask_generator`` (a subset of the physics mask :math:`M`, :math:`M_2 = M - M_1`,
    :math:`\overline{M_i}` the mean of :math:`M_i` over the batch), :math:`R` the
    Reynolds-averaged reconstructor of :class:`deepinv_icrf.models.EquivariantSplittingModel`,
    :math:`\ell_1` the consistency loss and :math:`\ell_2` the prediction loss. At evaluation the
    reconstruction averages ``eval_n_samples`` splittings and the terms average over their masks.

    Differences from deepinv's class:

    - ``consistency_loss=None`` switches the consistency term off (the default, ``"mc"``, is
      :class:`deepinv.loss.MCLoss` with :class:`deepinv.metric.MSE`).
    - Inner losses that use the model get a frozen view of it: :class:`deepinv.loss.SureGaussianLoss`
      re-evaluates the reconstruction with the *same* masks and transform parameters that made
      ``x_net`` (one splitting per step for the divergence), and :class:`deepinv.loss.R2RLoss`
      gets the re-corrupted measurement split like its target. ``adapt_model`` of both inner
      losses is called.
    - The splitting model is found by unwrapping the model handed to the loss (``module``,
      ``_orig_mod``, ``model``), not through a registry: deep copies, ``DataParallel``,
      ``torch.compile`` and repeated ``adapt_model`` calls (no double wrapping) work.
    - The value is ``(B,)`` (inner losses that return a batch mean are broadcast).

    Where deepinv's class works it gives the same value for the same masks and transforms.
    The wrapper records, with each output, the draw that made it; the loss uses the draw whose
    output is ``x_net`` (else the latest recorded with ``update_parameters=True``, else the
    latest). ``DataParallel`` replicating the model across several GPUs is not supported (the
    gathered output has no recorded draw of the whole batch; use DDP).

    :param deepinv.physics.generator.PhysicsGenerator, None mask_generator: the splitting
        distribution (default ``None``: a
        :class:`deepinv.physics.generator.BernoulliSplittingMaskGenerator` of ``img_size`` with
        ``split_ratio=0.9``, pixelwise).
    :param deepinv.loss.Loss, str, None consistency_loss: the consistency term :math:`\ell_1`;
        ``"mc"`` (default) for ``MCLoss(metric=MSE())``, ``None`` for no consistency term.
    :param deepinv.loss.Loss, None prediction_loss: the prediction term :math:`\ell_2` (default
        ``None``: ``MCLoss(metric=MSE())``).
    :param int eval_n_samples: splittings averaged at evaluation, ``>= 1`` (default 5).
    :param deepinv.transform.Transform, None transform: transforms for Reynolds averaging in
        training mode (default ``None``: no averaging).
    :param deepinv.transform.Transform, None eval_transform: transforms in evaluation mode
        (default ``None``: ``transform``); requires ``transform``.
    :param tuple[int, ...], None img_size: ``(C, H, W)`` of the default mask generator; required
        without ``mask_generator``, ignored (with a warning) with one.

    |sep|

    :Example:

    >>> import torch
    >>> import deepinv as dinv
    >>> physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    >>> loss = EquivariantSplittingLoss(img_size=(1, 8, 8), consistency_loss=None)
    >>> zero = dinv.models.ArtifactRemoval(lambda x, sigma: 0 * x)
    >>> model = loss.adapt_model(zero)
    >>> y = physics(torch.ones(2, 1, 8, 8))
    >>> x_net = model(y, physics, update_parameters=True)
    >>> value = loss(x_net=x_net, y=y, physics=physics, model=model)
    >>> tuple(value.shape)
    (2,)
    >>> round(float(value.mean()), 6)  # mean(|M_2 y|^2) / mean(M_2) with y = 1 on M
    1.0
    """

    def __init__(
        self,
        *,
        mask_generator: PhysicsGenerator | None = None,
        consistency_loss: Loss | str | None = "mc",
        prediction_loss: Loss | None = None,
        eval_n_samples: int = 5,
        transform: Transform | None = None,
        eval_transform: Transform | None = None,
        img_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(consistency_loss, str):
            check_in(consistency_loss, "consistency_loss", _CONSISTENCY_NAMES)
            consistency_loss = MCLoss(metric=MSE())
        elif consistency_loss is not None and not isinstance(consistency_loss, Loss):
            raise TypeError(
                "Expected `consistency_loss` to be a deepinv Loss, 'mc' or None, but got "
                f"{type(consistency_loss).__name__}."
            )
        if prediction_loss is None:
            prediction_loss = MCLoss(metric=MSE())
        elif not isinstance(prediction_loss, Loss):
            raise TypeError(
                "Expected `prediction_loss` to be a deepinv Loss or None, but got "
                f"{type(prediction_loss).__name__}."
            )
        if mask_generator is None:
            if img_size is None:
                raise ValueError(
                    "Expected `mask_generator` or `img_size` to be given, but got neither."
                )
            mask_generator = BernoulliSplittingMaskGenerator(
                img_size=tuple(img_size), split_ratio=0.9, pixelwise=True
            )
        elif img_size is not None:
            warnings.warn(
                "`img_size` is ignored when `mask_generator` is given.",
                UserWarning,
                stacklevel=2,
            )
        ratio = getattr(mask_generator, "split_ratio", None)
        if isinstance(ratio, (int, float)) and not 0 < ratio < 1:
            raise ValueError(
                f"Expected the splitting mask generator's `split_ratio` in (0, 1), but got "
                f"{ratio!r}: the split leaves nothing to "
                f"{'predict' if ratio >= 1 else 'reconstruct from'}."
            )
        # The model validates the splitting configuration; build one to fail early.
        EquivariantSplittingModel(
            nn.Identity(),
            mask_generator,
            transform=transform,
            eval_transform=eval_transform,
            eval_n_samples=eval_n_samples,
        )
        self.mask_generator = mask_generator
        self.consistency_loss = consistency_loss
        self.prediction_loss = prediction_loss
        self.eval_n_samples = eval_n_samples
        self.transform = transform
        self.eval_transform = transform if eval_transform is None else eval_transform

    def forward(
        self,
        x_net: Tensor,
        y: Tensor,
        physics: Physics,
        model: nn.Module,
        **kwargs: Any,
    ) -> Tensor:
        r"""Compute the equivariant splitting loss.

        :param torch.Tensor x_net: the reconstruction ``(B, C, H, W)`` of the adapted model.
        :param torch.Tensor y: the measurement ``(B, C, ..., H, W)``.
        :param deepinv.physics.Physics physics: its physics.
        :param torch.nn.Module model: the adapted model (possibly wrapped by ``DataParallel``,
            ``torch.compile`` or deepinv wrappers).
        :param kwargs: passed on to the inner losses (e.g. ``x``, ``epoch``).
        :return: (:class:`torch.Tensor`) the loss, shape ``(B,)``, float32 or float64.
        """
        split_model = find_splitting_model(model)
        if split_model is None:
            raise RuntimeError(
                f"Expected `model` to contain an EquivariantSplittingModel, but got "
                f"{type(model).__name__}: adapt it with `adapt_model` first."
            )
        draw = check_draw(split_model.find_draw(x_net), y.size(0))
        dtype = compute_dtype(x_net, y)
        x_net = x_net.to(dtype)
        y = y.to(dtype)
        batch = y.size(0)
        physics_mask = getattr(physics, "mask", 1.0)
        terms = []
        for mask in draw.masks:
            mask1 = mask * physics_mask
            mask2 = physics_mask - mask1
            if not bool((mask2 != 0).any()):  # one check per draw: 0/0 would be NaN
                raise ValueError(
                    "The splitting mask leaves nothing to predict: the prediction split "
                    "(physics mask minus the splitting mask) is empty for the whole batch."
                )
            y2, physics2 = SplittingLoss.split(mask2, y, physics)
            view2 = _FrozenSplitModel(split_model, draw, y, physics, y2, mask2, model)
            value = self.prediction_loss(
                x_net=x_net, y=y2, physics=physics2, model=view2, **kwargs
            )
            value = _per_sample(value, batch, "prediction_loss") / mask2.mean()
            if self.consistency_loss is not None:
                y1, physics1 = SplittingLoss.split(mask1, y, physics)
                view1 = _FrozenSplitModel(
                    split_model, draw, y, physics, y1, mask1, model
                )
                consistency = self.consistency_loss(
                    x_net=x_net, y=y1, physics=physics1, model=view1, **kwargs
                )
                value = value + (
                    _per_sample(consistency, batch, "consistency_loss") / mask1.mean()
                )
            terms.append(value)
        return torch.stack(terms, dim=0).mean(dim=0).to(dtype)

    def adapt_model(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        r"""Wrap a reconstructor for equivariant splitting (once).

        Returns ``model`` unchanged when it already contains an
        :class:`~deepinv_icrf.models.EquivariantSplittingModel` (found through ``module``,
        ``_orig_mod`` and ``model``); otherwise wraps it in one and passes the result to
        ``prediction_loss.adapt_model`` and then ``consistency_loss.adapt_model``.

        :param torch.nn.Module model: the base reconstructor, called as ``model(y, physics)``.
        :return: (:class:`torch.nn.Module`) the adapted model.
        """
        if find_splitting_model(model) is not None:
            return model
        adapted: nn.Module = EquivariantSplittingModel(
            model,
            self.mask_generator,
            transform=self.transform,
            eval_transform=self.eval_transform,
            eval_n_samples=self.eval_n_samples,
        )
        adapted = self.prediction_loss.adapt_model(adapted)
        if self.consistency_loss is not None:
            adapted = self.consistency_loss.adapt_model(adapted)
        return adapted
