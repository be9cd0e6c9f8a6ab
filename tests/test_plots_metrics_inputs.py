"""Inputs of ``hc.pl`` and ``holocell.evaluation`` that gave a silently wrong plot or number: normalised measured
values transformed twice, 0/1 integer transfer masks read as positions, NaN prediction rows scored as r = 0,
overlapping reference and query cells, heatmap rows in string order, and a numeric ``color=`` drawn as groups."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import holocell as hc
import holocell.evaluation as ev

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
#: the simulator's genes (SIM1, ...) are synthetic: setting its data up reports that few are vocabulary genes
SIM_GENES = r"RNA features of modality .* map to a known"
PLOT = {"measured": "protein", "generated": "protein_generated", "show": False}


@pytest.fixture(scope="module")
def mosaic():
    """240 simulated RNA + protein cells (batch1 without RNA), a tiny model trained 1 epoch, protein generated
    (NaN rows for the protein-only cells: nothing to generate from) and an RNA knockout (read-only)."""
    mdata, _ = hc.data.simulate_multiome(
        240, n_genes=40, n_tfs=5, n_proteins=8, modalities=("rna", "protein"), missing={"rna": ["batch1"]}, seed=0
    )
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, seed=0)
    model.generate(mdata, target="protein", n_steps=1, key_added="protein_generated", progress_bar=False)
    hc.tl.perturb(mdata, model, genes=[str(mdata["rna"].var_names[0])], n_steps=1, progress_bar=False)
    return mdata, model


def _truth_and_prediction(mdata) -> tuple[np.ndarray, np.ndarray]:
    """CLR of the measured protein counts and the generated protein of the same cells and proteins."""
    protein = mdata["protein"]
    generated = mdata["protein_generated"][protein.obs_names]
    columns = pd.Index(generated.var["measured_name"].astype(str)).get_indexer(protein.var_names)
    return ev.clr(protein.X), np.asarray(generated.X)[:, columns]


# --------------------------------------------------------------------------------------------- finding 1
def test_plots_refuse_normalised_measured_values_and_name_layer(mosaic):
    """.X after muon's CLR or sc.pp.log1p was transformed again and plotted as 'measured (CLR)'."""
    mdata, _ = mosaic
    feature = str(mdata["protein"].var_names[0])
    counts = np.asarray(mdata["protein"].X.toarray() if hasattr(mdata["protein"].X, "toarray") else mdata["protein"].X)
    expected = hc.pl.generated_vs_measured(mdata, feature, **PLOT)  # raw counts in .X: as before
    normalised = mdata["protein"].copy()
    normalised.layers["counts"] = counts.copy()
    figures = plt.get_fignums()
    for values, words in [(ev.clr(counts), "negative values"), (np.log1p(counts), "non-integer values")]:
        normalised.X = values
        for plot in (
            lambda m: hc.pl.generated_vs_measured(mdata, feature, **{**PLOT, "measured": m}),
            lambda m: hc.pl.feature_scores(mdata, **{**PLOT, "measured": m}),
        ):
            with pytest.raises(ValueError, match=rf"{words}.*transformed twice.*layer='counts'"):
                plot(normalised)
    assert plt.get_fignums() == figures  # refused before anything was drawn
    # the way out the message gives: the same plot as from raw counts
    fixed = hc.pl.generated_vs_measured(mdata, feature, **{**PLOT, "measured": normalised}, layer="counts")
    assert fixed.get_title() == expected.get_title()
    np.testing.assert_allclose(fixed.collections[0].get_offsets(), expected.collections[0].get_offsets())
    plt.close("all")


# --------------------------------------------------------------------------------------------- findings 2, 4
def test_transfer_takes_masks_and_positions_and_refuses_01_integers(mosaic):
    """(mask.astype(int)) scored reference cell 1 against query cells 0 and 1: 1.0 on a random embedding."""
    mdata, model = mosaic
    emb = model.get_latent_representation(progress_bar=False)
    labels, batch = mdata.obs["cell_type"].astype(str).to_numpy(), mdata.obs["batch"].astype(str).to_numpy()
    ref = batch == "batch0"
    expected = ev.integration_metrics(emb, labels, batch, transfer={"t": (ref, ~ref)})["transfer_t"]
    positions = (np.flatnonzero(ref), np.flatnonzero(~ref))
    for sides in [positions, (positions[0] - len(ref), positions[1]), tuple(pd.array(m, dtype="boolean") for m in
                                                                             (ref, ~ref))]:
        assert ev.integration_metrics(emb, labels, batch, transfer={"t": sides})["transfer_t"] == expected
    with pytest.raises(ValueError, match=r"transfer 't': the reference mask .* only 0 and 1.*mask.astype\(bool\)"):
        ev.integration_metrics(emb, labels, batch, transfer={"t": (ref.astype(int), (~ref).astype(int))})
    with pytest.raises(IndexError, match=rf"transfer 't': the query mask has positions \[{len(ref)}\]"):
        ev.integration_metrics(emb, labels, batch, transfer={"t": (positions[0], [*positions[1], len(ref)])})
    with pytest.raises(ValueError, match="the reference mask must be a boolean mask .* or integer positions"):
        ev.integration_metrics(emb, labels, batch, transfer={"t": (ref.astype(float), ~ref)})
    with_na = pd.array(np.where(np.arange(len(ref)) == 3, None, ref), dtype="boolean")
    with pytest.raises(ValueError, match=r"the reference mask has 1 missing values \(<NA>\)"):
        ev.integration_metrics(emb, labels, batch, transfer={"t": (with_na, ~ref)})


def test_transfer_warns_when_query_cells_are_reference_cells(mosaic):
    mdata, model = mosaic
    emb = model.get_latent_representation(progress_bar=False)
    labels, batch = mdata.obs["cell_type"].astype(str).to_numpy(), mdata.obs["batch"].astype(str).to_numpy()
    query = batch == "batch1"
    with pytest.warns(hc.HoloCellWarning, match=rf"{query.sum()} of the {query.sum()} query cells are also reference"):
        ev.integration_metrics(emb, labels, batch, transfer={"t": (np.ones(len(query), bool), query)})
    ev.integration_metrics(emb, labels, batch, transfer={"t": (~query, query)})  # disjoint: no warning


# --------------------------------------------------------------------------------------------- finding 3
def test_prediction_scores_leave_out_nan_rows_with_a_warning(mosaic):
    """One NaN prediction row made every feature's r = 0 (pearson_mean 0.0); generate writes NaN rows for the
    protein-only cells."""
    mdata, _ = mosaic
    truth, pred = _truth_and_prediction(mdata)
    rows = np.isfinite(pred).all(axis=1)
    assert 0 < (~rows).sum() < len(rows)
    expected = ev.prediction_scores(truth[rows], pred[rows])  # finite input: no warning
    assert np.isfinite(list(expected.values())).all()
    words = rf"{(~rows).sum()} of {len(rows)} cells \(rows\) have NaN or inf values \({(~rows).sum()} in the predic"
    with pytest.warns(hc.HoloCellWarning, match=words):
        assert ev.prediction_scores(truth, pred) == expected
    with pytest.warns(hc.HoloCellWarning, match=words):
        assert ev.score_prediction("holocell", truth, pred) == {"method": "holocell", **expected}
    with pytest.warns(hc.HoloCellWarning, match=words):
        np.testing.assert_array_equal(ev.per_feature_pearson(truth, pred), ev.per_feature_pearson(truth[rows],
                                                                                                  pred[rows]))
    with pytest.warns(hc.HoloCellWarning, match=words):
        assert ev.rmse(truth, pred) == ev.rmse(truth[rows], pred[rows])
    with pytest.warns(hc.HoloCellWarning, match="0 in the prediction, 1 in the truth"):
        truth_nan = truth.copy()
        truth_nan[np.flatnonzero(rows)[0], 0] = np.inf
        ev.prediction_scores(truth_nan, np.where(rows[:, None], pred, 0.0))
    with pytest.warns(hc.HoloCellWarning, match=r"use the other 0 cells"):
        nothing = ev.prediction_scores(truth[~rows], pred[~rows])
    assert np.isnan(list(nothing.values())).all()  # NaN, never r = 0
    # a constant prediction still counts as r = 0 (the documented rule), with no warning
    assert ev.prediction_scores(truth[rows], ev.mean_predict(truth[rows], rows.sum()))["pearson_mean"] == 0.0


# --------------------------------------------------------------------------------------------- finding 5
def test_perturbation_heatmap_rows_follow_the_column_order_without_nan(mosaic):
    """Rows came as sorted strings ('10' before '2'), ignored the categories' order and had a row 'nan'."""
    mdata, _ = mosaic
    work = mdata.copy()
    shift = work["holocell_perturb_rna"]
    order = sorted(pd.unique(work.obs["cell_type"].astype(str)), reverse=True)
    values = work.obs["cell_type"].astype(str).to_numpy(dtype=object)
    values[::7] = None
    work.obs["ordered"] = pd.Categorical(values, categories=[*order, "unused"])
    ax = hc.pl.perturbation(work, kind="heatmap", groupby="ordered", show=False)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == order  # the categories' order; no 'nan', no empty category
    features = [t.get_text() for t in ax.get_xticklabels()]
    cols = pd.Index(shift.var["measured_name"].astype(str)).get_indexer(features)
    labels = work.obs["ordered"].reindex(shift.obs_names)
    expected = pd.DataFrame(np.asarray(shift.X)[:, cols]).groupby(labels.to_numpy()).mean()
    np.testing.assert_allclose(ax.images[0].get_array(), expected.loc[order].to_numpy(), rtol=1e-6)
    work.obs["cluster"] = np.arange(work.n_obs) % 12  # numbers: in numeric order
    ax = hc.pl.perturbation(work, kind="heatmap", groupby="cluster", show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(12)]
    work.obs["none"] = pd.Categorical([None] * work.n_obs, categories=["a"])
    with pytest.raises(ValueError, match="has a value in mdata.obs\\['none'\\]"):
        hc.pl.perturbation(work, kind="heatmap", groupby="none", show=False)
    plt.close("all")


# --------------------------------------------------------------------------------------------- finding 6
def test_generated_vs_measured_draws_a_colour_bar_for_numeric_columns(mosaic):
    """color=<float column> gave one legend entry and one colour per distinct value."""
    mdata, _ = mosaic
    work = mdata.copy()
    feature = str(work["protein"].var_names[0])
    n_points = len(hc.pl.generated_vs_measured(work, feature, **PLOT).collections[0].get_offsets())
    rng = np.random.default_rng(0)
    work.obs["total"] = rng.gamma(5.0, 400.0, work.n_obs)
    work.obs["n_genes"] = rng.integers(100, 2000, work.n_obs)  # integers with many values: counts
    for column in ("total", "n_genes"):
        ax = hc.pl.generated_vs_measured(work, feature, **PLOT, color=column)
        assert ax.get_legend() is None and len(ax.collections) == 1
        assert len(ax.collections[0].get_array()) == n_points
        assert [a.get_ylabel() for a in ax.figure.axes[1:]] == [column]  # the colour bar
    work.obs.loc[work.obs_names[::2], "total"] = np.nan
    ax = hc.pl.generated_vs_measured(work, feature, **PLOT, color="total")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nan"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == n_points
    work.obs["cluster"] = np.arange(work.n_obs) % 5  # few integers: groups, as before
    ax = hc.pl.generated_vs_measured(work, feature, **PLOT, color="cluster")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(i) for i in range(5)]
    plt.close("all")
