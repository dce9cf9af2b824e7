from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deepinv_icrf._threads import run_blocks
from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.models import ICRF


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_run_blocks_every_block_once_on_worker_threads(two_threads):
    seen: dict[int, tuple[str, int]] = {}
    lock = threading.Lock()

    def work(start: int) -> None:
        with lock:
            assert start not in seen
            seen[start] = (threading.current_thread().name, torch.get_num_threads())

    run_blocks(work, range(0, 100, 10), torch.device("cpu"))
    assert sorted(seen) == list(range(0, 100, 10))
    # the blocks ran on the pool's threads, with torch single-threaded meanwhile
    assert all(name.startswith("deepinv-icrf") for name, _ in seen.values())
    assert all(threads == 1 for _, threads in seen.values())
    assert torch.get_num_threads() == 2  # restored


def test_run_blocks_raises_the_error_and_restores_threads(two_threads):
    done = []

    def work(start: int) -> None:
        if start == 3:
            raise ValueError("block 3")
        done.append(start)

    with pytest.raises(ValueError, match="block 3"):
        run_blocks(work, range(50), torch.device("cpu"))
    assert torch.get_num_threads() == 2
    assert (
        len(done) < 50
    )  # the blocks not yet started were cancelled or ran; none twice
    assert len(set(done)) == len(done)


def test_run_blocks_in_order_with_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        order = []
        run_blocks(order.append, [5, 1, 3], torch.device("cpu"))
        assert order == [5, 1, 3]
        assert threading.current_thread() is threading.main_thread()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("deghost", [None, 4.0])
def test_merge_float_path_same_bits_on_threads(deghost, device):
    # the float path (float input, or deghosting) merges blocks of rows on the pool: the
    # result must not depend on how many threads merged them
    g = np.random.default_rng(0)
    h, w, n = 67, 1400, 4  # 15 rows per block: five blocks
    radiance = np.exp(g.normal(-1.5, 1.0, size=(h, w, 3)))
    times = 2.0 ** np.arange(n) / 4
    codes = np.stack(
        [
            np.clip(
                (radiance * t) ** (1 / 2.2) * 255 + g.normal(0, 1, (h, w, 3)), 0, 255
            )
            for t in times
        ]
    ).astype(np.uint8)
    codes[1, 10:30, 5:25] = 40  # a ghost
    stack = torch.from_numpy(codes).permute(0, 3, 1, 2).to(device, torch.float32) / 255
    icrf = ICRF(channels=3).to(device)
    t = torch.tensor(times, device=device)
    before = torch.get_num_threads()
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            results.append(
                merge_hdr(
                    stack, t, icrf, deghost=deghost, return_std=True, return_count=True
                )
            )
        finally:
            torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)
    radiance_1, std_1, count_1 = results[0]
    assert bool(torch.isfinite(radiance_1).all())
    if deghost is not None:
        # the ghost's exposure is left out where it disagrees
        assert int(count_1[:, 10:30, 5:25].min()) < n
