"""Write the scib-metrics reference values that ``tests/test_scib_reference.py`` checks holocell against.

scib-metrics needs jax, so it is not a holocell dependency; run this in a scratch environment::

    python -m venv /tmp/scib && /tmp/scib/bin/pip install scib-metrics==0.5.10
    /tmp/scib/bin/python tests/data/make_scib_reference.py

It writes ``scib_fixture.npz`` (a seeded embedding with labels and batches; kept if present) and
``scib_reference.json`` (scib-metrics' values on it, with the versions that computed them).
Neighbours are exact (sklearn), passed to scib-metrics as a ``NeighborsResults``, so both sides see
the same graph.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE, REFERENCE = HERE / "scib_fixture.npz", HERE / "scib_reference.json"


def make_fixture(seed: int = 0) -> dict[str, np.ndarray]:
    """300 cells in 8 dims: 3 cell types (overlapping blobs), 3 batches (shifted), 5% labels swapped."""
    rng = np.random.default_rng(seed)
    n, dims = 300, 8
    labels = rng.integers(0, 3, n)
    batches = rng.integers(0, 3, n)
    centers = rng.normal(0, 3.0, (3, dims))
    shifts = rng.normal(0, 1.0, (3, dims))
    x = centers[labels] + shifts[batches] + rng.normal(0, 1.0, (n, dims))
    swap = rng.random(n) < 0.05
    labels[swap] = rng.integers(0, 3, swap.sum())
    return {
        "embedding": x,
        "labels": np.array([f"type{i}" for i in labels]),
        "batches": np.array([f"batch{i}" for i in batches]),
    }


def main() -> None:
    from scib_metrics import (
        graph_connectivity,
        ilisi_knn,
        nmi_ari_cluster_labels_kmeans,
        silhouette_batch,
        silhouette_label,
    )
    from scib_metrics.metrics._lisi import lisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    if not FIXTURE.exists():
        np.savez(FIXTURE, **make_fixture())
    data = np.load(FIXTURE)
    x, labels, batches = data["embedding"], data["labels"], data["batches"]

    def neighbours(k: int) -> NeighborsResults:
        dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
        return NeighborsResults(indices=idx, distances=dist)

    nn90, nn15 = neighbours(90), neighbours(15)
    # well-separated copy for the KMeans scores (both KMeans implementations find the same clusters)
    codes = np.unique(labels, return_inverse=True)[1]
    separated = x + 20.0 * np.eye(x.shape[1])[codes]
    noisy = labels.copy()
    noisy[::17] = np.roll(labels, 1)[::17]
    out = {
        "versions": {p: version(p) for p in ("scib-metrics", "jax", "numpy", "scikit-learn")},
        "lisi_batch_90": np.asarray(lisi_knn(nn90, batches)).tolist(),
        "ilisi_90": float(ilisi_knn(nn90, batches)),
        "graph_connectivity_15": float(graph_connectivity(nn15, labels)),
        "silhouette_label": float(silhouette_label(x, labels)),
        "silhouette_batch": float(silhouette_batch(x, labels, batches)),
        "kmeans_separated_noisy_labels": {k: float(v) for k, v in nmi_ari_cluster_labels_kmeans(separated, noisy).items()},
    }
    REFERENCE.write_text(json.dumps(out, indent=1) + "\n")
    print({k: v for k, v in out.items() if k != "lisi_batch_90"})


if __name__ == "__main__":
    main()
