"""ATAC quality on real cells: SNARE-seq2 mouse motor cortex (paired RNA + ATAC) and Granja 2019 scATAC.

Tasks (peers in the same process, on the same cells and peaks; peers set up in ``_peers.py``):

1. SNARE-seq2 paired: train on libraries 09A-09I, predict the held-out libraries 09J-09L: ATAC from
   RNA (per-peak AUROC over peaks accessible in >= 1% of held-out cells) and RNA from ATAC (per-gene
   Pearson on log1p CP10k). Peers: MULTIVI, kNN(15) and ridge on PCA of RNA / LSI of ATAC, the mean.
2. SNARE-seq2 joint embedding of the training cells (9 libraries): NMI, ARI, label ASW, batch ASW,
   iLISI across libraries, graph connectivity. Peers: MULTIVI, WNN (muon), PCA + LSI concatenation,
   PCA of RNA alone, LSI of ATAC alone.
3. SNARE-seq2 unpaired (diagonal): 09A-09F as RNA only, 09G-09L as ATAC only, no shared cell.
   kNN label transfer RNA -> ATAC cells (coarse, fine; accuracy and macro F1), modality mixing. Peers: MULTIVI on
   the same layout (zero-padded, modality as its main batch, library as a covariate), gene activity + PCA, gene
   activity + CCA (Seurat's label-transfer space), and the majority label (every ATAC cell gets the RNA cells'
   commonest label: the accuracy a method reaches without aligning anything).
4. Granja 2019 scATAC, two donors: NMI, ARI, label / batch ASW, iLISI, graph connectivity. Peers:
   PeakVI (on the shared peaks, and on its tutorial's >= 5% peaks), LSI.
5. Cost: training / embedding cells per second and peak RSS beside MULTIVI / PeakVI; generation of
   every SNARE peak for held-out cells.

Peaks: every task keeps the peaks open in >= 1% of the cells (MULTIVI's preprocessing, and the usual
top-peaks selection of LSI); then, where more remain than the size's ``max_peaks``, the most frequent
ones (the cap is the only departure, for CPU time). Granja's PeakVI also runs on its tutorial's filter
(>= 5%), which on the 600 CPU-size cells leaves about 700 peaks and cut LSI's NMI from 0.48 to 0.22 when
it was the shared filter. Files come from ``$HOLOCELL_DATA_DIR``
(default ``../shared/data`` beside the clone). Run ``python benchmarks/chromatin.py [--quick | --size gpu]``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
from _common import ROOT, parser, provenance, quiet, score_auroc, score_regression, write_results
from _peers import (
    MULTIVI_MIN_CELLS,
    PEAKVI_MIN_CELLS,
    below_baseline_notes,
    lsi_embedding,
    multivi_mudata,
    pca_embedding,
    peakvi_peaks,
    plot_history,
    train_multivi,
    train_peakvi,
    train_summary,
    wnn_embedding,
)
from _verdict import verdicts
from sklearn.decomposition import PCA
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

import holocell as hc
from holocell import evaluation as ev

TRAIN_LIBS = [f"09{c}" for c in "ABCDEFGHI"]
TEST_LIBS = ["09J", "09K", "09L"]
RNA_ONLY_LIBS = [f"09{c}" for c in "ABCDEF"]
EMBED_METRICS = ["nmi", "ari", "asw_label", "asw_batch", "ilisi", "graph_connectivity"]

#: cells per library (training / held-out / diagonal), the peak cap, Granja cells, and holocell's settings.
#: ``max_epochs=None``: holocell's default schedule (about ``TrainingConfig.target_steps`` = 1,500 optimiser steps),
#: the run length at which the cell state reached SNARE validation NMI 0.45 (0.33 after 500 steps; 450 validation
#: cells of benchmarks/cellstate_ablation.py). The old 6 epochs (150 steps) left it far from converged.
SIZES = {
    "quick": {"per_lib": 30, "test_per_lib": 20, "max_peaks": 800, "diag_per_lib": 30, "n_granja": 300,
              "n_gen": 10},
    "full": {"per_lib": 50, "test_per_lib": 25, "max_peaks": 1500, "diag_per_lib": 40, "n_granja": 600,
             "n_gen": 25},
    "gpu": {"per_lib": 300, "test_per_lib": 100, "max_peaks": 5000, "diag_per_lib": 250, "n_granja": 3000,
            "n_gen": 200},
}
HOLOCELL = {
    "quick": {"max_epochs": 1, "d_model": 32, "batch_size": 16, "ema_decay": 0.98, "n_steps": 8},
    "full": {"max_epochs": None, "d_model": 64, "batch_size": 32, "ema_decay": 0.98, "n_steps": 8},
    "gpu": {"max_epochs": 20, "d_model": 128, "batch_size": 64, "ema_decay": 0.995, "n_steps": 8},
}


# --------------------------------------------------------------------------------------- cost
class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def gb(self) -> float:
        return self.peak / 2**30


# --------------------------------------------------------------------------------------- data
def binarize(x) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.data[:] = 1.0
    return x


#: PeakVI's epoch cap on Granja: at the shared 500 it ran all epochs on the 1,500 peaks (best ELBO at epoch 496,
#: NMI 0.368); with 1,500 its early stopping ends it (epoch 886 in a hand check, best 547; NMI 0.436)
GRANJA_PEAKVI_EPOCHS = 1500


def select_peaks(x, min_frac: float, cap: int) -> np.ndarray:
    """The tutorial's filter (open in >= ``min_frac`` of cells), then the ``cap`` most frequent peaks."""
    keep = peakvi_peaks(x, min_frac)
    if len(keep) > cap:
        freq = np.asarray((x[:, keep] > 0).mean(axis=0)).ravel()
        keep = np.sort(keep[np.argsort(-freq, kind="stable")[:cap]])
    return keep


def _subset(mdata: md.MuData, cells: np.ndarray, peaks: np.ndarray) -> md.MuData:
    out = md.MuData({"rna": mdata["rna"][cells].copy(), "atac": mdata["atac"][cells][:, peaks].copy()})
    for col in ("batch", "cell_type", "cell_type_fine"):
        out.obs[col] = mdata.obs[col].iloc[cells].astype(str).to_numpy()
    return out


def sample_cells(obs: pd.DataFrame, libs: list[str], per_lib: int, rng: np.random.Generator) -> np.ndarray:
    picks = []
    for lib in libs:
        pool = np.flatnonzero(obs["batch"].astype(str).to_numpy() == lib)
        picks.append(rng.choice(pool, min(per_lib, len(pool)), replace=False))
    return np.sort(np.concatenate(picks))


def knn_ridge(z_train, z_query, y_train) -> dict[str, np.ndarray]:
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import NearestNeighbors

    y = np.asarray(y_train.toarray() if sp.issparse(y_train) else y_train, dtype=np.float32)
    idx = NearestNeighbors(n_neighbors=15).fit(z_train).kneighbors(z_query, return_distance=False)
    return {"kNN(15)": y[idx].mean(axis=1), "ridge": Ridge(alpha=1.0).fit(z_train, y).predict(z_query)}


# --------------------------------------------------------------------------------------- models
def holocell_model(mdata, modalities, *, species, genome, cfg, seed):
    hc.HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", species=species, genome=genome)
    model = hc.HoloCell(mdata, d_model=cfg["d_model"], seed=seed)
    with PeakRSS() as cost:
        model.train(max_epochs=cfg["max_epochs"], batch_size=cfg["batch_size"], ema_decay=cfg["ema_decay"],
                    enable_progress_bar=False, seed=seed, early_stopping=False)
    epochs = len(model.history_)
    return model, {"train cells/s": mdata.n_obs * 0.9 * epochs / cost.seconds, "train s": cost.seconds,
                   "epochs": epochs, "peak RSS GB": cost.gb}


def scvi_cost(model, n_cells: int, seconds: float, rss: float) -> dict:
    epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else np.nan
    return {"train cells/s": n_cells * 0.9 * epochs / seconds, "train s": seconds, "epochs": epochs, "peak RSS GB": rss}


def fit_multivi(mdata: md.MuData, seed: int, out: Path, tag: str, title: str, results: dict):
    pad = multivi_mudata(mdata, {"rna": "rna", "atac": "atac"}, "batch")
    with PeakRSS() as t:
        model = train_multivi(pad, "batch", seed)
    results["peer_training"].append({"task": tag, **train_summary(model, "MULTIVI")})
    plot_history(model, out / f"peers_snare_{tag}_multivi.png", title)
    return model, pad, scvi_cost(model, pad.n_obs, t.seconds, t.gb)


# --------------------------------------------------------------------------------------- tasks
def task_paired(snare, cfg, hc_cfg, seed, results, out):
    rng = np.random.default_rng(seed)
    train_cells = sample_cells(snare.obs, TRAIN_LIBS, cfg["per_lib"], rng)
    test_cells = sample_cells(snare.obs, TEST_LIBS, cfg["test_per_lib"], rng)
    peaks = select_peaks(snare["atac"].X[train_cells], MULTIVI_MIN_CELLS, cfg["max_peaks"])
    train, test = _subset(snare, train_cells, peaks), _subset(snare, test_cells, peaks)
    results["sizes"]["paired"] = {"train cells": train.n_obs, "held-out cells": test.n_obs,
                                  "peaks": int(len(peaks)), "genes": int(train["rna"].n_vars)}
    atac_true = binarize(test["atac"].X).toarray()
    rna_true = ev.log_normalize(test["rna"].X)
    preds_atac, preds_rna, emb, cost = {}, {}, {}, {}

    model, cost["holocell"] = holocell_model(train, {"rna": "rna", "atac": "atac"}, species="mouse",
                                             genome="mm10", cfg=hc_cfg, seed=seed)
    with PeakRSS() as t:
        emb["holocell"] = model.get_latent_representation(progress_bar=False)
    cost["holocell"]["embed cells/s"] = train.n_obs / t.seconds
    steps = hc_cfg["n_steps"]
    preds_atac["holocell"] = model.generate(test, target="atac", n_steps=steps, progress_bar=False).X
    preds_rna["holocell"] = model.generate(test, target="rna", n_steps=steps, progress_bar=False).X

    mv, pad, cost["MULTIVI"] = fit_multivi(train, seed, out, "paired", "MULTIVI on SNARE-seq2 (9 libraries)", results)
    with PeakRSS() as t:
        emb["MULTIVI"] = mv.get_latent_representation()[pad.obs_names.get_indexer(train.obs_names)]
    cost["MULTIVI"]["embed cells/s"] = train.n_obs / t.seconds
    for hide in ("atac", "rna"):
        # held-out cells: the hidden modality is a zero row (MULTIVI's missing modality); their unseen
        # library is given a training library's code (scvi-tools refuses unseen categories)
        q = multivi_mudata(test, {"rna": "rna", "atac": "atac"}, "batch")
        q[hide].X = sp.csr_matrix(q[hide].shape, dtype=np.float32)
        for a in [q, *q.mod.values()]:
            a.obs["batch"] = pd.Categorical([TRAIN_LIBS[0]] * q.n_obs, categories=pad.obs["batch"].cat.categories)
            a.obs["modality"] = pd.Categorical(["paired"] * q.n_obs, categories=pad.obs["modality"].cat.categories)
        q.obs["_indices"] = np.arange(q.n_obs)
        if hide == "atac":
            preds_atac["MULTIVI"] = np.asarray(mv.get_normalized_accessibility(q, transform_batch="paired",
                                                                                return_numpy=True))
        else:
            rho = mv.get_normalized_expression(q, n_samples=1, transform_batch="paired")
            preds_rna["MULTIVI"] = np.log1p(np.asarray(rho) * 1e4)

    z_rna = pca_embedding(sp.vstack([train["rna"].X, test["rna"].X]), seed=seed)
    z_atac = lsi_embedding(sp.vstack([train["atac"].X, test["atac"].X]), seed=seed)
    n = train.n_obs
    for name, p in knn_ridge(z_rna[:n], z_rna[n:], binarize(train["atac"].X)).items():
        preds_atac[f"{name} on PCA of RNA"] = p
    for name, p in knn_ridge(z_atac[:n], z_atac[n:], ev.log_normalize(train["rna"].X)).items():
        preds_rna[f"{name} on LSI of ATAC"] = p
    preds_atac["mean predictor"] = ev.mean_predict(binarize(train["atac"].X), test.n_obs)
    preds_rna["mean predictor"] = ev.mean_predict(ev.log_normalize(train["rna"].X), test.n_obs)
    results["task1_rna_to_atac"] = [score_auroc(k, atac_true, v) for k, v in preds_atac.items()]
    results["task1_atac_to_rna"] = [score_regression(k, rna_true, v) for k, v in preds_rna.items()]

    labels, batch = train.obs["cell_type"].to_numpy(), train.obs["batch"].to_numpy()
    z_pca, z_lsi = z_rna[:n], z_atac[:n]
    emb["PCA + LSI concatenated"] = np.hstack([z_pca[:, :30], z_lsi[:, :30]])
    emb["WNN (muon)"] = wnn_embedding(z_pca, z_lsi, seed)
    emb["PCA(50) of RNA"] = z_pca
    emb["LSI of ATAC"] = z_lsi
    results["task2_embedding"] = [{"method": k, **ev.integration_metrics(v, labels, batch, seed=seed)}
                                  for k, v in emb.items()]
    results["cost"].extend({"task": "SNARE paired", "method": k, **v} for k, v in cost.items())
    return snare.obs_names[test_cells]


def task_diagonal(snare, cfg, hc_cfg, seed, results, out):
    rng = np.random.default_rng(seed + 1)
    cells = sample_cells(snare.obs, TRAIN_LIBS + TEST_LIBS, cfg["diag_per_lib"], rng)
    lib = snare.obs["batch"].astype(str).to_numpy()[cells]
    rna_cells, atac_cells = cells[np.isin(lib, RNA_ONLY_LIBS)], cells[~np.isin(lib, RNA_ONLY_LIBS)]
    peaks = select_peaks(snare["atac"].X[atac_cells], MULTIVI_MIN_CELLS, cfg["max_peaks"])
    mosaic = md.MuData({"rna": snare["rna"][rna_cells].copy(), "atac": snare["atac"][atac_cells][:, peaks].copy()})
    obs = snare.obs.iloc[np.concatenate([rna_cells, atac_cells])][["batch", "cell_type", "cell_type_fine"]]
    for col in obs:
        mosaic.obs[col] = obs[col].astype(str).reindex(mosaic.obs_names).to_numpy()
    is_rna = np.asarray(mosaic.obsm["rna"]).astype(bool).ravel()
    results["sizes"]["diagonal"] = {"RNA-only cells": int(is_rna.sum()), "ATAC-only cells": int((~is_rna).sum()),
                                    "peaks": int(len(peaks))}
    emb, cost = {}, {}
    model, cost["holocell"] = holocell_model(mosaic, {"rna": "rna", "atac": "atac"}, species="mouse",
                                             genome="mm10", cfg=hc_cfg, seed=seed)
    emb["holocell"] = model.get_latent_representation(progress_bar=False)
    mv, pad, cost["MULTIVI"] = fit_multivi(mosaic, seed, out, "diagonal", "MULTIVI on SNARE-seq2, no paired cell",
                                           results)
    emb["MULTIVI"] = mv.get_latent_representation()[pad.obs_names.get_indexer(mosaic.obs_names)]

    # gene activity: each gene sums the open peaks that holocell's mm10 links put on its anchor
    activity = binarize(mosaic["atac"].X) @ peak_gene_links(model, mosaic)
    results["sizes"]["diagonal"]["genes with gene activity"] = int((activity.sum(0) > 0).sum())
    log_rna, log_act = ev.log_normalize(mosaic["rna"].X), ev.log_normalize(activity)
    x_rna, x_act = StandardScaler().fit_transform(log_rna), StandardScaler().fit_transform(log_act)
    z = PCA(30, random_state=seed).fit_transform(np.vstack([x_rna, x_act]))
    order = np.concatenate([np.flatnonzero(is_rna), np.flatnonzero(~is_rna)])
    emb["gene activity + PCA"] = z[np.argsort(order)]
    emb["gene activity + CCA (Seurat-style)"] = cca_embedding(log_rna, log_act, 30)[np.argsort(order)]

    rows = []
    modality = np.where(is_rna, "rna", "atac")
    ct = mosaic.obs["cell_type"].to_numpy()
    for name, e in emb.items():
        row = {"method": name}
        for key, tag in (("cell_type", "coarse"), ("cell_type_fine", "fine")):
            lab = mosaic.obs[key].to_numpy().astype(str)
            pred = ev.knn_label_transfer(e[is_rna], lab[is_rna], e[~is_rna])
            row[f"transfer_{tag}"], row[f"transfer_{tag}_f1"] = transfer_scores(lab[~is_rna], pred)
        row["modality_ilisi"] = ev.ilisi(e, modality)
        row["modality_asw"] = ev.silhouette_batch(e, modality, ct)
        row["asw_label"] = ev.silhouette_label(e, ct)
        rows.append(row)
    row = {"method": "majority label (no embedding)"}  # every ATAC cell gets the RNA cells' commonest label
    for key, tag in (("cell_type", "coarse"), ("cell_type_fine", "fine")):
        lab = mosaic.obs[key].to_numpy().astype(str)
        commonest = pd.Series(lab[is_rna]).value_counts().index[0]
        row[f"transfer_{tag}"], row[f"transfer_{tag}_f1"] = transfer_scores(lab[~is_rna], np.full((~is_rna).sum(), commonest))
    rows.append(row)
    results["task3_diagonal"] = rows
    results["cost"].extend({"task": "SNARE diagonal", "method": k, **v} for k, v in cost.items())


def peak_gene_links(model, mdata: md.MuData) -> sp.csr_matrix:
    """``(peaks, genes)`` 0/1: a peak joins the RNA genes of its anchor. Joined by anchor index: a mouse gene's anchor
    is named by its human ortholog (``Rgs20`` -> ``RGS20``), so anchor names do not match the RNA's var_names."""
    maps = model.feature_space.maps
    assert list(maps["atac"].features) == list(mdata["atac"].var_names)
    assert list(maps["rna"].features) == list(mdata["rna"].var_names)
    peaks = pd.DataFrame({"peak": np.arange(len(maps["atac"].anchor)), "anchor": maps["atac"].anchor})
    genes = pd.DataFrame({"gene": np.arange(len(maps["rna"].anchor)), "anchor": maps["rna"].anchor})
    pairs = peaks.merge(genes, on="anchor")
    shape = (len(peaks), len(genes))
    return sp.csr_matrix((np.ones(len(pairs)), (pairs["peak"].to_numpy(), pairs["gene"].to_numpy())), shape=shape)


def transfer_scores(truth, pred) -> tuple[float, float]:
    """Accuracy and macro F1 of transferred labels (F1 is low for a method that gives every cell one label)."""
    return float(np.mean(truth == pred)), float(f1_score(truth, pred, average="macro"))


def cca_embedding(x_ref: np.ndarray, x_query: np.ndarray, k: int) -> np.ndarray:
    """Seurat's CCA between two data sets on shared features (``RunCCA`` as ``FindTransferAnchors(reduction="cca")``
    uses it): each feature scaled within its data set, the SVD of the cell x cell cross-product gives both sets'
    canonical vectors, each cell's vector L2-normalised. Rows: the reference cells, then the query's. Seurat's
    anchor scoring and weighted vote on top are left out: the kNN transfer of this benchmark runs on the space."""
    a = StandardScaler().fit_transform(x_ref)
    b = StandardScaler().fit_transform(x_query)
    u, _, vt = np.linalg.svd(a @ b.T, full_matrices=False)
    z = np.vstack([u[:, :k], vt[:k].T])
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def task_granja(cfg, hc_cfg, seed, results, out):
    adata = hc.data.granja2019_bmmc(progressbar=False)
    rng = np.random.default_rng(seed + 2)
    cells = np.sort(rng.choice(adata.n_obs, cfg["n_granja"], replace=False))
    x = adata.X[cells]
    sub = adata[cells][:, select_peaks(x, MULTIVI_MIN_CELLS, cfg["max_peaks"])].copy()
    tutorial = adata[cells][:, select_peaks(x, PEAKVI_MIN_CELLS, cfg["max_peaks"])].copy()
    results["sizes"]["granja"] = {"cells": sub.n_obs, "peaks": int(sub.n_vars), "peaks_peakvi_tutorial": tutorial.n_vars}
    labels, donor = sub.obs["cell_type"].astype(str).to_numpy(), sub.obs["batch"].astype(str).to_numpy()
    emb, cost = {}, {}
    mdata = md.MuData({"atac": sub.copy()})
    mdata.obs["batch"] = donor
    model, cost["holocell"] = holocell_model(mdata, {"atac": "atac"}, species="human", genome="hg19",
                                             cfg=hc_cfg, seed=seed)
    with PeakRSS() as t:
        emb["holocell"] = model.get_latent_representation(progress_bar=False)
    cost["holocell"]["embed cells/s"] = sub.n_obs / t.seconds
    sub.obs["batch"] = donor
    with PeakRSS() as t:
        pv, _ = train_peakvi(sub, "batch", seed, max_epochs=GRANJA_PEAKVI_EPOCHS)
    cost["PeakVI"] = scvi_cost(pv, sub.n_obs, t.seconds, t.gb)
    results["peer_training"].append({"task": "granja", **train_summary(pv, "PeakVI")})
    plot_history(pv, out / "peers_granja_peakvi.png", "PeakVI on Granja 2019 scATAC")
    with PeakRSS() as t:
        emb["PeakVI"] = pv.get_latent_representation()
    cost["PeakVI"]["embed cells/s"] = sub.n_obs / t.seconds
    tutorial.obs["batch"] = donor
    pv5, _ = train_peakvi(tutorial, "batch", seed, max_epochs=GRANJA_PEAKVI_EPOCHS)
    results["peer_training"].append({"task": "granja", **train_summary(pv5, "PeakVI (>= 5% peaks)")})
    emb["PeakVI (>= 5% peaks, its tutorial)"] = pv5.get_latent_representation()
    emb["LSI of ATAC"] = lsi_embedding(sub.X, 30, seed)
    results["task4_granja"] = [{"method": k, **ev.integration_metrics(v, labels, donor, seed=seed)}
                               for k, v in emb.items()]
    results["cost"].extend({"task": "Granja scATAC", "method": k, **v} for k, v in cost.items())


def task_generation_cost(snare, test_names, hc_cfg, n_gen, seed, results):
    """Generate every SNARE peak for held-out cells with a model over every peak (cost only, 1 epoch)."""
    rng = np.random.default_rng(seed + 3)
    all_peaks = np.arange(snare["atac"].n_vars)
    fit = _subset(snare, sample_cells(snare.obs, TRAIN_LIBS, 20, rng), all_peaks)
    hc.HoloCell.setup_mudata(fit, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch",
                             species="mouse", genome="mm10")
    model = hc.HoloCell(fit, d_model=hc_cfg["d_model"], seed=seed)
    model.train(max_epochs=1, enable_progress_bar=False, seed=seed, early_stopping=False)
    query = _subset(snare, snare.obs_names.get_indexer(test_names[:n_gen]), all_peaks)
    with PeakRSS() as t:
        model.generate(query, target="atac", n_steps=hc_cfg["n_steps"], progress_bar=False)
    results["generation_cost"] = [{
        "cells": query.n_obs, "peaks": int(len(all_peaks)), "anchors": model.feature_space.n_anchors,
        "n_steps": hc_cfg["n_steps"], "seconds": t.seconds, "cells/s": query.n_obs / t.seconds, "peak RSS GB": t.gb,
    }]


# --------------------------------------------------------------------------------------- report
def verdict_rows(results: dict) -> list[dict]:
    return (
        verdicts("SNARE-seq2 RNA -> ATAC (held-out libraries)", results.get("task1_rna_to_atac", []), ["auroc_mean"])
        + verdicts("SNARE-seq2 ATAC -> RNA (held-out libraries)", results.get("task1_atac_to_rna", []),
                   ["pearson_mean", "rmse"])
        + verdicts("SNARE-seq2 joint embedding", results.get("task2_embedding", []), EMBED_METRICS)
        + verdicts("SNARE-seq2 unpaired (diagonal)", results.get("task3_diagonal", []),
                   ["transfer_coarse", "transfer_fine", "transfer_coarse_f1", "transfer_fine_f1", "modality_ilisi",
                    "modality_asw"])
        + verdicts("Granja 2019 scATAC embedding", results.get("task4_granja", []), EMBED_METRICS)
    )


def write(results: dict, out: Path) -> None:
    results["verdicts"] = verdict_rows(results)
    sections = [
        ("1. SNARE-seq2 RNA -> ATAC, held-out libraries 09J-09L (per-peak AUROC)",
         results.get("task1_rna_to_atac", []), ["method", "auroc_mean", "auroc_median", "features_scored"]),
        ("1. SNARE-seq2 ATAC -> RNA, held-out libraries (log1p CP10k, per gene)",
         results.get("task1_atac_to_rna", []), ["method", "pearson_mean", "pearson_median", "rmse"]),
        ("2. SNARE-seq2 joint embedding (training cells, 9 libraries, 15 coarse types)",
         results.get("task2_embedding", []), ["method", *EMBED_METRICS]),
        ("3. SNARE-seq2 unpaired (diagonal): 09A-09F RNA only, 09G-09L ATAC only",
         results.get("task3_diagonal", []),
         ["method", "transfer_coarse", "transfer_fine", "transfer_coarse_f1", "transfer_fine_f1", "modality_ilisi",
          "modality_asw", "asw_label"]),
        ("4. Granja 2019 scATAC (two donors, 16 types)", results.get("task4_granja", []), ["method", *EMBED_METRICS]),
        ("5. Cost", results["cost"], ["task", "method", "epochs", "train s", "train cells/s", "embed cells/s",
                                      "peak RSS GB"]),
        ("5. Generation of every SNARE peak", results.get("generation_cost", []),
         ["cells", "peaks", "anchors", "n_steps", "seconds", "cells/s", "peak RSS GB"]),
        ("Peer training (early stopping as each model's `train()` does it, on `monitor`; curves in `peers_*.png`)",
         results["peer_training"], ["task", "model", "epochs", "max_epochs", "monitor", "best_monitored_epoch",
                                    "best_epoch", "best_validation_elbo"]),
    ]
    notes = (
        f"Sizes: `{results['sizes']}`. Peaks: SNARE tasks keep peaks open in >= 1% of cells (MULTIVI's "
        "preprocessing), Granja too (PeakVI once more on its tutorial's >= 5%), then at most `max_peaks` of the "
        "most frequent. "
        "iLISI uses scib-metrics' perplexity kernel over 90 neighbours (`holocell.evaluation.ilisi`); the earlier "
        "uniform 30-neighbour kernel gave quantised values. In the diagonal task no cell has both modalities: "
        "MULTIVI's documentation uses paired cells as the anchor between modalities, so it is run outside its "
        "intended setting there (as is every method; the task measures what each does without a bridge)."
        + (f"\n\nErrors: `{results['errors']}`" if results.get("errors") else "")
        + ("\n\nTasks and the runs that measured them (`--add` re-runs some tasks of a results file): "
           + "; ".join(f"{t}: {r.get('date', '?')}, commit `{r.get('commit', '?')}`"
                       for t, r in results["task_runs"].items()) + "." if len(results.get("task_runs", {})) > 1 else "")
        + "\n\nWhere a deep peer is below a plain baseline on the same cells (evidence: its training record):\n\n"
        + ("\n".join(filter(None, [
            below_baseline_notes(results.get("task2_embedding", []), ["MULTIVI"],
                                 ["PCA + LSI concatenated", "PCA(50) of RNA", "LSI of ATAC"], ["nmi", "ari", "asw_label"],
                                 [t for t in results["peer_training"] if t["task"] == "paired"], "SNARE-seq2 embedding"),
            below_baseline_notes(results.get("task1_rna_to_atac", []), ["MULTIVI"],
                                 ["kNN(15) on PCA of RNA", "ridge on PCA of RNA"], ["auroc_mean"],
                                 [t for t in results["peer_training"] if t["task"] == "paired"], "RNA -> ATAC"),
            below_baseline_notes(results.get("task4_granja", []), ["PeakVI"], ["LSI of ATAC"], ["nmi", "ari", "asw_label"],
                                 [t for t in results["peer_training"] if t["task"] == "granja"], "Granja 2019"),
        ])) or "none.")
    )
    write_results(out, results["name"], "ATAC quality on real cells (SNARE-seq2 mouse MOp, Granja 2019 human "
                  "bone marrow)", results, sections, notes, settings=results["settings"])


#: results keys, cost / peer-training tags and size keys written by each task (for ``--add``)
TASK_KEYS = {
    "paired": (["task1_rna_to_atac", "task1_atac_to_rna", "task2_embedding"], "SNARE paired", "paired", "paired"),
    "diagonal": (["task3_diagonal"], "SNARE diagonal", "diagonal", "diagonal"),
    "granja": (["task4_granja"], "Granja scATAC", "granja", "granja"),
    "generation": (["generation_cost"], None, None, None),
}


def kept_tasks(path: Path, fresh: dict, rerun: list[str]) -> dict:
    """The results of ``path`` (same sizes, holocell settings and seed) without the tasks about to be re-run."""
    if not path.exists():
        return fresh
    old = json.loads(path.read_text())
    if "task_runs" not in old and "meta" in old:  # a file of one run: each of its tasks came from that run
        old["task_runs"] = {t: old["meta"] for t in old.get("settings", {}).get("tasks", "").split(",") if t}
    same = ("mode", "seed")
    if any(old.get(k) != fresh[k] for k in same) or old.get("settings", {}).get("holocell") != fresh["settings"]["holocell"]:
        raise SystemExit(f"{path} holds a run of other sizes, seed or holocell settings; --add needs the same.")
    for task in rerun:
        keys, cost_tag, peer_tag, size_key = TASK_KEYS[task]
        for key in keys:
            old.pop(key, None)
        old["cost"] = [c for c in old.get("cost", []) if c.get("task") != cost_tag]
        old["peer_training"] = [t for t in old.get("peer_training", []) if t.get("task") != peer_tag]
        old.get("sizes", {}).pop(size_key, None)
        old.get("task_runs", {}).pop(task, None)
    tasks = {*old.get("settings", {}).get("tasks", "").split(","), *rerun} - {""}
    old["settings"] = {**fresh["settings"], "tasks": ",".join(t for t in TASK_KEYS if t in tasks)}
    for key in ("errors", "verdicts", "meta", "total_seconds"):
        old.pop(key, None)
    return old


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="sizes by name (overrides --quick)")
    p.add_argument("--tasks", default="paired,diagonal,granja,generation")
    p.add_argument("--add", action="store_true",
                   help="keep the other tasks of the results file of the same size; re-run only --tasks")
    args = p.parse_args()
    os.environ.setdefault(hc.data._registry.DATA_DIR_ENV, str(ROOT.parent / "shared" / "data"))
    quiet()
    mode = args.size or ("quick" if args.quick else "full")
    cfg, hc_cfg = SIZES[mode], HOLOCELL[mode]
    results = {"name": "chromatin" if mode != "gpu" else "chromatin_gpu", "quick": mode == "quick", "mode": mode,
               "seed": args.seed, "settings": {"sizes": cfg, "holocell": hc_cfg, "tasks": args.tasks},
               "sizes": {}, "cost": [], "peer_training": []}
    if args.add:
        results = kept_tasks(args.out / f"{results['name']}.json", results, args.tasks.split(","))
    snare = hc.data.snareseq2_mop(progressbar=False)
    state = {"test_names": snare.obs_names[np.isin(snare.obs["batch"].astype(str), TEST_LIBS)]}
    jobs = {
        "paired": lambda: state.update(test_names=task_paired(snare, cfg, hc_cfg, args.seed, results, args.out)),
        "diagonal": lambda: task_diagonal(snare, cfg, hc_cfg, args.seed, results, args.out),
        "granja": lambda: task_granja(cfg, hc_cfg, args.seed, results, args.out),
        "generation": lambda: task_generation_cost(snare, state["test_names"], hc_cfg, cfg["n_gen"], args.seed,
                                                   results),
    }
    t0 = time.perf_counter()
    for name in args.tasks.split(","):
        try:
            jobs[name]()
        except Exception as err:  # noqa: BLE001 - keep the other tasks' results; the report names the failure
            results.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        print(f"[{time.perf_counter() - t0:.0f}s] {name} done", flush=True)
        results.setdefault("task_runs", {})[name] = provenance(None, results["quick"])
    results["total_seconds"] = time.perf_counter() - t0
    write(results, args.out)


if __name__ == "__main__":
    main()
