"""Sphinx configuration for holocell (cookiecutter-scverse layout)."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
# Build against the working tree even when holocell is not installed.
sys.path.insert(0, str(HERE.parent / "src"))

# -- Project information -----------------------------------------------------

project = "holocell"
author = "holocell developers"
copyright = f"{datetime.now():%Y}, {author}"
try:
    release = _version("holocell")
except PackageNotFoundError:
    release = "0.1.0"
version = release

# -- General configuration ---------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]

exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "notebooks/**/.ipynb_checkpoints",
]
master_doc = "index"
# myst_nb registers .md and .ipynb itself

# autodoc / autosummary
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
# Methods that override Lightning's without a docstring would show Lightning's own (other roles, other labels).
autodoc_inherit_docstrings = False
# Heavy runtime dependencies that may be absent on a docs-only builder.
autodoc_mock_imports: list[str] = []

# napoleon: numpy-style docstrings only
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True

# MyST / myst-nb
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are committed with their outputs
nb_merge_streams = True

# intersphinx
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/stable/", None),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
}
# Offline builds must not hang on inventory downloads; HOLOCELL_DOCS_OFFLINE=1 skips them (links to other
# projects' docs become plain text), so a machine without network still builds with -W.
intersphinx_timeout = 5
if os.environ.get("HOLOCELL_DOCS_OFFLINE"):
    intersphinx_mapping = {}

# -- HTML output ---------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "holocell"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
}
