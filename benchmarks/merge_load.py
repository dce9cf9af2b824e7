r"""Benchmark: ``merge_hdr`` on an idle machine and beside a busy one, pool against split ops.

The CPU merges hand their blocks to a pool of ``torch.get_num_threads()`` threads, each
running torch single-threaded (:mod:`deepinv_icrf._threads`). The baselines, run in the same
process on the same stack, are the two ways the merges ran before:

- **split**: the blocks one after another, every operation split over torch's threads (the
  deghosting merge before the pool);
- **one thread, small tiles**: the merge of codes in tiles of 2^15 codes, one after another
  on one thread (below torch's parallel grain; the merge of codes before the pool).

Each job runs on an idle machine and then beside ``--busy`` processes that spin on a core
each (``while True: pass``), as a user's browser or a second job would. The results of every
way are compared bit for bit.

Run from the repository root::

    PYTHONPATH=. python benchmarks/merge_load.py            # 12 MP x 7 (about two minutes)
    PYTHONPATH=. python benchmarks/merge_load.py --quick    # 2 MP x 5 smoke run

The figures to judge are the ratios to the baselines in the same run and condition.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time

import numpy as np
import torch

import deepinv_icrf.functional.merge as merge_module
import deepinv_icrf.hdr as hdr_module
from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.models import ICRF


def bracket(
    height: int, width: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    r"""An 8-bit sRGB-like bracket ``(N, H, W, 3)`` of a blocky scene, one stop apart, with a
    block that moves (something for the deghosting to leave out)."""
    g = np.random.default_rng(seed)
    scene = np.exp(g.normal(-2.0, 1.5, size=(height // 8 + 1, width // 8 + 1, 3)))
    scene = scene.repeat(8, 0).repeat(8, 1)[:height, :width]
    times = 2.0 ** np.arange(n) / 2.0 ** (n - 1)
    frames = []
    for k, t in enumerate(times):
        x = (scene * t) ** (1 / 2.2) * 255 + g.normal(0, 1, scene.shape)
        top = (k * height) // (2 * n)
        x[top : top + height // 8, : width // 6] = 90.0  # the moving block
        frames.append(np.clip(x, 0, 255).astype(np.uint8))
    return np.stack(frames), times


@contextlib.contextmanager
def busy(count: int):
    r"""``count`` processes spinning on a core each, stopped on exit."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(count)
    ]
    try:
        time.sleep(0.5 if procs else 0.0)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _split(work, blocks, device) -> None:
    # the baseline "split": blocks in order, torch's threads split every operation
    for block in blocks:
        work(block)


@contextlib.contextmanager
def way(name: str):
    r"""Run the merges the pool's way (``pool``) or a baseline's."""
    saved = (
        merge_module.run_blocks,
        hdr_module.run_blocks,
        merge_module._MERGE_TILE_CPU,
    )
    threads = torch.get_num_threads()
    try:
        if name == "split":
            merge_module.run_blocks = hdr_module.run_blocks = _split
        elif name == "one thread, small tiles":
            merge_module.run_blocks = hdr_module.run_blocks = _split
            merge_module._MERGE_TILE_CPU = 1 << 15
            torch.set_num_threads(1)
        yield
    finally:
        merge_module.run_blocks, hdr_module.run_blocks = saved[:2]
        merge_module._MERGE_TILE_CPU = saved[2]
        torch.set_num_threads(threads)


def timed(call, repeat: int, limit: float) -> tuple[float, object]:
    r"""Best wall time of ``repeat`` calls (fewer once one takes longer than ``limit`` s)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
        if best > limit:
            break
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 MP x 5")
    parser.add_argument(
        "--busy", type=int, default=1, help="spinning processes (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    h, w, n = (1200, 1600, 5) if args.quick else (3000, 4000, 7)
    codes, times = bracket(h, w, n)
    t = torch.tensor(times)
    icrf = ICRF(channels=3)
    jobs = {
        "codes": lambda: merge_hdr(codes, t, icrf),
        "deghost 4": lambda: merge_hdr(codes, t, icrf, deghost=4.0),
    }
    baselines = {"codes": "one thread, small tiles", "deghost 4": "split"}
    print(
        f"# {h * w / 1e6:.0f} MP x {n}, torch threads {torch.get_num_threads()}, best of "
        f"{args.repeat} (one run where a call takes over 20 s)"
    )
    print("| job | condition | way | wall (s) | vs baseline |")
    print("|---|---|---|---:|---:|")
    for job, call in jobs.items():
        results = {}
        for condition, count in (("idle", 0), (f"{args.busy} core(s) busy", args.busy)):
            walls = {}
            for name in ("pool", baselines[job]):
                with busy(count), way(name):
                    walls[name], results[name] = timed(call, args.repeat, 20.0)
            base = walls[baselines[job]]
            for name, wall in walls.items():
                print(
                    f"| {job} | {condition} | {name} | {wall:.2f} | {wall / base:.2f}x |"
                )
        same = np.array_equal(results["pool"], results[baselines[job]])
        print(f"# {job}: pool and {baselines[job]} bit-identical: {same}")


if __name__ == "__main__":
    main()
