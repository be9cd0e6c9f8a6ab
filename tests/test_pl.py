"""``hc.pl``: each plot renders to a file with the Agg backend, takes ``ax`` and returns the Axes (issue 19)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
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
    # every measured cell of the feature is a point, on the CLR scale of both axes
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert n_points == mdata["adt"].n_obs and ax.get_xlabel() == "measured (CLR)"
    with pytest.raises(KeyError, match="not a feature"):
        hc.pl.generated_vs_measured(mdata, "no-such-protein", show=False)
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
        (photo, FileExistsError, "holocell did not write"),
        (tmp_path / "plots.png", FileExistsError, "is a directory"),
        (tmp_path / "results", None, None),  # no extension: matplotlib's default, results.png beside the folder
        (tmp_path / "data.h5mu", ValueError, "cannot write 'h5mu' figures"),
    ]:
        ax = draw()
        if error is None:
            finish(ax, False, path)
            continue
        with pytest.raises(error, match=words):
            finish(ax, False, path)
        plt.close(ax.figure)
    assert paper.read_bytes() == b"%PDF-1.7 the user's own paper" and photo.read_bytes() == b"\xff\xd8 the user's photo"
    assert not (tmp_path / "data.h5mu").exists()
    for name in ("again.png", "again.pdf", "again.svg", "sub/again.eps"):  # holocell's own figure: replaced
        for _ in range(2):
            finish(draw(), False, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1_000
    assert sorted(p.name for p in tmp_path.rglob("*") if ".tmp." in p.name) == []  # no temporary file is left
    assert _png(tmp_path / "results.png")
    plt.close("all")
