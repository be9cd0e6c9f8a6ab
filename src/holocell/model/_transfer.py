"""Transfer of pretrained weights onto a model of new data, matched by anchor name; freezing.

Anchors are per dataset, so a new MuData gets its own anchors (genes, peak-linked genes,
antibodies' genes). Per-anchor parameters are copied row by row from the reference for every
anchor name the reference knows (and, for a modality's value slot, only where the reference had
that slot); anchors new to the reference start at the mean of the reference's rows plus the usual
small random initialisation. Batch embeddings are matched by batch name; new batches start from
the reference's "unseen batch" row, which is what a zero-shot embedding of an unseen batch uses
anyway. All other parameters are copied as they are; modules the reference lacks (e.g. ATAC parts
when the reference had no ATAC) keep their fresh initialisation. Buffers are the new model's own
(they describe the new data's features), except the prior matrices' rows of shared anchors and
the count decoder's learned library statistics (:data:`LEARNED_BUFFERS`), which come from the
reference like its weights. A prior in a basis of the reference's own data (co-expression; a GRN
from its own edges) has no row for anchors new to the reference: they get zeros and ``known=False``
rather than a row in another basis (the query's co-expression, the shipped GRN), see :func:`own_basis`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .._warnings import HoloCellWarning
from ..data.arrays import match_batches
from ..priors import grn_prior
from ..vocab import FeatureSpace, parse_peaks

logger = logging.getLogger("holocell")

ANCHOR_KEY = "network.anchor.weight"
PRIOR_PREFIX = "network.prior_"
"""Buffers ``network.prior_<name>``: the ``(n_anchors, k + 1)`` prior matrices, known flag last."""
BATCH_KEY = "network.batch.weight"
BATCH_KEYS = (BATCH_KEY, "network.counts.batch.weight")
"""Per-batch parameters: the encoder-side batch embedding and the count decoders' batch rows."""
_PER_SLOT_PREFIXES = ("network.counts.weight.", "network.counts.bias.", "network.counts.log_theta.",
                      "network.cell.value_in.")  # fmt: skip
_PER_PEAK = ("network.counts.peak_factor", "network.counts.peak_bias", "network.cell.peak_in",
             "network.peak_embedding.weight")  # fmt: skip
"""Per-peak parameters: peaks are the data set's own, so a reference's rows are kept only for the same peaks (same
coordinates, see :func:`peak_source`), whatever their order."""
LEARNED_BUFFERS = ("network.counts.typical_library", "network.counts.library_batches")
"""Buffers learned in training, like the weights: the count decoder's typical library size of each modality (the
depth its predictions are made at, e.g. ``generate(n_steps=0)``) and the number of mini-batches it averages. A
transferred model keeps the reference's; fine-tuning continues the running average."""


@dataclass
class TransferState:
    """What a transferred model took from its reference (used by :func:`frozen_rows`).

    Attributes
    ----------
    new_rows
        Parameter name -> ``(n_rows,)`` bool, rows with no pretrained value (per-anchor
        parameters and the batch embedding).
    fresh
        Parameters the reference did not have (fully new).
    """

    new_rows: dict[str, np.ndarray] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)


def _slot_of(key: str) -> str | None:
    """``"network.slots.rna.anchor_value"``, ``"network.counts.weight.rna"`` -> ``"rna"``; None for
    modality-free per-anchor params."""
    parts = key.split(".")
    if key.startswith(_PER_SLOT_PREFIXES):
        return parts[-1]
    return parts[2] if len(parts) > 3 and parts[1] == "slots" else None


def _is_per_anchor(key: str) -> bool:
    return (
        key in (ANCHOR_KEY, "network.counts.atac_anchor")
        or key.endswith(".anchor_value")
        or key.startswith(_PER_SLOT_PREFIXES)
    )


def map_state(
    module: torch.nn.Module,
    space: FeatureSpace,
    batches: list[str],
    ref_state: dict[str, torch.Tensor],
    ref_space: FeatureSpace,
    ref_batches: list[str],
    peak_src: np.ndarray | None = None,
) -> tuple[dict[str, torch.Tensor], TransferState]:
    """The state dict of ``module`` (a fresh model of new data) filled from a reference's, by name.

    Parameters
    ----------
    module
        The new model's module (its own initialisation fills what the reference lacks).
    space, batches
        The new model's anchors / feature maps and batch names.
    ref_state, ref_space, ref_batches
        The reference's ``module.state_dict()``, feature space and batch names.
    peak_src
        Reference row of each new peak, -1 for a peak the reference lacks (:func:`peak_source`); None: no peak is
        the reference's.

    Returns
    -------
    The new state dict, and what was taken from the reference.
    """
    state = module.state_dict()
    buffers = {k for k, _ in module.named_buffers()}
    src = _anchor_source(space.anchors, ref_space.anchors)
    info = TransferState()
    new_state = {}
    for key, new in state.items():
        if key in LEARNED_BUFFERS and key in ref_state and ref_state[key].shape == new.shape:
            new_state[key] = ref_state[key].to(new.dtype)
            continue
        if key in buffers:
            new_state[key] = _prior_rows(key, new, ref_state, src, ref_space.anchors)
            continue
        if key not in ref_state:
            info.fresh.append(key)
            new_state[key] = new
            continue
        if key.startswith("batch_adversary."):  # a classifier of the reference's batches: the query's start afresh
            info.fresh.append(key)
            new_state[key] = new
            continue
        old = ref_state[key].to(new.dtype)
        if _is_per_anchor(key) and old.shape[1:] == new.shape[1:]:
            slot = _slot_of(key)
            known = src >= 0
            if slot is not None:
                known &= _slot_exists(ref_space, slot, src)
            rows_known = _slot_exists(ref_space, slot) if slot is not None else np.ones(len(old), bool)
            new_state[key] = _map_rows(new, old, src, known, rows_known)
            used = space.slot_exists(slot) if slot is not None else np.ones(len(new), bool)
            info.new_rows[key] = used & ~known  # rows the new data uses that have no pretrained value
        elif key in BATCH_KEYS and old.shape[1:] == new.shape[1:]:
            b_src = match_batches(batches, ref_batches)
            unseen = old[len(ref_batches)]
            mapped = torch.stack([old[i] if i >= 0 else unseen for i in b_src] + [unseen])
            new_state[key] = mapped
            info.new_rows[key] = np.append(b_src < 0, False)
        elif key in _PER_PEAK:
            new_state[key] = _peak_rows(key, new, old, peak_src, info)
        elif old.shape == new.shape:
            new_state[key] = old
        else:
            raise ValueError(
                f"Pretrained parameter {key} has shape {tuple(old.shape)}, the new model needs "
                f"{tuple(new.shape)}; the checkpoint is from an incompatible holocell version."
            )
    return new_state, info


def _peak_rows(
    key: str, new: torch.Tensor, old: torch.Tensor, peak_src: np.ndarray | None, info: TransferState
) -> torch.Tensor:
    """A per-peak parameter: the reference's rows of the peaks it had, the new model's own elsewhere (the decoder
    falls back to anchor + distance bucket rows there); records those rows as new (or the parameter as fresh)."""
    known = np.zeros(len(new), bool) if peak_src is None or old.shape[1:] != new.shape[1:] else peak_src >= 0
    if not known.any():
        info.fresh.append(key)
        return new
    out = new.clone()
    out[torch.from_numpy(np.flatnonzero(known))] = old[torch.from_numpy(peak_src[known])]
    if not known.all():
        info.new_rows[key] = ~known
    return out


def peak_coordinates(var: pd.DataFrame, features: np.ndarray) -> pd.DataFrame | None:
    """``chrom``, ``start``, ``end`` of the peaks ``features`` from an ATAC ``.var`` (its columns, or names like
    ``chr1:100-200``); None when they cannot be read (e.g. peaks named ``peak_0`` in a checkpoint, which keeps no
    coordinates)."""
    try:
        coords = parse_peaks(var)
    except ValueError:
        return None
    names = pd.Index([str(f) for f in features])
    coords.index = coords.index.astype(str)
    if not names.isin(coords.index).all():
        return None
    return coords[~coords.index.duplicated()].loc[names]


def peak_source(
    space: FeatureSpace, ref_space: FeatureSpace, coords: pd.DataFrame | None, ref_coords: pd.DataFrame | None
) -> np.ndarray | None:
    """Reference row of each ATAC peak of ``space`` (-1: the reference lacks it); None when either has no ATAC.

    Peaks are the same when their coordinates (``chrom``, ``start``, ``end``) are, whatever their names and order.
    When the reference's coordinates are unknown, the peaks are all the same only if the names, anchors and distance
    buckets of both peak lists are identical, in order; otherwise none is.
    """
    if "atac" not in space.maps or "atac" not in ref_space.maps:
        return None
    if coords is not None and ref_coords is not None:
        index: dict[tuple, int] = {}
        for i, key in enumerate(_coordinate_keys(ref_coords)):
            index.setdefault(key, i)
        return np.array([index.get(key, -1) for key in _coordinate_keys(coords)], dtype=np.int64)
    new, old = space.maps["atac"], ref_space.maps["atac"]
    same = (
        np.array_equal(new.features.astype(str), old.features.astype(str))
        and [space.anchors[i] for i in new.anchor] == [ref_space.anchors[i] for i in old.anchor]
        and new.bucket is not None and old.bucket is not None and np.array_equal(new.bucket, old.bucket)
    )  # fmt: skip
    return np.arange(len(new.features)) if same else np.full(len(new.features), -1, dtype=np.int64)


def _coordinate_keys(coords: pd.DataFrame) -> list[tuple[str, int, int]]:
    return list(zip(coords["chrom"].astype(str), coords["start"].astype(int).tolist(),
                    coords["end"].astype(int).tolist(), strict=True))  # fmt: skip


def _anchor_source(new_anchors: list[str], ref_anchors: list[str]) -> np.ndarray:
    """Reference index of each new anchor (by name), -1 when the reference lacks it."""
    index = {a: i for i, a in enumerate(ref_anchors)}
    return np.array([index.get(a, -1) for a in new_anchors], dtype=np.int64)


def _slot_exists(space: FeatureSpace, modality: str, src: np.ndarray | None = None) -> np.ndarray:
    """Reference anchors with a ``modality`` slot; with ``src``, looked up for each new anchor."""
    exists = space.slot_exists(modality)
    if src is None:
        return exists
    return np.where(src >= 0, exists[np.clip(src, 0, None)], False)


def _prior_rows(
    key: str, new: torch.Tensor, ref_state: dict[str, torch.Tensor], src: np.ndarray, ref_anchors: list[str]
) -> torch.Tensor:
    """A buffer of the new model; for a prior matrix, the reference's rows for the anchors it had (its own GRN
    edges included, which a checkpoint keeps only there), so that a shared gene's anchor embedding is the
    reference's. Anchors new to the reference keep the new model's rows for a prior of a fixed basis (gene family,
    TSS position, the shipped GRN), and get zeros and ``known=False`` for one in the reference's own basis
    (:func:`own_basis`). Other buffers (but :data:`LEARNED_BUFFERS`) keep the new model's values."""
    old = ref_state.get(key)
    if not key.startswith(PRIOR_PREFIX) or old is None or old.shape[1:] != new.shape[1:]:
        return new
    old = old.to(new.dtype)
    out, known = new.clone(), src >= 0
    if not known.all() and own_basis(key.removeprefix(PRIOR_PREFIX), old, ref_anchors):
        out[torch.from_numpy(~known)] = 0.0  # values and known flag: the prior does not know these anchors
        logger.info(
            "holocell transfer: the %r prior of the pretrained model is in the basis of its own data; the %d anchors "
            "new to it get no row of it (known=False)", key.removeprefix(PRIOR_PREFIX), int((~known).sum()),
        )  # fmt: skip
    out[torch.from_numpy(np.flatnonzero(known))] = old[torch.from_numpy(src[known])]
    return out


def own_basis(name: str, rows: torch.Tensor, anchors: list[str]) -> bool:
    """Whether a reference's prior matrix ``rows`` (on its ``anchors``) is in a basis of the reference's own data.

    Co-expression always is (eigenvectors of the reference's correlations); gene family and TSS position never are
    (shipped tables). A GRN is when its rows are not the shipped GRN's on the same anchors, recomputed here: the
    reference was trained with its own ``grn_edges`` (a checkpoint keeps no other trace of them), or with a shipped
    table that has changed since. Rows of the shipped GRN computed for new anchors would then be in another basis.
    """
    if name == "coexpression":
        return True
    if name != "grn":
        return False
    shipped = torch.from_numpy(grn_prior(anchors).network_input())
    if shipped.shape != rows.shape or not torch.equal(shipped[:, -1], rows[:, -1].to(shipped.dtype)):
        return True
    # a tolerance for a checkpoint written on another machine (BLAS, threads), whose SVD may differ a little
    return not torch.allclose(shipped, rows.to(shipped.dtype), rtol=1e-3, atol=1e-3)


def prior_report(
    report: pd.DataFrame | None, state: dict[str, torch.Tensor], space: FeatureSpace, ref_space: FeatureSpace
) -> pd.DataFrame | None:
    """A transferred model's ``prior_report_`` (``report``: the new model's own): ``n_known`` counts the anchors its
    prior matrices (in ``state``) know once transferred, and ``n_new_unknown`` the anchors new to the reference that
    a prior does not know (every new anchor for a prior in the reference's own basis, see :func:`own_basis`)."""
    if report is None:
        return None
    new_anchor = _anchor_source(space.anchors, ref_space.anchors) < 0
    out = report.copy()
    known = {p: state[PRIOR_PREFIX + str(p)][:, -1].cpu().numpy() > 0.5 for p in out.index}
    out["n_known"] = [int(known[p].sum()) for p in out.index]
    out["n_new_unknown"] = [int((new_anchor & ~known[p]).sum()) for p in out.index]
    return out


def _map_rows(
    new: torch.Tensor, old: torch.Tensor, src: np.ndarray, known: np.ndarray, rows_known: np.ndarray
) -> torch.Tensor:
    """Known rows from ``old``; the others: mean of ``old``'s trained rows + ``new``'s random init."""
    out = new.clone()
    mean = old[torch.from_numpy(rows_known)].mean(0) if rows_known.any() else torch.zeros_like(new[0])
    out[torch.from_numpy(~known)] += mean
    idx = torch.from_numpy(np.flatnonzero(known))
    out[idx] = old[torch.from_numpy(src[known])]
    return out


KEEPABLE = ("rna", "protein")
"""Modalities a query model keeps from its reference when its data lack them (ATAC would need the peaks' TSS links)."""
_KEPT: ContextVar[dict[str, tuple[str, np.ndarray]] | None] = ContextVar("holocell_kept_modalities", default=None)


def reference_only_modalities(
    ref_modalities: Mapping[str, str], query_modalities: Mapping[str, str], ref_space: FeatureSpace, mod_names
) -> dict[str, tuple[str, np.ndarray]]:
    """The reference's RNA / protein modalities a query's setup lacks: name -> (the reference's modality name, its
    features). A modality whose name the query's MuData (``mod_names``) uses for other data is not kept."""
    return {
        m: (str(name), ref_space.maps[m].features)
        for m, name in ref_modalities.items()
        if m in KEEPABLE and m not in query_modalities and m in ref_space.maps and str(name) not in mod_names
    }


@contextmanager
def keeping(modalities: Mapping[str, tuple[str, np.ndarray]]) -> Iterator[None]:
    """Within the block, a new model keeps ``modalities`` (see :func:`reference_only_modalities`) though its data
    lack them: its feature space has their features, on the reference's anchors, and no cell is measured in them."""
    token = _KEPT.set(dict(modalities))
    try:
        yield
    finally:
        _KEPT.reset(token)


def kept_modalities() -> dict[str, tuple[str, np.ndarray]]:
    """The modalities a model built now keeps from its reference (empty outside :func:`keeping`)."""
    return dict(_KEPT.get() or {})


def overlap_report(
    new: FeatureSpace, ref: FeatureSpace, new_batches: list[str], ref_batches: list[str], kept: Collection[str] = ()
) -> pd.DataFrame:
    """How much of the new data the reference knows, per anchor set, modality and batch (``kept``: the modalities
    the new model kept from the reference, which the new data lack; they have no row).

    Returns
    -------
    DataFrame indexed by ``"anchors"`` (those of the new data's features), each modality of the new data, and
    ``"batches"``, with columns ``n_query`` (items in the new data), ``n_reference`` (in the reference), ``n_shared``
    (new items with pretrained parameters: for a modality, features whose anchor had that
    modality's slot in the reference) and ``fraction_shared`` (``n_shared / n_query``).
    """
    src = _anchor_source(new.anchors, ref.anchors)
    own = [np.asarray(f.anchor) for m, f in new.maps.items() if m not in kept]  # the new data's own anchors: not
    own = np.unique(np.concatenate(own)) if own else np.arange(new.n_anchors)  # those of the kept modalities
    rows = {"anchors": (len(own), ref.n_anchors, int((src[own] >= 0).sum()))}
    for m, fmap in ((m, f) for m, f in new.maps.items() if m not in kept):
        known = _slot_exists(ref, m, src)
        n_ref = len(ref.maps[m].features) if m in ref.maps else 0
        rows[m] = (len(fmap.features), n_ref, int(known[fmap.anchor].sum()))
    rows["batches"] = (len(new_batches), len(ref_batches), int((match_batches(new_batches, ref_batches) >= 0).sum()))
    report = pd.DataFrame.from_dict(rows, orient="index", columns=["n_query", "n_reference", "n_shared"])
    report["fraction_shared"] = report["n_shared"] / report["n_query"].clip(lower=1)
    return report


def log_report(report: pd.DataFrame) -> None:
    """Log the transfer report; warn for a modality of the new data whose features the reference knows none of."""
    parts = [f"{r.Index} {r.n_shared}/{r.n_query} ({r.fraction_shared:.0%})" for r in report.itertuples()]
    logger.info("holocell transfer: shared with the pretrained model: %s", ", ".join(parts))
    unknown = [m for m, r in report.drop(index=["anchors", "batches"], errors="ignore").iterrows()
               if r["n_query"] > 0 and r["n_shared"] == 0]  # fmt: skip
    if unknown:
        warnings.warn(
            f"The pretrained model knows none of the features of modality {unknown} (transfer_report_): they start "
            "untrained, so the transfer brings nothing for them. Check the species and the feature names (gene "
            "symbols vs Ensembl ids), or train a model on these data instead.",
            HoloCellWarning,
            stacklevel=4,
        )


# ------------------------------------------------------------------------------------ freezing
def frozen_rows(
    module: torch.nn.Module, info: TransferState, except_new: bool = True
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Which parameters (whole, or some rows) to freeze in a transferred model, and a per-parameter summary.

    Sets ``requires_grad`` of every parameter (False where nothing stays trainable). Returns
    parameter name -> ``(n_rows,)`` bool rows to hold (their gradients are zeroed and their values
    restored after each optimiser step, see :class:`holocell.train.RowFreeze`), and a DataFrame with
    ``n_params`` and ``n_trainable`` per parameter.
    """
    frozen: dict[str, np.ndarray] = {}
    rows = []
    for key, p in module.named_parameters():
        new_rows = info.new_rows.get(key)
        if key in info.fresh and except_new:
            trainable = p.numel()
        elif new_rows is not None and (except_new or key in BATCH_KEYS) and new_rows.any():
            frozen[key] = ~new_rows
            trainable = int(new_rows.sum()) * (p.numel() // len(new_rows))
        else:
            trainable = 0
        p.requires_grad_(trainable > 0)
        rows.append((key, p.numel(), trainable))
    summary = pd.DataFrame(rows, columns=["parameter", "n_params", "n_trainable"]).set_index("parameter")
    logger.info(
        "holocell freeze: %d of %d parameters trainable", summary["n_trainable"].sum(), summary["n_params"].sum()
    )
    return frozen, summary
