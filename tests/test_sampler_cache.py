"""The generation cache (read-in key/values refreshed only for the target's tokens) is exact."""

import numpy as np
import pytest
import torch

from holocell.data import simulate_multiome
from holocell.model import HoloCell
from holocell.nn import generate_modality


@pytest.fixture(scope="module")
def module_and_batch():
    torch.manual_seed(0)
    mdata, _ = simulate_multiome(
        30, n_genes=30, n_tfs=5, n_proteins=6, n_distal_peaks=5, peaks_per_gene=2,
        missing={"protein": ["batch1"]}, seed=0,
    )
    HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch")
    model = HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8)
    model.module.eval()
    arrays = model._arrays(None)[1]
    return model.module, arrays.take(np.arange(arrays.n_cells))


@pytest.mark.parametrize("target", ["rna", "protein", "atac"])
def test_cached_generation_equals_full_recompute(module_and_batch, target):
    module, batch = module_and_batch
    tokens = module.tokenize(batch)
    with torch.no_grad():
        fast = generate_modality(module.network, tokens, target, n_steps=4, cache=True)
        slow = generate_modality(module.network, tokens, target, n_steps=4, cache=False)
    torch.testing.assert_close(fast.values, slow.values, rtol=1e-4, atol=1e-5)
    if target != "atac":
        assert torch.equal(fast.bins, slow.bins)
