"""Two species in one model (``species_key``) and the co-expression prior on data with a presence table.

- ``species_key`` needs the RNA names on the shared human anchors: ``species="mouse"`` with it is refused, and
  mouse symbols that were never renamed (``Bach2`` beside ``BACH2``) are warned about.
- A ``species_key`` column that only a modality's ``obs`` holds gives a ``KeyError`` with the columns and the fix.
- Species panels padded with zeros (``ad.concat(join="outer", fill_value=0)``) without a presence table are warned
  about; :func:`holocell.data.merge_datasets` is the fix.
- The co-expression prior reads the presence table: a count where a gene was not measured is not data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import holocell as hc
from holocell import HoloCellWarning

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MOUSE = Path(__file__).parent / "data" / "mouse_10x_300cells.h5ad"
MEASURED_KEY, MEASURED_BY_KEY = "holocell_measured", "holocell_measured_by"  # the presence table
SETUP = {"modalities": {"rna": "rna"}, "species_key": "species", "gene_id_type": "symbol"}

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def mouse() -> ad.AnnData:
    """150 real mouse cells under their gene symbols (title case, e.g. 'Xkr4')."""
    a = ad.read_h5ad(MOUSE)[:150].copy()
    a.var_names = a.var["symbol"].astype(str).to_numpy()
    a.var_names_make_unique()
    a.var = pd.DataFrame(index=a.var_names)
    return a


@pytest.fixture
def human(pbmc) -> ad.AnnData:
    """100 real human PBMC cells (RNA)."""
    rna = pbmc["rna"][pbmc["rna"].obs["batch"] == "p3_0"][:100].copy()
    rna.var = pd.DataFrame(index=rna.var_names)
    return rna


@pytest.fixture(scope="module")
def mouse_on_anchors(mouse) -> ad.AnnData:
    return hc.vocab.rename_to_anchors(mouse, species="mouse", gene_id_type="symbol")


def _concat(human: ad.AnnData, mouse: ad.AnnData) -> md.MuData:
    """The two species joined as ``ad.concat(join="outer", fill_value=0)`` does (no presence table)."""
    both = ad.concat({"human": human, "mouse": mouse}, join="outer", label="species", fill_value=0)
    both.obs_names_make_unique()
    both.var = pd.DataFrame(index=both.var_names)
    mdata = md.MuData({"rna": both})
    mdata.obs["species"] = both.obs["species"].astype(str).to_numpy()
    return mdata


def _merged(human: ad.AnnData, mouse: ad.AnnData) -> md.MuData:
    """The two species merged with the presence table (genes a species did not measure are masked)."""
    return hc.data.merge_datasets({"human": human, "mouse": mouse}, species={"human": "human", "mouse": "mouse"})


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, HoloCellWarning)]


# ----------------------------------------------------------------------------- finding 2: names and species
@pytest.mark.parametrize("species", ["mouse", None])
def test_species_key_with_another_species_is_refused(human, mouse, species):
    mdata = _merged(human, mouse)
    with pytest.raises(ValueError, match="with species_key, the RNA feature names must be the shared human") as e:
        hc.HoloCell.setup_mudata(mdata, batch_key="batch", species=species, **SETUP)
    assert "pass species='human'" in str(e.value) and "hc.vocab.rename_to_anchors(mouse, species='mouse')" in str(e.value)
    # the fix: species="human"; correctly set-up names keep their anchors, and the model trains
    hc.HoloCell.setup_mudata(mdata, batch_key="batch", species="human", **SETUP)
    model = hc.HoloCell(mdata, **TINY)
    report = model.feature_space.maps["rna"].report
    on_mouse = report.loc[report.index.isin(human.var_names), "anchor"].str.startswith("mouse:")
    assert not on_mouse.any()  # no human gene pushed off its anchor
    renamed = [str(n) for n in mdata["rna"].var_names if str(n).startswith("mouse:")]
    assert renamed and (report.loc[renamed, "anchor"] == renamed).all()  # mouse-only genes keep their anchors
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    assert np.isfinite(model.get_latent_representation()).all()


def test_mouse_symbols_not_renamed_are_warned_about(human, mouse, mouse_on_anchors):
    mdata = _concat(human, mouse)  # rename_to_anchors forgotten
    with pytest.warns(HoloCellWarning) as record:
        hc.HoloCell.setup_mudata(mdata, batch_key="species", **SETUP)
    case = [m for m in _messages(record) if "written like mouse gene symbols" in m]
    assert len(case) == 1
    examples = re.search(r"\(e\.g\. (\[.*?\])\)", case[0]).group(1)
    assert all(name in mouse.var_names for name in ast.literal_eval(examples))
    assert "hc.vocab.rename_to_anchors(mouse, species='mouse')" in case[0]
    # the fix as the message gives it: renamed, and merged with the presence table: no warning at all
    hc.HoloCell.setup_mudata(_merged(human, mouse), batch_key="batch", species="human", **SETUP)
    # renamed but zero-padded: the names are fine (only the padding warning is left)
    with pytest.warns(HoloCellWarning) as record:
        hc.HoloCell.setup_mudata(_concat(human, mouse_on_anchors), batch_key="species", **SETUP)
    assert not [m for m in _messages(record) if "written like mouse gene symbols" in m]


# ----------------------------------------------------------------------------- finding 5: the column's place
def test_species_key_only_in_a_modality_names_the_fix(human, mouse_on_anchors):
    mdata = _concat(human, mouse_on_anchors)
    mdata.obs = mdata.obs.drop(columns=[c for c in mdata.obs.columns if c.endswith("species")])
    assert "species" in mdata["rna"].obs and "species" not in mdata.obs
    with pytest.raises(KeyError, match="not a column of the global mdata.obs") as e:
        hc.HoloCell.setup_mudata(mdata, batch_key=None, **SETUP)
    msg = str(e.value)
    # not "run mdata.pull_obs()": that gives 'rna:species', NaN for the cells without RNA (session 8)
    assert "columns: [" in msg and "Modality 'rna' holds it" in msg and "pull_obs()" not in msg
    fix = re.search(r"(mdata\.obs\['species'\] = .*?\.reindex\(mdata\.obs_names\))", msg).group(1)
    exec(fix, {"mdata": mdata})  # the fix as printed
    with pytest.warns(HoloCellWarning, match="padded with zeros"):  # the column is found; the data are padded
        hc.HoloCell.setup_mudata(mdata, batch_key=None, **SETUP)


# ----------------------------------------------------------------------------- guard for finding 1: zero padding
def test_zero_padded_species_panels_are_warned_about(human, mouse, mouse_on_anchors):
    padded = _concat(human, mouse_on_anchors)  # the recipe that reads unmeasured genes as zero counts
    with pytest.warns(HoloCellWarning, match="padded with zeros") as record:
        hc.HoloCell.setup_mudata(padded, batch_key="species", **SETUP)
    (msg,) = [m for m in _messages(record) if "padded with zeros" in m]
    n_only = int(re.match(r"(\d+) of (\d+) RNA features", msg).group(1))
    x = padded["rna"].X.toarray()
    is_mouse = (padded.obs["species"] == "mouse").to_numpy()
    in_h, in_m = (x[~is_mouse] > 0).any(axis=0), (x[is_mouse] > 0).any(axis=0)
    assert n_only == int((in_h != in_m).sum()) > 0
    assert "read as measured zero counts" in msg and "hc.data.merge_datasets(" in msg
    # the fix: the same cells merged with the presence table set up without a warning and train on masked slots
    merged = _merged(human, mouse)
    assert MEASURED_KEY in merged["rna"].varm and MEASURED_BY_KEY in merged["rna"].uns
    hc.HoloCell.setup_mudata(merged, batch_key="batch", **SETUP)
    model = hc.HoloCell(merged, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    # only the genes both species measured: nothing to warn about
    shared = np.intersect1d(human.var_names, mouse_on_anchors.var_names)
    assert len(shared) >= 10
    parts = [a[:, shared] for a in (human, mouse_on_anchors)]
    inner = _concat(*(a[np.asarray(a.X.sum(axis=1)).ravel() > 0].copy() for a in parts))
    hc.HoloCell.setup_mudata(inner, batch_key="species", **SETUP)


# ----------------------------------------------------------------------------- finding 3: co-expression prior
def _coexpression(model: hc.HoloCell) -> np.ndarray:
    return model.module.network.prior_coexpression.detach().cpu().numpy()


def test_coexpression_prior_reads_no_count_where_a_gene_was_not_measured(human, mouse):
    merged = _merged(human, mouse)
    hc.HoloCell.setup_mudata(merged, batch_key="batch", **SETUP)
    model = hc.HoloCell(merged, priors="coexpression", **TINY)
    prior = _coexpression(model)
    # garbage where a gene was not measured changes nothing: those entries are not data
    noisy = merged.copy()
    rna = noisy["rna"]
    table = rna.varm[MEASURED_KEY]
    unmeasured = ~table.loc[:, rna.obs[rna.uns[MEASURED_BY_KEY]].astype(str)].to_numpy().T  # (cells, genes)
    x = rna.X.toarray()
    x[unmeasured] = np.random.default_rng(0).poisson(5.0, int(unmeasured.sum()))
    rna.X = x.astype(np.float32)
    hc.HoloCell.setup_mudata(noisy, batch_key="batch", **SETUP)
    np.testing.assert_allclose(_coexpression(hc.HoloCell(noisy, priors="coexpression", **TINY)), prior, atol=1e-5)
    # read without the table (every count is data), the leading axis is "which species measured the gene"
    space = model.feature_space.maps["rna"]
    names = np.asarray(space.features).astype(str)
    old = hc.priors.coexpression_prior(model.feature_space.n_anchors, _rna_counts(merged, names), space.anchor)
    known = old.known[space.anchor]
    first = np.sign(old.values[space.anchor, 0])
    h_only = first[known & (table["human"] & ~table["mouse"]).to_numpy()]
    m_only = first[known & (table["mouse"] & ~table["human"]).to_numpy()]
    assert abs((h_only > 0).mean() - (m_only > 0).mean()) > 0.9  # one sign for the human-only genes, one for mouse


def test_coexpression_prior_without_presence_table_is_unchanged(human, mouse_on_anchors):
    padded = _concat(human, mouse_on_anchors)  # no table: every count is data, as before
    with pytest.warns(HoloCellWarning, match="padded with zeros"):
        hc.HoloCell.setup_mudata(padded, batch_key="species", **SETUP)
    model = hc.HoloCell(padded, priors="coexpression", **TINY)
    space = model.feature_space.maps["rna"]
    names = np.asarray(space.features).astype(str)
    ref = hc.priors.coexpression_prior(model.feature_space.n_anchors, _rna_counts(padded, names), space.anchor)
    np.testing.assert_array_equal(_coexpression(model), ref.network_input())


def _rna_counts(mdata: md.MuData, names: np.ndarray):
    """RNA counts in the model's feature order, unmeasured genes as the zeros the matrix holds."""
    return mdata["rna"][:, names].X


def test_coexpression_prior_with_presence_table_backed_equals_memory(human, mouse, tmp_path):
    merged = _merged(human, mouse)
    merged.write(tmp_path / "merged.h5mu")
    backed = md.read_h5mu(tmp_path / "merged.h5mu", backed="r")
    models = []
    for data in (merged, backed):
        hc.HoloCell.setup_mudata(data, batch_key="batch", **SETUP)
        models.append(hc.HoloCell(data, priors="coexpression", **TINY))
    pd.testing.assert_frame_equal(models[1].prior_report_, models[0].prior_report_)
    torch.testing.assert_close(
        models[1].module.network.prior_coexpression, models[0].module.network.prior_coexpression, rtol=1e-5,
        atol=1e-5,
    )  # fmt: skip
