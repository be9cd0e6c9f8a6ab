"""A training run that fails leaves the model as it was: its weights, their dtype and device (a NaN loss used to
leave NaN weights in a model still marked trained; a weight-casting precision left float64 weights that every later
call failed on). Precisions that cast the weights and a dropout of 1 are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

SIM_GENES = r"RNA features of modality .* map to a known"


@pytest.fixture(scope="module")
def trained():
    mdata, _ = hc.data.simulate_multiome(200, n_genes=60, n_tfs=5, n_proteins=10, modalities=("rna", "protein"),
                                         seed=0)  # fmt: skip
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=8)
    model.train(max_epochs=3, batch_size=32, enable_progress_bar=False)
    return mdata, model


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same(model, before: dict[str, torch.Tensor]) -> None:
    after = model.module.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and after[k].device == v.device, k
        assert torch.equal(after[k], v), k


def test_a_run_that_diverges_leaves_the_trained_weights(trained):
    mdata, model = trained
    before, z = _weights(model), model.get_latent_representation(progress_bar=False)
    history = model.history_
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        model.train(max_epochs=3, batch_size=32, lr=1e3, enable_progress_bar=False)
    _same(model, before)
    assert model.is_trained_ and model.history_ is history
    np.testing.assert_array_equal(model.get_latent_representation(progress_bar=False), z)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)  # the advice (a lower rate) then works
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()


@pytest.mark.parametrize("precision", ["64", 64, "16-true", "bf16-true", True])
def test_precisions_that_cast_the_weights_are_refused_before_any_work(trained, precision):
    _, model = trained
    before = _weights(model)
    with pytest.raises(ValueError, match=r"precision=.* is not one holocell trains with.*'bf16-mixed'"):
        model.train(max_epochs=1, precision=precision, enable_progress_bar=False)
    _same(model, before)


def test_a_failure_inside_lightning_puts_dtype_and_values_back(trained, monkeypatch):
    """Any exception from the run (here Lightning casting the weights, then failing) restores the weights."""
    _, model = trained
    before = _weights(model)
    import lightning.pytorch as pl

    def cast_then_fail(self, plan, *args, **kwargs):
        plan.module.double()
        raise RuntimeError("expected m1 and m2 to have the same dtype")

    monkeypatch.setattr(pl.Trainer, "fit", cast_then_fail)
    with pytest.raises(RuntimeError, match="same dtype"):
        model.train(max_epochs=1, enable_progress_bar=False)
    _same(model, before)


def test_dropout_of_one_is_refused(trained):
    mdata, _ = trained
    with pytest.raises(ValueError, match="dropout"):
        hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, dropout=1.0)
