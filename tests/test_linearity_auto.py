"""`RadiometricLinearityLoss(path="auto")`: when a new stack is built or evaluated densely."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_linearity import ref_linearity

import deepinv_icrf.loss.linearity as loss_module
from deepinv_icrf.loss import RadiometricLinearityLoss
from deepinv_icrf.models import ICRF


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def builds(monkeypatch):
    """Counts the histogram builds made by the loss module."""
    calls = []
    real = loss_module.build_linearity_histogram

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loss_module, "build_linearity_histogram", counting)
    return calls


def stack(seed: int, device="cpu", h: int = 13, w: int = 11, n: int = 4):
    """One scene of `n` exposures of 8-bit codes, 3 channels, unsorted times."""
    gen = np.random.default_rng(seed)
    times = np.array([0.5, 4.0, 1.0, 2.0, 0.75, 3.0][:n])
    radiance = 10.0 ** gen.uniform(-2.3, 0.3, size=(1, 1, 3, h, w))
    linear = np.clip(radiance * times[None, :, None, None, None], 0, 1)
    code = linear ** (1 / 2.2) + gen.normal(0, 0.01, size=linear.shape)
    y = np.round(np.clip(code, 0, 1) * 255) / 255
    as_t = lambda a: torch.tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    return as_t(y), as_t(times)


def make_icrf(device="cpu") -> ICRF:
    grid = torch.linspace(0, 1, 256, dtype=torch.float64)
    init = torch.stack([grid**1.8, grid**2.0, grid**2.3])
    return ICRF(channels=3, init=init, parameterization="free").to(
        dtype=torch.float64, device=device
    )


def step(loss, icrf, y, t):
    """Loss value (B,) and the gradient of its sum w.r.t. the ICRF parameters."""
    icrf.zero_grad()
    value = loss(
        x_net=icrf(y), y=y, physics=SimpleNamespace(exposure_times=t), model=icrf
    )
    value.sum().backward()
    return value.detach(), [p.grad.clone() for p in icrf.parameters()]


def assert_close(got, want, rtol=1e-6):
    got, want = got.double().cpu(), want.double().cpu()
    scale = want.abs().max().clamp(min=1e-30)
    assert ((got - want).abs().max() / scale).item() <= rtol


def test_auto_small_stack_dense_on_first_sighting_then_histogram(device, builds):
    icrf = make_icrf(device)
    loss = RadiometricLinearityLoss()
    loss._STREAM_AFTER = 0  # the rule applies from the first stack
    y, t = stack(0, device)
    first, first_grads = step(loss, icrf, y, t)
    assert loss.last_path == "dense" and "first sighting" in loss.last_reason
    assert len(builds) == 0
    second, second_grads = step(loss, icrf, y, t)
    assert loss.last_path == "histogram" and "8-bit codes" in loss.last_reason
    assert len(builds) == 1
    third, _ = step(loss, icrf, y, t)  # cache hit
    assert loss.last_path == "histogram" and len(builds) == 1
    assert_close(second, first)
    assert_close(third, first)
    for g, w in zip(second_grads, first_grads, strict=True):
        assert_close(g, w)
    # both equal an independent loop over pixels, pairs and channels
    with torch.no_grad():
        x = icrf(y)
    want = ref_linearity(y.cpu().numpy(), x.cpu().numpy(), t.cpu().numpy()).sum(1)
    assert_close(first, torch.from_numpy(want))


def test_auto_goes_dense_on_a_stream_of_new_small_stacks(builds, caplog):
    icrf = make_icrf()
    loss = RadiometricLinearityLoss()
    stacks = [stack(seed) for seed in range(5)]
    paths = []
    with caplog.at_level(logging.INFO, logger="deepinv_icrf"):
        for y, t in stacks:
            value, _ = step(loss, icrf, y, t)
            paths.append(loss.last_path)
            want = RadiometricLinearityLoss(path="dense")(
                x_net=icrf(y), y=y, physics=SimpleNamespace(exposure_times=t)
            )
            assert_close(value, want.detach())
    # the first two are built (nothing says yet that stacks are not reused), then dense
    assert paths == ["histogram", "histogram", "dense", "dense", "dense"]
    assert len(builds) == 2
    assert "first sighting of a small stack" in loss.last_reason
    assert caplog.text.count("first sighting") == 1  # logged once, not at every step
    # a stack that comes back is built; the next new stack is then built at once
    step(loss, icrf, *stacks[4])
    assert loss.last_path == "histogram" and len(builds) == 3
    step(loss, icrf, *stack(9))
    assert loss.last_path == "histogram" and len(builds) == 4


def test_auto_builds_a_large_new_stack_at_once(builds):
    icrf = make_icrf()
    loss = RadiometricLinearityLoss()
    loss._STREAM_AFTER = 0
    y, t = stack(1, h=9, w=7, n=3)  # 3 * 9 * 7 * 3 = 567 pixel pairs
    loss._DENSE_FIRST_BELOW = 567
    step(loss, icrf, y, t)
    assert loss.last_path == "histogram" and len(builds) == 1
    loss._DENSE_FIRST_BELOW = 568
    step(loss, icrf, *stack(2, h=9, w=7, n=3))
    assert loss.last_path == "dense" and "567 pixel pairs < 568" in loss.last_reason
    assert len(builds) == 1


def test_auto_explicit_paths_ignore_the_rule(builds):
    icrf = make_icrf()
    forced = RadiometricLinearityLoss(path="histogram")
    forced._STREAM_AFTER = 0
    for seed in range(3):
        step(forced, icrf, *stack(seed))
        assert forced.last_path == "histogram"
    assert len(builds) == 3
    dense = RadiometricLinearityLoss(path="dense")
    y, t = stack(0)
    for _ in range(2):
        step(dense, icrf, y, t)
        assert dense.last_path == "dense"
    assert len(builds) == 3


def test_auto_without_cache_goes_dense_after_two_stacks(builds):
    icrf = make_icrf()
    loss = RadiometricLinearityLoss(cache_size=0)
    y, t = stack(0)
    paths = []
    for _ in range(4):  # the same tensor, but nothing is kept: every call is new
        step(loss, icrf, y, t)
        paths.append(loss.last_path)
    assert paths == ["histogram", "histogram", "dense", "dense"]
    assert len(builds) == 2


def test_auto_precompute_and_clear_cache_after_a_deferred_stack(builds):
    icrf = make_icrf()
    loss = RadiometricLinearityLoss()
    loss._STREAM_AFTER = 0
    y, t = stack(3)
    step(loss, icrf, y, t)
    assert loss.last_path == "dense" and len(builds) == 0
    stats = loss.precompute(y, t)  # builds (not a cache hit on the deferred entry)
    assert len(builds) == 1 and stats.exact
    step(loss, icrf, y, t)
    assert loss.last_path == "histogram" and len(builds) == 1
    loss._STREAM_AFTER = 1
    step(loss, icrf, *stack(4))  # the last stack was reused: built at once
    assert loss.last_path == "histogram" and len(builds) == 2
    loss.clear_cache()  # forgets the stacks and the streak of new ones
    step(loss, icrf, *stack(7))
    assert loss.last_path == "histogram" and len(builds) == 3
    step(loss, icrf, *stack(8))  # one new stack in a row, not reused: dense
    assert loss.last_path == "dense" and len(builds) == 3


def test_auto_per_code_std_table_is_never_deferred(builds):
    icrf = make_icrf()
    loss = RadiometricLinearityLoss()
    loss._STREAM_AFTER = 0
    table = 0.003 + 0.01 * torch.linspace(0, 1, 256, dtype=torch.float64)
    y, t = stack(5)
    physics = SimpleNamespace(exposure_times=t)
    loss(x_net=icrf(y), y=y, physics=physics, model=icrf, y_std_table=table)
    assert loss.last_path == "histogram" and len(builds) == 1
    # continuous input with a per-code table still raises (the build checks the codes)
    yc = y * 0.999
    with pytest.raises(ValueError, match="one std per code"):
        loss(x_net=icrf(yc), y=yc, physics=physics, model=icrf, y_std_table=table)
    # a constant std table may be deferred: it does not need the codes
    const = torch.full((3, 1, 1), 0.01, dtype=torch.float64)
    y2, _ = stack(6)
    got = loss(x_net=icrf(y2), y=y2, physics=physics, model=icrf, y_std=const)
    assert loss.last_path == "dense" and "first sighting" in loss.last_reason
    again = loss(x_net=icrf(y2), y=y2, physics=physics, model=icrf, y_std=const)
    assert loss.last_path == "histogram"
    assert_close(again.detach(), got.detach())


def test_path_rule_memory_is_saved_with_the_loss():
    from deepinv_icrf.training.trainer import _load_loss_state

    loss = RadiometricLinearityLoss()
    loss._unrepeated = 5
    state = loss.state_dict()
    assert state["_extra_state"] == {"unrepeated": 5}
    fresh = RadiometricLinearityLoss()
    fresh.load_state_dict(state)
    assert fresh._unrepeated == 5
    # a checkpoint from before the extra state loads (the loss keeps its fresh memory)
    older = RadiometricLinearityLoss()
    _load_loss_state(older, {})
    assert older._unrepeated == 0
    with pytest.raises(RuntimeError, match="unexpected keys"):
        _load_loss_state(older, {"_extra_state": {"unrepeated": 1}, "bogus": 1})
