"""Integration metrics on tiny, hand-checkable embeddings."""

import numpy as np
import pandas as pd
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


def _noisy(seed=7, n=120):
    rng = np.random.default_rng(seed)
    labels = np.array(["t0", "t1", "t2"])[rng.integers(0, 3, size=n)]
    batch = np.array(["b0", "b1"])[rng.integers(0, 2, size=n)]
    centers = {"t0": [0, 0, 0, 0], "t1": [2, 0, 1, 0], "t2": [0, 2, 0, 1]}
    emb = np.array([centers[t] for t in labels], float) + rng.normal(size=(n, 4)) + 0.5 * (batch == "b1")[:, None]
    return emb, labels, batch


def test_valid_input_scores_are_unchanged_by_the_input_checks():
    """Regression guard for benchmarks/results/: these numbers were computed with the code *before* the
    input checks (missing labels, lengths, neighbours) were added; valid input must score the same."""
    from holocell.evaluation import knn_label_transfer, knn_label_transfer_accuracy

    emb, labels, batch = _noisy()
    ref = batch == "b0"
    expected = {
        "nmi": 0.5068264868600212, "ari": 0.5824004891250596, "asw_label": 0.5862867361044117,
        "asw_batch": 0.8753448949316635, "ilisi": 0.8482983345283848, "graph_connectivity": 0.9633418584825234,
        "transfer_b0_to_b1": 0.7230769230769231,
    }
    for lab in (labels, labels.astype(object), np.unique(labels, return_inverse=True)[1]):
        out = integration_metrics(emb, lab, batch, transfer={"b0_to_b1": (ref, ~ref)})
        assert list(out) == list(expected)
        assert out == pytest.approx(expected, rel=1e-7, abs=1e-9)
    one_batch = integration_metrics(emb, labels, np.repeat("b0", 120))
    assert np.isnan(one_batch["asw_batch"]) and np.isnan(one_batch["ilisi"])
    assert one_batch["nmi"] == pytest.approx(expected["nmi"], rel=1e-7)
    np.testing.assert_allclose(lisi(emb, batch, n_neighbors=30)[:3], [1.9823298, 1.90680183, 1.87255622], rtol=1e-6)
    pred = knn_label_transfer(emb[ref], labels[ref], emb[~ref], k=5)
    assert pred[:10].tolist() == ["t0", "t2", "t1", "t2", "t2", "t1", "t2", "t2", "t2", "t1"]
    acc = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[~ref], labels[~ref], k=5)
    assert acc == pytest.approx(0.6923076923076923, rel=1e-9)


def test_one_cell_type_gives_nan_label_metrics_like_one_batch_gives_nan_batch_metrics():
    emb, _, batch = _noisy()
    out = integration_metrics(emb, ["t0"] * 120, batch)
    assert np.isnan(out["nmi"]) and np.isnan(out["ari"]) and np.isnan(out["asw_label"])
    assert np.isfinite(out["asw_batch"]) and np.isfinite(out["ilisi"]) and np.isfinite(out["graph_connectivity"])


def test_integration_metrics_refuses_invalid_input():
    emb, labels, batch = _noisy()
    with pytest.raises(ValueError, match="labels has 10 missing values .*drop those cells"):
        integration_metrics(emb, pd.Categorical(np.where(np.arange(120) < 10, None, labels)), batch)
    with pytest.raises(ValueError, match="batch has 1 missing values"):
        integration_metrics(emb, labels, [None, *batch[1:]])
    bad = emb.copy()
    bad[5, 0] = np.inf
    with pytest.raises(ValueError, match="embedding has 1 non-finite values"):
        integration_metrics(bad, labels, batch)
    with pytest.raises(ValueError, match="embedding has 120 cells but batch has 119"):
        integration_metrics(emb, labels, batch[1:])
    with pytest.raises(ValueError, match="transfer 't': the reference mask selects no cells"):
        integration_metrics(emb, labels, batch, transfer={"t": (np.zeros(120, bool), np.ones(120, bool))})
    with pytest.raises(ValueError, match="transfer 't': the query mask has shape \\(100,\\)"):
        integration_metrics(emb, labels, batch, transfer={"t": (np.ones(120, bool), np.ones(100, bool))})
    with pytest.raises(ValueError, match="fewer distinct labels than cells, got 2 labels for 2 cells"):
        integration_metrics(emb[:2], ["a", "b"], ["x", "y"])


def test_lisi_refuses_too_few_neighbours_for_the_perplexity():
    emb, labels, batch = _noisy()
    with pytest.raises(ValueError, match="n_neighbors must be at least 2 .* got 1"):
        lisi(emb, batch, n_neighbors=1)
    with pytest.raises(ValueError, match="needs at least 6 neighbours, but min\\(n_neighbors=2, 120 cells\\) = 2"):
        lisi(emb, batch, n_neighbors=2)
    with pytest.raises(ValueError, match="at least 6 neighbours, but min\\(n_neighbors=90, 5 cells\\) = 5"):
        ilisi(emb[:5], ["x", "y", "x", "y", "x"])
    with pytest.raises(ValueError, match="perplexity must be above 1 and at most the 9 other neighbours"):
        lisi(emb, batch, n_neighbors=10, perplexity=12)
    with pytest.raises(ValueError, match="groups has 1 missing values"):
        lisi(emb, [np.nan, *batch[1:]])
    with pytest.raises(ValueError, match="n_neighbors must be at least 2 .* got 0"):
        graph_connectivity(emb, labels, n_neighbors=0)
    assert 0 < ilisi(emb[:6], ["x", "y", "x", "y", "x", "y"]) <= 1  # 6 cells: perplexity 2 is the smallest allowed
