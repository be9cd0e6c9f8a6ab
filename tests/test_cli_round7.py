"""The command line with a saved model folder: the input's count layer and batch column are applied, the model's
modalities / species / genome must match; ``generate`` on its own earlier output; zarr inputs; ``grn --table``
separators."""

from __future__ import annotations

import gzip

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--max-epochs", "1", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--n-latents", "4",
        "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory, _pbmc_session):
    """300 PBMC cells (rna + adt, column ``batch``) as a file, and a tiny model folder trained on them."""
    folder = tmp_path_factory.mktemp("cli_round7")
    data = folder / "pbmc.h5mu"
    _pbmc_session[_pbmc_session.obs_names[::5]].copy().write(data)
    model = folder / "model"
    main(["train", str(data), "--model", str(model), "--modalities", "rna=rna,protein=adt", "--batch-key", "batch",
          *TINY])  # fmt: skip
    return data, model


def _embed(data, model, out, *options) -> np.ndarray:
    assert main(["embed", str(data), "--model", str(model), "--out", str(out), *options]) == 0
    return md.read_h5mu(out).obsm["X_holocell"]


def _scanpy_layout(data, path) -> None:
    """Raw counts in rna.layers['counts'], log-normalised .X (scanpy's usual layout)."""
    mdata = md.read_h5mu(data)
    rna = mdata["rna"]
    rna.layers["counts"] = rna.X.copy()
    x = sp.csr_matrix(rna.X, dtype=np.float32)
    x = sp.csr_matrix(sp.diags(1e4 / np.maximum(np.asarray(x.sum(1)).ravel(), 1)) @ x, dtype=np.float32)
    x.data = np.log1p(x.data)
    rna.X = x
    mdata.write(path)


def test_saved_model_reads_the_inputs_count_layer_and_batch_column(files, tmp_path, cli_fails):
    """``--rna-layer`` / ``--batch-key`` with a model folder were ignored, and the error asked for them."""
    data, model = files
    reference = _embed(data, model, tmp_path / "ref.h5mu")
    layered = tmp_path / "layered.h5mu"
    _scanpy_layout(data, layered)
    err = cli_fails(["embed", str(layered), "--model", str(model), "--out", str(tmp_path / "x.h5mu")],
                 ["--rna-layer counts"], absent=("rna_layer=",))  # fmt: skip
    assert "normalised" in err
    np.testing.assert_allclose(_embed(layered, model, tmp_path / "l.h5mu", "--rna-layer", "counts"), reference,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    renamed = md.read_h5mu(data)
    for table in (renamed.obs, *(renamed[m].obs for m in renamed.mod)):
        table["sample"] = table.pop("batch")
    renamed.write(tmp_path / "sample.h5mu")
    cli_fails(["embed", str(tmp_path / "sample.h5mu"), "--model", str(model), "--out", str(tmp_path / "x.h5mu")],
           ["set up with --batch-key batch", "pass --batch-key with the column", "'sample'"])  # fmt: skip
    same = _embed(tmp_path / "sample.h5mu", model, tmp_path / "s.h5mu", "--batch-key", "sample")
    np.testing.assert_allclose(same, reference, rtol=1e-5, atol=1e-6)  # batches matched by name
    cli_fails(["embed", str(data), "--model", str(model), "--out", str(tmp_path / "y.h5mu"), "--batch-key",
                    "nope"], ["nope"])  # fmt: skip
    # the same for the other commands that load a model
    assert main(["perturb", str(layered), "--model", str(model), "--rna-layer", "counts", "--genes", "MS4A1",
                 "--n-steps", "1", "--out", str(tmp_path / "p.h5mu")]) == 0  # fmt: skip
    assert "holocell_perturb" in md.read_h5mu(tmp_path / "p.h5mu").uns


def test_saved_model_refuses_other_modalities_species_genome(files, tmp_path, cli_fails, snapshot):
    data, model = files
    before = snapshot(tmp_path)
    base = ["embed", str(data), "--model", str(model), "--out", str(tmp_path / "o.h5mu")]
    cli_fails([*base, "--modalities", "rna=rna"], ["--modalities rna=rna differs", "--modalities rna=rna,protein=adt",
                                                        "--transfer"])  # fmt: skip
    cli_fails([*base, "--species", "mouse"], ["--species mouse differs", "(--species human)"])
    cli_fails([*base, "--genome", "hg19"], ["--genome hg19 differs", "(no --genome)"])
    cli_fails([*base, "--atac-layer", "counts"], ["--atac-layer counts", "reads no atac modality"])
    assert snapshot(tmp_path) == before
    # the saved values themselves are accepted
    z = _embed(data, model, tmp_path / "same.h5mu", "--modalities", "rna=rna,protein=adt", "--species", "human")
    assert np.isfinite(z).all()


def test_load_setup_overrides(files, tmp_path):
    """The Python side of the above: ``HoloCell.load(..., setup_overrides=...)``."""
    data, model = files
    layered = tmp_path / "layered.h5mu"
    _scanpy_layout(data, layered)
    loaded = hc.HoloCell.load(model, md.read_h5mu(layered), setup_overrides={"rna_layer": "counts"})
    setup = loaded.adata_manager.registry["setup_args"]
    assert setup["rna_layer"] == "counts" and setup["batch_key"] == "batch"
    for overrides, words in (
        ({"species": "mouse"}, "describe the model"),
        ({"atac_layer": "counts"}, "reads no atac modality"),
        ({"batch_key": None}, "trained with batches"),
    ):
        with pytest.raises(ValueError, match=words):
            hc.HoloCell.load(model, md.read_h5mu(data), setup_overrides=overrides)
    no_batch = tmp_path / "no_batch"
    main(["train", str(data), "--model", str(no_batch), "--modalities", "rna=rna", *TINY])
    with pytest.raises(ValueError, match="trained without batches"):
        hc.HoloCell.load(no_batch, md.read_h5mu(data), setup_overrides={"batch_key": "batch"})
    with pytest.raises(SystemExit, match="trained without batches"):
        main(["embed", str(data), "--model", str(no_batch), "--batch-key", "batch", "--out", str(tmp_path / "n.h5mu")])


@pytest.mark.parametrize("command", ["embed", "generate", "perturb", "grn"])
def test_help_says_how_setup_options_act_with_a_saved_model(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "replays its saved set-up" in text and "--modalities, --species and --genome describe the model" in text


def test_generate_replaces_only_its_own_earlier_output(files, tmp_path, cli_fails, snapshot):
    """``generate`` on its own output said "pass overwrite=True", which the command line cannot express."""
    data, model = files
    first, second = tmp_path / "g1.h5mu", tmp_path / "g2.h5mu"
    gen = ["generate", "--model", str(model), "--target", "protein"]
    assert main([gen[0], str(data), *gen[1:], "--out", str(first)]) == 0
    assert main([gen[0], str(first), *gen[1:], "--out", str(second)]) == 0  # a chained pipeline
    a, b = md.read_h5mu(first)["adt_generated"], md.read_h5mu(second)["adt_generated"]
    assert a.shape == b.shape and np.allclose(np.asarray(a.X), np.asarray(b.X), equal_nan=True)
    mine = md.read_h5mu(data)
    mine.mod["adt_generated"] = mine["adt"].copy()  # the user's own modality under generate's default name
    mine.update()
    mine.write(tmp_path / "mine.h5mu")
    before = snapshot(tmp_path)
    cli_fails([gen[0], str(tmp_path / "mine.h5mu"), *gen[1:], "--out", str(tmp_path / "g3.h5mu")],
           ["was not written by holocell's generate", "--key-added"], absent=("overwrite=True", "key_added"))  # fmt: skip
    assert snapshot(tmp_path) == before


def test_zarr_input_gets_the_read_zarr_advice(files, tmp_path, cli_fails):
    data, model = files
    mdata = md.read_h5mu(data)
    mdata.write_zarr(tmp_path / "data.zarr")
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_zarr(tmp_path / "adata.zarr")
    (tmp_path / "plain").mkdir()
    out = ["--model", str(model), "--out", str(tmp_path / "o.h5mu")]
    cli_fails(["embed", str(tmp_path / "data.zarr"), *out], ["MuData zarr store", "mudata.read_zarr("],
           absent=("wrap an AnnData",))  # fmt: skip
    cli_fails(["embed", str(tmp_path / "adata.zarr"), *out], ["anndata.read_zarr("])
    cli_fails(["embed", str(tmp_path / "plain"), *out], ["wrap an AnnData"])
    converted = md.read_zarr(tmp_path / "data.zarr")  # the advice works
    converted.write(tmp_path / "data.h5mu")
    assert np.isfinite(_embed(tmp_path / "data.h5mu", model, tmp_path / "e.h5mu")).all()


def test_grn_table_is_written_as_its_name_says(files, tmp_path, cli_fails, snapshot):
    """``--table edges.csv`` was tab-separated text."""
    data, model = files
    grn = ["grn", str(data), "--model", str(model), "--tfs", "PAX5", "--targets", "MS4A1,CD79A", "--method",
           "embedding", "--overwrite"]  # fmt: skip
    for name, sep in (("edges.csv", ","), ("edges.csv.gz", ","), ("edges.txt", "\t"), ("edges.tsv.bz2", "\t")):
        main([*grn, "--out", str(tmp_path / "g.h5mu"), "--table", str(tmp_path / name)])
        edges = pd.read_csv(tmp_path / name, sep=sep)
        assert list(edges.columns[:2]) == ["tf", "target"] and len(edges) == 2, (name, edges.columns)
    with gzip.open(tmp_path / "edges.csv.gz", "rt") as f:
        assert f.readline().startswith("tf,target,")
    before = snapshot(tmp_path)
    for name in ("edges.xlsx", "edges", "edges.gz"):
        cli_fails([*grn, "--out", str(tmp_path / "h.h5mu"), "--table", str(tmp_path / name)],
               [".tsv or .txt (tab-separated) or .csv (comma-separated)"])  # fmt: skip
    assert snapshot(tmp_path) == before
