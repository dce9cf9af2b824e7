r"""The shared argument checks: finiteness and ranges found in one pass over the values."""

from __future__ import annotations

import pytest
import torch

from deepinv_icrf._checks import check_finite, check_range

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 4_999, 9_999])
def test_a_non_finite_value_anywhere_is_found(device, dtype, bad, where):
    x = torch.rand(10_000, device=device).to(dtype)
    x[where] = bad
    with pytest.raises(ValueError, match="`x` to be finite, but it holds 1 NaN"):
        check_finite(x, "x")
    with pytest.raises(ValueError, match="`x` to be finite, but it holds 1 NaN"):
        check_range(x, "x", 0.0, float("inf"))


@pytest.mark.parametrize("dtype", FLOATS)
def test_finite_values_pass_and_ranges_are_checked(device, dtype):
    x = torch.linspace(0.0, 1.0, 257, device=device).to(dtype).view(1, 257)
    assert check_finite(x, "x") is x
    assert check_range(x.t(), "x") is not None  # strided
    with pytest.raises(
        ValueError, match=r"values in \[0.5, 1.0\], but got values in \[0, 1\]"
    ):
        check_range(x, "x", 0.5, 1.0)
    with pytest.raises(
        ValueError, match=r"values in \[0.0, 0.5\], but got values in \[0, 1\]"
    ):
        check_range(x, "x", 0.0, 0.5)


def test_integer_and_empty_tensors_keep_their_behaviour(device):
    codes = torch.tensor([0, 7, 255], device=device, dtype=torch.uint8)
    assert check_finite(codes, "codes") is codes
    assert check_range(codes, "codes", 0, 255) is codes
    with pytest.raises(ValueError, match=r"\[0, 200\], but got values in \[0, 255\]"):
        check_range(codes, "codes", 0, 200)
    empty = torch.empty(0, device=device)
    assert check_finite(empty, "e") is empty
