r"""``merge_hdr(..., device=...)``: the merge runs where it is asked to."""

from __future__ import annotations

import numpy as np
import torch

from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.models import ICRF


def test_merge_hdr_on_a_device(device):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(3, 9, 7, 3)).astype(np.uint8)
    times = [0.5, 1.0, 2.0]
    icrf = ICRF.from_response("gamma", channels=3)
    expect = merge_hdr(codes, times, icrf, return_std=True)
    got = merge_hdr(codes, times, icrf, return_std=True, device=device)
    assert isinstance(got[0], np.ndarray)  # numpy in, numpy out, whatever the device
    for a, b in zip(got, expect, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    y = torch.from_numpy(codes).movedim(-1, 1).float() / 255  # a CPU tensor
    out = merge_hdr(y, torch.tensor(times), icrf, device=device)
    assert out.device.type == device.type
    np.testing.assert_allclose(out.movedim(0, -1).cpu().numpy(), expect[0], rtol=1e-5)
