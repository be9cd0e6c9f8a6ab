"""Inputs of HoloCell.train that used to escape its checks: checkpoint folders of another run, files that are not
holocell checkpoints, a checkpoint_dir that is a file, arguments failing deep in torch or Lightning, and a frozen
model with nothing to train. Every refusal names the problem and the fix, and leaves the user's files as they were.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

import holocell as hc

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 1, "n_latents": 4, "n_latent": 4}
RUN = {"batch_size": 16, "enable_progress_bar": False}
MODS = {"rna": "rna", "protein": "protein"}
#: The simulator's genes are synthetic: setting its data up reports that few map to the vocabulary (expected here).
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*RNA features of modality .* map to a known:holocell.HoloCellWarning"),
]


def _data(n_cells: int = 64):
    mdata = hc.data.simulate_multiome(
        64, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, seed=0
    )[0]
    mdata = mdata[:n_cells].copy()
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


def _model(**kwargs):
    return hc.HoloCell(_data(), **{**TINY, **kwargs})


class _NotATensor:
    """Stands for any object of the user's own in a pickle."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The checkpoint folder of a finished 1-epoch run (read-only: copy it to change it)."""
    folder = tmp_path_factory.mktemp("run") / "ckpt"
    _model().train(max_epochs=1, checkpoint_dir=folder, **RUN)
    return folder


# ----------------------------------------------------------------------------- 1. the run resume=True continues
def test_fresh_run_into_an_earlier_runs_folder_is_refused_and_resume_continues_it(run_dir, tmp_path, snapshot):
    folder = shutil.copytree(run_dir, tmp_path / "ckpt")
    (folder / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    model = _model(seed=1)
    with pytest.raises(ValueError, match="already holds checkpoint files of an earlier run") as err:
        model.train(max_epochs=1, checkpoint_dir=folder, **RUN)
    assert str(folder) in str(err.value) and "last.ckpt" in str(err.value)
    assert "Pass resume=True to continue that run" in str(err.value) and "another (new or empty)" in str(err.value)
    assert snapshot(tmp_path) == before and not model.is_trained_
    # resume continues the run in the folder (epoch 0 done: one more), writing its own last.ckpt, no last-v1.ckpt
    model.train(max_epochs=2, checkpoint_dir=folder, resume=True, **RUN)
    assert model.history_.index.tolist() == [0, 1]  # the run's epochs, the checkpoint's included (was [1])
    # the checkpoint is written after validation, before Lightning logs the epoch's training losses
    assert model.history_["validation_loss"].notna().all() and model.history_["train_loss"].notna().tolist() == [False, True]
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["epoch=1-step=6.ckpt", "last.ckpt", "notes.txt"], names  # the old epoch file was the run's own
    assert (folder / "notes.txt").read_text() == "my notes"
    # a folder with several last checkpoints (an older holocell wrote last-v1.ckpt): which run is unclear
    shutil.copy(folder / "last.ckpt", folder / "last-v1.ckpt")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"several last checkpoints \['last-v1.ckpt', 'last.ckpt'\]"):
        model.train(max_epochs=3, checkpoint_dir=folder, resume=True, **RUN)
    assert snapshot(tmp_path) == before


def test_resume_refuses_a_checkpoint_of_another_model(run_dir, tmp_path, snapshot):
    before = snapshot(run_dir)
    last = run_dir / "last.ckpt"
    for model, words in (
        (_model(d_model=32), "network d_model is 16 in the checkpoint, 32 here"),
        (_model(n_latents=8), "network n_latents is 4 in the checkpoint, 8 here"),
        (hc.HoloCell(_data(48), **TINY), "it was trained on 64 cells, this model's data have 48"),
    ):
        with pytest.raises(ValueError, match="was written by another model") as err:
            model.train(max_epochs=2, checkpoint_dir=run_dir, resume=True, **RUN)
        assert str(last) in str(err.value) and words in str(err.value) and "Resume with the model" in str(err.value)
        assert not model.is_trained_
    assert snapshot(run_dir) == before
    # a checkpoint written before the identity was recorded: the tensor shapes are compared
    old = torch.load(last, weights_only=True)
    del old["holocell_run"]
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "last.ckpt")
    with pytest.raises(ValueError, match=r"tensor 'module\..*' has shape .* there, .* here"):
        _model(d_model=32).train(max_epochs=2, checkpoint_dir=tmp_path / "old", resume=True, **RUN)


def test_resume_with_no_epochs_left_is_refused_and_changes_nothing(run_dir, snapshot):
    """max_epochs counts from the run's start: a run with 1 epoch done and max_epochs=1 used to return at once, and the
    model looked trained (is_trained_) with an empty history_."""
    before = snapshot(run_dir)
    model = _model()
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match="has already trained 1 epochs") as err:
        model.train(max_epochs=1, checkpoint_dir=run_dir, resume=True, **RUN)
    assert "max_epochs larger than 1" in str(err.value) and str(run_dir) in str(err.value)
    assert not model.is_trained_ and snapshot(run_dir) == before
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in weights.items())


# ----------------------------------------------------------------------------- 2. not a holocell checkpoint
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (lambda p: torch.save({"mine": _NotATensor()}, p), "holds Python objects"),
        (lambda p: torch.save({"weights": torch.zeros(3)}, p), "no training state of a holocell model"),
        (lambda p: p.write_text("my own notes"), "not a PyTorch checkpoint file"),
    ],
)
def test_resume_from_a_file_that_is_not_a_holocell_checkpoint(tmp_path, snapshot, content, words):
    (tmp_path / "ckpt").mkdir()
    last = tmp_path / "ckpt" / "last.ckpt"
    content(last)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="is not a holocell training checkpoint") as err:
        _model().train(max_epochs=1, checkpoint_dir=tmp_path / "ckpt", resume=True, **RUN)
    message = str(err.value)
    assert str(last) in message and words in message and "holocell leaves this file as it is" in message
    assert "weights_only=False" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's unsafe advice is not shown
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 3. checkpoint_dir is a file
def test_checkpoint_dir_that_is_a_file(tmp_path, snapshot):
    plain = tmp_path / "results.csv"
    plain.write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    model = _model()
    for path, words in ((plain, "is a file"), (plain / "ckpt", "lies below the file")):
        with pytest.raises(NotADirectoryError, match=words) as err:
            model.train(max_epochs=1, checkpoint_dir=path, **RUN)
        assert f"checkpoint_dir {str(path)!r}" in str(err.value) and "new or empty folder" in str(err.value)
    assert snapshot(tmp_path) == before and not model.is_trained_


def test_checkpoint_dir_that_is_a_saved_model_is_refused(tmp_path, snapshot):
    """Checkpoints written into a saved model's folder made it a folder save() refused to replace."""
    model = _model()
    model.train(max_epochs=1, **RUN)
    model.save(tmp_path / "m")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="is a saved holocell model") as err:
        _model().train(max_epochs=1, checkpoint_dir=tmp_path / "m", **RUN)
    assert "m_checkpoints" in str(err.value) and snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 4. arguments
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"validation_size": 0.999}, ValueError, "holds out 64 of the 64 cells, leaving no cell to train on"),
        ({"plan_kwargs": {"betas": (0.9,)}}, ValueError, "key 'betas' must be two numbers in [0, 1)"),
        ({"plan_kwargs": {"total_steps": "a"}}, TypeError, "key 'total_steps' must be an integer >= 1"),
        ({"plan_kwargs": {"total_steps": 0}}, ValueError, "key 'total_steps' must be an integer >= 1"),
        ({"plan_kwargs": {"total_steps": -5}}, ValueError, "key 'total_steps' must be an integer >= 1"),
        ({"plan_kwargs": {"ema_decay": 2.0}}, ValueError, "key 'ema_decay' must be a number in (0, 1)"),
        ({"ema_decay": "x"}, ValueError, "ema_decay must be a number in (0, 1)"),
        ({"seed": 2**32}, ValueError, "seed must be an integer from 0 to 4294967295"),
        ({"logger": True}, ValueError, "pass a Lightning logger"),
    ],
)
def test_train_arguments_are_refused_by_name(kwargs, error, words):
    model = _model()
    with pytest.raises(error) as err:
        model.train(**{"max_epochs": 1, **RUN, **kwargs})
    assert words in str(err.value)
    assert not model.is_trained_


@pytest.mark.parametrize("value", ["fast", 42, ["lr", 1e-3]])
def test_train_config_of_another_type_is_refused_by_the_constructor(value):
    with pytest.raises(TypeError, match=r"HoloCell\(train_config=...\) must be a holocell.train.TrainingConfig"):
        _model(train_config=value)


def test_callbacks_none_and_an_extra_logger(tmp_path):
    model = _model()
    model.train(max_epochs=1, callbacks=None, logger=CSVLogger(tmp_path, name="logs"), **RUN)
    assert model.is_trained_ and model.history_.index.tolist() == [0]  # holocell's own logger still fills it
    assert list(tmp_path.glob("logs/*/metrics.csv"))


def test_a_validation_split_of_no_cell_says_that_early_stopping_is_off():
    model = _model()
    with pytest.warns(hc.HoloCellWarning, match=r"holds out no cell of the 64, so early stopping is off") as caught:
        model.train(max_epochs=1, validation_size=0.005, **RUN)  # 0.32 cells, rounded to 0
    assert "at least 0.0156" in str(caught[0].message) and "early_stopping=False" in str(caught[0].message)
    assert model.is_trained_ and len(model.validation_indices_) == 0 and len(model.train_indices_) == 64
    for kwargs in ({"validation_size": 0.0}, {"validation_size": 0.005, "early_stopping": False}):  # asked for
        _model().train(max_epochs=1, **kwargs, **RUN)  # no warning (warnings are errors here)


# ----------------------------------------------------------------------------- 5. nothing to train
def test_freeze_with_nothing_new_leaves_nothing_to_train():
    reference = _model()
    query = hc.HoloCell.load_query_data(_data(), reference, freeze=True)  # same features and batches: all frozen
    with pytest.raises(ValueError, match="Nothing to train") as err:
        query.train(max_epochs=1, **RUN)
    assert "model.unfreeze()" in str(err.value) and not query.is_trained_
    query.unfreeze()
    query.train(max_epochs=1, **RUN)
    assert query.is_trained_


# ----------------------------------------------------------------------------- 6. one run at a time per folder
def test_a_second_run_into_a_folder_another_run_trains_in_is_refused(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    folder = tmp_path / "ckpt"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # the other run's process
    try:
        marker = folder / ".holocell_run"
        marker.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        model = _model()
        before = {k: v.clone() for k, v in model.module.state_dict().items()}
        with pytest.raises(ValueError, match="is in use by another training run") as err:
            model.train(max_epochs=1, checkpoint_dir=folder, **RUN)
        assert str(marker) in str(err.value) and "its own checkpoint_dir" in str(err.value)
        assert sorted(p.name for p in folder.iterdir()) == [".holocell_run"]  # nothing written beside it
        assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items()) and not model.is_trained_
    finally:
        sleeper.kill()
        sleeper.wait()
    # the marker of a run that was killed (its process is gone) is taken over; a run removes its own at the end
    model.train(max_epochs=1, checkpoint_dir=folder, **RUN)
    assert model.is_trained_ and ".holocell_run" not in {p.name for p in folder.iterdir()}
    assert (folder / "last.ckpt").is_file()
