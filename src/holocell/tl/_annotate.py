"""``holocell.tl.annotate``: label transfer from labelled reference cells to query cells."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from .._warnings import HoloCellWarning
from ..model._args import check_count, check_weight
from ..model._inference import modality_names, without_modalities
from ._compat import legacy_positional
from ._keys import check_key_added, check_mudata, check_outputs, missing_column_message, working_copy
from ._labels import label_probabilities, predicted_labels, reference_labels, require_reference_and_query
from ._novelty import novelty_factor, reference_p_values

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell


METHODS = ("knn", "classifier", "both", "finetune")
CLASSIFICATION_WEIGHT = 10.0
"""Default weight of the fine-tuned head's cross-entropy beside the unsupervised loss (chosen on validation tasks,
docs/design.md)."""
CONSISTENCY_WEIGHT = 1.0
"""Default weight of the fine-tuned head's view-consistency term (chosen on validation tasks, docs/design.md)."""
CLASS_WEIGHT: Literal["auto", "balanced"] | None = "auto"
"""Default class weighting: ``"auto"``, i.e. ``"balanced"`` for the fine-tuned head and none for the frozen logistic
regression (each chosen on validation tasks; balanced weights lost accuracy on the frozen one, docs/design.md)."""
CLASS_WEIGHTS = ("auto", "balanced", None)
NOVELTY_LEVEL = 0.01
"""Default ``novelty_level``: confidence falls for query cells further from the reference than 99% of reference
cells are from their own nearest reference cells (docs/design.md, "Annotation: cells of a type the reference lacks")."""
DEFAULT_REP = "X_holocell"


@legacy_positional("labels_key", "query")
def annotate(
    mdata: MuData,
    model: HoloCell | None = None,
    *,
    labels_key: str = "celltype",
    query: Sequence[bool] | Sequence[str] | str | None = None,
    reference: Sequence[bool] | Sequence[str] | str | None = None,
    method: Literal["knn", "classifier", "both", "finetune"] = "both",
    use_rep: str | None = None,
    modality: str | Sequence[str] | None = None,
    n_neighbors: int = 15,
    unknown_threshold: float | None = None,
    novelty_level: float | None = NOVELTY_LEVEL,
    max_epochs: int = 20,
    classification_weight: float = CLASSIFICATION_WEIGHT,
    consistency_weight: float = CONSISTENCY_WEIGHT,
    class_weight: Literal["auto", "balanced"] | None = CLASS_WEIGHT,
    key_added: str = "holocell_label",
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
    copy: bool = False,
) -> MuData | None:
    """Transfer labels from reference cells to query cells through holocell embeddings.

    Predictors on the cell states:

    - ``"knn"``: distance-weighted vote of the ``n_neighbors`` nearest reference cells (cosine);
    - ``"classifier"``: a classification head (multinomial logistic regression) trained on the
      reference embeddings, the transformer kept frozen;
    - ``"both"``: the mean of these two probability vectors;
    - ``"finetune"``: a linear head on the cell state trained together with the encoder, semi-supervised
      as scANVI is: a copy of the model keeps training on every cell of ``mdata`` with its own
      unsupervised objective while the head learns the reference labels. A tenth of the reference cells
      is held out to stop the run, to choose the epoch kept (0, the frozen-state classifier the head starts
      from, when fine-tuning does not beat it there) and to calibrate the confidence (a softmax temperature).
      On cells measured with several modalities the head's prediction from each modality alone is pulled
      towards the one from all of them (``consistency_weight``). Every parameter of the copy is trained, also
      those that ``model`` holds frozen (e.g. after :meth:`~holocell.HoloCell.load_query_data`, which freezes by
      default); ``model`` itself is not changed, and stays frozen.

    The predicted labels keep the type of the reference labels: integer, bool or float labels (e.g. cluster
    numbers) are predicted as those values, not as their text (a categorical ``labels_key``: its categories'
    type); labels of mixed types are read as their text (``str``). The prediction is a categorical whose
    categories are the reference's classes (plus ``"unknown"`` with ``unknown_threshold``), which may differ from
    those of a categorical ``labels_key`` (scanpy's usual dtype): pandas compares two categoricals only when their
    categories are the same (``TypeError`` otherwise), so compare the values, e.g. the accuracy on the query cells:
    ``(mdata.obs[key_added].astype(object) == mdata.obs[labels_key].astype(object))[query].mean()``.

    Parameters
    ----------
    mdata
        MuData with ``labels_key`` in ``mdata.obs``.
    model
        Trained :class:`~holocell.HoloCell`: the embeddings are computed by it, even when ``mdata.obsm["X_holocell"]``
        exists (it may come from another model). May be ``None`` when ``mdata.obsm[use_rep]`` exists; with an
        explicit ``use_rep`` that exists, the stored embeddings are read instead (``"finetune"`` always uses
        ``model``).
    labels_key
        Column of ``mdata.obs`` with the reference labels. Missing values (NaN, None) mark unlabelled cells; a label
        that spells one (``"nan"``, ``"None"``, ``""``, e.g. after ``.astype(str)``) is a class like any other, with
        a :class:`~holocell.HoloCellWarning` giving the number of reference cells that have it.
    query
        Cells to label: a boolean mask over ``mdata.obs_names``, a list of obs names, or one obs name (a ``str`` is
        one cell, as ``[name]``). Default: the cells whose label is missing.
    reference
        Labelled cells to learn from (same forms); default: every labelled cell not in ``query``.
    method
        ``"knn"``, ``"classifier"``, ``"both"`` or ``"finetune"`` (needs ``model``).
    use_rep
        ``.obsm`` key of existing embeddings (default ``"X_holocell"``, what :func:`~holocell.tl.embed` writes; read
        by default only when no ``model`` is passed).
        Not read when ``modality`` is given: ``ValueError`` if both are given and ``mdata.obsm[use_rep]`` exists.
    modality
        Embed from this modality (or list) only: the embeddings are then computed by ``model`` (needed), even when
        ``mdata.obsm[use_rep]`` exists, since stored embeddings may come from other modalities. Default: every
        modality each cell has (``"finetune"``), or the stored embeddings when they exist.
    n_neighbors
        Neighbours of the kNN vote.
    unknown_threshold
        Query cells whose confidence (probability of the best label, lowered for cells far from the reference:
        ``novelty_level``) is below this value are labelled
        ``"unknown"`` instead, e.g. cells of a type the reference lacks; with labels that are not text (numbers,
        bools) they get a missing label (NaN) instead, so the categories keep the labels' type (their confidence,
        below the threshold, tells them from cells left out). A reference class named ``"unknown"`` is refused
        (``ValueError``: rename it). ``None`` (default) always predicts a reference label.
    novelty_level
        The confidence of a query cell further from the reference cells than they are from each other is lowered:
        the class probability is multiplied by ``min(1, p / novelty_level)``, where ``p`` is the share of reference
        cells whose mean cosine distance to their ``n_neighbors`` nearest other reference cells is at least the
        query cell's mean distance to its ``n_neighbors`` nearest reference cells (a conformal p-value, on the
        embeddings the labels are transferred on; with ``"finetune"``, those of ``model``). A cell of a type the
        reference lacks, which gets some reference label with a high class probability, so gets a low confidence
        (and ``"unknown"`` with ``unknown_threshold``); cells as close to the reference as most reference cells keep
        their class probability. ``None``: the confidence is the class probability alone.
    max_epochs
        ``"finetune"``: epochs over the cells at most (early stopping on the held-out reference cells); a few
        epochs leave the head far from converged (worse than ``"classifier"``), keep the default for real use.
    classification_weight
        ``"finetune"``: weight of the head's cross-entropy beside the model's unsupervised loss (scANVI's
        classification ratio). Higher shapes the encoder more towards the reference labels.
    consistency_weight
        ``"finetune"``: weight of a view-consistency term. On every cell measured with several modalities, labelled
        or not, the head's prediction from each modality alone is pulled towards its prediction from all of them,
        so paired cells carry the reference's labels over to query cells measured with another modality. 0 is off.
    class_weight
        ``"balanced"``: each reference cell's loss is weighted by the inverse frequency of its label, so rare types
        count as much as common ones (scikit-learn's convention; used by ``"classifier"``, ``"both"`` and
        ``"finetune"``); ``None``: every cell counts the same; ``"auto"`` (default): ``"balanced"`` for
        ``"finetune"``, ``None`` for the frozen methods. The value used is recorded in ``.uns``.
    key_added
        Output key prefix. The results of an earlier ``annotate`` with the same ``key_added`` are replaced;
        any other existing key (the user's data, e.g. ``labels_key``) is never replaced: ``ValueError``.
    batch_size, device, progress_bar
        Cells per step, where to run, progress display: of the fine-tuning (``"finetune"``, default 128 cells),
        or of the embeddings ``model`` computes for the other methods (its inference batch size by default).
    seed
        Seed of the classifier (and of the fine-tuning: the global random state of torch is left as it was).
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.obs[key_added]`` (predicted
    label of query cells, categorical with the reference labels as categories, of their type; NaN elsewhere;
    ``"unknown"`` or NaN below ``unknown_threshold``), ``mdata.obs[f"{key_added}_confidence"]`` (probability of
    the best label, lowered for cells far from the reference by ``novelty_level``; NaN outside the query),
    ``mdata.obsm[f"{key_added}_probabilities"]`` (a DataFrame: each query cell's probability of every reference
    label, one column per label named by its text, ``L2/3`` as ``L2_3`` (files refuse ``/`` in a column name),
    rows summing to 1, before the distance factor; NaN rows outside the query: the best label of a cell shown as
    ``"unknown"`` is its row's ``idxmax()``) and ``mdata.uns[key_added]`` (``"params"``: the settings, with
    ``use_rep`` when stored embeddings were read or ``modality`` (``"all"`` or the names) when ``model`` computed
    them; ``"classes"``: the reference labels, of their type). Cells without an embedding (measured in
    none of the modalities read, or a NaN row of ``use_rep``) are left out of the reference, and as query
    cells get a NaN label and confidence, with a :class:`~holocell.HoloCellWarning` giving their count.
    """
    check_mudata(mdata, "annotate")
    if labels_key not in mdata.obs:
        raise KeyError(missing_column_message(mdata, labels_key, "labels_key"))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "finetune" and model is None:
        raise ValueError("method='finetune' trains a copy of the model: pass the trained model.")
    if unknown_threshold is not None and (
        isinstance(unknown_threshold, bool)
        or not isinstance(unknown_threshold, numbers.Real)
        or not 0.0 <= float(unknown_threshold) <= 1.0
    ):
        raise ValueError(f"unknown_threshold is a probability in [0, 1] (or None), got {unknown_threshold!r}.")
    if novelty_level is not None and (
        isinstance(novelty_level, bool)
        or not isinstance(novelty_level, numbers.Real)
        or not 0.0 < float(novelty_level) <= 1.0
    ):
        raise ValueError(f"novelty_level is a probability in (0, 1] (or None: off), got {novelty_level!r}.")
    check_count(n_neighbors, "n_neighbors")
    if not (class_weight is None or (isinstance(class_weight, str) and class_weight in CLASS_WEIGHTS)):
        raise ValueError(f"class_weight must be 'auto', 'balanced' or None, got {class_weight!r}.")
    if class_weight == "auto":
        class_weight = "balanced" if method == "finetune" else None
    classification_weight = check_weight(classification_weight, "classification_weight", positive=True)
    if method == "finetune":
        max_epochs = check_count(max_epochs, "max_epochs")
    batch_size = check_count(batch_size, "batch_size", none_ok=True)
    consistency_weight = check_weight(consistency_weight, "consistency_weight")
    check_key_added(key_added)
    if labels_key in (key_added, f"{key_added}_confidence"):
        raise ValueError(
            f"key_added={key_added!r} would write over the reference labels mdata.obs[{labels_key!r}]; "
            "pass another key_added (default 'holocell_label')."
        )
    check_outputs(
        mdata, key_added, "annotate", obs=[key_added, f"{key_added}_confidence"], obsm=[f"{key_added}_probabilities"]
    )
    stored = _stored_embeddings(mdata, model, method, use_rep, modality)
    use_rep = DEFAULT_REP if use_rep is None else use_rep
    mdata = working_copy(mdata, copy)
    labels = mdata.obs[labels_key]
    labelled = labels.notna().to_numpy()
    q = ~labelled if query is None else _as_mask(mdata, query, "query")
    ref = (labelled & ~q) if reference is None else _as_mask(mdata, reference, "reference")
    if (ref & ~labelled).any():
        raise ValueError(f"{int((ref & ~labelled).sum())} reference cells have no {labels_key!r} label.")
    require_reference_and_query(labels, labelled, ref, q, labels_key, query_given=query is not None)
    values = reference_labels(labels, ref, labels_key, unknown_threshold)  # (checks them too)
    if (ref & q).any():
        warnings.warn(
            f"{int((ref & q).sum())} query cells are also reference cells: each is labelled by a reference that "
            "holds its own label, so their predictions (and any accuracy computed on them) are optimistic. Pass a "
            "query and a reference without common cells.",
            HoloCellWarning,
            stacklevel=3,
        )
    arrays, z, keep = None, None, None
    if method == "finetune":
        _, arrays = model._arrays(mdata)
        keep = model._check_modalities(modality)  # the head learns from every modality, predicts from `keep`
        read = keep or list(model.modalities_)
        no_ref = without_modalities(arrays.present, list(model.modalities_))
        no_query = without_modalities(arrays.present, read)
    elif stored:
        z = np.asarray(mdata.obsm[use_rep], dtype=np.float64)
        no_ref = no_query = np.isnan(z).all(axis=1) if z.ndim == 2 and z.shape[1] else np.zeros(len(z), bool)
    elif model is not None:
        keep = model._check_modalities(modality)
        z, no_ref, read = model._latent(mdata, None, modality, batch_size, device, progress_bar)
        z, no_query = z.astype(np.float64), no_ref
    else:
        raise ValueError(f"mdata.obsm has no {use_rep!r}; pass a trained model or run hc.tl.embed first.")
    if stored:
        source = f"NaN rows of mdata.obsm[{use_rep!r}]"
        fix = "compute the embeddings again (hc.tl.embed) where they should have one"
    else:
        source = f"measured in none of the modalities read: {modality_names(model, read)}"
        fix = ("pass another modality= that they have" if modality is not None else
               "set a model up with a modality they are measured in")  # fmt: skip
    ref, q_ok = _drop_cells_without_data(ref, q, no_ref, no_query, source, fix)
    classes = np.unique(values[ref])
    if len(classes) == 1:
        warnings.warn(
            f"The reference cells have one label ({classes[0]!r}): every query cell gets it with "
            "confidence 1, so unknown_threshold cannot flag a cell. Give a reference with two or more labels.",
            HoloCellWarning,
            stacklevel=3,
        )
    extra = {}
    if method == "finetune":
        proba, extra = _finetuned_proba(
            model, arrays, values, classes, ref, q_ok, modality=keep, max_epochs=max_epochs, batch_size=batch_size,
            device=device, seed=seed, progress_bar=progress_bar, classification_weight=classification_weight,
            consistency_weight=consistency_weight, balance_classes=class_weight == "balanced",
        )  # fmt: skip
    else:
        bad = int((~np.isfinite(z[ref | q_ok]).all(axis=1)).sum())
        if bad:
            raise ValueError(
                f"The embeddings{f' mdata.obsm[{use_rep!r}]' if stored else ''} have NaN or "
                f"infinite values in {bad} of the reference and query cells; compute them again (hc.tl.embed) or "
                "pass another use_rep."
            )
        proba = np.zeros((0, len(classes)))
        if q_ok.any():
            proba, classes = transfer_labels(
                z[ref], values[ref], z[q_ok], method=method, n_neighbors=n_neighbors, seed=seed,
                class_weight=class_weight,
            )  # fmt: skip
    fit = None
    if novelty_level is not None and q_ok.any():
        if z is None:  # "finetune": the distances are read on the model's own cell states
            z = model._latent(mdata, None, modality, batch_size, device, progress_bar)[0].astype(np.float64)
        z_ref = z[ref][np.isfinite(z[ref]).all(axis=1)]  # ("finetune": reference cells without those modalities)
        p_values = reference_p_values(z_ref, z[q_ok], n_neighbors, seed=seed)
        fit = novelty_factor(p_values, float(novelty_level))
    pred, conf = predicted_labels(classes, proba, q_ok, unknown_threshold, fit)
    mdata.obs[key_added] = pred
    mdata.obs[f"{key_added}_confidence"] = conf
    mdata.obsm[f"{key_added}_probabilities"] = label_probabilities(classes, proba, q_ok, mdata.obs_names)
    params = {"labels_key": labels_key, "method": method}
    params |= {"use_rep": use_rep} if stored else {"modality": "all" if keep is None else keep}
    params |= {
        "n_neighbors": n_neighbors,
        "class_weight": "none" if class_weight is None else class_weight,
        "n_reference": int(ref.sum()),
        "n_query": int(q.sum()),
    }
    mdata.uns[key_added] = {"params": params | extra, "classes": classes.tolist()}
    if unknown_threshold is not None:  # (None cannot be written to .h5mu)
        mdata.uns[key_added]["params"]["unknown_threshold"] = float(unknown_threshold)
    if novelty_level is not None:
        mdata.uns[key_added]["params"]["novelty_level"] = float(novelty_level)
    return mdata if copy else None


def _stored_embeddings(mdata: MuData, model: HoloCell | None, method: str, use_rep: str | None, modality) -> bool:
    """Whether the embeddings are read from ``mdata.obsm[use_rep]`` (else ``model`` computes them); ``ValueError``
    when ``modality`` is given without a model, or with an explicit ``use_rep`` that exists."""
    rep = DEFAULT_REP if use_rep is None else use_rep
    if method == "finetune":
        return False
    if modality is None:  # a model passed is the model used, unless use_rep names stored embeddings explicitly
        return rep in mdata.obsm and (model is None or use_rep is not None)
    if model is None:
        raise ValueError(
            f"modality={modality!r} chooses what the model embeds the cells from, and no model was passed: pass the "
            f"model, or leave modality out to use the stored embeddings mdata.obsm[{rep!r}]."
        )
    if use_rep is not None and rep in mdata.obsm:
        raise ValueError(
            f"use_rep={rep!r} (stored embeddings, from whatever modalities made them) and modality={modality!r} "
            "(embeddings the model computes from those modalities) ask for two sources: pass only one of them."
        )
    return False


def _finetuned_proba(
    model, arrays, values, classes, ref, q, *, modality, max_epochs, batch_size, device, seed, progress_bar,
    **head_kwargs,
):  # fmt: skip
    """Class probabilities of the query cells from a head fine-tuned with the encoder (``method="finetune"``)."""
    from ..model._classifier import finetune_classifier, predict_proba

    codes = np.full(arrays.n_cells, -1, dtype=np.int64)
    codes[ref] = np.searchsorted(classes, values[ref])
    keep = modality
    size = 128 if batch_size is None else batch_size
    torch_device = model._device(device)
    clf = finetune_classifier(
        model, arrays, codes, classes, max_epochs=max_epochs, batch_size=size, device=torch_device, seed=seed,
        progress_bar=progress_bar, **head_kwargs,
    )  # fmt: skip
    proba = predict_proba(model, clf, arrays, np.flatnonzero(q), modalities=keep, batch_size=size,
                          device=torch_device, progress_bar=progress_bar)  # fmt: skip
    extra = {"temperature": clf.temperature, "epochs_run": len(clf.history) or max_epochs,
             "best_epoch": clf.best_epoch}
    weights = {k: head_kwargs[k] for k in ("classification_weight", "consistency_weight")}
    return proba, extra | weights


def _drop_cells_without_data(
    ref: np.ndarray, q: np.ndarray, no_ref: np.ndarray, no_query: np.ndarray, source: str, fix: str
) -> tuple[np.ndarray, np.ndarray]:
    """The reference without the cells that have no embedding, and the query cells that have one (a warning names
    the cells left out; ``ValueError`` when no reference cell is left)."""
    lost_ref, lost_q = int((ref & no_ref).sum()), int((q & no_query).sum())
    if lost_ref == int(ref.sum()):
        raise ValueError(
            f"The embeddings are NaN or infinite in every one of the {lost_ref} reference cells ({source}), so there "
            f"is nothing to learn labels from; {fix}, or pass a reference= of cells that have data."
        )
    if lost_ref or lost_q:
        what = [f"{lost_ref} reference cells are left out of the reference"] if lost_ref else []
        what += [f"{lost_q} query cells get a missing label (NaN) and confidence NaN, not a guess"] if lost_q else []
        warnings.warn(
            f"{lost_ref + lost_q} cells have no embedding ({source}): {'; '.join(what)}. To use them, {fix}; "
            "or pass query= and reference= without them.",
            HoloCellWarning,
            stacklevel=4,
        )
    return ref & ~no_ref, q & ~no_query


def transfer_labels(
    z_ref: np.ndarray,
    y_ref: np.ndarray,
    z_query: np.ndarray,
    *,
    method: Literal["knn", "classifier", "both", "finetune"] = "both",
    n_neighbors: int = 15,
    seed: int = 0,
    class_weight: Literal["balanced"] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(n_query, n_classes)`` and the class names, from reference embeddings
    (``class_weight``: the logistic regression's, as in scikit-learn)."""
    classes = np.unique(y_ref)
    codes = np.searchsorted(classes, y_ref)  # the labels' positions: any type of label (floats too) is a class
    parts = []
    if method in ("knn", "both"):
        k = min(n_neighbors, len(z_ref))
        nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(z_ref)
        dist, idx = nn.kneighbors(z_query)
        w = 1.0 / (dist + 1e-6)
        onehot = (codes[idx][..., None] == np.arange(len(classes))[None, None, :]).astype(float)  # (n, k, C)
        votes = (w[..., None] * onehot).sum(1)
        parts.append(votes / votes.sum(1, keepdims=True))
    if method in ("classifier", "both"):
        if len(classes) == 1:
            parts.append(np.ones((len(z_query), 1)))
        else:
            scaler = StandardScaler().fit(z_ref)
            clf = LogisticRegression(max_iter=2000, random_state=seed, class_weight=class_weight).fit(
                scaler.transform(z_ref), codes
            )
            parts.append(clf.predict_proba(scaler.transform(z_query)))  # clf.classes_ are 0, 1, ...: in order
    return np.mean(parts, axis=0), classes


def _as_mask(mdata: MuData, cells: Sequence[bool] | Sequence[str] | str, what: str) -> np.ndarray:
    if isinstance(cells, str):  # one cell's name, as scanpy reads a str (a list of one)
        cells = [cells]
    if isinstance(cells, pd.Series) and pd.api.types.is_bool_dtype(cells) and not cells.index.equals(mdata.obs_names):
        aligned = cells.reindex(mdata.obs_names)  # a mask of other cells, or in another order: aligned by name
        if aligned.isna().any():
            raise ValueError(
                f"Boolean `{what}` is a Series indexed by other cells than mdata.obs_names "
                f"({int(aligned.isna().sum())} cells missing); give one entry per cell of mdata."
            )
        cells = aligned.astype(bool)
    arr = np.asarray(cells)
    if arr.dtype == bool:
        if arr.shape != (mdata.n_obs,):
            raise ValueError(f"Boolean `{what}` must have one entry per cell ({mdata.n_obs}), got {arr.shape}.")
        return arr
    if arr.size and not (arr.dtype.kind in "OUS" and all(isinstance(c, str) for c in arr.ravel())):
        raise TypeError(
            f"`{what}` must be a boolean mask over the cells or a list of obs names, got {arr.dtype} values "
            f"such as {list(arr.ravel()[:3])}; for positions pass mdata.obs_names[positions]."
        )
    idx = mdata.obs_names.get_indexer(arr.astype(str))
    if (idx < 0).any():
        raise KeyError(f"`{what}` names unknown cells, e.g. {[str(c) for c in arr[idx < 0][:3]]}.")
    mask = np.zeros(mdata.n_obs, dtype=bool)
    mask[idx] = True
    return mask
