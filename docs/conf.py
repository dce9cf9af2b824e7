r"""Sphinx configuration of the deepinv-icrf documentation.

Build (offline, gallery executed, warnings are errors) from the repository root::

    python -m sphinx -W -b html docs docs/_build/html

Set ``DEEPINV_ICRF_DOCS_NO_GALLERY=1`` to skip running the gallery scripts (faster local edits).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

from icrf_apigen import render_summary_table, write_api_sources  # noqa: E402

import deepinv_icrf  # noqa: E402

# -- API reference sources: one page per public module, written at every build ------------
write_api_sources(HERE / "gen_modules" / "api")
(HERE / "gen_modules" / "api_summary.rst.inc").write_text(render_summary_table())

# -- Project -------------------------------------------------------------------------------
project = "deepinv-icrf"
author = "deepinv-icrf developers"
copyright = "2026, deepinv-icrf developers"
release = deepinv_icrf.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "gen_modules/backreferences",
    "gen_modules/*.inc",
    "**.ipynb_checkpoints",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "math"
pygments_style = "sphinx"

# -- autodoc / autosummary -----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # signatures stay readable; types are in the :param: fields
autodoc_default_options = {"exclude-members": "__init__"}
add_module_names = False

# ``|sep|`` separates the description from the example, as in deepinv's docstrings.
rst_epilog = """
.. |sep| raw:: html

   <hr />
"""

# deepinv's maths macros, so docstrings can use them as deepinv's do
mathjax3_config = {
    "tex": {
        "macros": {
            "forw": [r"{A\left({#1}\right)}", 1],
            "noise": [r"{N\left({#1}\right)}", 1],
            "inverse": [r"{R\left({#1}\right)}", 1],
            "sensor": [r"{\eta\left({#1}\right)}", 1],
            "ICRF": r"{f}",
        }
    }
}

# -- HTML: the pydata theme, like deepinv's site -------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"deepinv-icrf {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc", "sg_download_links", "sg_launcher_links"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
html_sidebars = {"index": [], "comparison": [], "bad_inputs": []}

# -- sphinx-gallery ------------------------------------------------------------------------


def _gallery_flag() -> bool:
    return os.environ.get("DEEPINV_ICRF_DOCS_NO_GALLERY", "0") in ("", "0")


sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(__init__|conftest)\.py",
    "within_subsection_order": "icrf_gallery_order.GalleryOrder",
    "plot_gallery": "True" if _gallery_flag() else "False",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("deepinv_icrf",),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "show_signature": False,
    "min_reported_time": 1,
    "capture_repr": ("_repr_html_",),
    "reset_modules": ("matplotlib", "seaborn"),
}

# The gallery runs headless, on CPU, with no network: matplotlib on Agg, quiet tqdm bars.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings(
    "ignore", category=UserWarning, message="Matplotlib is currently using agg"
)
warnings.filterwarnings("ignore", category=DeprecationWarning)
