"""Transfer of pretrained weights onto a model of new data, matched by anchor name; freezing.

Anchors are per dataset, so a new MuData gets its own anchors (genes, peak-linked genes,
antibodies' genes). Per-anchor parameters are copied row by row from the reference for every
anchor name the reference knows (and, for a modality's value slot, only where the reference had
that slot); anchors new to the reference start at the mean of the reference's rows plus the usual
small random initialisation. Batch embeddings are matched by batch name; new batches start from
the reference's "unseen batch" row, which is what a zero-shot embedding of an unseen batch uses
anyway. All other parameters are copied as they are; modules the reference lacks (e.g. ATAC parts
when the reference had no ATAC) keep their fresh initialisation. Buffers are always the new
model's own (they describe the new data's features).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mudata as md
import numpy as np
import pandas as pd
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..vocab import FeatureSpace

if TYPE_CHECKING:
    from ._holocell import HoloCell

logger = logging.getLogger("holocell")

ANCHOR_KEY = "network.anchor.weight"
BATCH_KEY = "network.batch.weight"


@dataclass
class TransferState:
    """What a transferred model took from its reference (used by :func:`freeze`).

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
    """``"network.slots.rna.anchor_value"`` -> ``"rna"``; None for modality-free per-anchor params."""
    parts = key.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "slots" else None


def _is_per_anchor(key: str) -> bool:
    return key == ANCHOR_KEY or key.endswith(".anchor_value")


def transfer(cls: type[HoloCell], mdata: md.MuData, ref_state: dict, ref_config: dict) -> HoloCell:
    """Build a model on ``mdata`` (set up already) with the reference's sizes and weights.

    Parameters
    ----------
    cls
        The model class.
    mdata
        New data, registered with ``cls.setup_mudata``.
    ref_state
        Reference ``module.state_dict()``.
    ref_config
        Reference config (see :func:`holocell.model._checkpoint.model_config`).
    """
    if "_scvi_uuid" not in mdata.uns:
        raise ValueError(
            "Set up the new MuData first: HoloCell.setup_mudata(mdata, modalities={...}, batch_key=..., "
            "species=...), then load_pretrained(name, mdata)."
        )
    model = cls(mdata, **ref_config["init_params"])
    ref_space = FeatureSpace.from_dict(ref_config["feature_space"])
    ref_batches = [str(b) for b in ref_config["batch_categories"]]
    state = model.module.state_dict()
    buffers = {k for k, _ in model.module.named_buffers()}
    src = _anchor_source(model.feature_space.anchors, ref_space.anchors)
    info = TransferState()
    new_state = {}
    for key, new in state.items():
        if key in buffers:
            new_state[key] = new
            continue
        if key not in ref_state:
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
            used = model.feature_space.slot_exists(slot) if slot is not None else np.ones(len(new), bool)
            info.new_rows[key] = used & ~known  # rows the new data uses that have no pretrained value
        elif key == BATCH_KEY and old.shape[1:] == new.shape[1:]:
            b_src = np.array([ref_batches.index(b) if b in ref_batches else -1 for b in model.batch_categories_])
            unseen = old[len(ref_batches)]
            mapped = torch.stack([old[i] if i >= 0 else unseen for i in b_src] + [unseen])
            new_state[key] = mapped
            info.new_rows[key] = np.append(b_src < 0, False)
        elif old.shape == new.shape:
            new_state[key] = old
        else:
            raise ValueError(
                f"Pretrained parameter {key} has shape {tuple(old.shape)}, the new model needs "
                f"{tuple(new.shape)}; the checkpoint is from an incompatible holocell version."
            )
    model.module.load_state_dict(new_state)
    model._transfer_state = info
    model.transfer_report_ = overlap_report(model.feature_space, ref_space, model.batch_categories_, ref_batches)
    model.is_trained_ = False
    model.module.eval()
    _log_report(model.transfer_report_)
    return model


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


def overlap_report(
    new: FeatureSpace, ref: FeatureSpace, new_batches: list[str], ref_batches: list[str]
) -> pd.DataFrame:
    """How much of the new data the reference knows, per anchor set, modality and batch.

    Returns
    -------
    DataFrame indexed by ``"anchors"``, each modality of the new data, and ``"batches"``, with
    columns ``n_query`` (items in the new data), ``n_reference`` (in the reference), ``n_shared``
    (new items with pretrained parameters: for a modality, features whose anchor had that
    modality's slot in the reference) and ``fraction_shared`` (``n_shared / n_query``).
    """
    src = _anchor_source(new.anchors, ref.anchors)
    rows = {"anchors": (new.n_anchors, ref.n_anchors, int((src >= 0).sum()))}
    for m, fmap in new.maps.items():
        known = _slot_exists(ref, m, src)
        n_ref = len(ref.maps[m].features) if m in ref.maps else 0
        rows[m] = (len(fmap.features), n_ref, int(known[fmap.anchor].sum()))
    rows["batches"] = (len(new_batches), len(ref_batches), len(set(new_batches) & set(ref_batches)))
    report = pd.DataFrame.from_dict(rows, orient="index", columns=["n_query", "n_reference", "n_shared"])
    report["fraction_shared"] = report["n_shared"] / report["n_query"].clip(lower=1)
    return report


def _log_report(report: pd.DataFrame) -> None:
    parts = [f"{r.Index} {r.n_shared}/{r.n_query} ({r.fraction_shared:.0%})" for r in report.itertuples()]
    logger.info("holocell transfer: shared with the pretrained model: %s", ", ".join(parts))


# ------------------------------------------------------------------------------------ freezing
class _RowFreeze:
    """Holds some rows of parameters at fixed values: zero gradient, restored after every optimiser step.

    Restoring after the step also undoes decoupled weight decay, so the rows stay exactly equal.
    """

    def __init__(self, module: torch.nn.Module, frozen: dict[str, np.ndarray]) -> None:
        params = dict(module.named_parameters())
        self.rows = {}
        self.handles = []
        for key, rows in frozen.items():
            p = params[key]
            mask = torch.from_numpy(rows).to(p.device)
            self.rows[key] = (weakref.ref(p), mask, p.detach()[mask].clone())
            self.handles.append(p.register_hook(_zero_rows(mask.view((-1,) + (1,) * (p.dim() - 1)))))
        ref = weakref.ref(self)
        self.handles.append(
            register_optimizer_step_post_hook(
                lambda opt, args, kwargs: (r := ref()) is not None and r.restore()
            )
        )

    @torch.no_grad()
    def restore(self) -> None:
        for p_ref, mask, values in self.rows.values():
            p = p_ref()
            if p is not None:
                p[mask] = values.to(p.device, p.dtype)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _zero_rows(mask: torch.Tensor):
    """Gradient hook that zeroes the rows in ``mask``."""
    return lambda grad: grad.masked_fill(mask.to(grad.device), 0.0)


def freeze(model: HoloCell, except_new: bool = True) -> pd.DataFrame:
    """Freeze pretrained parameters of a transferred model (see :meth:`HoloCell.freeze`)."""
    info: TransferState | None = getattr(model, "_transfer_state", None)
    if info is None:
        raise ValueError(
            "freeze() applies to a model made by HoloCell.load_pretrained(name, mdata) or "
            "HoloCell.load_query_data; this model has no pretrained reference."
        )
    unfreeze(model)
    frozen_rows: dict[str, np.ndarray] = {}
    rows = []
    for key, p in model.module.named_parameters():
        new_rows = info.new_rows.get(key)
        if key in info.fresh and except_new:
            trainable = p.numel()
        elif new_rows is not None and (except_new or key == BATCH_KEY) and new_rows.any():
            frozen_rows[key] = ~new_rows
            trainable = int(new_rows.sum()) * (p.numel() // len(new_rows))
        else:
            trainable = 0
        p.requires_grad_(trainable > 0)
        rows.append((key, p.numel(), trainable))
    model._row_freeze = _RowFreeze(model.module, frozen_rows) if frozen_rows else None
    summary = pd.DataFrame(rows, columns=["parameter", "n_params", "n_trainable"]).set_index("parameter")
    logger.info(
        "holocell freeze: %d of %d parameters trainable",
        summary["n_trainable"].sum(),
        summary["n_params"].sum(),
    )
    return summary


def unfreeze(model: HoloCell) -> None:
    """Make every parameter trainable again."""
    hold = getattr(model, "_row_freeze", None)
    if hold is not None:
        hold.remove()
    model._row_freeze = None
    for p in model.module.parameters():
        p.requires_grad_(True)
