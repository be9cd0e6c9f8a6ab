"""Training options a user hits (thirteenth session's probe): a resumed run goes on with the data order of the epoch
it reached (it replayed epoch 0's), a split that leaves a batch out of training is named, and Lightning's own
messages stay quiet."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest

import holocell as hc
from holocell import HoloCellWarning

MODS = {"rna": "rna", "protein": "adt"}
TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


class _Orders(pl.Callback):
    """Each epoch's mini-batches, by their RNA totals; ``stop_at``: interrupt at the start of that epoch."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.seen: dict[int, list[float]] = {}
        self.stop_at = stop_at

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.stop_at:
            raise KeyboardInterrupt

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, []).append(round(float(batch["rna"].sum()), 1))


@pytest.fixture
def small(pbmc):
    mdata = pbmc[np.sort(np.random.default_rng(0).choice(pbmc.n_obs, 120, replace=False))].copy()
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


def test_a_resumed_run_goes_on_with_the_data_order_of_its_epoch(small, tmp_path):
    run = {"max_epochs": 4, "seed": 3, "enable_progress_bar": False, "batch_size": 32}
    whole = _Orders()
    hc.HoloCell(small, **TINY).train(**run, callbacks=[whole])
    cut = _Orders(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        hc.HoloCell(small, **TINY).train(**run, checkpoint_dir=tmp_path / "ck", callbacks=[cut])
    resumed = _Orders()
    hc.HoloCell(small, **TINY).train(**run, checkpoint_dir=tmp_path / "ck", resume=True, callbacks=[resumed])
    assert sorted(resumed.seen) == [2, 3]
    assert [resumed.seen[e] for e in (2, 3)] == [whole.seen[e] for e in (2, 3)]  # were epochs 0 and 1's


def test_a_split_that_leaves_a_batch_out_of_training_is_named(pbmc):
    keep = np.concatenate([np.flatnonzero(pbmc.obs["batch"].to_numpy() == b)[:40] for b in ("p1_0", "p2_0")])
    mdata = pbmc[np.sort(keep)].copy()
    mdata.obs["batch"] = mdata.obs["batch"].astype(str)
    mdata.obs.iloc[:3, mdata.obs.columns.get_loc("batch")] = "tiny plate"  # 3 cells
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    named = []
    for seed in range(40):  # some seed puts all 3 cells of the small batch in validation (p = 1/8 each)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always", HoloCellWarning)
            model.train(max_epochs=1, enable_progress_bar=False, validation_size=0.5, seed=seed, early_stopping=False)
        named = [str(w.message) for w in rec if "in validation" in str(w.message)]
        if named:
            break
    assert named and "put every cell of 1 batch(es) in validation" in named[0]


def test_training_leaves_lightnings_own_messages_out(small):
    model = hc.HoloCell(small, **TINY)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        model.train(max_epochs=1, enable_progress_bar=False, validation_size=0, early_stopping=False)
    text = [str(w.message) for w in rec]
    assert not [t for t in text if "LeafSpec" in t or "across ranks is zero" in t], text


def test_resuming_with_other_settings_than_the_run_names_them(small, tmp_path):
    """A resumed run with another seed validated cells it had trained on, without a word (thirteenth session's
    probe, documented then): the settings the run recorded are compared."""
    run = {"max_epochs": 3, "seed": 3, "enable_progress_bar": False, "batch_size": 32, "early_stopping": False}
    with pytest.raises(KeyboardInterrupt):
        hc.HoloCell(small, **TINY).train(**run, checkpoint_dir=tmp_path / "ck", callbacks=[_Orders(stop_at=2)])
    with pytest.warns(HoloCellWarning, match=r"other settings: seed=3 in the run, 4 now \(the validation cells") as rec:
        hc.HoloCell(small, **TINY).train(**{**run, "seed": 4, "lr": 1e-3}, checkpoint_dir=tmp_path / "ck", resume=True)
    message = " ".join(str(w.message) for w in rec)
    assert "train_config.lr=0.002 in the run, 0.001 now" in message and "batch_size" not in message
    with pytest.raises(KeyboardInterrupt):
        hc.HoloCell(small, **TINY).train(**run, checkpoint_dir=tmp_path / "ck2", callbacks=[_Orders(stop_at=2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)  # the run's own settings, and more epochs, resume quietly
        hc.HoloCell(small, **TINY).train(**{**run, "max_epochs": 4}, checkpoint_dir=tmp_path / "ck2", resume=True)
