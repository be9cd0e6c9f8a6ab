"""Typed objective / training settings: set from the model, used by training, saved and rebuilt (issue 17).

Also: the EMA is Lightning's weight-averaging callback with the numbers of holocell's former own EMA,
and freezing hooks only the model's own optimiser.
"""

from __future__ import annotations

import json
import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import holocell as hc
from holocell.nn import ObjectiveConfig
from holocell.train import TrainingConfig, fit

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
MODS = {"rna": "rna", "protein": "protein"}
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up (or loading a model onto it, which
#: replays the setup) reports that few RNA features are vocabulary genes (issue 20). The tests expect it.
SIM_GENES = r"RNA features of modality .* map to a known"


def _sim_genes():
    return pytest.warns(hc.HoloCellWarning, match=SIM_GENES)


def _sim(n: int = 64):
    mdata = hc.data.simulate_multiome(
        n, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, missing={"protein": ["batch1"]},
        seed=0,
    )[0]  # fmt: skip
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


def test_objective_settings_from_the_model_are_used_and_saved(tmp_path):
    model = hc.HoloCell(_sim(), **TINY, p_hide_library=0.1, eps=0.05, align_weight=0.5)
    assert model.objective_config == ObjectiveConfig(p_hide_library=0.1, eps=0.05, align_weight=0.5)
    assert model.module.objective is model.objective_config  # one home: the module reads the model's config
    with pytest.raises(ValueError, match="Unknown objective settings"):
        hc.HoloCell(_sim(), **TINY, p_hide_libary=0.1)
    with pytest.raises(ValueError, match="probability"):
        hc.HoloCell(_sim(), **TINY, p_whole=1.5)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["objective"]["p_hide_library"] == 0.1 and config["objective"]["align_weight"] == 0.5
    assert config["training"] == TrainingConfig().to_dict()
    assert "network" not in config  # written by older versions, read by nothing
    with _sim_genes():
        loaded = hc.HoloCell.load(tmp_path / "m", _sim())
    assert loaded.objective_config == model.objective_config
    assert loaded.module.objective == model.objective_config


def test_checkpoint_without_typed_settings_loads_with_defaults(tmp_path):
    """A checkpoint written before the typed settings (an unread "network" entry, no "objective" /
    "training") loads, its init_params' objective values kept and the other settings at their defaults."""
    model = hc.HoloCell(_sim(), **TINY, p_drop_modality=0.3)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    del config["objective"], config["training"]
    config["network"] = model.config.to_dict()
    path.write_text(json.dumps(config))
    with _sim_genes():
        loaded = hc.HoloCell.load(tmp_path / "m", _sim())
    assert loaded.objective_config == ObjectiveConfig(p_drop_modality=0.3)
    assert loaded.train_config == TrainingConfig()
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key


class _Optimiser(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.optimizer = trainer.optimizers[0]
        self.clip = trainer.gradient_clip_val


def test_training_settings_reach_the_optimiser_and_survive_save_load(tmp_path):
    mdata = _sim()
    model = hc.HoloCell(mdata, **TINY, train_config={"betas": [0.8, 0.9], "warmup_steps": 3})
    assert model.train_config.betas == (0.8, 0.9)
    seen = _Optimiser()
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, callbacks=[seen],
                plan_kwargs={"weight_decay": 0.2, "gradient_clip_val": 0.5})  # fmt: skip
    assert seen.optimizer.defaults["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in seen.optimizer.param_groups] == [0.2, 0.0]
    assert seen.clip == 0.5
    assert model.train_config.weight_decay == TrainingConfig().weight_decay  # a run's override stays in the run
    with pytest.raises(TypeError, match="plan_kwargs"):
        model.train(max_epochs=1, plan_kwargs={"no_such_knob": 1})
    model.save(tmp_path / "m")
    with _sim_genes():
        assert hc.HoloCell.load(tmp_path / "m", _sim()).train_config == model.train_config
    assert TrainingConfig().default_epochs(10) == 150 and TrainingConfig().default_epochs(1000) == 20


def test_shipped_checkpoint_loads_with_default_settings():
    """The shipped checkpoint predates the alignment's default (distilled, weight 1): it keeps the settings it was
    trained with (no alignment), the others at their defaults."""
    reference = hc.HoloCell.load_pretrained("holocell-small-v1")
    assert reference.objective_config == ObjectiveConfig(align_weight=0.0, align_mode="contrastive")
    assert reference.train_config == TrainingConfig()


def test_lightning_weight_averaging_gives_the_former_ema():
    """The EMA is Lightning's WeightAveraging callback; these are the weights of holocell's former own EMA
    (lerp of every floating-point tensor of the module after each optimiser step), recomputed here."""
    mdata = _sim(96)
    trained = hc.HoloCell(mdata, **TINY, seed=1)
    arrays = trained._arrays(None)[1]

    class FormerEMA(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            state = {k: v for k, v in pl_module.module.state_dict().items() if v.is_floating_point()}
            if not hasattr(self, "ema"):
                self.ema = {k: v.detach().clone() for k, v in state.items()}
            else:
                for k, v in state.items():
                    self.ema[k].lerp_(v.detach(), 1.0 - 0.9)

    former = FormerEMA()
    fit(trained.module, arrays, TrainingConfig(), max_epochs=2, batch_size=16, validation_size=0.0,
        ema_decay=0.9, callbacks=[former], enable_progress_bar=False)  # fmt: skip
    final = trained.module.state_dict()
    # parameters are averaged; the cell state's running library statistic (a buffer) is the module's own
    for key in dict(trained.module.named_parameters()):
        assert torch.equal(final[key], former.ema[key]), key


def test_freezing_hooks_only_the_models_own_optimiser(trained_pbmc, pbmc):
    _, reference = trained_pbmc
    query = pbmc[pbmc.obs_names[(pbmc.obs["batch"] == "p4_0").to_numpy()][:80]].copy()
    query.obs["batch"] = "new_lab"
    hc.HoloCell.setup_mudata(query, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell.load_query_data(query, reference, freeze=True)
    # the batch embedding: the new lab's row trains; the reference's batches and its "unseen batch" row are held
    weight = model.module.network.batch.weight
    new, frozen = list(model.batch_categories_).index("new_lab"), weight.shape[0] - 1
    expected = [row == new for row in range(weight.shape[0])]
    assert weight.requires_grad and model._transfer_state.new_rows["network.batch.weight"].tolist() == expected
    other = torch.nn.Linear(3, 3)  # another optimiser in the process: the model's frozen rows are not its business
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    other(torch.ones(1, 3)).sum().backward()
    held = weight.detach()[frozen].clone()
    with torch.no_grad():
        weight[frozen] += 1.0
    opt.step()
    torch.testing.assert_close(weight.detach()[frozen], held + 1.0, rtol=0, atol=0)
    with torch.no_grad():
        weight[frozen] -= 1.0
    # the model's own training restores the frozen row after each of its steps (undoing weight decay)
    before_new = weight.detach()[new].clone()
    model.train(max_epochs=1, enable_progress_bar=False, validation_size=0.0, plan_kwargs={"weight_decay": 0.5})
    torch.testing.assert_close(weight.detach()[frozen], held, rtol=0, atol=0)
    assert not torch.equal(weight.detach()[new], before_new)
    with torch.no_grad():  # after training nothing is hooked any more
        weight[frozen] += 1.0
    opt.step()
    torch.testing.assert_close(weight.detach()[frozen], held + 1.0, rtol=0, atol=0)
    model.unfreeze()


def test_no_checkpoint_file_holds_the_network_entry(tmp_path):
    model = hc.HoloCell(_sim(), **TINY)
    archive = model.save_pretrained(tmp_path / "m.zip")
    shutil.unpack_archive(archive, tmp_path / "unpacked")
    config = json.loads((tmp_path / "unpacked" / "config.json").read_text())
    assert {"objective", "training", "init_params"} <= set(config) and "network" not in config
    assert np.isfinite(hc.HoloCell.load_pretrained(archive).get_latent_representation(_sim())).all()
