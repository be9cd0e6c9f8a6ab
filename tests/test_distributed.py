"""Multi-device training through Lightning: DDP on 2 CPU processes (gloo), bf16 mixed precision, the fused optimiser."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import holocell as hc

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up reports that few RNA features are
#: vocabulary genes (issue 20); the tests here expect that report.
SIM_GENES = r"RNA features of modality .* map to a known"

# Each rank runs this whole script (Lightning's "ddp" launcher re-runs it for rank 1) and writes a
# checksum of its weights after training.
_SCRIPT = """
import hashlib, sys, warnings
warnings.simplefilter("ignore")
import torch
import torch.distributed as dist
import holocell as hc

hc.settings.lightning_log_level = "info"  # Lightning's start-up lines (the test reads the backend from them)
out = sys.argv[1]
mdata = hc.data.simulate_multiome(64, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2,
                                  missing={{"protein": ["batch1"]}}, seed=0)[0]
hc.HoloCell.setup_mudata(mdata, modalities={{"rna": "rna", "protein": "protein"}}, batch_key="batch")
model = hc.HoloCell(mdata, **{tiny})
init = torch.cat([p.detach().flatten() for p in model.module.parameters()]).clone()
model.train(max_epochs=2, batch_size=8, validation_size=0.1, accelerator="cpu", devices=2, strategy="ddp",
            enable_progress_bar=False, checkpoint_dir=out + "/ckpt")
rank = dist.get_rank()
weights = torch.cat([p.detach().flatten() for p in model.module.parameters()])
assert not torch.equal(weights, init), "weights did not change"
with open(f"{{out}}/rank{{rank}}.sha256", "w") as f:
    f.write(hashlib.sha256(weights.numpy().tobytes()).hexdigest())
"""


def test_ddp_two_cpu_processes_agree(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(tiny=TINY)))
    env = dict(os.environ, PYTHONPATH=str(Path(hc.__file__).parents[1]))
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "distributed_backend=gloo" in res.stderr + res.stdout
    sums = [(tmp_path / f"rank{r}.sha256").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]  # gradients were all-reduced: both ranks hold the same trained weights
    # 58 training cells, batch 8, drop_last: 7 mini-batches per epoch, sharded to 4 per rank
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 4


def test_bf16_mixed_precision_trains():
    mdata = hc.data.simulate_multiome(
        64, n_genes=20, n_tfs=4, n_proteins=5, missing={"protein": ["batch1"]}, seed=0
    )[0]
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=2, batch_size=16, precision="bf16-mixed", accelerator="cpu", enable_progress_bar=False)
    assert np.isfinite(model.history_["train_loss"]).all()
    assert next(model.module.parameters()).dtype == torch.float32  # mixed precision keeps fp32 weights
    assert np.isfinite(model.get_latent_representation()).all()


class _OptimizerSpy(pl.Callback):
    """Records whether the run's AdamW is fused."""

    def on_train_start(self, trainer, pl_module):
        self.fused = bool(trainer.optimizers[0].defaults.get("fused"))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_adamw_is_fused_only_in_full_precision(precision):
    # fused AdamW unscales internally, which Lightning's gradient clipping refuses under mixed precision
    mdata = hc.data.simulate_multiome(48, n_genes=12, n_tfs=3, n_proteins=4, seed=1)[0]
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    spy = _OptimizerSpy()
    model.train(max_epochs=1, batch_size=16, precision=precision, accelerator="cpu", enable_progress_bar=False,
                callbacks=[spy])
    assert spy.fused == (precision == "32-true")
    assert np.isfinite(model.history_["train_loss"]).all()
