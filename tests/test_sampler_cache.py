"""The fast paths give what the plain computation gives: the generation cache (only the committed tokens
refreshed), the constant-token tables of the encoder, and per-cell decoding of a subset of anchors."""

import numpy as np
import pytest
import torch

from holocell.data import simulate_multiome
from holocell.model import HoloCell
from holocell.nn import generate_modality
from holocell.nn._diffusion import add_noise


def _module_and_batch(read_in_tokens: str):
    torch.manual_seed(0)
    mdata, _ = simulate_multiome(
        30, n_genes=30, n_tfs=5, n_proteins=6, n_distal_peaks=5, peaks_per_gene=2,
        missing={"protein": ["batch1"]}, seed=0,
    )
    HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch")
    model = HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8, read_in_tokens=read_in_tokens)
    model.module.eval()
    arrays = model._arrays(None)[1]
    return model.module, arrays.take(np.arange(arrays.n_cells))


@pytest.fixture(scope="module")
def module_and_batch():
    return _module_and_batch("all")


@pytest.fixture(scope="module")
def values_module_and_batch():
    return _module_and_batch("values")


@pytest.mark.parametrize("read_in", ["all", "values"])
@pytest.mark.parametrize("target", ["rna", "protein", "atac"])
def test_cached_generation_equals_full_recompute(module_and_batch, values_module_and_batch, target, read_in):
    module, batch = module_and_batch if read_in == "all" else values_module_and_batch
    tokens = module.tokenize(batch)
    with torch.no_grad():
        fast = generate_modality(module.network, tokens, target, n_steps=4, cache=True)
        slow = generate_modality(module.network, tokens, target, n_steps=4, cache=False)
    torch.testing.assert_close(fast.values, slow.values, rtol=1e-4, atol=1e-5)
    if target != "atac":
        assert torch.equal(fast.bins, slow.bins)


def _plain_encoder_inputs(network, tokens):
    token_emb = network.embed_tokens(tokens)
    return token_emb, network.context_kv(tokens, token_emb)


@pytest.mark.parametrize("keep", [None, ["rna"], ["atac"], ["protein", "atac"]])
def test_constant_token_tables_equal_plain_embedding(module_and_batch, keep):
    module, batch = module_and_batch
    tokens = module.restrict(module.tokenize(batch), keep)
    network = module.network
    assert tokens.present.shape[0] >= 18  # enough cells for the table path (3 x 3 x 2 states)
    with torch.no_grad():
        emb, kv = network.encoder_inputs(tokens)
        plain_emb, plain_kv = _plain_encoder_inputs(network, tokens)
        no_emb, kv_only = network.encoder_inputs(tokens, with_embeddings=False)
    torch.testing.assert_close(emb, plain_emb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kv, plain_kv, rtol=1e-5, atol=1e-6)
    assert no_emb is None
    torch.testing.assert_close(kv_only, kv)


def test_constant_token_tables_give_the_plain_gradients(module_and_batch):
    """Training uses the tables too: on noised tokens (random [MASK]s) loss and gradients match."""
    module, batch = module_and_batch
    network = module.network
    clean = module.tokenize(batch)
    exists = {m: module.tokenizer.exists(m) for m in module.modalities}
    noised = add_noise(clean, exists, generator=torch.Generator().manual_seed(0)).tokens

    def grads(inputs):
        network.zero_grad()
        emb, kv = inputs(noised)
        latents = network.encode(noised, context_kv=kv)
        out = network.decode(noised, latents, emb, network.modalities)
        loss = sum(v.square().mean() for k, v in out.items() if k.endswith(("logits", "value")))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}

    loss_fast, g_fast = grads(network.encoder_inputs)
    loss_plain, g_plain = grads(lambda t: _plain_encoder_inputs(network, t))
    network.zero_grad()
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_per_cell_anchor_decoding_equals_shared_anchors(module_and_batch):
    module, batch = module_and_batch
    network = module.network
    tokens = module.tokenize(batch)
    slots = network.exists("rna").nonzero().squeeze(1)
    B = tokens.present.shape[0]
    gen = torch.Generator().manual_seed(0)
    per_cell = torch.stack([slots[torch.randperm(len(slots), generator=gen)[:7]] for _ in range(B)])
    with torch.no_grad():
        emb, kv = network.encoder_inputs(tokens)
        latents = network.encode(tokens, context_kv=kv)
        shared = network.decode(tokens, latents, emb, ["rna"])  # every anchor
        own = network.decode(tokens, latents, emb, ["rna"], per_cell)
        sub = network.embed_tokens(tokens, per_cell)
    expected = shared["rna_logits"].gather(1, per_cell.unsqueeze(-1).expand(-1, -1, shared["rna_logits"].shape[-1]))
    torch.testing.assert_close(own["rna_logits"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(own["rna_value"], shared["rna_value"].gather(1, per_cell), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sub, emb.gather(1, per_cell.unsqueeze(-1).expand(-1, -1, emb.shape[-1])))


def test_values_read_in_ignores_tokens_without_a_value(module_and_batch, values_module_and_batch):
    """With ``read_in_tokens="values"`` a cell's embedding does not depend on the anchors where its token is
    zero / [MASK] / absent in every slot; with ``"all"`` it does."""
    for (module, batch), should_change in [(values_module_and_batch, False), (module_and_batch, True)]:
        network = module.network
        tokens = module.tokenize(batch)
        cell = 0
        constant = ~network.carries_value(tokens)[cell]  # (G,) anchors whose token carries nothing in cell 0
        assert 0 < int(constant.sum()) < network.config.n_anchors
        before = module.embed(batch)[cell]
        saved = network.anchor.weight.detach().clone()
        with torch.no_grad():
            network.anchor.weight[constant] += torch.randn(int(constant.sum()), saved.shape[1], generator=torch.Generator().manual_seed(0))
        try:
            after = module.embed(batch)[cell]
        finally:
            with torch.no_grad():
                network.anchor.weight.copy_(saved)
        assert (not torch.allclose(before, after, atol=1e-5)) == should_change


def test_read_in_tokens_is_validated():
    from holocell.nn import NetworkConfig

    with pytest.raises(ValueError, match="read_in_tokens"):
        NetworkConfig(n_anchors=3, read_in_tokens="expressed")
