"""Pretrained checkpoint ``holocell-small``: load time, overlap, zero-shot vs fine-tuned on held-out cells.

Held-out data: PBMC batch ``p4_0`` (400 paired RNA + protein cells), which the checkpoint never saw
(``scripts/train_pretrained.py`` leaves it out). Its cells are split in two halves (seeded):
half A keeps RNA + protein, half B keeps RNA only; B's protein is hidden and scored.

- zero-shot: ``load_pretrained("holocell-small", p4)``, no training; generate B's protein from RNA,
  embed from RNA only; also with p4 given as RNA-only data (no protein modality: the query model keeps the
  checkpoint's);
- fine-tuned: the same, then ``train`` on p4 (A paired, B RNA only) for ``--epochs`` epochs;
- from scratch: a model of the same size trained on p4 alone for the same epochs;
- peers, fit on half A in the same run: kNN(15) and ridge on RNA PCA(50), mean predictor.

Scores: per-protein Pearson on CLR values (mean over proteins that vary) and RMSE for B; kNN(15)
label-transfer accuracy from A's embeddings to B's (cell-type labels of B are only used to score).
Also: overlap of ``pbmc_multiome_1k`` (10x multiome, GRCh38, RNA + ATAC) with the checkpoint.

Usage: ``python benchmarks/transfer.py [--epochs 10] [--out benchmarks/results]``.
Timings are wall-clock on a shared CPU and vary with load; quality numbers are seeded.
"""

from __future__ import annotations

import os
import time

import mudata as md
import numpy as np
import pandas as pd
from _common import ROOT, parser, quiet, score_regression, write_results
from _verdict import verdicts

import holocell as hc
import holocell.evaluation as ev

HELD_OUT = "p4_0"
CHECKPOINT = "holocell-small"
#: holocell's settings in this script: fine-tuning / from-scratch epochs
HOLOCELL = {"quick": {"max_epochs": 2}, "full": {"max_epochs": 10}}


def held_out_split(seed: int = 0) -> tuple[md.MuData, np.ndarray, np.ndarray, np.ndarray]:
    """p4 as a MuData whose protein is present for half A only; returns (mdata, A, B, B's protein counts)."""
    full = hc.data.pbmc_cite_mosaic()
    cells = full.obs_names[(full.obs["batch"] == HELD_OUT).to_numpy()]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(cells))
    a, b = np.sort(cells[perm[: len(cells) // 2]]), np.sort(cells[perm[len(cells) // 2 :]])
    mdata = md.MuData({"rna": full["rna"][cells].copy(), "adt": full["adt"][a].copy()})
    mdata.obs = mdata.obs.join(full.obs[["batch", "celltype"]])
    return mdata, a, b, np.asarray(full["adt"][b].X.toarray())


def evaluate(name: str, model: hc.HoloCell, mdata: md.MuData, a, b, truth: np.ndarray) -> dict:
    idx = {c: i for i, c in enumerate(mdata.obs_names)}
    ia, ib = [idx[c] for c in a], [idx[c] for c in b]
    gen = model.generate(mdata, target="protein", key_added="adt_gen", overwrite=True, progress_bar=False)
    pred = gen[b].X
    row = score_regression(name, ev.clr(truth), pred)
    z = model.get_latent_representation(mdata, modality="rna", progress_bar=False)
    labels = mdata.obs["celltype"].astype(str).to_numpy()
    row["knn_label_transfer_rna"] = ev.knn_label_transfer_accuracy(z[ia], labels[ia], z[ib], labels[ib])
    del mdata.mod["adt_gen"]
    mdata.update()
    return row


def rna_only_zero_shot(mdata: md.MuData, a, b, truth: np.ndarray) -> dict:
    """Zero-shot on the same cells given as RNA-only data (no protein modality at all): the query model keeps the
    checkpoint's protein, whose generated columns are matched to the measured antibodies by name."""
    rna_only = md.MuData({"rna": mdata["rna"].copy()})
    rna_only.obs = rna_only.obs.join(mdata.obs[["batch", "celltype"]])
    hc.HoloCell.setup_mudata(rna_only, modalities={"rna": "rna"}, batch_key="batch")
    model = hc.HoloCell.load_pretrained(CHECKPOINT, rna_only)
    gen = model.generate(rna_only, target="protein", key_added="adt_gen", progress_bar=False)
    columns = pd.Index(gen.var["measured_name"].astype(str)).get_indexer(mdata["adt"].var_names.astype(str))
    row = score_regression("holocell-small zero-shot, RNA-only data", ev.clr(truth), np.asarray(gen[b].X)[:, columns])
    z = model.get_latent_representation(rna_only, progress_bar=False)
    idx = {c: i for i, c in enumerate(rna_only.obs_names)}
    labels = rna_only.obs["celltype"].astype(str).to_numpy()
    ia, ib = [idx[c] for c in a], [idx[c] for c in b]
    row["knn_label_transfer_rna"] = ev.knn_label_transfer_accuracy(z[ia], labels[ia], z[ib], labels[ib])
    return row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help=f"fine-tuning epochs (default {HOLOCELL})")
    args = p.parse_args()
    args.epochs = args.epochs or HOLOCELL["quick" if args.quick else "full"]["max_epochs"]
    quiet()

    # ---- load time (no data; then onto the held-out cells)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        reference = hc.HoloCell.load_pretrained(CHECKPOINT)
        times.append(time.perf_counter() - t0)
    mdata, a, b, truth = held_out_split(args.seed)
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    t0 = time.perf_counter()
    model = hc.HoloCell.load_pretrained(CHECKPOINT, mdata)
    transfer_s = time.perf_counter() - t0
    overlap = {"pbmc_p4": model.transfer_report_.reset_index(names="item").to_dict("records")}

    rows = [evaluate("holocell-small zero-shot", model, mdata, a, b, truth)]
    rows.append(rna_only_zero_shot(mdata, a, b, truth))
    t0 = time.perf_counter()
    model.train(max_epochs=args.epochs, seed=args.seed, enable_progress_bar=False)
    finetune_s = time.perf_counter() - t0
    rows.append(evaluate(f"holocell-small fine-tuned ({args.epochs} epochs)", model, mdata, a, b, truth))
    sizes = {k: reference.init_params_["non_kwargs"][k] for k in ("d_model", "n_layers", "n_heads", "n_latents")}
    scratch = hc.HoloCell(mdata, **sizes, seed=args.seed)
    t0 = time.perf_counter()
    scratch.train(max_epochs=args.epochs, seed=args.seed, enable_progress_bar=False)
    scratch_s = time.perf_counter() - t0
    rows.append(evaluate(f"holocell from scratch ({args.epochs} epochs)", scratch, mdata, a, b, truth))

    # ---- peers on the same split
    rna = mdata["rna"]
    y_a = ev.clr(mdata["adt"][a].X)
    preds = {
        "kNN(15) on RNA PCA(50)": ev.pca_knn_predict(rna[a].X, y_a, rna[b].X, n_pcs=50, k=15, seed=0),
        "ridge on RNA PCA(50)": ev.pca_ridge_predict(rna[a].X, y_a, rna[b].X, n_pcs=50, seed=0),
        "mean predictor": ev.mean_predict(y_a, len(b)),
    }
    rows += [score_regression(name, ev.clr(truth), pred) for name, pred in preds.items()]
    pcs = ev.shared_pca(rna[a].X, rna[b].X, n_pcs=50, seed=0)
    labels = mdata.obs["celltype"].astype(str)
    rows[-3]["knn_label_transfer_rna"] = ev.knn_label_transfer_accuracy(
        pcs[0], labels[a].to_numpy(), pcs[1], labels[b].to_numpy()
    )

    # ---- overlap with an unseen 10x multiome (RNA + ATAC, GRCh38)
    os.environ.setdefault("HOLOCELL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    try:
        multiome = md.read_h5mu(hc.data.fetch("pbmc_multiome_1k", progressbar=False))
        hc.HoloCell.setup_mudata(multiome, modalities={"rna": "rna", "atac": "atac"}, genome="hg38")
        zero = hc.HoloCell.load_pretrained(CHECKPOINT, multiome)
        overlap["pbmc_multiome_1k"] = zero.transfer_report_.reset_index(names="item").to_dict("records")
    except (ConnectionError, ValueError, KeyError) as err:
        overlap["pbmc_multiome_1k"] = f"not available: {err}"

    results = {
        "checkpoint": CHECKPOINT,
        "task": f"held-out PBMC batch {HELD_OUT}: RNA -> protein for half B (protein hidden), CLR per-protein "
        "Pearson; kNN(15) label transfer A -> B on RNA-only embeddings",
        "rows": rows,
        "overlap": overlap,
        "cost_seconds": {
            "load_pretrained_no_data_median": float(np.median(times)),
            "load_pretrained_with_transfer": transfer_s,
            "fine_tune": finetune_s,
            "from_scratch": scratch_s,
        },
        "epochs": args.epochs,
        "seed": args.seed,
    }
    results["quick"] = args.quick
    results["verdicts"] = verdicts("holocell-small on held-out PBMC p4 (RNA -> protein, half B)", rows,
                                   ["pearson_mean", "rmse", "knn_label_transfer_rna"])
    ov_lines = []
    for name, report in overlap.items():
        if isinstance(report, str):
            ov_lines.append(f"- {name}: {report}")
        else:
            parts = [f"{r['item']} {r['n_shared']}/{r['n_query']} ({r['fraction_shared']:.0%})" for r in report]
            ov_lines.append(f"- {name}: " + ", ".join(parts))
    cost = [{"step": k, "seconds": v} for k, v in results["cost_seconds"].items()]
    write_results(
        args.out, "transfer", "Transfer of the pretrained `holocell-small` checkpoint", results,
        [("Held-out p4: zero-shot, fine-tuned, from scratch, peers", rows,
          ["method", "pearson_mean", "pearson_median", "rmse", "knn_label_transfer_rna"]),
         ("Cost (wall-clock seconds)", cost, ["step", "seconds"])],
        results["task"] + ". Cells of this batch were never seen in pretraining. Overlap with the checkpoint "
        "(n_shared / n_query):\n\n" + "\n".join(ov_lines),
        settings={"holocell": {"max_epochs": args.epochs}, "checkpoint": CHECKPOINT},
    )


if __name__ == "__main__":
    main()
