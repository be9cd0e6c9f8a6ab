"""How far query cells lie from the reference cells, for ``tl.annotate``'s confidence.

A cell of a type the reference lacks is still given the most probable reference label, often with a high class
probability (a classifier extrapolates; its nearest reference cells may all share one label). What marks it is its
distance: it lies further from the reference cells than they lie from each other. The share of reference cells at
least as far from their own nearest reference cells is a conformal p-value of that distance, and the confidence is
scaled by ``min(1, p / level)``: cells as close to the reference as most reference cells keep their class
probability; cells further than all but a fraction ``level`` of them lose confidence in proportion.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

CALIBRATION_CELLS = 5_000
"""Reference cells whose own neighbour distances make the null distribution (all of them up to this number)."""


def reference_p_values(z_ref: np.ndarray, z_query: np.ndarray, n_neighbors: int, seed: int = 0) -> np.ndarray:
    """``(n_query,)`` conformal p-values of the query cells' mean cosine distance to their ``n_neighbors`` nearest
    reference cells, against the same distance of reference cells to their nearest *other* reference cells
    (``(1 + #{reference distances >= d}) / (1 + n)``, over at most :data:`CALIBRATION_CELLS` reference cells)."""
    k = min(n_neighbors, len(z_ref) - 1)
    if k < 1 or len(z_query) == 0:  # one reference cell: no distance between reference cells to compare with
        return np.ones(len(z_query))
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(z_ref)
    rng = np.random.default_rng(seed)
    calib = rng.choice(len(z_ref), CALIBRATION_CELLS, replace=False) if len(z_ref) > CALIBRATION_CELLS else None
    dist, idx = nn.kneighbors(z_ref if calib is None else z_ref[calib])
    own = np.arange(len(z_ref)) if calib is None else calib
    others = idx != own[:, None]  # leave each cell out (it is usually, not always, its own first neighbour)
    null = np.array([d[o][:k].mean() for d, o in zip(dist, others, strict=True)])
    query = nn.kneighbors(z_query, n_neighbors=k)[0].mean(axis=1)
    null.sort()
    at_least = len(null) - np.searchsorted(null, query, side="left")  # reference distances >= the query's
    return (1.0 + at_least) / (1.0 + len(null))


def novelty_factor(p_values: np.ndarray, level: float | None) -> np.ndarray:
    """The confidence's factor ``min(1, p / level)`` (ones when ``level`` is ``None``)."""
    if level is None:
        return np.ones(len(p_values))
    return np.minimum(1.0, p_values / level)


__all__ = ["CALIBRATION_CELLS", "novelty_factor", "reference_p_values"]
