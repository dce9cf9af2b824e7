r"""The optimizers of :class:`~deepinv_icrf.training.ICRFTrainer`.

:class:`ChannelOptimizer` drives one optimizer per channel (or one for every parameter) as
one :class:`torch.optim.Optimizer`, with channels that early stopping can freeze;
:func:`build_channel_optimizer` and :func:`build_lr_schedulers` turn a trainer's
``optimizer`` and ``scheduler`` arguments into it and its learning-rate schedulers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from deepinv_icrf._checks import check_in

__all__ = ["ChannelOptimizer", "build_channel_optimizer", "build_lr_schedulers"]

#: The optimizer modes: one optimizer per channel, or one for every parameter.
OPTIMIZER_MODES = ("per_channel", "single")


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
    ``end_epoch`` is the trainer's end-of-epoch bookkeeping, called by ``step()``.
    """

    def __init__(self, end_epoch: Callable[[], None], schedulers: list[Any]) -> None:
        self.end_epoch = end_epoch
        self.schedulers = schedulers

    def __bool__(self) -> bool:
        return True

    def step(self) -> None:
        self.end_epoch()

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


def build_channel_optimizer(
    optimizer: Any, icrf: nn.Module, model: nn.Module, mode: str, lr: float
) -> tuple[ChannelOptimizer, str]:
    r"""The :class:`ChannelOptimizer` of a trainer, from its ``optimizer`` argument.

    :param None, torch.optim.Optimizer, list, ChannelOptimizer optimizer: ``None`` builds
        Adam(``lr``) per channel (``mode="per_channel"``) or one Adam on every trainable
        parameter of ``model`` (``"single"``); one optimizer, or a list of one, means
        ``"single"``; a longer list gives one optimizer per channel; a
        :class:`ChannelOptimizer` is used as it is.
    :param torch.nn.Module icrf: the ICRF (its ``channels`` and ``channel_parameters``).
    :param torch.nn.Module model: the trained model (the ICRF or a module holding it).
    :param str mode: the requested mode, ``"per_channel"`` or ``"single"``.
    :param float lr: learning rate of the optimizers built here.
    :return: (tuple) the optimizer and the mode it implies (``mode`` unless ``optimizer``
        sets it).
    :raises ValueError: with ``optimizer=None`` and ``"per_channel"``, if ``model`` has
        trainable parameters outside the ICRF's channel parameters.
    :raises TypeError: for another kind of ``optimizer``.
    """
    groups = [list(icrf.channel_parameters(c)) for c in range(icrf.channels)]
    if isinstance(optimizer, ChannelOptimizer):
        return optimizer, mode
    if optimizer is None:
        if mode == "per_channel":
            channel_ids = {id(p) for g in groups for p in g}
            extra = [
                p
                for p in model.parameters()
                if p.requires_grad and id(p) not in channel_ids
            ]
            if extra:
                raise ValueError(
                    f"The model has {len(extra)} trainable parameter(s) outside the ICRF's "
                    "channel parameters; use optimizer_mode='single' or pass optimizers."
                )
            opts = [torch.optim.Adam(g, lr=lr) for g in groups]
        else:
            opts = [
                torch.optim.Adam(
                    [p for p in model.parameters() if p.requires_grad],
                    lr=lr,
                )
            ]
        return ChannelOptimizer(opts, groups, mode), mode
    if isinstance(optimizer, torch.optim.Optimizer):
        return ChannelOptimizer([optimizer], groups, "single"), "single"
    if isinstance(optimizer, (list, tuple)):
        if len(optimizer) == 1:
            return ChannelOptimizer(list(optimizer), groups, "single"), "single"
        return ChannelOptimizer(list(optimizer), groups, "per_channel"), "per_channel"
    raise TypeError(
        "Expected `optimizer` to be None, a torch.optim.Optimizer, a list of them or a "
        f"ChannelOptimizer, but got {type(optimizer).__name__}."
    )


def build_lr_schedulers(scheduler: Any, optimizer: ChannelOptimizer) -> list[Any]:
    r"""One learning-rate scheduler (or ``None``) per inner optimizer of ``optimizer``.

    :param None, torch.optim.lr_scheduler.LRScheduler, list, Callable scheduler: ``None``
        (no scheduler), a list with one scheduler or ``None`` per optimizer, one scheduler
        (with one optimizer), or a factory ``optimizer -> scheduler`` applied to each
        optimizer. An ``_EpochEnd`` gives back its schedulers.
    :param ChannelOptimizer optimizer: the trainer's optimizer.
    :return: (list) the schedulers, one per inner optimizer.
    :raises ValueError: if their number does not match the optimizers'.
    :raises TypeError: for another kind of ``scheduler``.
    """
    n = len(optimizer.optimizers)
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
        return [scheduler(opt) for opt in optimizer.optimizers]
    raise TypeError(
        "Expected `scheduler` to be None, an LR scheduler, a list of them or a factory, "
        f"but got {type(scheduler).__name__}."
    )
