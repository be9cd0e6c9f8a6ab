"""Zero-shot RNA -> protein on held-out PBMC cells against the size of the pretraining data and of the model.

Issue 18 asks that ``holocell-small`` reach kNN on held-out PBMC p4 RNA -> protein zero-shot, "or the note shows
with numbers what data or size would be needed". This script measures the trend on the data this machine has:

- pretraining data: the bundled PBMC batches p1 (RNA only), p2 (protein only) and p3 (paired), the same cells
  ``scripts/train_pretrained.py`` takes from PBMC, subsampled to a fraction of each batch (seeded);
- model: ``holocell-small``'s size (d_model 64, 2 layers, 4 heads, 16 latents) at every fraction and seed, and
  d_model 32 and 128 on all the cells; default training (``train()``: about 1,500 optimiser steps);
- zero-shot: ``HoloCell.load_query_data`` onto p4 with no training (as ``load_pretrained("holocell-small", p4)``
  does), then ``transfer.py``'s scoring: p4 split in halves A / B (seeded), B's protein hidden and generated from
  its RNA (CLR per-protein Pearson, mean over proteins), and kNN label transfer A -> B on RNA-only embeddings;
- peers: kNN(15) on RNA PCA fitted on the pretraining fraction's paired cells (p3: it sees no p4 protein either,
  the zero-shot peer), and ``transfer.py``'s kNN(15) fitted on p4's own half A (the issue's target, which sees
  the held-out donor's protein).

The last section fits the holocell-small-size Pearson (mean over seeds) against log2 of the pretraining cells
and reports, per doubling of the data, the gain and the number of cells at which the line would reach the
in-batch kNN: an extrapolation from at most 1,200 cells of one kind of tissue, stated as such.

Usage: ``python benchmarks/zeroshot_scaling.py [--quick] [--seeds 0 1] [--out benchmarks/results]``.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import mudata as md
import numpy as np
import torch
from _common import parser, quiet, score_regression, write_results
from transfer import HELD_OUT, evaluate, held_out_split

import holocell as hc
import holocell.evaluation as ev

SMALL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_latents": 16}
FRACTIONS = {"quick": (0.25, 1.0), "full": (0.125, 0.25, 0.5, 1.0)}
WIDTHS = {"quick": (), "full": (32, 128)}
QUICK_EPOCHS = 3


def pretraining_fraction(fraction: float, seed: int) -> md.MuData:
    """PBMC p1-p3 (p4 left out), ``fraction`` of each batch's cells drawn without replacement."""
    full = hc.data.pbmc_cite_mosaic()
    rng = np.random.default_rng(seed)
    keep = []
    for batch, cells in full.obs.groupby("batch", observed=True).groups.items():
        if str(batch) == HELD_OUT:
            continue
        cells = np.asarray(cells)
        keep.extend(rng.choice(cells, max(2, round(fraction * len(cells))), replace=False))
    keep = [c for c in full.obs_names if c in set(keep)]
    mods = {m: full[m][full[m].obs_names.isin(keep)].copy() for m in full.mod}
    out = md.MuData(mods)
    out.obs = out.obs.join(full.obs[["batch", "celltype"]])
    return out


def zero_shot_knn(train: md.MuData, p4: md.MuData, b, truth: np.ndarray) -> dict:
    """kNN(15) on RNA PCA fitted on the pretraining data's paired cells, predicting p4 half B's protein."""
    paired = np.intersect1d(train["rna"].obs_names, train["adt"].obs_names)
    genes = p4["rna"].var_names
    x_ref = train["rna"][paired][:, genes].X
    y_ref = ev.clr(train["adt"][paired][:, p4["adt"].var_names].X)
    n_pcs = int(min(50, len(paired) - 1))
    pred = ev.pca_knn_predict(x_ref, y_ref, p4["rna"][b].X, n_pcs=n_pcs, k=min(15, len(paired)), seed=0)
    return score_regression("kNN(15) on RNA PCA, fitted on the pretraining data's paired cells", ev.clr(truth), pred)


def run_one(fraction: float, seed: int, sizes: dict, epochs: int | None, split_seed: int) -> list[dict]:
    """Pretrain one model on ``fraction`` of p1-p3 and score it zero-shot on p4 (one process, one thread)."""
    torch.set_num_threads(1)
    quiet()
    p4, a, b, truth = held_out_split(split_seed)
    hc.HoloCell.setup_mudata(p4, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    train = pretraining_fraction(fraction, seed)
    hc.HoloCell.setup_mudata(train, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(train, **sizes, seed=seed)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, seed=seed, enable_progress_bar=False)
    train_s = time.perf_counter() - t0
    query = hc.HoloCell.load_query_data(p4, model)
    extra = {"fraction": fraction, "cells": train.n_obs, "seed": seed, "d_model": sizes["d_model"],
             "epochs": len(model.history_),
             "train_s": round(train_s, 1)}
    rows = [{**evaluate(f"holocell zero-shot (d_model {sizes['d_model']})", query, p4, a, b, truth), **extra}]
    if sizes == SMALL:
        rows.append({**zero_shot_knn(train, p4, b, truth), **extra, "d_model": None, "epochs": None,
                     "train_s": None})
    print(rows, flush=True)
    return rows


def trend(rows: list[dict], target: float) -> dict:
    """Least-squares line of the holocell-small-size Pearson (mean over seeds) against log2(cells)."""
    pts = {}
    for r in rows:
        if r["method"].startswith("holocell") and r["d_model"] == SMALL["d_model"]:
            pts.setdefault(r["cells"], []).append(r["pearson_mean"])
    cells = np.array(sorted(pts))
    mean = np.array([np.mean(pts[c]) for c in cells])
    if len(cells) < 2:
        return {"points": len(cells)}
    slope, intercept = np.polyfit(np.log2(cells), mean, 1)
    needed = 2 ** ((target - intercept) / slope) if slope > 0 else float("inf")
    return {"points": len(cells), "gain_per_doubling": float(slope), "intercept_log2": float(intercept),
            "cells_to_reach_target": float(needed), "target": target,
            "doublings_beyond_largest": float(np.log2(needed / cells.max())) if slope > 0 else float("inf")}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="model, training and subsampling seeds")
    p.add_argument("--jobs", type=int, default=2, help="models trained at once, one thread each")
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    epochs = QUICK_EPOCHS if args.quick else None
    quiet()
    t_start = time.perf_counter()
    jobs = [(fraction, seed, SMALL) for fraction in FRACTIONS[mode] for seed in args.seeds]
    jobs += [(1.0, args.seeds[0], {**SMALL, "d_model": width}) for width in WIDTHS[mode]]
    jobs.sort(key=lambda job: -job[0] * job[2]["d_model"])  # longest first
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, *job, epochs, args.seed) for job in jobs]
        rows = [row for future in futures for row in future.result()]
    rows.sort(key=lambda r: (r["method"], r["d_model"] or 0, r["cells"], r["seed"]))
    p4, a, b, truth = held_out_split(args.seed)

    y_a = ev.clr(p4["adt"][a].X)
    in_batch = score_regression("kNN(15) on RNA PCA(50), fitted on p4's own half A (the issue's target)",
                                ev.clr(truth), ev.pca_knn_predict(p4["rna"][a].X, y_a, p4["rna"][b].X, n_pcs=50,
                                                                  k=15, seed=0))
    rows.append(in_batch)
    fit = trend(rows, in_batch["pearson_mean"])
    results = {
        "task": f"zero-shot RNA -> protein on held-out PBMC {HELD_OUT} (half B), models pretrained on fractions of "
        "PBMC p1-p3",
        "rows": rows, "trend": fit, "seeds": args.seeds, "quick": args.quick,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    columns = ["method", "cells", "d_model", "seed", "pearson_mean", "pearson_median", "rmse",
               "knn_label_transfer_rna", "epochs", "train_s"]
    fit_rows = [{"quantity": k, "value": v} for k, v in fit.items()]
    notes = (
        f"Pretraining: PBMC p1 (RNA only), p2 (protein only), p3 (paired), a fraction of each batch's 400 cells; "
        f"{HELD_OUT} never seen. Zero-shot = `HoloCell.load_query_data(p4, model)` without training. The trend line "
        "is fitted to the d_model 64 rows (mean over seeds) against log2(pretraining cells); its extrapolation beyond "
        "1,200 cells of one tissue is a line through a few points, not a measurement. "
        f"Total {results['total_seconds']:.0f} s."
    )
    write_results(
        args.out, "zeroshot_scaling", "Zero-shot transfer against pretraining data and model size", results,
        [("Held-out p4, RNA -> protein (half B) and label transfer A -> B", rows, columns),
         ("Trend of the d_model 64 rows: Pearson against log2(pretraining cells)", fit_rows, ["quantity", "value"])],
        notes, settings={"holocell": {**SMALL, "max_epochs": epochs}, "fractions": FRACTIONS[mode],
                         "widths": WIDTHS[mode]},
    )


if __name__ == "__main__":
    main()
