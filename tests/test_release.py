"""Release set-up: what a user installing the wheel gets (metadata, typing marker, dependencies, citation)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import holocell as hc

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: distribution name -> the module it is imported as, where they differ
IMPORT_NAMES = {"scvi-tools": "scvi", "scikit-learn": "sklearn"}
#: imported only inside ``try: ... except ImportError`` (optional speed-ups), so not a dependency
OPTIONAL_IMPORTS = {"threadpoolctl"}


def _third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / "src" / "holocell").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"holocell", "__future__"}


def test_hard_dependencies_are_exactly_what_src_imports():
    """muon (never imported by ``src/``) is an extra; every declared dependency is imported; nothing undeclared is."""
    declared = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in PYPROJECT["project"]["dependencies"]}
    declared = {IMPORT_NAMES.get(name, name) for name in declared}
    imported = _third_party_imports() - OPTIONAL_IMPORTS
    assert "muon" not in declared and "muon" not in imported
    assert any("muon" in d for d in PYPROJECT["project"]["optional-dependencies"]["tutorials"])
    assert imported == declared, {"imported, undeclared": imported - declared, "declared, unused": declared - imported}


def test_package_metadata_for_an_index():
    project = PYPROJECT["project"]
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(project["urls"])
    assert "Typing :: Typed" in project["classifiers"]
    assert (Path(hc.__file__).parent / "py.typed").is_file()
    assert "holocell" in project["scripts"]


def test_citation_and_changelog_agree_with_the_version():
    """CITATION.cff cites the software and the methods it implements; the version has a dated CHANGELOG entry."""
    version = PYPROJECT["project"]["version"]
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(version)}$", citation, re.MULTILINE)
    released = re.search(r'^date-released: "(\d{4}-\d{2}-\d{2})"$', citation, re.MULTILINE).group(1)
    references = citation.split("\nreferences:\n", 1)[1]
    assert len(re.findall(r"^  - type: ", references, re.MULTILINE)) >= 3
    assert re.search(rf"^## \[{re.escape(version)}\] - {released}$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)


def test_release_and_docs_jobs():
    """A tag ``v*`` builds, checks with twine and publishes; the docs build with warnings as errors."""
    release = (ROOT / ".github" / "workflows" / "release.yaml").read_text()
    assert 'tags: ["v*"]' in release and "twine check --strict" in release and "gh-action-pypi-publish" in release
    assert "fail_on_warning: true" in (ROOT / ".readthedocs.yaml").read_text()
    assert "sphinx -W" in (ROOT / ".github" / "workflows" / "test.yaml").read_text()
