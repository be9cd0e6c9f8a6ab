"""holocell.evaluation against scib-metrics 0.5.10 on a fixture (values in tests/data/scib_reference.json).

scib-metrics needs jax, so the reference values were computed once in a scratch environment by
``tests/data/make_scib_reference.py``; when scib-metrics is importable here, it is also run live.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from holocell import evaluation as ev

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def fixture():
    data = np.load(DATA / "scib_fixture.npz")
    ref = json.loads((DATA / "scib_reference.json").read_text())
    return data["embedding"], data["labels"], data["batches"], ref


def test_lisi_per_cell_matches_scib_metrics(fixture):
    x, _, batches, ref = fixture
    ours = ev.lisi(x, batches, n_neighbors=90)
    # scib-metrics runs in float32 (jax): agreement to ~1e-5 per cell
    np.testing.assert_allclose(ours, ref["lisi_batch_90"], rtol=1e-4, atol=1e-4)


def test_ilisi_graph_connectivity_and_silhouettes_match_scib_metrics(fixture):
    x, labels, batches, ref = fixture
    assert ev.ilisi(x, batches) == pytest.approx(ref["ilisi_90"], abs=1e-4)
    assert ev.graph_connectivity(x, labels) == pytest.approx(ref["graph_connectivity_15"], abs=1e-9)
    assert ev.silhouette_label(x, labels) == pytest.approx(ref["silhouette_label"], abs=1e-5)
    assert ev.silhouette_batch(x, batches, labels) == pytest.approx(ref["silhouette_batch"], abs=1e-5)


def test_kmeans_nmi_ari_match_scib_metrics(fixture):
    x, labels, _, ref = fixture
    codes = np.unique(labels, return_inverse=True)[1]
    separated = x + 20.0 * np.eye(x.shape[1])[codes]  # as in make_scib_reference.py
    noisy = labels.copy()
    noisy[::17] = np.roll(labels, 1)[::17]
    out = ev.nmi_ari(separated, noisy)
    expected = ref["kmeans_separated_noisy_labels"]
    assert out["nmi"] == pytest.approx(expected["nmi"], abs=1e-9)
    assert out["ari"] == pytest.approx(expected["ari"], abs=1e-9)
    assert out["nmi"] < 1.0  # the swapped labels make the check non-trivial


def test_live_scib_metrics_when_installed(fixture):
    pytest.importorskip("jax")
    scib = pytest.importorskip("scib_metrics")
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    x, labels, batches, _ = fixture
    dist, idx = NearestNeighbors(n_neighbors=90).fit(x).kneighbors(x)
    assert ev.ilisi(x, batches) == pytest.approx(
        float(scib.ilisi_knn(NeighborsResults(indices=idx, distances=dist), batches)), abs=1e-4
    )
