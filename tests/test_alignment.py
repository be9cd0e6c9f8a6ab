"""The alignment terms of the cell state: the cross-modal distillation and its variants (scaled, symmetric,
contrastive against the joint state or against the hidden modality alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holocell import HoloCell, HoloCellWarning
from holocell.data import simulate_multiome

MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
SIM_GENES = r"RNA features of modality .* map to a known"  # the simulator's gene names are made up


pytestmark = pytest.mark.usefixtures("one_thread")


def test_scaled_alignment_learns_a_noise_scale_per_hidden_modality(tmp_path):
    """``align_mode="distill_cross_scaled"``: the term is the Gaussian likelihood of the joint state given the
    cross-modal one, with a learnt variance per hidden modality; it trains, and the scales are saved."""
    from holocell.nn._align import AlignmentScale

    scale = AlignmentScale()
    distance = torch.tensor([0.5, 0.5, 2.0])
    hidden = torch.tensor([0, 0, 1])
    torch.testing.assert_close(scale(distance, hidden), distance.mean() / 2)  # unit variance at the start
    opt = torch.optim.SGD(scale.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        scale(distance, hidden).backward()
        opt.step()
    torch.testing.assert_close(scale.log_var.exp()[:2], torch.tensor([0.5, 2.0]), rtol=1e-3, atol=1e-3)
    mdata, _ = simulate_multiome(
        48, n_genes=30, n_tfs=5, n_proteins=6, n_distal_peaks=5, peaks_per_gene=2, n_batches=2, seed=0,
    )
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8, n_latent=6,
                     align_mode="distill_cross_scaled")
    model.train(max_epochs=2, batch_size=16, enable_progress_bar=False, early_stopping=False, seed=0)
    learnt = model.module.alignment_scale.log_var.detach().clone()
    assert not torch.equal(learnt, torch.zeros_like(learnt))
    model.save(tmp_path / "m")
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        loaded = HoloCell.load(tmp_path / "m", mdata)
    assert torch.equal(loaded.module.alignment_scale.log_var.detach(), learnt)


@pytest.mark.parametrize("symmetric", [False, True])
def test_symmetric_alignment_also_pulls_the_joint_state(symmetric):
    """``align_mode="distill_cross_symmetric"``: the joint state is a target with gradient, so the alignment
    term reaches the network through it too; ``"distill_cross"`` holds it fixed."""
    from holocell.nn._align import cross_distill_loss
    from holocell.nn._diffusion import add_noise

    mdata, _ = simulate_multiome(24, n_genes=20, n_tfs=4, n_proteins=4, seed=1)
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    mode = "distill_cross_symmetric" if symmetric else "distill_cross"
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=4, align_mode=mode)
    _, arrays = model._arrays(None)
    module = model.module
    module.train()
    clean = module.tokenize(arrays.take(np.arange(arrays.n_cells)))
    exists = {m: module.tokenizer.exists(m) for m in module.modalities}
    noised = add_noise(clean, exists, p_drop_modality=1.0, generator=torch.Generator().manual_seed(0))
    assert any(t.any() for t in noised.cross_target.values())
    qz_mu = torch.zeros(clean.present.shape[0], 4, requires_grad=True)  # the cross-modal states, a leaf here
    loss = cross_distill_loss(module.network, clean, noised, qz_mu, symmetric=symmetric)
    loss.backward()
    assert qz_mu.grad.abs().sum() > 0
    grad = module.network.cell.out.weight.grad
    assert (grad is not None and bool(grad.abs().sum() > 0)) == symmetric
    model.train(max_epochs=1, batch_size=12, enable_progress_bar=False, early_stopping=False, seed=0)
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()  # it trains in that mode


def test_contrastive_distillation_keeps_a_view_off_the_centre_of_its_cluster():
    """``align_mode="distill_cross_nce"``: the distillation's pull plus a contrastive term. States at their own
    joint states pay nothing; states at the centre of the joint states pay the distillation and, beyond it, the
    contrastive term (they do not pick out their own cell); the term's size does not depend on the states' scale;
    ``align_contrast_weight`` scales the contrastive part alone; the gradient is finite when a state equals its
    target; the mode trains with the weight set on the model."""
    from holocell.nn._align import contrastive_part

    def _distill_nce(cross, joint, temperature, weight=1.0):  # the mode's alignment: distillation + contrast
        return ((cross - joint) ** 2).mean(1).mean() + contrastive_part(cross, joint, temperature, weight)

    joint = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    assert float(_distill_nce(joint.clone(), joint, 0.1)) < 1e-3
    centre = joint.mean(0, keepdim=True).repeat(4, 1)
    distill = float(((centre - joint) ** 2).mean(1).mean())
    at_centre = float(_distill_nce(centre, joint, 0.1))
    assert at_centre > distill + 0.1
    torch.testing.assert_close(_distill_nce(centre * 10, joint * 10, 0.1) - 100 * distill,
                               torch.tensor(at_centre - distill) * 100, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_distill_nce(centre, joint, 0.1, weight=5.0) - distill,
                               torch.tensor(at_centre - distill) * 5, rtol=1e-5, atol=1e-5)
    assert float(_distill_nce(centre, joint, 0.1, weight=0.0)) == pytest.approx(distill)
    cross = joint.clone().requires_grad_(True)
    _distill_nce(cross, joint, 0.1).backward()
    assert torch.isfinite(cross.grad).all()
    mdata, _ = simulate_multiome(32, n_genes=20, n_tfs=4, n_proteins=4, seed=1)
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=4, align_mode="distill_cross_nce", align_contrast_weight=5.0)
    assert model.module.objective.align_contrast_weight == 5.0
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, early_stopping=False, seed=0)
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()


def test_hidden_modality_contrast_pairs_rna_and_protein_views_with_the_other_alone():
    """``align_mode="distill_cross_nce_hidden"``: a cross-modal view takes part when it hides RNA or protein and
    shows the other alone (no view that shows ATAC, no ATAC target); its target is the cell's state from the hidden
    modality alone, which the view's own modalities cannot move; on RNA + ATAC data the alignment is the plain
    distillation; the term adds to the distillation on RNA + protein data and trains on three modalities."""
    from holocell.nn._align import contrast_views, cross_distill_loss, hidden_states
    from holocell.nn._diffusion import add_noise

    #                          rna    atac   protein
    present = torch.tensor([[True, True, True], [True, False, True], [True, True, False], [False, True, True],
                            [True, True, True], [True, True, True]])
    hidden = torch.tensor([0, 2, 0, 2, 1, 2])  # index into (rna, atac, protein)
    assert contrast_views(present, hidden).tolist() == [False, True, False, False, False, False]

    mdata, _ = simulate_multiome(24, n_genes=20, n_tfs=4, n_proteins=4, seed=1)
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=4,
                     align_mode="distill_cross_nce_hidden", align_contrast_weight=10.0)
    _, arrays = model._arrays(None)
    module = model.module
    module.eval()
    clean = module.tokenize(arrays.take(np.arange(arrays.n_cells)))
    which = torch.tensor([0, 2] * (clean.present.shape[0] // 2))  # RNA hidden, protein hidden
    target = hidden_states(module.network, clean, which)
    rna_only = module.network.embedding(clean.hide("atac").hide("protein"))
    torch.testing.assert_close(target[::2], rna_only[::2])
    edited = clean.hide("atac").hide("rna")  # the views' other modalities gone: the RNA targets stay
    torch.testing.assert_close(hidden_states(module.network, edited, which)[1::2], target[1::2])
    assert not torch.allclose(hidden_states(module.network, edited, which)[::2], target[::2])

    module.train()
    exists = {m: module.tokenizer.exists(m) for m in module.modalities}
    qz_mu = torch.zeros(clean.present.shape[0], 4)
    for drop, more in (("atac", True), ("protein", False)):  # RNA + protein cells: contrast; RNA + ATAC: none
        cells = clean.hide(drop)
        noised = add_noise(cells, exists, p_drop_modality=1.0, generator=torch.Generator().manual_seed(0))
        distill = cross_distill_loss(module.network, cells, noised, qz_mu)
        with_contrast = cross_distill_loss(module.network, cells, noised, qz_mu, contrast=(0.1, 10.0),
                                           contrast_to_hidden=True)
        if more:
            assert float(with_contrast) > 1.5 * float(distill)
        else:
            assert float(with_contrast) == float(distill)
    model.train(max_epochs=1, batch_size=12, enable_progress_bar=False, early_stopping=False, seed=0)
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()


def test_default_alignment_is_the_hidden_modality_contrast_and_a_saved_mode_survives_a_reload(tmp_path):
    """A new model trains with ``"distill_cross_nce_hidden"`` at contrast weight 5 (the default since its ablation);
    a model saved with another alignment (the previous default, ``"distill_cross"``) keeps it when loaded, so that
    training it further optimises the objective it was trained with."""
    mdata, _ = simulate_multiome(24, n_genes=20, n_tfs=4, n_proteins=4, seed=1)
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    sizes = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4, "n_latent": 4}
    default = HoloCell(mdata, **sizes).module.objective
    assert (default.align_mode, default.align_contrast_weight) == ("distill_cross_nce_hidden", 5.0)
    old = HoloCell(mdata, **sizes, align_mode="distill_cross", align_contrast_weight=1.0)
    old.train(max_epochs=1, batch_size=12, enable_progress_bar=False, early_stopping=False, seed=0)
    old.save(tmp_path / "old")
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        loaded = HoloCell.load(tmp_path / "old", mdata).module.objective
    assert (loaded.align_mode, loaded.align_contrast_weight) == ("distill_cross", 1.0)
