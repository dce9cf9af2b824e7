r"""Random pixel positions drawn in memory proportional to the sample, not to the image."""

from __future__ import annotations

import pytest
import torch

from deepinv_icrf.calibration.core import _PERMUTATION_LIMIT, random_positions


@pytest.mark.parametrize(
    ("total", "m"),
    [(10, 20), (1000, 300), (_PERMUTATION_LIMIT + 1, 1000), (50_000_000, 64_000)],
)
def test_distinct_positions_in_range(total, m):
    g = torch.Generator().manual_seed(0)
    p = random_positions(total, m, g)
    assert p.dtype == torch.long and p.numel() == min(total, m)
    assert p.unique().numel() == p.numel()
    assert int(p.min()) >= 0 and int(p.max()) < total


def test_large_draw_is_uniform():
    # 64000 draws of 5e7 positions: mean (total - 1) / 2 within 4 standard errors, and
    # every tenth of the range holds about a tenth of them
    total, m = 50_000_000, 64_000
    p = random_positions(total, m, torch.Generator().manual_seed(1)).double()
    se = total / 12**0.5 / m**0.5
    assert abs(float(p.mean()) - (total - 1) / 2) < 4 * se
    counts = torch.histc(p, bins=10, min=0, max=total)
    assert float((counts / m - 0.1).abs().max()) < 0.01


def test_seeded():
    a = random_positions(50_000_000, 500, torch.Generator().manual_seed(3))
    b = random_positions(50_000_000, 500, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
