"""The fast paths give what a plain computation gives.

holocell has one encoder path (constant-token tables, :meth:`HoloCellNetwork.encoder_inputs`) and one
sampler (cached, with a keep mask, :func:`holocell.nn.sample`). The plain reference implementations live
here only: every token computed in full, and a sampler that re-runs the whole network every step.
"""

import numpy as np
import pytest
import torch

from holocell import HoloCellWarning
from holocell.data import simulate_multiome
from holocell.model import HoloCell
from holocell.nn import sample
from holocell.nn._diffusion import add_noise
from holocell.vocab import MODALITIES

#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up reports that few RNA features are
#: vocabulary genes (issue 20); the tests here expect that report.
SIM_GENES = r"RNA features of modality .* map to a known"


def _module_and_batch(read_in_tokens: str):
    torch.manual_seed(0)
    mdata, _ = simulate_multiome(
        30, n_genes=30, n_tfs=5, n_proteins=6, n_distal_peaks=5, peaks_per_gene=2,
        missing={"protein": ["batch1"]}, seed=0,
    )
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch")
    model = HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8, read_in_tokens=read_in_tokens)
    model.module.eval()
    with torch.no_grad():  # the peaks' input vectors start at zero: give them values the comparisons can see
        model.module.network.peak_embedding.weight.normal_(std=0.1)
    arrays = model._arrays(None)[1]
    return model.module, arrays.take(np.arange(arrays.n_cells))


@pytest.fixture(scope="module")
def module_and_batch():
    return _module_and_batch("all")


@pytest.fixture(scope="module")
def values_module_and_batch():
    return _module_and_batch("values")


# ----------------------------------------------------------------------------- plain reference implementations
def plain_token_embeddings(network, tokens):
    """``(B, G, d)``: every token computed in full, as the sum its docstring describes."""
    B, G = tokens.present.shape[0], network.config.n_anchors
    x = network.anchor_embedding().expand(B, G, -1)
    for m, slot in network.slots.items():
        exists = network.exists(m)[None, :]
        ids = slot.ids(tokens.bins[m], tokens.mask[m], exists)
        values = slot.scaled_values(tokens.values[m], tokens.mask[m], exists)
        x = x + slot.table()[ids] + values.unsqueeze(-1) * (slot.value + slot.anchor_value)
    if "atac" in network.modalities:
        K = network.config.n_buckets
        per_bucket, own = torch.zeros(B, G, K), torch.zeros(B, G, network.config.d_model)
        for p, (a, k) in enumerate(zip(network.peak_anchor.tolist(), network.peak_bucket.tolist(), strict=True)):
            per_bucket[:, a, k] += tokens.peaks[:, p]
            if network.peak_embedding is not None:  # each open peak's own vector
                own[:, a] += tokens.peaks[:, p, None] * network.peak_embedding.weight[p]
        n_open = per_bucket.sum(-1).clamp(min=1).sqrt().unsqueeze(-1)  # the vectors' sum is over sqrt(open peaks)
        pooled = torch.log1p(per_bucket) @ network.peak_position + own / n_open
        hidden = tokens.mask["atac"].unsqueeze(-1)
        x = x + torch.where(hidden, network.atac_mask, pooled) * network.exists("atac")[None, :, None]
    return x


def plain_encoder_inputs(network, tokens):
    token_emb = plain_token_embeddings(network, tokens)
    return token_emb, network.read_in.project_context(torch.cat([network.context_tokens(tokens), token_emb], dim=1))


@torch.no_grad()
def plain_sample(network, tokens, targets, keep=None, n_steps=4):
    """The sampler without a cache: the whole network, every anchor decoded, each step (low confidence, argmax)."""
    keep = keep or {}
    state = tokens.clone()
    free, values = {}, {}
    for m in targets:
        k = MODALITIES.index(m)
        state.present[:, k] = False
        state.library[:, k] = 0.0
        exists = network.exists(m)
        kept = keep.get(m, torch.zeros_like(exists)) & exists
        state.mask[m] = state.mask[m] & ~kept[None, :] | (exists & ~kept)[None, :]
        free[m] = (exists & ~kept).nonzero().squeeze(1)
        if m == "atac":
            state.peaks = torch.where(kept[network.peak_anchor][None, :], state.peaks, 0.0)
            values[m] = state.peaks.clone()
        else:
            values[m] = torch.where(kept[None, :], state.values[m], 0.0)
    for step in range(1, n_steps + 1):
        emb, kv = plain_encoder_inputs(network, state)
        out = network.decode(state, network.encode(state, context_kv=kv), emb, targets)
        for m in targets:
            idx = free[m]
            masked = state.mask[m][:, idx]
            n_commit = int(masked[0].sum()) - int(round(len(idx) * (1 - step / n_steps)))
            if n_commit <= 0:
                continue
            if m == "atac":
                p = torch.sigmoid(out["atac_logits"])
                conf = torch.maximum(p, 1 - p)
                G = network.config.n_anchors
                total = conf.new_zeros(conf.shape[0], G).index_add_(1, network.peak_anchor, conf)
                count = conf.new_zeros(G).index_add_(0, network.peak_anchor, torch.ones_like(conf[0]))
                confidence = (total / count.clamp(min=1))[:, idx]
            else:
                logits = out[f"{m}_logits"][:, idx]
                confidence = torch.softmax(logits, dim=-1).max(-1).values
            chosen = torch.zeros_like(masked)
            chosen.scatter_(1, confidence.masked_fill(~masked, -1.0).topk(n_commit, dim=1).indices, True)
            chosen &= masked
            if m == "atac":
                peaks = torch.zeros_like(state.mask[m])
                peaks[:, idx] = chosen
                peaks = peaks[:, network.peak_anchor]
                state.peaks = torch.where(peaks, (p > 0.5).float(), state.peaks)
                values[m] = torch.where(peaks, p, values[m])
            else:
                state.bins[m][:, idx] = torch.where(chosen, logits.argmax(-1), state.bins[m][:, idx])
                value = out[f"{m}_value"][:, idx]
                state.values[m][:, idx] = torch.where(chosen, value, state.values[m][:, idx])
                values[m][:, idx] = torch.where(chosen, value, values[m][:, idx])
            state.mask[m][:, idx] = masked & ~chosen
    return state, values


# ----------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("read_in", ["all", "values"])
@pytest.mark.parametrize("target", ["rna", "protein", "atac"])
def test_cached_sampler_equals_plain_reference(module_and_batch, values_module_and_batch, target, read_in):
    module, batch = module_and_batch if read_in == "all" else values_module_and_batch
    tokens = module.tokenize(batch)
    fast = sample(module.network, tokens.hide(target), [target], n_steps=4)
    state, values = plain_sample(module.network, tokens.hide(target), [target], n_steps=4)
    torch.testing.assert_close(fast.values[target], values[target], rtol=1e-4, atol=1e-5)
    if target == "atac":
        assert torch.equal(fast.tokens.peaks, state.peaks)
    else:
        exists = module.network.exists(target)
        assert torch.equal(fast.tokens.bins[target][:, exists], state.bins[target][:, exists])


def test_joint_targets_with_a_keep_mask_equal_plain_reference(module_and_batch):
    """Perturbation's use: RNA and protein regenerated together, some anchors clamped to their values."""
    module, batch = module_and_batch
    network = module.network
    tokens = module.tokenize(batch)
    keep = {"rna": torch.zeros_like(network.exists("rna"))}
    keep["rna"][network.exists("rna").nonzero().squeeze(1)[:3]] = True
    fast = sample(network, tokens, ["rna", "protein"], keep, n_steps=3)
    state, values = plain_sample(network, tokens, ["rna", "protein"], keep, n_steps=3)
    for m in ("rna", "protein"):
        exists = network.exists(m)
        assert torch.equal(fast.tokens.bins[m][:, exists], state.bins[m][:, exists])
        torch.testing.assert_close(fast.values[m], values[m], rtol=1e-4, atol=1e-5)
        assert not fast.tokens.mask[m][:, exists].any()  # every slot committed (or kept)
    # the kept anchors stay exactly as given, and the caller's tokens are untouched
    kept = keep["rna"]
    assert torch.equal(fast.values["rna"][:, kept], tokens.values["rna"][:, kept])
    assert torch.equal(fast.tokens.bins["rna"][:, kept], tokens.bins["rna"][:, kept])
    assert torch.equal(module.tokenize(batch).bins["rna"], tokens.bins["rna"])


# ----------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("n_cells", [30, 5])  # 5 < the number of constant states: every token in full
@pytest.mark.parametrize("keep", [None, ["rna"], ["atac"], ["protein", "atac"]])
def test_constant_token_tables_equal_plain_embedding(module_and_batch, keep, n_cells):
    module, batch = module_and_batch
    batch = {k: v[:n_cells] for k, v in batch.items()}
    tokens = module.restrict(module.tokenize(batch), keep)
    network = module.network
    with torch.no_grad():
        emb, kv = network.encoder_inputs(tokens)
        plain_emb, plain_kv = plain_encoder_inputs(network, tokens)
        no_emb, kv_only = network.encoder_inputs(tokens, with_embeddings=False)
    torch.testing.assert_close(emb, plain_emb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kv, plain_kv, rtol=1e-5, atol=1e-6)
    assert no_emb is None
    torch.testing.assert_close(kv_only, kv)


def test_constant_token_tables_give_the_plain_gradients(module_and_batch):
    """Training uses the tables too: on noised tokens (random [MASK]s) loss and gradients match."""
    module, batch = module_and_batch
    network = module.network
    assert batch["present"].shape[0] >= 18  # enough cells for the table path (3 x 3 x 2 states)
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
    loss_plain, g_plain = grads(lambda t: plain_encoder_inputs(network, t))
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
        cells = torch.arange(B).repeat_interleave(per_cell.shape[1])
        sub = network.embed_at(tokens, cells, per_cell.reshape(-1)).view(B, per_cell.shape[1], -1)
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
