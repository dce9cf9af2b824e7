r"""Benchmark: the main job at camera resolution, against OpenCV doing the same job.

Writes synthetic brackets of the package's demo scene (:func:`deepinv_icrf.data.demo_scene`
at a quarter of the size, upscaled bilinearly, then imaged exposure by exposure through an
sRGB camera with code noise of 1/255, one stop apart, times in ``exposures.csv`` and EXIF):

- 12 MP (4000x3000) x 7 JPEG, 24 MP (6000x4000) x 9 JPEG, and 12 MP x 7 16-bit TIFF
  (``--quick``: 2 MP, 1600x1200, x 7 JPEG and TIFF);

and times, in one run, each job as its own process (wall time and peak resident memory from
``/usr/bin/time -v``, or ``getrusage(RUSAGE_CHILDREN)`` in a wrapper where it is missing):

- **OpenCV**: read the photos (``cv2.imread``; 16-bit TIFFs reduced to 8 bits, since
  ``CalibrateDebevec`` takes 8-bit images only), ``CalibrateDebevec``, ``MergeDebevec``,
  write ``.hdr``, in one process;
- **CLI**: ``python -m deepinv_icrf fit FOLDER`` then ``merge FOLDER --icrf ... --out x.exr
  --preview p.jpg``; and ``hdr FOLDER --out x.exr`` when ``hdr --help`` answers (the
  command may not exist yet); and ``--help``;
- **API**: :func:`~deepinv_icrf.data.read_exposure_folder`, :func:`~deepinv_icrf.fit_icrf`,
  :func:`~deepinv_icrf.hdr.merge_hdr`, :func:`~deepinv_icrf.hdr.save_radiance` in one
  process, each step timed in it;
- **imports**: ``import cv2, numpy``, ``import torch``, ``import deepinv`` and the package's
  fit and merge modules, each its own process: what a job pays before it reads a photo (with
  the API job's steps, the work after the imports against OpenCV's steps).

The ratios to OpenCV are measured in the same run on the same machine (the figures of a
shared machine vary from run to run: compare ratios). ``--threads N`` sets
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of every job and ``cv2.setNumThreads(N)`` (default:
each library's own choice). ``--device cuda`` runs the fit (and merge, when its ``--device``
exists) on a GPU.

Run from the repository root::

    PYTHONPATH=. python benchmarks/camera_resolution.py            # 12 and 24 MP (minutes)
    PYTHONPATH=. python benchmarks/camera_resolution.py --quick    # 2 MP
    PYTHONPATH=. python benchmarks/camera_resolution.py --device cuda   # on a GPU machine

Targets (issue 19): photos to EXR (``fit`` then ``merge``, and ``hdr``) at most 1.0x OpenCV's
wall time, the peak memory of each command at most 1.5x OpenCV's, ``--help`` under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPENCV_JOB = r"""
import csv, json, sys, time
import cv2
import numpy as np

folder, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if threads > 0:
    cv2.setNumThreads(threads)
t0 = time.perf_counter()
with open(f"{folder}/exposures.csv") as fh:
    rows = [r for r in csv.reader(fh) if r and r[0] != "filename"]
images, times = [], []
for name, t in rows:
    img = cv2.imread(f"{folder}/{name}", cv2.IMREAD_UNCHANGED)
    if img.dtype == np.uint16:  # CalibrateDebevec takes 8-bit images only
        img = (img // 257).astype(np.uint8)
    images.append(img)
    times.append(float(t))
times = np.asarray(times, np.float32)
t1 = time.perf_counter()
response = cv2.createCalibrateDebevec().process(images, times)
t2 = time.perf_counter()
hdr = cv2.createMergeDebevec().process(images, times, response)
t3 = time.perf_counter()
cv2.imwrite(out, hdr)
t4 = time.perf_counter()
steps = {"read": t1 - t0, "calibrate": t2 - t1, "merge": t3 - t2, "write": t4 - t3}
print("steps", json.dumps(steps))
"""

API_JOB = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from deepinv_icrf import fit_icrf
from deepinv_icrf.data import read_exposure_folder
from deepinv_icrf.hdr import merge_hdr, save_radiance

folder, out, device = sys.argv[1], sys.argv[2], sys.argv[3]
t1 = time.perf_counter()
stack = read_exposure_folder(folder)
t2 = time.perf_counter()
options = {"progress": False}
if device != "cpu":
    options["device"] = device
icrf = fit_icrf(stack.images, stack.exposure_times, **options)
t3 = time.perf_counter()
radiance = merge_hdr(stack.images, stack.exposure_times, icrf)
t4 = time.perf_counter()
save_radiance(out, radiance)
t5 = time.perf_counter()
steps = {"import": t1 - t0, "read": t2 - t1, "fit": t3 - t2, "merge": t4 - t3,
         "save": t5 - t4}
print("steps", json.dumps(steps))
"""

RUSAGE_WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[1:])
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print("RUSAGE " + json.dumps({"wall": wall, "rss": rss}), file=sys.stderr)
sys.exit(rc)
"""

TIME_V = "/usr/bin/time"

#: What each kind of job pays before it reads a photo, each its own process (best of 3).
IMPORTS = {
    "OpenCV: `import cv2, numpy`": "import cv2, numpy",
    "`import torch`": "import torch",
    "`import deepinv` (torch, torchvision)": "import deepinv",
    "`fit`/`hdr` imports: `from deepinv_icrf import fit_icrf`": (
        "from deepinv_icrf import fit_icrf; import deepinv_icrf.hdr"
    ),
}


# ------------------------------------------------------------------ brackets
def write_bracket(
    folder: Path, height: int, width: int, n: int, bits: int, fmt: str
) -> Path:
    r"""A bracket of the demo scene, ``n`` exposures one stop apart, in ``folder``.

    The scene is computed at a quarter of the size and upscaled bilinearly (the package's
    generator at full size would hold the whole float stack); each exposure is then imaged
    on its own: sRGB response, Gaussian code noise of 1/255, quantised to ``bits``.
    """
    import numpy as np
    import torch

    from deepinv_icrf.data import demo_scene
    from deepinv_icrf.functional import quantize_to_bit_depth, srgb_crf
    from deepinv_icrf.io import write_image

    if (folder / "exposures.csv").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    small = demo_scene(max(2, height // 4), max(2, width // 4), seed=0)
    scene = torch.nn.functional.interpolate(
        small, size=(height, width), mode="bilinear", align_corners=False
    )[0]
    gen = torch.Generator().manual_seed(0)
    times = [2.0 ** (k - n + 1) for k in range(n)]  # 1 s for the longest
    names = []
    for k, t in enumerate(times):
        code = srgb_crf((scene * t).clamp_(0.0, 1.0))
        code += torch.randn(code.shape, generator=gen) / 255.0
        code = quantize_to_bit_depth(code, bits) * (2**bits - 1)
        dtype = np.uint8 if bits == 8 else np.uint16
        image = code.round_().permute(1, 2, 0).numpy().astype(dtype)
        name = f"exposure_{k:02d}.{fmt}"
        write_image(folder / name, image, exposure_time=t, quality=95)
        names.append(name)
        del code, image
    rows = "".join(f"{name},{t!r}\n" for name, t in zip(names, times, strict=True))
    (folder / "exposures.csv").write_text("filename,exposure_time\n" + rows)
    return folder


# ------------------------------------------------------------------ measuring
PACKAGE_ROOT = ROOT  # the checkout whose deepinv_icrf the jobs import (--root)


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), env.get("PYTHONPATH", "")])
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def measure(cmd: list[str], threads: int, cwd: Path) -> dict:
    r"""Run ``cmd``; its wall time (s), peak resident memory (bytes), exit code, output."""
    env = _env(threads)
    if os.access(TIME_V, os.X_OK):
        full = [TIME_V, "-v", *cmd]
    else:
        full = [sys.executable, "-c", RUSAGE_WRAPPER, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(
        full, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    rss = 0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if match:
        rss = int(match.group(1)) * 1024
    match = re.search(r"RUSAGE (\{.*\})", proc.stderr)
    if match:
        info = json.loads(match.group(1))
        wall, rss = info["wall"], info["rss"]
    match = re.search(r"^steps (.*)$", proc.stdout, re.M)
    steps = json.loads(match.group(1)) if match else None
    return {
        "wall": wall,
        "rss": rss,
        "rc": proc.returncode,
        "out": proc.stdout[-2000:],
        "err": proc.stderr[-3000:],
        "steps": steps,
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepinv_icrf", *args]


def run_case(label: str, folder: Path, work: Path, args) -> list[dict]:
    r"""Every job on one bracket; one row per job."""
    out = work / f"out_{folder.name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    threads = args.threads
    rows = []

    def job(name: str, cmd: list[str]) -> dict:
        result = measure(cmd, threads, work)
        result.update(case=label, job=name)
        if result["rc"] != 0:
            print(
                f"  {name} FAILED (exit {result['rc']}):\n{result['err']}", flush=True
            )
        else:
            print(
                f"  {label}: {name}: {result['wall']:.1f} s, "
                f"{result['rss'] / 2**20:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
        rows.append(result)
        return result

    job(
        "OpenCV: read + CalibrateDebevec + MergeDebevec + write .hdr",
        [
            sys.executable,
            "-c",
            OPENCV_JOB,
            str(folder),
            str(out / "cv.hdr"),
            str(threads),
        ],
    )
    device = [] if args.device == "cpu" else ["--device", args.device]
    fit = job(
        "`deepinv-icrf fit`",
        _cli("fit", str(folder), "--out", str(out / "fit"), "--no-progress", *device),
    )
    merge_device = device if args.merge_has_device else []
    merge = job(
        "`deepinv-icrf merge --out x.exr --preview p.jpg`",
        _cli(
            "merge",
            str(folder),
            "--icrf",
            str(out / "fit" / "icrf.json"),
            "--out",
            str(out / "x.exr"),
            "--preview",
            str(out / "p.jpg"),
            *merge_device,
        ),
    )
    rows.append(
        {
            "case": label,
            "job": "`fit` then `merge` (sum)",
            "wall": fit["wall"] + merge["wall"],
            "rss": max(fit["rss"], merge["rss"]),
            "rc": fit["rc"] or merge["rc"],
            "steps": None,
        }
    )
    if args.has_hdr:
        job(
            "`deepinv-icrf hdr --out x.exr`",
            _cli("hdr", str(folder), "--out", str(out / "y.exr")),
        )
    if not args.no_api:
        job(
            "API: read_exposure_folder + fit_icrf + merge_hdr + save_radiance",
            [
                sys.executable,
                "-c",
                API_JOB,
                str(folder),
                str(out / "api.exr"),
                args.device,
            ],
        )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ report
def report(rows: list[dict], help_row: dict, import_rows: dict, args) -> int:
    lines = [
        f"Photos to an HDR radiance map, each job its own process; wall time and peak "
        f"resident memory (`/usr/bin/time -v`); threads: "
        f"{args.threads if args.threads > 0 else 'library defaults'}; device {args.device}; "
        f"{os.cpu_count()} CPUs (a shared machine: compare the ratios); package from "
        f"{PACKAGE_ROOT}.",
        "",
        "| bracket | job | wall (s) | peak RSS (MB) | wall vs OpenCV | RSS vs OpenCV |",
        "|---|---|---:|---:|---:|---:|",
    ]
    targets = []
    by_case: dict[str, dict] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["job"]] = row
    for case, jobs in by_case.items():
        cv = next(r for j, r in jobs.items() if j.startswith("OpenCV"))
        for name, r in jobs.items():
            if r["rc"] != 0:
                lines.append(f"| {case} | {name} | failed | | | |")
                continue
            lines.append(
                f"| {case} | {name} | {r['wall']:.1f} | {r['rss'] / 2**20:.0f} | "
                f"{r['wall'] / cv['wall']:.2f}x | {r['rss'] / max(cv['rss'], 1):.2f}x |"
            )
        for name in ("`fit` then `merge` (sum)", "`deepinv-icrf hdr --out x.exr`"):
            r = jobs.get(name)
            if r is None or r["rc"] != 0 or case.endswith("TIFF"):
                continue
            targets.append(
                (
                    f"{case}: {name} wall <= 1.0x OpenCV ({r['wall'] / cv['wall']:.2f}x)",
                    r["wall"] <= cv["wall"],
                )
            )
        for name, r in jobs.items():
            if name.startswith(("`deepinv-icrf", "`fit` then")) and r["rc"] == 0:
                if case.endswith("TIFF") or name.startswith("`fit` then"):
                    continue
                targets.append(
                    (
                        f"{case}: {name} peak RSS <= 1.5x OpenCV "
                        f"({r['rss'] / max(cv['rss'], 1):.2f}x)",
                        r["rss"] <= 1.5 * cv["rss"],
                    )
                )
    lines += [
        "",
        f"`deepinv-icrf --help`: {help_row['wall']:.2f} s, "
        f"{help_row['rss'] / 2**20:.0f} MB peak RSS.",
        "",
        "Imports alone, each its own process (best of 3):",
        "",
        "| import | wall (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for name, r in import_rows.items():
        lines.append(f"| {name} | {r['wall']:.2f} | {r['rss'] / 2**20:.0f} |")
    lines += [
        "",
        "Steps inside the jobs (s):",
        "",
        "| bracket | job | steps |",
        "|---|---|---|",
    ]
    for row in rows:
        if row.get("steps"):
            steps = ", ".join(f"{k} {v:.2f}" for k, v in row["steps"].items())
            lines.append(f"| {row['case']} | {row['job'].split(':')[0]} | {steps} |")
    # the work itself: the API job's steps after its imports, against OpenCV's steps
    lines += [
        "",
        "The work after the imports (read, fit, merge, save of the API job, against "
        "OpenCV's read, calibrate, merge, write):",
        "",
        "| bracket | API job after imports (s) | OpenCV's steps (s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for case, jobs in by_case.items():
        cv = next(r for j, r in jobs.items() if j.startswith("OpenCV"))
        api = next((r for j, r in jobs.items() if j.startswith("API")), None)
        if not (api and api.get("steps") and cv.get("steps")):
            continue
        work = sum(v for k, v in api["steps"].items() if k != "import")
        cv_work = sum(cv["steps"].values())
        lines.append(f"| {case} | {work:.2f} | {cv_work:.2f} | {work / cv_work:.2f}x |")
    targets.append((f"--help < 1 s ({help_row['wall']:.2f} s)", help_row["wall"] < 1.0))
    print("\n".join(lines))
    print()
    failed = [r for r in rows if r["rc"] != 0]
    for name, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    for r in failed:
        print(f"FAIL: {r['case']}: {r['job']} exited {r['rc']}")
    return 0 if not failed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 MP brackets only")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--threads", type=int, default=0, help="threads of every job (0: defaults)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated subset of: 12mp, 24mp, tiff (default all; --quick: 2mp, tiff)",
    )
    parser.add_argument("--work", default=None, help="folder for brackets and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--no-api", action="store_true", help="skip the API job")
    parser.add_argument(
        "--root",
        default=None,
        help="run the jobs on the deepinv_icrf of another checkout (e.g. an older "
        "commit, for before/after figures); default this one",
    )
    args = parser.parse_args()
    if args.root:
        global PACKAGE_ROOT
        PACKAGE_ROOT = Path(args.root).resolve()

    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "icrf_camres"
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        cases = {
            "2mp": ("2 MP x 7 JPEG", 1200, 1600, 7, 8, "jpg"),
            "tiff": ("2 MP x 7 16-bit TIFF", 1200, 1600, 7, 16, "tif"),
        }
    else:
        cases = {
            "12mp": ("12 MP x 7 JPEG", 3000, 4000, 7, 8, "jpg"),
            "24mp": ("24 MP x 9 JPEG", 4000, 6000, 9, 8, "jpg"),
            "tiff": ("12 MP x 7 16-bit TIFF", 3000, 4000, 7, 16, "tif"),
        }
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",")]
        cases = {k: v for k, v in cases.items() if k in wanted}
    # which commands this version of the CLI has
    probe = measure(_cli("hdr", "--help"), args.threads, work)
    args.has_hdr = probe["rc"] == 0
    probe = measure(_cli("merge", "--help"), args.threads, work)
    args.merge_has_device = "--device" in probe["out"]
    print(
        f"hdr command: {'yes' if args.has_hdr else 'no'}; merge --device: "
        f"{'yes' if args.merge_has_device else 'no'}",
        file=sys.stderr,
    )
    help_row = min(
        (measure(_cli("--help"), args.threads, work) for _ in range(3)),
        key=lambda r: r["wall"],
    )
    import_rows = {
        name: min(
            (
                measure([sys.executable, "-c", code], args.threads, work)
                for _ in range(3)
            ),
            key=lambda r: r["wall"],
        )
        for name, code in IMPORTS.items()
    }
    rows = []
    for key, (label, h, w, n, bits, fmt) in cases.items():
        t0 = time.perf_counter()
        folder = write_bracket(work / f"bracket_{key}_{w}x{h}x{n}", h, w, n, bits, fmt)
        print(
            f"{label}: bracket ready ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
        rows += run_case(label, folder, work, args)
    return report(rows, help_row, import_rows, args)


if __name__ == "__main__":
    sys.exit(main())
