r"""Per-term loss logging for :class:`deepinv.Trainer`.

``deepinv.Trainer`` logs each loss under its class name: two losses of one class collide, and a
scheduler hides the losses it wraps. :class:`TermLoggingTrainer` adds one log entry per term of
every :class:`deepinv_icrf.loss.WeightedLossScheduler` in ``losses``, under the term's own name,
with running means kept in :class:`deepinv.utils.AverageMeter` objects of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deepinv.training import Trainer
from deepinv.utils import AverageMeter

from deepinv_icrf.loss.scheduler import WeightedLossScheduler

__all__ = ["TermLoggingTrainer", "term_log_keys"]

_RESERVED_KEYS = ("TotalLoss", "gradient_norm", "step")


def term_log_keys(
    losses: list[torch.nn.Module], reserved: set[str] | None = None
) -> list[tuple[int, str, str]]:
    r"""Log keys of the terms of every :class:`WeightedLossScheduler` in ``losses``.

    A term is logged under its name; when that name is already taken (by a loss or metric class
    name in ``reserved``, by ``TotalLoss``, or by a term of another scheduler) it is logged as
    ``"<SchedulerClass>[<index in losses>].<name>"``.

    :param list losses: the trainer's losses.
    :param set[str], None reserved: keys already used by the trainer's own logs, default ``None``.
    :return: (list) ``(index in losses, term name, log key)`` for every term.

    :Example:

    >>> from deepinv.loss import SupLoss, TVLoss
    >>> from deepinv_icrf.loss import WeightedLossScheduler
    >>> term_log_keys([SupLoss(), WeightedLossScheduler([SupLoss(), TVLoss(), TVLoss()])])
    [(1, 'SupLoss', 'WeightedLossScheduler[1].SupLoss'), (1, 'TVLoss', 'TVLoss'), (1, 'TVLoss_1', 'TVLoss_1')]
    """
    taken = set(_RESERVED_KEYS) | {loss.__class__.__name__ for loss in losses}
    if reserved is not None:
        taken |= set(reserved)
    out: list[tuple[int, str, str]] = []
    for k, loss in enumerate(losses):
        if not isinstance(loss, WeightedLossScheduler):
            continue
        for name in loss.names:
            key = (
                name if name not in taken else f"{loss.__class__.__name__}[{k}].{name}"
            )
            taken.add(key)
            out.append((k, name, key))
    return out


@dataclass
class TermLoggingTrainer(Trainer):
    r"""``deepinv.Trainer`` that logs every term of a :class:`WeightedLossScheduler` by name.

    Same fields and behaviour as :class:`deepinv.Trainer`, plus, for each term of each
    :class:`deepinv_icrf.loss.WeightedLossScheduler` in ``losses``:

    - a log entry (see :func:`term_log_keys` for its key) holding the running mean, over the
      epoch, of the term's *unweighted* value (batches weighted by their size, as deepinv does
      for whole losses). A term whose weight is 0 for a batch is not computed and not counted.
    - ``term_loss_history[key]`` (and ``eval_term_loss_history[key]`` with
      ``compute_eval_losses=True``): the running mean recorded whenever deepinv records its
      ``loss_history``.

    During validation batches the schedulers' step counters are held (deepinv never switches
    losses to eval mode, so a plain ``Trainer`` would count validation calls as steps).
    Reading the term values costs one host synchronisation per batch, like deepinv's own loss
    logging.

    |sep|

    :Example:

    >>> import torch, deepinv as dinv
    >>> from deepinv_icrf.loss import WeightedLossScheduler
    >>> from deepinv_icrf.training import TermLoggingTrainer
    >>> x = torch.rand(4, 1, 8, 7)
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> loader = torch.utils.data.DataLoader([{"x": xi} for xi in x], batch_size=2)
    >>> net = dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None)
    >>> model = dinv.models.ArtifactRemoval(net)
    >>> loss = WeightedLossScheduler([dinv.loss.SupLoss(), dinv.loss.TVLoss()], weights=[1.0, 0.1])
    >>> trainer = TermLoggingTrainer(
    ...     model, physics, torch.optim.Adam(model.parameters()), loader, epochs=1,
    ...     losses=loss, metrics=[], online_measurements=True, save_path=None,
    ...     verbose=False, show_progress_bar=False, device="cpu",
    ...     non_blocking_transfers=False,
    ... )
    >>> _ = trainer.train()
    >>> sorted(trainer.term_loss_history)
    ['SupLoss', 'TVLoss']
    """

    def setup_train(self, train: bool = True, **kwargs) -> None:
        r"""deepinv's set-up, then one meter and one history per scheduler term.

        :param bool train: whether the model is being trained.
        """
        super().setup_train(train=train, **kwargs)
        reserved = {m.__class__.__name__ for m in self.metrics}
        self.term_log_keys = term_log_keys(list(self.losses), reserved=reserved)
        self.logs_terms_train = {
            key: AverageMeter("Training loss " + key, ":.2e")
            for _, _, key in self.term_log_keys
        }
        self.logs_terms_eval = {
            key: AverageMeter("Validation loss " + key, ":.2e")
            for _, _, key in self.term_log_keys
        }
        self.term_loss_history = {key: [] for _, _, key in self.term_log_keys}
        self.eval_term_loss_history = {key: [] for _, _, key in self.term_log_keys}

    def reset_metrics(self) -> None:
        r"""Reset deepinv's meters and the term meters."""
        super().reset_metrics()
        for meter in (*self.logs_terms_train.values(), *self.logs_terms_eval.values()):
            meter.reset()

    def compute_loss(
        self, physics, x, y, train: bool = True, epoch: int = None, step: bool = False
    ):
        r"""deepinv's ``compute_loss``, then one log entry per scheduler term.

        :param deepinv.physics.Physics physics: current physics operator.
        :param torch.Tensor x: ground truth.
        :param torch.Tensor y: measurement.
        :param bool train: if ``True`` the model is trained, otherwise evaluated.
        :param int epoch: current epoch.
        :param bool step: whether to perform an optimisation step.
        :return: (tuple) ``(loss_total, x_net, logs)`` as deepinv's.
        """
        schedulers = {k for k, _, _ in self.term_log_keys}
        modes = {}
        for k in schedulers:
            sched = self.losses[k]
            sched.last_values = {}
            modes[k] = sched.training
            # Non-recursive on purpose: children keep their own mode.
            sched.training = sched.training and train
        try:
            loss_total, x_net, logs = super().compute_loss(
                physics, x, y, train=train, epoch=epoch, step=step
            )
        finally:
            for k, mode in modes.items():
                self.losses[k].training = mode

        meters = self.logs_terms_train if train else self.logs_terms_eval
        entries = [
            (key, self.losses[k].last_values[name], self.losses[k].last_batch_size)
            for k, name, key in self.term_log_keys
            if name in self.losses[k].last_values
        ]
        if entries:
            # one host sync for all terms
            values = torch.stack([v.to(torch.float64) for _, v, _ in entries]).tolist()
            for (key, _, n), value in zip(entries, values, strict=True):
                meters[key].update(value, n=n)
                logs[key] = meters[key].avg
        return loss_total, x_net, logs

    def step(
        self,
        epoch,
        progress_bar,
        train_ite: int = None,
        train: bool = True,
        last_batch: bool = False,
        update_progress_bar=False,
    ):
        r"""deepinv's ``step``, then record the term histories when deepinv records its own.

        :param int epoch: current epoch.
        :param progress_bar: progress bar.
        :param int train_ite: train iteration.
        :param bool train: if ``True`` the model is trained, otherwise evaluated.
        :param bool last_batch: whether this is the last batch of the epoch.
        :param bool update_progress_bar: whether to refresh the progress bar.
        """
        out = super().step(
            epoch,
            progress_bar,
            train_ite=train_ite,
            train=train,
            last_batch=last_batch,
            update_progress_bar=update_progress_bar,
        )
        if train and (self.log_train_batch or last_batch):
            for key, meter in self.logs_terms_train.items():
                self.term_loss_history[key].append(meter.avg)
        elif not train and last_batch and self.compute_eval_losses:
            for key, meter in self.logs_terms_eval.items():
                self.eval_term_loss_history[key].append(meter.avg)
        return out
