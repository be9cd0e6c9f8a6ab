"""Is ``tl.annotate``'s confidence calibrated, and does ``"unknown"`` flag a cell type the reference lacks?

One holocell model on the bundled PBMC CITE-seq data (no labels in training), then label transfer across batches
in both directions between the paired batches p3 and p4 (RNA + protein):

- **calibration**: every type in the reference; accuracy, macro F1 and the expected calibration error of the
  confidence column (ECE, 10 equal-width bins), per method;
- **a type the reference lacks**: each type with at least 5 query cells is removed from the reference in turn
  (the query keeps it); the AUROC of (1 - confidence) for telling its cells from the known types' cells, and the
  share of each flagged ``"unknown"`` at ``unknown_threshold=0.5``; averaged over the types.

holocell's frozen methods (``"both"``, the default, and ``"knn"``) run with ``novelty_level`` at its default (the
confidence lowered for cells far from the reference) and off (``None``: the class probability alone, the
behaviour before it). The fine-tuned head runs on the calibration task only (minutes per run). The peer is
logistic regression on PCA(50) of log-normalised RNA + CLR protein (its largest class probability as confidence).
``novelty_level`` was set a priori (0.01, a conventional test level), not chosen on these tasks.

Run: ``python benchmarks/annotation_confidence.py [--quick]``; writes ``annotation_confidence.json`` / ``.md``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from _common import parser, quiet, write_results
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

import holocell as hc
from holocell import evaluation as ev

LABELS, THRESHOLD, MIN_QUERY_CELLS = "celltype", 0.5, 5
DIRECTIONS = (("p3_0", "p4_0"), ("p4_0", "p3_0"))


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: ``|accuracy - mean confidence|`` per equal-width confidence bin, weighted."""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(np.mean(which == b) * abs(correct[which == b].mean() - confidence[which == b].mean())
                     for b in range(bins) if (which == b).any()))  # fmt: skip


def holocell_predict(mdata, model, ref, q, method, level, args):
    out = hc.tl.annotate(mdata, model, labels_key=LABELS, query=q, reference=ref, method=method, novelty_level=level,
                         max_epochs=args.finetune_epochs, seed=args.seed, progress_bar=False, copy=True)  # fmt: skip
    return out.obs["holocell_label"].astype(object).to_numpy()[q], out.obs["holocell_label_confidence"].to_numpy()[q]


def lr_predict(x, labels, ref, q, seed):
    pcs = PCA(n_components=50, random_state=seed).fit_transform(x[ref | q])
    z = np.zeros((len(x), pcs.shape[1]))
    z[ref | q] = pcs
    scale = StandardScaler().fit(z[ref])
    lr = LogisticRegression(max_iter=2000, random_state=seed).fit(scale.transform(z[ref]), labels[ref])
    proba = lr.predict_proba(scale.transform(z[q]))
    return lr.classes_[proba.argmax(1)], proba.max(1)


def methods():
    return [("holocell (both, default)", "both", hc.tl._annotate.NOVELTY_LEVEL),
            ("holocell (both, novelty_level=None)", "both", None),
            ("holocell (knn)", "knn", hc.tl._annotate.NOVELTY_LEVEL),
            ("holocell (knn, novelty_level=None)", "knn", None)]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=34, help="holocell training epochs (perturbation.py's PBMC model)")
    p.add_argument("--finetune-epochs", type=int, default=20)
    args = p.parse_args()
    quiet()
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    mdata = hc.data.pbmc_cite_mosaic()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, d_model=64, n_latents=16, seed=args.seed)
    epochs = 3 if args.quick else args.epochs
    model.train(max_epochs=epochs, enable_progress_bar=False, seed=args.seed)
    train_s = time.perf_counter() - t0
    obs = mdata.obs
    labels = obs[LABELS].astype(object).to_numpy()
    paired = obs_names_in_both(mdata)
    x = np.zeros((mdata.n_obs, mdata["rna"].n_vars + mdata["adt"].n_vars))
    x[paired] = np.hstack([ev.log_normalize(mdata["rna"][obs.index[paired]].X), ev.clr(mdata["adt"][obs.index[paired]].X)])
    calibration, novel_rows = [], []
    for ref_batch, q_batch in DIRECTIONS:
        ref0 = (obs["batch"] == ref_batch).to_numpy() & obs[LABELS].notna().to_numpy() & paired
        q = (obs["batch"] == q_batch).to_numpy() & obs[LABELS].notna().to_numpy() & paired
        task = f"{ref_batch[:2]} -> {q_batch[:2]}"
        finetune = [] if args.quick else [("holocell (finetune)", "finetune", hc.tl._annotate.NOVELTY_LEVEL),
                                          ("holocell (finetune, novelty_level=None)", "finetune", None)]  # fmt: skip
        for name, method, level in [*methods(), *finetune, ("logistic regression on PCA(50) (peer)", None, None)]:
            pred, conf = (lr_predict(x, labels, ref0, q, args.seed) if method is None else
                          holocell_predict(mdata, model, ref0, q, method, level, args))  # fmt: skip
            right = pred == labels[q]
            calibration.append({"task": task, "method": name, "accuracy": right.mean(),
                                "macro_f1": f1_score(labels[q], pred, average="macro"), "ece": ece(conf, right),
                                "mean_confidence": conf.mean(), "unknown_at_0.5": np.mean(conf < THRESHOLD)})  # fmt: skip
        for novel in sorted(set(labels[q])):
            is_novel = labels[q] == novel
            if is_novel.sum() < MIN_QUERY_CELLS or (labels[ref0] == novel).sum() == 0:
                continue
            ref = ref0 & (labels != novel)
            for name, method, level in [*methods(), ("logistic regression on PCA(50) (peer)", None, None)]:
                pred, conf = (lr_predict(x, labels, ref, q, args.seed) if method is None else
                              holocell_predict(mdata, model, ref, q, method, level, args))  # fmt: skip
                novel_rows.append({"task": task, "novel_type": novel, "method": name,
                                   "auroc_novel": roc_auc_score(is_novel, -conf),
                                   "novel_unknown": np.mean(conf[is_novel] < THRESHOLD),
                                   "known_unknown": np.mean(conf[~is_novel] < THRESHOLD),
                                   "known_accuracy": np.mean(pred[~is_novel] == labels[q][~is_novel])})  # fmt: skip
    novel = pd.DataFrame(novel_rows)
    summary = (novel.groupby(["task", "method"], sort=False)[["auroc_novel", "novel_unknown", "known_unknown",
                                                               "known_accuracy"]].mean().reset_index())  # fmt: skip
    summary.insert(2, "n_types", novel.groupby(["task", "method"], sort=False).size().to_numpy())
    results = {"quick": args.quick, "seed": args.seed, "train_s": train_s, "calibration": calibration,
               "novel_types": novel_rows, "novel_summary": summary.to_dict("records")}  # fmt: skip
    write_results(
        args.out, "annotation_confidence", "Annotation confidence: calibration and cell types the reference lacks",
        results,
        [("Calibration (every type in the reference; ECE of the confidence column, 10 bins)", calibration,
          ["task", "method", "accuracy", "macro_f1", "ece", "mean_confidence", "unknown_at_0.5"]),
         (f"A type the reference lacks (each type with >= {MIN_QUERY_CELLS} query cells removed from the reference in "
          "turn; mean over the types)", summary.to_dict("records"),
          ["task", "method", "n_types", "auroc_novel", "novel_unknown", "known_unknown", "known_accuracy"]),
         ("Per type", novel_rows, ["task", "novel_type", "method", "auroc_novel", "novel_unknown", "known_unknown"])],
        f"holocell: d_model 64, 16 latents, {epochs} epochs on all 1,600 PBMC cells, no labels in training "
        f"({train_s:.0f} s). `auroc_novel`: AUROC of 1 - confidence for the removed type's query cells against the "
        f"others'; `novel_unknown` / `known_unknown`: shares with confidence below {THRESHOLD} (labelled "
        "\"unknown\" with `unknown_threshold=0.5`). One seed.",
        settings={"epochs": epochs, "finetune_epochs": args.finetune_epochs},
    )


def obs_names_in_both(mdata) -> np.ndarray:
    """Cells measured with RNA and protein (the peer reads both)."""
    return mdata.obs_names.isin(mdata["rna"].obs_names) & mdata.obs_names.isin(mdata["adt"].obs_names)


if __name__ == "__main__":
    main()
