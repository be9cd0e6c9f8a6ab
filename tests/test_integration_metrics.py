"""Integration metrics on tiny, hand-checkable embeddings."""

import numpy as np
import pytest

from holocell.evaluation import graph_connectivity, ilisi, integration_metrics, lisi


def _blobs(centers, n_per, scale=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([c + scale * rng.standard_normal((n_per, len(c))) for c in np.asarray(centers, float)])


def test_lisi_uniform_kernel_is_inverse_simpson():
    # 4 cells at the same point: every cell's 3 neighbours are at distance 0, so the kernel is uniform.
    emb = np.zeros((4, 2))
    groups = ["a", "a", "b", "b"]
    # cell 0 sees {a, b, b}: p = (1/3, 2/3) -> 1 / (1/9 + 4/9) = 1.8
    np.testing.assert_allclose(lisi(emb, groups, k=3, perplexity=3), 1.8, rtol=1e-6)


def test_ilisi_separated_batches_is_zero_and_mixed_is_near_one():
    emb = _blobs([[0, 0], [100, 100]], 50)
    separated = np.repeat(["b1", "b2"], 50)
    assert ilisi(emb, separated, k=20, perplexity=5) == pytest.approx(0.0, abs=1e-6)
    # every cell has a twin of the other batch at the same point: neighbourhoods are ~50/50
    twins = np.vstack([emb, emb])
    mixed = np.repeat(["b1", "b2"], 100)
    assert ilisi(twins, mixed, k=20, perplexity=20) > 0.95


def test_ilisi_needs_two_batches():
    with pytest.raises(ValueError, match="two batches"):
        ilisi(np.zeros((5, 2)), ["a"] * 5)


def test_graph_connectivity_connected_and_split_label():
    # label x: one tight blob; label y: two far-apart blobs of 10 cells each (k=5 cannot bridge them)
    emb = _blobs([[0, 0], [50, 0], [-50, 0]], 10)
    labels = np.array(["x"] * 10 + ["y"] * 20)
    assert graph_connectivity(emb, labels, k=5) == pytest.approx((1.0 + 0.5) / 2)
    assert graph_connectivity(emb[:10], labels[:10], k=5) == pytest.approx(1.0)


def test_integration_metrics_keys_and_transfer():
    emb = _blobs([[0, 0], [10, 0]], 30, scale=0.5)
    labels = np.repeat(["t0", "t1"], 30)
    batch = np.tile(["b1", "b2"], 30)
    ref, query = batch == "b1", batch == "b2"
    out = integration_metrics(emb, labels, batch, transfer={"b1_to_b2": (ref, query)})
    assert out["nmi"] == pytest.approx(1.0) and out["ari"] == pytest.approx(1.0)
    assert out["transfer_b1_to_b2"] == pytest.approx(1.0)
    assert out["graph_connectivity"] == pytest.approx(1.0)
    assert out["asw_label"] > 0.9 and out["ilisi"] > 0.8
    assert set(out) == {
        "nmi", "ari", "asw_label", "asw_batch", "ilisi", "graph_connectivity", "transfer_b1_to_b2"
    }


def test_lisi_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="groups has 3"):
        lisi(np.zeros((4, 2)), ["a", "b", "a"])
