"""Integration metrics on tiny, hand-checkable embeddings."""

import numpy as np
import pytest

from holocell.evaluation import graph_connectivity, ilisi, integration_metrics, lisi


def _blobs(centers, n_per, scale=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([c + scale * rng.standard_normal((n_per, len(c))) for c in np.asarray(centers, float)])


def test_lisi_uniform_kernel_is_inverse_simpson():
    # 4 cells at the same point: every cell's 3 other neighbours are at distance 0, so the kernel is
    # uniform (the cell itself is one of its 4 neighbours and gets no weight, as in scib-metrics).
    emb = np.zeros((4, 2))
    groups = ["a", "a", "b", "b"]
    # cell 0 sees {a, b, b}: p = (1/3, 2/3) -> 1 / (1/9 + 4/9) = 1.8
    np.testing.assert_allclose(lisi(emb, groups, n_neighbors=4, perplexity=3), 1.8, rtol=1e-6)


def test_ilisi_separated_batches_is_zero_and_mixed_is_near_one():
    emb = _blobs([[0, 0], [100, 100]], 50)
    separated = np.repeat(["b1", "b2"], 50)
    assert ilisi(emb, separated, n_neighbors=21, perplexity=5) == pytest.approx(0.0, abs=1e-6)
    # every cell has a twin of the other batch at the same point: neighbourhoods are ~50/50
    twins = np.vstack([emb, emb])
    mixed = np.repeat(["b1", "b2"], 100)
    assert ilisi(twins, mixed, n_neighbors=21, perplexity=20) > 0.95


def test_ilisi_needs_two_batches():
    with pytest.raises(ValueError, match="two batches"):
        ilisi(np.zeros((5, 2)), ["a"] * 5)


def test_graph_connectivity_connected_and_split_label():
    # label x: one tight blob; label y: two far-apart blobs of 10 cells each (5 neighbours cannot bridge them)
    emb = _blobs([[0, 0], [50, 0], [-50, 0]], 10)
    labels = np.array(["x"] * 10 + ["y"] * 20)
    assert graph_connectivity(emb, labels, n_neighbors=6) == pytest.approx((1.0 + 0.5) / 2)
    assert graph_connectivity(emb[:10], labels[:10], n_neighbors=6) == pytest.approx(1.0)


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


def test_uniform_kernel_quantises_ilisi_and_the_perplexity_kernel_does_not():
    """The cause of chromatin.py's quantised iLISI (0.768 for three methods): a uniform kernel over k
    neighbours makes every cell's LISI one of a few values ``k^2 / sum_b n_b^2``, so the medians of two
    different embeddings land on the same value; the perplexity kernel gives graded values."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    batch = np.repeat([f"b{i}" for i in range(9)], 40)
    codes = np.unique(batch, return_inverse=True)[1]
    a = rng.normal(size=(360, 10))
    b = a + 0.05 * rng.normal(size=a.shape)  # a slightly different embedding

    def uniform_lisi(emb, k=30):
        idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)[:, 1:]
        props = np.stack([(codes[idx] == c).mean(axis=1) for c in range(9)], axis=1)
        return 1.0 / (props**2).sum(axis=1)

    assert len(np.unique(np.round(uniform_lisi(a), 9))) < 60  # few distinct per-cell values for 360 cells
    assert np.median(uniform_lisi(a)) == pytest.approx(np.median(uniform_lisi(b)))  # the two tie
    assert len(np.unique(np.round(lisi(a, batch), 9))) == 360  # graded
    assert ilisi(a, batch) != pytest.approx(ilisi(b, batch), abs=1e-6)
