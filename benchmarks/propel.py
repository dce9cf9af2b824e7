r"""Benchmark: PROPEL loss, official formulation vs :class:`deepinv_icrf.loss.PROPELLoss`.

The official formulation is re-implemented here from its published equations (direct
products of densities, ``T_1`` and ``T_2`` summed in linear space, component pairs gathered
with index lists built per call from ``itertools.combinations``, denominators clamped at the
float64 machine epsilon, ``sigma`` and the predicted stds squared and used as variances).

Timed: forward + backward, float32 on the CPU (or CUDA with ``--device cuda``), median of
several runs, for ``B = 4096`` samples, ``K`` in {2, 8, 32} and ``D`` in {1, 3, 16}, plus the
per-pixel image layout on ``3 x 256 x 256`` images with ``K = 4`` (the official formulation
applied to every pixel as a 1-D problem). Then a set of extreme inputs (distant targets, tiny
and huge scales, large ``D`` and ``K``): how many of them each keeps finite, loss and gradient.

Run from the repository root::

    PYTHONPATH=. python benchmarks/propel.py          # full
    PYTHONPATH=. python benchmarks/propel.py --quick  # smaller sizes, fewer repeats
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch
from torch import Tensor

from deepinv_icrf.loss import PROPELLoss

_EPS = 7.0 / 3 - 4.0 / 3 - 1  # float64 machine epsilon, as in the official code


# --------------------------------------------------------------------------------------
# The official formulation, re-implemented from its equations.
# --------------------------------------------------------------------------------------
def _official_g(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    d = mu2.shape[-1]
    if mu1.ndim < mu2.ndim:
        mu1 = mu1.unsqueeze(1)
    total = var1 + var2
    norm = math.sqrt(2 * math.pi) ** d * torch.sqrt(total.prod(-1))
    expo = ((2 * mu1 * mu2 - mu1**2 - mu2**2) / (2 * total).clamp_min(_EPS)).sum(-1)
    return torch.exp(expo) / norm.clamp_min(_EPS)


def _official_h(var: Tensor) -> Tensor:
    d = var.shape[-1]
    return 1 / ((2 * math.sqrt(math.pi)) ** d * torch.sqrt(var.prod(-1))).clamp_min(
        _EPS
    )


def official_propel(x_net: Tensor, target: Tensor, sigma: float) -> Tensor:
    r"""Per-sample official PROPEL loss; ``x_net`` ``(B, K, 2D)``, ``target`` ``(B, D)``."""
    k, d = x_net.shape[1], x_net.shape[2] // 2
    mu, std = x_net[..., :d], x_net[..., d:]
    var = std**2
    var_gt = x_net.new_full((1, 1, 1), sigma) ** 2
    t1 = (2 / k * _official_g(target, var_gt, mu, var)).sum(-1)
    t2 = _official_h(var_gt) + (_official_h(var) / k**2).sum(-1)
    pairs = list(itertools.combinations(range(k), 2))
    ii = torch.tensor([p[0] for p in pairs], dtype=torch.long).to(x_net.device)
    jj = torch.tensor([p[1] for p in pairs], dtype=torch.long).to(x_net.device)
    cross = _official_g(
        mu.index_select(1, ii),
        var.index_select(1, ii),
        mu.index_select(1, jj),
        var.index_select(1, jj),
    ).sum(1)
    t2 = t2 + 2 / k**2 * cross
    return (torch.log10(t2) - torch.log10(t1)).reshape(-1)


def official_propel_image(x_net: Tensor, target: Tensor, sigma: float) -> Tensor:
    r"""Official formulation per pixel: ``x_net`` ``(B, K, 2, C, H, W)``, ``target`` ``(B, C, H, W)``."""
    b, k = x_net.shape[:2]
    flat = x_net.permute(0, 3, 4, 5, 1, 2).reshape(-1, k, 2)
    loss = official_propel(flat, target.reshape(-1, 1), sigma)
    return loss.reshape(b, -1).mean(1)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_pair(fn_a, fn_b, repeats: int, device: torch.device) -> tuple[float, float]:
    r"""Best-of-``repeats`` times of two functions, runs interleaved (a, b, a, b, ...).

    The minimum is the least disturbed run on a shared machine; interleaving exposes both
    functions to the same load. One warm-up run each; heavy cases get fewer repeats.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - start)
    if max(times[0][0], times[1][0]) > 2.0:
        repeats = min(repeats, 3)
    times = ([], [])
    for _ in range(repeats):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def _fwd_bwd(loss_fn, x_net: Tensor, target: Tensor):
    def run():
        x = x_net.detach().requires_grad_(True)
        loss_fn(x, target).sum().backward()

    return run


def _case(b: int, k: int, d: int, device: torch.device, gen: torch.Generator):
    mu = torch.randn(b, k, d, generator=gen, device=device)
    std = 0.05 + torch.rand(b, k, d, generator=gen, device=device)
    target = torch.randn(b, d, generator=gen, device=device)
    return torch.cat([mu, std], -1), target


def bench(quick: bool, device: torch.device) -> list[tuple[str, float, float]]:
    gen = torch.Generator(device).manual_seed(0)
    sigma = 0.1
    b = 1024 if quick else 4096
    repeats = 3 if quick else 9
    ours = PROPELLoss(sigma=sigma, std_activation=None).to(device)
    rows = []
    for k in (2, 8, 32):
        for d in (1, 3, 16):
            x_net, target = _case(b, k, d, device, gen)
            t_off, t_our = _time_pair(
                _fwd_bwd(lambda x, t: official_propel(x, t, sigma), x_net, target),
                _fwd_bwd(lambda x, t: ours(x_net=x, x=t), x_net, target),
                repeats,
                device,
            )
            rows.append((f"B={b} K={k} D={d}", t_off, t_our))
    bi, size = (1, 128) if quick else (2, 256)
    mu = torch.rand(bi, 4, 1, 3, size, size, generator=gen, device=device)
    std = 0.05 + 0.2 * torch.rand(bi, 4, 1, 3, size, size, generator=gen, device=device)
    x_net = torch.cat([mu, std], 2)
    target = torch.rand(bi, 3, size, size, generator=gen, device=device)
    t_off, t_our = _time_pair(
        _fwd_bwd(lambda x, t: official_propel_image(x, t, sigma), x_net, target),
        _fwd_bwd(lambda x, t: ours(x_net=x, x=t), x_net, target),
        repeats,
        device,
    )
    rows.append((f"image B={bi} K=4 3x{size}x{size}", t_off, t_our))
    return rows


# --------------------------------------------------------------------------------------
# Extreme inputs
# --------------------------------------------------------------------------------------
def extreme_cases(device: torch.device) -> list[tuple[str, Tensor, Tensor, float]]:
    r"""``(name, x_net (B, K, 2D), target (B, D), sigma)`` in float32; true losses are finite."""
    gen = torch.Generator(device).manual_seed(1)
    cases = []

    def add(
        name: str, k: int, d: int, scale: float, shift: float, std: float, sigma: float
    ):
        mu = scale * torch.randn(4, k, d, generator=gen, device=device)
        stds = std * (0.5 + torch.rand(4, k, d, generator=gen, device=device))
        target = scale * torch.randn(4, d, generator=gen, device=device) + shift
        cases.append((name, torch.cat([mu, stds], -1), target, sigma))

    for shift in (10.0, 100.0, 1e3, 1e4):
        add(f"distant target {shift:g}", 4, 2, 1.0, shift, 0.1, 0.1)
    for sigma in (1e-8, 1e-5, 1e-3, 1e3, 1e5, 1e8):
        add(f"sigma {sigma:g}", 4, 3, 1.0, 0.0, 0.1, sigma)
    for std in (1e-6, 1e-4, 1e2, 1e4):
        add(f"stds {std:g}", 4, 3, 1.0, 0.0, std, 0.1)
    for d in (16, 32, 64):
        add(f"D={d}", 4, d, 1.0, 0.0, 0.1, 0.1)
        add(f"D={d} small scales", 4, d, 0.01, 0.0, 0.01, 0.01)
    for k in (16, 32, 64):
        add(f"K={k}", k, 3, 1.0, 0.0, 0.1, 0.1)
        add(f"K={k} D=64 distant", k, 64, 1.0, 5.0, 0.1, 0.1)
    add("all collapsed on target", 8, 4, 0.0, 0.0, 0.1, 0.1)
    add("tiny sigma and stds, D=16", 8, 16, 1.0, 0.0, 1e-4, 1e-4)
    add("huge scales, D=16", 8, 16, 1e4, 0.0, 1e4, 1e4)
    return cases


def finite_count(loss_fn, cases) -> int:
    count = 0
    for _, x_net, target, sigma in cases:
        x = x_net.detach().requires_grad_(True)
        loss = loss_fn(x, target, sigma)
        ok = bool(torch.isfinite(loss).all())
        if ok:
            loss.sum().backward()
            ok = x.grad is not None and bool(torch.isfinite(x.grad).all())
        count += ok
    return count


def parity(device: torch.device) -> tuple[float, int]:
    r"""Max relative difference, ``convention="official"`` vs the official formulas (float64)."""
    gen = torch.Generator(device).manual_seed(2)
    worst, count = 0.0, 0
    for k in (2, 8, 32):
        for d in (1, 3, 16):
            x_net, target = _case(256, k, d, device, gen)
            x_net, target = x_net.double(), target.double()
            ref = official_propel(x_net, target, 0.1)
            ours = PROPELLoss(sigma=0.1, std_activation=None, convention="official")
            out = ours.to(device)(x_net=x_net, x=target)
            ok = torch.isfinite(ref)
            rel = ((out - ref).abs() / ref.abs())[ok]
            worst = max(worst, float(rel.max())) if rel.numel() else worst
            count += int(ok.sum())
    return worst, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer repeats"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: shared machine)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = bench(args.quick, device)
    print(
        f"PROPEL fwd+bwd, float32, {device.type}, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; best of interleaved runs\n"
    )
    print("| config | official (ms) | ours (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    for name, t_off, t_our in rows:
        print(
            f"| {name} | {1e3 * t_off:.2f} | {1e3 * t_our:.2f} | {t_off / t_our:.2f}x |"
        )

    cases = extreme_cases(device)
    n_off = finite_count(official_propel, cases)

    def ours(x: Tensor, t: Tensor, sigma: float) -> Tensor:
        return PROPELLoss(sigma=sigma, std_activation=None).to(device)(x_net=x, x=t)

    n_our = finite_count(ours, cases)
    worst, count = parity(device)
    print(
        f"\nconvention='official' vs the official formulas, float64, {count} finite samples: "
        f"max relative difference {worst:.1e}"
    )
    print(f"\nExtreme inputs ({len(cases)} cases, float32): finite loss and gradient")
    print("\n| implementation | finite | share |")
    print("|---|---:|---:|")
    for name, n in (("official", n_off), ("ours", n_our)):
        print(f"| {name} | {n}/{len(cases)} | {100 * n / len(cases):.0f}% |")


if __name__ == "__main__":
    main()
