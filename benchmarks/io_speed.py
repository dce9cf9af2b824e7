r"""Benchmark: image reading and writing, the old hand-written codecs against the libraries.

The old ``deepinv_icrf/io.py`` (commit 76c1c4c: its own OpenEXR, Radiance RGBE and 16-bit PNG
code; OpenCV's decoder for 16-bit PNG when installed) is taken from git, imported from a
temporary file, and timed against the current :mod:`deepinv_icrf.io` (OpenEXR bindings,
imagecodecs; libpng for every PNG, where the old module read 8-bit PNG with Pillow) on
the same arrays and the same files: each file is written once, then read by
both. Median of ``--repeat`` runs, same process, same machine; prints a markdown table with
the ratio new / old (below 1: faster now).

Run::

    PYTHONPATH=. python benchmarks/io_speed.py                 # 2000x3000, 5 repeats
    PYTHONPATH=. python benchmarks/io_speed.py --size 512 768  # smaller, quicker

Needs git and the repository's history (the old module is read with ``git show``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

OLD_COMMIT = "76c1c4c"


def _old_module(folder: Path):
    text = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:deepinv_icrf/io.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    path = folder / "old_io.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=(2000, 3000))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import deepinv_icrf.io as new

    height, width = args.size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    smooth = np.stack([xx, yy, (xx + yy) / 2], axis=-1)
    radiance = (
        np.exp(6 * smooth) * (1 + 0.05 * rng.standard_normal(smooth.shape))
    ).astype(np.float32)
    codes16 = np.clip(
        smooth * 65535 + rng.normal(0, 300, smooth.shape), 0, 65535
    ).astype(np.uint16)
    codes8 = (codes16 >> 8).astype(np.uint8)
    cases = [
        ("OpenEXR float32 ZIP", ".exr", radiance),
        ("Radiance RGBE .hdr", ".hdr", radiance),
        ("PNG 16-bit RGB", ".png", codes16),
        ("PNG 8-bit RGB", ".png", codes8),
        ("TIFF 16-bit RGB", ".tif", codes16),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old = _old_module(folder)
        for label, ext, image in cases:
            path_old, path_new = folder / f"old{ext}", folder / f"new{ext}"
            w_old = _median_time(lambda: old.write_image(path_old, image), args.repeat)
            w_new = _median_time(lambda: new.write_image(path_new, image), args.repeat)
            shared = folder / f"shared{ext}"  # the same file for both readers
            new.write_image(shared, image)
            r_old = _median_time(lambda: old.read_image(shared), args.repeat)
            r_new = _median_time(lambda: new.read_image(shared), args.repeat)
            a, b = new.read_image(shared), old.read_image(shared)
            peak = np.abs(b.astype(np.float64)).max(axis=-1, keepdims=True) + 1e-30
            assert float((np.abs(a - b.astype(np.float64)) / peak).max()) <= 1 / 64
            rows.append(
                (label, w_old, w_new, r_old, r_new, path_old.stat().st_size,
                 path_new.stat().st_size)
            )  # fmt: skip
    print(f"{height}x{width} RGB, median of {args.repeat} runs (seconds)\n")
    print(
        "| format | write old | write new | new/old | read old | read new | new/old "
        "| size old (MB) | size new (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, w_old, w_new, r_old, r_new, s_old, s_new in rows:
        print(
            f"| {label} | {w_old:.3f} | {w_new:.3f} | {w_new / w_old:.2f} | {r_old:.3f} | "
            f"{r_new:.3f} | {r_new / r_old:.2f} | {s_old / 1e6:.1f} | {s_new / 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
