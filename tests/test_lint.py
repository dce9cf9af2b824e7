r"""Lint in the test suite: ruff, black, the import-linter contracts and private imports.

The README's test command (``python3 -m pytest``, which ``.ci/run`` runs) is the CI, so the
linters run here, each as a subprocess on the repository. A linter that is not installed skips
its test with the reason (they are in the ``dev`` extra). The layer contract itself is
``[tool.importlinter]`` in ``pyproject.toml``; docs/development.rst explains both contracts.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deepinv_icrf"

#: The private names (``_name``) one package of deepinv_icrf may import from another:
#: ``(importing module, module imported from, name)``. Anything else crossing a package
#: boundary is an error, and so is an entry that no longer matches an import (keep the list
#: exact). docs/development.rst documents it.
ALLOWED_PRIVATE_IMPORTS = {
    # The linearity loss is the module shell of functional/linearity.py and of the histogram
    # path (torchmetrics' _update/_compute pattern): it validates its options once, in
    # __init__, with the functional core's own checks, and calls the unchecked core at each
    # step instead of re-validating a trusted stack.
    *(
        ("deepinv_icrf.loss.linearity", "deepinv_icrf.functional.linearity", name)
        for name in (
            "_check_linearity_inputs",
            "_check_options",
            "_check_pair_chunk",
            "_check_std_shape",
            "_radiometric_linearity",
        )
    ),
    *(
        ("deepinv_icrf.loss.linearity", "deepinv_icrf.functional.histogram", name)
        for name in ("_check_max_bins", "_code_std", "_std_table")
    ),
    # merge_hdr is the module shell of functional/merge.py: it checks the stack, the times
    # and the bounds once, then merges block by block with the unchecked cores (the public
    # merges would re-check the times, one device sync, at every block).
    *(
        ("deepinv_icrf.hdr", "deepinv_icrf.functional.merge", name)
        for name in (
            "_consistent_exposures",
            "_radiance_merge",
            "_radiance_merge_codes",
            "_radiance_merge_std",
        )
    ),
    # The per-channel protocol of the losses (a bool `per_channel` attribute, the call with
    # per_channel=True and the channel sum), which the trainer's bookkeeping reads.
    *(
        ("deepinv_icrf.training.channels", "deepinv_icrf.loss.scheduler", name)
        for name in ("_call_per_channel", "_channel_sum", "_has_per_channel")
    ),
}


def _run(args: list[str], what: str) -> None:
    env = dict(os.environ)
    # the checkout's package, not an installed copy (lint-imports finds it on sys.path)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert (
        result.returncode == 0
    ), f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"


def _need_module(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[dev]')")


def test_ruff_check():
    _need_module("ruff", "ruff")
    _run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], "ruff check .")


def test_black_check():
    _need_module("black", "black")
    _run([sys.executable, "-m", "black", "--check", "."], "black --check .")


def test_import_linter_contracts():
    _need_module("importlinter", "import-linter")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    exe = exe or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("the lint-imports command of import-linter is not on the PATH")
    _run([exe, "--no-cache"], "lint-imports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    r"""The absolute name of the module ``node`` imports from (relative imports too)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package(module: str) -> str:
    r"""The subpackage (or top-level module) of deepinv_icrf that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports() -> set[tuple[str, str, str]]:
    r"""Every ``from deepinv_icrf.X import _name`` that crosses a package boundary."""
    found = set()
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _imported_from(module, path.name == "__init__.py", node)
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                if _is_private(alias.name) and _package(module) != _package(source):
                    found.add((module, source, alias.name))
    return found


def test_private_names_cross_packages_only_from_the_allow_list():
    found = private_imports()
    new = sorted(found - ALLOWED_PRIVATE_IMPORTS)
    stale = sorted(ALLOWED_PRIVATE_IMPORTS - found)
    assert not new, (
        "Private names imported across packages (make them public, move the code, or add "
        f"them to ALLOWED_PRIVATE_IMPORTS with the reason and document it): {new}"
    )
    assert not stale, f"ALLOWED_PRIVATE_IMPORTS entries that match no import: {stale}"


def test_private_import_scan_sees_relative_and_absolute_imports():
    tree = ast.parse("from ..functional.linearity import _check_options\n")
    node = tree.body[0]
    source = _imported_from("deepinv_icrf.loss.linearity", False, node)
    assert source == "deepinv_icrf.functional.linearity"
    assert _package("deepinv_icrf.loss.linearity") == "loss"
    assert _package(source) == "functional"
    assert _is_private("_check_options") and not _is_private("__version__")
    assert (
        "deepinv_icrf.loss.linearity",
        "deepinv_icrf.functional.linearity",
        "_check_options",
    ) in private_imports()


def test_pre_commit_revs_match_the_dev_pins():
    config = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for repo, tool, prefix in (
        ("astral-sh/ruff-pre-commit", "ruff", "v"),
        ("psf/black-pre-commit-mirror", "black", ""),
    ):
        rev = re.search(
            rf"repo: https://github.com/{re.escape(repo)}\s+rev: (\S+)", config
        )
        pin = re.search(rf'"{tool}==([^"]+)"', pyproject)
        assert rev is not None and pin is not None, f"no pinned {tool} in both files"
        assert rev.group(1) == prefix + pin.group(1), (
            f"{tool}: .pre-commit-config.yaml has {rev.group(1)}, the dev extra "
            f"{pin.group(1)}; change both together"
        )
