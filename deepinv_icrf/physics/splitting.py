r"""Splitting masks over an exposure stack: which entries the reconstructor sees."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from deepinv.physics.generator import PhysicsGenerator
from torch import Tensor

from deepinv_icrf._checks import check_in

__all__ = ["ExposureSplittingMaskGenerator", "SPLIT_GRANULARITIES"]

#: What one Bernoulli draw of :class:`ExposureSplittingMaskGenerator` keeps or holds out.
SPLIT_GRANULARITIES = ("entry", "pixel", "exposure")


def _check_size(img_size: object) -> tuple[int, int, int, int]:
    if (
        not isinstance(img_size, Sequence)
        or len(img_size) != 4
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in img_size
        )
    ):
        raise ValueError(
            "Expected `img_size` to be (N, C, H, W), four ints >= 1, but got "
            f"{img_size!r}."
        )
    return tuple(img_size)  # type: ignore[return-value]


class ExposureSplittingMaskGenerator(PhysicsGenerator):
    r"""Random splittings of an exposure stack ``(N, C, H, W)`` into a kept and a held-out part.

    The mask :math:`M_1 \in \{0, 1\}^{N \times C \times H \times W}` marks the entries of the
    stack :math:`y` that the reconstructor sees, :math:`y_1 = M_1 y`; the others,
    :math:`M_2 = 1 - M_1`, are held out and predicted by the splitting loss (for instance
    :class:`deepinv_icrf.loss.EquivariantSplittingLoss`, whose splitting model passes the
    mask to :meth:`step`). One unit is kept or held out at a time, by ``granularity``:

    - ``"entry"``: every code :math:`(n, c, h, w)` on its own;
    - ``"pixel"`` (default): every exposure pixel :math:`(n, h, w)`, all channels together (a
      colour pixel of one exposure is seen or not);
    - ``"exposure"``: whole exposures :math:`n`.

    Exactly :math:`K_1 = \mathrm{round}(\rho K)` of the :math:`K` units of each sample are kept
    (a uniformly random subset, :math:`\rho` = ``split_ratio``), so the kept fraction is
    :math:`K_1 / K` for every sample, and :math:`1 \le K_1 \le K - 1`: the split always leaves
    something to see and something to predict (a :class:`ValueError` says so when the sizes
    make that impossible).

    :param tuple[int, int, int, int] img_size: ``(N, C, H, W)`` of one stack; ``H, W`` may be
        overridden per call with ``img_size=(H, W)`` in :meth:`step`.
    :param float split_ratio: fraction :math:`\rho` of units kept, in :math:`(0, 1)`.
        Default 0.8.
    :param str granularity: ``"entry"``, ``"pixel"`` (default) or ``"exposure"``.
    :param torch.device, str device: device of the masks (and of ``rng``). Default ``"cpu"``.
    :param torch.dtype dtype: dtype of the masks. Default ``torch.float32``.
    :param torch.Generator, None rng: random generator (default ``None``: a new one on
        ``device``); reseed it per call with ``step(seed=...)``.

    |sep|

    :Example:

    >>> gen = ExposureSplittingMaskGenerator((3, 2, 4, 5), split_ratio=0.5)
    >>> mask = gen.step(batch_size=2, seed=0)["mask"]
    >>> tuple(mask.shape)
    (2, 3, 2, 4, 5)
    >>> mask.mean(dim=(1, 2, 3, 4))  # exactly half the stack is kept
    tensor([0.5000, 0.5000])
    >>> bool((mask[:, :, 0] == mask[:, :, 1]).all())  # "pixel": channels together
    True
    """

    def __init__(
        self,
        img_size: Sequence[int],
        split_ratio: float = 0.8,
        granularity: str = "pixel",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, rng=rng)
        self.img_size = _check_size(img_size)
        check_in(granularity, "granularity", SPLIT_GRANULARITIES)
        if isinstance(split_ratio, bool) or not isinstance(split_ratio, (int, float)):
            raise TypeError(
                f"Expected `split_ratio` to be a float, but got {split_ratio!r}."
            )
        if not 0.0 < float(split_ratio) < 1.0:
            raise ValueError(
                f"Expected `split_ratio` to be in (0, 1) (something to see and something "
                f"to predict), but got {split_ratio}."
            )
        self.split_ratio = float(split_ratio)
        self.granularity = granularity
        self.units(self.img_size[2:])  # fail early when the split leaves nothing

    def _unit_shape(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        n, c, _, _ = self.img_size
        if self.granularity == "entry":
            return (n, c, *hw)
        if self.granularity == "pixel":
            return (n, 1, *hw)
        return (n, 1, 1, 1)

    def units(self, hw: Sequence[int] | None = None) -> tuple[int, int]:
        r"""Number of units per sample and number kept, :math:`(K, K_1)`.

        :param tuple[int, int], None hw: image size ``(H, W)`` (default: that of ``img_size``).
        :return: (tuple) :math:`K` and :math:`K_1 = \mathrm{round}(\rho K)`.
        :raises ValueError: when :math:`K_1 = 0` or :math:`K_1 = K` (nothing seen or nothing
            left to predict).
        """
        shape = self._unit_shape(tuple(self.img_size[2:] if hw is None else hw))
        total = 1
        for s in shape:
            total *= s
        kept = round(self.split_ratio * total)
        if kept < 1 or kept > total - 1:
            raise ValueError(
                f"Expected the split to keep at least one and hold out at least one of the "
                f"{total} units ({self.granularity!r} granularity, shape {shape}), but "
                f"split_ratio={self.split_ratio} keeps {kept}: nothing would be "
                f"{'seen' if kept < 1 else 'left to predict'}. Change `split_ratio` or "
                "`granularity`."
            )
        return total, kept

    def step(
        self,
        batch_size: int = 1,
        seed: int | None = None,
        img_size: Sequence[int] | None = None,
        input_mask: Tensor | float | None = None,
        **kwargs: Any,
    ) -> dict[str, Tensor]:
        r"""Draw one splitting mask per sample.

        :param int batch_size: number of masks ``B``. Default 1.
        :param int, None seed: reseed ``rng`` first (same seed, same masks). Default ``None``.
        :param tuple[int, int], None img_size: ``(H, W)`` overriding that of ``img_size``.
        :param torch.Tensor, float, None input_mask: a measurement mask to split (entries where
            it is 0 are never kept); ``None`` or a number: every entry is measured.
        :param kwargs: ignored (deepinv's generator interface).
        :return: (dict) ``{"mask": M_1}`` of shape ``(B, N, C, H, W)``, values 0 and 1.
        """
        self.rng_manual_seed(seed)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or batch_size < 1
        ):
            raise ValueError(
                f"Expected `batch_size` to be an int >= 1, but got {batch_size!r}."
            )
        if img_size is not None:
            if len(img_size) != 2:
                raise ValueError(
                    f"Expected `img_size` to be (H, W), but got {tuple(img_size)!r}."
                )
            hw = (int(img_size[0]), int(img_size[1]))
        else:
            hw = self.img_size[2:]
        total, kept = self.units(hw)
        shape = self._unit_shape(hw)
        scores = torch.rand(batch_size, total, generator=self.rng, device=self.device)
        order = scores.argsort(dim=1)
        unit_mask = torch.zeros(
            batch_size, total, device=self.device, dtype=self.factory_kwargs["dtype"]
        )
        unit_mask.scatter_(1, order[:, :kept], 1.0)
        n, c = self.img_size[:2]
        mask = unit_mask.view(batch_size, *shape).expand(batch_size, n, c, *hw)
        mask = mask.contiguous()
        if isinstance(input_mask, Tensor):
            mask = mask * input_mask.to(device=mask.device, dtype=mask.dtype)
        return {"mask": mask}
