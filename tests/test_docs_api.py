r"""The API reference lists every public name of the package (fast, no Sphinx build)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import deepinv_icrf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_apigen():
    spec = importlib.util.spec_from_file_location(
        "icrf_apigen_under_test", DOCS / "_ext" / "icrf_apigen.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_api() -> dict[str, list[str]]:
    r"""Public names per public module, enumerated here independently of the generator."""
    modules = ["deepinv_icrf"] + [
        f"deepinv_icrf.{info.name}"
        for info in pkgutil.iter_modules(deepinv_icrf.__path__)
        if not info.name.startswith("_") and info.name not in ("conftest", "__main__")
    ]
    api = {}
    for name in modules:
        module = importlib.import_module(name)
        if hasattr(module, "__all__"):
            api[name] = list(module.__all__)
            continue
        names = []
        for attr in dir(module):
            obj = getattr(module, attr)
            if attr.startswith("_") or inspect.ismodule(obj):
                continue
            if type(obj).__name__ == "_Feature" or attr == "TYPE_CHECKING":
                continue
            if inspect.isclass(obj) or inspect.isroutine(obj):
                if not obj.__module__.startswith("deepinv_icrf"):
                    continue  # imported from another package
            names.append(attr)
        api[name] = names
    return api


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, str]:
    outdir = tmp_path_factory.mktemp("api")
    paths = _load_apigen().write_api_sources(outdir)
    return {p.stem: p.read_text() for p in paths}


def _listed(page: str) -> set[str]:
    r"""Names in the autosummary lists of a page."""
    names, inside = set(), False
    for line in page.splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
        elif inside and re.fullmatch(r"   [A-Za-z_][A-Za-z0-9_]*", line):
            names.add(line.strip())
        elif inside and line and not line.startswith("   "):
            inside = False
    return names


def test_docs_api_every_public_module_has_a_page(generated):
    assert set(_expected_api()) == set(generated)
    assert {
        "deepinv_icrf.loss",
        "deepinv_icrf.functional",
        "deepinv_icrf.models",
    } <= set(generated)


def test_docs_api_every_public_name_is_listed(generated):
    missing = []
    for module, names in _expected_api().items():
        page = generated[module]
        listed = _listed(page)
        for name in names:
            if name not in listed and f"``{module}.{name}``" not in page:
                missing.append(f"{module}.{name}")
    assert missing == []


def test_docs_api_each_object_documented_once(generated):
    documented: dict[int, list[str]] = {}
    for module, page in generated.items():
        mod = importlib.import_module(module)
        for name in _listed(page):
            documented.setdefault(id(getattr(mod, name)), []).append(f"{module}.{name}")
    duplicates = [paths for paths in documented.values() if len(paths) > 1]
    assert duplicates == []
    # the top-level re-export links to the subpackage page instead of repeating it
    assert (
        "``deepinv_icrf.fit_icrf``: documented as :py:obj:`deepinv_icrf.calibration.fit_icrf`"
        in generated["deepinv_icrf"]
    )


def test_docs_api_listed_names_resolve_and_loss_page_has_losses(generated):
    for module, page in generated.items():
        mod = importlib.import_module(module)
        for name in _listed(page):
            assert hasattr(mod, name), f"{module}.{name}"
    loss_names = _listed(generated["deepinv_icrf.loss"])
    assert {"RadiometricLinearityLoss", "WeightedLossScheduler"} <= loss_names


def test_docs_api_stale_pages_are_removed(tmp_path):
    apigen = _load_apigen()
    stale = tmp_path / "deepinv_icrf.removed_module.rst"
    stale.write_text("old")
    apigen.write_api_sources(tmp_path)
    assert not stale.exists()
    assert (tmp_path / "deepinv_icrf.loss.rst").exists()


def test_docs_landing_page_shows_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)[:2]
    assert len(commands) == 2
    index = (DOCS / "index.rst").read_text()
    for command in commands:
        assert f"    {command.strip()}" in index


def test_docs_user_guide_pages_are_in_its_toctree():
    guide = DOCS / "user_guide"
    toc = (guide / "index.rst").read_text()
    pages = sorted(p.stem for p in guide.glob("*.rst") if p.stem != "index")
    assert len(pages) >= 8
    for page in pages:
        assert f"\n   {page}\n" in toc
