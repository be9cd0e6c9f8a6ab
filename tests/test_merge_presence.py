"""Merged data sets: a feature one data set lacks is masked (absent) in its cells, never a zero count.

merge -> presence table in the merged MuData -> setup -> mini-batch arrays -> tokenizer mask -> the
diffusion loss does not score those slots; also after writing to .h5mu and reading back backed.
"""

from __future__ import annotations

import mudata as md
import numpy as np
import pytest
import torch

import holocell as hc
from holocell.data._merge import MergeInput, merge_for_pretraining
from holocell.data._mosaic import MEASURED_BY_KEY, MEASURED_KEY
from holocell.nn._diffusion import add_noise

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


@pytest.fixture
def merged(pbmc):
    """Data set ``a``: 150 paired p3 cells, genes 0-299 + protein; ``b``: 150 p1 cells, genes 200-499 only."""
    genes = pbmc["rna"].var_names
    p3 = pbmc.obs_names[(pbmc.obs["batch"] == "p3_0").to_numpy()][:150]
    p1 = pbmc.obs_names[(pbmc.obs["batch"] == "p1_0").to_numpy()][:150]
    a = md.MuData({"rna": pbmc["rna"][p3, genes[:300]].copy(), "adt": pbmc["adt"][p3].copy()})
    b = md.MuData({"rna": pbmc["rna"][p1, genes[200:]].copy()})
    out = merge_for_pretraining([
        MergeInput("a", a, {"rna": "rna", "protein": "adt"}),
        MergeInput("b", b, {"rna": "rna"}),
    ])
    return out, list(genes[:200]), list(genes[300:])


def _only_a_genes_and_only_b_genes_are_flagged(mdata, only_a, only_b):
    table = mdata["rna"].varm[MEASURED_KEY]
    assert mdata["rna"].uns[MEASURED_BY_KEY] == "source"
    assert not table.loc[only_a, "b"].any() and table.loc[only_a, "a"].all()
    assert not table.loc[only_b, "a"].any() and table.loc[only_b, "b"].all()
    assert MEASURED_KEY not in mdata["protein"].varm  # one data set has protein: nothing is partly measured


def test_merge_records_which_data_set_measured_each_feature(merged):
    mdata, only_a, only_b = merged
    _only_a_genes_and_only_b_genes_are_flagged(mdata, only_a, only_b)


def _tokens(model, mdata, backed=False):
    _, arrays = model._arrays(mdata)
    batch = arrays.take(np.arange(arrays.n_cells))
    return batch, model.module.tokenize(batch)


def test_unmeasured_features_are_masked_not_zero_and_never_scored(merged, tmp_path):
    mdata, only_a, only_b = merged
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY, seed=0)
    batch, tokens = _tokens(model, mdata)
    assert "rna_measured" in batch
    rna_map = model.feature_space.maps["rna"]
    anchor = dict(zip(rna_map.features, rna_map.anchor, strict=True))
    source = mdata.obs["source"].astype(str).to_numpy()
    in_a, in_b = source == "a", source == "b"
    slots_only_a = [anchor[g] for g in only_a]
    slots_only_b = [anchor[g] for g in only_b]
    mask = tokens.mask["rna"]
    # b's cells never measured a's own genes: those slots are masked (absent), as an absent modality would be
    assert mask[in_b][:, slots_only_a].all() and mask[in_a][:, slots_only_b].all()
    # the genes a cell's data set measured are visible, zeros included
    shared = [anchor[g] for g in rna_map.features if g not in set(only_a) | set(only_b)]
    assert not mask[:, shared].any()
    assert not mask[in_a][:, slots_only_a].any() and not mask[in_b][:, slots_only_b].any()
    # the loss scores only observed slots: never an unmeasured feature, however much is hidden
    exists = {m: model.module.tokenizer.exists(m) for m in model.module.modalities}
    noised = add_noise(tokens, exists, eps=0.9, p_drop_modality=0.0, generator=torch.Generator().manual_seed(0))
    assert noised.tokens.mask["rna"][in_b][:, slots_only_a].all()
    assert not (noised.target["rna"] & tokens.mask["rna"]).any()
    assert noised.target["rna"][in_b][:, shared].any()  # the measured ones are scored

    # the same after writing the merged data and reading it back, in memory and backed
    path = tmp_path / "merged.h5mu"
    mdata.write(path)
    for back in (md.read_h5mu(path), md.read_h5mu(path, backed=True)):
        _only_a_genes_and_only_b_genes_are_flagged(back, only_a, only_b)
        _, again = _tokens(model, back)
        np.testing.assert_array_equal(again.mask["rna"].numpy(), mask.numpy())


def test_training_on_a_merged_data_set_runs(merged):
    mdata, _, _ = merged
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY, seed=0)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    assert np.isfinite(model.history_["train_loss"]).all()
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()
