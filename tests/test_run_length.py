"""train() warns when its run will be long (hc.settings.long_run_hours), naming the cost and what cuts it.

A 10x Multiome data set with every gene and peak has about 40,000 gene anchors; on a 2-core CPU a default run of
10,000 such cells takes more than a day (benchmarks/results/scaling.md), and nothing said so.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import holocell as hc

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def long_run_hours():
    """Set ``hc.settings.long_run_hours`` for one test and restore it."""
    before = hc.settings.long_run_hours

    def set_to(value):
        hc.settings.long_run_hours = value

    yield set_to
    hc.settings.long_run_hours = before


def _model(pbmc, n_cells: int) -> hc.HoloCell:
    cells = np.sort(np.random.default_rng(0).choice(pbmc.n_obs, n_cells, replace=False))  # every batch
    mdata = pbmc[cells].copy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    return hc.HoloCell(mdata, **TINY)


def _run_warnings(model, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(enable_progress_bar=False, seed=0, batch_size=32, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, hc.HoloCellWarning)]


def test_a_run_projected_past_the_setting_warns_once_naming_its_cost_and_the_cure(pbmc, long_run_hours):
    long_run_hours(0)
    model = _model(pbmc, 400)
    messages = _run_warnings(model, max_epochs=3)
    assert len(messages) == 1, messages
    message = messages[0]
    n_batches = len(model.train_indices_) // 32  # the training loader drops the last partial batch
    # projected after the 4th step: the steps left of the run's 3 epochs
    assert f"{3 * n_batches - 4:,} more steps at" in message
    assert f"{model.feature_space.n_anchors:,} gene anchors (" in message
    n_rna, n_protein = (len(model.feature_space.maps[m].anchor) for m in ("rna", "protein"))
    assert f"{n_rna:,} RNA features, {n_protein:,} proteins" in message
    assert "on cpu" in message and "accelerator='gpu'" in message and "max_epochs=" in message
    assert "long_run_hours (now 0)" in message
    # the section the message sends the user to exists
    section = re.search(r"docs/own_data.md, '([^']+)'", message).group(1)
    assert f"## {section}\n" in (DOCS / "own_data.md").read_text()


def test_a_short_epoch_is_projected_from_the_steps_it_had(pbmc, long_run_hours):
    long_run_hours(0)
    model = _model(pbmc, 90)  # 81 training cells: 2 steps an epoch
    messages = _run_warnings(model, max_epochs=5)
    assert len(messages) == 1, messages
    assert "8 more steps at" in messages[0]  # checked at the end of the first epoch: 5 x 2 - 2


def test_runs_below_the_setting_or_with_none_do_not_warn(pbmc, long_run_hours):
    model = _model(pbmc, 200)
    long_run_hours(None)
    assert _run_warnings(model, max_epochs=2) == []
    long_run_hours(1000)
    assert _run_warnings(model, max_epochs=2) == []


@pytest.mark.parametrize("bad", ["1", -1, float("nan"), True])
def test_long_run_hours_takes_hours_or_none(bad, long_run_hours):
    with pytest.raises(ValueError, match="long_run_hours must be a number of hours >= 0, or None"):
        long_run_hours(bad)
    long_run_hours(2)
    assert hc.settings.long_run_hours == 2.0 and "long_run_hours=2.0" in repr(hc.settings)


def _recipe() -> str:
    """The code block of docs/own_data.md's "Select features first"."""
    text = (DOCS / "own_data.md").read_text().split("## Select features first\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)


def test_the_feature_selection_of_own_data_runs_drops_columns_only_and_sets_up(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hc.HoloCellWarning)  # the simulator's made-up gene names
        mdata, _ = hc.data.simulate_multiome(
            300, n_genes=150, peaks_per_gene=150, n_proteins=0, modalities=("rna", "atac"), seed=0
        )
    before = {m: mdata[m].to_df() for m in ("rna", "atac")}
    scope = {"mdata": mdata}
    exec(_recipe(), scope)  # the docs' code as a user runs it
    mdata = scope["mdata"]
    assert mdata["atac"].n_vars == 20_000 < before["atac"].shape[1]  # the most open peaks
    open_in = (before["atac"] > 0).sum(axis=0)
    assert open_in[mdata["atac"].var_names].min() >= open_in.drop(mdata["atac"].var_names).max()
    assert mdata["rna"].n_vars == before["rna"].shape[1]  # 150 genes: every one is among the 4,000
    for m in ("rna", "atac"):  # raw counts of the kept columns, every cell
        kept = mdata[m].to_df()
        assert kept.equals(before[m].loc[kept.index, kept.columns])
        assert list(kept.index) == list(before[m].index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hc.HoloCellWarning)
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch")
    assert hc.HoloCell(mdata, **TINY).config.n_anchors > 0


def test_sparse_chromatin_would_lose_its_peaks_to_a_five_percent_filter(shared_data_dir, require_real_data):
    """What docs/own_data.md says of SNARE-seq2: ranking peaks, not PeakVI's 5% cut, keeps its chromatin."""
    require_real_data("snareseq2_mop")
    atac = hc.data.snareseq2_mop(progressbar=False)["atac"]
    open_frac = np.asarray((atac.X > 0).mean(axis=0)).ravel()
    assert (open_frac >= 0.05).mean() < 0.01
    assert "fewer than 1% of the peaks are open in 5% of the nuclei" in (DOCS / "own_data.md").read_text()
