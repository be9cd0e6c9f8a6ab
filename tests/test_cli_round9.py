"""Session 9: ``~`` in every command-line path (``--out=~/x`` made a folder named ``~``), a zarr store given to the
Python API (advice to read it with ``mudata.read_zarr``, and a converted file name that does not exist yet),
``genome="~/genes.bed"`` with ATAC, and ``--no-progress`` on every command that runs the model."""

from __future__ import annotations

import json

import anndata as ad
import mudata as md
import numpy as np
import pytest

import holocell as hc
from holocell.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--max-epochs", "1", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--n-latents", "4",
        "--no-progress"]  # fmt: skip
#: holocell's warning about the simulator's gene names (SIM1, ...)
SIM_GENES = r"RNA features of modality .* map to a known"


@pytest.fixture(scope="module")
def files(tmp_path_factory, _pbmc_session):
    """200 PBMC cells (rna + adt, column ``batch``) as a file, and a tiny model folder trained on them."""
    folder = tmp_path_factory.mktemp("cli_round9")
    data = folder / "pbmc.h5mu"
    _pbmc_session[_pbmc_session.obs_names[::8]].copy().write(data)
    model = folder / "model"
    main(["train", str(data), "--model", str(model), "--modalities", "rna=rna,protein=adt", "--batch-key", "batch",
          *TINY])  # fmt: skip
    return data, model


@pytest.fixture
def home(tmp_path, monkeypatch):
    """``$HOME`` a fresh folder, the working directory another one: ``(home, cwd)``."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return home, cwd


def _genes_bed(mdata, path) -> None:
    """A BED of the RNA genes' TSSs (the simulator's own coordinates)."""
    var = mdata["rna"].var
    with open(path, "w") as f:
        for name, row in var.iterrows():
            f.write(f"{row['chrom']}\t{row['tss']}\t{row['tss'] + 1}\t{name}\t0\t{row['strand']}\n")


# ------------------------------------------------------------------ 1. "~" in command-line paths
def test_tilde_in_out_table_input_and_model_is_the_home_folder(files, home, capsys, cli_fails):
    """``--out=~/res/g.h5mu`` (the shell leaves ``~`` after ``=``) wrote ``./~/res/g.h5mu``; ``--table`` too."""
    data, model = files
    home, cwd = home
    (home / "data.h5mu").symlink_to(data)
    (home / "model").symlink_to(model)
    capsys.readouterr()
    assert main(["grn", "~/data.h5mu", "--model=~/model", "--out=~/res/g.h5mu", "--table=~/res/edges.tsv",
                 "--tfs", "PAX5", "--targets", "MS4A1,CD79A", "--method", "embedding", "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert (home / "res" / "g.h5mu").is_file() and (home / "res" / "edges.tsv").is_file()
    assert (
        f"Wrote {home / 'res' / 'g.h5mu'} " in printed and f"and {home / 'res' / 'edges.tsv'}" in printed
    ), printed
    assert main(["embed", "~/data.h5mu", "--model", "~/model", "--out=~/e.h5mu", "--no-progress"]) == 0
    assert (home / "e.h5mu").is_file() and f"Wrote {home / 'e.h5mu'} " in capsys.readouterr().out
    assert list(cwd.iterdir()) == []  # no folder named "~"
    # an existing output is named expanded in the refusal, and nothing is written
    cli_fails(["embed", "~/data.h5mu", "--model", "~/model", "--out=~/e.h5mu"],
           [f"--out {home / 'e.h5mu'} already exists"])  # fmt: skip
    assert list(cwd.iterdir()) == []


def test_demo_out_tilde_is_the_home_folder(home, monkeypatch):
    """``holocell demo --out=~/demo`` created ``./~/demo``."""
    import holocell._demo as demo

    home, cwd = home

    class Stop(Exception):
        pass

    def stop():  # the demo reads its data right after creating the output folder: stop there, no training
        raise Stop

    monkeypatch.setattr(demo, "pbmc_cite_mosaic", stop)
    with pytest.raises(Stop):
        main(["demo", "--out=~/demo", "--max-epochs", "1", "--no-progress"])
    assert (home / "demo").is_dir() and list(cwd.iterdir()) == []


def test_cli_genome_tilde_is_read(home, tmp_path, capsys):
    """``--genome=~/genes.bed`` with ATAC: "looks like a file path, but no such file exists"."""
    home, cwd = home
    mdata, _ = hc.data.simulate_multiome(120, n_genes=30, n_tfs=4, n_proteins=6, seed=0)
    data = tmp_path / "sim.h5mu"
    mdata.write(data)
    _genes_bed(mdata, home / "genes.bed")
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        assert main(["train", str(data), "--model", str(tmp_path / "m"), "--modalities", "rna=rna,atac=atac",
                     "--genome=~/genes.bed", *TINY]) == 0  # fmt: skip
    assert "Saved model to" in capsys.readouterr().out
    assert hc.HoloCell.load_registry(tmp_path / "m")["setup_args"]["genome"] == str(home / "genes.bed")
    assert list(cwd.iterdir()) == []


def test_pretrain_tilde_in_inputs_config_out_and_its_keys(files, home, cli_fails):
    """``pretrain`` reads ``~/`` in its inputs, ``--config``, ``--out``, the config's ``genome`` and the
    ``datasets`` key of an input (a key ``~/a.h5mu`` matched no input even when the shell expanded it)."""
    data, _ = files
    home, cwd = home
    (home / "a.h5mu").symlink_to(data)
    (home / "genes.bed").write_text("chr1\t100\t101\tMS4A1\t0\t+\n")
    config = {"model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "n_latents": 4}, "train": {"max_epochs": 1},
              "genome": "~/genes.bed", "datasets": {"~/a.h5mu": {"layers": {"rna": "nope"}}}}  # fmt: skip
    (home / "cfg.json").write_text(json.dumps(config))
    # stopped as the input is opened (before training), by the entry keyed "~/a.h5mu": the key matched the input
    cli_fails(
        ["pretrain", "--config=~/cfg.json", "~/a.h5mu", "--out=~/out/pre.zip", "--no-progress"],
        [
            f"input {home / 'a.h5mu'}: modality 'rna' (rna) has no layer 'nope'",
            "'datasets.~/a.h5mu.layers.rna'",
        ],
    )
    assert list(cwd.iterdir()) == [] and not (home / "out").exists()


# ------------------------------------------------------------------ 8. genome="~/genes.bed" in the Python API
def test_genome_tilde_with_atac_is_the_home_file(home):
    home, _ = home
    mdata, _ = hc.data.simulate_multiome(120, n_genes=30, n_tfs=4, n_proteins=6, seed=0)
    _genes_bed(mdata, home / "genes.bed")
    pd_table = hc.vocab.read_tss_file("~/genes.bed")
    assert len(pd_table) == mdata["rna"].n_vars
    models = {}
    for genome in (str(home / "genes.bed"), "~/genes.bed"):
        data = mdata.copy()
        with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
            hc.HoloCell.setup_mudata(data, modalities={"rna": "rna", "atac": "atac"}, genome=genome)
            models[genome] = hc.HoloCell(data, d_model=16, n_heads=2, n_layers=1, n_latents=4)
    full, short = (m.feature_space.maps["atac"].report for m in models.values())
    assert full.equals(short) and len(full)


# ------------------------------------------------------------------ 7. zarr stores
@pytest.fixture
def stores(files, tmp_path):
    """A MuData zarr store (with an ``.h5mu`` of its name beside it) and an AnnData zarr store."""
    data, _ = files
    mdata = md.read_h5mu(data)
    mdata.write_zarr(tmp_path / "data.zarr")
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_zarr(tmp_path / "adata.zarr")
    return tmp_path / "data.zarr", tmp_path / "adata.zarr"


def test_zarr_store_given_to_the_python_api_gets_read_zarr_advice(files, stores):
    """A zarr store was "No such .h5mu file" (it exists), or advice to use read_h5mu (which fails on it)."""
    data, model_dir = files
    store, adata_store = stores
    model = hc.HoloCell.load(model_dir, md.read_h5mu(data))
    read = f"mudata.read_zarr({str(store)!r})"
    for call in (
        lambda: model.get_latent_representation(str(store), progress_bar=False),
        lambda: model.generate(store, target="protein", progress_bar=False),
        lambda: hc.HoloCell(str(store)),
        lambda: hc.HoloCell.setup_mudata(str(store), modalities={"rna": "rna"}),
        lambda: hc.tl.embed(str(store), model),
        lambda: hc.HoloCell.load(model_dir, str(store)),
    ):
        with pytest.raises(TypeError) as err:
            call()
        text = str(err.value)
        assert read in text and "MuData zarr store" in text, text
        assert "No such .h5mu" not in text and "read_h5mu" not in text, text
    with pytest.raises(TypeError, match=r"anndata\.read_zarr\("):
        model.get_latent_representation(adata_store, progress_bar=False)
    with pytest.raises(TypeError, match=r"anndata\.read_zarr\("):
        hc.HoloCell.setup_mudata(adata_store, modalities={"rna": "rna"})
    # the advice works: the MuData it reads embeds like the .h5mu
    latent = model.get_latent_representation(md.read_zarr(store), progress_bar=False)
    np.testing.assert_allclose(
        latent, model.get_latent_representation(data, progress_bar=False), rtol=1e-5, atol=1e-6
    )


def test_zarr_hint_names_an_h5mu_that_does_not_exist(files, stores, cli_fails, snapshot):
    """The command line's hint wrote ``data.zarr`` to ``data.h5mu`` even when that file existed (MuData.write
    replaces it silently)."""
    data, model = files
    store, adata_store = stores
    folder = store.parent
    (folder / "data.h5mu").write_bytes(b"the user's file")
    (folder / "data_1.h5mu").write_bytes(b"another")
    before = snapshot(folder)
    out = ["--model", str(model), "--out", str(folder / "o.h5mu")]
    err = cli_fails(
        ["embed", str(store), *out],
        [f"mudata.read_zarr({str(store)!r}).write({str(folder / 'data_2.h5mu')!r})"],
    )
    assert f"{str(folder / 'data.h5mu')!r}" not in err
    cli_fails(["embed", str(adata_store), *out], [f".write({str(folder / 'adata.h5mu')!r})"])
    assert snapshot(folder) == before


# ------------------------------------------------------------------ 10. --no-progress on every model command
def test_no_progress_on_every_command_that_runs_the_model(files, tmp_path, capsys, monkeypatch):
    """``embed`` / ``generate`` / ``perturb`` / ``grn`` answered "unrecognized arguments: --no-progress"."""
    from holocell._settings import settings

    data, model = files
    monkeypatch.setattr(settings, "progress_bar", True)  # bars on, unless the command turns them off
    commands = {
        "embed": [],
        "generate": ["--target", "protein", "--n-steps", "1"],
        "perturb": ["--genes", "MS4A1", "--n-steps", "1"],
        "grn": ["--tfs", "PAX5", "--targets", "MS4A1,CD79A", "--method", "knockout", "--n-cells", "20",
                "--n-steps", "1"],
    }  # fmt: skip
    for command, options in commands.items():
        argv = [command, str(data), "--model", str(model), *options]
        capsys.readouterr()
        assert main([*argv, "--out", str(tmp_path / f"{command}.h5mu"), "--no-progress"]) == 0
        assert "%|" not in capsys.readouterr().err, command
        assert main([*argv, "--out", str(tmp_path / f"{command}_bar.h5mu")]) == 0  # the setting: a bar
        assert "%|" in capsys.readouterr().err, command
