r"""Benchmark: the radiometric linearity loss, reference vs dense vs histogram path.

In one run, on synthetic noisy exposure stacks of 3x512x512 (8-bit, N = 5, 9, 15 exposures,
and a 12-bit stack), for the gradient of the loss with respect to a ``(3, 256)`` ICRF curve:

- **(a) reference**: a direct implementation of the formulas of DESIGN.md written here
  (every valid pair at once, gathers, full autograd graph), with the curve looked up at the
  codes;
- **(b) dense**: :func:`deepinv_icrf.functional.radiometric_linearity` on
  ``interp_curve(y, curve)`` (pairs in chunks, recomputed in the backward pass);
- **(c) histogram**: :func:`deepinv_icrf.functional.linearity_from_histogram` on statistics
  from :func:`deepinv_icrf.functional.build_linearity_histogram` (build timed apart).

Times are taken in this process (the best of a few repeats, on ``--threads`` threads, 1 by
default: the figures are ratios within one run, robust to other processes sharing the
machine). The peak memory of each configuration is measured in its own child process: the
resident set (``VmRSS``) after the inputs are allocated is the baseline, the kernel's peak
counter is reset (``/proc/self/clear_refs``), and the extra peak is ``VmHWM`` minus the
baseline (glibc is told to return freed memory at once, ``MALLOC_MMAP_THRESHOLD_``). The histogram step time is also measured at 256x256 and 1024x1024,
and coarse binning of the 12-bit stack is compared with the exact value.

Run from the repository root::

    PYTHONPATH=. python benchmarks/linearity.py            # full run (a few minutes)
    PYTHONPATH=. python benchmarks/linearity.py --quick    # smoke run (small images)

The quick run (96x96, under a minute) measures every configuration (the memory of all of
them in one child process) but judges only what holds at any size: the dense time and the
equality of the values of the three paths. The size-dependent targets (speed-up, memory,
build time, resolution independence) are printed as ``SKIP (quick: too small to judge)``;
it exits 0 when everything ran and the judged checks pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from deepinv_icrf.functional import (
    build_linearity_histogram,
    interp_curve,
    linearity_from_histogram,
    quantize_to_bit_depth,
    radiometric_linearity,
    srgb_crf,
)

LOWER, UPPER, THRESHOLD, SCALE = 1 / 255, 254 / 255, 0.1, 10.0
NOISE = 0.01  # std of the code noise, in [0, 1] (2.5 levels of 8 bits)


# ------------------------------------------------------------------ data
def make_stack(n: int, size: int, bits: int, seed: int = 0):
    r"""A noisy sRGB exposure stack ``(1, n, 3, size, size)`` of ``bits``-bit codes.

    Radiance: a smooth random field (log-uniform over 2 decades) plus texture; exposure
    times geometric over a factor 8, so every pair has a ratio >= 1/8 (all pairs valid).
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 16, 16, generator=gen)
    smooth = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    )
    texture = torch.rand(1, 3, size, size, generator=gen)
    log_rad = -2.0 + 2.0 * (0.7 * smooth + 0.3 * texture).clamp(0, 1)
    radiance = 10.0**log_rad  # (1, 3, H, W) in [0.01, 1]
    times = torch.logspace(-3, 0, n, base=2.0)  # 1/8 .. 1
    y = torch.empty(1, n, 3, size, size)
    for k in range(n):  # one exposure at a time: no full-size temporaries
        code = srgb_crf((radiance * times[k]).clamp(0, 1))
        code += NOISE * torch.randn(code.shape, generator=gen)
        y[:, k] = quantize_to_bit_depth(code, bits)
    return y, times


def initial_curve() -> torch.Tensor:
    r"""An imperfect ICRF (gamma 2.0 instead of sRGB), ``(3, 256)``, a leaf."""
    grid = torch.linspace(0, 1, 256)
    return (grid**2.0).expand(3, 256).clone().requires_grad_(True)


# ------------------------------------------------------------------ (a) reference
def reference_loss(
    y: torch.Tensor, curve: torch.Tensor, times: torch.Tensor, bits: int = 8
) -> torch.Tensor:
    r"""DESIGN.md, written out directly for one scene: every valid pair at once.

    The ICRF is the curve looked up at the codes (8-bit codes on a 256-point curve), or
    linearly interpolated between its points for deeper codes.
    """
    y = y[0]  # (N, C, H, W)
    n, c = y.shape[:2]
    chan = torch.arange(c).view(c, 1, 1)
    u = y * (curve.shape[1] - 1)
    if 2**bits == curve.shape[1]:
        x = curve[chan, torch.round(u).long()]  # (N, C, H, W)
    else:
        k = u.floor().clamp(max=curve.shape[1] - 2).long()
        frac = u - k
        x = curve[chan, k] * (1 - frac) + curve[chan, k + 1] * frac
    order = torch.argsort(times).tolist()
    pairs = [
        (order[a], order[b])
        for a in range(n)
        for b in range(a + 1, n)
        if times[order[a]] < times[order[b]]
        and times[order[a]] / times[order[b]] >= THRESHOLD
    ]
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])
    r = (times[i] / times[j]).view(-1, 1, 1, 1)
    xi, xj, yi, yj = x[i], x[j], y[i], y[j]
    d = (xi - r * xj).abs() / (r * xj + 1e-6)
    valid = (yi >= LOWER) & (yi <= UPPER) & (yj >= LOWER) & (yj <= UPPER)
    w = torch.exp(-SCALE * (yi - 0.5) ** 2) + torch.exp(-SCALE * (yj - 0.5) ** 2)
    wv = w * valid
    m = (wv * d).sum(dim=(-2, -1)) / wv.sum(dim=(-2, -1)).clamp(min=1e-8)
    return torch.sqrt((m**2).sum(dim=0)).sum()


# ------------------------------------------------------------------ memory helpers
def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Peak:
    r"""Extra resident memory (bytes) over the baseline taken at construction."""

    def __init__(self) -> None:
        self.resettable = _reset_peak()
        self.base = _status("VmRSS:")

    def extra(self) -> int:
        return max(0, _status("VmHWM:") - self.base)


# ------------------------------------------------------------------ worker
_STACKS: dict = {}


def _stack(n: int, size: int, bits: int):
    key = (n, size, bits)
    if key not in _STACKS:
        _STACKS.clear()  # one stack alive at a time
        _STACKS[key] = make_stack(n, size, bits)
    return _STACKS[key]


def worker(cfg: dict) -> dict:
    r"""One configuration. ``cfg["measure"]``: ``"time"`` (best of repeats, in the main
    process) or ``"memory"`` (in a child process: one warm-up, then the peak of one step,
    with glibc returning freed memory at once: slower, so never timed)."""
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    y, times = _stack(cfg["n"], cfg["size"], cfg["bits"])
    curve = initial_curve()
    method, memory = cfg["method"], cfg["measure"] == "memory"
    repeats = 1 if memory else cfg["repeats"]
    out: dict = {}
    if method == "histogram":
        max_bins = cfg.get("max_bins", 4096)
        build = []
        peak = Peak()
        for _ in range(1 if memory else cfg.get("build_repeats", 1)):
            t0 = time.perf_counter()
            hist = build_linearity_histogram(y, times, max_bins=max_bins)
            build.append(time.perf_counter() - t0)
        out["build_mem"] = peak.extra()
        out["build"] = min(build)
        out["entries"] = hist.n_entries
        out["bins"] = hist.n_bins

        def loss():
            return linearity_from_histogram(curve, hist).sum()

    elif method == "dense":

        def loss():
            return radiometric_linearity(y, interp_curve(y, curve), times).sum()

    else:

        def loss():
            return reference_loss(y, curve, times, cfg["bits"])

    def step():
        curve.grad = None
        loss().backward()

    step()  # warm-up
    peak = Peak()
    times_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times_s.append(time.perf_counter() - t0)
    out["mem"] = peak.extra()
    out["time"] = min(times_s)
    if memory:
        return out
    with torch.no_grad():
        out["value"] = float(loss())
    if cfg.get("compare_dense"):
        step()
        g_hist = curve.grad.clone()
        curve.grad = None
        dense = radiometric_linearity(y, interp_curve(y, curve), times).sum()
        dense.backward()
        out["dense_value"] = float(dense.detach())
        out["grad_rel_diff"] = float(
            (g_hist - curve.grad).norm() / curve.grad.norm().clamp(min=1e-30)
        )
    return out


def _memory_child(cfgs: list[dict]) -> list[dict]:
    r"""Run each of ``cfgs`` (in order) for its peak memory in one fresh subprocess."""
    env = dict(os.environ)
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            json.dumps([{**cfg, "measure": "memory"} for cfg in cfgs]),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfgs} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _add_memory(merged: dict, mem: dict) -> None:
    merged.update(mem=mem["mem"], build_mem=mem.get("build_mem", 0))


def run_config(cfg: dict, memory: bool = True) -> dict:
    r"""Time ``cfg`` here, then (``memory``) measure its peak memory in a child process."""
    merged = worker({**cfg, "measure": "time"})
    if memory:
        _add_memory(merged, _memory_child([cfg])[0])
    return merged


# ------------------------------------------------------------------ report
def _mb(b: float) -> str:
    return f"{b / 2**20:.0f}"


def main(quick: bool, threads: int) -> int:
    size = 96 if quick else 512
    ns = (5, 9) if quick else (5, 9, 15)
    few = 3
    results: dict = {}
    cfgs: dict = {}

    def run(key, cfg: dict) -> None:
        # quick: the memory of every configuration is measured at the end, in one child
        # process (python and torch start once: most of a quick run's time otherwise)
        cfgs[key] = cfg
        results[key] = run_config(cfg, memory=not quick)

    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    for n in ns:
        rep = 2 if n == 15 else few
        for method in ("reference", "dense", "histogram"):
            cfg = dict(
                method=method,
                n=n,
                size=size,
                bits=8,
                threads=threads,
                repeats=rep if method != "histogram" else 20,
                build_repeats=1 if n == 15 else (1 if quick else 3),
            )
            run((method, n, 8), cfg)
            print(f"  done {method} N={n} 8-bit", file=sys.stderr, flush=True)
    # 12-bit stack, N = 9: exact bins (4096) and coarser ones
    for method in ("reference", "dense"):
        run(
            (method, 9, 12),
            dict(method=method, n=9, size=size, bits=12, repeats=few, threads=threads),
        )
    for max_bins in (4096, 1024, 256):
        run(
            ("histogram", 9, 12, max_bins),
            dict(
                method="histogram",
                n=9,
                size=size,
                bits=12,
                repeats=10,
                threads=threads,
                max_bins=max_bins,
                compare_dense=True,
            ),
        )
    print("  done 12-bit", file=sys.stderr, flush=True)
    # resolution independence of the histogram step
    sizes = (48, 192) if quick else (256, 1024)
    for s in sizes:
        run(
            ("histogram-size", s),
            dict(method="histogram", n=9, size=s, bits=8, repeats=20, threads=threads),
        )
    if quick:
        keys = list(cfgs)
        mems = _memory_child([cfgs[k] for k in keys])
        for key, mem in zip(keys, mems, strict=True):
            _add_memory(results[key], mem)
        print("  done memory", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start

    lines = [
        f"Radiometric linearity loss, forward+backward w.r.t. a (3, 256) curve, "
        f"3x{size}x{size}, float32, {torch.get_num_threads()} threads, best of repeats; "
        f"memory = peak extra resident memory over the inputs.",
        "",
        "| stack | path | fwd+bwd (s) | vs (a) | peak extra (MB) | vs (a) | build (s) "
        "| build peak (MB) | entries | value |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label, name, r, ref, build="", build_mem="", entries=""):
        lines.append(
            f"| {label} | {name} | {r['time']:.4f} | {ref['time'] / r['time']:.1f}x faster "
            f"| {_mb(r['mem'])} | {r['mem'] / max(ref['mem'], 1):.3f} | {build} | {build_mem} "
            f"| {entries} | {r['value']:.6f} |"
        )

    for n in ns:
        ref = results[("reference", n, 8)]
        label = f"N={n}, 8-bit"
        row(label, "(a) reference", ref, ref)
        row(label, "(b) dense", results[("dense", n, 8)], ref)
        h = results[("histogram", n, 8)]
        row(
            label,
            "(c) histogram",
            h,
            ref,
            f"{h['build']:.3f}",
            _mb(h["build_mem"]),
            h["entries"],
        )
    ref12 = results[("reference", 9, 12)]
    row("N=9, 12-bit", "(a) reference", ref12, ref12)
    row("N=9, 12-bit", "(b) dense", results[("dense", 9, 12)], ref12)
    for max_bins in (4096, 1024, 256):
        h = results[("histogram", 9, 12, max_bins)]
        row(
            "N=9, 12-bit",
            f"(c) histogram, {h['bins']} bins",
            h,
            ref12,
            f"{h['build']:.3f}",
            _mb(h["build_mem"]),
            h["entries"],
        )
    lines += [
        "",
        "12-bit binning vs the dense path (same curve):",
        "",
        "| bins | loss value | dense value | relative difference | gradient relative difference |",
        "|---|---|---|---|---|",
    ]
    for max_bins in (4096, 1024, 256):
        h = results[("histogram", 9, 12, max_bins)]
        rel = abs(h["value"] - h["dense_value"]) / abs(h["dense_value"])
        lines.append(
            f"| {h['bins']} | {h['value']:.6f} | {h['dense_value']:.6f} | {rel:.2e} "
            f"| {h['grad_rel_diff']:.2e} |"
        )
    s_small, s_large = (results[("histogram-size", s)] for s in sizes)
    lines += [
        "",
        "Histogram path vs resolution (N=9, 8-bit):",
        "",
        "| size | step (s) | entries | build (s) |",
        "|---|---|---|---|",
    ]
    for s, r in zip(sizes, (s_small, s_large), strict=True):
        lines.append(
            f"| {s}x{s} | {r['time']:.4f} | {r['entries']} | {r['build']:.3f} |"
        )
    print("\n".join(lines))

    # targets (N = 9, 8-bit): (name, passed, judged in a quick run). The speed and memory
    # ratios grow with the image size (fixed costs and one chunk of pairs dominate small
    # images) and the histogram's occupied bins still grow at quick sizes: a quick run
    # reports them without judging them.
    ref, dense, hist = (results[(m, 9, 8)] for m in ("reference", "dense", "histogram"))
    targets = [
        (
            "histogram fwd+bwd >= 100x faster than (a)",
            ref["time"] / hist["time"] >= 100,
            False,
        ),
        (
            "histogram peak extra memory <= 1/10 of (a)",
            hist["mem"] <= ref["mem"] / 10,
            False,
        ),
        ("histogram build <= one fwd+bwd of (a)", hist["build"] <= ref["time"], False),
        (
            "dense peak extra memory <= 1/4 of (a)",
            dense["mem"] <= ref["mem"] / 4,
            False,
        ),
        ("dense time <= 1.5x (a)", dense["time"] <= 1.5 * ref["time"], True),
        (
            f"histogram step does not grow with resolution ({sizes[0]} vs {sizes[1]}: "
            f"{s_large['time'] / s_small['time']:.2f}x for {(sizes[1] / sizes[0]) ** 2:.0f}x pixels)",
            s_large["time"] <= 2.0 * s_small["time"],
            False,
        ),
    ]
    if quick:  # checks that hold at any size: the three paths give one value
        spread = max(abs(r["value"] - ref["value"]) for r in (dense, hist))
        spread /= abs(ref["value"])
        h12 = results[("histogram", 9, 12, 4096)]
        rel12 = abs(h12["value"] - h12["dense_value"]) / abs(h12["dense_value"])
        targets += [
            (
                f"(a), (b) and (c) give the same N=9 8-bit value (relative difference "
                f"{spread:.1e} <= 1e-5)",
                spread <= 1e-5,
                True,
            ),
            (
                f"12-bit histogram with 4096 bins equals (b) (value {rel12:.1e}, gradient "
                f"{h12['grad_rel_diff']:.1e} <= 1e-5)",
                max(rel12, h12["grad_rel_diff"]) <= 1e-5,
                True,
            ),
        ]
    print()
    judged = []
    for name, ok, in_quick in targets:
        if quick and not in_quick:
            print(f"SKIP (quick: too small to judge): {name}")
            continue
        judged.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    print(f"\n(total benchmark time {elapsed:.0f} s)")
    return 0 if all(judged) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small images, fewer repeats"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the timings (default 1)",
    )
    args = parser.parse_args()
    if args.worker:
        payload = json.loads(args.worker)
        if isinstance(payload, list):
            print(json.dumps([worker(cfg) for cfg in payload]))
        else:
            print(json.dumps(worker(payload)))
        sys.exit(0)
    sys.exit(main(args.quick, args.threads))
