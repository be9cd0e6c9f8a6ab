"""Package conventions, as scanpy's ``test_package_structure.py`` checks them (issue 17).

Every public function and class (the ``__all__`` of holocell's public modules, and the public methods of
:class:`holocell.HoloCell`) has a docstring and appears in ``docs/api.md``; every ``tl`` function has the
scanpy signature ``(mdata, model, *, ..., key_added=..., copy=False) -> MuData | None``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import holocell as hc

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
SRC = Path(hc.__file__).resolve().parent

PUBLIC_MODULES = [
    "holocell",
    "holocell.data",
    "holocell.data.arrays",
    "holocell.evaluation",
    "holocell.tl",
    "holocell.pl",
    "holocell.priors",
    "holocell.vocab",
    "holocell.model",
    "holocell.nn",
    "holocell.train",
    "holocell.tokenize",
]


def _public_objects():
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                prefix = name.removeprefix("holocell").lstrip(".")
                yield f"{prefix}.{attr}" if prefix else attr, obj
    for attr in dir(hc.HoloCell):
        obj = inspect.getattr_static(hc.HoloCell, attr)
        func = obj.__func__ if isinstance(obj, classmethod | staticmethod) else obj
        if not attr.startswith("_") and inspect.isfunction(func) and func.__module__.startswith("holocell"):
            yield f"HoloCell.{attr}", func


PUBLIC = dict(_public_objects())


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_api_has_a_docstring_and_is_in_api_md(name):
    obj = PUBLIC[name]
    assert inspect.getdoc(obj), f"{name} has no docstring"
    assert re.search(rf"(^|[\s`.]){re.escape(name)}(\s|$|`)", API, re.MULTILINE), f"{name} is not in docs/api.md"


@pytest.mark.parametrize("name", hc.tl.__all__)
def test_tl_functions_share_one_signature(name):
    func = getattr(hc.tl, name)
    params = inspect.signature(func).parameters
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{name}: {len(positional)} positional parameters"
    assert [p.name for p in positional[:2]] == ["mdata", "model"]
    assert params["copy"].kind is inspect.Parameter.KEYWORD_ONLY and params["copy"].default is False
    assert params["key_added"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(func).return_annotation in ("MuData | None", "'MuData | None'")


def test_no_file_in_src_is_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_layers_flow_one_way():
    """vocab -> tokenize -> nn -> train -> model -> tl: no module imports a later layer, and only ``tl`` and
    ``pl`` (besides the demo, the command line and evaluation itself) import ``evaluation``."""
    order = ["vocab", "tokenize", "nn", "train", "model", "tl"]
    pattern = re.compile(r"^\s*from \.\.(\w+)|^\s*from holocell\.(\w+)|^\s*import holocell\.(\w+)", re.MULTILINE)
    for layer_index, layer in enumerate(order):
        for path in (SRC / layer).rglob("*.py"):
            imported = {next(g for g in m.groups() if g) for m in pattern.finditer(path.read_text())}
            later = imported & set(order[layer_index + 1 :])
            assert not later, f"{path.relative_to(SRC)} imports the later layer(s) {later}"
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("tl", "pl", "evaluation") or str(rel) in ("_demo.py", "cli.py", "__init__.py"):
            continue  # the top-level __init__ only names the subpackages (loaded on first use)
        text = path.read_text()
        assert "evaluation" not in {next(g for g in m.groups() if g) for m in pattern.finditer(text)}, rel
        assert not re.search(r"from \. import .*evaluation", text), rel


def test_model_uses_no_private_data_module():
    for path in (SRC / "model").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"data\._(mosaic|streaming|access)", text), path.name


def test_every_subpackage_can_be_imported_first():
    """``from holocell.train import TrainingConfig`` as a script's first holocell import used to fail with a circular
    import (train -> data -> model -> train). Each subpackage is imported into an interpreter with no holocell module
    loaded (a child process, so this test's own imports do not hide the cycle)."""
    import subprocess
    import sys

    subpackages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
    code = (
        "import importlib, sys\n"
        f"for name in {subpackages!r}:\n"
        "    for key in [k for k in sys.modules if k == 'holocell' or k.startswith('holocell.')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module('holocell.' + name)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(subpackages) >= 8, subpackages
