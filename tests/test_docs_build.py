r"""The documentation site builds offline with no warnings, the sphinx-gallery executed.

This is the command of the README's development section; it is part of the default suite so
that CI (which runs ``python3 -m pytest``) checks the docs, the docstrings' reST and every
gallery script on each change. It takes a few minutes: deselect it locally with
``-m "not docs"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.docs


def test_docs_build_without_warnings_and_gallery_executed(tmp_path):
    out = tmp_path / "html"
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "DEEPINV_ICRF_DOCS_NO_GALLERY": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "docs", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert (out / "index.html").is_file()
    examples = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))
    for name in examples:
        page = out / "auto_examples" / f"{name}.html"
        assert page.is_file(), f"gallery page {page.name} missing"
        # an executed example embeds its figures; an unexecuted one has none
        assert "sphx_glr_" in page.read_text(encoding="utf-8") and any(
            (out / "_images").glob(f"sphx_glr_{name}_*.png")
        ), f"{name} was not executed (no figure)"
    api = (out / "api.html").read_text(encoding="utf-8")
    assert "deepinv_icrf" in api
