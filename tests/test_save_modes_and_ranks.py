"""Who writes a model, with which modes, and when a pretraining config's precision is checked.

- Multi-process runs: ``holocell train --devices 2`` (Lightning's ``ddp`` re-runs the command for rank 1) saves once,
  from global rank 0, with rank 0's history; ``HoloCell.save`` / ``save_pretrained`` on another rank write nothing and
  warn.
- Modes: every file holocell writes new gets ``0o666 & ~umask`` (as ``open()`` would), whatever helper created it
  (safetensors and pooch create theirs 0600); a replaced file keeps its mode.
- ``holocell pretrain``: a ``train.precision`` holocell cannot train with is refused before any input is read.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import holocell as hc
from holocell.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
#: The simulator's genes are synthetic: setting its data up reports that few RNA features are vocabulary genes.
SIM_GENES = r"RNA features of modality .* map to a known"
SKIPPED = "only global rank 0 writes"


def _simulated(n_obs: int = 200):
    return hc.data.simulate_multiome(
        n_obs, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, seed=0
    )[0]


@pytest.fixture(scope="module")
def model():
    """A tiny model trained for one epoch on simulated RNA + protein."""
    mdata = _simulated()
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    trained = hc.HoloCell(mdata, **TINY)
    trained.train(max_epochs=1, batch_size=32, enable_progress_bar=False, seed=0)
    return trained


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------------ finding 7: modes
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_a_new_model_folder_and_every_file_in_it_follow_the_umask(model, tmp_path, umask, umask_block):
    with umask_block(umask):
        model.save(tmp_path / "model", save_mudata=True)
        model.save_pretrained(tmp_path / "model.zip")
    new_file = 0o666 & ~umask
    assert _modes(tmp_path / "model") == {"config.json": new_file, "mdata.h5mu": new_file, "model.safetensors": new_file}
    assert _mode(tmp_path / "model") == 0o777 & ~umask
    assert _mode(tmp_path / "model.zip") == new_file
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):  # the saved MuData is set up again
        loaded = hc.HoloCell.load(tmp_path / "model").module.state_dict()  # the files are whole and readable
    assert all(torch.equal(loaded[k], v.cpu()) for k, v in model.module.state_dict().items())


def test_a_replaced_model_keeps_its_files_modes_and_a_file_it_gains_follows_the_umask(model, tmp_path, umask_block):
    target = tmp_path / "model"
    with umask_block(0o077):
        model.save(target)
    (target / "config.json").chmod(0o640)
    target.chmod(0o750)
    assert _modes(target) == {"config.json": 0o640, "model.safetensors": 0o600}
    with umask_block(0o022):
        model.save(target, overwrite=True, save_mudata=True)
    assert _modes(target) == {"config.json": 0o640, "mdata.h5mu": 0o644, "model.safetensors": 0o600}
    assert _mode(target) == 0o750


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_a_downloaded_file_follows_the_umask(server, cache, tmp_path, umask, umask_block):
    import hashlib

    from holocell.data._registry import fetch_url

    url, root, _ = server
    payload = b"holocell mode test payload\n" * 50
    (root / "weights.bin").write_bytes(payload)
    with umask_block(umask):
        path = fetch_url(url + "weights.bin", hashlib.sha256(payload).hexdigest(), "weights.bin", progressbar=False)
    assert path.read_bytes() == payload
    assert _mode(path) == 0o666 & ~umask  # pooch's temporary file is created 0600


# ------------------------------------------------------------------------------------ finding 5: ranks
@pytest.mark.parametrize("variable", ["RANK", "LOCAL_RANK", "NODE_RANK"])
def test_save_on_another_rank_writes_nothing_and_says_so(model, tmp_path, monkeypatch, variable):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    target, archive = tmp_path / "out" / "model", tmp_path / "out" / "model.zip"
    with pytest.warns(hc.HoloCellWarning, match=rf"HoloCell\.save wrote nothing to .*model: .*{variable}=1.*{SKIPPED}"):
        model.save(target)
    with pytest.warns(hc.HoloCellWarning, match=rf"HoloCell\.save_pretrained wrote nothing.*{SKIPPED}"):
        assert model.save_pretrained(archive) == archive
    assert not (tmp_path / "out").exists()


def test_save_in_rank_zero_and_a_single_process_writes(model, tmp_path, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.setenv(name, "0")
    model.save(tmp_path / "zero")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("NODE_RANK")
    model.save_pretrained(tmp_path / "single.zip")
    assert (tmp_path / "zero" / "model.safetensors").is_file() and zipfile.is_zipfile(tmp_path / "single.zip")


def test_cli_train_on_two_ddp_processes_saves_once_from_rank_zero(tmp_path):
    """A real 2-process CPU run: ``--devices 2`` makes Lightning pick ``ddp`` and re-run the command for rank 1."""
    mdata = _simulated(96)
    mdata.write(tmp_path / "data.h5mu")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(Path(hc.__file__).parents[1]), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    argv = [sys.executable, "-m", "holocell.cli", "train", str(tmp_path / "data.h5mu"), "--model",
            str(tmp_path / "model"), "--modalities", "rna=rna,protein=protein", "--batch-key", "batch",
            "--max-epochs", "2", "--batch-size", "8", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--n-latents", "4", "--accelerator", "cpu", "--devices", "2", "--no-progress",
            "--checkpoint-dir", str(tmp_path / "ckpt")]  # fmt: skip
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o022)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"Saved model to {tmp_path / 'model'}") == 1, done.stdout
    assert SKIPPED not in done.stderr  # the command line itself writes from rank 0 only: no warning
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    rank0 = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["holocell_history"]
    rank0_loss = [row["validation_loss"] for row in rank0 if "validation_loss" in row]
    assert config["history"]["validation_loss"] == pytest.approx(rank0_loss, rel=1e-6)  # rank 1's differs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "data.h5mu", "model"]  # no swapped-aside leftover
    assert _modes(tmp_path / "model") == {"config.json": 0o644, "model.safetensors": 0o644}


# ------------------------------------------------------------------------------------ finding 8: precision
@pytest.mark.parametrize("precision", ["64", 64, "16-true", "bf16-true", "transformer-engine"])
def test_pretrain_refuses_a_precision_before_any_input_is_read(tmp_path, capsys, precision):
    inputs = [tmp_path / "a.h5mu", tmp_path / "b.h5mu"]
    for path in inputs:
        path.write_text("not HDF5: reading it would fail with another message")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"model": TINY, "train": {"max_epochs": 1, "precision": precision}}))
    out = tmp_path / "out" / "pre.zip"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--config", str(config), *map(str, inputs), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"holocell: error: config file {config}: key 'train.precision': precision={precision!r}")
    assert "'bf16-mixed'" in err and not out.parent.exists()


def test_pretrain_accepts_a_precision_holocell_trains_with(tmp_path, capsys):
    """``bf16-mixed`` passes the config check: the command goes on to read the (unreadable) input."""
    path = tmp_path / "a.h5mu"
    path.write_text("not HDF5")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"model": TINY, "train": {"max_epochs": 1, "precision": "bf16-mixed"}}))
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", str(config), str(path), "--out", str(tmp_path / "p.zip"), "--no-progress"])
    err = capsys.readouterr().err
    assert "precision" not in err and str(path) in err, err
