"""Honest, non-learned-representation baselines for cross-modal prediction.

Each regressor is fit on paired training cells (``x_train`` source counts,
e.g. RNA; ``y_train`` target values, e.g. CLR protein) and predicts the target
for query cells from their source counts alone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.neighbors import NearestNeighbors

from holocell.evaluation._transforms import log_normalize, to_dense

__all__ = ["mean_predict", "pca_knn_predict", "pca_ridge_predict", "shared_pca"]

Matrix = ArrayLike | sp.spmatrix | sp.sparray


def shared_pca(
    x_train: Matrix, x_query: Matrix, *, n_pcs: int = 50, seed: int = 0, transductive: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Log-normalise source counts and project train and query cells on a shared PCA.

    The PCA is fit on train *and* query cells together (transductive: the
    query source modality is observed at prediction time; this is also how
    the reference baseline figures were computed). Query targets are never
    used. Pass ``transductive=False`` to fit the PCA on training cells only.

    Parameters
    ----------
    x_train, x_query
        Cells x genes source counts, dense or sparse, same genes.
    n_pcs
        Number of components, capped at ``min(n_cells, n_genes) - 1``.
    seed
        Random state of the (randomised/arpack) PCA solver.
    transductive
        Fit the PCA on train and query cells (default) or on train cells only.

    Returns
    -------
    tuple of np.ndarray
        PCA coordinates of train cells and of query cells.
    """
    xt, xq = log_normalize(x_train), log_normalize(x_query)
    if xt.shape[1] != xq.shape[1]:
        raise ValueError(f"train and query have different feature counts: {xt.shape[1]} vs {xq.shape[1]}")
    fit_on = np.vstack([xt, xq]) if transductive else xt
    n_comp = max(1, min(n_pcs, min(fit_on.shape) - 1))
    pca = PCA(n_components=n_comp, random_state=seed).fit(fit_on)
    return pca.transform(xt), pca.transform(xq)


def pca_knn_predict(
    x_train: Matrix,
    y_train: Matrix,
    x_query: Matrix,
    *,
    n_pcs: int = 50,
    k: int = 15,
    seed: int = 0,
    transductive: bool = True,
) -> np.ndarray:
    """Predict query targets as the mean target of the ``k`` nearest training cells.

    Neighbours are found (Euclidean) in the shared PCA space of
    :func:`shared_pca`.

    Parameters
    ----------
    x_train
        Training cells x genes source counts.
    y_train
        Training cells x targets values (e.g. CLR protein).
    x_query
        Query cells x genes source counts.
    n_pcs
        PCA components.
    k
        Neighbours averaged; capped at the training size.
    seed
        PCA random state.
    transductive
        Fit the PCA on train and query source cells (default); see :func:`shared_pca`.

    Returns
    -------
    np.ndarray
        Query cells x targets predictions.
    """
    y = to_dense(y_train)
    pc_train, pc_query = shared_pca(x_train, x_query, n_pcs=n_pcs, seed=seed, transductive=transductive)
    _check_rows(pc_train, y)
    nn = NearestNeighbors(n_neighbors=min(k, pc_train.shape[0])).fit(pc_train)
    idx = nn.kneighbors(pc_query, return_distance=False)
    return y[idx].mean(axis=1)


def pca_ridge_predict(
    x_train: Matrix,
    y_train: Matrix,
    x_query: Matrix,
    *,
    n_pcs: int = 50,
    alpha: float = 1.0,
    seed: int = 0,
    transductive: bool = True,
) -> np.ndarray:
    """Predict query targets with ridge regression on shared PCA coordinates.

    Parameters
    ----------
    x_train
        Training cells x genes source counts.
    y_train
        Training cells x targets values.
    x_query
        Query cells x genes source counts.
    n_pcs
        PCA components.
    alpha
        Ridge L2 penalty.
    seed
        PCA random state.
    transductive
        Fit the PCA on train and query source cells (default); see :func:`shared_pca`.

    Returns
    -------
    np.ndarray
        Query cells x targets predictions.
    """
    y = to_dense(y_train)
    pc_train, pc_query = shared_pca(x_train, x_query, n_pcs=n_pcs, seed=seed, transductive=transductive)
    _check_rows(pc_train, y)
    return Ridge(alpha=alpha).fit(pc_train, y).predict(pc_query)


def mean_predict(y_train: Matrix, n_query: int) -> np.ndarray:
    """Predict the training mean of every target for each query cell.

    Parameters
    ----------
    y_train
        Training cells x targets values.
    n_query
        Number of query cells.

    Returns
    -------
    np.ndarray
        ``(n_query, n_targets)`` array of identical rows. Per-feature Pearson is
        undefined (``NaN``) for it; report it as 0.
    """
    mean = to_dense(y_train).mean(axis=0)
    return np.tile(mean, (n_query, 1))


def _check_rows(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x_train has {x.shape[0]} cells but y_train has {y.shape[0]}")
