"""The benchmark helpers that shape what peers see: the hidden-modality split and zero padding."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import hide_modality, mark_winner, padded


def test_hide_modality_and_padding(pbmc):
    before = pbmc["adt"].X.sum()
    split = hide_modality(pbmc, "adt", "p4_0", ["batch", "celltype"])
    assert pbmc["adt"].X.sum() == before, "the input MuData was modified"
    assert not (split["adt"].obs["batch"] == "p4_0").any()
    assert split.n_obs == pbmc.n_obs
    pad = padded(split, ["rna", "adt"])
    assert pad["rna"].n_obs == pad["adt"].n_obs == split.n_obs
    p4 = split.obs_names[(split.obs["batch"] == "p4_0").to_numpy()]
    assert pad["adt"][p4].X.sum() == 0  # hidden protein is zero rows, MultiVI's missing-modality convention
    p3 = split["adt"].obs_names[(split["adt"].obs["batch"] == "p3_0").to_numpy()]
    np.testing.assert_array_equal(pad["adt"][p3].X.toarray(), split["adt"][p3].X.toarray())


def test_mark_winner_relative_gain():
    rows = [{"method": "holocell", "r": 0.46}, {"method": "kNN", "r": 0.40}, {"method": "mean", "r": 0.0}]
    v = mark_winner(rows, "r")
    assert v["best_peer"] == "kNN" and v["relative_gain"] == pytest.approx(0.15) and v["meets_target_10pct"]
    v = mark_winner([{"method": "holocell", "e": 0.5}, {"method": "kNN", "e": 0.4}], "e", higher_is_better=False)
    assert v["relative_gain"] == pytest.approx(-0.25) and not v["meets_target_10pct"]
