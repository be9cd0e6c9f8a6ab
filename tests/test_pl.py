"""``hc.pl``: each plot renders to a file with the Agg backend, takes ``ax`` and returns the Axes (issue 19)."""

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


@pytest.fixture(scope="module")
def generated(trained_pbmc):
    mdata, model = trained_pbmc
    work = mdata.copy()
    model.generate(work, target="protein", n_steps=1, key_added="adt_generated", progress_bar=False)
    return work, model


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2_000


def test_generated_vs_measured(generated, tmp_path):
    mdata, _ = generated
    feature = mdata["adt"].var_names[0]
    out = tmp_path / "scatter.png"
    ax = hc.pl.generated_vs_measured(mdata, feature, color="celltype", save=out, show=False)
    assert _png(out) and ax.get_title().startswith(f"{feature}: r = ")
    assert "nan" not in ax.get_title()  # protein-only cells (NaN generated rows) are left out, not NaN in r
    # every measured cell of the feature that has a source (RNA) is a point, on the CLR scale of both axes
    both = (np.asarray(mdata.obsmap["adt"]) > 0) & (np.asarray(mdata.obsmap["rna"]) > 0)
    assert 0 < both.sum() < mdata["adt"].n_obs
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert n_points == both.sum() and ax.get_xlabel() == "measured (CLR)"
    with pytest.raises(KeyError, match="not a feature"):
        hc.pl.generated_vs_measured(mdata, "no-such-protein", show=False)
    # only cells that generate had no source for (protein-only): nothing to compare, said so
    protein_only = mdata["adt"][~np.isin(mdata["adt"].obs_names, mdata["rna"].obs_names)].copy()
    with pytest.raises(ValueError, match="None of the 400 cells of the measured data has generated values"):
        hc.pl.generated_vs_measured(mdata, feature, measured=protein_only, show=False)
    plt.close("all")


def test_feature_scores_with_a_held_out_truth_and_others(generated, tmp_path):
    mdata, _ = generated
    train, truth = hc.data.hold_out(mdata, modality="adt", batches="p4_0")
    fig, axes = plt.subplots(1, 2)
    ax = hc.pl.feature_scores(mdata, measured=truth, others={"zeros": np.zeros(5)}, ax=axes[0])
    assert ax is axes[0] and ax.get_ylabel() == "per-feature Pearson r"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0].startswith("holocell\n(median ") and labels[1] == "zeros\n(median 0.00)"
    out = tmp_path / "scores.pdf"
    hc.pl.feature_scores(mdata, metric="pearson", ax=axes[1], save=out)
    assert out.read_bytes()[:4] == b"%PDF"
    plt.close("all")


def test_training_history(generated, tmp_path):
    _, model = generated
    out = tmp_path / "history.png"
    ax = hc.pl.training_history(model, save=out, show=False)
    assert _png(out)
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "validation_loss"]
    assert len(ax.get_lines()[0].get_xdata()) == len(model.history_)
    assert ax.get_lines()[1].get_linestyle() == "--"
    with pytest.raises(KeyError, match="nothing"):
        hc.pl.training_history(model.history_, keys=["nothing"], show=False)
    plt.close("all")


def test_transfer_report(pbmc, tmp_path):
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell.load_pretrained("holocell-small", pbmc)
    out = tmp_path / "transfer.png"
    ax = hc.pl.transfer_report(model, save=out, show=False)
    assert _png(out)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(model.transfer_report_.index[::-1])
    texts = {t.get_text() for t in ax.texts}
    n_shared, n_query = model.transfer_report_.loc["rna", ["n_shared", "n_query"]].astype(int)
    assert f"{n_shared:,} / {n_query:,}" in texts
    plt.close("all")


def test_tool_plots_take_ax_and_save(trained_pbmc, tmp_path):
    mdata, model = trained_pbmc
    work = mdata[:120].copy()
    hc.tl.perturb(work, model, genes=["MS4A1"], n_steps=1, progress_bar=False)
    fig, ax = plt.subplots()
    out = tmp_path / "perturb.png"
    assert hc.pl.perturbation(work, ax=ax, save=out) is ax and _png(out)
    tf = str(work["rna"].var_names[0])
    edges = hc.tl.grn(work, model, tfs=[tf], method="embedding", copy=True).uns["holocell_grn"]
    out = tmp_path / "grn.png"
    assert hc.pl.grn_scores(edges, tf, save=out, show=False).get_title() == f"{tf}: top predicted targets"
    assert _png(out)
    plt.close("all")


def test_save_never_writes_over_a_file_holocell_did_not_write(tmp_path):
    """``save=`` wrote over whatever was at the path, e.g. the user's paper. Now a figure replaces only a figure
    holocell saved (its metadata carries holocell's mark), and it is written to a temporary file first."""
    from holocell.pl._utils import finish

    def draw():
        _, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return ax

    paper = tmp_path / "paper.pdf"
    paper.write_bytes(b"%PDF-1.7 the user's own paper")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 the user's photo")
    (tmp_path / "plots.png").mkdir()
    (tmp_path / "results").mkdir()
    for path, error, words in [
        (paper, FileExistsError, "holocell did not write"),
        (photo, ValueError, "only as png/pdf/svg/ps/eps"),  # a JPEG cannot carry the mark: refused up front
        (tmp_path / "plots.png", FileExistsError, "is a directory"),
        (tmp_path / "results", FileExistsError, "is a directory"),  # an existing folder: a file inside it is meant
        (tmp_path / "data.h5mu", ValueError, "cannot write 'h5mu' figures"),
    ]:
        ax = draw()
        with pytest.raises(error, match=words):
            finish(ax, False, path)
        plt.close(ax.figure)
    assert (
        paper.read_bytes() == b"%PDF-1.7 the user's own paper"
        and photo.read_bytes() == b"\xff\xd8 the user's photo"
    )
    assert not (tmp_path / "data.h5mu").exists()
    for name in ("again.png", "again.pdf", "again.svg", "sub/again.eps"):  # holocell's own figure: replaced
        for _ in range(2):
            finish(draw(), False, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1_000
    assert sorted(p.name for p in tmp_path.rglob("*") if ".tmp." in p.name) == []  # no temporary file is left
    assert not (tmp_path / "results.png").exists()
    plt.close("all")


# Inputs that are missing or wrong are named before anything is drawn or saved (probe d10): no bare KeyError from
# pandas or mudata half-way through a plot, and no figure file.


@pytest.fixture
def grn_table():
    """A small table shaped like the one ``hc.tl.grn`` writes to ``mdata.uns['holocell_grn']``."""
    return pd.DataFrame(
        {"tf": ["TF1"] * 4, "target": list("ABCD"), "score": [0.9, 0.5, 0.3, 0.1], "rank": [1, 2, 3, 4]}
    )


@pytest.fixture
def perturbed():
    """A tiny MuData with what ``hc.tl.perturb`` writes (the summary, the RNA shift modality), without a model."""
    obs = pd.DataFrame({"celltype": ["B", "T", "T"]}, index=["c0", "c1", "c2"])
    rna = ad.AnnData(np.zeros((3, 2), dtype=np.float32), obs=obs.copy(), var=pd.DataFrame(index=["G1", "G2"]))
    mdata = md.MuData({"rna": rna})
    mdata.obs["celltype"] = obs["celltype"]
    mdata.mod["holocell_perturb_rna"] = ad.AnnData(
        rna.X + 1, obs=pd.DataFrame(index=obs.index), var=rna.var.copy()
    )
    summary = {"modality": ["rna", "rna"], "feature": ["G1", "G2"], "mean_shift": [0.5, -0.2]}
    summary |= {"abs_mean_shift": [0.5, 0.2], "frac_up": [1.0, 0.0], "edited": [False, False], "rank": [1, 2]}
    mdata.uns["holocell_perturb"] = {
        "params": {"mode": "knockout", "genes": ["G0"]},
        "summary": pd.DataFrame(summary),
    }
    return mdata


def test_feature_scores_names_a_missing_modality(trained_pbmc, generated, tmp_path):
    """The defaults (measured='adt', generated='adt_generated') on data without them raised KeyError('adt_generated')."""
    out = tmp_path / "scores.png"
    with pytest.raises(KeyError, match=r"mdata.mod has no 'adt_generated' .*'rna'.*model.generate\(mdata"):
        hc.pl.feature_scores(trained_pbmc[0], save=out, show=False)
    mdata, _ = generated
    with pytest.raises(KeyError, match=r"no 'protein' \(from measured=\).*AnnData of raw counts"):
        hc.pl.feature_scores(mdata, measured="protein", save=out, show=False)
    with pytest.raises(KeyError, match="no layer 'counts'"):
        hc.pl.feature_scores(mdata, layer="counts", save=out, show=False)
    with pytest.raises(TypeError, match="must be a MuData"):
        hc.pl.feature_scores(mdata["adt"], save=out, show=False)
    with pytest.raises(ValueError, match="metric must be"):
        hc.pl.feature_scores(mdata, metric="spearman", save=out, show=False)
    assert not out.exists()
    plt.close("all")


def test_generated_vs_measured_names_a_missing_obs_column(generated, tmp_path):
    mdata, _ = generated
    out = tmp_path / "scatter.png"
    feature = mdata["adt"].var_names[0]
    with pytest.raises(KeyError, match=r"mdata.obs has no column 'nope' \(color=\).*'celltype'"):
        hc.pl.generated_vs_measured(mdata, feature, color="nope", save=out, show=False)
    with pytest.raises(KeyError, match=f"shared features include .*{feature!r}"):
        hc.pl.generated_vs_measured(mdata, "no-such-protein", save=out, show=False)
    assert not out.exists()
    plt.close("all")


def test_grn_scores_refuses_what_is_not_the_grn_table(generated, grn_table, tmp_path):
    """A MuData passed for the table raised KeyError('tf')."""
    out = tmp_path / "grn.png"
    with pytest.raises(
        TypeError, match=r"DataFrame: the table hc.tl.grn.*e.g. mdata.uns\['holocell_grn'\].*got MuData"
    ):
        hc.pl.grn_scores(generated[0], "TF1", save=out, show=False)
    with pytest.raises(ValueError, match=r"edges has no columns \['rank'\].*hc.tl.grn"):
        hc.pl.grn_scores(grn_table.drop(columns="rank"), "TF1", save=out, show=False)
    with pytest.raises(ValueError, match=r"No edges from 'TF9'.*its TFs: \['TF1'\]"):
        hc.pl.grn_scores(grn_table, "TF9", save=out, show=False)
    assert not out.exists()
    assert len(hc.pl.grn_scores(grn_table, "TF1", n_top=2, show=False).patches) == 2
    plt.close("all")


@pytest.mark.parametrize(
    ("n_top", "error"),
    [(-1, ValueError), (0, ValueError), (2.0, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_plot_counts_must_be_integers_of_at_least_one(grn_table, perturbed, n_top, error, tmp_path):
    """``grn_scores(n_top=-1)`` drew every bar; ``n_top`` of both tool plots is now checked."""
    out = tmp_path / "top.png"
    with pytest.raises(error, match="n_top must be an integer >= 1"):
        hc.pl.grn_scores(grn_table, "TF1", n_top=n_top, save=out, show=False)
    with pytest.raises(error, match="n_top must be an integer >= 1"):
        hc.pl.perturbation(perturbed, n_top=n_top, save=out, show=False)
    assert not out.exists()
    plt.close("all")


def test_perturbation_names_missing_inputs(perturbed, tmp_path):
    out = tmp_path / "perturb.png"
    with pytest.raises(
        KeyError, match=r"no 'other' perturbation summary; run hc.tl.perturb\(.*key_added='other'"
    ):
        hc.pl.perturbation(perturbed, key="other", save=out, show=False)
    with pytest.raises(ValueError, match="kind must be 'bar' or 'heatmap'"):
        hc.pl.perturbation(perturbed, kind="violin", save=out, show=False)
    with pytest.raises(ValueError, match="needs groupby="):
        hc.pl.perturbation(perturbed, kind="heatmap", save=out, show=False)
    with pytest.raises(KeyError, match=r"no column 'cluster' \(groupby=\).*'celltype'"):
        hc.pl.perturbation(perturbed, kind="heatmap", groupby="cluster", save=out, show=False)
    assert not out.exists()
    hc.pl.perturbation(perturbed, kind="heatmap", groupby="celltype", save=out, show=False)
    assert _png(out)
    out.unlink()
    perturbed.mod["holocell_perturb_rna"].var_names = ["G1", "G3"]  # no longer the summary's features
    with pytest.raises(
        ValueError, match=r"mdata.mod\['holocell_perturb_rna'\] lacks responders of the summary \['G2'\]"
    ):
        hc.pl.perturbation(perturbed, kind="heatmap", groupby="celltype", save=out, show=False)
    del perturbed.mod["holocell_perturb_rna"]
    with pytest.raises(KeyError, match="mdata.mod has no 'holocell_perturb_rna'.*kind='bar'"):
        hc.pl.perturbation(perturbed, kind="heatmap", groupby="celltype", save=out, show=False)
    perturbed.uns["holocell_perturb"]["summary"] = perturbed.uns["holocell_perturb"]["summary"].drop(
        columns="edited"
    )
    with pytest.raises(ValueError, match=r"has no columns \['edited'\].*hc.tl.perturb"):
        hc.pl.perturbation(perturbed, save=out, show=False)
    assert not out.exists()
    plt.close("all")


def test_model_plots_name_a_wrong_model_or_table(generated, tmp_path):
    mdata, model = generated
    out = tmp_path / "model.png"
    with pytest.raises(TypeError, match="must be a HoloCell or its history_ DataFrame, got MuData"):
        hc.pl.training_history(mdata, save=out, show=False)
    with pytest.raises(ValueError, match="No column to draw"):
        hc.pl.training_history(model, keys=[], save=out, show=False)
    with pytest.raises(TypeError, match="must be a HoloCell or its transfer_report_ DataFrame, got MuData"):
        hc.pl.transfer_report(mdata, save=out, show=False)
    with pytest.raises(ValueError, match=r"has no columns \['n_shared', 'n_query'\].*load_pretrained"):
        hc.pl.transfer_report(pd.DataFrame({"fraction_shared": [0.5]}, index=["rna"]), save=out, show=False)
    assert not out.exists()
    ax = hc.pl.training_history(model, keys="train_loss", show=False)  # one name, not its letters
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss"]
    plt.close("all")


@pytest.mark.parametrize("name", ["figure.jpg", "figure.jpeg", "figure.tiff", "figure.webp"])
def test_save_refuses_formats_that_cannot_carry_the_mark(grn_table, name, tmp_path):
    """A JPEG was written once, then refused on the re-run as 'a file holocell did not write'; now it is refused
    at once, naming the formats that can be replaced and how to write others."""
    out = tmp_path / name
    with pytest.raises(ValueError, match=r"only as png/pdf/svg/ps/eps.*ax.figure.savefig"):
        hc.pl.grn_scores(grn_table, "TF1", save=out, show=False)
    assert list(tmp_path.iterdir()) == []
    plt.close("all")
