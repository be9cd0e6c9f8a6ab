"""The command line on real files, and the demo job end to end (one epoch)."""

from __future__ import annotations

import json
import os

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc
from holocell._demo import run_demo
from holocell.cli import main

#: The simulator's genes (SIM1, SIM2, ...) are synthetic: `train` sets its data up, and `embed` / `generate` load a
#: model onto it (replaying the setup); each reports that few RNA features are vocabulary genes (issue 20).
SIM_GENES = r"RNA features of modality .* map to a known"
SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}  # a quick model where the size does not matter


@pytest.fixture
def sim_h5mu(tmp_path, simulated):
    mdata, _ = simulated
    path = tmp_path / "sim.h5mu"
    mdata.write(path)
    return path


def test_train_embed_generate(sim_h5mu, tmp_path):
    model_dir = tmp_path / "model"
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(
            [
                "train", str(sim_h5mu), "--model", str(model_dir), "--modalities", "rna=rna,protein=protein",
                "--batch-key", "batch", "--max-epochs", "1", "--d-model", "32", "--n-layers", "1", "--no-progress",
            ]
        )  # fmt: skip
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
    out = tmp_path / "embedded.h5mu"
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(["embed", str(sim_h5mu), "--model", str(model_dir), "--out", str(out)])
    embedded = md.read_h5mu(out)
    assert embedded.obsm["X_holocell"].shape == (embedded.n_obs, 32)
    out = tmp_path / "generated.h5mu"
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(["generate", str(sim_h5mu), "--model", str(model_dir), "--out", str(out), "--target", "protein"])
    generated = md.read_h5mu(out)
    assert generated["protein_generated"].shape == (generated.n_obs, generated["protein"].n_vars)


def test_bad_arguments_are_explained(sim_h5mu, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(sim_h5mu), "--model", str(tmp_path / "m"), "--modalities", "rna"])
    assert "rna=rna,protein=adt" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="does not exist"):
        main(
            [
                "embed",
                str(tmp_path / "missing.h5mu"),
                "--model",
                str(tmp_path),
                "--out",
                str(tmp_path / "o.h5mu"),
            ]
        )


@pytest.mark.slow
def test_demo_job_writes_its_outputs(tmp_path):
    # the default model, as `holocell demo`; one denoising step instead of the demo's 8 (the rows, not the sampler,
    # are checked here)
    results = run_demo(tmp_path, max_epochs=1, enable_progress_bar=False, n_steps=1)
    methods = [row["method"] for row in results["rows"]]
    assert methods[0].startswith("holocell") and "mean predictor" in methods
    assert "holocell (mosaic, 1 step)" in methods
    by_method = {row["method"]: row for row in results["rows"]}
    assert by_method["mean predictor"]["pearson_mean"] == pytest.approx(0.0, abs=1e-9)
    assert by_method["kNN(15) on RNA PCA(50)"]["pearson_mean"] > 0.3  # the reference figure is 0.36
    assert np.isfinite(by_method[methods[0]]["pearson_mean"])
    assert results["cost"]["embed_cells_per_s"] > 0
    for name in ("pbmc_holocell.h5mu", "umap.png", "results.md", "results.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    written = md.read_h5mu(tmp_path / "pbmc_holocell.h5mu")
    assert "X_holocell" in written.obsm and "adt_generated" in written.mod
    # the held-out protein stayed hidden: p4 cells are absent from the training protein modality
    assert not (written["adt"].obs["batch"] == hc._demo.HELD_OUT_BATCH).any()
    # a rerun (a smaller model: this checks the files) replaces the demo's own outputs; one the user changed since
    # is refused before any work
    run_demo(tmp_path, max_epochs=1, enable_progress_bar=False, make_plot=False, model_kwargs=SMALL, n_steps=1)
    (tmp_path / "results.md").write_text("my notes on the demo")
    with pytest.raises(FileExistsError, match="not an unchanged output of an earlier demo"):
        run_demo(tmp_path, max_epochs=1, enable_progress_bar=False)
    assert (tmp_path / "results.md").read_text() == "my notes on the demo"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


def test_demo_never_writes_over_the_users_files(tmp_path, capsys):
    """``holocell demo --out`` into a folder of the user's wrote over its results.md / results.json / umap.png."""
    (tmp_path / "results.json").write_text('{"mine": 1}')
    (tmp_path / "umap.png").mkdir()
    with pytest.raises(FileExistsError, match="results.json exists"):
        run_demo(tmp_path, max_epochs=1)  # refused before the data are read or a model is trained
    (tmp_path / "results.json").unlink()
    with pytest.raises(FileExistsError, match="umap.png exists"):
        run_demo(tmp_path, max_epochs=1)
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path), "--max-epochs", "1"])
    assert "umap.png exists" in capsys.readouterr().err
    for bad, error in ((0, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="n_steps must be an integer >= 1"):
            run_demo(tmp_path / "new", max_epochs=1, n_steps=bad)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        run_demo(not_a_folder, max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "umap.png"]


@pytest.fixture
def pbmc_small_h5mu(tmp_path, pbmc):
    """150 PBMC cells (all four batches), written as a file."""
    path = tmp_path / "pbmc_small.h5mu"
    pbmc[pbmc.obs_names[::11]].copy().write(path)
    return path


def test_pretrain_over_files_then_transfer_embed(sim_h5mu, pbmc_small_h5mu, tmp_path, capsys):
    config = {
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8},
        "train": {"max_epochs": 1},
        "datasets": {
            "sim.h5mu": {"name": "sim", "modalities": {"rna": "rna", "atac": "atac", "protein": "protein"}},
            "pbmc_small.h5mu": {"batch_key": "batch"},  # modalities guessed from the names rna / adt
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    archive = tmp_path / "pre.zip"
    main(["pretrain", str(sim_h5mu), str(pbmc_small_h5mu), "--config", str(tmp_path / "cfg.json"),
          "--out", str(archive), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "Training status: Trained" in printed and "Not Trained" not in printed  # the summary after training
    model = hc.HoloCell.load_pretrained(archive)
    assert set(model.modalities_) == {"rna", "atac", "protein"}
    assert {"sim", "pbmc_small:p1_0"} <= set(model.batch_categories_)
    out = tmp_path / "embedded.h5mu"
    main(["embed", str(pbmc_small_h5mu), "--model", str(archive), "--out", str(out), "--batch-key", "batch"])
    embedded = md.read_h5mu(out)
    assert embedded.obsm["X_holocell"].shape == (embedded.n_obs, 32)
    (tmp_path / "bad.json").write_text(json.dumps({"modell": {}}))
    with pytest.raises(SystemExit, match="unknown keys"):
        main(["pretrain", str(sim_h5mu), "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")])


def test_embed_without_model_uses_shipped_checkpoint(pbmc_small_h5mu, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOLOCELL_CACHE_DIR", str(tmp_path / "empty_cache"))  # nothing cached, no network
    out = tmp_path / "zero_shot.h5mu"
    main(["embed", str(pbmc_small_h5mu), "--out", str(out)])
    assert "shared with the pretrained model" in capsys.readouterr().out
    embedded = md.read_h5mu(out)
    z = embedded.obsm["X_holocell"]
    assert z.shape[0] == embedded.n_obs and np.isfinite(z).all() and z.std(0).mean() > 0
    assert not (tmp_path / "empty_cache").exists()


# ----------------------------------------------------------------------------- perturb / grn paths, checked first
def _exit_2(capsys, argv: list[str], words: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err, err


def test_perturb_and_grn_refuse_bad_paths_before_any_work(sim_h5mu, tmp_path, capsys, snapshot):
    """Each path problem is one line and exit code 2 before the model is loaded; nothing is written."""
    (tmp_path / "notes.txt").write_text("the user's notes")
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(tmp_path / "adata.h5ad")
    os.symlink(tmp_path / "gone" / "x.h5mu", tmp_path / "dangling.h5mu")
    before = snapshot(tmp_path)
    model = ["--model", str(tmp_path / "never_read")]
    perturb = ["perturb", str(sim_h5mu), *model, "--genes", "SIM1"]
    _exit_2(capsys, [*perturb, "--out", str(tmp_path / "out.csv")], "does not end in .h5mu")
    _exit_2(capsys, [*perturb, "--out", str(tmp_path / "notes.txt" / "o.h5mu")], "is a file, not a folder")
    _exit_2(capsys, [*perturb, "--out", str(tmp_path / "dangling.h5mu"), "--overwrite"], "which does not exist")
    grn = ["grn", str(sim_h5mu), *model, "--tfs", "SIM1", "--out", str(tmp_path / "g.h5mu")]
    _exit_2(capsys, [*grn, "--table", str(tmp_path / "g.h5mu")], "is also --out")
    _exit_2(capsys, [*grn, "--table", str(tmp_path / "edges.h5mu")], "tab-separated text table")
    for bad, words in (("adata.h5ad", "cannot be read as a MuData"), ("notes.txt", "not an HDF5 file"), (".", "is a directory")):
        _exit_2(capsys, ["perturb", str(tmp_path / bad), *model, "--genes", "SIM1", "--out",
                         str(tmp_path / "p.h5mu")], words)  # fmt: skip
    assert snapshot(tmp_path) == before


def test_grn_table_in_a_new_folder_is_compressed_as_named(sim_h5mu, tmp_path):
    model_dir = tmp_path / "model"
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(["train", str(sim_h5mu), "--model", str(model_dir), "--modalities", "rna=rna", "--max-epochs", "1",
              "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--n-latents", "4", "--no-progress"])  # fmt: skip
    table = tmp_path / "results" / "edges.tsv.gz"  # formerly: the .h5mu written, then FileNotFoundError
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(["grn", str(sim_h5mu), "--model", str(model_dir), "--out", str(tmp_path / "g.h5mu"), "--table",
              str(table), "--tfs", "SIM1,SIM2", "--method", "embedding"])  # fmt: skip
    assert table.read_bytes()[:2] == b"\x1f\x8b"  # gzip, not plain text under a .gz name
    edges = pd.read_csv(table, sep="\t")
    assert set(edges["tf"]) == {"SIM1", "SIM2"} and len(edges) == len(md.read_h5mu(tmp_path / "g.h5mu").uns["holocell_grn"])
    assert sorted(p.name for p in table.parent.iterdir()) == ["edges.tsv.gz"]  # no temporary left
