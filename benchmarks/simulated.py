"""Simulated multiome (RNA + ATAC + protein, two batches): cross-modal prediction and joint embedding.

Task 3 of issue 4. ``hc.data.simulate_multiome`` with two batches; batch0 is fully paired. In
batch1, half of the cells (chosen with the seed) have their ATAC removed from training (the
RNA -> ATAC query) and the other half their RNA (the ATAC -> RNA query); protein is observed
everywhere. holocell, MULTIVI (zero-padded, its convention for missing modalities) and kNN(15) /
ridge on source PCA(50) fit on the paired cells predict the hidden modality. Joint embedding
metrics compare holocell, MULTIVI and PCA(50) on RNA (cells with RNA).

Run: ``python benchmarks/simulated.py [--quick]``.
"""

from __future__ import annotations

import numpy as np
from _common import (
    counts_in,
    hide_cells,
    mark_winner,
    parse_args,
    pca_embedding,
    peak_rss_mb,
    quiet,
    score_auroc,
    score_regression,
    train_holocell,
    train_multivi,
    write_results,
)

from holocell import evaluation as ev
from holocell.data import simulate_multiome

OBS = ["batch", "cell_type"]
MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}


def settings(quick: bool) -> dict:
    """Cells and epochs per method (documented in docs/benchmarks.md)."""
    if quick:
        return {"n_cells": 600, "holocell": 8, "multivi": 50}
    return {"n_cells": 2000, "holocell": 40, "multivi": 300}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    quiet()
    cfg = settings(args.quick)
    full, _ = simulate_multiome(cfg["n_cells"], n_batches=2, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    b1 = rng.permutation(full.obs_names[(full.obs["batch"] == "batch1").to_numpy()])
    q_atac, q_rna = np.sort(b1[: len(b1) // 2]), np.sort(b1[len(b1) // 2 :])  # ATAC hidden / RNA hidden
    paired = full.obs_names[(full.obs["batch"] == "batch0").to_numpy()]
    train = hide_cells(full, {"atac": q_atac, "rna": q_rna}, OBS)

    truth_atac = (counts_in(full, "atac", q_atac) > 0).astype(float)
    truth_rna = ev.log_normalize(counts_in(full, "rna", q_rna))
    costs: dict[str, float] = {}

    model, costs["holocell_train_s"] = train_holocell(train, MODS, cfg["holocell"], args.seed)
    gen_atac = model.generate(train[q_atac].copy(), target="atac", n_steps=8, seed=args.seed, progress_bar=False)
    gen_rna = model.generate(train[q_rna].copy(), target="rna", n_steps=8, seed=args.seed, progress_bar=False)
    rows_atac = [score_auroc("holocell (8 steps)", truth_atac, np.asarray(gen_atac[q_atac].X))]
    rows_rna = [score_regression("holocell (8 steps)", truth_rna, np.asarray(gen_rna[q_rna].X))]

    layers = {"rna_layer": "rna", "atac_layer": "atac", "protein_layer": "protein"}
    mvi, pad, costs["multivi_train_s"] = train_multivi(train, layers, cfg["multivi"], args.seed)
    acc = mvi.get_normalized_accessibility(indices=np.flatnonzero(pad.obs_names.isin(q_atac)), return_numpy=True)
    order = pad.obs_names[pad.obs_names.isin(q_atac)].get_indexer(q_atac)
    rows_atac.append(score_auroc("MULTIVI", truth_atac, np.asarray(acc)[order]))
    idx = np.flatnonzero(pad.obs_names.isin(q_rna))
    expr = mvi.get_normalized_expression(indices=idx, n_samples=1)  # scvi 1.4: n_samples>1 mis-shapes
    order = pad.obs_names[idx].get_indexer(q_rna)
    rows_rna.append(score_regression("MULTIVI", truth_rna, np.log1p(1e4 * expr.to_numpy()[order])))

    x_rna_p, x_atac_p = full["rna"][paired].X, full["atac"][paired].X
    y_atac = (x_atac_p.toarray() > 0).astype(float)
    y_rna = ev.log_normalize(x_rna_p)
    x_rna_q, x_atac_q = full["rna"][q_atac].X, full["atac"][q_rna].X
    rows_atac += [
        score_auroc("kNN(15) on RNA PCA(50)", truth_atac, ev.pca_knn_predict(x_rna_p, y_atac, x_rna_q)),
        score_auroc("ridge on RNA PCA(50)", truth_atac, ev.pca_ridge_predict(x_rna_p, y_atac, x_rna_q)),
    ]
    rows_rna += [
        score_regression("kNN(15) on ATAC PCA(50)", truth_rna, ev.pca_knn_predict(x_atac_p, y_rna, x_atac_q)),
        score_regression("ridge on ATAC PCA(50)", truth_rna, ev.pca_ridge_predict(x_atac_p, y_rna, x_atac_q)),
        score_regression("mean predictor", truth_rna, ev.mean_predict(y_rna, len(q_rna))),
    ]

    labels = train.obs["cell_type"].astype(str).to_numpy()
    batch = train.obs["batch"].astype(str).to_numpy()
    has_rna = np.asarray(train.obsm["rna"]).astype(bool).ravel()
    z = mvi.get_latent_representation()
    embeddings = {
        "holocell": model.get_latent_representation(progress_bar=False),
        "MULTIVI": z[pad.obs_names.get_indexer(train.obs_names)],
    }
    rows_int = [
        {"method": n, "cells": len(labels), **ev.integration_metrics(e, labels, batch, seed=args.seed)}
        for n, e in embeddings.items()
    ]
    pcs = pca_embedding(counts_in(train, "rna", train.obs_names[has_rna]), seed=args.seed)
    for name, emb in [("holocell (RNA cells)", embeddings["holocell"][has_rna]), ("PCA(50) on RNA", pcs)]:
        m = ev.integration_metrics(emb, labels[has_rna], batch[has_rna], seed=args.seed)
        rows_int.append({"method": name, "cells": int(has_rna.sum()), **m})

    int_cols = ["method", "cells", "nmi", "ari", "asw_label", "asw_batch", "ilisi", "graph_connectivity"]
    verdicts = [mark_winner(rows_atac, "auroc_mean"), mark_winner(rows_rna, "pearson_mean")]
    verdicts += [mark_winner(rows_int[:2], m) for m in int_cols[2:]]
    lost = [v for v in verdicts if v and not v["meets_target_10pct"]]
    results = {
        "quick": args.quick, "seed": args.seed, "settings": cfg, "peak_rss_mb": peak_rss_mb(),
        "n_peaks": int(full["atac"].n_vars), "n_genes": int(full["rna"].n_vars),
        "rna_to_atac": rows_atac, "atac_to_rna": rows_rna, "integration": rows_int,
        "train_seconds": costs, "verdicts": verdicts,
    }
    notes = (
        f"simulate_multiome({cfg['n_cells']} cells, 2 batches, seed {args.seed}): "
        f"{full['rna'].n_vars} genes, {full['atac'].n_vars} peaks, {full['protein'].n_vars} proteins. "
        f"Queries: {len(q_atac)} batch1 cells with ATAC hidden, {len(q_rna)} with RNA hidden; peers fit on "
        f"the {len(paired)} paired batch0 cells. Epochs: holocell {cfg['holocell']}, MULTIVI {cfg['multivi']}"
        f"{' (--quick)' if args.quick else ''}.\n\n"
        f"Where holocell is not >= 10% better than the best peer ({len(lost)} of "
        f"{len([v for v in verdicts if v])}): "
        + ", ".join(f"{v['metric']} ({v['holocell']:.3f} vs {v['best_peer']} {v['best_peer_value']:.3f})"
                    for v in lost)
    )
    sections = [
        ("RNA -> ATAC (per-peak AUROC)", rows_atac, ["method", "auroc_mean", "auroc_median"]),
        ("ATAC -> RNA (log-normalised, per gene)", rows_rna, ["method", "pearson_mean", "pearson_median", "rmse"]),
        ("Joint embedding", rows_int, int_cols),
    ]
    write_results(args.out, "simulated", "Simulated multiome (RNA + ATAC + protein)", results, sections, notes)


if __name__ == "__main__":
    main()
