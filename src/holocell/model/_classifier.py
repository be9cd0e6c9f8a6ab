"""A cell-type head fine-tuned together with the encoder, semi-supervised (used by ``tl.annotate(method="finetune")``).

A copy of the model's module is trained further on every cell with its own unsupervised objective (masked
diffusion, the cell state's ELBO and the alignment term), plus the cross-entropy of a linear head on the cell state
of the labelled reference cells, as scANVI adds a classifier to scVI. The unsupervised part keeps unlabelled and
single-modality cells in the same space, so the head also labels cells measured with other modalities. A
view-consistency term pulls the head's prediction from each single modality of a multi-modal cell towards its
prediction from all of them, so unlabelled paired cells bridge the reference's modalities and the query's. A tenth of
the reference cells is held out: the run stops when their loss stops falling, and a softmax temperature fitted on
them calibrates the confidence. The head starts at a logistic regression on the frozen cell states. Every parameter
of the copy is trained, also those the user's model holds frozen. The user's model is not changed, and neither is
the global random state of torch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train._rng import global_random_state_kept
from ..vocab import MODALITIES

if TYPE_CHECKING:
    from ..nn import HoloCellModule
    from ._holocell import HoloCell

#: candidate softmax temperatures of the calibration (log-spaced). None is below 1: the calibration only softens.
#: On held-out cells the head classifies without error, the likelihood rises as the temperature falls, so a grid
#: reaching below 1 sharpened the head (0.25, its floor, with held-out accuracy 1 and query accuracy 0.87), and the
#: query, in other batches or modalities, is classified less well than held-out reference cells, never better.
TEMPERATURES = np.exp(np.linspace(0.0, np.log(8.0), 31))


@dataclass
class FinetunedClassifier:
    """A fine-tuned module copy, its cell-type head and the calibrated softmax temperature."""

    module: HoloCellModule
    head: nn.Linear
    classes: np.ndarray
    temperature: float
    history: list[float]
    best_epoch: int = 0
    """Epoch whose state was kept (0: the warm start, when no fine-tuned epoch beat it on the held-out cells)."""

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor], modalities: Sequence[str] | None) -> torch.Tensor:
        """``(B, n_classes)`` head logits of a mini-batch (embedded from ``modalities``, default all observed)."""
        return self.head(self.module.embed(batch, modalities))


def finetune_classifier(
    model: HoloCell,
    arrays,
    codes: np.ndarray,
    classes: np.ndarray,
    *,
    max_epochs: int = 20,
    lr: float = 1e-3,
    classification_weight: float = 10.0,
    balance_classes: bool = False,
    consistency_weight: float = 1.0,
    batch_size: int = 128,
    patience: int = 3,
    device: torch.device,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> FinetunedClassifier:
    """Fine-tune a copy of ``model``'s module with a cell-type head.

    Every parameter of the copy is trained, also those ``model`` holds frozen (``requires_grad`` False, e.g. after
    :meth:`~holocell.HoloCell.load_query_data`): the caller asked for fine-tuning. The run is seeded by ``seed``,
    and the caller's global random state is put back afterwards (:func:`holocell.train._rng.global_random_state_kept`).

    Parameters
    ----------
    model
        The trained model (left unchanged, its frozen parameters frozen).
    arrays
        Checked counts of all cells (``model._arrays``).
    codes
        ``(n_cells,)`` class index of each reference cell, -1 for the others (unlabelled cells still train
        the unsupervised objective).
    classes
        Class names, in code order.
    max_epochs, lr, classification_weight, batch_size, patience
        Epochs over all cells at most; learning rate of the module (the head's is 10x); weight of the
        cross-entropy beside the unsupervised loss (scANVI's classification ratio); cells per step; epochs without
        a better held-out loss before stopping. The warm start (a logistic regression on the frozen cell states)
        is scored too, and kept when no fine-tuned epoch beats it.
    consistency_weight
        Weight of a view-consistency term: on every cell measured with several modalities, the head's prediction
        from each modality alone is pulled (KL divergence) towards its prediction from all of them, held fixed.
        Unlabelled paired cells so carry the reference's labels over to the other modalities, the way a bridge of
        paired cells does. 0: off.
    balance_classes
        Weigh each reference cell's cross-entropy by the inverse frequency of its class (rare types count as much
        as common ones in total).
    device, seed, progress_bar
        Where to train, the seed of the split, the order and the head, and the progress display.

    Returns
    -------
    The fine-tuned copy, its head and the calibrated temperature.
    """
    with global_random_state_kept():  # seeds torch for the run, then restores the caller's state (as train does)
        torch.manual_seed(seed)
        return _finetune(
            model, arrays, codes, classes, max_epochs=max_epochs, lr=lr, classification_weight=classification_weight,
            balance_classes=balance_classes, consistency_weight=consistency_weight, batch_size=batch_size,
            patience=patience, device=device, seed=seed, progress_bar=progress_bar,
        )  # fmt: skip


def _finetune(
    model, arrays, codes, classes, *, max_epochs, lr, classification_weight, balance_classes, consistency_weight,
    batch_size, patience, device, seed, progress_bar,
) -> FinetunedClassifier:  # fmt: skip
    """:func:`finetune_classifier`'s run (the caller seeds torch and restores its random state)."""
    rng = np.random.default_rng(seed)
    labelled = np.flatnonzero(codes >= 0)
    held = rng.choice(labelled, size=max(1, len(labelled) // 10), replace=False) if len(labelled) >= 20 else labelled[:0]
    train_codes = codes.copy()
    train_codes[held] = -1
    module = copy.deepcopy(model.module).to(device)
    for p in module.parameters():  # frozen ones too (e.g. a query model's): fine-tuning was asked for
        p.requires_grad_(True)
    head = _warm_start(model, module, arrays, train_codes, len(classes), batch_size, device, seed)
    weights = _class_weights(train_codes, len(classes), device) if balance_classes else None
    optimiser = torch.optim.AdamW(
        [{"params": module.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 10 * lr}], weight_decay=1e-4
    )
    best, best_state, best_epoch, history, waited = np.inf, None, 0, [], 0
    if len(held):  # the warm start (the frozen-state classifier) is a candidate too: fine-tuning has to beat it
        best = _held_loss(model, module, head, arrays, codes, held, batch_size, device)
        best_state = (copy.deepcopy(module.state_dict()), copy.deepcopy(head.state_dict()))
    for epoch in range(1, max_epochs + 1):
        module.train()
        order = rng.permutation(arrays.n_cells)
        start = 0
        for batch in model._batches(arrays, order, batch_size, device, "fine-tuning", progress_bar):
            rows = order[start : start + len(batch["present"])]
            start += len(rows)
            loss = module.loss(batch).loss
            y = torch.as_tensor(train_codes[rows], device=device)
            has = (y >= 0).nonzero().squeeze(1)
            tokens = module.tokenize(batch)
            if len(has):
                z = module.network.embedding(tokens.select(has))
                loss = loss + classification_weight * F.cross_entropy(head(z), y[has], weight=weights)
            if consistency_weight > 0:
                loss = loss + consistency_weight * _view_consistency(module, head, tokens)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if not len(held):
            continue
        score = _held_loss(model, module, head, arrays, codes, held, batch_size, device)
        history.append(score)
        if score < best - 1e-4:
            best, best_epoch, waited = score, epoch, 0
            best_state = (copy.deepcopy(module.state_dict()), copy.deepcopy(head.state_dict()))
        else:
            waited += 1
            if waited >= patience:
                break
    if not len(held):  # nothing to stop on: the last epoch is kept
        best_epoch = max_epochs
    if best_state is not None:
        module.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    module.eval()
    temperature = 1.0
    if len(held):
        logits = _held_logits(model, module, head, arrays, held, batch_size, device)
        temperature = fit_temperature(logits, torch.as_tensor(codes[held], device=device))
    return FinetunedClassifier(module, head, np.asarray(classes), temperature, history, best_epoch)


def _view_consistency(module: HoloCellModule, head: nn.Linear, tokens) -> torch.Tensor:
    """Mean KL divergence of the head's prediction from each single modality to its (fixed) prediction from all
    the modalities of the cells measured with two or more."""
    from ..nn._align import only

    present = tokens.present[:, [MODALITIES.index(m) for m in module.modalities]]
    multi = (present.sum(1) >= 2).nonzero().squeeze(1)
    total = tokens.library.new_zeros(())
    if not len(multi):
        return total
    cells = tokens.select(multi)
    with torch.no_grad():
        target = F.log_softmax(head(module.network.embedding(cells)), dim=-1)
    terms = 0
    for k, m in enumerate(module.modalities):
        has = present[multi, k].nonzero().squeeze(1)
        if not len(has):
            continue
        view = only(cells.select(has), [m], module.modalities)
        log_p = F.log_softmax(head(module.network.embedding(view)), dim=-1)
        total = total + F.kl_div(log_p, target[has], log_target=True, reduction="batchmean")
        terms += 1
    return total / max(terms, 1)


def _class_weights(codes: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    """Per-class cross-entropy weights: scikit-learn's ``"balanced"`` weights of the labelled cells (inverse class
    frequency, mean 1 over the cells); 0 for a class without labelled cells."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = codes[codes >= 0]
    present = np.unique(labels)
    weights = np.zeros(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.as_tensor(weights, dtype=torch.float32, device=device)


@torch.no_grad()
def _warm_start(model, module, arrays, codes, n_classes, batch_size, device, seed) -> nn.Linear:
    """The head, started at a logistic regression on the frozen cell states of the training reference cells (so
    fine-tuning starts from the frozen-embedding classifier); classes absent there start with a very low bias."""
    from sklearn.linear_model import LogisticRegression

    head = nn.Linear(model.config.embedding_dim, n_classes).to(device)
    cells = np.flatnonzero(codes >= 0)
    present = np.unique(codes[cells])
    if len(present) < 2:
        return head
    z = _embed(model, module, arrays, cells, batch_size, device)
    lr = LogisticRegression(max_iter=1000, random_state=seed).fit(z.float().cpu().numpy(), codes[cells])
    weight = torch.zeros_like(head.weight)
    bias = torch.full_like(head.bias, -10.0)
    weight[torch.as_tensor(lr.classes_, device=device)] = torch.as_tensor(lr.coef_, dtype=weight.dtype, device=device)
    bias[torch.as_tensor(lr.classes_, device=device)] = torch.as_tensor(lr.intercept_, dtype=bias.dtype, device=device)
    head.weight.data.copy_(weight)
    head.bias.data.copy_(bias)
    return head


@torch.no_grad()
def _embed(model, module, arrays, cells, batch_size, device) -> torch.Tensor:
    """``(len(cells), n_latent)`` cell states of ``cells`` under ``module`` (eval mode, every observed modality)."""
    module.eval()
    return torch.cat([module.embed(b) for b in model._batches(arrays, cells, batch_size, device, "embedding", False)])


@torch.no_grad()
def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The softmax temperature of :data:`TEMPERATURES` (all >= 1) with the lowest cross-entropy of ``logits`` on
    ``target``: 1 when the head is not overconfident on those cells."""
    nll = [float(F.cross_entropy(logits / t, target)) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


@torch.no_grad()
def _held_logits(model, module, head, arrays, cells, batch_size, device) -> torch.Tensor:
    return head(_embed(model, module, arrays, cells, batch_size, device))


def _held_loss(model, module, head, arrays, codes, held, batch_size, device) -> float:
    """Cross-entropy of the head on the held-out reference cells (the early-stopping score)."""
    logits = _held_logits(model, module, head, arrays, held, batch_size, device)
    return float(F.cross_entropy(logits, torch.as_tensor(codes[held], device=device)))


@torch.no_grad()
def predict_proba(
    model: HoloCell,
    classifier: FinetunedClassifier,
    arrays,
    cells: np.ndarray,
    *,
    modalities: Sequence[str] | None,
    batch_size: int,
    device: torch.device,
    progress_bar: bool | None = None,
) -> np.ndarray:
    """``(len(cells), n_classes)`` calibrated class probabilities."""
    out = []
    for batch in model._batches(arrays, cells, batch_size, device, "annotating", progress_bar):
        logits = classifier.logits(batch, modalities) / classifier.temperature
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(classifier.classes)))
