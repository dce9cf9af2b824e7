r"""Blocks of work spread over threads, each running torch's operations single-threaded.

torch splits every operation above its parallel grain (32768 elements) over all its
threads, which then wait for each other at the end of the operation. When another process
keeps one core busy, every such wait lasts until the busy core is handed back: on a
2-core machine with one core taken, the deghosting merge of a 12 MP bracket took 50 s with
torch's two threads against 8 s with one (and 6.5 s with two on an idle machine).
Independent blocks handed out one at a time to as many threads as torch would use, each
running its operations on one thread, keep every core busy without those waits: a thread
slowed by a busy core merges fewer blocks, and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["run_blocks"]

T = TypeVar("T")


def run_blocks(
    work: Callable[[T], None], blocks: Iterable[T], device: torch.device
) -> None:
    r"""Call ``work(block)`` for every block, on the CPU spread over threads.

    On the CPU, with ``torch.get_num_threads() > 1`` and more than one block, the blocks go
    to that many threads, torch runs single-threaded meanwhile (its thread count is restored
    afterwards), and the first exception of a block is raised once the running blocks are
    done (the others are cancelled). Elsewhere (a GPU, one thread) the blocks run in order.
    ``work`` must write disjoint outputs: the blocks run in any order and concurrently.

    :param Callable work: the work of one block, given the block (e.g. its first row).
    :param Iterable blocks: the blocks.
    :param torch.device device: where the blocks compute.

    |sep|

    :Example:

    >>> import torch
    >>> out = torch.zeros(10)
    >>> def fill(start):
    ...     out[start : start + 5] = start
    >>> run_blocks(fill, range(0, 10, 5), torch.device("cpu"))
    >>> out.tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    """
    blocks = list(blocks)
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads <= 1 or len(blocks) <= 1:
        for block in blocks:
            work(block)
        return
    pool = ThreadPoolExecutor(
        max_workers=min(threads, len(blocks)), thread_name_prefix="deepinv-icrf"
    )
    torch.set_num_threads(1)
    try:
        for future in [pool.submit(work, block) for block in blocks]:
            future.result()
    finally:
        # on an error or Ctrl-C: no new block starts, the running ones finish (milliseconds)
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
