"""Tests for value binning and the mosaic-aware tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holocell.tokenize import Tokenizer, Tokens, clr, log_library, log_normalized, quantile_bins
from holocell.vocab import MODALITIES

N_BINS = 8


# ----------------------------------------------------------------------------- quantile_bins
def test_zeros_are_bin_zero_and_nonzero_in_range():
    x = torch.tensor([[0.0, 1.0, 5.0, 0.0, 2.0, 100.0], [3.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    b = quantile_bins(x, N_BINS)
    assert b.dtype == torch.long
    assert b.shape == x.shape
    assert torch.equal(b == 0, x == 0)
    nz = b[x > 0]
    assert nz.min() >= 1 and nz.max() <= N_BINS - 1


def test_bins_monotone_within_cell_and_ties_share_a_bin():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (20, 50), generator=gen).float()
    b = quantile_bins(x, N_BINS)
    for row, brow in zip(x, b, strict=True):
        order = torch.argsort(row)
        assert torch.all(brow[order][1:] >= brow[order][:-1]), "bins not monotone in value"
        for v in row.unique():
            assert brow[row == v].unique().numel() == 1, "tied values in different bins"


def test_bins_use_the_full_range_for_distinct_values():
    x = torch.arange(1, 101, dtype=torch.float32)[None, :]
    b = quantile_bins(x, N_BINS)
    assert b[0, 0] == 1
    assert b[0, -1] == N_BINS - 1
    assert set(b[0].tolist()) == set(range(1, N_BINS))


def test_bins_depend_on_rank_not_scale():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(quantile_bins(x, N_BINS), quantile_bins(x * 1000, N_BINS))


def test_all_zero_and_single_value_rows():
    x = torch.zeros(3, 10)
    x[1, 4] = 7.0  # one non-zero
    x[2] = 2.0  # all equal, no zeros
    b = quantile_bins(x, N_BINS)
    assert torch.all(b[0] == 0)
    assert b[1, 4] == 1 and (b[1].sum() == 1)
    assert torch.all(b[2] == 1)


def test_two_bins_and_empty_batch():
    x = torch.tensor([[0.0, 1.0, 9.0]])
    assert quantile_bins(x, 2).tolist() == [[0, 1, 1]]
    assert quantile_bins(torch.zeros(0, 5), N_BINS).shape == (0, 5)


def test_continuous_encodings():
    x = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    lib = log_library(x)
    assert torch.allclose(lib, torch.log1p(torch.tensor([4.0, 0.0])))
    ln = log_normalized(x)
    assert torch.allclose(ln[0], torch.log1p(x[0] / 4 * 1e4))
    assert torch.all(ln[1] == 0)
    c = clr(x)
    assert torch.allclose(c.mean(1), torch.zeros(2), atol=1e-6)


# ----------------------------------------------------------------------------- Tokenizer
def _tokenizer(n_anchors=6):
    # rna on anchors 0..3, protein on anchors 1 and 4 (anchor 5 has no slot at all), atac peaks on 0, 0, 2, 5
    feature_anchor = {
        "rna": np.array([0, 1, 2, 3]),
        "protein": np.array([4, 1]),
        "atac": np.array([0, 0, 2, 5]),
    }
    return Tokenizer(n_anchors, feature_anchor, N_BINS), feature_anchor


def _batch(present):
    present = torch.as_tensor(present, dtype=torch.bool)
    B = present.shape[0]
    gen = torch.Generator().manual_seed(1)
    counts = {
        "rna": torch.randint(0, 5, (B, 4), generator=gen).float(),
        "protein": torch.randint(1, 50, (B, 2), generator=gen).float(),
        "atac": torch.randint(0, 3, (B, 4), generator=gen).float(),
    }
    return counts, present, torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)


def test_absent_modality_is_masked_not_zero_data():
    tok, fa = _tokenizer()
    # cell 0 has everything, cell 1 lacks protein, cell 2 lacks rna and atac
    counts, present, batch, species = _batch([[1, 1, 1], [1, 1, 0], [0, 0, 1]])
    t = tok(counts, present, batch, species)
    p_exists = torch.zeros(6, dtype=torch.bool)
    p_exists[fa["protein"]] = True
    assert torch.equal(t.mask["protein"][1], p_exists)  # every existing protein slot masked
    assert not t.mask["protein"][0].any() and not t.mask["protein"][2].any()
    r_exists = torch.zeros(6, dtype=torch.bool)
    r_exists[fa["rna"]] = True
    assert torch.equal(t.mask["rna"][2], r_exists)
    a_exists = torch.zeros(6, dtype=torch.bool)
    a_exists[fa["atac"]] = True
    assert torch.equal(t.mask["atac"][2], a_exists)
    assert not t.mask["atac"][:2].any()
    # no slot is masked where the anchor has no slot for the modality
    for m in ("rna", "protein", "atac"):
        assert not (t.mask[m] & ~tok.exists(m)[None, :]).any()
    # absent peaks carry no accessibility, library sizes are 0 where absent
    assert torch.all(t.peaks[2] == 0)
    assert torch.equal(t.present, present)
    assert torch.all(t.library[~present] == 0)
    assert torch.all(t.library[present] > 0)


def test_library_and_values_of_present_cells():
    tok, _ = _tokenizer()
    counts, present, batch, species = _batch([[1, 1, 1], [1, 1, 0]])
    t = tok(counts, present, batch, species)
    assert torch.allclose(t.library[:, MODALITIES.index("rna")], torch.log1p(counts["rna"].sum(1)))
    assert torch.allclose(tok.from_slots("rna", t.values["rna"]), log_normalized(counts["rna"]))
    assert torch.equal(tok.from_slots("protein", t.bins["protein"]), quantile_bins(counts["protein"], N_BINS))
    assert torch.equal(t.peaks[0], (counts["atac"][0] > 0).float())
    assert t.batch.dtype == torch.long and t.species.dtype == torch.long


def test_slot_round_trip_and_zero_where_no_slot():
    tok, _ = _tokenizer()
    x = torch.randn(5, 2)
    slots = tok.to_slots("protein", x)
    assert slots.shape == (5, 6)
    assert torch.equal(tok.from_slots("protein", slots), x)
    no_slot = ~tok.exists("protein")
    assert torch.all(slots[:, no_slot] == 0)
    y = torch.randn(5, 4)
    assert torch.equal(tok.from_slots("rna", tok.to_slots("rna", y)), y)


def test_hide_does_not_mutate_original():
    tok, _ = _tokenizer()
    t = tok(*_batch([[1, 1, 1], [1, 0, 1]]))
    before = t.clone()
    h = t.hide("rna")
    k = MODALITIES.index("rna")
    assert torch.equal(h.mask["rna"], torch.ones_like(t.mask["rna"]))
    assert not h.present[:, k].any() and torch.all(h.library[:, k] == 0)
    # original untouched
    for m in t.mask:
        assert torch.equal(t.mask[m], before.mask[m])
    assert torch.equal(t.present, before.present)
    assert torch.equal(t.library, before.library)
    assert t.present[:, k].all()
    # other modalities of the copy are unchanged
    assert torch.equal(h.mask["protein"], t.mask["protein"])


def test_clone_is_deep():
    tok, _ = _tokenizer()
    t = tok(*_batch([[1, 1, 1]]))
    c = t.clone()
    c.bins["rna"][:] = 3
    c.mask["rna"][:] = True
    c.peaks[:] = 7
    assert not torch.equal(t.bins["rna"], c.bins["rna"])
    assert not t.mask["rna"].all()
    assert not torch.all(t.peaks == 7)


# ----------------------------------------------------------------------------- property test
@st.composite
def _mosaic(draw):
    n_cells = draw(st.integers(1, 8))
    n_anchors = draw(st.integers(1, 10))
    n_genes = draw(st.integers(1, n_anchors))
    n_prot = draw(st.integers(1, n_anchors))
    n_peaks = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    feature_anchor = {
        "rna": rng.permutation(n_anchors)[:n_genes],
        "protein": rng.permutation(n_anchors)[:n_prot],
        "atac": rng.integers(0, n_anchors, n_peaks),
    }
    density = draw(st.floats(0.0, 1.0))
    counts = {}
    for m, fa in feature_anchor.items():
        dense = rng.negative_binomial(1, 0.2, size=(n_cells, len(fa))).astype(np.float32)
        dense *= rng.random(dense.shape) < density
        counts[m] = torch.from_numpy(dense)
    present = torch.from_numpy(rng.random((n_cells, 3)) < 0.6)
    n_bins = draw(st.integers(2, 20))
    return n_anchors, feature_anchor, n_bins, counts, present


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mosaic())
def test_tokenizer_property(case):
    n_anchors, feature_anchor, n_bins, counts, present = case
    tok = Tokenizer(n_anchors, feature_anchor, n_bins)
    B = present.shape[0]
    t = tok(counts, present, torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long))
    assert isinstance(t, Tokens)
    for m in ("rna", "protein"):
        k = MODALITIES.index(m)
        x = counts[m]
        assert t.bins[m].shape == (B, n_anchors)
        assert t.bins[m].min() >= 0 and t.bins[m].max() <= n_bins - 1
        feat_bins = tok.from_slots(m, t.bins[m])
        assert torch.equal(feat_bins == 0, x == 0)
        # continuous values round-trip for present cells
        expected = log_normalized(x) if m == "rna" else clr(x)
        got = tok.from_slots(m, t.values[m])
        p = present[:, k]
        assert torch.allclose(got[p], expected[p])
        assert torch.isfinite(t.values[m]).all()
        # absent cells: exactly the existing slots are masked
        exists = tok.exists(m)
        assert torch.equal(t.mask[m], (~p)[:, None] & exists[None, :])
    ka = MODALITIES.index("atac")
    assert t.peaks.shape == counts["atac"].shape
    assert torch.equal(t.peaks[present[:, ka]], (counts["atac"][present[:, ka]] > 0).float())
    assert torch.all(t.peaks[~present[:, ka]] == 0)
    assert torch.all(t.library[~present] == 0)
    assert torch.isfinite(t.library).all()


@pytest.mark.parametrize("n_bins", [2, 3, 16])
def test_bins_never_exceed_range_for_heavy_ties(n_bins):
    x = torch.tensor([[0.0] * 5 + [1.0] * 50 + [2.0]])
    b = quantile_bins(x, n_bins)
    assert b.max() <= n_bins - 1
    assert b[0, -1] >= b[0, 5]
