from __future__ import annotations

import os

import pytest
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    wanted = os.environ.get("DEEPINV_ICRF_TEST_DEVICE")
    if wanted:
        devices = [d for d in devices if d == wanted]
    return devices


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """CPU always, CUDA when present (narrow with DEEPINV_ICRF_TEST_DEVICE)."""
    return torch.device(request.param)


@pytest.fixture
def rng(device) -> torch.Generator:
    return torch.Generator(device).manual_seed(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
