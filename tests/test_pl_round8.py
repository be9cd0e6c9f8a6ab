"""``hc.pl`` with careless input (probe_pl, session 8): repeated names, ``save=`` a folder, a column of a modality's
own ``.obs``, a float ``groupby``, a transferred model's history, ``color=`` for ATAC and arguments of the wrong type.
Each is named before anything is drawn or written, instead of a wrong plot or a bare library error."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc


@pytest.fixture(autouse=True)
def _no_figure_open():
    """The tests below check that a plot leaves no figure open: start from none (earlier tests of the worker may
    have left theirs)."""
    plt.close("all")

FEATURES = ["cd14", "cd4", "cd8", "cd19"]


def _generated(target: str = "protein", n: int = 40) -> md.MuData:
    """A MuData shaped like one after ``hc.tl.generate``: measured counts and the generated modality beside them
    (``uns['holocell']['params']['target']``, ``var['measured_name']``), without a model."""
    rng = np.random.default_rng(0)
    cells = [f"c{i}" for i in range(n)]
    obs = pd.DataFrame({"celltype": pd.Categorical(rng.choice(["B", "T"], n))}, index=cells)
    if target == "atac":
        counts, values = rng.integers(0, 2, (n, len(FEATURES))), rng.uniform(size=(n, len(FEATURES)))
    else:
        counts, values = rng.poisson(5, (n, len(FEATURES))), rng.normal(size=(n, len(FEATURES)))
    measured = ad.AnnData(counts.astype(np.float32), obs=obs.copy(), var=pd.DataFrame(index=FEATURES))
    generated = ad.AnnData(
        values.astype(np.float32),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame({"measured_name": FEATURES}, index=[f"{f}_generated" for f in FEATURES]),
    )
    generated.uns["holocell"] = {"params": {"target": target}}
    name = "atac" if target == "atac" else "adt"
    mdata = md.MuData({name: measured, f"{name}_generated": generated})
    mdata.obs["celltype"] = obs["celltype"]
    return mdata


def _perturbed(n: int = 6) -> md.MuData:
    """A MuData with what ``hc.tl.perturb`` writes (the summary, the RNA shift modality), without a model."""
    cells = [f"c{i}" for i in range(n)]
    obs = pd.DataFrame({"celltype": np.where(np.arange(n) % 2, "T", "B")}, index=cells)
    rna = ad.AnnData(np.zeros((n, 2), dtype=np.float32), obs=obs.copy(), var=pd.DataFrame(index=["G1", "G2"]))
    shift = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    shift = ad.AnnData(shift, obs=pd.DataFrame(index=cells), var=rna.var.copy())
    mdata = md.MuData({"rna": rna, "holocell_perturb_rna": shift})
    mdata.obs["celltype"] = obs["celltype"]
    summary = {"modality": ["rna", "rna"], "feature": ["G1", "G2"], "mean_shift": [0.5, -0.2]}
    summary |= {"abs_mean_shift": [0.5, 0.2], "frac_up": [1.0, 0.0], "edited": [False, False], "rank": [1, 2]}
    mdata.uns["holocell_perturb"] = {"params": {"mode": "knockout", "genes": ["G0"]}, "summary": pd.DataFrame(summary)}
    return mdata


GRN = pd.DataFrame({"tf": ["TF1"] * 3, "target": list("ABC"), "score": [0.9, 0.5, 0.3], "rank": [1, 2, 3]})
HISTORY = pd.DataFrame({"train_loss": [1.0, 0.5], "validation_loss": [1.1, 0.7]}, index=pd.Index([0, 1], name="epoch"))
REPORT = pd.DataFrame({"fraction_shared": [0.5], "n_shared": [2], "n_query": [4]}, index=["rna"])


def _plots():
    """Each hc.pl function with valid inputs, as ``save -> call``."""
    return {
        "generated_vs_measured": lambda save: hc.pl.generated_vs_measured(_generated(), "cd14", save=save),
        "feature_scores": lambda save: hc.pl.feature_scores(_generated(), save=save),
        "perturbation": lambda save: hc.pl.perturbation(_perturbed(), save=save),
        "grn_scores": lambda save: hc.pl.grn_scores(GRN, "TF1", save=save),
        "training_history": lambda save: hc.pl.training_history(HISTORY, save=save),
        "transfer_report": lambda save: hc.pl.transfer_report(REPORT, save=save),
    }


# ------------------------------------------------------------------ finding 2: repeated feature names
def test_repeated_feature_names_of_the_measured_data_are_refused():
    """A measured table with 'cd14' twice drew both columns as one feature ('r = 1.00', twice the cells), and
    feature_scores paired the second column with cd14's prediction, silently."""
    mdata = _generated()
    measured = mdata["adt"].copy()
    measured.var_names = ["cd14", "cd14", "cd8", "cd19"]
    for plot in (
        lambda: hc.pl.generated_vs_measured(mdata, "cd14", measured=measured, show=False),
        lambda: hc.pl.feature_scores(mdata, measured=measured, show=False),
    ):
        with pytest.raises(ValueError, match=r"Repeated names in the measured AnnData.*\['cd14'\].*var_names_make"):
            plot()
    mdata["adt"].var_names = ["cd14", "cd14", "cd8", "cd19"]  # the modality itself
    with pytest.raises(ValueError, match=r"mdata\['adt'\]\.var_names_make_unique\(\), then mdata.update\(\)"):
        hc.pl.feature_scores(mdata, show=False)
    assert plt.get_fignums() == []


# ------------------------------------------------------------------ finding 3 and 11: save= a folder, or no path
@pytest.mark.parametrize("plot", list(_plots()))
def test_save_a_folder_is_refused_before_anything_is_drawn(plot, tmp_path, monkeypatch):
    """save='my figs' (an existing folder) wrote 'my figs.png' beside it; save='my figs/' too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my figs").mkdir()
    call = _plots()[plot]
    plt.close("all")
    for save in ("my figs", "my figs/", tmp_path / "my figs", "new figs/", "."):
        with pytest.raises(FileExistsError, match=r"Pass a file path inside it, e.g. save='.*plot\.png'"):
            call(save)
    assert plt.get_fignums() == []  # nothing drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my figs"] and not any((tmp_path / "my figs").iterdir())
    call(tmp_path / "my figs" / "plot.png")  # the way out the message gives
    assert (tmp_path / "my figs" / "plot.png").is_file()
    plt.close("all")


@pytest.mark.parametrize(("save", "error", "words"), [
    ("", ValueError, "names no file"),
    (b"figure.png", TypeError, "save must be a file path"),
    (3, TypeError, "save must be a file path"),
])
def test_save_that_is_no_path_is_named(save, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plt.close("all")
    for call in _plots().values():
        with pytest.raises(error, match=words):
            call(save)
    assert plt.get_fignums() == [] and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ finding 5: repeated cell names
def test_repeated_cell_names_are_named_with_the_fix():
    """Two samples sharing barcodes ended in pandas' 'Reindexing only valid with uniquely valued Index objects'."""
    mdata = _generated()
    measured = mdata["adt"].copy()
    measured.obs_names = ["c0", *measured.obs_names[:-1]]  # c0 twice
    for plot in (
        lambda: hc.pl.generated_vs_measured(mdata, "cd14", measured=measured, show=False),
        lambda: hc.pl.feature_scores(mdata, measured=measured, show=False),
    ):
        with pytest.raises(ValueError, match=r"Repeated names in the measured AnnData \(its cells.*\['c0'\].*"
                           r"measured\.obs_names_make_unique\(\)"):
            plot()
    generated = mdata["adt_generated"].copy()
    generated.obs_names = ["c1", *generated.obs_names[1:]]  # the generated modality's cells repeat
    mdata.mod["adt_generated"] = generated
    with pytest.raises(ValueError, match=r"generated='adt_generated'.*\['c1'\].*mdata\.obs_names_make_unique"):
        hc.pl.feature_scores(mdata, show=False)
    assert plt.get_fignums() == []


# ------------------------------------------------------------------ finding 6: a column of a modality's own obs
def test_a_column_of_a_modality_obs_gets_the_hint_the_tools_give():
    """groupby='leiden' after sc.tl.leiden(mdata['rna']) said only 'mdata.obs has no column'."""
    mdata = _perturbed()
    mdata["rna"].obs["leiden"] = ["0", "1", "0", "1", "2", "2"]
    with pytest.raises(KeyError, match=r"Modality 'rna' holds it in its own obs.*groupby='rna:leiden'"):
        hc.pl.perturbation(mdata, kind="heatmap", groupby="leiden", show=False)
    generated = _generated()
    generated["adt"].obs["leiden"] = "0"
    with pytest.raises(KeyError, match=r"Modality 'adt' holds it in its own obs.*color='adt:leiden'"):
        hc.pl.generated_vs_measured(generated, "cd14", color="leiden", show=False)
    mdata.pull_obs()  # the way out the message gives
    ax = hc.pl.perturbation(mdata, kind="heatmap", groupby="rna:leiden", show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    plt.close("all")


# ------------------------------------------------------------------ finding 7: a float groupby, too many groups
def test_heatmap_refuses_a_float_column_and_too_many_groups():
    """groupby='total_counts' made one row per distinct value: 463 rows, a figure 163 inches tall, silently."""
    mdata = _perturbed(60)
    mdata.obs["total_counts"] = np.linspace(100.0, 700.0, 60)
    mdata.obs["cell_number"] = np.arange(60)
    plt.close("all")
    with pytest.raises(ValueError, match=r"float column.*pd\.cut\(mdata\.obs\['total_counts'\], 5\)"):
        hc.pl.perturbation(mdata, kind="heatmap", groupby="total_counts", show=False)
    with pytest.raises(ValueError, match=r"60 groups with cells.*at most 50.*pd\.cut"):
        hc.pl.perturbation(mdata, kind="heatmap", groupby="cell_number", show=False)
    assert plt.get_fignums() == []
    # grouping columns keep working: integers with few values, bool, categorical, and the binned column
    mdata.obs["cluster"] = np.arange(60) % 5
    mdata.obs["high"] = np.arange(60) > 30
    mdata.obs["bin"] = pd.cut(mdata.obs["total_counts"], 5)
    for groupby, rows in (("cluster", 5), ("high", 2), ("celltype", 2), ("bin", 5)):
        ax = hc.pl.perturbation(mdata, kind="heatmap", groupby=groupby, show=False)
        assert len(ax.get_yticklabels()) == rows
    plt.close("all")


# ------------------------------------------------------------------ finding 8: a transferred model's history
def test_training_history_of_a_transferred_model_points_at_the_pretrained_one(pbmc):
    """load_pretrained(name, mdata) said 'call model.train(...) first', though the model is pretrained."""
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch", species="human")
    small = hc.HoloCell.load_pretrained("holocell-small", pbmc)
    with pytest.raises(ValueError, match=r"transferred.*has not been trained on it.*load_pretrained\(name\)") as err:
        hc.pl.training_history(small, show=False)
    assert "call model.train(...) first" not in str(err.value)
    # the way out: the checkpoint loaded without data has its pretraining history (the docstring said it had none)
    ax = hc.pl.training_history(hc.HoloCell.load_pretrained("holocell-small"), show=False)
    assert len(ax.get_lines()[0].get_xdata()) > 1
    assert "holocell-small" not in hc.pl.training_history.__doc__
    plt.close("all")


# ------------------------------------------------------------------ finding 10: color= for ATAC
def test_color_for_atac_warns_that_it_has_no_effect():
    mdata = _generated("atac")
    with pytest.warns(hc.HoloCellWarning, match=r"color='celltype' has no effect for ATAC"):
        ax = hc.pl.generated_vs_measured(
            mdata, "cd14", measured="atac", generated="atac_generated", color="celltype", show=False
        )
    assert ax.get_ylabel() == "generated accessibility"
    assert "no effect for ATAC" in hc.pl.generated_vs_measured.__doc__.replace("\n        ", " ")
    plt.close("all")


# ------------------------------------------------------------------ finding 11: arguments of the wrong type
def test_arguments_of_the_wrong_type_are_named():
    mdata = _generated()
    cases = [
        (lambda: hc.pl.generated_vs_measured(mdata, ["cd14", "cd4"]), TypeError, "feature must be one feature name"),
        (lambda: hc.pl.feature_scores(mdata, others=[0.1, 0.2]), TypeError, r"others must be a mapping.*got list"),
        (lambda: hc.pl.feature_scores(mdata, others={"kNN": "abc"}), TypeError, r"others\['kNN'\] must be numbers"),
        (lambda: hc.pl.feature_scores(mdata, others={"kNN": {"a": 1}}), TypeError, r"others\['kNN'\] must be"),
        (lambda: hc.pl.grn_scores(GRN, ["TF1"]), TypeError, "tf must be one regulator name"),
        (
            lambda: hc.pl.training_history(HISTORY.assign(note=["x", "y"]), keys=["note"]),
            ValueError,
            r"history_ columns \['note'\].*not numbers.*\['train_loss', 'validation_loss'\]",
        ),
    ]
    plt.close("all")
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
    assert plt.get_fignums() == []
    # what still works: scores of another length, a scalar, and history columns of numbers stored as objects
    hc.pl.feature_scores(mdata, others={"kNN": [0.1, 0.2], "one": 0.3}, show=False)
    ax = hc.pl.training_history(HISTORY.astype(object), show=False)
    assert len(ax.get_lines()) == 2
    plt.close("all")
