"""Prior-knowledge ablation and cross-species vocabulary benchmark.

Writes ``benchmarks/results/priors.md`` and ``priors.json``. Three parts:

1. **Vocabulary.** Fraction of the expressed genes of the scanpy mouse 10k cells (Ensembl ids) and of
   the bundled human PBMC genes that sit on shared human gene anchors, by how they were mapped.
2. **Ablation** (one seed per configuration, same split, same machine):
   - PBMC label transfer across modalities: HoloCell trained on the PBMC mosaic with each prior
     alone, all, or none; kNN (k=15) fit on the embeddings of protein-only cells (batch p2) predicts
     the ``celltype`` of RNA-only cells (p1). No PCA peer exists across modalities (RNA and protein
     share no features), so the reference is the model without priors.
   - Simulator TF -> target recovery: half of the simulator's true TF -> target edges (per TF) are
     given as the GRN prior (``grn_edges``); the other half is held out. Score of a (TF, gene) pair =
     cosine similarity of the trained anchor embeddings; AUROC of held-out edges against all other
     non-training pairs of the same TFs. Peers in the same run: |Pearson correlation| of
     log-normalised expression, and the cosine of the GRN prior rows alone.
3. **Cross-species model.** One model on human PBMC RNA + mouse cells on one anchor vocabulary
   (``species_key``); embeddings per species.

Usage::

    python benchmarks/priors.py [--mouse-zarr /tmp/dl/scanpy-1.11.5/tests/_data/10x-10k-subset.zarr]
                                [--epochs 15] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch
from _common import RESULTS, provenance, provenance_line, quiet, write_json
from _verdict import verdict_table, verdicts
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

import holocell as hc
from holocell.priors import check_prior_names, grn_prior
from holocell.vocab import map_genes, rename_to_anchors
from holocell.vocab._genes import shared_fraction

CONFIGS = [None, "grn", "family", "position", "coexpression", "all"]
MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_latents": 16}


def _train(mdata, priors, epochs, seed=0, **kwargs):
    t = time.perf_counter()
    model = hc.HoloCell(mdata, priors=priors, seed=seed, **MODEL, **kwargs)
    model.train(max_epochs=epochs, enable_progress_bar=False, early_stopping=False, seed=seed)
    return model, time.perf_counter() - t


def vocabulary(mouse_zarr: Path | None) -> dict:
    out = {}
    pbmc = hc.data.pbmc_cite_mosaic()
    rep = map_genes(pbmc["rna"].var_names, "human")
    out["pbmc_rna"] = {"n_genes": len(rep), "on_human_anchor": shared_fraction(rep), "how": rep["how"].value_counts().to_dict()}
    if mouse_zarr is not None and Path(mouse_zarr).exists():
        mouse = ad.read_zarr(mouse_zarr)
        ids = mouse.var["gene_ids"].astype(str).to_numpy()
        rep = map_genes(ids, "mouse")
        counts = np.asarray(mouse.X.sum(axis=0)).ravel()
        expressed = np.asarray((mouse.X > 0).sum(axis=0)).ravel() > 0
        on = rep["symbol"].notna().to_numpy()
        out["mouse_10k"] = {
            "n_cells": int(mouse.n_obs),
            "n_genes": int(mouse.n_vars),
            "n_expressed": int(expressed.sum()),
            "on_human_anchor_all": shared_fraction(rep),
            "on_human_anchor_expressed": shared_fraction(rep, expressed),
            "on_human_anchor_umi_weighted": float(counts[on].sum() / counts.sum()),
            "how_expressed": rep.loc[expressed, "how"].value_counts().to_dict(),
        }
    return out


def pbmc_ablation(epochs: int, configs, rows: list[dict], save) -> list[dict]:
    for priors in configs:
        mdata = hc.data.pbmc_cite_mosaic()
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
        model, secs = _train(mdata, priors, epochs)
        z = model.get_latent_representation(progress_bar=False)
        batch = mdata.obs["batch"].astype(str).to_numpy()
        label = mdata.obs["celltype"].astype(str).to_numpy()
        src, dst = batch == "p2_0", batch == "p1_0"  # protein-only -> RNA-only batches of the bundled data
        if not (src.any() and dst.any()):
            raise ValueError(f"PBMC batches p2_0 / p1_0 not found; batches are {sorted(set(batch))}")
        knn = KNeighborsClassifier(15).fit(z[src], label[src])
        acc = float((knn.predict(z[dst]) == label[dst]).mean())
        gates = model.module.network.prior_gate.detach().tolist() if model.priors_ else []
        rows.append({"priors": priors or "none", "p2_to_p1_knn_accuracy": acc, "train_s": secs, "gates": gates})
        print(rows[-1], flush=True)
        save()
    return rows


def _split_edges(tf_target: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _, grp in tf_target.groupby("tf"):
        idx = rng.permutation(len(grp))
        half = len(grp) // 2
        train.append(grp.iloc[idx[:half]])
        test.append(grp.iloc[idx[half:]])
    return pd.concat(train), pd.concat(test)


def _edge_auroc(score: np.ndarray, genes: list[str], train: pd.DataFrame, test: pd.DataFrame) -> float:
    pos = {g: i for i, g in enumerate(genes)}
    known = set(zip(train["tf"], train["target"], strict=True))
    held = set(zip(test["tf"], test["target"], strict=True))
    y, s = [], []
    for tf in sorted(set(test["tf"])):
        for g in genes:
            if g == tf or (tf, g) in known:
                continue
            y.append((tf, g) in held)
            s.append(score[pos[tf], pos[g]])
    return float(roc_auc_score(y, s))


def _cosine(x: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def simulator_grn(epochs: int, n_cells: int, rows: list[dict], save, seed: int = 0) -> list[dict]:
    mdata, truth = hc.data.simulate_multiome(n_cells, n_genes=150, n_tfs=15, modalities=("rna",), seed=seed)
    train, test = _split_edges(truth.tf_target, seed)
    genes = list(mdata["rna"].var_names)
    x = mdata["rna"].X
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    logn = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    rows.append({"method": "abs. Pearson correlation of expression (peer)", "heldout_edge_auroc": _edge_auroc(np.abs(np.corrcoef(logn.T)), genes, train, test)})
    prior_rows = grn_prior(genes, train[["tf", "target"]]).values
    rows.append({"method": "GRN prior rows alone (peer)", "heldout_edge_auroc": _edge_auroc(_cosine(prior_rows), genes, train, test)})
    save()
    for priors in (None, "grn", "coexpression", ("grn", "coexpression")):
        m = mdata.copy()
        hc.HoloCell.setup_mudata(m, modalities={"rna": "rna"}, batch_key="batch")
        edges = {"grn_edges": train[["tf", "target"]]} if "grn" in check_prior_names(priors) else {}  # else refused
        model, secs = _train(m, priors, epochs, **edges)
        space = model.feature_space
        order = [space.anchors.index(a) for a in space.maps["rna"].report["anchor"]]
        emb = model.module.network.anchor_embedding().detach().cpu().numpy()[order]
        name = priors if isinstance(priors, str) or priors is None else "+".join(priors)
        rows.append({"method": f"holocell anchor embedding, priors={name or 'none'}", "heldout_edge_auroc": _edge_auroc(_cosine(emb), genes, train, test), "train_s": secs})
        print(rows[-1], flush=True)
        save()
    return rows


def cross_species(mouse_zarr: Path | None, epochs: int, n_mouse: int = 2000) -> dict:
    if mouse_zarr is None or not Path(mouse_zarr).exists():
        return {}
    pbmc = hc.data.pbmc_cite_mosaic()
    human = pbmc["rna"].copy()
    mouse = ad.read_zarr(mouse_zarr)
    mouse.var_names = mouse.var["gene_ids"].astype(str).to_numpy()
    mouse = mouse[np.random.default_rng(0).choice(mouse.n_obs, n_mouse, replace=False)].copy()
    mm = rename_to_anchors(mouse, species="mouse")
    both = ad.concat({"human": human, "mouse": mm}, join="outer", label="species", fill_value=0)
    both.obs_names_make_unique()
    both.var = pd.DataFrame(index=both.var_names)
    mdata = md.MuData({"rna": both})
    mdata.obs["species"] = both.obs["species"].astype(str).to_numpy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="species", species_key="species", gene_id_type="symbol")
    model, secs = _train(mdata, "all", epochs)
    out = {"n_anchors": model.feature_space.n_anchors, "n_shared_anchors": len(set(human.var_names) & set(mm.var_names)), "train_s": secs}
    for sp in ("human", "mouse"):
        idx = np.flatnonzero(mdata.obs["species"] == sp)
        z = model.get_latent_representation(indices=idx, progress_bar=False)
        out[f"{sp}_cells"] = int(len(idx))
        out[f"{sp}_embedding_shape"] = list(z.shape)
        out[f"{sp}_embedding_finite"] = bool(np.isfinite(z).all())
    # human cell types stay separable in the joint model (kNN p3 -> p4 on the RNA-only embedding)
    z = model.get_latent_representation(indices=np.flatnonzero(mdata.obs["species"] == "human"), progress_bar=False)
    lab = human.obs["celltype"].astype(str).to_numpy()
    bat = human.obs["batch"].astype(str).to_numpy()
    knn = KNeighborsClassifier(15).fit(z[bat == "p3_0"], lab[bat == "p3_0"])
    out["human_p3_to_p4_knn_accuracy"] = float((knn.predict(z[bat == "p4_0"]) == lab[bat == "p4_0"]).mean())
    print(out, flush=True)
    return out


def _md(res: dict) -> str:
    lines = ["# Priors and cross-species vocabulary", ""]
    v = res["vocabulary"]
    lines += ["## Vocabulary", "", "| data | genes | on a human gene anchor | how |", "|---|---|---|---|"]
    p = v["pbmc_rna"]
    lines.append(f"| human PBMC RNA (symbols) | {p['n_genes']} | {p['on_human_anchor']:.3f} | {p['how']} |")
    if "mouse_10k" in v:
        m = v["mouse_10k"]
        lines.append(
            f"| scanpy mouse 10k (Ensembl ids), expressed genes | {m['n_expressed']} of {m['n_genes']} | "
            f"{m['on_human_anchor_expressed']:.3f} (all genes {m['on_human_anchor_all']:.3f}; UMI-weighted "
            f"{m['on_human_anchor_umi_weighted']:.3f}) | {m['how_expressed']} |"
        )
    lines += ["", f"## PBMC label transfer (kNN on protein-only p2 -> RNA-only p1 cell types; {res['epochs']['pbmc']} epochs)", ""]
    lines += ["| priors | accuracy | train s | final gates |", "|---|---|---|---|"]
    for r in res["pbmc"]:
        gates = ", ".join(f"{g:.3f}" for g in r["gates"]) or "-"
        lines.append(f"| {r['priors']} | {r['p2_to_p1_knn_accuracy']:.3f} | {r['train_s']:.0f} | {gates} |")
    e = res["epochs"]
    lines += ["", f"## Simulator: held-out TF -> target edges from gene embeddings (AUROC; {e['simulator_cells']} cells, {e['simulator']} epochs)", ""]
    lines += ["| method | AUROC |", "|---|---|"]
    for r in res["simulator"]:
        lines.append(f"| {r['method']} | {r['heldout_edge_auroc']:.3f} |")
    if res.get("cross_species"):
        c = res["cross_species"]
        lines += ["", "## One model, human + mouse", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in c.items()]
    if res.get("verdicts"):
        lines += ["", "## Verdicts (simulator GRN: holocell vs the best peer)", "", verdict_table(res["verdicts"])]
    lines += ["", res["notes"], "", provenance_line(res["meta"]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mouse-zarr", type=Path, default=Path("/tmp/dl/scanpy-1.11.5/tests/_data/10x-10k-subset.zarr"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--sim-epochs", type=int, default=30)
    ap.add_argument("--sim-cells", type=int, default=800)
    ap.add_argument("--configs", default="none,grn,family,position,coexpression,all", help="PBMC prior configurations")
    ap.add_argument("--no-cross-species", action="store_true")
    ap.add_argument("--reuse-simulator", action="store_true",
                    help="keep the simulator rows of the existing priors.json instead of recomputing them")
    ap.add_argument("--quick", action="store_true", help="2 epochs, two configurations (smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    quiet()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    configs = [None if c == "none" else c for c in args.configs.split(",")]
    configs = [None, "all"] if args.quick else configs
    epochs, sim_epochs = (2, 2) if args.quick else (args.epochs, args.sim_epochs)
    t = time.perf_counter()
    res = {
        "quick": args.quick,
        "epochs": {"pbmc": epochs, "simulator": sim_epochs, "simulator_cells": args.sim_cells},
        "model": MODEL,
        "vocabulary": vocabulary(args.mouse_zarr),
    }
    print(res["vocabulary"], flush=True)
    res["notes"] = (
        "One seed per configuration: differences of a few points are within seed noise. The prior gates "
        "start at 0 and are learned; the table shows where they ended. Results are written after every row, "
        "so an interrupted run leaves the rows it finished."
    )
    res["simulator"], res["pbmc"], res["cross_species"] = [], [], {}

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
    settings["mouse_zarr"] = Path(args.mouse_zarr).name if args.mouse_zarr else None  # a name, not a machine path
    res["meta"] = provenance(settings, args.quick)

    def save() -> None:
        res["total_s"] = time.perf_counter() - t
        res["verdicts"] = verdicts("Simulator held-out TF -> target edges", res["simulator"], ["heldout_edge_auroc"])
        write_json(args.out, "priors", res)
        (args.out / "priors.md").write_text(_md(res))

    if args.reuse_simulator:
        import json

        previous = json.loads((args.out / "priors.json").read_text())
        res["simulator"] = previous["simulator"]
        res["epochs"].update({k: previous["epochs"][k] for k in ("simulator", "simulator_cells")})
    else:
        simulator_grn(sim_epochs, args.sim_cells, res["simulator"], save)
    pbmc_ablation(epochs, configs, res["pbmc"], save)
    if not args.no_cross_species:
        res["cross_species"] = cross_species(args.mouse_zarr, max(2, epochs // 3))
        save()
    print(_md(res))


if __name__ == "__main__":
    main()
