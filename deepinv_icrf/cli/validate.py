r"""``deepinv-icrf validate FOLDER --icrf icrf.json``: a fitted curve against measured pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepinv_icrf.cli._common import LIBRARY_DEFAULT, given

__all__ = ["configure", "run_validate"]

HELP = "compare a fitted ICRF with the curve measured from processed/linear image pairs"


def configure(p: argparse.ArgumentParser) -> None:
    r"""The arguments of ``validate``."""
    p.add_argument(
        "folder",
        help="folder of processed images with their linear captures (IMG.jpg + IMG.tif)",
    )
    p.add_argument(
        "--icrf", required=True, help="ICRF file written by `fit` (icrf.json)"
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=LIBRARY_DEFAULT,
        help="pixels a code needs to be compared (default: validate_folder's)",
    )
    p.add_argument(
        "--out", default=None, help="also write the result to this JSON file"
    )


def run_validate(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf validate FOLDER --icrf icrf.json``: compare a fitted curve with the curve
    measured directly from processed/linear pairs (:func:`deepinv_icrf.validate.validate_folder`).
    """
    from deepinv_icrf.io import OutputSet, write_json
    from deepinv_icrf.validate import format_validation, validate_folder

    stream = sys.stdout if stream is None else stream
    folder = Path(args.folder)
    inputs = [Path(args.icrf)] + (list(folder.iterdir()) if folder.is_dir() else [])
    with OutputSet(inputs=inputs) as outputs:
        staged = outputs.file(args.out, "--out") if args.out is not None else None
        result = validate_folder(
            args.folder, args.icrf, **given(args, {"min_count": "min_count"})
        )
        if staged is not None:
            write_json(staged, result)
    print(format_validation(result), file=stream)
    if args.out is not None:
        print(f"wrote {args.out}", file=stream)
    return 0
