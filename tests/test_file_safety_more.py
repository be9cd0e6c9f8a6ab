"""File safety, second probe: the cache replaces only the file it downloaded, ``save(".")``, folders above an output
that link to nothing, and the demo's record of its outputs.

Probe findings 1 (a model saved over a cached download was replaced by the next ``load_pretrained(name)``), 4
(``save(".")`` and ``--model .`` failed with pathlib's "has an empty name"), 3 (an output whose folder is a symlink to
nothing failed with a bare ``[Errno 17]`` after the work, or training wrote through the link) and 6 (``holocell demo``
replaced a ``.holocell_demo.json`` it did not write). Real models and files; downloads come from a real HTTP server
on 127.0.0.1 (fixture ``server``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import mudata as md
import pytest

import holocell as hc
from holocell import _demo
from holocell.cli import main
from holocell.data._registry import CACHE_DIR_ENV, fetch, register
from holocell.model._checkpoint import is_checkpoint_dir

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MODS = {"rna": "rna", "protein": "protein"}
SIM_GENES = r"RNA features of modality .* map to a known"
RUN = {"max_epochs": 1, "batch_size": 64, "enable_progress_bar": False}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data() -> md.MuData:
    mdata = hc.data.simulate_multiome(
        200, n_genes=30, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=1, modalities=("rna", "protein"),
        seed=0,
    )[0]  # fmt: skip
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained for one epoch (shared, treat as read-only)."""
    model = hc.HoloCell(_data(), **TINY)
    model.train(**RUN)
    return model


# ----------------------------------------------------------------------- 1. the cache replaces only its own download
def test_a_model_saved_over_a_cached_checkpoint_is_never_replaced(trained, server, cache):
    url, root, requests = server
    hc.HoloCell(_data(), **TINY).save_pretrained(root / "labnet.zip")  # the lab's checkpoint, untrained
    published = (root / "labnet.zip").read_bytes()
    register("labnet", "labnet.zip", _sha(published), url=url + "labnet.zip", kind="checkpoint")
    cached = fetch("labnet", progressbar=False)
    record = json.loads((cache / "labnet.zip.json").read_text())
    info = cached.stat()
    assert (record["size"], record["inode"], record["mtime_ns"]) == (info.st_size, info.st_ino, info.st_mtime_ns)

    with pytest.raises(FileExistsError, match="registered copy of 'labnet'"):  # refused when saving, since s13
        trained.save_pretrained(cached, overwrite=True)
    assert cached.read_bytes() == published
    trained.save_pretrained(cache / "mine.zip")  # the user's fine-tuned model, copied over the cached one anyway
    shutil.copyfile(cache / "mine.zip", cached)
    (cache / "mine.zip").unlink()
    mine = cached.read_bytes()
    with pytest.raises(FileExistsError) as err:
        hc.HoloCell.load_pretrained("labnet")
    message = str(err.value)
    assert str(cached) in message and CACHE_DIR_ENV in message and "not the file holocell downloaded" in message
    assert cached.read_bytes() == mine and requests == ["/labnet.zip"]  # refused before any request

    cached.rename(cache / "tuned.zip")  # the user keeps their model elsewhere: the original is fetched again
    assert isinstance(hc.HoloCell.load_pretrained("labnet"), hc.HoloCell)
    assert cached.read_bytes() == published and (cache / "tuned.zip").read_bytes() == mine
    assert len(requests) == 2


def test_a_cut_off_or_damaged_download_is_still_fetched_again(server, cache):
    url, root, requests = server
    hc.HoloCell(_data(), **TINY).save_pretrained(root / "labnet.zip")
    published = (root / "labnet.zip").read_bytes()
    register("labnet", "labnet.zip", _sha(published), url=url + "labnet.zip", kind="checkpoint")
    cached = fetch("labnet", progressbar=False)
    damaged = (
        published[: len(published) // 2],  # cut off, in place (another inode after the copy below)
        b"",  # emptied
        published[:-100] + bytes(100),  # its end overwritten: no longer a readable zip
    )
    for n, content in enumerate(damaged, start=2):
        cached.unlink()
        cached.write_bytes(content)  # a new inode: not the file holocell wrote, but a damaged download
        assert isinstance(hc.HoloCell.load_pretrained("labnet"), hc.HoloCell)
        assert cached.read_bytes() == published and len(requests) == n
    os.truncate(cached, 10)  # the file holocell wrote, damaged in place
    assert fetch("labnet", progressbar=False).read_bytes() == published and len(requests) == 5


def test_a_longer_or_edited_file_at_a_recorded_download_name_is_the_users(server, cache):
    url, root, requests = server
    payload = b"gene\tregion\n" * 500
    (root / "table.tsv").write_bytes(payload)
    register("test-table", "table.tsv", _sha(payload), url=url + "table.tsv")
    cached = fetch("test-table", progressbar=False)
    cached.write_bytes(payload + b"my annotations\n")  # edited in place: longer, and not the recorded bytes
    with pytest.raises(FileExistsError, match="not the file holocell downloaded"):
        fetch("test-table", progressbar=False)
    assert cached.read_bytes() == payload + b"my annotations\n" and len(requests) == 1
    copy = cache / "copy.tsv"
    copy.write_bytes(payload)
    copy.replace(cached)  # the recorded bytes, in another file (a copied cache): holocell's, used as they are
    assert fetch("test-table", progressbar=False) == cached and len(requests) == 1


# ------------------------------------------------------------------------------------- 4. save(".") and --model .
def test_save_dot_saves_into_the_current_folder(trained, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(ValueError, match="empty path"):
        trained.save("", overwrite=True)
    assert list(empty.iterdir()) == []
    trained.save(".", overwrite=True)  # an empty folder: replaced by the model, as save(os.getcwd()) does
    assert is_checkpoint_dir(empty) and os.getcwd() == str(empty) and sorted(os.listdir(".")) == sorted(
        os.listdir(empty)
    )
    before = (empty / "model.safetensors").read_bytes()
    trained.save(".", overwrite=True)  # inside a saved model: replaced; the process stays in the folder
    assert is_checkpoint_dir(empty) and (empty / "model.safetensors").read_bytes() == before
    assert os.getcwd() == str(empty) and [p for p in os.listdir(tmp_path) if p != "empty"] == []
    with pytest.raises(FileExistsError, match="already exists"):
        trained.save(".")  # without overwrite: refused, as for any existing path


def test_cli_train_model_dot(trained, tmp_path, monkeypatch, capsys):
    data = tmp_path / "in.h5mu"
    trained.adata.write(str(data))
    folder = tmp_path / "m"
    trained.save(folder)
    monkeypatch.chdir(folder)
    argv = ["train", str(data), "--modalities", "rna=rna,protein=protein", "--batch-key", "batch", "--max-epochs", "1"]
    argv += ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--n-latents", "4", "--no-progress"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--model", "", "--overwrite"])
    assert exit_.value.code == 2 and "--model is an empty path" in capsys.readouterr().err
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main([*argv, "--model", ".", "--overwrite"])
    assert is_checkpoint_dir(folder) and os.getcwd() == str(folder)
    assert sorted(os.listdir(tmp_path)) == ["in.h5mu", "m"]


# ---------------------------------------------------------------------------- 3. folders that link to nothing
def test_outputs_below_a_link_to_nothing_are_refused_before_any_work(trained, tmp_path, snapshot, capsys):
    (tmp_path / "results").symlink_to(tmp_path / "unmounted" / "results")  # a link to a moved drive
    model_dir = tmp_path / "model"
    trained.save(model_dir)
    data = tmp_path / "in.h5mu"
    trained.adata.write(str(data))
    before = snapshot(tmp_path)
    words = f"{tmp_path / 'results'} is a symlink to {tmp_path / 'unmounted' / 'results'}, which does not exist"
    for call in (
        lambda: trained.save(tmp_path / "results" / "m"),
        lambda: trained.save_pretrained(tmp_path / "results" / "m.zip"),
        lambda: hc.pl.training_history(trained, save=tmp_path / "results" / "history.png", show=False),
    ):
        with pytest.raises(NotADirectoryError) as err:
            call()
        assert words in str(err.value)
    model = hc.HoloCell(_data(), **TINY)
    with pytest.raises(NotADirectoryError, match="which does not exist"):
        model.train(checkpoint_dir=tmp_path / "results" / "ckpts", **RUN)
    assert not model.is_trained_
    with pytest.raises(SystemExit) as exit_:  # refused before the model is loaded
        main(["embed", str(data), "--model", str(model_dir), "--out", str(tmp_path / "results" / "x.h5mu")])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (tmp_path / "unmounted").exists()


# --------------------------------------------------------------------------------------- 6. the demo's record
@pytest.mark.parametrize("kind", ["link", "users_json", "not_hashes"])
def test_the_demo_refuses_a_record_it_did_not_write_before_any_work(tmp_path, kind, snapshot, capsys):
    out = tmp_path / "demo_output"
    out.mkdir()
    notes = tmp_path / "my_notes.json"
    notes.write_text('{"title": "my notes"}')
    record = out / _demo.MANIFEST
    if kind == "link":
        record.symlink_to(notes)
    else:
        record.write_text(notes.read_text() if kind == "users_json" else '["results.md"]')
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", str(out), "--max-epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not the record of outputs that holocell demo writes" in err, err
    assert snapshot(tmp_path) == before


def test_the_demo_keeps_its_own_record_up_to_date(tmp_path):
    out = tmp_path / "demo_output"
    out.mkdir()
    with _demo._demo_file(out, "results.md") as tmp:
        tmp.write_text("demo table")
    record = out / _demo.MANIFEST
    assert json.loads(record.read_text()) == {"results.md": _sha(b"demo table")} and not record.is_symlink()
    with _demo._demo_file(out, "results.json") as tmp:  # its own record: replaced, the earlier entry kept
        tmp.write_text("{}")
    assert set(json.loads(record.read_text())) == {"results.md", "results.json"}


# ----------------------------------------------------------------------- 7. long names the file system takes
def test_long_output_names_are_written_through_temporary_siblings_of_legal_length(trained, tmp_path):
    import matplotlib.pyplot as plt

    from holocell.pl._utils import save_figure

    folder = tmp_path / ("m" * 250)  # legal (255 bytes at most); the temporary siblings used to add 10-19 bytes
    trained.save(folder)
    trained.save(folder, overwrite=True)  # the old checkpoint is renamed aside under a cut name, then removed
    assert is_checkpoint_dir(folder) and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
    fig, _ = plt.subplots()
    figure = tmp_path / ("f" * 240 + ".png")
    save_figure(fig, figure)
    plt.close(fig)
    assert figure.stat().st_size > 0 and not [p for p in tmp_path.iterdir() if "partial" in p.name or ".tmp" in p.name]
