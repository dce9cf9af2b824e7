r"""The gallery scripts: a fast static check of each, and each run in full (slow)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
IDS = [p.stem for p in EXAMPLES]


def test_examples_gallery_is_not_empty():
    assert (ROOT / "examples" / "README.txt").is_file()
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_examples_structure_and_package_imports(script):
    r"""Title docstring, ``# %%`` cells, and every name imported from the package exists."""
    source = script.read_text()
    tree = ast.parse(source, filename=str(script))
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None, "a gallery script starts with its title docstring"
    lines = doc.strip().splitlines()
    assert len(lines) >= 2 and set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0])
    assert source.count("# %%") >= 2
    assert "manual_seed" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "deepinv_icrf"
        ):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_examples_order_lists_only_existing_scripts():
    spec = importlib.util.spec_from_file_location(
        "icrf_gallery_order_under_test",
        ROOT / "docs" / "_ext" / "icrf_gallery_order.py",
    )
    order = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(order)
    key = order.GalleryOrder(str(ROOT / "examples"))
    ranked = sorted((p.name for p in EXAMPLES), key=key)
    known = [name for name in order.ORDER if (ROOT / "examples" / name).exists()]
    assert ranked[: len(known)] == known
    assert key("plot_zzz_not_listed.py") == (len(order.ORDER), "plot_zzz_not_listed.py")


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_examples_script_runs(script, tmp_path):
    env = dict(os.environ)
    env.update(
        MPLBACKEND="Agg",
        TQDM_DISABLE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
