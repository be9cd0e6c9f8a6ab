"""Property-based tests (hypothesis) of value binning, the tokenizer and the mosaic plumbing.

Random sparse count matrices with empty rows and heavy tails, random missing-modality patterns:
nothing crashes, absent slots are masked (never zero-filled), and values round-trip within the
resolution of the bins (exactly, for the continuous channel).
"""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from holocell.data._mosaic import collect_arrays
from holocell.tokenize import Tokenizer
from holocell.tokenize._values import clr, log_normalized, quantile_bins
from holocell.vocab import MODALITIES

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNT = st.one_of(st.integers(0, 3), st.integers(0, 1_000_000))  # small counts and heavy tails


@st.composite
def count_matrices(draw, max_cells: int = 12, max_features: int = 15) -> np.ndarray:
    """Sparse-ish non-negative integer matrices, some rows forced empty."""
    n_cells = draw(st.integers(1, max_cells))
    n_features = draw(st.integers(1, max_features))
    values = draw(hnp.arrays(np.int64, (n_cells, n_features), elements=COUNT))
    keep = draw(hnp.arrays(np.bool_, (n_cells, n_features), elements=st.booleans()))
    x = values * keep
    empty = draw(st.lists(st.integers(0, n_cells - 1), max_size=n_cells))
    x[empty] = 0
    return x.astype(np.float32)


def _rank_fraction(row: np.ndarray) -> np.ndarray:
    """Rank of each non-zero value among the row's non-zero values (ties: lowest), / their number."""
    nz = np.sort(row[row > 0])
    return np.searchsorted(nz, row, side="left") / max(len(nz), 1)


@SETTINGS
@given(x=count_matrices(), n_bins=st.integers(2, 32))
def test_quantile_bins_round_trip_within_resolution(x, n_bins):
    bins = quantile_bins(torch.from_numpy(x), n_bins).numpy()
    assert bins.shape == x.shape
    assert ((bins == 0) == (x == 0)).all()  # bin 0 is exactly zero
    assert bins.min() >= 0 and bins.max() <= max(n_bins - 1, 0)
    for row, b in zip(x, bins, strict=True):
        nz = row > 0
        if not nz.any():
            continue
        # a bin decodes to a rank interval of width 1 / (n_bins - 1): the value's rank lies in it
        frac = _rank_fraction(row)[nz]
        lo, hi = (b[nz] - 1) / (n_bins - 1), b[nz] / (n_bins - 1)
        assert ((frac >= lo - 1e-6) & (frac < hi + 1e-6)).all()
        # monotone: a larger count never gets a smaller bin; equal counts share a bin
        order = np.argsort(row[nz], kind="stable")
        assert (np.diff(b[nz][order]) >= 0).all()
        for v in np.unique(row[nz]):
            assert len(np.unique(b[row == v])) == 1


@SETTINGS
@given(x=count_matrices())
def test_continuous_channel_inverts_to_counts(x):
    t = torch.from_numpy(x).double()
    lib = t.sum(1, keepdim=True).clamp(min=1.0)
    back = torch.expm1(log_normalized(t)) * lib / 1e4
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-6, atol=1e-6)
    logged = torch.log1p(t)
    back = torch.expm1(clr(t) + logged.mean(1, keepdim=True))
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-6, atol=1e-4)


@st.composite
def tokenizer_inputs(draw):
    """A random feature -> anchor layout, counts for every modality and a random presence pattern."""
    n_cells = draw(st.integers(1, 10))
    mods = draw(st.lists(st.sampled_from(MODALITIES), min_size=1, max_size=3, unique=True))
    n_feat = {m: draw(st.integers(1, 8)) for m in mods}
    n_anchors = max(n_feat.get("rna", 0), n_feat.get("protein", 0), 1) + draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    feature_anchor = {}
    for m in mods:
        if m == "atac":  # several peaks may share an anchor
            feature_anchor[m] = rng.integers(0, n_anchors, n_feat[m])
        else:  # one feature per anchor slot
            feature_anchor[m] = rng.permutation(n_anchors)[: n_feat[m]]
    counts = {}
    for m in mods:
        x = draw(hnp.arrays(np.int64, (n_cells, n_feat[m]), elements=COUNT))
        counts[m] = x.astype(np.float32) * (rng.random(x.shape) < 0.6)
    present = draw(hnp.arrays(np.bool_, (n_cells, len(MODALITIES)), elements=st.booleans()))
    n_bins = draw(st.integers(2, 16))
    return n_anchors, feature_anchor, counts, present, n_bins


@SETTINGS
@given(inputs=tokenizer_inputs())
def test_tokenizer_never_crashes_and_masks_absent_slots(inputs):
    n_anchors, feature_anchor, counts, present, n_bins = inputs
    tok = Tokenizer(n_anchors, feature_anchor, n_bins)
    n = present.shape[0]
    out = tok(
        {m: torch.from_numpy(x) for m, x in counts.items()},
        torch.from_numpy(present),
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),
    )
    for m, x in counts.items():
        k = MODALITIES.index(m)
        is_present = present[:, k]
        exists = tok.exists(m).numpy()
        mask = out.mask[m].numpy()
        assert (mask[:, exists] == ~is_present[:, None]).all()  # absent modality -> masked slot
        assert not mask[:, ~exists].any()
        lib = out.library[:, k].numpy()
        assert (lib[~is_present] == 0).all()
        np.testing.assert_allclose(lib[is_present], np.log1p(x[is_present].astype(np.float64).sum(1)), rtol=1e-5)
        if m == "atac":
            peaks = out.peaks.numpy()
            assert ((peaks == 1) == ((x > 0) & is_present[:, None])).all()
            continue
        bins = tok.from_slots(m, out.bins[m]).numpy()
        assert ((bins == 0) == (x == 0)).all()
        assert bins.max(initial=0) <= n_bins - 1
        assert torch.isfinite(out.values[m]).all()
        # the slots hold the feature values and nothing else
        np.testing.assert_array_equal(tok.from_slots(m, tok.to_slots(m, torch.from_numpy(x))).numpy(), x)
        assert (out.bins[m].numpy()[:, ~exists] == 0).all()


@st.composite
def mosaic_mudata(draw):
    """A MuData with RNA and protein, each measured in a random subset of cells (maybe all, maybe one)."""
    n_cells = draw(st.integers(2, 12))
    names = np.array([f"c{i}" for i in range(n_cells)])
    mods, dense = {}, {}
    for m, n_feat in (("rna", draw(st.integers(1, 8))), ("protein", draw(st.integers(1, 5)))):
        which = draw(hnp.arrays(np.bool_, n_cells, elements=st.booleans()).filter(lambda a: a.any()))
        x = draw(hnp.arrays(np.int64, (int(which.sum()), n_feat), elements=COUNT)).astype(np.float32)
        x[x > 5_000] = 0  # sparser
        var = pd.DataFrame(index=[f"{m}{j}" for j in range(n_feat)])
        mods[m] = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=names[which]), var=var)
        dense[m] = (which, x)
    return md.MuData(mods), dense, names


@SETTINGS
@given(data=mosaic_mudata())
def test_mosaic_arrays_align_cells_for_any_missing_pattern(data):
    mdata, dense, names = data
    mods = {"rna": "rna", "protein": "protein"}
    features = {m: mdata.mod[m].var_names.to_numpy() for m in mods}
    arrays = collect_arrays(mdata, mods, {}, features, np.zeros(mdata.n_obs, dtype=np.int64), 0)
    order = mdata.obs_names
    for m, (which, x) in dense.items():
        present = arrays.present[:, MODALITIES.index(m)]
        expected_present = pd.Series(which, index=names).reindex(order).to_numpy()
        np.testing.assert_array_equal(present, expected_present)
        got = arrays.counts[m].toarray()
        by_name = pd.DataFrame(x, index=names[which]).reindex(order[present]).to_numpy()
        np.testing.assert_array_equal(got[present], by_name)
        assert (got[~present] == 0).all()  # placeholder rows, flagged absent
