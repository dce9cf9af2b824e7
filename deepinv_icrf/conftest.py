from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_seed():
    """Seed every doctest so printed values are reproducible."""
    torch.manual_seed(0)
