r"""Multi-process ICRF fitting and training with :mod:`torch.distributed`.

Run under ``torchrun`` (one process per GPU with NCCL, or CPU processes with gloo):

.. code-block:: bash

    torchrun --nproc_per_node=2 -m deepinv_icrf.training.distributed demo --out icrf.json

Two ways to split the work, both giving the one-process curve (to float rounding):

- ``shard="pixels"``: each rank takes a band of rows of every stack, builds the joint code
  histograms of its band (:func:`~deepinv_icrf.functional.build_linearity_histogram`), and
  the bands' statistics are summed across ranks
  (:meth:`~deepinv_icrf.functional.LinearityHistogram.merge`): the sufficient statistics of
  the whole stack, on every rank. The curve fit then runs on them identically everywhere.
- ``shard="stacks"``: each rank takes its share of the stacks of a batch ``(B, N, C, H, W)``
  (round robin, as :class:`deepinv.distributed.DistributedContext` shards), evaluates their
  linearity, and the gradients are summed across ranks (:func:`all_reduce_gradients`) before
  every optimizer step, as :class:`~torch.nn.parallel.DistributedDataParallel` does (summed,
  not averaged: the objective is a sum over stacks), so every rank takes the same step.

:class:`~deepinv_icrf.training.ICRFTrainer` takes ``distributed=True`` for the same gradient
reduction with a :class:`~torch.utils.data.distributed.DistributedSampler` data loader
(:func:`distributed_loader`); reconstruction networks trained with :class:`deepinv.Trainer`
are wrapped with :func:`wrap_ddp`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, check_int
from deepinv_icrf.bracket import (
    as_stack_tensor,
    check_bit_depth,
    check_exposure_times,
    codes_to_unit,
    image_codes,
)
from deepinv_icrf.functional.histogram import (
    BIT_DEPTHS,
    LinearityHistogram,
    build_linearity_histogram,
    detect_bit_depth,
    linearity_from_histogram,
)
from deepinv_icrf.functional.penalties import (
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.models.icrf import ICRF

__all__ = [
    "SHARDS",
    "rank_and_world",
    "shard_indices",
    "shard_rows",
    "all_reduce_gradients",
    "broadcast_parameters",
    "gather_histogram",
    "distributed_loader",
    "wrap_ddp",
    "fit_icrf_distributed",
    "main",
]

SHARDS = ("pixels", "stacks")


def rank_and_world() -> tuple[int, int]:
    r"""This process's rank and the number of processes (``(0, 1)`` without a process group).

    :return: (tuple) ``(rank, world_size)``.

    :Example:

    >>> rank_and_world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    r"""The items ``k`` of ``range(n)`` with :math:`k \bmod \text{world} = \text{rank}`
    (round robin, as :meth:`deepinv.distributed.DistributedContext.local_indices`).

    :param int n: number of items.
    :param int rank: this process's rank, in ``[0, world)``.
    :param int world: number of processes, ``>= 1``.
    :return: (list) the indices of this rank.

    :Example:

    >>> shard_indices(5, 1, 2)
    [1, 3]
    """
    _check_rank(rank, world)
    return list(range(rank, n, world))


def shard_rows(height: int, rank: int, world: int) -> slice:
    r"""The contiguous band of rows :math:`[\lfloor rH/W \rfloor, \lfloor (r+1)H/W \rfloor)`
    of rank :math:`r` among :math:`W` processes.

    :param int height: number of rows :math:`H`, ``>= world``.
    :param int rank: this process's rank.
    :param int world: number of processes.
    :return: (slice) the rows of this rank.

    :Example:

    >>> [shard_rows(13, r, 2) for r in range(2)]
    [slice(0, 6, None), slice(6, 13, None)]
    """
    _check_rank(rank, world)
    if height < world:
        raise ValueError(
            f"Expected at least one row per process to shard pixels, but got {height} row(s) "
            f"for {world} processes; use fewer processes or shard='stacks'."
        )
    return slice(rank * height // world, (rank + 1) * height // world)


def _check_rank(rank: int, world: int) -> None:
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int)):
        raise ValueError(
            f"Expected an int world >= 1 and an int rank, got {rank}, {world}."
        )
    if not 0 <= rank < world:
        raise ValueError(f"Expected `rank` in [0, {world}), but got {rank}.")


def all_reduce_gradients(params: Iterable[nn.Parameter], average: bool = False) -> None:
    r"""Sum (or average) the gradients of ``params`` over every process, in place.

    .. math::

        g \leftarrow \sum_{r} g_r \quad\text{or}\quad \frac{1}{W} \sum_r g_r

    Parameters without a gradient take part with zeros (every rank must make the same
    collective calls). One flattened all-reduce per dtype and device. Nothing happens
    without a process group.

    :param Iterable params: the parameters (e.g. ``model.parameters()``).
    :param bool average: divide by the number of processes (``DistributedDataParallel``'s
        convention, for a mean over equal shards); default ``False`` (sum).

    :Example:

    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> p.grad = torch.tensor([1.0, 2.0])
    >>> all_reduce_gradients([p])  # one process: unchanged
    >>> p.grad
    tensor([1., 2.])
    """
    _, world = rank_and_world()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    groups: dict[tuple, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if average:
            flat /= world
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    r"""Copy the parameters and buffers of rank ``src`` to every process (no-op alone).

    :param torch.nn.Module module: the module.
    :param int src: the source rank (default 0).
    """
    if rank_and_world()[1] == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def gather_histogram(
    hist: LinearityHistogram, device: torch.device | str | None = None
) -> LinearityHistogram:
    r"""The histogram of the whole stack from every rank's histogram of its pixel shard.

    Counts and value weights of the shards add up (:meth:`LinearityHistogram.merge`):
    :math:`n[p, c, a, b] = \sum_r n_r[p, c, a, b]`. Every rank gets the merged statistics.

    :param LinearityHistogram hist: this rank's histogram (same samples, exposures and bit
        depth on every rank; rows or pixels split).
    :param torch.device, str, None device: where to put the result (default: ``hist``'s).
    :return: (LinearityHistogram) the merged histogram (``hist`` itself alone).
    """
    device = hist.device if device is None else torch.device(device)
    if rank_and_world()[1] == 1:
        return hist.to(device)
    shards: list[LinearityHistogram | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, hist.to("cpu"))
    return LinearityHistogram.merge(*shards).to(device)


def distributed_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int = 1,
    *,
    shuffle: bool = False,
    seed: int = 0,
    **kwargs,
) -> torch.utils.data.DataLoader:
    r"""A :class:`~torch.utils.data.DataLoader` over this rank's share of ``dataset``
    (:class:`~torch.utils.data.distributed.DistributedSampler`; the whole dataset alone).

    Call ``loader.sampler.set_epoch(epoch)`` each epoch when shuffling.

    :param torch.utils.data.Dataset dataset: the dataset (e.g. exposure stacks).
    :param int batch_size: batch size per process (default 1).
    :param bool shuffle: shuffle (default ``False``).
    :param int seed: shuffling seed, the same on every rank (default 0).
    :param kwargs: other :class:`~torch.utils.data.DataLoader` options.
    :return: (torch.utils.data.DataLoader) the loader.
    """
    rank, world = rank_and_world()
    sampler = torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, **kwargs
    )


def wrap_ddp(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    r"""Wrap a reconstruction network in
    :class:`~torch.nn.parallel.DistributedDataParallel` (unchanged without a process group).

    :func:`~deepinv_icrf.loss.find_icrf` and the splitting losses unwrap ``.module``, so the
    wrapped model works with every loss of the package.

    :param torch.nn.Module model: the model, already on its device.
    :param torch.device, str, None device: the model's CUDA device (``None``: CPU / default).
    :return: (torch.nn.Module) the wrapped model.
    """
    if rank_and_world()[1] == 1:
        return model
    device = None if device is None else torch.device(device)
    ids = [device] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _local_bit_depth(y: Tensor, bit_depth: int | None) -> int:
    r"""The bit depth, detected on this rank's shard and checked equal on every rank."""
    if bit_depth is not None:
        return bit_depth
    bits = detect_bit_depth(y) if y.numel() > 0 else None
    if rank_and_world()[1] > 1:
        every: list[tuple | None] = [None] * dist.get_world_size()
        dist.all_gather_object(every, (y.numel() > 0, bits))
        found = {b for has_data, b in every if has_data}
        if len(found) > 1:
            raise ValueError(
                f"The processes detected different bit depths {sorted(found, key=str)} on "
                "their shards; pass "
                "`bit_depth` explicitly."
            )
        bits = found.pop() if found else None
    if bits is None:
        raise ValueError(
            "Expected `stack` to hold integer codes k / (2**bits - 1) (8 to 16 bits) for the "
            "histogram fit, but its values are continuous; pass `bit_depth`."
        )
    return bits


def fit_icrf_distributed(
    stack: np.ndarray | Tensor,
    exposure_times: Tensor | np.ndarray | Sequence[float],
    *,
    shard: str = "pixels",
    n_points: int = 256,
    parameterization: str = "monotone",
    init: str | Tensor = "gamma",
    steps: int = 300,
    lr: float = 0.05,
    smoothness_weight: float = 1e5,
    relative: bool = True,
    bit_depth: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> ICRF:
    r"""Fit the ICRF of coded exposure stacks on every process of a process group.

    Minimises the objective of ``fit_icrf(method="linearity")`` on the joint code histograms,

    .. math::

        \mathcal{L}(f) = \sum_{b, c} L_{b, c}(f) + \mathrm{range}(f) [+ \mathrm{mono}(f)]
        + \delta\, \mathrm{smooth}(f),

    with Adam and a cosine learning-rate decay to ``lr / 50``, the stacks split across the
    processes by ``shard`` (see the module's docstring). Without a process group (one
    process), it is the plain histogram fit. Every rank returns the same curve.

    :param numpy.ndarray, torch.Tensor stack: ``uint8``/``uint16`` array ``(N, H, W, C)``, a
        float tensor ``(N, C, H, W)`` or a batch ``(B, N, C, H, W)`` of codes in ``[0, 1]``;
        the same on every rank (each rank takes its shard).
    :param torch.Tensor, numpy.ndarray, list exposure_times: ``(N,)`` or ``(B, N)`` seconds.
    :param str shard: ``"pixels"`` (default: row bands, histograms summed) or ``"stacks"``
        (samples of the batch, gradients summed).
    :param int n_points: samples of the curve (default 256).
    :param str parameterization: ``"monotone"`` (default) or ``"free"``.
    :param str, torch.Tensor init: ``"gamma"`` (default), ``"identity"`` or a ``(C, L)`` curve.
    :param int steps: Adam steps (default 300).
    :param float lr: learning rate (default 0.05).
    :param float smoothness_weight: :math:`\delta` (default 1e5).
    :param bool relative: relative (default) or absolute residuals.
    :param int, None bit_depth: bit depth of the codes (default: detected, the same on every
        rank).
    :param str, torch.device, None device: this rank's device (default: the stack's).
    :param torch.dtype dtype: dtype of the curve parameters and the loss, ``torch.float32``
        (default) or ``torch.float64`` (sums over ranks then match one process to about
        :math:`10^{-12}`).
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF in eval mode.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.data import demo_exposure_times, demo_scene
    >>> from deepinv_icrf.physics import ExposureStack, GammaResponse
    >>> t = demo_exposure_times(4, shortest=1.0)
    >>> y = ExposureStack(t, response=GammaResponse(2.2))(demo_scene(24, 30))[0]
    >>> icrf = fit_icrf_distributed(y, t, steps=100)  # one process here
    >>> truth = GammaResponse(2.2).icrf_curve(256).float()
    >>> bool((icrf.curve.detach()[:, 16:240] - truth[:, 16:240]).abs().max() < 0.05)
    True
    """
    check_in(shard, "shard", SHARDS)
    check_in(dtype, "dtype", (torch.float32, torch.float64))
    check_in(parameterization, "parameterization", ("monotone", "free"))
    check_int(steps, "steps", 1)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"Expected `lr` > 0, but got {lr!r}.")
    check_bit_depth(bit_depth, allowed=BIT_DEPTHS)
    y, _ = as_stack_tensor(stack)
    batch, n, channels, height, _ = y.shape
    times = check_exposure_times(exposure_times, n, batch, distinct=True)
    times = times.detach().to("cpu", torch.float64)
    device = torch.device(device) if device is not None else y.device
    rank, world = rank_and_world()
    if shard == "pixels":
        local, local_times = y[..., shard_rows(height, rank, world), :], times
    else:
        keep = shard_indices(batch, rank, world)
        local, local_times = y[keep], times[keep]
    local = local.to(device=device, dtype=torch.float32)
    local_times = local_times.to(device=device, dtype=torch.float32)
    bits = _local_bit_depth(local, bit_depth)
    hist = None
    if local.shape[0] > 0:
        hist = build_linearity_histogram(local, local_times, bit_depth=bits)
    if shard == "pixels":
        hist = gather_histogram(hist, device)

    icrf = ICRF(
        channels=channels,
        n_points=n_points,
        parameterization=parameterization,
        init=init,
        bit_depth=bits,
    ).to(device=device, dtype=dtype)
    broadcast_parameters(icrf)
    optimizer = torch.optim.Adam(icrf.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=lr * 0.02
    )
    # with shard="stacks" the penalties are counted once (rank 0), the linearity of each
    # stack on its rank; summed gradients are those of the whole objective
    penalties_here = shard == "pixels" or rank == 0
    icrf.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        curve = icrf.curve
        total = curve.sum() * 0.0
        if hist is not None:
            total = (
                total + linearity_from_histogram(curve, hist, relative=relative).sum()
            )
        if penalties_here:
            total = total + range_penalty(curve).sum()
            if parameterization == "free":
                total = total + monotonicity_penalty(curve).sum()
            if smoothness_weight > 0:
                total = total + smoothness_weight * smoothness_penalty(curve).sum()
        total.backward()
        if shard == "stacks":
            all_reduce_gradients(icrf.parameters())
        optimizer.step()
        scheduler.step()
    icrf.eval()
    return icrf


# ---------------------------------------------------------------------------- entry point
def _read_input(path: str, times: str | None) -> tuple[np.ndarray | Tensor, object]:
    if path == "demo":
        from deepinv_icrf.data import demo_exposure_times, demo_scene
        from deepinv_icrf.physics import ExposureStack

        t = demo_exposure_times(5, shortest=1.0)
        return ExposureStack(t, response="srgb")(demo_scene(96, 128))[0], t
    parsed = None
    if times is not None:
        parsed = [float(v) for v in times.split(",") if v.strip()]
    if os.path.isdir(path):
        from deepinv_icrf.data import read_exposure_folder

        folder = read_exposure_folder(path)
        return folder.images, parsed if parsed is not None else folder.exposure_times
    if path.endswith(".npy"):
        data = np.load(path, allow_pickle=False)
        if parsed is None:
            raise ValueError("Expected --times with a .npy stack.")
        if data.ndim == 5:  # (B, N, H, W, C) integer codes of several stacks
            codes, bits = image_codes(data, "stack", float_arrays=False)
            y = codes_to_unit(codes, bits).permute(0, 1, 4, 2, 3)
            return y.contiguous(), parsed
        return data, parsed
    raise ValueError(f"Expected a folder, a .npy stack or 'demo', but got {path!r}.")


def main(argv: Sequence[str] | None = None) -> int:
    r"""``python -m deepinv_icrf.training.distributed INPUT --out icrf.json``, under
    ``torchrun``: fit on every process, rank 0 writes the curve (atomically).

    ``INPUT`` is a folder of bracketed photos, a ``.npy`` stack (``(N, H, W, C)`` or a batch
    ``(B, N, H, W, C)`` of ``uint8``/``uint16`` codes, with ``--times``) or ``demo``.
    Exit code 0, or 2 with one ``error:`` line for bad input.
    """
    from deepinv.distributed import DistributedContext

    p = argparse.ArgumentParser(prog="python -m deepinv_icrf.training.distributed")
    p.add_argument("input", help="folder, .npy stack or 'demo'")
    p.add_argument("--out", required=True, help="curve file (JSON) written by rank 0")
    p.add_argument("--times", default=None, help="exposure times, comma separated")
    p.add_argument("--shard", choices=SHARDS, default="pixels")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--n-points", type=int, default=256)
    p.add_argument("--smoothness-weight", type=float, default=1e5)
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU (gloo)")
    args = p.parse_args(argv)
    mode = "cpu" if args.cpu else None
    with DistributedContext(backend=args.backend, device_mode=mode) as ctx:
        try:
            stack, times = _read_input(args.input, args.times)
            icrf = fit_icrf_distributed(
                stack,
                times,
                shard=args.shard,
                steps=args.steps,
                lr=args.lr,
                n_points=args.n_points,
                smoothness_weight=args.smoothness_weight,
                device=ctx.device,
            )
        except (ValueError, TypeError, OSError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        if ctx.rank == 0:
            icrf.save(
                args.out,
                world_size=ctx.world_size,
                shard=args.shard,
                steps=args.steps,
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
