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

The parts live in modules of their own: :mod:`~deepinv_icrf.training.optim` (the channel
optimizer and the learning-rate schedulers), :mod:`~deepinv_icrf.training.channels` (the
per-channel losses), :mod:`~deepinv_icrf.training.checkpoints` (finding, writing and
restoring checkpoints), :mod:`~deepinv_icrf.training.plotting` and
:mod:`~deepinv_icrf.training.objective` (the default loss); their public names are
importable from here too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deepinv.utils import get_timestamp
from torch import Tensor, nn

from deepinv_icrf._checks import check_float, check_in, check_shape
from deepinv_icrf.loss import find_icrf
from deepinv_icrf.training.channels import _ChannelRecorder, channel_values
from deepinv_icrf.training.checkpoints import (
    _atomic_torch_save,
    _load_loss_state,  # noqa: F401  (importable from here, as before the split)
    checkpoint_state,
    find_checkpoint,
    restore_checkpoint_state,
)
from deepinv_icrf.training.logging import TermLoggingTrainer
from deepinv_icrf.training.objective import icrf_objective
from deepinv_icrf.training.optim import (
    OPTIMIZER_MODES,
    ChannelOptimizer,
    _EpochEnd,
    build_channel_optimizer,
    build_lr_schedulers,
)
from deepinv_icrf.training.plotting import plot_training

__all__ = [
    "ICRFTrainer",
    "ChannelOptimizer",
    "icrf_objective",
    "plot_training",
    "find_checkpoint",
]


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
        self.optimizer, self.optimizer_mode = build_channel_optimizer(
            self.optimizer, icrf, self.model, self.optimizer_mode, self.lr
        )
        schedulers = build_lr_schedulers(self.scheduler, self.optimizer)
        if not self.channel_losses and any(
            isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)
            for s in schedulers
        ):
            raise ValueError("ReduceLROnPlateau schedulers need `channel_losses=True`.")
        self.scheduler = _EpochEnd(self._end_epoch, schedulers)
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
        from deepinv_icrf.bracket import as_stack_tensor, check_exposure_times
        from deepinv_icrf.models import ICRF
        from deepinv_icrf.physics import ExposureStack

        stack, bits = as_stack_tensor(y, "y")
        times = check_exposure_times(exposure_times, stack.shape[1], distinct=True)
        times = times[0].detach().to("cpu", torch.float32)
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
            restore_checkpoint_state(self, ckpt)
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
        state |= {"epoch": epoch, **checkpoint_state(self)}
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
                kwargs = dict(x=x, x_net=x_net, y=y, physics=physics, model=self.model)
                with torch.no_grad():
                    values = channel_values(
                        self.losses, kwargs, epoch, self.icrf.channels, outputs
                    )
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
