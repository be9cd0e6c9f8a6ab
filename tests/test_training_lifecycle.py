"""The training lifecycle as a user drives it: NumPy integers as train() arguments, Lightning arguments that holocell
sets itself (gradient clipping, model summary, sanity validation, checkpointing), no validation through
``limit_val_batches=0``, scvi-tools argument names, and Ctrl+C during a run."""

from __future__ import annotations

import signal

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import holocell as hc

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4, "n_latent": 4}
RUN = {"enable_progress_bar": False}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(pbmc_50_per_batch):
    """A fresh, untrained tiny model (the same initial weights every time)."""
    return hc.HoloCell(pbmc_50_per_batch, **TINY)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class _Seen(pl.Callback):
    """Records the Trainer settings a run used."""

    def on_fit_start(self, trainer, pl_module):
        self.clip = trainer.gradient_clip_val
        self.sanity_steps = trainer.num_sanity_val_steps
        self.checkpoints = list(trainer.checkpoint_callbacks)


class _CtrlC(pl.Callback):
    """Stands for the user pressing Ctrl+C (or "Interrupt kernel") at the start of epoch 1."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


# ----------------------------------------------------------------------------- finding 3: NumPy integers
def test_numpy_integers_train_as_the_same_python_ints(model, pbmc_50_per_batch):
    """np.int64 max_epochs / batch_size / seed (e.g. from np.min or a config read with numpy) used to crash in
    Lightning (bare AssertionError, "batch_size should be a positive integer") and torch ("an integer is required")."""
    model.train(max_epochs=np.int64(2), batch_size=np.int64(16), seed=np.int64(3),
                early_stopping_patience=np.int64(5), **RUN)  # fmt: skip
    plain = hc.HoloCell(pbmc_50_per_batch, **TINY)
    plain.train(max_epochs=2, batch_size=16, seed=3, early_stopping_patience=5, **RUN)
    assert len(model.history_) == 2 and model.is_trained_
    np.testing.assert_array_equal(model.validation_indices_, plain.validation_indices_)
    np.testing.assert_array_equal(model.get_latent_representation(), plain.get_latent_representation())


# ----------------------------------------------------------------------------- finding 9: scvi-tools names
@pytest.mark.parametrize(
    ("kwargs", "equivalent"),
    [
        ({"train_size": 0.8}, "validation_size=0.2"),
        ({"shuffle_set_split": False}, "drawn from seed="),
        ({"datasplitter_kwargs": {}}, "batch_size= and validation_size="),
        ({"early_stopping_monitor": "elbo_validation"}, "always monitors validation_loss"),
        ({"early_stopping_min_delta": 0.1}, "early_stopping_patience="),
        ({"early_stopping_mode": "max"}, "always minimises validation_loss"),
        ({"load_sparse_tensor": True}, "sparse and dense"),
    ],
)
def test_scvi_train_arguments_are_refused_before_any_work_naming_holocells_equivalent(model, kwargs, equivalent):
    before = _weights(model)
    with pytest.raises(TypeError, match="scvi-tools' train()") as err:
        model.train(max_epochs=1, **kwargs, **RUN)
    assert next(iter(kwargs)) in str(err.value) and equivalent in str(err.value)
    assert "Trainer" not in str(err.value)
    assert model.history_ is None and _same(before, _weights(model))


# ----------------------------------------------------------------------------- finding 4: holocell's own Trainer settings
def test_lightning_settings_holocell_sets_are_taken_from_the_user(model):
    """gradient_clip_val, enable_model_summary and num_sanity_val_steps collided with holocell's fixed values
    ("got multiple values for keyword argument")."""
    seen = _Seen()
    model.train(max_epochs=1, gradient_clip_val=0.5, enable_model_summary=True, num_sanity_val_steps=1,
                callbacks=[seen], **RUN)  # fmt: skip
    assert seen.clip == 0.5 and seen.sanity_steps == 1 and seen.checkpoints == []
    assert list(model.history_.index) == [0] and np.isfinite(model.history_["validation_loss"]).all()
    assert model.train_config.gradient_clip_val == 1.0  # the run's override is not the model's setting


def test_gradient_clip_val_as_in_lightning_and_checked_like_plan_kwargs(model):
    seen = _Seen()
    model.train(max_epochs=1, gradient_clip_val=0, callbacks=[seen], **RUN)  # Lightning's 0: no clipping
    assert seen.clip is None
    with pytest.raises(ValueError, match="given twice"):
        model.train(max_epochs=1, gradient_clip_val=0.5, plan_kwargs={"gradient_clip_val": 2.0}, **RUN)
    with pytest.raises(ValueError, match=r"train\(gradient_clip_val=...\)"):
        model.train(max_epochs=1, gradient_clip_val=-1.0, **RUN)
    with pytest.raises(ValueError, match=r"train\(gradient_clip_val=...\)"):
        model.train(max_epochs=1, gradient_clip_val="big", **RUN)


def test_a_users_model_checkpoint_writes_checkpoints(model, tmp_path):
    """A ModelCheckpoint in callbacks was refused: "Trainer was configured with enable_checkpointing=False"."""
    model.train(max_epochs=2, callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "a", monitor="validation_loss")],
                **RUN)  # fmt: skip
    assert len(list((tmp_path / "a").glob("*.ckpt"))) == 1 and len(model.history_) == 2
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)
    model.train(max_epochs=1, callbacks=saver, enable_checkpointing=True, **RUN)
    assert (tmp_path / "b" / "last.ckpt").is_file()


def test_enable_checkpointing_that_contradicts_the_run_is_refused_before_any_work(model, tmp_path):
    before = _weights(model)
    with pytest.raises(ValueError, match="checkpoint_dir='folder'") as err:
        model.train(max_epochs=1, enable_checkpointing=True, **RUN)
    assert "ModelCheckpoint" in str(err.value)
    with pytest.raises(ValueError, match="contradicts checkpoint_dir="):
        model.train(max_epochs=1, enable_checkpointing=False, checkpoint_dir=tmp_path / "ckpt", **RUN)
    assert model.history_ is None and _same(before, _weights(model))
    assert not (tmp_path / "ckpt").exists()
    model.train(max_epochs=1, enable_checkpointing=True, checkpoint_dir=tmp_path / "ckpt", **RUN)  # agrees: fine
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_limit_val_batches_zero_trains_without_early_stopping(model):
    """Without validation, holocell's early stopping failed once the KL warm-up was over ("Early stopping conditioned
    on metric validation_loss which is not available")."""
    model.train(max_epochs=3, limit_val_batches=0, **RUN)
    assert list(model.history_.index) == [0, 1, 2] and "validation_loss" not in model.history_
    assert model.is_trained_ and len(model.validation_indices_) == 20  # still held out


# ----------------------------------------------------------------------------- finding 5: Ctrl+C
def test_ctrl_c_during_train_raises_keyboard_interrupt_and_keeps_the_weights_reached(model):
    """Lightning turned the interrupt into SystemExit(1): `except KeyboardInterrupt: model.save(...)` never ran."""
    before, handler = _weights(model), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="interrupted in epoch 1"):
        model.train(max_epochs=3, callbacks=[_CtrlC()], **RUN)
    assert not _same(before, _weights(model))  # epoch 0 was trained, and kept
    assert not model.is_trained_ and model.history_ is None
    assert signal.getsignal(signal.SIGINT) is handler and not model.module.training
    assert np.isfinite(model.get_latent_representation()).all()
    model.train(max_epochs=1, **RUN)  # the model trains on afterwards
    assert model.is_trained_


def test_a_callbacks_own_system_exit_is_not_turned_into_an_interrupt(model):
    class _Exit(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            raise SystemExit(3)

    with pytest.raises(SystemExit) as err:
        model.train(max_epochs=1, callbacks=[_Exit()], **RUN)
    assert err.value.code == 3
