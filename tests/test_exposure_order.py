r"""The curve-free order check: listings reversed are refused, one frame at the wrong stop is
left to the time check (a fit) or warned about (a merge)."""

from __future__ import annotations

import warnings

import pytest
import torch

from deepinv_icrf.functional.exposure_order import (
    check_exposure_order,
    darker_fractions,
)
from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

TIMES = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0])


def _stack(device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 24, 20, generator=g) * 0.5 + 0.02
    return ExposureStack(TIMES, response="gamma")(x.to(device))[0]


def test_darker_fractions_by_hand(device):
    y = torch.tensor([[0.2, 0.5, 0.9, 1.0], [0.1, 0.6, 0.9, 1.0], [0.3, 0.7, 0.0, 1.0]])
    order, darker, count = darker_fractions(y.to(device), torch.tensor([1.0, 2.0, 4.0]))
    # step 0 -> 1: pixels 0, 1 differ (2 differ, both unclipped), one darker
    # step 1 -> 2: pixels 0, 1 (pixel 2 is black in frame 2, pixel 3 white)
    assert order.tolist() == [0, 1, 2]
    assert count.tolist() == [2, 2]
    assert darker.tolist() == [0.5, 0.0]


def test_reversed_listing_refused(device):
    y = _stack(device)
    with pytest.raises(ValueError, match=r"grow with the brightness .* wrong order"):
        check_exposure_order(y, TIMES.flip(0))


def test_one_frame_at_the_wrong_stop_is_warned_not_refused(device):
    y = _stack(device)
    times = TIMES.clone()
    times[1] = 1.5 * times[2]  # frame 1 listed 2.6 stops long: one step out of order
    with pytest.warns(
        UserWarning, match=r"out of order .* exposure 1 \(listed 1.5 s\)"
    ):
        check_exposure_order(y, times)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_exposure_order(y, times, warn=False)
    with pytest.warns(UserWarning, match="out of order"):
        merge_hdr(y, times, ICRF(n_points=64).to(device))


def test_equally_bright_frames_pass_silently(device):
    g = torch.Generator().manual_seed(1)
    frame = torch.rand(3, 24, 20, generator=g) * 0.8 + 0.1
    noise = torch.randn(2, 3, 24, 20, generator=g) * 0.01
    y = ((frame + noise).clamp(0, 1) * 255).round() / 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_exposure_order(y.to(device), torch.tensor([1.0, 2.0]))
