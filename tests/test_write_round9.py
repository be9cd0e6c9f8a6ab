"""Writes and training folders (session 9): SIGTERM during a save or a CLI output write, where a user's
dirpath-less ``ModelCheckpoint`` writes, MuData type checks of ``load`` / ``load_query_data``, and the empty
``checkpoint_dir`` of a run that ended before its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import CSVLogger

import holocell as hc

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4, "n_latent": 4}
RUN = {"enable_progress_bar": False}
SRC = Path(hc.__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(pbmc_50_per_batch):
    """A fresh, untrained tiny model."""
    return hc.HoloCell(pbmc_50_per_batch, **TINY)


# ------------------------------------------------------------------ finding 4: SIGTERM during a write
#: Run in a subprocess: MuData.write writes, prints a marker and sleeps, so the test can send SIGTERM mid-write.
_SLOW_WRITE = """
import sys, time
import mudata
orig = mudata.MuData.write
def slow(self, *args, **kwargs):
    orig(self, *args, **kwargs)
    print("WRITTEN", flush=True)
    time.sleep(120)
mudata.MuData.write = slow
orig_function = mudata.write_h5mu
def slow_function(*args, **kwargs):  # what save writes the MuData with
    orig_function(*args, **kwargs)
    print("WRITTEN", flush=True)
    time.sleep(120)
mudata.write_h5mu = slow_function
import holocell as hc
mode, folder = sys.argv[1], sys.argv[2]
if mode == "save":
    hc.HoloCell.load(folder + "/model").save(folder + "/model", overwrite=True, save_mudata=True)
else:
    from holocell import cli
    sys.argv = ["holocell", "embed", folder + "/in.h5mu", "--model", folder + "/model", "--out", folder + "/e.h5mu"]
    cli.main()
"""


def _terminated_mid_write(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "slow_write.py"
    script.write_text(textwrap.dedent(_SLOW_WRITE))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)  # fmt: skip
    try:
        line = proc.stdout.readline()  # blocks until the marker (or the end of a failed run)
        if line.strip() != "WRITTEN":
            proc.wait(timeout=60)
            pytest.fail(f"the write did not start: {line}{proc.stderr.read()[-3000:]}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_during_save_removes_the_staging_copy_and_keeps_the_previous_model(
    trained_pbmc, tmp_path, snapshot
):
    """SIGTERM (a SLURM time limit, docker stop) during save left a hidden full-size .model.XXXX/ beside the model:
    Python's default SIGTERM action skips the finally that removes it."""
    _, trained = trained_pbmc
    trained.save(tmp_path / "model", save_mudata=True)
    before = snapshot(tmp_path / "model")
    done = _terminated_mid_write(tmp_path, "save")
    assert done.returncode == -signal.SIGTERM, done.stderr[-2000:]  # ended as SIGTERM ends a process (143 in a shell)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "slow_write.py"]  # no .model.XXXX/ left
    assert snapshot(tmp_path / "model") == before
    assert hc.HoloCell.load(tmp_path / "model").is_trained_


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_during_a_cli_output_write_leaves_no_temporary_file(trained_pbmc, tmp_path):
    """`holocell embed ... --out e.h5mu` killed with SIGTERM left .e.h5mu.XXXX.tmp.h5mu (atomic_file's temporary)."""
    mdata, trained = trained_pbmc
    trained.save(tmp_path / "model")
    mdata[::20].copy().write(tmp_path / "in.h5mu")  # cells of every batch (some have no protein)
    done = _terminated_mid_write(tmp_path, "cli")
    assert done.returncode == -signal.SIGTERM, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5mu", "model", "slow_write.py"]


def test_a_users_sigterm_handler_is_kept_and_the_default_restored_after_a_save(trained_pbmc, tmp_path):
    _, trained = trained_pbmc
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    trained.save(tmp_path / "a")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # holocell's handler lives only during the write

    def mine(signum, frame):  # pragma: no cover - never called
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        trained.save(tmp_path / "b")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# ------------------------------------------------------------------ finding 3: a dirpath-less ModelCheckpoint
def _checkpoints(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.ckpt"))


def test_a_dirpath_less_model_checkpoint_writes_where_plain_lightning_does(model, tmp_path, monkeypatch):
    """It wrote to ./holocell/version_0/checkpoints (holocell's in-memory logger was the first logger): every run
    into the same folder, inside a user's own `holocell/` package."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "holocell").mkdir()
    (tmp_path / "holocell" / "__init__.py").write_text("# the user's package\n")
    model.train(max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint(save_last=True)], **RUN)
    model.train(max_epochs=1, seed=1, callbacks=[pl.callbacks.ModelCheckpoint(save_last=True)], **RUN)
    assert _checkpoints(tmp_path) == [
        "lightning_logs/version_0/checkpoints/epoch=0-step=5.ckpt", "lightning_logs/version_0/checkpoints/last.ckpt",
        "lightning_logs/version_1/checkpoints/epoch=0-step=5.ckpt", "lightning_logs/version_1/checkpoints/last.ckpt",
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "holocell").iterdir()) == ["__init__.py"]
    root = tmp_path / "root"
    model.train(max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint()], default_root_dir=root, **RUN)
    assert _checkpoints(root) == ["lightning_logs/version_0/checkpoints/epoch=0-step=5.ckpt"]


def test_a_users_logger_decides_log_dir_and_the_checkpoint_folder(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = {}

    class LogDir(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen["log_dir"] = trainer.log_dir

    model.train(max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint(), LogDir()], logger=CSVLogger("logs"), **RUN)
    assert seen["log_dir"] == os.path.join("logs", "lightning_logs", "version_0")
    assert _checkpoints(tmp_path) == ["logs/lightning_logs/version_0/checkpoints/epoch=0-step=5.ckpt"]
    assert len(model.history_) == 1  # holocell's own logger still fills history_
    model.train(max_epochs=1, callbacks=[LogDir()], **RUN)  # no logger: Lightning's default folder, nothing written
    assert seen["log_dir"] == str(tmp_path / "lightning_logs" / "version_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_lightnings_not_empty_warning_is_kept_for_a_users_checkpoint_folder(model, tmp_path):
    """The warning was filtered for every checkpoint callback, so a second run piling into the first's folder was
    silent; only holocell's own checkpoint_dir (which holds its run marker) is filtered."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old.ckpt").write_text("")
    with pytest.warns(UserWarning, match="exists and is not empty"):
        model.train(max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "mine")], **RUN)
    model.train(max_epochs=2, checkpoint_dir=tmp_path / "ours", **RUN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=3, checkpoint_dir=tmp_path / "ours", resume=True, **RUN)
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    assert (tmp_path / "ours" / "last.ckpt").is_file()


# ------------------------------------------------------------------ finding 6: load / load_query_data type checks
@pytest.mark.parametrize("what", ["path", "anndata"])
def test_load_and_load_query_data_refuse_a_path_or_an_anndata_as_load_pretrained_does(trained_pbmc, tmp_path, what):
    """load(dir, "data.h5mu") / load(dir, adata) / load_query_data("data.h5mu", ref) gave a bare AttributeError,
    load_query_data(adata, ref) a ValueError naming the wrong fix."""
    mdata, trained = trained_pbmc
    trained.save(tmp_path / "model")
    given = str(tmp_path / "data.h5mu") if what == "path" else mdata["rna"]
    fix = r"read it with mudata\.read_h5mu\(path\)" if what == "path" else r"wrap it with mudata\.MuData\("
    with pytest.raises(TypeError, match=fix):
        hc.HoloCell.load_pretrained(tmp_path / "model", given)
    with pytest.raises(TypeError, match=fix):
        hc.HoloCell.load(tmp_path / "model", given)
    with pytest.raises(TypeError, match=rf"Expected a MuData, got \w+: {fix}.*setup_mudata"):
        hc.HoloCell.load_query_data(given, trained)
    with pytest.raises(TypeError, match=fix):
        hc.HoloCell.load_query_data(given, tmp_path / "model")


def test_load_checks_mdata_before_reading_the_checkpoint(tmp_path):
    with pytest.raises(TypeError, match="Expected a MuData, got str"):
        hc.HoloCell.load(tmp_path / "no_such_model", "data.h5mu")


# ------------------------------------------------------------------ finding 12: the empty checkpoint_dir
class _Boom(pl.Callback):
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            raise self.error("boom")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_run_that_ends_before_its_first_checkpoint_leaves_no_empty_folder(model, tmp_path, error):
    with pytest.raises(error):
        model.train(max_epochs=2, checkpoint_dir=tmp_path / "a" / "b" / "ck", callbacks=[_Boom(error)], **RUN)
    assert list(tmp_path.iterdir()) == []  # the folders it created, all empty, are gone
    (tmp_path / "mine").mkdir()
    with pytest.raises(error):
        model.train(max_epochs=2, checkpoint_dir=tmp_path / "mine" / "ck", callbacks=[_Boom(error)], **RUN)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and list((tmp_path / "mine").iterdir()) == []
    model.train(max_epochs=1, checkpoint_dir=tmp_path / "mine" / "ck", **RUN)  # a run that checkpoints keeps it
    assert sorted(p.name for p in (tmp_path / "mine" / "ck").iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt"]
