"""The benchmark helpers that shape what peers see: the hidden-modality split and MULTIVI's zero padding."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import hide_modality
from _peers import MODALITY_KEY, multivi_mudata


def test_hide_modality_and_multivi_padding(pbmc):
    before = pbmc["adt"].X.sum()
    split = hide_modality(pbmc, "adt", "p4_0", ["batch", "celltype"])
    assert pbmc["adt"].X.sum() == before, "the input MuData was modified"
    assert not (split["adt"].obs["batch"] == "p4_0").any()
    assert split.n_obs == pbmc.n_obs
    pad = multivi_mudata(split, {"rna": "rna", "protein": "adt"}, "batch")
    assert pad["rna"].n_obs == pad["protein"].n_obs == split.n_obs
    p4 = split.obs_names[(split.obs["batch"] == "p4_0").to_numpy()]
    assert pad["protein"][p4].X.sum() == 0  # hidden protein is zero rows, MultiVI's missing-modality convention
    p3 = split["adt"].obs_names[(split["adt"].obs["batch"] == "p3_0").to_numpy()]
    np.testing.assert_array_equal(pad["protein"][p3].X.toarray(), split["adt"][p3].X.toarray())
    # MULTIVI's main batch is the cell's modality (its tutorial), the library a covariate
    modality = pad.obs[MODALITY_KEY].astype(str)
    assert set(modality[p4]) == {"expression"} and set(modality[p3]) == {"paired"}
    p2 = split.obs_names[(split.obs["batch"] == "p2_0").to_numpy()]
    assert set(modality[p2]) == {"protein"}
    assert (pad["rna"].obs[MODALITY_KEY] == pad.obs[MODALITY_KEY]).all()
