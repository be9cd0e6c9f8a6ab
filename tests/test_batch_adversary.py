"""The optional batch adversary on the cell state (``batch_adversary_weight``): gradient reversal, its place in the
objective, save / load, and transfer to other batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holocell import HoloCell, HoloCellWarning
from holocell.data import simulate_multiome
from holocell.nn import HoloCellModule, NetworkConfig, ObjectiveConfig
from holocell.nn._mixing import BatchAdversary, reverse_gradient

MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
SIM_GENES = r"RNA features of modality .* map to a known"

pytestmark = pytest.mark.usefixtures("one_thread")


def _mosaic(seed: int = 0, batches: tuple[str, ...] | None = None):
    mdata, _ = simulate_multiome(
        48, n_genes=30, n_tfs=5, n_proteins=6, n_distal_peaks=5, peaks_per_gene=2, n_batches=2, seed=seed,
    )
    if batches is not None:  # other batch names
        mdata.obs["batch"] = np.asarray(batches)[(mdata.obs["batch"] == "batch1").to_numpy().astype(int)]
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


@pytest.fixture(scope="module")
def adversarial():
    mdata = _mosaic()
    model = HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8, n_latent=6, batch_adversary_weight=1.0)
    model.train(max_epochs=2, batch_size=16, enable_progress_bar=False, early_stopping=False, seed=0)
    return mdata, model


def test_reverse_gradient_is_the_identity_with_the_gradient_negated():
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x)
    torch.testing.assert_close(y, x)
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -torch.arange(3.0).expand(5, 3))


@pytest.mark.parametrize("mode", ["confusion", "reverse"])
def test_the_classifier_learns_the_batch_while_the_states_move_to_hide_it(mode):
    """One optimiser over states and classifier: the classifier's loss on fixed states falls (it finds the batch),
    and the encoder's gradient moves the two batches' states towards each other."""
    torch.manual_seed(0)
    batch = torch.arange(128) % 2
    z = (torch.randn(128, 4) + 2.0 * batch[:, None]).requires_grad_(True)
    adversary = BatchAdversary(n_latent=4, n_batches=2, n_hidden=16, mode=mode)
    opt = torch.optim.SGD(adversary.parameters(), lr=0.1)

    def classifier_loss() -> float:
        return torch.nn.functional.cross_entropy(adversary.classifier(z.detach()), batch).item()

    first = classifier_loss()
    for _ in range(50):
        opt.zero_grad()
        adversary(z.detach(), batch).backward()
        opt.step()
    assert classifier_loss() < 0.5 * first
    gap = (z[batch == 1].mean(0) - z[batch == 0].mean(0)).detach()
    adversary(z, batch).backward()
    step = -z.grad  # a descent step on the total loss
    moved = step[batch == 1].mean(0) - step[batch == 0].mean(0)
    assert float(moved @ gap) < 0  # the step closes the gap between the batches


def test_in_the_confusion_form_the_classifier_learns_only_from_its_own_loss():
    """The encoder's term holds the classifier fixed: the classifier's gradient is that of its cross-entropy on
    the detached states alone; the encoder's term is 0 exactly when the prediction is uniform."""
    torch.manual_seed(0)
    batch = torch.arange(32) % 3
    z = torch.randn(32, 4, requires_grad=True)
    adversary = BatchAdversary(n_latent=4, n_batches=3, n_hidden=8)
    adversary(z, batch).backward()
    total = [p.grad.clone() for p in adversary.classifier.parameters()]
    adversary.zero_grad()
    torch.nn.functional.cross_entropy(adversary.classifier(z.detach()), batch).backward()
    for got, want in zip(total, [p.grad for p in adversary.classifier.parameters()], strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # a classifier that always predicts uniformly over the 3 batches, 0 for "unseen"
        for p in adversary.classifier.parameters():
            p.zero_()
        adversary.classifier[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1e4]))
    fit = torch.nn.functional.cross_entropy(adversary.classifier(z), batch)
    torch.testing.assert_close(adversary(z, batch), fit)
    with pytest.raises(ValueError, match="mode must be one of"):
        BatchAdversary(4, 3, mode="mmd")


def test_the_adversary_is_refused_without_a_cell_state_and_with_a_negative_weight():
    with pytest.raises(ValueError, match="batch_adversary_weight"):
        ObjectiveConfig(batch_adversary_weight=-0.5)
    with pytest.raises(ValueError, match="batch_adversary_mode must be one of"):
        ObjectiveConfig(batch_adversary_mode="mmd")
    config = NetworkConfig(n_anchors=5, n_batches=2, d_model=8, n_layers=1, n_heads=2, n_latents=2, cell_state=False,
                           batch_in_encoder=True, library_in_encoder=True, z_in_denoiser=False)
    with pytest.raises(ValueError, match="batch_adversary_weight acts on the cell state"):
        HoloCellModule(config, {"rna": np.arange(5)}, objective=ObjectiveConfig(batch_adversary_weight=1.0))
    mdata = _mosaic()
    with pytest.raises(ValueError, match="batch_adversary_weight"):
        HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=4, batch_adversary_weight="a lot")


def test_the_adversary_enters_the_loss_only_when_asked(adversarial):
    mdata, model = adversarial
    module = model.module
    assert isinstance(module.batch_adversary, BatchAdversary)
    batch = model._arrays(None)[1].take(np.arange(32))
    out = module.loss(batch, generator=torch.Generator().manual_seed(0))
    assert out.per_modality["batch_adversary"] > 0
    weight = module.objective.batch_adversary_weight
    module.objective.batch_adversary_weight = 0.0
    try:
        base = module.loss(batch, generator=torch.Generator().manual_seed(0))
    finally:
        module.objective.batch_adversary_weight = weight
    assert "batch_adversary" not in base.per_modality
    torch.testing.assert_close(out.loss, base.loss + weight * out.per_modality["batch_adversary"])
    plain = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=4)
    assert plain.module.batch_adversary is None


def test_the_adversary_trains_and_survives_save_and_load(adversarial, tmp_path):
    mdata, model = adversarial
    assert model.is_trained_
    emb = model.get_latent_representation(progress_bar=False)
    assert np.isfinite(emb).all() and emb.std(0).max() > 0
    model.save(tmp_path / "adv")
    with pytest.warns(HoloCellWarning, match=SIM_GENES):  # load sets the data up again
        loaded = HoloCell.load(tmp_path / "adv", mdata)
    assert loaded.module.objective.batch_adversary_weight == 1.0
    np.testing.assert_allclose(loaded.get_latent_representation(progress_bar=False), emb, rtol=1e-5, atol=1e-5)
    for key, value in model.module.batch_adversary.state_dict().items():
        assert torch.equal(loaded.module.batch_adversary.state_dict()[key], value), key


def test_transfer_to_other_batches_starts_the_classifier_afresh(adversarial):
    _, reference = adversarial
    query = _mosaic(seed=1, batches=("lab_a", "lab_b"))
    model = HoloCell.load_query_data(query, reference)
    fresh = model._transfer_state.fresh
    assert any(key.startswith("batch_adversary.") for key in fresh)
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, early_stopping=False, seed=0)
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()
