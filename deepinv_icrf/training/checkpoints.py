r"""Checkpoints of :class:`~deepinv_icrf.training.ICRFTrainer`: the newest one of a run,
atomic writes, the random number generator states and the losses' states.

deepinv writes ``save_path/<timestamp>/ckp_<epoch>.pth.tar``; the trainer adds its own state
to it (:meth:`~deepinv_icrf.training.ICRFTrainer.save_model`) with the helpers here, so that an
interrupted fit resumed from it ends with the same curve as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepinv_icrf.io import atomic_write

__all__ = ["find_checkpoint", "checkpoint_state", "restore_checkpoint_state"]

_CKPT_PATTERN = re.compile(r"^ckp_(\d+)\.pth\.tar$")


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


# ---------------------------------------------------------------- the trainer's own state
# ``trainer`` is an ICRFTrainer (not imported: it imports this module).
def checkpoint_state(trainer: Any) -> dict[str, Any]:
    r"""What an :class:`~deepinv_icrf.training.ICRFTrainer` checkpoint holds besides the
    epoch: deepinv's keys (model, optimizer, scheduler, histories) and the trainer's own
    (term histories, early-stopping state, the losses' states, the random number generator
    states).

    :param deepinv_icrf.training.ICRFTrainer trainer: the trainer.
    :return: (dict) the checkpoint entries, read back by :func:`restore_checkpoint_state`.
    """
    return {
        "state_dict": trainer.model.state_dict(),
        "loss": trainer.loss_history,
        "train_metrics": trainer.train_metrics_history,
        "eval_loss": trainer.eval_loss_history,
        "eval_metrics": trainer.eval_metrics_history,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "term_loss": trainer.term_loss_history,
        "eval_term_loss": trainer.eval_term_loss_history,
        "channels": _channel_state(trainer),
        "losses": [
            loss.state_dict() if isinstance(loss, nn.Module) else None
            for loss in trainer.losses
        ],
        "rng": _rng_state(trainer._loaders()),
    }


def _channel_state(trainer: Any) -> dict[str, Any]:
    r"""The early-stopping state and the channel histories, as plain lists."""
    return {
        "best": list(trainer.channel_best),
        "bad_epochs": list(trainer.channel_bad_epochs),
        "stopped_epoch": list(trainer.stopped_epoch),
        "channel_loss_history": [list(v) for v in trainer.channel_loss_history],
        "curve_rmse_history": [list(v) for v in trainer.curve_rmse_history],
    }


def restore_checkpoint_state(trainer: Any, ckpt: dict[str, Any]) -> None:
    r"""Restore the part of a checkpoint that deepinv's ``load_model`` leaves out: the
    histories, the early-stopping state (frozen channels stay frozen), the losses' states
    and the random number generator states.

    :param deepinv_icrf.training.ICRFTrainer trainer: the trainer, set up for training.
    :param dict ckpt: a checkpoint written with :func:`checkpoint_state`.
    :raises ValueError: if it holds another number of channels or losses.
    """
    for key, attr in (
        ("loss", "loss_history"),
        ("train_metrics", "train_metrics_history"),
        ("eval_loss", "eval_loss_history"),
        ("eval_metrics", "eval_metrics_history"),
        ("term_loss", "term_loss_history"),
        ("eval_term_loss", "eval_term_loss_history"),
    ):
        saved = ckpt.get(key)
        current = getattr(trainer, attr, None)
        if isinstance(saved, dict) and isinstance(current, dict):
            for name, values in saved.items():
                if name in current:
                    current[name] = list(values)
    channels = ckpt.get("channels")
    if channels is not None:
        if len(channels["best"]) != trainer.icrf.channels:
            raise ValueError(
                f"Checkpoint holds {len(channels['best'])} channels, but the model has "
                f"{trainer.icrf.channels}."
            )
        trainer.channel_best = list(channels["best"])
        trainer.channel_bad_epochs = list(channels["bad_epochs"])
        trainer.stopped_epoch = list(channels["stopped_epoch"])
        trainer.channel_loss_history = [
            list(v) for v in channels["channel_loss_history"]
        ]
        trainer.curve_rmse_history = [list(v) for v in channels["curve_rmse_history"]]
        for c, stopped in enumerate(trainer.stopped_epoch):
            if stopped is not None:
                trainer.optimizer.freeze(c)
    states = ckpt.get("losses")
    if states is not None:
        if len(states) != len(trainer.losses):
            raise ValueError(
                f"Checkpoint holds the states of {len(states)} loss(es), but this trainer "
                f"has {len(trainer.losses)}."
            )
        for loss, state in zip(trainer.losses, states, strict=True):
            if isinstance(loss, nn.Module) and state is not None:
                _load_loss_state(loss, state)
    rng = ckpt.get("rng")
    if rng is not None:
        _set_rng_state(rng, trainer._loaders())
