"""Multi-process training on 2 CPU processes (gloo): streamed data shared out among the ranks, epoch losses averaged
over them, the strategies whose processes Lightning starts itself (spawn, fork / notebook), and the arguments that
are refused before any work."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import holocell as hc
from holocell.data._streaming import BackedModality, BackedMosaicArrays, ChunkedBatches

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
#: The simulator's genes are synthetic: setting its data up reports that few RNA features are vocabulary genes.
SIM_GENES = r"RNA features of modality .* map to a known"


@pytest.fixture(autouse=True)
def _environment_kept():
    """Lightning's launchers set MASTER_PORT and friends in the calling process: put the environment back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _data(n_cells: int):
    """Mosaic data: only batch0 of 4 measured protein, so some mini-batches of 4 cells lack it."""
    return hc.data.simulate_multiome(
        n_cells, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, n_batches=4,
        missing={"protein": ["batch1", "batch2", "batch3"]}, seed=0,
    )[0]  # fmt: skip


def _model(n_cells: int = 96) -> tuple[hc.HoloCell, object]:
    """A tiny model of :func:`_data`, and its MuData."""
    mdata = _data(n_cells)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    return hc.HoloCell(mdata, **TINY), mdata


def _weights(model: hc.HoloCell) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.module.parameters()]).clone()


# Each rank runs this whole script (Lightning's "ddp" launcher re-runs it for rank 1): a backed .h5mu in which only
# batch0 measured protein (so some mini-batches lack it), streamed to 2 ranks. Each rank writes what it trained on.
_STREAMED = """
import hashlib, json, sys, warnings
warnings.simplefilter("ignore")
import mudata as md
import lightning.pytorch as pl
import torch
import torch.distributed as dist
import holocell as hc
from holocell.vocab import MODALITIES

out = sys.argv[1]
path = out + "/data.h5mu"


class Spy(pl.Callback):
    def __init__(self):
        self.cells, self.without_protein = {{}}, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rows = torch.cat([batch["rna"], batch["protein"]], 1).numpy()
        self.cells.setdefault(trainer.current_epoch, []).extend(hashlib.sha1(r.tobytes()).hexdigest() for r in rows)
        self.without_protein += int(not batch["present"][:, MODALITIES.index("protein")].any())

    def on_train_end(self, trainer, pl_module):
        self.steps = (trainer.global_step, pl_module.total_steps)


mdata = md.read_h5mu(path, backed="r")
hc.HoloCell.setup_mudata(mdata, modalities={{"rna": "rna", "protein": "protein"}}, batch_key="batch")
model = hc.HoloCell(mdata, **{tiny})
spy = Spy()
model.train(max_epochs=2, batch_size=4, validation_size=0.1, accelerator="cpu", devices=2, strategy="ddp",
            ema_decay=None, enable_progress_bar=False, callbacks=[spy], plan_kwargs={{"warmup_steps": 2}})
with open(f"{{out}}/rank{{dist.get_rank()}}.json", "w") as f:
    json.dump({{"cells": spy.cells, "without_protein": spy.without_protein, "steps": spy.steps,
               "n_train": len(model.train_indices_), "history": model.history_.to_json()}}, f)
"""


@pytest.fixture(scope="module")
def streamed_ddp(tmp_path_factory):
    """Both ranks' records of a 2-process DDP run on a backed .h5mu (84 cells, 76 for training, batch 4)."""
    out = tmp_path_factory.mktemp("streamed_ddp")
    _data(84).write(out / "data.h5mu")
    script = out / "streamed.py"
    script.write_text(textwrap.dedent(_STREAMED.format(tiny=TINY)))
    env = dict(os.environ, PYTHONPATH=str(Path(hc.__file__).parents[1]), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_streamed_ddp_ranks_train_on_disjoint_cells(streamed_ddp):
    r0, r1 = streamed_ddp
    n_train = r0["n_train"]  # 76 cells: 19 mini-batches of 4 per epoch, 10 per rank (the last round padded)
    assert n_train == 76
    for epoch in ("0", "1"):
        a, b = r0["cells"][epoch], r1["cells"][epoch]
        assert len(a) == len(b) == 10 * 4  # the same number of steps on each rank (DDP would hang otherwise)
        assert len(set(a)) == len(set(b)) == 40  # no cell twice within a rank's epoch
        # rank 1's last mini-batch completes the round with the epoch's first one (rank 0's): all else disjoint
        assert len(set(a) & set(b)) == 4
        assert len(set(a) | set(b)) == n_train  # together they cover every training cell
    assert r0["cells"]["0"] != r0["cells"]["1"]  # reshuffled every epoch


def test_streamed_ddp_schedule_spans_the_steps_each_rank_takes(streamed_ddp):
    for rank in streamed_ddp:
        global_step, total_steps = rank["steps"]
        assert global_step == total_steps == 2 * 10  # the cosine schedule and KL warm-up end with the run


def test_ddp_epoch_losses_are_averaged_over_ranks(streamed_ddp):
    r0, r1 = streamed_ddp
    assert r0["without_protein"] + r1["without_protein"] > 0  # some steps logged no protein loss on one rank
    h0, h1 = (pd.read_json(io.StringIO(r["history"])) for r in streamed_ddp)
    assert list(h0.columns) == list(h1.columns)
    assert {"train_loss", "validation_loss", "train_loss_rna", "train_loss_protein"} <= set(h0.columns)
    assert len(h0) == 2 and np.isfinite(h0.to_numpy()).all()
    pd.testing.assert_frame_equal(h0, h1)  # every rank holds the losses of all cells, not of its own share


def test_chunked_batches_equal_shares_for_any_world_size(tmp_path):
    import h5py

    n = 103
    with h5py.File(tmp_path / "ids.h5", "w") as f:
        f["x"] = (np.arange(n) + 1).astype(np.float32)[:, None]
    source = h5py.File(tmp_path / "ids.h5", "r")["x"]
    arrays = BackedMosaicArrays({"rna": BackedModality(source, np.array([0]), np.arange(n))}, np.zeros(n), np.zeros(n))
    kwargs = {"batch_size": 8, "block_size": 7, "blocks_per_buffer": 3, "seed": 2}
    whole = [b["rna"][:, 0].numpy().astype(int) - 1 for b in ChunkedBatches(arrays, **kwargs)]
    alone = [b["rna"][:, 0].numpy().astype(int) - 1 for b in ChunkedBatches(arrays, rank=0, world_size=1, **kwargs)]
    assert all(np.array_equal(x, y) for x, y in zip(whole, alone, strict=True))
    for world_size in (2, 3, 14, 20):  # 13 mini-batches: uneven shares, and more ranks than mini-batches
        shares = [ChunkedBatches(arrays, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]
        batches = [[b["rna"][:, 0].numpy().astype(int) - 1 for b in share] for share in shares]
        assert {len(b) for b in batches} == {len(shares[0])} == {-(-len(whole) // world_size)}
        for r, own in enumerate(batches):  # rank r: mini-batches r, r + world_size, ... then the epoch's first ones
            expected = [whole[j % len(whole)] for j in range(r, len(own) * world_size, world_size)]
            assert all(np.array_equal(x, y) for x, y in zip(own, expected, strict=True))


def test_ddp_spawn_with_default_ema_trains_and_keeps_history(tmp_path):
    # mini-batches of 4 cells, some without protein: DDP must expect parameters a step does not use
    model, mdata = _model()
    before = _weights(model)
    model.train(max_epochs=2, batch_size=4, accelerator="cpu", devices=2, strategy="ddp_spawn",
                enable_progress_bar=False, checkpoint_dir=tmp_path / "ckpt")  # fmt: skip
    assert not torch.equal(before, _weights(model))
    assert model.is_trained_
    history = model.history_
    assert list(history.index) == [0, 1] and np.isfinite(history[["train_loss", "validation_loss"]]).all().all()
    logged = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["holocell_history"]
    assert history["validation_loss"].iloc[-1] == pytest.approx(logged[-1]["validation_loss"])
    model.save(tmp_path / "model")
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        loaded = hc.HoloCell.load(tmp_path / "model", mdata)
    pd.testing.assert_frame_equal(loaded.history_, history)


# A fresh process: a fork inherits this worker's OpenMP state, which earlier tests may have set (below)
_NOTEBOOK = """
import json, sys, warnings
warnings.simplefilter("ignore")
import holocell as hc

mdata = hc.data.simulate_multiome(96, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2,
                                  n_batches=4, missing={{"protein": ["batch1", "batch2", "batch3"]}}, seed=0)[0]
hc.HoloCell.setup_mudata(mdata, modalities={{"rna": "rna", "protein": "protein"}}, batch_key="batch")
model = hc.HoloCell(mdata, **{tiny})
model.train(max_epochs=2, batch_size=8, accelerator="cpu", devices=2, strategy="ddp_notebook", enable_progress_bar=False)
print(model.history_.to_json())
"""


def test_ddp_notebook_keeps_history(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(_NOTEBOOK.format(tiny=TINY)))
    env = dict(os.environ, PYTHONPATH=str(Path(hc.__file__).parents[1]), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    history = pd.read_json(io.StringIO(res.stdout.strip().splitlines()[-1]))
    assert list(history.index) == [0, 1]
    assert np.isfinite(history[["train_loss", "validation_loss"]]).all().all()


# numba's OpenMP threads, then a forking strategy: in a fresh process with 2 numba threads (make test runs numba on
# one thread, with which OpenMP starts no thread team)
_FORK_AFTER_NUMBA = """
import sys, warnings
warnings.simplefilter("ignore")
import numba
import numpy as np
import torch
import holocell as hc


@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.shape[0]):
        s += x[i]
    return s


total(np.ones(1000))
if numba.threading_layer() != "omp":
    print("SKIP numba chose its", numba.threading_layer(), "threading layer, which survives a fork")
    sys.exit(0)
mdata = hc.data.simulate_multiome(48, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2,
                                  n_batches=2, seed=0)[0]
hc.HoloCell.setup_mudata(mdata, modalities={{"rna": "rna", "protein": "protein"}}, batch_key="batch")
model = hc.HoloCell(mdata, **{tiny})
before = torch.cat([p.detach().flatten() for p in model.module.parameters()]).clone()
try:
    model.train(max_epochs=1, batch_size=8, accelerator="cpu", devices=2, strategy=sys.argv[1], enable_progress_bar=False)
except RuntimeError as err:
    after = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    print("REFUSED", torch.equal(before, after) and not model.is_trained_, err)
"""


@pytest.mark.parametrize("strategy", ["ddp_notebook", "ddp_fork"])
def test_a_fork_after_numbas_openmp_threads_is_refused_before_any_work(tmp_path, strategy):
    """scanpy's UMAP runs numba's OpenMP threads; the workers forked after it hung in their first torch operation."""
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent(_FORK_AFTER_NUMBA.format(tiny=TINY)))
    env = dict(os.environ, PYTHONPATH=str(Path(hc.__file__).parents[1]), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    res = subprocess.run([sys.executable, str(script), strategy], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    if res.stdout.startswith("SKIP"):
        pytest.skip(res.stdout.strip())
    assert res.stdout.startswith("REFUSED True"), res.stdout
    assert f"strategy='{strategy}' forks this process" in res.stdout and "numba's OpenMP threads" in res.stdout


def test_backed_data_with_ddp_spawn_is_refused_before_any_work(tmp_path):
    import mudata as md

    _data(96).write(tmp_path / "data.h5mu")
    backed = md.read_h5mu(tmp_path / "data.h5mu", backed="r")
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(backed, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(backed, **TINY)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"strategy='ddp_spawn'.*cannot be pickled.*strategy='ddp'.*into memory"):
        model.train(max_epochs=1, batch_size=8, accelerator="cpu", devices=2, strategy="ddp_spawn",
                    enable_progress_bar=False)  # fmt: skip
    assert torch.equal(before, _weights(model)) and not model.is_trained_


@pytest.mark.parametrize("given", [{"num_workers": 2}, {"datasplitter_kwargs": {"num_workers": 2}}, {"pin_memory": True}])
def test_dataloader_settings_are_refused_naming_what_train_takes(given):
    model, _ = _model(48)
    before = _weights(model)
    with pytest.raises(TypeError, match=r"no DataLoader settings.*main process.*batch_size=.*validation_size="):
        model.train(max_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False, **given)
    assert torch.equal(before, _weights(model)) and not model.is_trained_
