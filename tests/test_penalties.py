from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_icrf.functional import (
    endpoint_penalty,
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)

PENALTIES = [monotonicity_penalty, range_penalty, endpoint_penalty, smoothness_penalty]


# Independent references: one channel (a 1-D list of samples) at a time, plain loops.
def ref_monotonicity(f, squared=True):
    total = 0.0
    for k in range(len(f) - 1):
        df = f[k + 1] - f[k]
        if df <= 0:
            total += df * df if squared else -df
    return total


def ref_range(f):
    return sum(max(-v, 0.0) + max(v - 1.0, 0.0) for v in f)


def ref_endpoint(f):
    return f[0] ** 2 + (f[-1] - 1.0) ** 2


def ref_smoothness(f):
    return sum((f[k - 1] - 2 * f[k] + f[k + 1]) ** 2 for k in range(1, len(f) - 1))


REFS = {
    monotonicity_penalty: ref_monotonicity,
    range_penalty: ref_range,
    endpoint_penalty: ref_endpoint,
    smoothness_penalty: ref_smoothness,
}


def wobbly_curves(shape, device, rng):
    """Curves that leave [0, 1], step down and have loose endpoints."""
    grid = torch.linspace(0, 1, shape[-1], device=device, dtype=torch.float64)
    noise = torch.randn(*shape, generator=rng, device=device, dtype=torch.float64)
    return grid**0.5 + 0.15 * noise


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_penalty_matches_reference(penalty, device, rng):
    curve = wobbly_curves((2, 3, 17), device, rng)
    out = penalty(curve)
    assert out.shape == (2, 3) and out.dtype == torch.float64
    ref = REFS[penalty]
    for a in range(2):
        for c in range(3):
            want = ref(curve[a, c].tolist())
            assert out[a, c].item() == pytest.approx(want, rel=1e-10, abs=1e-15)
    assert bool((out > 0).all())  # the wobbly curves break every rule


def test_monotonicity_linear_variant_matches_reference(device, rng):
    curve = wobbly_curves((3, 17), device, rng)
    out = monotonicity_penalty(curve, squared=False)
    for c in range(3):
        want = ref_monotonicity(curve[c].tolist(), squared=False)
        assert out[c].item() == pytest.approx(want, rel=1e-10)


def test_penalties_known_values():
    f = torch.tensor([[-0.1, 0.4, 0.3, 1.2]], dtype=torch.float64)
    assert monotonicity_penalty(f).item() == pytest.approx(0.01)
    assert monotonicity_penalty(f, squared=False).item() == pytest.approx(0.1)
    assert range_penalty(f).item() == pytest.approx(0.3)
    assert endpoint_penalty(f).item() == pytest.approx(0.01 + 0.04)
    assert smoothness_penalty(f).item() == pytest.approx(0.6**2 + 1.0**2)


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_penalty_gradcheck(penalty):
    gen = torch.Generator().manual_seed(1)
    curve = torch.linspace(0, 1, 9, dtype=torch.float64) + 0.2 * torch.randn(
        2, 9, generator=gen, dtype=torch.float64
    )
    curve.requires_grad_(True)
    assert torch.autograd.gradcheck(penalty, (curve,))


def test_monotonicity_linear_gradcheck():
    gen = torch.Generator().manual_seed(2)
    curve = torch.randn(2, 9, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c: monotonicity_penalty(c, squared=False), (curve,)
    )


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_penalty_dtypes(penalty, dtype, out_dtype, device, rng):
    curve = wobbly_curves((3, 8), device, rng)
    out = penalty(curve.to(dtype))
    assert out.dtype == out_dtype and out.device.type == device.type
    tol = 2e-2 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(
        out.double(), penalty(curve.to(dtype).double()), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_penalty_rejects_bad_curves(penalty):
    with pytest.raises(ValueError, match="`curve`"):
        penalty(torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="L >= 2"):
        penalty(torch.zeros(3, 1))
    with pytest.raises(TypeError, match="`curve`"):
        penalty(torch.zeros(3, 5, dtype=torch.int64))


# ---------------------------------------------------------------------------- laws
_increments = st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=40)


def _pinned_increasing(increments: list[float]) -> torch.Tensor:
    steps = torch.tensor(increments, dtype=torch.float64)
    f = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
    f = f / f[-1]
    f[-1] = 1.0
    return f.unsqueeze(0)


@settings(max_examples=50, deadline=None)
@given(increments=_increments)
def test_increasing_pinned_curve_has_no_penalty(increments):
    f = _pinned_increasing(increments)
    assert monotonicity_penalty(f).item() == 0.0
    assert monotonicity_penalty(f, squared=False).item() == 0.0
    assert range_penalty(f).item() == 0.0
    assert endpoint_penalty(f).item() == 0.0


@settings(max_examples=50, deadline=None)
@given(codes=st.lists(st.integers(-200, 200), min_size=2, max_size=30))
def test_monotonicity_positive_iff_a_step_goes_down(codes):
    # values on a 0.01 grid: a down step is never so small that its square underflows
    values = [k / 100 for k in codes]
    f = torch.tensor([values], dtype=torch.float64)
    goes_down = any(b < a for a, b in zip(values[:-1], values[1:], strict=True))
    assert (monotonicity_penalty(f).item() > 0) == goes_down
    assert (monotonicity_penalty(f, squared=False).item() > 0) == goes_down


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-2.0, 2.0), min_size=2, max_size=30))
def test_range_positive_iff_a_value_leaves_unit_interval(values):
    f = torch.tensor([values], dtype=torch.float64)
    outside = any(v < 0 or v > 1 for v in values)
    assert (range_penalty(f).item() > 0) == outside


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=30),
    a=st.floats(-5.0, 5.0),
    b=st.floats(-5.0, 5.0),
)
def test_smoothness_ignores_added_straight_lines(values, a, b):
    f = torch.tensor([values], dtype=torch.float64)
    line = a + b * torch.arange(len(values), dtype=torch.float64)
    assert smoothness_penalty(line.unsqueeze(0)).item() == pytest.approx(0.0, abs=1e-20)
    got = smoothness_penalty(f + line).item()
    assert got == pytest.approx(smoothness_penalty(f).item(), rel=1e-9, abs=1e-10)


def test_flat_steps_are_not_penalised():
    f = torch.tensor([[0.0, 0.5, 0.5, 1.0]], dtype=torch.float64)
    assert monotonicity_penalty(f).item() == 0.0
    assert np.isclose(smoothness_penalty(f).item(), 0.5)
