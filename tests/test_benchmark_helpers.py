"""The benchmark helpers that shape what peers see (the hidden-modality split, MULTIVI's zero padding) and what the
pages say of their training."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import hide_modality
from _peers import MODALITY_KEY, below_baseline_notes, multivi_mudata, train_summary


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


def test_chromatin_add_keeps_the_other_tasks(tmp_path):
    """``chromatin.py --add``: the tasks not re-run keep their rows and their run's provenance; a file of other
    sizes or settings is refused."""
    import json

    import pytest
    from chromatin import kept_tasks

    settings = {"sizes": {"per_lib": 50}, "holocell": {"max_epochs": None}, "tasks": "paired,granja"}
    old = {
        "name": "chromatin", "mode": "full", "seed": 0, "quick": False, "settings": settings,
        "task2_embedding": [{"method": "holocell", "nmi": 0.4}], "task4_granja": [{"method": "holocell", "nmi": 0.5}],
        "task3_diagonal": [{"method": "stale"}], "sizes": {"paired": {}, "granja": {}, "diagonal": {}},
        "cost": [{"task": "SNARE paired"}, {"task": "SNARE diagonal"}],
        "peer_training": [{"task": "paired"}, {"task": "diagonal"}], "meta": {"date": "then", "commit": "abc"},
    }  # fmt: skip
    path = tmp_path / "chromatin.json"
    path.write_text(json.dumps(old))
    fresh = {"mode": "full", "seed": 0, "quick": False, "settings": {**settings, "tasks": "diagonal"}}
    kept = kept_tasks(path, fresh, ["diagonal"])
    assert kept["task2_embedding"] == old["task2_embedding"] and kept["task4_granja"] == old["task4_granja"]
    assert "task3_diagonal" not in kept and "diagonal" not in kept["sizes"]
    assert kept["cost"] == [{"task": "SNARE paired"}] and kept["peer_training"] == [{"task": "paired"}]
    assert kept["task_runs"] == {"paired": old["meta"], "granja": old["meta"]}
    assert kept["settings"]["tasks"] == "paired,diagonal,granja" and "meta" not in kept
    with pytest.raises(SystemExit, match="--add needs the same"):
        kept_tasks(path, {**fresh, "seed": 1}, ["diagonal"])
    assert kept_tasks(tmp_path / "absent.json", fresh, ["diagonal"]) is fresh


def test_cost_baseline_worktree_is_temporary():
    """``cost.py --baseline REF`` measures the code of an older commit from a temporary git worktree: the tree holds
    that commit's package and is gone (also from ``git worktree list``) afterwards."""
    import subprocess

    import pytest
    from cost import git_worktree

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    with git_worktree(head.stdout.strip()) as tree:
        assert (Path(tree) / "src" / "holocell" / "__init__.py").is_file()
        shown = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=True)
        assert shown.stdout == head.stdout
    assert not Path(tree).exists()
    listed = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True, check=True).stdout
    assert tree not in listed


def test_annotation_bridge_imputes_the_query_from_its_nearest_paired_cells():
    from _annotation import bridge

    rng = np.random.default_rng(0)
    pair_query_space = np.vstack([rng.normal(0, 0.1, (20, 3)), rng.normal(5, 0.1, (20, 3))])
    pair_ref_space = np.vstack([np.zeros((20, 2)), np.ones((20, 2))])  # the reference modality of the pairs
    query = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    ref_x = rng.normal(size=(4, 2))
    out_ref, out_query = bridge(ref_x, pair_query_space, pair_ref_space, query)
    assert out_ref is ref_x  # the reference keeps its own measured features
    np.testing.assert_allclose(out_query, [[0.0, 0.0], [1.0, 1.0]])  # each query cell: its 15 neighbours' mean


def test_peer_training_record_names_the_metric_early_stopping_watches():
    """PeakVI and MULTIVI stop on the validation reconstruction loss (their ``train()``), SCVI on the ELBO: the record
    and the pages' evidence sentences say which, from a real scvi-tools model's history."""
    import anndata as ad
    import scipy.sparse as sp
    import scvi

    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix((rng.random((120, 60)) < 0.2).astype(np.float32)))
    adata.obs["batch"] = ["a", "b"] * 60
    scvi.model.PEAKVI.setup_anndata(adata, batch_key="batch")
    peakvi = scvi.model.PEAKVI(adata)
    peakvi.train(max_epochs=3, early_stopping=True, enable_progress_bar=False)
    record = train_summary(peakvi, "PeakVI")
    assert record["monitor"] == "reconstruction_loss_validation" and record["epochs"] == 3
    assert 1 <= record["best_monitored_epoch"] <= 3 and 1 <= record["best_epoch"] <= 3
    rows = [{"method": "PeakVI", "nmi": 0.1}, {"method": "LSI", "nmi": 0.5}]
    note = below_baseline_notes(rows, ["PeakVI"], ["LSI"], ["nmi"], [{**record, "max_epochs": 10}], "toy")
    assert "watching `reconstruction_loss_validation`" in note and "best validation ELBO at epoch" in note
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    scvi_model = scvi.model.SCVI(adata)
    scvi_model.train(max_epochs=2, early_stopping=True, enable_progress_bar=False)
    assert train_summary(scvi_model, "SCVI")["monitor"] == "elbo_validation"
