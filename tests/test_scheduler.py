from __future__ import annotations

import copy
import math

import deepinv as dinv
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_icrf.functional import (
    constant_weight,
    cosine_weight,
    linear_ramp_weight,
    step_weight,
)
from deepinv_icrf.loss import (
    ConstantWeight,
    CosineWeight,
    LinearRampWeight,
    StepWeight,
    WeightedLossScheduler,
)
from deepinv_icrf.training import TermLoggingTrainer, term_log_keys

B, C, H, W = 3, 2, 13, 11


class ScaledSquaredError(dinv.loss.Loss):
    """Per-sample ``scale * mean((x_net - x)^2)`` with ``scale`` a registered buffer."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale))

    def forward(self, x_net, x, **kwargs):
        return self.scale * (x_net - x).pow(2).flatten(1).mean(1)


class AbsMean(dinv.loss.Loss):
    """Per-sample ``mean(|x_net|)``."""

    def forward(self, x_net, **kwargs):
        return x_net.abs().flatten(1).mean(1)


class MustNotRun(dinv.loss.Loss):
    def forward(self, x_net, **kwargs):
        raise AssertionError("a term with weight 0 was computed")


class CountingAdapt(dinv.loss.Loss):
    """Records how often ``adapt_model`` is called; wraps the model in a Sequential."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x_net, **kwargs):
        return x_net.flatten(1).mean(1)

    def adapt_model(self, model, **kwargs):
        self.calls += 1
        return torch.nn.Sequential(model)


def _data(device, dtype=torch.float64, seed=0):
    g = torch.Generator(device).manual_seed(seed)
    x = torch.rand(B, C, H, W, generator=g, device=device, dtype=dtype)
    x_net = torch.rand(B, C, H, W, generator=g, device=device, dtype=dtype)
    return x_net, x


def _ref_terms(x_net, x, scale):
    """Independent numpy loops: scaled squared error, abs mean (per sample), MSE (batch)."""
    xn = x_net.detach().cpu().numpy().astype(np.float64)
    xx = x.detach().cpu().numpy().astype(np.float64)
    sq, ab = np.zeros(B), np.zeros(B)
    for b in range(B):
        n = 0
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    sq[b] += (xn[b, c, i, j] - xx[b, c, i, j]) ** 2
                    ab[b] += abs(xn[b, c, i, j])
                    n += 1
        sq[b] = scale * sq[b] / n
        ab[b] = ab[b] / n
    mse = float(np.mean((xn - xx) ** 2))
    return sq, ab, mse


# ---------------------------------------------------------------- weighted sum


def test_weighted_sum_matches_independent_sum(device):
    x_net, x = _data(device)
    loss = WeightedLossScheduler(
        [ScaledSquaredError(3.0), AbsMean(), dinv.loss.SupLoss()],
        weights=[0.5, 2.0, 0.25],
    ).to(device=device, dtype=torch.float64)
    out = loss(x_net=x_net, x=x, y=x, physics=None, model=None, epoch=0)
    sq, ab, mse = _ref_terms(x_net, x, 3.0)
    expected = 0.5 * sq + 2.0 * ab + 0.25 * mse
    assert out.shape == (B,)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-6)
    assert loss.names == ["ScaledSquaredError", "AbsMean", "SupLoss"]
    assert loss.last_weights == {
        "ScaledSquaredError": 0.5,
        "AbsMean": 2.0,
        "SupLoss": 0.25,
    }
    np.testing.assert_allclose(
        float(loss.last_values["ScaledSquaredError"]), sq.mean(), rtol=1e-6
    )
    np.testing.assert_allclose(float(loss.last_values["SupLoss"]), mse, rtol=1e-6)
    np.testing.assert_allclose(
        float(loss.last_weighted_values["AbsMean"]), 2.0 * ab.mean(), rtol=1e-6
    )
    assert not loss.last_values["AbsMean"].requires_grad
    assert loss.last_values["AbsMean"].device.type == device.type
    assert loss.last_batch_size == B


def test_is_a_deepinv_loss_scheduler():
    loss = WeightedLossScheduler([AbsMean()])
    assert isinstance(loss, dinv.loss.BaseLossScheduler)
    assert isinstance(loss, dinv.loss.Loss)
    assert isinstance(loss.losses, torch.nn.ModuleList)


def test_dict_losses_and_dict_weights(device):
    x_net, x = _data(device)
    loss = WeightedLossScheduler(
        {"linearity": ScaledSquaredError(1.0), "mono": AbsMean()},
        weights={"mono": 0.1},
    ).to(device)
    out = loss(x_net=x_net, x=x)
    sq, ab, _ = _ref_terms(x_net, x, 1.0)
    np.testing.assert_allclose(out.cpu().numpy(), sq + 0.1 * ab, rtol=1e-6)
    assert loss.names == ["linearity", "mono"]


def test_half_precision_terms_promoted_to_float32():
    x_net = torch.rand(B, C, H, W).to(torch.bfloat16)
    loss = WeightedLossScheduler([AbsMean(), dinv.loss.SupLoss()])
    out = loss(x_net=x_net, x=x_net.clone())
    assert out.dtype == torch.float32
    assert out.shape == (B,)


def test_bad_term_shape_raises():
    class PerPixel(dinv.loss.Loss):
        def forward(self, x_net, **kwargs):
            return x_net.flatten(1)

    loss = WeightedLossScheduler({"pix": PerPixel()})
    with pytest.raises(ValueError, match="'pix'.*shape"):
        loss(x_net=torch.rand(B, C, H, W))


def test_missing_batch_reference_raises():
    loss = WeightedLossScheduler([AbsMean()])
    with pytest.raises(ValueError, match="`x_net` or `y`"):
        loss(x_net=None, y=None)


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0, 0.5), (2, 0.5), (3, 0.875), (4, 1.25), (5, 1.625), (6, 2.0), (9, 2.0)],
)
def test_linear_ramp_closed_form(t, expected):
    # ramp from 0.5 at t=2 to 2.0 at t=6: slope 0.375
    assert linear_ramp_weight(t, start=2, end=6, w0=0.5, w1=2.0) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0, 1.0), (1, 1.0 - 0.5 * (1 - math.cos(math.pi / 4))), (2, 0.5), (4, 0.0)],
)
def test_cosine_closed_form(t, expected):
    assert cosine_weight(t, start=0, end=4, w0=1.0, w1=0.0) == pytest.approx(
        expected, rel=1e-12, abs=1e-15
    )


def test_step_and_constant_closed_form():
    assert [step_weight(t, at=3, before=0.2, after=0.7) for t in range(5)] == [
        0.2,
        0.2,
        0.2,
        0.7,
        0.7,
    ]
    assert constant_weight(123.0, 0.3) == 0.3
    # zero-length ramp is an inclusive step
    assert [linear_ramp_weight(t, 2, 2, 0.0, 1.0) for t in (1, 2, 3)] == [0.0, 1.0, 1.0]


def test_schedule_objects_match_functions():
    for t in (0, 0.5, 1, 2.5, 7, 100):
        assert LinearRampWeight(1, 5, 0.1, 0.9)(t) == linear_ramp_weight(
            t, 1, 5, 0.1, 0.9
        )
        assert CosineWeight(1, 5, 0.1, 0.9)(t) == cosine_weight(t, 1, 5, 0.1, 0.9)
        assert StepWeight(2.5, 0.3, 0.0)(t) == step_weight(t, 2.5, 0.3, 0.0)
        assert ConstantWeight(0.4)(t) == constant_weight(t, 0.4)


@settings(max_examples=50, deadline=None)
@given(
    start=st.floats(0, 50),
    length=st.floats(0, 50),
    w0=st.floats(0, 10),
    w1=st.floats(0, 10),
    t1=st.floats(0, 200),
    t2=st.floats(0, 200),
)
def test_ramps_are_monotone_and_bounded(start, length, w0, w1, t1, t2):
    lo, hi = sorted((t1, t2))
    for fn in (linear_ramp_weight, cosine_weight):
        a = fn(lo, start, start + length, w0, w1)
        b = fn(hi, start, start + length, w0, w1)
        assert min(w0, w1) - 1e-12 <= a <= max(w0, w1) + 1e-12
        # moves from w0 towards w1 as t grows
        assert (b - a) * (w1 - w0) >= -1e-12


def test_weights_follow_epoch_schedules(device):
    x_net, x = _data(device)
    loss = WeightedLossScheduler(
        {"a": ScaledSquaredError(1.0), "b": AbsMean(), "c": dinv.loss.SupLoss()},
        weights={"a": LinearRampWeight(2, 6, 0.0, 1.0), "b": 0.5, "c": 2.0},
        schedules={"b": StepWeight(3), "c": CosineWeight(0, 4, 1.0, 0.0)},
    ).to(device)
    sq, ab, mse = _ref_terms(x_net, x, 1.0)
    for epoch in range(9):
        out = loss(x_net=x_net, x=x, epoch=epoch)
        wa = min(max((epoch - 2) / 4, 0.0), 1.0)
        wb = 0.5 * (1.0 if epoch >= 3 else 0.0)
        wc = 2.0 * (1.0 - 0.5 * (1 - math.cos(math.pi * min(epoch / 4, 1.0))))
        assert loss.last_weights == pytest.approx({"a": wa, "b": wb, "c": wc})
        np.testing.assert_allclose(
            out.cpu().numpy(), wa * sq + wb * ab + wc * mse, rtol=1e-6, atol=1e-15
        )
        # terms with weight 0 are not computed, hence not in last_values
        assert set(loss.last_values) == {k for k, w in loss.last_weights.items() if w}


def test_step_counter_and_step_unit():
    x_net, x = _data("cpu")
    loss = WeightedLossScheduler(
        [AbsMean(), ScaledSquaredError()],
        weights=[LinearRampWeight(0, 4, 0.0, 1.0), 1.0],
        unit="step",
    )
    seen = []
    for _ in range(6):
        loss(x_net=x_net, x=x, epoch=0)
        seen.append(loss.last_weights["AbsMean"])
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert loss.step_count == 6
    # explicit step: used as is, counter unchanged
    loss(x_net=x_net, x=x, step=2)
    assert loss.last_weights["AbsMean"] == 0.5
    assert loss.step_count == 6
    # eval mode: counter frozen
    loss.eval()
    loss(x_net=x_net, x=x)
    loss(x_net=x_net, x=x)
    assert loss.step_count == 6
    loss.train()
    loss(x_net=x_net, x=x)
    assert loss.step_count == 7


def test_per_schedule_unit_overrides_scheduler_unit():
    x_net, x = _data("cpu")
    loss = WeightedLossScheduler(
        {"by_epoch": AbsMean(), "by_step": ScaledSquaredError()},
        weights={
            "by_epoch": LinearRampWeight(0, 10),
            "by_step": LinearRampWeight(0, 10, unit="step"),
        },
        unit="epoch",
    )
    loss.step_count = 4
    loss(x_net=x_net, x=x, epoch=1)
    assert loss.last_weights == pytest.approx({"by_epoch": 0.1, "by_step": 0.4})
    assert loss.weights_at(epoch=3, step=7) == pytest.approx(
        {"by_epoch": 0.3, "by_step": 0.7}
    )


def test_epoch_none_reads_as_epoch_zero():
    x_net, x = _data("cpu")
    loss = WeightedLossScheduler(
        [AbsMean(), ScaledSquaredError()],
        weights=[LinearRampWeight(0, 2, 0.5, 1.0), StepWeight(1)],
    )
    loss.step_count = 100  # must not be used as an epoch
    out_none = loss(x_net=x_net, x=x, epoch=None)
    assert loss.last_weights == {"AbsMean": 0.5, "ScaledSquaredError": 0.0}
    out_zero = loss(x_net=x_net, x=x, epoch=0)
    torch.testing.assert_close(out_none, out_zero, rtol=0, atol=0)


# ---------------------------------------------------------------- registration


def test_to_and_state_dict_reach_children_unlike_deepinv(device):
    ours = WeightedLossScheduler([ScaledSquaredError(2.0), AbsMean()])
    theirs = dinv.loss.StepLossScheduler(ScaledSquaredError(2.0), AbsMean())
    target = torch.float64
    ours.to(device=device, dtype=target)
    theirs.to(device=device, dtype=target)
    assert ours.losses[0].scale.dtype == target
    assert ours.losses[0].scale.device.type == device.type
    # deepinv keeps its losses in a plain tuple: .to() does not reach them
    assert theirs.losses[0].scale.dtype == torch.float32
    assert theirs.losses[0].scale.device.type == "cpu"
    assert "losses.0.scale" in ours.state_dict()
    assert not any(k.endswith("scale") for k in theirs.state_dict())


def test_wrapped_deepinv_scheduler_children_registered(device):
    inner = ScaledSquaredError(2.0)
    wrapped = dinv.loss.StepLossScheduler(inner, epoch_thresh=0)
    ours = WeightedLossScheduler([wrapped, AbsMean()])
    ours.to(device=device, dtype=torch.float64)
    assert inner.scale.dtype == torch.float64
    assert inner.scale.device.type == device.type
    assert "wrapped_losses.0.scale" in ours.state_dict()
    # a deep copy keeps the registered reference and deepinv's tuple entry the same object
    clone = copy.deepcopy(ours)
    assert clone.wrapped_losses[0] is clone.losses[0].losses[0]


def test_state_dict_roundtrip_restores_step_count():
    a = WeightedLossScheduler([ScaledSquaredError(2.0)], unit="step")
    x_net, x = _data("cpu")
    for _ in range(3):
        a(x_net=x_net, x=x)
    b = WeightedLossScheduler([ScaledSquaredError(5.0)], unit="step")
    b.load_state_dict(a.state_dict())
    assert b.step_count == 3
    assert float(b.losses[0].scale) == 2.0


# ---------------------------------------------------------------- deepinv schedulers


def test_wraps_seeded_random_scheduler():
    x_net, x = _data("cpu")
    sq, ab, _ = _ref_terms(x_net, x, 1.0)
    reference = dinv.loss.RandomLossScheduler(
        ScaledSquaredError(), AbsMean(), generator=torch.Generator().manual_seed(7)
    )
    random = dinv.loss.RandomLossScheduler(
        ScaledSquaredError(), AbsMean(), generator=torch.Generator().manual_seed(7)
    )
    ours = WeightedLossScheduler(
        {"random": random, "l2": ScaledSquaredError()}, weights=[0.5, 1.0]
    )
    picked = set()
    for _ in range(8):
        r = reference(x_net=x_net, x=x)
        out = ours(x_net=x_net, x=x, epoch=None)
        np.testing.assert_allclose(
            out.numpy(), 0.5 * r.numpy() + sq, rtol=1e-6, atol=1e-15
        )
        picked.add("sq" if np.allclose(r.numpy(), sq) else "ab")
    assert picked == {"sq", "ab"}


def test_wraps_step_and_epoch_schedulers_with_epoch_none():
    x_net, x = _data("cpu")
    sq, ab, _ = _ref_terms(x_net, x, 1.0)
    step = dinv.loss.StepLossScheduler(ScaledSquaredError(), epoch_thresh=1)
    inter = dinv.loss.InterleavedEpochLossScheduler(ScaledSquaredError(), AbsMean())
    # deepinv's own schedulers break on epoch=None
    with pytest.raises(TypeError):
        step(x_net=x_net, x=x, epoch=None)
    with pytest.raises(TypeError):
        inter(x_net=x_net, x=x, epoch=None)
    ours = WeightedLossScheduler({"step": step, "inter": inter}, weights=[1.0, 2.0])
    out = ours(x_net=x_net, x=x, epoch=None)  # children get epoch 0
    np.testing.assert_allclose(out.detach().numpy(), 2.0 * sq, rtol=1e-6)
    out = ours(
        x_net=x_net, x=x, epoch=1
    )  # step off (epoch <= 1), interleaved -> AbsMean
    np.testing.assert_allclose(out.detach().numpy(), 2.0 * ab, rtol=1e-6)
    out = ours(x_net=x_net, x=x, epoch=2)
    np.testing.assert_allclose(out.detach().numpy(), sq + 2.0 * sq, rtol=1e-6)


def test_adapt_model_chains_every_term_once():
    a, b, c = CountingAdapt(), CountingAdapt(), CountingAdapt()
    ours = WeightedLossScheduler([a, dinv.loss.InterleavedLossScheduler(b, c)])
    model = torch.nn.Identity()
    adapted = ours.adapt_model(model)
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)
    # three wrappers, one per loss
    assert isinstance(adapted[0][0][0], torch.nn.Identity)


# ---------------------------------------------------------------- zero weights, names


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_total_weight_returns_zeros_and_backward_works(device, dtype):
    x_net, x = _data(device, dtype=dtype)
    x_net.requires_grad_(True)
    loss = WeightedLossScheduler(
        [MustNotRun(), MustNotRun()], weights=[0.0, StepWeight(5)]
    )
    out = loss(x_net=x_net, x=x, epoch=0)
    assert out.shape == (B,)
    assert out.dtype == dtype
    assert out.device.type == device.type
    assert torch.count_nonzero(out) == 0
    assert loss.last_values == {}
    out.mean().backward()
    assert x_net.grad is None
    with torch.no_grad():
        assert not loss(x_net=x_net, x=x, epoch=0).requires_grad


def test_default_names_deduplicated():
    loss = WeightedLossScheduler(
        [AbsMean(), dinv.loss.TVLoss(), AbsMean(), AbsMean(), dinv.loss.TVLoss()]
    )
    assert loss.names == ["AbsMean", "TVLoss", "AbsMean_1", "AbsMean_2", "TVLoss_1"]


def test_term_log_keys_prefix_collisions():
    sched = WeightedLossScheduler([dinv.loss.SupLoss(), AbsMean()])
    keys = term_log_keys([dinv.loss.SupLoss(), sched], reserved={"AbsMean"})
    assert keys == [
        (1, "SupLoss", "WeightedLossScheduler[1].SupLoss"),
        (1, "AbsMean", "WeightedLossScheduler[1].AbsMean"),
    ]


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ["a"]}, "`names`.*one name per loss"),
        ({"names": ["a", "a"]}, "`names` to be unique"),
        ({"weights": [1.0]}, "`weights`.*one entry per loss"),
        ({"weights": [1.0, -0.5]}, r"`weights\[1\]` to be >= 0"),
        ({"weights": [1.0, float("nan")]}, r"`weights\[1\]` to be finite"),
        ({"weights": {"Nope": 1.0}}, "keys of `weights`.*unknown"),
        ({"schedules": [None]}, "`schedules`.*one entry per loss"),
        ({"unit": "batch"}, "`unit`.*'epoch', 'step'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightedLossScheduler([AbsMean(), ScaledSquaredError()], **kwargs)


def test_bad_losses_raise():
    with pytest.raises(ValueError, match="`losses` to hold at least one"):
        WeightedLossScheduler([])
    with pytest.raises(ValueError, match="`names` to be None"):
        WeightedLossScheduler({"a": AbsMean()}, names=["b"])
    with pytest.raises(TypeError, match=r"`losses\[1\]`"):
        WeightedLossScheduler([AbsMean(), "mse"])
    with pytest.raises(TypeError, match=r"`schedules\[0\]`"):
        WeightedLossScheduler([AbsMean()], schedules=[0.5])
    with pytest.raises(TypeError, match=r"`weights\[0\]` to be a real number"):
        WeightedLossScheduler([AbsMean()], weights=[torch.tensor(1.0)])


def test_bad_schedules_raise():
    with pytest.raises(ValueError, match="`end` >= `start`"):
        LinearRampWeight(5, 2)
    with pytest.raises(ValueError, match="`end` >= `start`"):
        CosineWeight(5, 2)
    with pytest.raises(ValueError, match="`w1` to be >= 0"):
        LinearRampWeight(0, 2, w1=-1.0)
    with pytest.raises(ValueError, match="`after` to be >= 0"):
        StepWeight(2, after=-1.0)
    with pytest.raises(ValueError, match="`value` to be >= 0"):
        ConstantWeight(-0.1)
    with pytest.raises(ValueError, match="`unit`"):
        StepWeight(2, unit="iteration")
    with pytest.raises(ValueError, match="`end` >= `start`"):
        linear_ramp_weight(0, 3, 1)
    loss = WeightedLossScheduler([AbsMean()])
    with pytest.raises(ValueError, match="`step` to be >= 0"):
        loss(x_net=torch.rand(B, 1, 3, 3), step=-1)
    with pytest.raises(ValueError, match="`step_count`"):
        loss.step_count = -2


# ---------------------------------------------------------------- gradients


def test_gradcheck_combined_loss(device):
    g = torch.Generator(device).manual_seed(1)
    x = torch.rand(2, 1, 5, 4, generator=g, device=device, dtype=torch.float64)
    x_net = torch.rand(2, 1, 5, 4, generator=g, device=device, dtype=torch.float64)
    x_net.requires_grad_(True)
    loss = WeightedLossScheduler(
        [ScaledSquaredError(1.5), dinv.loss.TVLoss(), dinv.loss.SupLoss()],
        weights=[0.7, LinearRampWeight(0, 4), 0.3],
    ).to(device=device, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: loss(x_net=z, x=x, epoch=2), (x_net,), eps=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------- trainer


class _CapturingTrainer(TermLoggingTrainer):
    def log_metrics_mlops(self, logs, step, train=True):
        self.captured.append((train, dict(logs)))


class _TinyDenoiser(dinv.models.Reconstructor):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y, physics, **kwargs):
        return y + self.conv(y)


def test_trainer_logs_every_term_by_name():
    torch.manual_seed(0)
    images = torch.rand(8, 1, 13, 11)
    train = torch.utils.data.DataLoader([{"x": im} for im in images[:6]], batch_size=2)
    val = torch.utils.data.DataLoader([{"x": im} for im in images[6:]], batch_size=2)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    model = _TinyDenoiser()
    sched = WeightedLossScheduler(
        [dinv.loss.SupLoss(), dinv.loss.TVLoss(), dinv.loss.TVLoss()],
        weights=[1.0, 0.5, 0.1],
    )
    trainer = _CapturingTrainer(
        model=model,
        physics=physics,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-2),
        train_dataloader=train,
        eval_dataloader=val,
        compute_eval_losses=True,
        epochs=1,
        losses=sched,
        metrics=[],
        online_measurements=True,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        device="cpu",
        non_blocking_transfers=False,
    )
    trainer.captured = []
    trainer.train()
    train_logs = [logs for is_train, logs in trainer.captured if is_train]
    eval_logs = [logs for is_train, logs in trainer.captured if not is_train]
    assert len(train_logs) == 1 and len(eval_logs) == 1
    for logs in (train_logs[0], eval_logs[0]):
        assert {"SupLoss", "TVLoss", "TVLoss_1", "TotalLoss"} <= set(logs)
    logs = train_logs[0]
    # both TV terms are the same unweighted quantity
    assert logs["TVLoss"] == pytest.approx(logs["TVLoss_1"], rel=1e-6)
    # the running total is the weighted sum of the running term means (equal batches)
    assert logs["TotalLoss"] == pytest.approx(
        logs["SupLoss"] + 0.5 * logs["TVLoss"] + 0.1 * logs["TVLoss_1"], rel=1e-5
    )
    assert trainer.term_loss_history["TVLoss_1"] == [logs["TVLoss_1"]]
    assert trainer.eval_term_loss_history["SupLoss"] == [eval_logs[0]["SupLoss"]]
    # 3 training batches counted; validation batches are not steps
    assert sched.step_count == 3
    assert sched.training
