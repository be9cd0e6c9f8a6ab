"""The common form of every prior: a gene x k matrix aligned to the model's anchors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.utils.extmath import randomized_svd


@dataclass
class PriorMatrix:
    """One prior, aligned to a list of anchors.

    Attributes
    ----------
    name
        ``"grn"``, ``"family"``, ``"position"`` or ``"coexpression"``.
    values
        ``(n_anchors, k)`` float32; columns standardised over the known anchors, zeros elsewhere.
    known
        ``(n_anchors,)`` bool: the prior has information on this anchor.
    columns
        Names of the ``k`` columns.
    """

    name: str
    values: np.ndarray
    known: np.ndarray
    columns: list[str]

    @property
    def n_known(self) -> int:
        """Number of anchors the prior knows."""
        return int(self.known.sum())

    def network_input(self) -> np.ndarray:
        """``(n_anchors, k + 1)`` float32: the values and the known flag, as the network reads them."""
        return np.concatenate([self.values, self.known[:, None]], axis=1).astype(np.float32)


def standardise(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """z-score every column over the known rows; unknown rows and (numerically) constant columns are 0."""
    out = np.zeros_like(values, dtype=np.float32)
    if known.any():
        sub = values[known].astype(np.float64)
        sd = sub.std(axis=0)
        varies = sd > 1e-6 * max(float(sd.max()), 1e-12)
        z = (sub - sub.mean(axis=0)) / np.where(varies, sd, 1.0)
        out[known] = np.where(varies, z, 0.0).astype(np.float32)
    return out


def align(anchors: Sequence[str], genes: Sequence[str], table: np.ndarray, name: str, columns: list[str]) -> PriorMatrix:
    """Rows of ``table`` (one per gene in ``genes``) placed on ``anchors``; others unknown."""
    row = {g: i for i, g in enumerate(genes)}
    idx = np.array([row.get(a, -1) for a in anchors], dtype=np.int64)
    known = idx >= 0
    values = np.zeros((len(anchors), table.shape[1]), dtype=np.float32)
    values[known] = table[idx[known]]
    return PriorMatrix(name, standardise(values, known), known, columns)


RSVD_OVERSAMPLES = 16
"""Extra random directions of the randomized SVD (Halko et al.), beyond the ``k`` wanted."""
RSVD_ITERATIONS = 6
"""Power iterations of the randomized SVD, each re-orthonormalised by a QR decomposition."""


def spectral(matrix, k: int, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` singular triplets of a (sparse) matrix, zero-padded when its rank is lower.

    Returns ``(U (n, k), s (k,), Vt (k, m))`` with a deterministic sign (largest |entry| of each
    left vector positive).
    """
    import scipy.sparse as sp

    n, m = matrix.shape
    r = min(k, n, m)
    if min(n, m) <= 2000 or r >= min(n, m) - 1:
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        u, s, vt = np.linalg.svd(dense.astype(np.float64), full_matrices=False)
        u, s, vt = u[:, :r], s[:r], vt[:r]
    else:
        with _single_thread():  # tall-skinny QRs: threads only add overhead, a lot on a busy machine
            u, s, vt = randomized_svd(
                sp.csr_matrix(matrix, dtype=np.float64),
                r,
                n_oversamples=RSVD_OVERSAMPLES,
                n_iter=RSVD_ITERATIONS,
                power_iteration_normalizer="QR",
                flip_sign=False,  # the sign is fixed below, the same way for both branches
                random_state=rng_seed,
            )
    sign = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    sign[sign == 0] = 1
    u, vt = u * sign, vt * sign[:, None]
    pad = k - r
    if pad:
        u = np.pad(u, ((0, 0), (0, pad)))
        s = np.pad(s, (0, pad))
        vt = np.pad(vt, ((0, pad), (0, 0)))
    return u, s, vt


def _single_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)
