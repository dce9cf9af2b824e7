r"""A :class:`deepinv.Trainer` for ICRF fitting: per-channel optimizers and early stopping.

:class:`ICRFTrainer` trains an :class:`~deepinv_icrf.models.ICRF` (the "model") on exposure
stacks through deepinv's training loop, with clair-torch's optimisation scheme on top:

- one optimizer per channel (Adam, lr ``1e-3``, on :meth:`ICRF.channel_parameters`), or one
  optimizer for every parameter;
- per-channel learning-rate schedulers (any :mod:`torch.optim.lr_scheduler`, including
  ``ReduceLROnPlateau`` driven by the channel's epoch loss);
- per-channel early stopping: a channel whose epoch loss has not improved for ``patience``
  epochs is frozen (its parameters are no longer stepped), and training ends when every
  channel is frozen;
- every term of a :class:`~deepinv_icrf.loss.WeightedLossScheduler` logged by name
  (:class:`~deepinv_icrf.training.TermLoggingTrainer`), plus the loss of each channel;
- the curve RMSE against a known true curve, per channel, after every epoch;
- checkpoints through deepinv's ``save_path`` / ``ckpt_pretrained`` (every per-channel
  optimizer and scheduler state, the early-stopping state, the histories and the random
  number generator states are saved), written atomically, and ``resume=True`` to continue from
  the newest checkpoint: an interrupted fit resumed this way ends with the same curve as an
  uninterrupted one (bit for bit on CPU);
- plots of the curves and of the loss terms (:func:`plot_training`).
"""

from __future__ import annotations

import math
import os
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deepinv.utils import get_timestamp
from torch import Tensor, nn

from deepinv_icrf._checks import check_float, check_in, check_shape
from deepinv_icrf.io import atomic_path, atomic_write
from deepinv_icrf.loss import (
    EndpointLoss,
    MonotonicityLoss,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
    WeightedLossScheduler,
)
from deepinv_icrf.loss._utils import find_icrf
from deepinv_icrf.loss.scheduler import (
    _call_per_channel,
    _channel_sum,
    _has_per_channel,
)
from deepinv_icrf.training.logging import TermLoggingTrainer

__all__ = [
    "ICRFTrainer",
    "ChannelOptimizer",
    "icrf_objective",
    "plot_training",
    "find_checkpoint",
]

OPTIMIZER_MODES = ("per_channel", "single")
_CKPT_PATTERN = re.compile(r"^ckp_(\d+)\.pth\.tar$")


def icrf_objective(
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    delta: float = 1.0,
    **linearity_options: Any,
) -> WeightedLossScheduler:
    r"""clair-torch's ICRF objective as one :class:`~deepinv_icrf.loss.WeightedLossScheduler`.

    .. math::

        \mathcal{L} = \sum_c L_c + \alpha\,\mathrm{mono} + \beta\,\mathrm{range}
        + \gamma\,\mathrm{endpoint} + \delta\,\mathrm{smooth}

    with the terms named ``"linearity"``, ``"monotonicity"``, ``"range"``, ``"endpoint"`` and
    ``"smoothness"`` (their log keys in :class:`ICRFTrainer`).

    :param float alpha: weight of the monotonicity penalty, default 1.
    :param float beta: weight of the range penalty, default 1.
    :param float gamma: weight of the endpoint penalty, default 1.
    :param float delta: weight of the smoothness penalty, default 1.
    :param linearity_options: options of :class:`~deepinv_icrf.loss.RadiometricLinearityLoss`
        (``relative``, ``exposure_ratio_threshold``, ``path``, ...).
    :return: (:class:`~deepinv_icrf.loss.WeightedLossScheduler`) the objective.

    |sep|

    :Example:

    >>> loss = icrf_objective(delta=100.0)
    >>> loss.names
    ['linearity', 'monotonicity', 'range', 'endpoint', 'smoothness']
    >>> loss.weights
    [1.0, 1.0, 1.0, 1.0, 100.0]
    """
    return WeightedLossScheduler(
        {
            "linearity": RadiometricLinearityLoss(**linearity_options),
            "monotonicity": MonotonicityLoss(),
            "range": RangeLoss(),
            "endpoint": EndpointLoss(),
            "smoothness": SmoothnessLoss(),
        },
        weights={
            "monotonicity": alpha,
            "range": beta,
            "endpoint": gamma,
            "smoothness": delta,
        },
    )


class ChannelOptimizer:
    r"""Several optimizers driven as one, with channels that can be frozen.

    Looks like one :class:`torch.optim.Optimizer` to :class:`deepinv.Trainer` (``step``,
    ``zero_grad``, ``param_groups``, ``state_dict``, ``load_state_dict``), so deepinv saves and
    restores every inner optimizer's state in its checkpoints.

    - ``mode="per_channel"``: ``optimizers[c]`` updates the parameters of channel ``c`` only;
      a frozen channel's optimizer is not stepped.
    - ``mode="single"``: one optimizer for every parameter; before its step, the gradients of
      the frozen channels' parameters are dropped (set to ``None``), so optimizers such as Adam
      leave them (and their moments) untouched.

    :param list[torch.optim.Optimizer] optimizers: the optimizers (``C`` of them per channel,
        or one).
    :param list[list[torch.nn.Parameter]] channel_params: the parameters of each channel.
    :param str mode: ``"per_channel"`` or ``"single"``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=2, n_points=5)
    >>> groups = [icrf.channel_parameters(c) for c in range(2)]
    >>> opt = ChannelOptimizer([torch.optim.Adam(g, lr=0.1) for g in groups], groups)
    >>> opt.freeze(1)
    >>> icrf.curve.pow(2).sum().backward()
    >>> before = icrf.curve.detach().clone()
    >>> opt.step()
    >>> bool(torch.equal(icrf.curve[1], before[1])), bool(torch.equal(icrf.curve[0], before[0]))
    (True, False)
    """

    def __init__(
        self,
        optimizers: Sequence[torch.optim.Optimizer],
        channel_params: Sequence[Sequence[nn.Parameter]],
        mode: str = "per_channel",
    ) -> None:
        check_in(mode, "mode", OPTIMIZER_MODES)
        optimizers = list(optimizers)
        channels = len(channel_params)
        expected = channels if mode == "per_channel" else 1
        if len(optimizers) != expected:
            raise ValueError(
                f"Expected {expected} optimizer(s) for mode {mode!r} with {channels} channels, "
                f"but got {len(optimizers)}."
            )
        for k, opt in enumerate(optimizers):
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(
                    f"Expected `optimizers[{k}]` to be a torch.optim.Optimizer, but got "
                    f"{type(opt).__name__}."
                )
        if mode == "per_channel":
            for c, opt in enumerate(optimizers):
                own = {id(p) for p in channel_params[c]}
                if any(id(p) not in own for g in opt.param_groups for p in g["params"]):
                    raise ValueError(
                        f"Expected `optimizers[{c}]` to update the parameters of channel {c} "
                        "only (`icrf.channel_parameters(c)`), but it holds others."
                    )
        self.optimizers = optimizers
        self.channel_params = [list(p) for p in channel_params]
        self.mode = mode
        self.active = [True] * channels

    @property
    def channels(self) -> int:
        r"""Number of channels."""
        return len(self.channel_params)

    @property
    def param_groups(self) -> list[dict]:
        r"""The parameter groups of every inner optimizer (the same dicts, for schedulers and
        gradient scalers)."""
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:
        r"""The merged per-parameter state of the inner optimizers."""
        out: dict = {}
        for opt in self.optimizers:
            out.update(opt.state)
        return out

    def freeze(self, c: int) -> None:
        r"""Stop updating channel ``c``.

        :param int c: channel index.
        """
        self.active[c] = False

    def unfreeze_all(self) -> None:
        r"""Update every channel again."""
        self.active = [True] * self.channels

    def zero_grad(self, set_to_none: bool = True) -> None:
        r"""Clear the gradients of every inner optimizer.

        :param bool set_to_none: set gradients to ``None`` instead of zero (default ``True``).
        """
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable | None = None) -> None:
        r"""Step the optimizers of the active channels.

        :param Callable, None closure: not supported (must be ``None``).
        """
        if closure is not None:
            raise ValueError("ChannelOptimizer.step() does not take a closure.")
        hook = getattr(self, "before_step", None)
        if hook is not None:  # e.g. the gradient all-reduce of distributed training
            hook()
        if self.mode == "per_channel":
            for opt, active in zip(self.optimizers, self.active, strict=True):
                if active:
                    opt.step()
            return
        for params, active in zip(self.channel_params, self.active, strict=True):
            if not active:
                for p in params:
                    p.grad = None
        self.optimizers[0].step()

    def state_dict(self) -> dict[str, Any]:
        r"""State of every inner optimizer, and which channels are active.

        :return: (dict) ``{"mode", "active", "optimizers"}``.
        """
        return {
            "mode": self.mode,
            "active": list(self.active),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r"""Restore a state from :meth:`state_dict`.

        :param dict state: the saved state.
        :raises ValueError: if it was saved with another mode or number of optimizers.
        """
        if not isinstance(state, dict) or "optimizers" not in state:
            raise ValueError(
                "Expected a ChannelOptimizer state (a dict with key 'optimizers'), but got "
                f"{type(state).__name__}; was the checkpoint written by another trainer?"
            )
        saved = state["optimizers"]
        if state.get("mode") != self.mode or len(saved) != len(self.optimizers):
            raise ValueError(
                f"Checkpoint optimizer state is for mode {state.get('mode')!r} with "
                f"{len(saved)} optimizer(s), but this trainer uses mode {self.mode!r} with "
                f"{len(self.optimizers)}."
            )
        for opt, s in zip(self.optimizers, saved, strict=True):
            opt.load_state_dict(s)
        active = state.get("active", [True] * self.channels)
        if len(active) != self.channels:
            raise ValueError(
                f"Checkpoint holds {len(active)} channels, but the model has {self.channels}."
            )
        self.active = [bool(a) for a in active]


class _EpochEnd:
    r"""Stands in ``Trainer.scheduler``: deepinv calls ``step()`` once at the end of every
    training epoch, before saving its checkpoint. Holds the per-optimizer LR schedulers (whose
    states deepinv then saves and restores through ``state_dict``/``load_state_dict``).
    """

    def __init__(self, trainer: ICRFTrainer, schedulers: list[Any]) -> None:
        self.trainer = trainer
        self.schedulers = schedulers

    def __bool__(self) -> bool:
        return True

    def step(self) -> None:
        self.trainer._end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedulers": [
                None if s is None else s.state_dict() for s in self.schedulers
            ]
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None and all(s is None for s in self.schedulers):
            return  # e.g. a plain deepinv checkpoint without scheduler
        saved = state.get("schedulers", []) if isinstance(state, dict) else None
        if saved is None or len(saved) != len(self.schedulers):
            raise ValueError(
                f"Checkpoint holds {0 if saved is None else len(saved)} learning-rate "
                f"scheduler state(s), but this trainer has {len(self.schedulers)}."
            )
        for sched, s in zip(self.schedulers, saved, strict=True):
            if (sched is None) != (s is None):
                raise ValueError(
                    "Checkpoint learning-rate schedulers do not match this trainer's "
                    "(one has a scheduler where the other has none)."
                )
            if sched is not None:
                sched.load_state_dict(s)


class _AllChannelsStopped(Exception):
    r"""Raised at the end of the epoch in which the last channel was frozen."""


class _StackBatch(torch.utils.data.Dataset):
    r"""One ready-made batch ``{"y": (B, N, C, H, W), "params": {"exposure_times": (B, N)}}``
    (for ``DataLoader(batch_size=None)``): the same tensor objects every epoch, so the
    linearity loss's statistics cache is hit after the first epoch."""

    def __init__(self, stack: Tensor, times: Tensor, true_curve: Tensor | None):
        self.item = {"y": stack, "params": {"exposure_times": times}}
        self.true_curve = true_curve

    def __len__(self) -> int:
        return 1

    def __getitem__(self, k: int) -> dict[str, Any]:
        if k != 0:
            raise IndexError(f"_StackBatch holds one batch, got index {k}.")
        return self.item


def _weighted_schedulers(loss: Any) -> Iterator[WeightedLossScheduler]:
    r"""``loss`` if it is a :class:`WeightedLossScheduler`, and the ones among its terms (any
    depth)."""
    if isinstance(loss, WeightedLossScheduler):
        yield loss
        for term in loss.losses:
            yield from _weighted_schedulers(term)


class _ChannelRecorder:
    r"""Within its ``with`` block, the one evaluation of each loss that deepinv backpropagates
    also gives the per-channel values (no second evaluation):

    - every :class:`WeightedLossScheduler` (nested ones too) records its terms' per-channel
      values (``record_channels``, read back from ``last_channel_values``);
    - every other loss module gets a forward hook that keeps its output (detached) in
      ``outputs[k]`` (``k`` its index in the trainer's losses); a loss with a bool
      ``per_channel`` attribute is called with ``per_channel=True`` and the hook hands deepinv
      its channel sum, which is the value it returns with ``per_channel=False``.

    Every flag is restored and every hook removed on exit, also on error.
    """

    def __init__(self, losses: Sequence[Any]) -> None:
        self.losses = list(losses)
        self.outputs: dict[int, Tensor] = {}
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> _ChannelRecorder:
        try:
            for k, loss in enumerate(self.losses):
                if isinstance(loss, WeightedLossScheduler):
                    for sched in _weighted_schedulers(loss):
                        self._set(sched, "record_channels", True)
                elif isinstance(loss, nn.Module):
                    per_channel = _has_per_channel(loss)
                    if per_channel:
                        self._set(loss, "per_channel", True)
                    hook = partial(self._keep, k, per_channel)
                    self._undo.append(loss.register_forward_hook(hook).remove)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> bool:
        while self._undo:
            self._undo.pop()()
        return False

    def _set(self, obj: Any, name: str, value: bool) -> None:
        self._undo.append(partial(setattr, obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def _keep(
        self, k: int, per_channel: bool, module: nn.Module, args: Any, output: Any
    ) -> Any:
        if isinstance(output, Tensor):
            self.outputs[k] = output.detach()
        return _channel_sum(output) if per_channel else None


def _load_loss_state(loss: nn.Module, state: dict[str, Any]) -> None:
    r"""``loss.load_state_dict(state)``, strict except for missing ``_extra_state`` entries
    (checkpoints written before a loss kept extra state: it keeps its fresh one)."""
    result = loss.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"Error loading the state of {type(loss).__name__}: missing keys {missing}, "
            f"unexpected keys {list(result.unexpected_keys)}."
        )


def _atomic_torch_save(obj: Any, path: Path) -> None:
    r"""``torch.save`` through :func:`deepinv_icrf.io.atomic_write` (temporary file in the
    target folder, fsync, ``os.replace``): a killed writer never leaves a partial checkpoint.
    """
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def find_checkpoint(root: str | os.PathLike) -> Path | None:
    r"""The newest deepinv checkpoint ``ckp_<epoch>.pth.tar`` under ``root`` (any depth).

    deepinv writes into ``save_path/<timestamp>/``; the checkpoint with the highest epoch wins,
    then the most recent file.

    :param str, os.PathLike root: folder to search (a trainer's ``save_path``).
    :return: (:class:`pathlib.Path`, None) the checkpoint, or ``None`` if there is none.

    |sep|

    :Example:

    >>> import tempfile
    >>> find_checkpoint(tempfile.mkdtemp()) is None
    True
    """
    root = Path(root)
    if not root.is_dir():
        return None
    best: tuple[int, int, str] | None = None
    found: Path | None = None
    for path in root.rglob("ckp_*.pth.tar"):
        m = _CKPT_PATTERN.match(path.name)
        if m is None or not path.is_file():
            continue
        key = (int(m.group(1)), path.stat().st_mtime_ns, str(path))
        if best is None or key > best:
            best, found = key, path
    return found


def _acc_dtype(device: torch.device) -> torch.dtype:
    r"""Accumulation dtype of the channel losses: float64, float32 where there is none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _rng_state(loaders: Sequence[Any]) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loaders": [],
    }
    for loader in loaders:
        gen = getattr(loader, "generator", None)
        state["loaders"].append(gen.get_state() if gen is not None else None)
    return state


def _set_rng_state(state: dict[str, Any], loaders: Sequence[Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    for loader, s in zip(loaders, state.get("loaders", []), strict=False):
        gen = getattr(loader, "generator", None)
        if gen is not None and s is not None:
            gen.set_state(s.cpu())


@dataclass
class ICRFTrainer(TermLoggingTrainer):
    r"""ICRFTrainer(model, physics, optimizer=None, train_dataloader=None, ...)
    :class:`deepinv.Trainer` for fitting an ICRF on exposure stacks, clair-torch style.

    The model is an :class:`~deepinv_icrf.models.ICRF` (or a module holding one, found with
    :func:`~deepinv_icrf.loss.find_icrf`); the physics an
    :class:`~deepinv_icrf.physics.ExposureStack`. Dataset items are
    ``{"y": stack (N, C, H, W), "params": {"exposure_times": t (N,)}}`` (deepinv's format:
    ``Trainer`` calls ``physics.update(exposure_times=t)`` for each batch) or tuples
    ``(stack (N, C, H, W), t (N,))``. The default loss is :func:`icrf_objective`; per batch
    the trainer minimises the mean over the batch of the total loss

    .. math::

        \mathcal{L}(\theta) = \sum_c \mathcal{L}_c(\theta_c),

    a sum over channels of terms that each depend on one channel's parameters only (the ICRF
    losses are separable), so one backward pass gives each channel's optimizer the gradient of
    its own channel's loss, exactly as clair-torch's per-channel backward passes do.

    **Per-channel bookkeeping.** The loss of each channel :math:`\mathcal{L}_c` is read from
    the same evaluation of the losses that is backpropagated (no second evaluation): the terms
    that support it are called with ``per_channel=True``
    (:class:`~deepinv_icrf.loss.RadiometricLinearityLoss` and the curve losses, also inside a
    :class:`~deepinv_icrf.loss.WeightedLossScheduler`, see its ``record_channels``), their
    ``(B, C)`` values are kept for the statistics and their channel sum is backpropagated,
    which gives the values and gradients of ``per_channel=False``; a term without per-channel
    values counts fully in every channel. Epoch means
    go to ``channel_loss_history``; they drive early stopping and ``ReduceLROnPlateau``
    schedulers. A channel whose epoch loss has not decreased by more than ``min_delta`` below
    its best for ``patience`` epochs is frozen (``stopped_epoch[c]`` records when); when every
    channel is frozen the checkpoint of that epoch is written and training ends. Each call to
    :meth:`train` starts with every channel active (unless it resumes from a checkpoint).

    **Checkpoints and resume.** With ``save_path``, deepinv's checkpoints
    ``save_path/<timestamp>/ckp_<epoch>.pth.tar`` are written (atomically) every
    ``ckp_interval`` epochs and at the last epoch. Besides deepinv's keys (model, optimizer,
    scheduler, histories) they hold the early-stopping state, the term and channel histories,
    the losses' states (e.g. a scheduler's step counter) and the random number generator states
    (torch, numpy, python, CUDA, data loader generators). ``ckpt_pretrained=path`` resumes from
    a checkpoint (deepinv's mechanism: training goes on from the next epoch);
    ``resume=True`` picks the newest checkpoint under ``save_path`` (:func:`find_checkpoint`)
    and starts from scratch when there is none. Repeated :meth:`train` calls write to separate
    timestamped folders under ``save_path`` and never wrap the model twice.

    **Plots.** With ``plot_images=True``, :func:`plot_training` (curves against the truth, loss
    terms, channel losses) is saved every ``plot_interval`` epochs as
    ``save_path/<timestamp>/training_<epoch>.png`` (no plot without ``save_path``).

    The other fields are :class:`deepinv.Trainer`'s (``epochs``, ``eval_dataloader``,
    ``log_train_batch``, ``wandb_vis``, ...); these defaults differ: ``losses`` (``None``:
    :func:`icrf_objective`), ``metrics`` (none: the stacks have no ground truth),
    ``save_path`` (``None``: no files), ``device`` (``None``: the model's device),
    ``non_blocking_transfers`` (``None``: only on CUDA), ``freq_update_progress_bar`` (10).
    Model, losses and physics are moved to ``device``.

    :param deepinv_icrf.models.ICRF, torch.nn.Module model: the ICRF, or a module holding one.
    :param deepinv_icrf.physics.ExposureStack, list physics: the exposure physics.
    :param None, torch.optim.Optimizer, list, ChannelOptimizer optimizer: ``None`` (default)
        builds Adam(``lr``) per channel (``optimizer_mode="per_channel"``) or one Adam on every
        parameter (``"single"``); a list gives one optimizer per channel (each on
        ``icrf.channel_parameters(c)``); one optimizer means ``"single"``.
    :param torch.utils.data.DataLoader train_dataloader: exposure stacks (required).
    :param None, torch.optim.lr_scheduler.LRScheduler, list, Callable scheduler: ``None``
        (default), one scheduler per optimizer (a list, ``None`` entries allowed; a single
        scheduler with one optimizer), or a factory ``optimizer -> scheduler`` applied to each
        optimizer. Stepped once per epoch, frozen channels excluded; ``ReduceLROnPlateau``
        receives the channel's epoch loss (the sum over channels for ``"single"``).
    :param float lr: learning rate of the default optimizers, default ``1e-3`` (clair-torch's;
        the monotone parameterization converges in tens of epochs with 0.05 to 0.1).
    :param str optimizer_mode: ``"per_channel"`` (default) or ``"single"``.
    :param int, None patience: epochs without improvement before a channel is frozen;
        ``None`` (default) disables early stopping.
    :param float min_delta: improvement needed to reset a channel's patience, default 0.
    :param torch.Tensor, None true_curve: known ICRF ``(C, L')`` to score the fit against
        (:func:`~deepinv_icrf.functional.metrics.curve_rmse`, codes 8 to 247); ``None``
        (default) reads ``true_curve`` from the first training dataset if it has one.
    :param bool channel_losses: keep the per-channel losses (default ``True``; needed by
        ``patience`` and ``ReduceLROnPlateau``; read from the training evaluation of the
        losses, at the cost of a few small reductions per batch).
    :param bool resume: resume from the newest checkpoint under ``save_path`` when
        ``ckpt_pretrained`` is not given (default ``False``).
    :param bool distributed: data-parallel training under ``torch.distributed`` (default
        ``False``): each process loads its share of the stacks (e.g.
        :func:`~deepinv_icrf.training.distributed.distributed_loader`), the gradients are
        averaged across processes before each step, the per-channel losses (early stopping,
        ``ReduceLROnPlateau``) are reduced too, and only rank 0 writes checkpoints. Needs an
        initialised process group.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.data import demo_exposure_times, demo_scene
    >>> from deepinv_icrf.physics import ExposureStack, get_response
    >>> from deepinv_icrf.training import ICRFTrainer
    >>> t = demo_exposure_times(4, shortest=1.0)
    >>> y = ExposureStack(t, response="gamma")(demo_scene(12, 16))[0]
    >>> truth = get_response("gamma").icrf_curve(n_points=33)
    >>> trainer = ICRFTrainer.from_stack(
    ...     y, t, n_points=33, lr=0.05, epochs=3, true_curve=truth, verbose=False)
    >>> icrf = trainer.train()
    >>> len(trainer.channel_loss_history), len(trainer.curve_rmse_history[-1])
    (3, 3)
    >>> sorted(trainer.term_loss_history)
    ['endpoint', 'linearity', 'monotonicity', 'range', 'smoothness']
    """

    optimizer: torch.optim.Optimizer | list | ChannelOptimizer | None = None
    train_dataloader: torch.utils.data.DataLoader | list | None = None
    losses: Any = None
    scheduler: Any = None
    metrics: Any = field(default_factory=list)
    device: str | torch.device | None = None
    save_path: str | Path | None = None
    non_blocking_transfers: bool | None = None
    freq_update_progress_bar: int = 10
    lr: float = 1e-3
    optimizer_mode: str = "per_channel"
    patience: int | None = None
    min_delta: float = 0.0
    true_curve: Tensor | None = None
    channel_losses: bool = True
    resume: bool = False
    distributed: bool = False

    # Not a field. ``False`` restores the former bookkeeping (a second, gradient-free evaluation
    # of the losses per batch): kept as the baseline of benchmarks/trainer_overhead.py and of
    # the equivalence tests.
    _single_evaluation = True

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        if self.train_dataloader is None:
            raise ValueError(
                "Expected `train_dataloader` (exposure stacks), but got None."
            )
        icrf = find_icrf(self.model)
        if icrf is None or not callable(getattr(icrf, "channel_parameters", None)):
            raise ValueError(
                "Expected `model` to be an ICRF or to hold one (a 2-D `curve`, `derivative` "
                f"and `channel_parameters`), but got {type(self.model).__name__}."
            )
        check_in(self.optimizer_mode, "optimizer_mode", OPTIMIZER_MODES)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise TypeError(f"Expected `lr` to be a float, but got {self.lr!r}.")
        if not self.lr > 0:
            raise ValueError(f"Expected `lr` > 0, but got {self.lr!r}.")
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise ValueError(
                f"Expected `patience` to be None or an int >= 1, but got {self.patience!r}."
            )
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0):
            raise ValueError(
                f"Expected `min_delta` to be a float >= 0, but got {self.min_delta!r}."
            )
        check_in(self.channel_losses, "channel_losses", (True, False))
        check_in(self.resume, "resume", (True, False))
        check_in(self.distributed, "distributed", (True, False))
        if self.distributed and not torch.distributed.is_initialized():
            raise ValueError(
                "Expected an initialised torch.distributed process group with "
                "distributed=True (run under torchrun), but there is none."
            )
        if self.resume and not self.save_path:
            raise ValueError(
                "Expected a `save_path` to resume from with resume=True, but got "
                f"save_path={self.save_path!r}."
            )
        if self.patience is not None and not self.channel_losses:
            raise ValueError("Early stopping (`patience`) needs `channel_losses=True`.")
        if self.device is None:
            param = next(iter(icrf.parameters()), None)
            self.device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(self.device)
        if self.non_blocking_transfers is None:
            self.non_blocking_transfers = self.device.type == "cuda"
        if self.losses is None:
            self.losses = icrf_objective()
        if self.true_curve is not None:
            check_float(self.true_curve, "true_curve")
            check_shape(self.true_curve, "true_curve", [icrf.channels, "L"])
        super().__post_init__()
        self._to_device()
        self.optimizer = self._build_optimizer(self.optimizer, icrf)
        schedulers = self._build_schedulers(self.scheduler)
        if not self.channel_losses and any(
            isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)
            for s in schedulers
        ):
            raise ValueError("ReduceLROnPlateau schedulers need `channel_losses=True`.")
        self.scheduler = _EpochEnd(self, schedulers)
        if self.distributed:
            self.optimizer.before_step = self._all_reduce_gradients
        self._base_model: nn.Module = self.model
        self._save_root: Path | None = Path(self.save_path) if self.save_path else None
        self._reset_channel_state()

    def _all_reduce_gradients(self) -> None:
        from deepinv_icrf.training.distributed import all_reduce_gradients

        all_reduce_gradients(self.model.parameters(), average=True)

    @property
    def icrf(self) -> nn.Module:
        r"""The ICRF being trained."""
        return find_icrf(self._base_model)

    @property
    def lr_schedulers(self) -> list[Any]:
        r"""The learning-rate scheduler of each optimizer (``None`` where there is none)."""
        return self.scheduler.schedulers

    def _to_device(self) -> None:
        self.model.to(self.device)
        losses = (
            self.losses if isinstance(self.losses, (list, tuple)) else [self.losses]
        )
        for loss in losses:
            if isinstance(loss, nn.Module):
                loss.to(self.device)
        physics = (
            self.physics if isinstance(self.physics, (list, tuple)) else [self.physics]
        )
        for p in physics:
            if isinstance(p, nn.Module):
                p.to(self.device)
        if self.true_curve is not None:
            self.true_curve = self.true_curve.to(self.device)

    def _build_optimizer(self, optimizer: Any, icrf: nn.Module) -> ChannelOptimizer:
        groups = [list(icrf.channel_parameters(c)) for c in range(icrf.channels)]
        if isinstance(optimizer, ChannelOptimizer):
            return optimizer
        if optimizer is None:
            if self.optimizer_mode == "per_channel":
                channel_ids = {id(p) for g in groups for p in g}
                extra = [
                    p
                    for p in self.model.parameters()
                    if p.requires_grad and id(p) not in channel_ids
                ]
                if extra:
                    raise ValueError(
                        f"The model has {len(extra)} trainable parameter(s) outside the ICRF's "
                        "channel parameters; use optimizer_mode='single' or pass optimizers."
                    )
                opts = [torch.optim.Adam(g, lr=self.lr) for g in groups]
            else:
                opts = [
                    torch.optim.Adam(
                        [p for p in self.model.parameters() if p.requires_grad],
                        lr=self.lr,
                    )
                ]
            return ChannelOptimizer(opts, groups, self.optimizer_mode)
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer_mode = "single"
            return ChannelOptimizer([optimizer], groups, "single")
        if isinstance(optimizer, (list, tuple)):
            if len(optimizer) == 1:
                self.optimizer_mode = "single"
                return ChannelOptimizer(list(optimizer), groups, "single")
            self.optimizer_mode = "per_channel"
            return ChannelOptimizer(list(optimizer), groups, "per_channel")
        raise TypeError(
            "Expected `optimizer` to be None, a torch.optim.Optimizer, a list of them or a "
            f"ChannelOptimizer, but got {type(optimizer).__name__}."
        )

    def _build_schedulers(self, scheduler: Any) -> list[Any]:
        n = len(self.optimizer.optimizers)
        if isinstance(scheduler, _EpochEnd):
            return scheduler.schedulers
        if scheduler is None:
            return [None] * n
        if isinstance(scheduler, (list, tuple)):
            if len(scheduler) != n:
                raise ValueError(
                    f"Expected one scheduler (or None) per optimizer ({n}), but got "
                    f"{len(scheduler)}."
                )
            return list(scheduler)
        if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            if n != 1:
                raise ValueError(
                    f"Got one scheduler for {n} per-channel optimizers: pass a list of {n} "
                    "schedulers or a factory `optimizer -> scheduler`."
                )
            return [scheduler]
        if callable(scheduler):
            return [scheduler(opt) for opt in self.optimizer.optimizers]
        raise TypeError(
            "Expected `scheduler` to be None, an LR scheduler, a list of them or a factory, "
            f"but got {type(scheduler).__name__}."
        )

    @classmethod
    def from_stack(
        cls,
        y: Tensor | np.ndarray,
        exposure_times: Tensor | Sequence[float],
        *,
        model: nn.Module | None = None,
        n_points: int = 256,
        parameterization: str = "monotone",
        init: str | Tensor = "gamma",
        true_curve: Tensor | None = None,
        **kwargs: Any,
    ) -> ICRFTrainer:
        r"""A trainer for one exposure stack (one dataset item, one batch per epoch).

        :param torch.Tensor, numpy.ndarray y: the stack: a float tensor ``(N, C, H, W)`` (or
            ``(1, N, C, H, W)``) in ``[0, 1]``, or a ``uint8``/``uint16`` array
            ``(N, H, W, C)``.
        :param torch.Tensor, Sequence exposure_times: the ``N`` exposure times (seconds).
        :param torch.nn.Module, None model: the ICRF to train; ``None`` (default) builds
            ``ICRF(C, n_points, parameterization, init)``.
        :param int n_points: curve samples of the built ICRF, default 256.
        :param str parameterization: ``"monotone"`` (default) or ``"free"``.
        :param str, torch.Tensor init: initial curve of the built ICRF, default ``"gamma"``.
        :param torch.Tensor, None true_curve: known ICRF ``(C, L')`` to score against.
        :param kwargs: other :class:`ICRFTrainer` fields (``epochs``, ``lr``, ``patience``,
            ``save_path``, ``device``, ...).
        :return: (:class:`ICRFTrainer`) the trainer; call :meth:`train`.
        """
        from deepinv_icrf.models import ICRF
        from deepinv_icrf.physics import ExposureStack
        from deepinv_icrf.training.fit import as_stack_tensor

        stack, bits = as_stack_tensor(y, "y")
        n = stack.shape[1]
        times = torch.as_tensor(exposure_times, dtype=torch.float32)
        if times.ndim != 1 or times.shape[0] != n:
            raise ValueError(
                f"Expected `exposure_times` of shape ({n},) to match the {n} exposures of "
                f"`y`, but got shape {tuple(times.shape)}."
            )
        if model is None:
            model = ICRF(
                channels=stack.shape[2],
                n_points=n_points,
                parameterization=parameterization,
                init=init,
                bit_depth=bits if bits is not None else 8,
            )
        physics = ExposureStack(times, bit_depth=bits if bits is not None else 8)
        trainer = cls(
            model=model,
            physics=physics,
            train_dataloader=torch.utils.data.DataLoader([0], batch_size=None),
            true_curve=true_curve,
            **kwargs,
        )
        # the batch lives on the trainer's device once, so every epoch sees the same tensor
        dataset = _StackBatch(
            stack.to(device=trainer.device, dtype=torch.float32),
            times.unsqueeze(0).to(trainer.device),
            true_curve,
        )
        trainer.train_dataloader = torch.utils.data.DataLoader(dataset, batch_size=None)
        return trainer

    # ------------------------------------------------------------------ state
    def _reset_channel_state(self) -> None:
        channels = self.icrf.channels
        self.channel_best: list[float] = [float("inf")] * channels
        self.channel_bad_epochs: list[int] = [0] * channels
        self.stopped_epoch: list[int | None] = [None] * channels
        self.channel_loss_history: list[list[float]] = []
        self.curve_rmse_history: list[list[float]] = []
        self.optimizer.unfreeze_all()
        self._channel_sum: Tensor | None = None
        self._channel_count = 0
        self._epoch = 0

    def _channel_state(self) -> dict[str, Any]:
        return {
            "best": list(self.channel_best),
            "bad_epochs": list(self.channel_bad_epochs),
            "stopped_epoch": list(self.stopped_epoch),
            "channel_loss_history": [list(v) for v in self.channel_loss_history],
            "curve_rmse_history": [list(v) for v in self.curve_rmse_history],
        }

    def _loaders(self) -> list[Any]:
        loaders = self.train_dataloader
        return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]

    def setup_train(self, train: bool = True, **kwargs) -> None:
        r"""deepinv's set-up, without re-wrapping the model, then restore a checkpoint's extra
        state.

        :param bool train: whether the model is being trained.
        """
        self.model = self._base_model
        self._to_device()
        if train:
            self._reset_channel_state()
        self._loaded_checkpoint = None
        if (
            train
            and self.resume
            and self.ckpt_pretrained is None
            and self._save_root is not None
        ):
            self.ckpt_pretrained = find_checkpoint(self._save_root)
        self.save_path = None
        super().setup_train(train=train, **kwargs)
        self.save_path = (
            self._make_run_dir()
            if train
            and self._save_root is not None
            and not (self.distributed and torch.distributed.get_rank() != 0)
            else None
        )
        if self.true_curve is None:
            self.true_curve = self._dataset_true_curve()
        ckpt = self._loaded_checkpoint
        if ckpt is not None:
            self._restore_extra(ckpt)
        self._loaded_checkpoint = None

    def _make_run_dir(self) -> Path:
        base = self._save_root / get_timestamp()
        path, k = base, 0
        while True:
            try:
                os.makedirs(path, exist_ok=False)
                return path
            except FileExistsError:
                k += 1
                path = base.with_name(f"{base.name}_{k}")

    def _dataset_true_curve(self) -> Tensor | None:
        for loader in self._loaders():
            curve = getattr(getattr(loader, "dataset", None), "true_curve", None)
            if isinstance(curve, Tensor):
                check_float(curve, "dataset.true_curve")
                check_shape(curve, "dataset.true_curve", [self.icrf.channels, "L"])
                return curve.to(self.device)
        return None

    def load_model(self, ckpt_pretrained: str | Path = None, strict: bool = True):
        r"""deepinv's ``load_model`` (model, per-channel optimizers and schedulers, epoch);
        the rest of the checkpoint (histories, early stopping, RNG states) is restored at the
        end of :meth:`setup_train`.

        :param str ckpt_pretrained: checkpoint file; ``None`` uses ``self.ckpt_pretrained``.
        :param bool strict: strict loading of the model weights.
        :return: (dict, None) the checkpoint, if one was loaded.
        """
        checkpoint = super().load_model(ckpt_pretrained=ckpt_pretrained, strict=strict)
        if checkpoint is not None:
            self._loaded_checkpoint = checkpoint
        return checkpoint

    def _restore_extra(self, ckpt: dict[str, Any]) -> None:
        for key, attr in (
            ("loss", "loss_history"),
            ("train_metrics", "train_metrics_history"),
            ("eval_loss", "eval_loss_history"),
            ("eval_metrics", "eval_metrics_history"),
            ("term_loss", "term_loss_history"),
            ("eval_term_loss", "eval_term_loss_history"),
        ):
            saved = ckpt.get(key)
            current = getattr(self, attr, None)
            if isinstance(saved, dict) and isinstance(current, dict):
                for name, values in saved.items():
                    if name in current:
                        current[name] = list(values)
        channels = ckpt.get("channels")
        if channels is not None:
            if len(channels["best"]) != self.icrf.channels:
                raise ValueError(
                    f"Checkpoint holds {len(channels['best'])} channels, but the model has "
                    f"{self.icrf.channels}."
                )
            self.channel_best = list(channels["best"])
            self.channel_bad_epochs = list(channels["bad_epochs"])
            self.stopped_epoch = list(channels["stopped_epoch"])
            self.channel_loss_history = [
                list(v) for v in channels["channel_loss_history"]
            ]
            self.curve_rmse_history = [list(v) for v in channels["curve_rmse_history"]]
            for c, stopped in enumerate(self.stopped_epoch):
                if stopped is not None:
                    self.optimizer.freeze(c)
        states = ckpt.get("losses")
        if states is not None:
            if len(states) != len(self.losses):
                raise ValueError(
                    f"Checkpoint holds the states of {len(states)} loss(es), but this trainer "
                    f"has {len(self.losses)}."
                )
            for loss, state in zip(self.losses, states, strict=True):
                if isinstance(loss, nn.Module) and state is not None:
                    _load_loss_state(loss, state)
        rng = ckpt.get("rng")
        if rng is not None:
            _set_rng_state(rng, self._loaders())

    def save_model(self, filename, epoch, state=None) -> None:
        r"""deepinv's checkpoint plus this trainer's state, written atomically.

        :param str filename: checkpoint file name inside the run folder.
        :param int epoch: current epoch.
        :param dict state: extra objects to save.
        """
        if not self.save_path:
            return
        if self.distributed and torch.distributed.get_rank() != 0:
            return
        os.makedirs(str(self.save_path), exist_ok=True)
        state = {} if state is None else dict(state)
        state |= {
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "loss": self.loss_history,
            "train_metrics": self.train_metrics_history,
            "eval_loss": self.eval_loss_history,
            "eval_metrics": self.eval_metrics_history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "term_loss": self.term_loss_history,
            "eval_term_loss": self.eval_term_loss_history,
            "channels": self._channel_state(),
            "losses": [
                loss.state_dict() if isinstance(loss, nn.Module) else None
                for loss in self.losses
            ],
            "rng": _rng_state(self._loaders()),
        }
        if self.wandb_vis:
            import wandb

            state["wandb_id"] = wandb.run.id
        if self.mlflow_vis:
            import mlflow

            state["mlflow_id"] = mlflow.active_run().info.run_id
        _atomic_torch_save(state, Path(self.save_path) / filename)

    # ------------------------------------------------------------------ data
    def get_samples_offline(self, iterators, g):
        r"""deepinv's offline samples, also accepting ``(stack, exposure_times)`` tuples.

        :param list iterators: dataloader iterators.
        :param int g: index of the current dataloader.
        :return: (tuple) ``(x, y, physics)``.
        """
        data = next(iterators[g])
        if (
            isinstance(data, (list, tuple))
            and len(data) == 2
            and isinstance(data[0], Tensor)
            and isinstance(data[1], Tensor)
            and data[0].ndim == 5
            and data[1].ndim == 2
        ):
            data = {"y": data[0], "params": {"exposure_times": data[1]}}
        return super().get_samples_offline([iter([data])], 0)

    # ------------------------------------------------------------------ losses
    def compute_loss(
        self, physics, x, y, train: bool = True, epoch: int = None, step: bool = False
    ):
        r"""The loss, its backward pass and term logs (:class:`TermLoggingTrainer`), plus the
        per-channel losses of the batch (before the optimizer step).

        :param deepinv.physics.Physics physics: current physics.
        :param torch.Tensor x: ground truth (``None``).
        :param torch.Tensor y: exposure stacks ``(B, N, C, H, W)``.
        :param bool train: train (``True``) or evaluate.
        :param int epoch: current epoch.
        :param bool step: whether to step the optimizer here.
        :return: (tuple) ``(loss_total, x_net, logs)``.
        """
        if train and step:
            self.optimizer.zero_grad(set_to_none=True)
        recorder = (
            _ChannelRecorder(self.losses)
            if train and self.channel_losses and self._single_evaluation
            else None
        )
        with nullcontext() if recorder is None else recorder:
            loss_total, x_net, logs = super().compute_loss(
                physics, x, y, train=train, epoch=epoch, step=False
            )
        if train:
            self._epoch = epoch if epoch is not None else self._epoch
            if self.channel_losses and x_net is not None:
                outputs = None if recorder is None else recorder.outputs
                with torch.no_grad():
                    values = self._channel_values(x_net, x, y, physics, epoch, outputs)
                batch = y.shape[0]
                values = values * batch
                self._channel_sum = (
                    values if self._channel_sum is None else self._channel_sum + values
                )
                self._channel_count += batch
            if step:
                self.scaler.step(self.optimizer)
                self.scaler.update()
        return loss_total, x_net, logs

    def _channel_values(
        self,
        x_net: Tensor,
        x: Tensor | None,
        y: Tensor,
        physics: Any,
        epoch: int | None,
        outputs: dict[int, Tensor] | None = None,
    ) -> Tensor:
        r"""The batch's loss per channel ``(C,)``: from the values kept during the training
        evaluation (``outputs`` of :class:`_ChannelRecorder`, plus the schedulers' records),
        or, with ``outputs=None`` (the former bookkeeping), by evaluating the losses again.
        """
        kwargs = dict(x=x, x_net=x_net, y=y, physics=physics, model=self.model)
        channels = self.icrf.channels
        device = x_net.device
        recorded = outputs is not None
        total = torch.zeros(channels, device=device, dtype=_acc_dtype(device))
        for k, loss in enumerate(self.losses):
            kept = outputs.get(k) if recorded else None
            total = total + self._loss_channels(
                loss, kept, kwargs, epoch, channels, recorded
            )
        return total

    def _loss_channels(
        self,
        loss: nn.Module,
        kept: Tensor | None,
        kwargs: dict[str, Any],
        epoch: int | None,
        channels: int,
        recorded: bool = False,
    ) -> Tensor:
        r"""One loss per channel ``(C,)``. ``kept`` is its value from the training evaluation:
        ``(B, C)`` for a loss with ``per_channel`` when ``recorded``, else a value whose mean
        counts in every channel; it is re-evaluated where nothing was kept."""
        device = kwargs["x_net"].device
        if isinstance(loss, WeightedLossScheduler):
            out = torch.zeros(channels, device=device, dtype=_acc_dtype(device))
            for name, term in zip(loss.names, loss.losses, strict=True):
                w = loss.last_weights.get(name, 0.0)
                if w != 0.0:
                    store = (
                        loss.last_channel_values
                        if recorded and _has_per_channel(term)
                        else loss.last_values
                    )
                    value = self._loss_channels(
                        term, store.get(name), kwargs, epoch, channels, recorded
                    )
                    out = out + w * value
            return out
        if _has_per_channel(loss):
            if recorded and kept is not None:
                value = kept
            else:
                value = _call_per_channel(loss, dict(kwargs, epoch=epoch))
            if value.ndim == 2 and value.shape[-1] == channels:
                return value.to(_acc_dtype(device)).mean(0)
            shared = value.to(_acc_dtype(device)).mean()
        elif kept is not None:
            shared = kept.to(device=device, dtype=_acc_dtype(device)).mean()
        else:
            shared = loss(**kwargs, epoch=epoch).to(_acc_dtype(device)).mean()
        return shared.expand(channels)

    # ------------------------------------------------------------------ epochs
    def curve_rmse(self) -> Tensor | None:
        r"""RMSE of the current curve against the true curve per channel (codes 8 to 247),
        or ``None`` without a true curve.

        :return: (torch.Tensor, None) shape ``(C,)``.
        """
        if self.true_curve is None:
            return None
        from deepinv_icrf.functional.metrics import curve_rmse

        with torch.no_grad():
            curve = self.icrf.curve.detach()
            return curve_rmse(curve, self.true_curve.to(curve.device))

    def _end_epoch(self) -> None:
        epoch = self._epoch
        channel_loss = None
        if self.distributed and self._channel_sum is not None:
            count = torch.tensor(
                float(self._channel_count), device=self._channel_sum.device
            )
            torch.distributed.all_reduce(self._channel_sum)
            torch.distributed.all_reduce(count)
            self._channel_count = int(count)
        if self._channel_count > 0 and self._channel_sum is not None:
            channel_loss = (self._channel_sum / self._channel_count).tolist()
            self.channel_loss_history.append(channel_loss)
        self._channel_sum, self._channel_count = None, 0
        rmse = self.curve_rmse()
        if rmse is not None:
            self.curve_rmse_history.append(rmse.tolist())

        if channel_loss is not None:
            bad = [c for c, v in enumerate(channel_loss) if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(
                    f"ICRFTrainer: the loss of channel(s) {bad} is {channel_loss} at epoch "
                    f"{epoch + 1} (diverged); lower `lr` or check the data. The last "
                    "checkpoint, if any, holds the state before this epoch."
                )
            for c, value in enumerate(channel_loss):
                if self.stopped_epoch[c] is not None:
                    continue
                if value < self.channel_best[c] - self.min_delta:
                    self.channel_best[c] = value
                    self.channel_bad_epochs[c] = 0
                else:
                    self.channel_bad_epochs[c] += 1
                if (
                    self.patience is not None
                    and self.channel_bad_epochs[c] >= self.patience
                ):
                    self.stopped_epoch[c] = epoch
                    self.optimizer.freeze(c)
                    if self.verbose:
                        print(f"Channel {c} frozen at epoch {epoch + 1} (patience).")

        all_stopped = all(s is not None for s in self.stopped_epoch)
        if not all_stopped:
            self._step_schedulers(channel_loss)

        logs: dict[str, float] = {}
        if channel_loss is not None:
            logs |= {f"ChannelLoss[{c}]": v for c, v in enumerate(channel_loss)}
        if rmse is not None:
            logs |= {f"CurveRMSE[{c}]": v for c, v in enumerate(rmse.tolist())}
        if logs and (self.wandb_vis or self.mlflow_vis):
            self.log_metrics_mlops(logs, step=epoch, train=True)

        if (
            self.plot_images
            and self.save_path
            and ((epoch + 1) % self.plot_interval == 0 or all_stopped)
        ):
            fig = plot_training(
                self, path=Path(self.save_path) / f"training_{epoch:04d}.png"
            )
            del fig

        if all_stopped:
            if self.verbose:
                print(f"Every channel frozen: training stopped at epoch {epoch + 1}.")
            self.save_model(f"ckp_{epoch}.pth.tar", epoch)
            raise _AllChannelsStopped

    def _step_schedulers(self, channel_loss: list[float] | None) -> None:
        schedulers = self.scheduler.schedulers
        for k, sched in enumerate(schedulers):
            if sched is None:
                continue
            if self.optimizer.mode == "per_channel" and not self.optimizer.active[k]:
                continue
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if channel_loss is None:
                    continue
                metric = (
                    channel_loss[k]
                    if self.optimizer.mode == "per_channel"
                    else sum(channel_loss)
                )
                sched.step(metric)
            else:
                sched.step()

    def plot(self, epoch, physics, x, y, x_net, train=True) -> None:
        r"""No image plots (the outputs are stacks): curves are plotted at the end of each
        epoch instead (``plot_images``).

        :param int epoch: current epoch.
        """
        return None

    def train(self) -> nn.Module:
        r"""Train until ``epochs`` or until every channel is frozen.

        :return: (:class:`torch.nn.Module`) the trained model.
        """
        try:
            return super().train()
        except _AllChannelsStopped:
            if self.wandb_vis:
                import wandb

                wandb.finish()
            if self.mlflow_vis:
                import mlflow

                mlflow.end_run()
            return self.model


def plot_training(trainer: ICRFTrainer, path: str | os.PathLike | None = None):
    r"""Plot an :class:`ICRFTrainer`'s state: curves, loss terms, channel losses and RMSE.

    Panels: the current curve of each channel (the true curve dashed when known); every
    logged loss term and the total per epoch (log scale); the loss of each channel per epoch
    (a cross where a channel was frozen); and the curve RMSE per epoch when a true curve is
    known.

    :param ICRFTrainer trainer: the trainer (during or after training).
    :param str, os.PathLike, None path: PNG file to write (the figure is then closed);
        ``None`` only returns the figure.
    :return: (:class:`matplotlib.figure.Figure`) the figure.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.training import ICRFTrainer
    >>> from deepinv_icrf.training.trainer import plot_training
    >>> y = torch.rand(3, 1, 6, 5)
    >>> trainer = ICRFTrainer.from_stack(y, [1.0, 2.0, 4.0], n_points=9, epochs=2, verbose=False)
    >>> _ = trainer.train()
    >>> len(plot_training(trainer).axes)
    3
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curve = trainer.icrf.curve.detach().to("cpu", torch.float64)
    channels, n_points = curve.shape
    colours = (
        ("tab:red", "tab:green", "tab:blue")
        if channels == 3
        else tuple(f"C{k}" for k in range(channels))
    )
    truth = trainer.true_curve
    n_panels = 3 + (1 if truth is not None and trainer.curve_rmse_history else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.6), squeeze=False)
    axes = axes[0]

    grid = torch.linspace(0, 1, n_points, dtype=torch.float64)
    for c in range(channels):
        axes[0].plot(grid, curve[c], color=colours[c], label=f"channel {c}")
    if truth is not None:
        truth = truth.detach().to("cpu", torch.float64)
        ref_grid = torch.linspace(0, 1, truth.shape[-1], dtype=torch.float64)
        for c in range(channels):
            axes[0].plot(ref_grid, truth[c], "--", color=colours[c], alpha=0.6)
    axes[0].set_xlabel("code")
    axes[0].set_ylabel("relative irradiance")
    axes[0].set_title("ICRF")
    axes[0].legend(fontsize=7)

    histories = dict(getattr(trainer, "term_loss_history", {}))
    for name, values in getattr(trainer, "loss_history", {}).items():
        histories.setdefault(name, values)
    for name, values in histories.items():
        positive = [v if v > 0 else float("nan") for v in values]
        if positive:
            axes[1].plot(range(1, len(positive) + 1), positive, label=name)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("loss terms")
    if histories:
        axes[1].legend(fontsize=7)

    history = np.asarray(trainer.channel_loss_history, dtype=np.float64)
    if history.size:
        epochs = np.arange(1, history.shape[0] + 1)
        for c in range(history.shape[1]):
            axes[2].plot(epochs, history[:, c], color=colours[c], label=f"channel {c}")
            stopped = trainer.stopped_epoch[c]
            if stopped is not None and stopped < history.shape[0]:
                axes[2].plot(
                    stopped + 1, history[stopped, c], "x", color=colours[c], ms=8
                )
    axes[2].set_xlabel("epoch")
    axes[2].set_title("loss per channel")

    if n_panels == 4:
        rmse = np.asarray(trainer.curve_rmse_history, dtype=np.float64)
        for c in range(rmse.shape[1]):
            axes[3].plot(np.arange(1, rmse.shape[0] + 1), rmse[:, c], color=colours[c])
        axes[3].set_yscale("log")
        axes[3].set_xlabel("epoch")
        axes[3].set_title("curve RMSE vs truth")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            fig.savefig(tmp, dpi=90, format=path.suffix.lstrip(".") or "png")
        plt.close(fig)
    return fig
