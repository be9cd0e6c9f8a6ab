"""What ``hc.tl`` and the perturbation API do with inputs users pass by mistake, and what an overexpression means
for a gene at the rare-gene boundary (probes of 2026-12-06): a file path or an AnnData instead of a MuData, labels
kept in one modality's ``.obs``, a regenerated modality named as a source, ``annotate``'s cost arguments."""

from __future__ import annotations

import hashlib

import mudata as md
import numpy as np
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

SIM_GENES = r"RNA features of modality .* map to a known"
FAST = {"n_steps": 1, "progress_bar": False}
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}


def _setup(mdata: md.MuData) -> None:
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"},
                                 batch_key="batch")  # fmt: skip


@pytest.fixture(scope="module")
def sim():
    """The simulator's RNA + ATAC + protein cells, with cell types, and a tiny model trained 2 epochs (read-only)."""
    mdata, _ = hc.data.simulate_multiome(160, n_genes=24, n_tfs=4, n_proteins=6, seed=0)
    _setup(mdata)
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=2, enable_progress_bar=False, seed=0)
    return mdata, model


CALLS = {
    "embed": lambda data, model: hc.tl.embed(data, model, progress_bar=False),
    "generate": lambda data, model: hc.tl.generate(data, model, target="protein", **FAST),
    "perturb": lambda data, model: hc.tl.perturb(data, model, genes=["SIM1"], **FAST),
    "annotate": lambda data, model: hc.tl.annotate(data, model, labels_key="cell_type", modality="rna"),
    "grn": lambda data, model: hc.tl.grn(data, model, n_cells=10, **FAST),
    "fate_shift": lambda data, model: hc.tl.fate_shift(data, model, groupby="cell_type", source="a", target="b"),
}


@pytest.mark.parametrize("function", list(CALLS))
def test_a_file_path_is_refused_and_the_file_left_alone(sim, tmp_path, function):
    """``hc.tl.generate(path, model)`` ran the whole generation and dropped the result; the others failed with a bare
    AttributeError. A ``tl`` function adds its results to a MuData, so a path is refused before any work."""
    mdata, model = sim
    path = tmp_path / "data.h5mu"
    mdata.write(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(TypeError, match=rf"hc.tl.{function} adds its results to a MuData.*mudata.read_h5mu"):
        CALLS[function](str(path), model)
    with pytest.raises(TypeError, match="got a file path"):
        CALLS[function](path, model)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_the_path_error_names_the_command_line_where_there_is_one(sim, tmp_path):
    _, model = sim
    with pytest.raises(TypeError, match=r"holocell generate .*data.h5mu --out out.h5mu"):
        hc.tl.generate(str(tmp_path / "data.h5mu"), model, target="protein")
    with pytest.raises(TypeError, match="read_h5mu") as err:
        hc.tl.annotate(str(tmp_path / "data.h5mu"), model, labels_key="cell_type")
    assert "holocell annotate" not in str(err.value)  # no such command


def test_an_anndata_is_refused_with_the_line_that_wraps_it(sim):
    mdata, model = sim
    with pytest.raises(TypeError, match=r"got an AnnData: wrap it, mdata = mudata.MuData\(\{'rna': adata\}\)"):
        hc.tl.embed(mdata["rna"], model)


def test_labels_kept_in_one_modality_obs_point_to_the_column_or_the_copy(sim):
    """After ``sc.tl.leiden(mdata["rna"])`` the labels are in the modality's ``.obs``: the error said "pass
    labels_key= with the reference labels", as if the name were wrong. It now names the modality and the fix:
    the line that copies it to ``mdata.obs``, and mudata's prefixed copy ``"rna:<key>"``."""
    mdata, model = sim
    data = mdata.copy()
    data["rna"].obs["leiden"] = data.obs["cell_type"].reindex(data["rna"].obs_names).astype(str).to_numpy()
    data.obs = data.obs.drop(columns=[c for c in data.obs.columns if c.endswith("leiden")])
    fix = r"Modality 'rna' holds it in its own obs: copy it to the global obs, mdata.obs\['leiden'\] = "
    with pytest.raises(KeyError, match=fix):
        hc.tl.annotate(data, model, labels_key="leiden")
    with pytest.raises(KeyError, match=fix):
        hc.tl.fate_shift(data, model, groupby="leiden", source="a", target="b")
    data.pull_obs(columns=["leiden"], mods=["rna"])
    assert "rna:leiden" in data.obs
    with pytest.raises(KeyError, match=r"pass labels_key='rna:leiden', mudata's copy"):
        hc.tl.annotate(data, model, labels_key="leiden")
    with pytest.raises(KeyError, match=r"pass labels_key= one of \[.*'cell_type'"):
        hc.tl.annotate(data, model, labels_key="celltype")
    # Only mudata's copy left (the modality's own column deleted): it is named, though some cells lack it.
    del data["rna"].obs["leiden"]
    with pytest.raises(KeyError, match=r"mdata.obs has mudata's copy 'rna:leiden'.*pass labels_key='rna:leiden'"):
        hc.tl.annotate(data, model, labels_key="leiden")


def test_annotate_checks_and_passes_on_its_cost_arguments(sim, monkeypatch):
    """The kNN / classifier methods compute the embeddings with ``model``: ``batch_size``, ``device`` and
    ``progress_bar`` were accepted whatever their value and never used there."""
    mdata, model = sim
    data = mdata.copy()
    data.obs.loc[data.obs["batch"] == "batch1", "cell_type"] = np.nan
    for bad in (0, -3, 2.0):
        with pytest.raises((TypeError, ValueError), match="batch_size"):
            hc.tl.annotate(data, model, labels_key="cell_type", modality="rna", batch_size=bad)
    sizes = []
    original = model._inference_batch_size
    monkeypatch.setattr(model, "_inference_batch_size", lambda size: sizes.append(size) or original(size))
    hc.tl.annotate(data, model, labels_key="cell_type", modality="rna", key_added="small_steps", batch_size=7,
                   device="cpu", progress_bar=False)  # fmt: skip
    hc.tl.annotate(data, model, labels_key="cell_type", modality="rna", key_added="default_steps")
    assert sizes == [7, None]
    assert data.obs["small_steps"].astype(str).equals(data.obs["default_steps"].astype(str))
    assert data.obs["small_steps"].notna().sum() > 0


def test_a_regenerated_modality_is_not_also_a_source(sim):
    """``sources=["atac", "rna"]`` with RNA regenerated changed nothing (RNA is hidden and generated again) and was
    recorded as a source."""
    mdata, model = sim
    with pytest.raises(ValueError, match=r"\['rna'\] would be both regenerated and kept as a source"):
        model.predict_perturbation(genes=["SIM1"], sources=["atac", "rna"], **FAST)
    with pytest.raises(ValueError, match="both regenerated and kept as a source"):
        hc.tl.perturb(mdata.copy(), model, genes=["SIM1"], regenerate=["protein"], sources=["protein"], **FAST)
    result = model.predict_perturbation(genes=["SIM1"], sources=["atac"], regenerate=["rna"], **FAST)
    assert result.params["sources"] == ["atac"]


def _log_cp10k(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(1, keepdims=True)
    return np.log1p(counts / np.maximum(total, 1) * 1e4)


def test_an_overexpression_at_the_rare_gene_boundary_is_not_a_knockdown():
    """A gene expressed in the boundary count of cells, where the quantile over all cells falls between the zeros
    and its lowest value, was set to nearly 0 (0.05 log1p CP10k in a 300-cell case; MS4A1 in PBMC at quantile 0.9):
    every cell that expressed it was knocked down. It is set to the quantile over the cells that express it."""
    mdata, _ = hc.data.simulate_multiome(120, n_genes=24, n_tfs=4, n_proteins=6, seed=1)
    rna = mdata["rna"]
    x = rna.X.toarray() if hasattr(rna.X, "toarray") else np.array(rna.X)
    gene = "SIM5"
    j = list(rna.var_names).index(gene)
    n, quantile = rna.n_obs, 0.955
    k = n - int(np.floor(quantile * (n - 1))) - 1  # the quantile lands between the last zero and the lowest value
    keep = np.flatnonzero(x[:, j] > 0)[:k]
    assert len(keep) == k
    x[:, j] = 0
    x[keep, j] = np.arange(1, k + 1)
    rna.X = x.astype(np.float32)
    all_cells = np.quantile(_log_cp10k(x)[:, j], quantile)
    lowest = _log_cp10k(x)[keep, j].min()
    assert 0 < all_cells < lowest  # the boundary case
    _setup(mdata)
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    result = model.predict_perturbation(genes=[gene], mode="overexpress", overexpress_quantile=quantile, **FAST)
    col = list(result.features["rna"]).index(gene)
    level = result.perturbed["rna"][result.applied, col]
    expected = np.quantile(_log_cp10k(x)[keep, j], quantile)
    np.testing.assert_allclose(level, expected, rtol=1e-4)
    assert level.min() >= lowest
