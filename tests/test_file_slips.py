"""Files, paths and scvi-tools habits (thirteenth session's probes): a backed MuData saved with the model stays
backed on its own file, a registered checkpoint name that is also a folder here, the registered copies holocell
reads, files given to ``load``, a FIFO, ``tl.embed``'s record, a missing data folder, and scvi-tools' argument
names on ``save`` / ``load`` / ``transform_batch``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mudata as md
import numpy as np
import pytest

import holocell as hc
from holocell import HoloCellWarning
from holocell.data import _registry

MODS = {"rna": "rna", "protein": "adt"}
TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


@pytest.fixture(scope="module")
def small_trained(_pbmc_session):
    keep = np.concatenate([np.flatnonzero(_pbmc_session.obs["batch"].to_numpy() == b)[:30]
                           for b in _pbmc_session.obs["batch"].cat.categories])  # fmt: skip
    mdata = _pbmc_session[np.sort(keep)].copy()
    mdata.update()
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False)
    return mdata, model


def test_a_backed_mudata_saved_with_the_model_stays_backed_on_its_file(small_trained, tmp_path):
    data, _ = small_trained
    data.write(tmp_path / "data.h5mu")
    backed = md.read_h5mu(tmp_path / "data.h5mu", backed=True)
    hc.HoloCell.setup_mudata(backed, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(backed, **TINY)
    model.save(tmp_path / "m", save_mudata=True)
    assert Path(backed.filename) == tmp_path / "data.h5mu"  # was the save's staging file, deleted by the save
    assert backed.mod["rna"].X[:2].shape[0] == 2
    backed.obs["note"] = "kept"
    backed.write()  # mudata's way to store annotations in the backed file: it had nothing to write to
    assert (tmp_path / "m" / "mdata.h5mu").is_file()
    backed.file.close()


def test_a_registered_name_that_is_also_a_folder_here_is_not_guessed(small_trained, tmp_path, monkeypatch, cli_fails):
    mdata, model = small_trained
    monkeypatch.chdir(tmp_path)
    model.save("holocell-small")
    with pytest.raises(ValueError, match="'holocell-small' is both a registered checkpoint and a path here"):
        hc.HoloCell.load_pretrained("holocell-small")
    assert hc.HoloCell.load_pretrained("./holocell-small").config.d_model == TINY["d_model"]  # the fix
    mdata.write(tmp_path / "data.h5mu")
    for extra in ([], ["--transfer"]):  # the command read the folder without --transfer, the registry with it
        cli_fails(["embed", "data.h5mu", "--model", "holocell-small", "--out", "out.h5mu", *extra],
                  ["both a registered checkpoint and a path here", "./holocell-small"])  # fmt: skip


def test_a_registered_copy_is_never_saved_over(small_trained, tmp_path, monkeypatch):
    _, model = small_trained
    entry = _registry.REGISTRY["holocell-small"]
    folder = tmp_path / "shared"
    folder.mkdir()
    shutil.copyfile(entry.shipped, folder / entry.filename)  # a shared data folder's copy
    monkeypatch.setenv(_registry.DATA_DIR_ENV, str(folder))
    copy = hc.data.fetch("holocell-small")
    assert copy == folder / entry.filename
    before = copy.read_bytes()
    with pytest.raises(FileExistsError, match="registered copy of 'holocell-small'"):
        model.save_pretrained(copy, overwrite=True)
    assert copy.read_bytes() == before
    model.save_pretrained(tmp_path / "mine.zip")  # any other path is the user's


def test_missing_data_folders_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv(_registry.DATA_DIR_ENV, os.pathsep.join([str(tmp_path), str(tmp_path / "no-such")]))
    with pytest.warns(HoloCellWarning, match=r"HOLOCELL_DATA_DIR names folders that do not exist: \[.*no-such"):
        hc.data.fetch("holocell-small")


def test_files_given_to_load_say_what_they_are(small_trained, tmp_path):
    mdata, model = small_trained
    model.save_pretrained(tmp_path / "m.zip")
    with pytest.raises(FileNotFoundError, match=r"is a file, not the folder save\(\) writes.*load_pretrained"):
        hc.HoloCell.load(tmp_path / "m.zip", mdata)
    mdata.write(tmp_path / "d.h5mu")
    with pytest.raises(FileNotFoundError, match="is a data file: load takes the model folder first"):
        hc.HoloCell.load(tmp_path / "d.h5mu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_given_as_a_checkpoint_is_refused_not_read(tmp_path):
    fifo = tmp_path / "model.zip"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file|FIFO"):
        hc.HoloCell.load_pretrained(str(fifo))  # blocked for ever in zipfile.is_zipfile


def test_embed_keeps_a_users_record_and_writes_h5_friendly_params(small_trained, tmp_path):
    mdata, model = small_trained
    work = mdata.copy()
    work.uns["X_holocell"] = {"my": "notes"}
    with pytest.raises(ValueError, match=r"uns\['X_holocell'\] holds data holocell did not write"):
        hc.tl.embed(work, model)
    assert work.uns["X_holocell"] == {"my": "notes"} and "X_holocell" not in work.obsm
    hc.tl.embed(work, model, modality=("rna", "protein"), key_added="X_both")  # a tuple, as sequences are passed
    assert work.uns["X_both"]["params"]["modality"] == ["rna", "protein"]
    del work.uns["X_holocell"]
    work.write(tmp_path / "out.h5mu")  # a stored tuple made every later write fail
    hc.tl.embed(work, model)
    hc.tl.embed(work, model)  # holocell's own record is replaced


def test_scvi_tools_names_on_save_load_and_transform_batch(small_trained, tmp_path):
    mdata, model = small_trained
    model.save(tmp_path / "m", save_anndata=True)
    assert (tmp_path / "m" / "mdata.h5mu").is_file()
    loaded = hc.HoloCell.load(tmp_path / "m", adata=mdata)
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    with pytest.raises(ValueError, match="fixed file names"):
        hc.HoloCell.load(tmp_path / "m", mdata, prefix="run1_")
    with pytest.raises(ValueError, match="got its data twice"):
        hc.HoloCell.load(tmp_path / "m", mdata, adata=mdata)
    with pytest.raises(ValueError, match="transform_batch takes one training batch.*Call once per batch"):
        model.get_normalized_expression(transform_batch=["p1_0", "p3_0"])
