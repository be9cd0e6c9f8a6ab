"""Quality floors on the bundled PBMC data: a regression in training or generation turns CI red.

Floors, not targets: a small model trained for a CI-sized time, with margins below what it measured. The issue's
targets for full-size models are in the benchmarks (``benchmarks/results/demo.md``, ``pbmc.md``).
"""

from __future__ import annotations

import numpy as np
import pytest

import holocell as hc
from holocell import _demo
from holocell import evaluation as ev

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_model(one_thread):
    """The demo's split at a CI size (p4's protein hidden in training): d_model 32, 1 block, 20 epochs, seed 0."""
    split = _demo.make_split()
    hc.HoloCell.setup_mudata(split.mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(split.mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8)
    model.train(max_epochs=20, enable_progress_bar=False, seed=0)
    return split, model


def test_quality_floor_rna_to_protein_on_a_held_out_batch(demo_model):
    """The demo's task at a CI size: p4's protein is hidden in training and generated from its RNA.

    Measured when written (d_model 32, 1 block, 20 epochs, seed 0, one thread): Pearson 0.261 for the default
    point prediction (the cell state's likelihood mean), against 0.363 for kNN(15) and 0.339 for ridge on RNA
    PCA(50) fit on the paired batch p3. At 8 epochs the same model scored 0.004: the floor catches a model that
    stops learning the cross-modal map, not a few points of drift.
    """
    full = hc.data.pbmc_cite_mosaic()
    split, model = demo_model
    mdata = split.mdata
    generated = model.generate(mdata, target="protein", key_added="adt_generated", progress_bar=False)
    truth = ev.clr(split.held_out_protein)
    holocell_r = ev.score_prediction("holocell", truth, np.asarray(generated[split.held_out_cells].X))["pearson_mean"]
    knn_r = next(r for r in _demo.baseline_rows(split, full) if r["method"].startswith("kNN"))["pearson_mean"]
    assert knn_r > 0.3  # the baseline itself is sane (0.363)
    assert holocell_r >= knn_r - 0.15, (holocell_r, knn_r)


@pytest.mark.parametrize("method", ["both", "finetune"])
def test_quality_floor_label_transfer_to_a_held_out_batch(demo_model, method):
    """``tl.annotate`` labels p4's cells (RNA only in this split) from the paired batch p3's labels.

    Measured when written (the model above; fine-tuning at its defaults): accuracy / macro F1 0.718 / 0.548 for the
    frozen default (``"both"``), 0.700 / 0.482 fine-tuned. The most common type is about a third of p4, so labels
    that lose their cells (a misaligned mask, a shuffled class order) fall far below these floors. The full-size
    comparison with logistic regression on PCA is ``benchmarks/results/perturbation.md``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    split, model = demo_model
    work = split.mdata.copy()
    batch = work.obs["batch"].astype(str).to_numpy()
    truth = work.obs["celltype"].astype(str).to_numpy()
    reference, query = batch == "p3_0", batch == "p4_0"
    work.obs["reference_label"] = work.obs["celltype"].astype(str).where(reference)
    hc.tl.annotate(work, model, labels_key="reference_label", query=query, reference=reference, method=method,
                   progress_bar=False)  # fmt: skip
    predicted = work.obs["holocell_label"][query].astype(str).to_numpy()
    assert accuracy_score(truth[query], predicted) >= 0.60
    assert f1_score(truth[query], predicted, average="macro") >= 0.38
