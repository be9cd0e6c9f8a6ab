"""The README's code block runs end to end, as a user copies it (at test sizes: the substitutions below shrink the
model, the training and the downstream runs; each must still match the README, so an edit there fails here first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"
#: README text -> test-sized text (a smaller model, 2 epochs, one denoising step, few cells for the knockouts, 40
#: candidate genes for the fate shift instead of all 500)
SHRINK = {
    "model = hc.HoloCell(mdata)": "model = hc.HoloCell(mdata, d_model=32, n_layers=1, n_latents=8)",
    "model.train(max_epochs=40)": "model.train(max_epochs=2, enable_progress_bar=False)",
    "hc.tl.grn(mdata, model)": "hc.tl.grn(mdata, model, n_cells=30, n_steps=1)",
    'target="CD4 T")': 'target="CD4 T", n_cells=10, n_steps=1, genes=mdata["rna"].var_names[:40])',
    'n_steps=8, key_added="adt_generated")': 'n_steps=1, key_added="adt_generated")',
    'mode="knockout")': 'mode="knockout", n_steps=1)',
}


@pytest.mark.slow
def test_the_readme_code_block_runs(tmp_path, monkeypatch):
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    for old, new in SHRINK.items():
        assert old in block, f"the README no longer holds {old!r}: update SHRINK"
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)  # model.save("pbmc_model/") writes here
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # holocell's warnings are errors in the suite
    mdata = namespace["mdata"]
    assert {"adt_generated", "holocell_grn", "holocell_fate_shift"} <= set(mdata.mod) | set(mdata.uns)
    assert mdata.obsm["X_holocell"].shape[0] == mdata.n_obs


#: the second block (scoring generation on held-out cells) at test size
SHRINK_SCORING = {
    "scored = hc.HoloCell(train)": "scored = hc.HoloCell(train, d_model=32, n_layers=1, n_latents=8)",
    "scored.train(max_epochs=40)": "scored.train(max_epochs=2, enable_progress_bar=False)",
}


def test_the_readme_scores_generation_on_cells_the_model_never_saw(tmp_path, monkeypatch):
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    for old, new in SHRINK_SCORING.items():
        assert old in block, f"the README no longer holds {old!r}: update SHRINK_SCORING"
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"hc": hc}  # imported by the first block, which a reader has run
    exec(compile(block, str(README), "exec"), namespace)
    train, truth = namespace["train"], namespace["truth"]
    hidden = truth.obs_names
    assert not set(hidden) & set(train["adt"].obs_names)  # the model never saw the values it is scored against
    assert set(hidden) <= set(train["adt_generated"].obs_names)
