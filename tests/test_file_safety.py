"""File safety of saves, loads and the command line's model outputs, on real files.

- A model output (``train --model``, ``pretrain --out``, ``model.save``) never deletes an input, a saved
  ``mdata.h5mu`` the save does not write again, the file the model's data are backed on, or training checkpoints;
  each refusal comes before any work and leaves the folder as it was (bytes and modes).
- Rewriting ``mdata.h5mu`` (``save_mudata=True``) completes the new file before the old one goes.
- A checkpoint whose files are a FIFO or a device (``/dev/zero``) is refused at once, never read without end.
- New files and folders follow the umask; a replaced file keeps its mode.
- ``~`` is expanded by ``save``, ``load`` and ``save_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import mudata as md
import numpy as np
import pytest

import holocell as hc
from holocell.cli import main
from holocell.model import _safe_write
from holocell.model._checkpoint import is_checkpoint_dir

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}  # as conftest.TINY

TRAIN = ["--modalities", "rna=rna", "--max-epochs", "1", "--d-model", "16", "--n-heads", "2", "--n-layers", "1",
         "--n-latents", "4", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _pbmc_session):
    """Some PBMC cells as a file, a tiny model trained on them (RNA and protein), and that model saved with its MuData."""
    folder = tmp_path_factory.mktemp("file_safety")
    mdata = _pbmc_session[_pbmc_session.obs_names[::11]].copy()
    data = folder / "pbmc.h5mu"
    mdata.write(data)
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    base = folder / "base"
    model.save(base, save_mudata=True)
    return data, model, base


def _state(root: Path) -> dict[str, tuple]:
    """Everything under ``root``, ``root`` included: sha256 and mode of each file, mode of each folder, links."""
    out = {".": ("dir", stat.S_IMODE(root.lstat().st_mode))}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        elif stat.S_ISREG(st.st_mode):
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fails(capsys, argv: list[str], words: list[str], absent: tuple[str, ...] = ("overwrite=True",)) -> str:
    """``holocell <argv>``: exit code 2, one line ``holocell: error: ...`` holding each of ``words``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("holocell: error: "), err
    for word in words:
        assert word in err, (word, err)
    for word in absent:
        assert word not in err, (word, err)
    return err


@contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging: a refused FIFO or ``/dev/zero`` must not be read (waited on) at all."""

    def _expired(*_):
        raise TimeoutError(f"still reading after {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------- defect 1: inputs inside the model folder
@pytest.mark.parametrize("how", ["inside", "symlink", "hardlink", "is_input"])
def test_train_refuses_a_model_folder_that_holds_its_input(trained, tmp_path, capsys, how):
    data, _, base = trained
    model = tmp_path / "m"
    shutil.copytree(base, model)
    inp = {"inside": model / "mdata.h5mu", "symlink": tmp_path / "link.h5mu", "hardlink": tmp_path / "data.h5mu",
           "is_input": model}[how]  # fmt: skip
    if how == "symlink":
        inp.symlink_to(model / "mdata.h5mu")
    elif how == "hardlink":
        os.link(model / "mdata.h5mu", inp)
    before = _state(tmp_path)
    _fails(capsys, ["train", str(inp), "--model", str(model), "--overwrite", *TRAIN],
           ["--model", "the input file", "never overwrites or deletes its input"])  # fmt: skip
    assert _state(tmp_path) == before


def test_pretrain_refuses_an_out_folder_that_holds_an_input(trained, tmp_path, capsys):
    _, _, base = trained
    model = tmp_path / "m"
    shutil.copytree(base, model)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"train": {"max_epochs": 1}}))
    before = _state(tmp_path)
    _fails(capsys, ["pretrain", str(model / "mdata.h5mu"), "--config", str(config), "--out", str(model),
                    "--overwrite"], ["--out", "holds the input file"])  # fmt: skip
    assert _state(tmp_path) == before
    ckpt = json.dumps({"train": {"max_epochs": 1, "checkpoint_dir": str(tmp_path / "new" / "ckpt")}})
    config.write_text(ckpt)
    before = _state(tmp_path)
    _fails(capsys, ["pretrain", str(model / "mdata.h5mu"), "--config", str(config), "--out", str(tmp_path / "new")],
           ["train.checkpoint_dir", "is inside --out", "a folder of its own"])  # fmt: skip
    assert _state(tmp_path) == before


def test_train_refuses_to_overwrite_a_model_with_its_saved_mudata(trained, tmp_path, capsys):
    data, _, base = trained
    model = tmp_path / "m"
    shutil.copytree(base, model)
    before = _state(tmp_path)
    _fails(capsys, ["train", str(data), "--model", str(model), "--overwrite", *TRAIN],
           ["mdata.h5mu", "--overwrite would delete it", "Move", "another --model"])  # fmt: skip
    assert _state(tmp_path) == before


def test_save_never_silently_drops_the_saved_mudata(trained, tmp_path, monkeypatch):
    _, _, base = trained
    model_dir = tmp_path / "m"
    shutil.copytree(base, model_dir)
    loaded = hc.HoloCell.load(model_dir)  # its data read from m/mdata.h5mu
    before = _state(tmp_path)
    with pytest.raises(FileExistsError, match=r"holds mdata\.h5mu .*save_mudata=True.*another path"):
        loaded.save(model_dir, overwrite=True)
    assert _state(tmp_path) == before

    # rewriting it: the new file is complete before the old one goes (a failing write leaves the old one)
    def half_written(filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x89HDF partial")
        raise OSError("No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(md, "write_h5mu", half_written)  # what save writes the MuData with (not MuData.write: see it)
        with pytest.raises(OSError, match="No space left"):
            loaded.save(model_dir, overwrite=True, save_mudata=True)
    assert _state(tmp_path) == before

    obs_names = list(loaded.adata.obs_names)
    loaded.save(model_dir, overwrite=True, save_mudata=True)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary folder or .m.old left
    assert list(md.read_h5mu(model_dir / "mdata.h5mu").obs_names) == obs_names
    hc.HoloCell.load(model_dir)


def test_save_refuses_while_the_data_are_backed_on_a_file_inside(trained, tmp_path):
    _, _, base = trained
    model_dir = tmp_path / "m"
    shutil.copytree(base, model_dir)
    backed = md.read_h5mu(model_dir / "mdata.h5mu", backed="r")
    try:
        loaded = hc.HoloCell.load(model_dir, backed)
        before = _state(tmp_path)
        with pytest.raises(FileExistsError, match=r"backed on .*mdata\.h5mu.*into memory"):
            loaded.save(model_dir, overwrite=True, save_mudata=True)
        assert _state(tmp_path) == before
        assert np.isfinite(backed.mod["rna"].X[:2].sum())  # still readable
    finally:
        backed.file.close()


# -------------------------------------------------------------- defect 5: training checkpoints vs the model
@pytest.mark.parametrize("ckpt", ["m", "m/ckpt"])
def test_train_refuses_a_checkpoint_dir_in_the_model_folder_before_training(trained, tmp_path, capsys, ckpt):
    data, _, _ = trained
    _fails(capsys, ["train", str(data), "--model", str(tmp_path / "m"), "--checkpoint-dir", str(tmp_path / ckpt),
                    *TRAIN], ["--checkpoint-dir", "--model", "a folder of its own"])  # fmt: skip
    assert os.listdir(tmp_path) == []  # nothing trained, nothing written


def test_save_into_a_folder_of_training_checkpoints_says_why(trained, tmp_path, capsys):
    data, model, _ = trained
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"a run's checkpoint")
    before = _state(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"training checkpoints \(last\.ckpt\).*another path"):
            model.save(folder, overwrite=overwrite)
    err = _fails(capsys, ["train", str(data), "--model", str(folder), "--overwrite", *TRAIN],
                 ["training checkpoints", "--checkpoint-dir", "--resume"], ("overwrite=True", "resume=True"))  # fmt: skip
    assert "another path" in err
    assert _state(tmp_path) == before


def test_refusals_at_save_time_name_the_cli_option(trained, tmp_path):
    from holocell._cli_files import UsageError, save_model_out

    _, model, base = trained
    with pytest.raises(UsageError) as err:
        save_model_out(model, str(base), overwrite=False)
    assert "--overwrite" in str(err.value) and "overwrite=True" not in str(err.value)


# ----------------------------------------------------------------------- defect 6: FIFOs and devices
#: Loads each folder given (and ``pretrain --config /dev/zero``) in a child process limited to 4 GiB of address
#: space and killed after a timeout: were a FIFO or ``/dev/zero`` read again, the test would fail, not hang or
#: exhaust the machine's memory (a blocked open in safetensors cannot be interrupted by a signal).
_LOADER = """
import json, resource, sys, warnings
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
warnings.simplefilter("ignore")
import holocell as hc
from holocell.cli import main
from holocell.model._checkpoint import checkpoint_sha256, is_checkpoint_dir
out = {}
def attempt(key, call):
    try:
        out[key] = ["returned", repr(call())]
    except BaseException as err:
        out[key] = [type(err).__name__, str(err)]
for folder in sys.argv[3:]:
    attempt(folder + ":load", lambda f=folder: hc.HoloCell.load(f))
    attempt(folder + ":load_pretrained", lambda f=folder: hc.HoloCell.load_pretrained(f))
    attempt(folder + ":sha256", lambda f=folder: checkpoint_sha256(f))
    attempt(folder + ":is_checkpoint_dir", lambda f=folder: is_checkpoint_dir(f))
attempt("pretrain", lambda: main(["pretrain", sys.argv[1], "--config", "/dev/zero", "--out", sys.argv[2]]))
from pathlib import Path
from holocell._demo import _manifest
attempt("demo_manifest", lambda: _manifest(Path(sys.argv[2]).parent / "demo"))
print(json.dumps(out))
"""


def test_load_refuses_a_fifo_or_device_at_once(trained, tmp_path):
    data, _, base = trained
    folders = {}
    for name in ("config.json", "model.safetensors", "mdata.h5mu"):
        for kind in ("fifo", "devzero"):
            folder = folders[name, kind] = tmp_path / f"{kind}_{name}"
            folder.mkdir()
            for member in {"config.json", "model.safetensors"} - {name}:
                shutil.copy(base / member, folder / member)
            if kind == "fifo":
                os.mkfifo(folder / name)
            else:
                (folder / name).symlink_to("/dev/zero")
    (tmp_path / "demo").mkdir()  # holocell demo's record of its outputs, linked to /dev/zero: read as no record
    (tmp_path / "demo" / ".holocell_demo.json").symlink_to("/dev/zero")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(hc.__file__).parents[1]), *sys.path])}
    argv = [sys.executable, "-c", _LOADER, str(data), str(tmp_path / "p"), *map(str, folders.values())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for (name, kind), folder in folders.items():
        what = "a FIFO (named pipe)" if kind == "fifo" else "a character device"
        calls = ["load"] if name == "mdata.h5mu" else ["load", "load_pretrained", "sha256"]
        for call in calls:
            error, message = result[f"{folder}:{call}"]
            assert error == "ValueError" and f"{name} is {what}" in message, (name, kind, call, message)
            assert "not a regular file" in message, message
        assert result[f"{folder}:is_checkpoint_dir"] == ["returned", "False"]
    error, message = result["pretrain"]
    assert error == "UsageError" and "config file /dev/zero is larger than" in message, message
    assert not (tmp_path / "p").exists()
    assert result["demo_manifest"] == ["returned", "{}"]


def test_cli_refuses_an_input_that_is_no_regular_file(trained, tmp_path, capsys):
    _, _, base = trained
    fifo = tmp_path / "pipe.h5mu"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.h5mu"
    zero.symlink_to("/dev/zero")
    with _deadline(60):
        for inp in (fifo, zero):
            _fails(capsys, ["embed", str(inp), "--model", str(base), "--out", str(tmp_path / "o.h5mu")],
                   ["not a regular file"])  # fmt: skip


# ------------------------------------------------------------------------------------- defect 7: modes
def test_new_outputs_follow_the_umask_and_replaced_ones_keep_their_mode(trained, tmp_path, umask_block):
    data, model, base = trained
    with umask_block(0o077):
        assert _safe_write.current_umask() == 0o077
        model.save(tmp_path / "private")
        main(["embed", str(data), "--model", str(base), "--out", str(tmp_path / "out.h5mu")])
        model.save_pretrained(tmp_path / "private.zip")
    assert _mode(tmp_path / "private") == 0o700
    assert {_mode(p) for p in (tmp_path / "private").iterdir()} == {0o600}
    assert _mode(tmp_path / "out.h5mu") == _mode(tmp_path / "private.zip") == 0o600

    with umask_block(0o022):
        model.save(tmp_path / "shared")
        assert {_mode(p) for p in (tmp_path / "shared").iterdir()} == {0o644}  # a new model: every file, weights too
        (tmp_path / "out.h5mu").chmod(0o640)
        main(["embed", str(data), "--model", str(base), "--out", str(tmp_path / "out.h5mu"), "--overwrite"])
        (tmp_path / "shared").chmod(0o750)
        (tmp_path / "shared" / "model.safetensors").chmod(0o600)
        model.save(tmp_path / "shared", overwrite=True)
    assert _mode(tmp_path / "out.h5mu") == 0o640  # replaced: kept
    assert _mode(tmp_path / "shared") == 0o750
    assert _mode(tmp_path / "shared" / "model.safetensors") == 0o600
    assert _mode(tmp_path / "shared" / "config.json") == 0o644


def test_umask_without_proc(tmp_path, monkeypatch, umask_block):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(_safe_write, "open", no_proc, raising=False)
    with umask_block(0o027):
        assert _safe_write.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # restored
        with _safe_write.atomic_file(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    assert _mode(tmp_path / "a.txt") == 0o640


# --------------------------------------------------------------------------------------- defect 10: ~
def test_save_load_and_save_pretrained_expand_the_home_folder(trained, tmp_path, monkeypatch):
    data, model, _ = trained
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    model.save("~/models/m")
    model.save_pretrained("~/models/m.zip")
    assert is_checkpoint_dir(home / "models" / "m") and (home / "models" / "m.zip").is_file()
    assert os.listdir(cwd) == []  # no folder named "~"
    loaded = hc.HoloCell.load("~/models/m", md.read_h5mu(data))
    assert loaded.feature_space.n_anchors == model.feature_space.n_anchors
    hc.HoloCell.load_pretrained("~/models/m.zip")
