"""Known-answer tests for holocell.evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from holocell.evaluation import (
    auroc_scores,
    clr,
    format_table,
    knn_label_transfer,
    knn_label_transfer_accuracy,
    log_normalize,
    mean_predict,
    nmi_ari,
    pca_knn_predict,
    pca_ridge_predict,
    per_feature_auroc,
    per_feature_pearson,
    prediction_scores,
    rmse,
    silhouette_batch,
    silhouette_label,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _clusters(
    rng: np.random.Generator, n_per: int = 50, n_clusters: int = 3, dim: int = 5, sep: float = 20.0
):
    centers = rng.normal(size=(n_clusters, dim)) * sep
    labels = np.repeat(np.arange(n_clusters), n_per)
    emb = centers[labels] + rng.normal(size=(len(labels), dim))
    return emb, labels


def _low_rank_pairs(rng: np.random.Generator, n_cells: int = 600, n_genes: int = 200, n_prot: int = 20):
    """Counts (source) and CLR targets (target) that share a 3-d latent state."""
    z = rng.normal(size=(n_cells, 3))
    gene_load = rng.normal(size=(3, n_genes))
    prot_load = rng.normal(size=(3, n_prot))
    x = rng.poisson(np.exp(0.8 * z @ gene_load * 0.5 + 1.0))
    y = z @ prot_load + 0.3 * rng.normal(size=(n_cells, n_prot))
    return sp.csr_matrix(x.astype(np.float32)), y


def test_pearson_known_answers(rng):
    a = rng.normal(size=(100, 1))
    y_true = np.hstack([a, a, np.ones((100, 1)), a])
    y_pred = np.hstack([2 * a + 3, -a, a, np.zeros((100, 1))])
    r = per_feature_pearson(y_true, y_pred)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(-1.0)
    assert np.isnan(r[2])  # constant in truth
    assert np.isnan(r[3])  # constant in prediction


def test_pearson_matches_numpy_and_sparse(rng):
    y_true, y_pred = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    expected = [np.corrcoef(y_true[:, j], y_pred[:, j])[0, 1] for j in range(4)]
    np.testing.assert_allclose(per_feature_pearson(sp.csr_matrix(y_true), y_pred), expected, rtol=1e-10)


def test_auroc_known_answers(rng):
    truth = np.zeros((100, 3))
    truth[:30, :] = 1
    scores = np.column_stack([truth[:, 0] + 0.1 * rng.random(100), -truth[:, 1], rng.random(100)])
    auc = per_feature_auroc(truth, scores)
    assert auc[0] == pytest.approx(1.0)
    assert auc[1] == pytest.approx(0.0)
    assert 0.3 < auc[2] < 0.7
    rare = np.zeros((1000, 1))
    rare[0] = 1
    assert np.isnan(per_feature_auroc(rare, rng.random((1000, 1)))[0])


def test_auroc_matches_sklearn(rng):
    from sklearn.metrics import roc_auc_score

    truth = rng.random((200, 3)) < 0.3
    scores = rng.integers(0, 5, size=(200, 3)).astype(float)  # many ties
    expected = [roc_auc_score(truth[:, j], scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(per_feature_auroc(truth, scores), expected)


def test_prediction_scores_match_scipy_and_count_constant_predictions_as_zero(rng):
    from scipy.stats import pearsonr

    truth = rng.normal(size=(80, 5))
    truth[:, 4] = 1.0  # a feature that does not vary in the truth is not scored
    pred = truth + rng.normal(size=truth.shape)
    pred[:, 3] = 0.5  # a constant prediction of a varying feature scores r = 0
    r = [pearsonr(truth[:, j], pred[:, j])[0] for j in range(3)] + [0.0]
    out = prediction_scores(truth, pred)
    assert out["pearson_mean"] == pytest.approx(np.mean(r))
    assert out["pearson_median"] == pytest.approx(np.median(r))
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((truth - pred) ** 2)))


def test_auroc_scores_summarise_scored_features(rng):
    from sklearn.metrics import roc_auc_score

    truth = rng.random((300, 4)) < 0.3
    truth[:, 3] = False  # no positives: not scored
    scores = truth + rng.normal(size=truth.shape)
    out = auroc_scores(truth, scores)
    expected = [roc_auc_score(truth[:, j], scores[:, j]) for j in range(3)]
    assert out["features_scored"] == 3
    assert out["auroc_mean"] == pytest.approx(np.mean(expected))
    assert out["auroc_median"] == pytest.approx(np.median(expected))


def test_rmse():
    assert rmse(np.zeros((2, 2)), np.full((2, 2), 3.0)) == pytest.approx(3.0)


def test_clr_rows_sum_to_zero(rng):
    counts = rng.poisson(5, size=(20, 10)).astype(float)
    for x in (counts, sp.csr_matrix(counts)):
        out = clr(x)
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out.sum(axis=1), 0.0, atol=1e-10)
        np.testing.assert_allclose(out, np.log1p(counts) - np.log1p(counts).mean(1, keepdims=True))


def test_log_normalize(rng):
    counts = rng.poisson(5, size=(20, 10)).astype(float)
    counts[0] = 0
    out = log_normalize(sp.csr_matrix(counts), target_sum=100)
    np.testing.assert_allclose(np.expm1(out[1:]).sum(axis=1), 100.0)
    assert np.all(out[0] == 0)


def test_knn_baseline_beats_mean(rng):
    x, y = _low_rank_pairs(rng)
    train, query = np.arange(400), np.arange(400, 600)
    y_query = y[query]

    def score(pred: np.ndarray) -> float:
        return float(np.nan_to_num(per_feature_pearson(y_query, pred)).mean())

    knn = pca_knn_predict(x[train], y[train], x[query], n_pcs=10, k=15, seed=0)
    ridge = pca_ridge_predict(x[train], y[train], x[query], n_pcs=10)
    mean = mean_predict(y[train], len(query))
    assert knn.shape == ridge.shape == mean.shape == y_query.shape
    assert score(mean) == 0.0
    assert score(knn) > 0.8
    assert score(ridge) > 0.8
    assert rmse(y_query, knn) < rmse(y_query, mean)
    # deterministic by seed, dense == sparse input
    np.testing.assert_allclose(knn, pca_knn_predict(x[train].toarray(), y[train], x[query], n_pcs=10, seed=0))
    inductive = pca_knn_predict(x[train], y[train], x[query], n_pcs=10, transductive=False)
    assert score(inductive) > 0.8


def test_label_transfer_perfect_on_separated_clusters(rng):
    emb, labels = _clusters(rng)
    ref = np.arange(len(labels)) % 2 == 0
    acc = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[~ref], labels[~ref], k=15)
    assert acc == 1.0


def test_clustering_metrics_on_separated_clusters(rng):
    emb, labels = _clusters(rng)
    scores = nmi_ari(emb, labels)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["ari"] == pytest.approx(1.0)
    assert silhouette_label(emb, labels) > 0.9
    assert 0.4 < silhouette_label(rng.normal(size=emb.shape), labels) < 0.6


def test_silhouette_batch(rng):
    emb, labels = _clusters(rng, n_per=100)
    mixed = rng.permutation(np.arange(len(labels)) % 2)
    assert silhouette_batch(emb, mixed, labels) > 0.9
    # batches pushed far apart within every label -> poorly mixed
    shifted = emb + mixed[:, None] * 10.0
    assert silhouette_batch(shifted, mixed, labels) < 0.3


def test_format_table():
    table = format_table(
        [{"method": "knn", "r": 0.36401, "n": 3}, {"method": "mean", "r": float("nan")}], ["method", "r", "n"]
    )
    lines = table.splitlines()
    assert lines[0] == "| method | r | n |"
    assert lines[1] == "| --- | --- | --- |"
    assert lines[2] == "| knn | 0.364 | 3 |"
    assert lines[3] == "| mean | nan |  |"


def test_missing_labels_are_refused_not_scored(rng):
    emb, labels = _clusters(rng, n_per=20)
    with pytest.raises(ValueError, match="labels_ref has 30 missing values.*drop those cells"):
        knn_label_transfer_accuracy(emb[:30], [None] * 30, emb[30:], [None] * 30)
    with_nan = pd.Series(labels[:30].astype(float)).where(np.arange(30) >= 10)
    with pytest.raises(ValueError, match="labels_ref has 10 missing values"):
        knn_label_transfer(emb[:30], with_nan, emb[30:])
    with pytest.raises(ValueError, match="labels_query has 1 missing values"):
        knn_label_transfer_accuracy(emb[:30], labels[:30], emb[30:], [np.nan] + list(labels[31:]))
    categorical = pd.Categorical(np.where(np.arange(60) < 10, None, labels.astype(str)))
    with pytest.raises(ValueError, match="labels has 10 missing values .* out of 60"):
        nmi_ari(emb, categorical)
    with pytest.raises(ValueError, match="batch has 1 missing values"):
        silhouette_batch(emb, [None] + ["x", "y"] * 29 + ["x"], labels)
    # the string "nan" is a label like any other (benchmarks pass labels through astype(str))
    assert knn_label_transfer(emb[:30], np.where(labels[:30] == 0, "nan", "b"), emb[30:]).dtype.kind == "U"


def test_numeric_labels_are_compared_by_value(rng):
    emb, labels = _clusters(rng, n_per=20, n_clusters=2)
    ref = np.arange(len(labels)) % 2 == 0
    as_int = knn_label_transfer_accuracy(emb[ref], labels[ref], emb[~ref], labels[~ref])
    assert as_int == 1.0
    assert knn_label_transfer_accuracy(emb[ref], labels[ref], emb[~ref], labels[~ref].astype(float)) == as_int
    mixed = np.array([0, 1.0] * 10, dtype=object)  # 0 and 0.0 in one object column
    assert knn_label_transfer_accuracy(emb[ref], labels[ref].astype(float), emb[~ref], mixed) == pytest.approx(
        np.mean(labels[~ref] == mixed.astype(float))
    )
    # transferred float labels keep their own spelling
    assert set(knn_label_transfer(emb[ref], labels[ref].astype(float), emb[~ref])) == {"0.0", "1.0"}


def test_mismatched_lengths_and_bad_embeddings_are_refused(rng):
    emb, labels = _clusters(rng, n_per=20)
    for call in (lambda: nmi_ari(emb, labels[:50]), lambda: silhouette_label(emb, labels[:50]),
                 lambda: silhouette_batch(emb, np.tile(["x", "y"], 30), labels[:50])):
        with pytest.raises(ValueError, match="embedding has 60 cells but labels has 50; pass one label per"):
            call()
    with pytest.raises(ValueError, match="embedding has 60 cells but batch has 50"):
        silhouette_batch(emb, np.tile(["x", "y"], 25), labels)
    with pytest.raises(ValueError, match="embedding has 30 cells but labels_query has 29"):
        knn_label_transfer_accuracy(emb[:30], labels[:30], emb[30:], labels[31:])
    bad = emb.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="embedding has 1 non-finite values .* in 1 of 60 cells; drop those"):
        nmi_ari(bad, labels)
    with pytest.raises(ValueError, match="emb_query has 1 non-finite"):
        knn_label_transfer(emb[:30], labels[:30], np.where(np.isnan(bad), np.inf, bad)[:30])
    with pytest.raises(ValueError, match="emb_ref has 5 dims but emb_query has 3; embed both in the same space"):
        knn_label_transfer(emb[:30], labels[:30], emb[30:, :3])
    with pytest.raises(ValueError, match="emb_query has no cells"):
        knn_label_transfer_accuracy(emb[:30], labels[:30], emb[:0], labels[:0])
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        knn_label_transfer(emb[:30], labels[:30], emb[30:], k=0)


def test_label_metrics_need_two_labels_and_fewer_labels_than_cells(rng):
    emb, _ = _clusters(rng, n_per=20)
    with pytest.raises(ValueError, match="NMI/ARI needs at least 2 distinct labels, got 1"):
        nmi_ari(emb, ["a"] * 60)
    with pytest.raises(ValueError, match="label silhouette needs at least 2 distinct labels, got 1"):
        silhouette_label(emb, ["a"] * 60)
    with pytest.raises(ValueError, match="fewer distinct labels than cells, got 2 labels for 2 cells"):
        silhouette_label(emb[:2], ["a", "b"])
