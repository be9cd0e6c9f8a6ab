"""ATAC quality on real cells: SNARE-seq2 mouse motor cortex (paired RNA + ATAC) and Granja 2019 scATAC.

Tasks (peers run in the same process, on the same cells and peaks):

1. SNARE-seq2 paired: train on libraries 09A-09I, predict the held-out libraries 09J-09L: ATAC from
   RNA (per-peak AUROC over peaks accessible in >= 1% of held-out cells) and RNA from ATAC (per-gene
   Pearson on log1p CP10k). Peers: MULTIVI, kNN(15) and ridge on PCA(50) of RNA / LSI(50) of ATAC,
   the training mean.
2. SNARE-seq2 joint embedding of the training cells (9 libraries): NMI, ARI, label ASW, batch ASW,
   iLISI across libraries, graph connectivity. Peers: MULTIVI, WNN (muon), PCA + LSI concatenation.
3. SNARE-seq2 unpaired (diagonal): 09A-09F as RNA only, 09G-09L as ATAC only, no shared cell.
   kNN label transfer RNA -> ATAC cells (coarse, fine), modality mixing. Peers: MULTIVI on the same
   layout (zero-padded, as MULTIVI expects), gene activity + PCA.
4. Granja 2019 scATAC, two donors: NMI, ARI, label ASW, donor mixing. Peers: PeakVI, LSI.
5. Cost: training / embedding cells per second and peak RSS beside MULTIVI / PeakVI; generation of
   all 25,734 SNARE peaks for held-out cells (time, memory).

Run ``python benchmarks/chromatin.py`` (``--quick`` for a smoke run). Files come from
``$HOLOCELL_DATA_DIR`` (default ``../shared/data`` beside the clone). Results go to
``benchmarks/results/chromatin.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import traceback
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.linear_model import Ridge
from sklearn.manifold import spectral_embedding
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

import holocell as hc
from holocell.evaluation import (
    format_table,
    knn_label_transfer_accuracy,
    log_normalize,
    nmi_ari,
    per_feature_auroc,
    per_feature_pearson,
    silhouette_batch,
    silhouette_label,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_LIBS = [f"09{c}" for c in "ABCDEFGHI"]
TEST_LIBS = ["09J", "09K", "09L"]
RNA_ONLY_LIBS = [f"09{c}" for c in "ABCDEF"]
N_LATENT_SCVI = 20  # MULTIVI / PeakVI latent size (their default depends on the number of peaks)

SIZES = {
    # cells per library (training / held-out / diagonal), peaks kept, Granja cells and peaks, epochs,
    # held-out cells for the all-peaks generation cost, holocell width
    "quick": {"per_lib": 30, "test_per_lib": 20, "n_peaks": 800, "diag_per_lib": 30, "n_granja": 300,
              "granja_peaks": 800, "hc_epochs": 1, "scvi_epochs": 3, "n_gen": 10, "d_model": 32, "hc_batch": 16,
              "hc_ema": 0.98},
    # sized for 2 shared CPU cores (a few minutes per model); see the report for what this costs holocell
    "full": {"per_lib": 50, "test_per_lib": 25, "n_peaks": 1500, "diag_per_lib": 40, "n_granja": 600,
             "granja_peaks": 1500, "hc_epochs": 6, "scvi_epochs": 60, "n_gen": 25, "d_model": 64, "hc_batch": 16,
             "hc_ema": 0.98},
    # for a GPU (benchmarks/results/chromatin_gpu.md): 6x the cells, 3x the peaks, the default width
    "gpu": {"per_lib": 300, "test_per_lib": 100, "n_peaks": 5000, "diag_per_lib": 250, "n_granja": 3000,
            "granja_peaks": 5000, "hc_epochs": 20, "scvi_epochs": 80, "n_gen": 200, "d_model": 128, "hc_batch": 64,
            "hc_ema": 0.995},
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


# --------------------------------------------------------------------------------------- features
def binarize(x) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.data[:] = 1.0
    return x


def lsi(x_binary, n_comp: int = 50, seed: int = 0) -> np.ndarray:
    """TF-IDF (log) + truncated SVD, first component dropped (depth), components standardised."""
    x = sp.csr_matrix(x_binary, dtype=np.float64)
    tf = sp.diags(1.0 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1)) @ x
    idf = x.shape[0] / np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1)
    tfidf = (tf @ sp.diags(idf)).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    n_comp = min(n_comp + 1, min(x.shape) - 1)
    z = TruncatedSVD(n_comp, random_state=seed).fit_transform(tfidf)[:, 1:]
    return StandardScaler().fit_transform(z)


def pca(x_counts, n_comp: int = 50, seed: int = 0) -> np.ndarray:
    """log1p CP10k, per-gene scaling, PCA."""
    z = StandardScaler().fit_transform(log_normalize(x_counts))
    return PCA(min(n_comp, min(z.shape) - 1), random_state=seed).fit_transform(z)


def knn_ridge(z_train, z_query, y_train) -> dict[str, np.ndarray]:
    y = np.asarray(y_train.toarray() if sp.issparse(y_train) else y_train, dtype=np.float32)
    idx = NearestNeighbors(n_neighbors=15).fit(z_train).kneighbors(z_query, return_distance=False)
    return {"kNN(15)": y[idx].mean(axis=1), "ridge": Ridge(alpha=1.0).fit(z_train, y).predict(z_query)}


# --------------------------------------------------------------------------------------- integration metrics
# Local stand-ins for holocell.evaluation's integration metrics (being added in another branch):
# iLISI with a uniform kNN kernel and scib-style graph connectivity.
def ilisi(emb: np.ndarray, batch, k: int = 30) -> float:
    """Median inverse Simpson index of batches among each cell's k neighbours, scaled to [0, 1]."""
    batch = np.asarray(batch).astype(str)
    cats, codes = np.unique(batch, return_inverse=True)
    if len(cats) < 2:
        return float("nan")
    idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)[:, 1:]
    props = np.stack([(codes[idx] == c).mean(axis=1) for c in range(len(cats))], axis=1)
    lisi = 1.0 / (props**2).sum(axis=1)
    return float((np.median(lisi) - 1) / (len(cats) - 1))


def graph_connectivity(emb: np.ndarray, labels, k: int = 15) -> float:
    """Mean over labels of the fraction of the label's cells in the largest component of its kNN subgraph."""
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels).astype(str)
    graph = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors_graph(emb)
    scores = []
    for lab in np.unique(labels):
        keep = np.flatnonzero(labels == lab)
        _, comp = connected_components(graph[keep][:, keep], directed=False)
        scores.append(np.bincount(comp).max() / len(keep))
    return float(np.mean(scores))


def embedding_scores(emb: np.ndarray, labels, batch) -> dict[str, float]:
    out = nmi_ari(emb, labels)
    out["label ASW"] = silhouette_label(emb, labels)
    out["batch ASW"] = silhouette_batch(emb, batch, labels)
    out["iLISI"] = ilisi(emb, batch)
    out["graph conn."] = graph_connectivity(emb, labels)
    return {k.upper() if k in ("nmi", "ari") else k: v for k, v in out.items()}


# --------------------------------------------------------------------------------------- data
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


def top_peaks(x, n: int) -> np.ndarray:
    freq = np.asarray((x > 0).mean(axis=0)).ravel()
    return np.sort(np.argsort(-freq, kind="stable")[:n])


# --------------------------------------------------------------------------------------- models
def holocell_model(mdata, modalities, *, species, genome, cfg, seed):
    hc.HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", species=species, genome=genome)
    model = hc.HoloCell(mdata, d_model=cfg["d_model"], seed=seed)
    with PeakRSS() as train_cost:
        model.train(max_epochs=cfg["hc_epochs"], batch_size=cfg["hc_batch"], ema_decay=cfg["hc_ema"],
                    enable_progress_bar=False, seed=seed, early_stopping=False)
    epochs = len(model.history_)
    cost = {"train cells/s": mdata.n_obs * 0.9 * epochs / train_cost.seconds, "train s": train_cost.seconds,
            "epochs": epochs, "peak RSS GB": train_cost.gb}
    return model, cost


def scvi_cost(model, n_cells: int, seconds: float, rss: float) -> dict:
    epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else np.nan
    return {"train cells/s": n_cells * 0.9 * epochs / seconds, "train s": seconds, "epochs": epochs,
            "peak RSS GB": rss}


def multivi_mudata(mdata: md.MuData) -> md.MuData:
    """MULTIVI input: binary ATAC, counts RNA, every cell in both modalities (zero rows = missing)."""
    out = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    out["atac"].X = binarize(out["atac"].X)
    out.obs["batch"] = mdata.obs["batch"].astype(str).to_numpy()
    return out


def train_multivi(mdata: md.MuData, epochs: int, seed: int):
    import scvi

    scvi.settings.seed = seed
    mdata["rna"].obs["batch"] = mdata.obs["batch"].to_numpy()  # MULTIVI reads the batch from the RNA modality
    scvi.model.MULTIVI.setup_mudata(
        mdata, batch_key="batch", modalities={"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"}
    )
    model = scvi.model.MULTIVI(mdata, n_latent=N_LATENT_SCVI)
    with PeakRSS() as cost:
        model.train(max_epochs=epochs, early_stopping=False, enable_progress_bar=False)
    return model, scvi_cost(model, mdata.n_obs, cost.seconds, cost.gb)


# --------------------------------------------------------------------------------------- tasks
def task_paired(snare, cfg, seed, results):
    rng = np.random.default_rng(seed)
    train_cells = sample_cells(snare.obs, TRAIN_LIBS, cfg["per_lib"], rng)
    test_cells = sample_cells(snare.obs, TEST_LIBS, cfg["test_per_lib"], rng)
    peaks = top_peaks(snare["atac"].X[train_cells], cfg["n_peaks"])
    train, test = _subset(snare, train_cells, peaks), _subset(snare, test_cells, peaks)
    results["sizes"]["paired"] = {"train cells": train.n_obs, "held-out cells": test.n_obs,
                                  "peaks": int(len(peaks)), "genes": int(train["rna"].n_vars)}
    atac_true = binarize(test["atac"].X).toarray()
    rna_true = log_normalize(test["rna"].X)
    preds_atac, preds_rna, emb, cost = {}, {}, {}, {}

    # holocell
    model, cost["holocell"] = holocell_model(
        train, {"rna": "rna", "atac": "atac"}, species="mouse", genome="mm10", cfg=cfg, seed=seed
    )
    with PeakRSS() as t:
        emb["holocell"] = model.get_latent_representation(progress_bar=False)
    cost["holocell"]["embed cells/s"] = train.n_obs / t.seconds
    preds_atac["holocell"] = model.generate(test, target="atac", n_steps=8, progress_bar=False).X
    preds_rna["holocell"] = model.generate(test, target="rna", n_steps=8, progress_bar=False).X

    # MULTIVI (held-out cells carry library 09A's batch code: scvi-tools refuses unseen categories)
    mv_train = multivi_mudata(train)
    mv, cost["MULTIVI"] = train_multivi(mv_train, cfg["scvi_epochs"], seed)
    with PeakRSS() as t:
        emb["MULTIVI"] = mv.get_latent_representation(mv_train)
    cost["MULTIVI"]["embed cells/s"] = train.n_obs / t.seconds
    for hide in ("atac", "rna"):
        q = multivi_mudata(test)
        q.obs["batch"] = TRAIN_LIBS[0]
        q[hide].X = sp.csr_matrix(q[hide].shape, dtype=np.float32)
        q.update()
        q["rna"].obs["batch"] = TRAIN_LIBS[0]
        q.obs["_indices"] = np.arange(q.n_obs)  # MULTIVI registers a cell-index column at setup
        if hide == "atac":
            preds_atac["MULTIVI"] = np.asarray(mv.get_normalized_accessibility(q, return_numpy=True))
        else:
            rho = np.asarray(mv.get_normalized_expression(q, return_numpy=True))
            preds_rna["MULTIVI"] = np.log1p(rho * 1e4)

    # kNN / ridge / mean
    z_rna = pca(sp.vstack([train["rna"].X, test["rna"].X]), seed=seed)
    z_atac = lsi(binarize(sp.vstack([train["atac"].X, test["atac"].X])), seed=seed)
    n = train.n_obs
    for name, p in knn_ridge(z_rna[:n], z_rna[n:], binarize(train["atac"].X)).items():
        preds_atac[f"{name} on RNA PCA"] = p
    for name, p in knn_ridge(z_atac[:n], z_atac[n:], log_normalize(train["rna"].X)).items():
        preds_rna[f"{name} on ATAC LSI"] = p
    preds_atac["mean"] = np.tile(np.asarray(binarize(train["atac"].X).mean(axis=0)), (test.n_obs, 1))
    preds_rna["mean"] = np.tile(log_normalize(train["rna"].X).mean(axis=0), (test.n_obs, 1))

    rows = []
    for name in preds_atac:
        auroc = per_feature_auroc(atac_true, preds_atac[name], min_positive_frac=0.01)
        row = {"method": name, "RNA->ATAC AUROC": float(np.nanmean(auroc)), "peaks scored": int(np.isfinite(auroc).sum())}
        rna_name = {"kNN(15) on RNA PCA": "kNN(15) on ATAC LSI", "ridge on RNA PCA": "ridge on ATAC LSI"}.get(name, name)
        if rna_name in preds_rna:
            r = per_feature_pearson(rna_true, preds_rna[rna_name])
            varies = rna_true.std(axis=0) > 1e-6
            row["ATAC->RNA Pearson"] = float(np.mean(np.nan_to_num(r[varies])))
        if name.startswith(("kNN", "ridge")):
            row["method"] = name.replace(" on RNA PCA", " on PCA / LSI")
        rows.append(row)
    results["task1_prediction"] = rows

    # Task 2: embedding of the training cells (9 libraries)
    labels, batch = train.obs["cell_type"].to_numpy(), train.obs["batch"].to_numpy()
    z_pca, z_lsi = z_rna[:n], z_atac[:n]
    emb["PCA + LSI concat"] = np.hstack([z_pca[:, :30], z_lsi[:, :30]])
    emb["WNN (muon)"] = wnn_embedding(z_pca, z_lsi, seed)
    results["task2_embedding"] = [{"method": k, **embedding_scores(v, labels, batch)} for k, v in emb.items()]
    results["cost"].extend({"task": "SNARE paired", "method": k, **v} for k, v in cost.items())
    return snare.obs_names[test_cells]


def wnn_embedding(z_rna: np.ndarray, z_atac: np.ndarray, seed: int) -> np.ndarray:
    """muon's weighted nearest neighbours on RNA PCA + ATAC LSI, as a 30-d spectral embedding of its graph."""
    import muon as mu
    import scanpy as sc

    a = ad.AnnData(np.zeros((len(z_rna), 1), dtype=np.float32), obsm={"X_pca": z_rna})
    b = ad.AnnData(np.zeros((len(z_atac), 1), dtype=np.float32), obsm={"X_lsi": z_atac})
    b.obs_names = a.obs_names = [f"c{i}" for i in range(len(z_rna))]
    sc.pp.neighbors(a, use_rep="X_pca", random_state=seed)
    sc.pp.neighbors(b, use_rep="X_lsi", random_state=seed)
    m = md.MuData({"rna": a, "atac": b})
    mu.pp.neighbors(m, key_added="wnn", n_multineighbors=min(200, len(z_rna) - 1), random_state=seed)
    graph = m.obsp["wnn_connectivities"]
    graph = (graph + graph.T) / 2
    return spectral_embedding(graph, n_components=30, random_state=seed, drop_first=True)


def task_diagonal(snare, cfg, seed, results):
    rng = np.random.default_rng(seed + 1)
    cells = sample_cells(snare.obs, TRAIN_LIBS + TEST_LIBS, cfg["diag_per_lib"], rng)
    lib = snare.obs["batch"].astype(str).to_numpy()[cells]
    rna_cells, atac_cells = cells[np.isin(lib, RNA_ONLY_LIBS)], cells[~np.isin(lib, RNA_ONLY_LIBS)]
    peaks = top_peaks(snare["atac"].X[atac_cells], cfg["n_peaks"])
    mosaic = md.MuData({"rna": snare["rna"][rna_cells].copy(), "atac": snare["atac"][atac_cells][:, peaks].copy()})
    obs = snare.obs.iloc[np.concatenate([rna_cells, atac_cells])][["batch", "cell_type", "cell_type_fine"]]
    for col in obs:
        mosaic.obs[col] = obs[col].astype(str).reindex(mosaic.obs_names).to_numpy()
    is_rna = np.asarray(mosaic.obsm["rna"]).astype(bool).ravel()
    results["sizes"]["diagonal"] = {"RNA-only cells": int(is_rna.sum()), "ATAC-only cells": int((~is_rna).sum()),
                                    "peaks": int(len(peaks))}
    emb, cost = {}, {}
    model, cost["holocell"] = holocell_model(
        mosaic, {"rna": "rna", "atac": "atac"}, species="mouse", genome="mm10", cfg=cfg, seed=seed
    )
    emb["holocell"] = model.get_latent_representation(progress_bar=False)

    # MULTIVI: zero-padded layout over all cells
    padded = md.MuData({
        "rna": ad.AnnData(_pad(mosaic["rna"], mosaic.obs_names), obs=pd.DataFrame(index=mosaic.obs_names),
                          var=pd.DataFrame(index=mosaic["rna"].var_names)),
        "atac": ad.AnnData(binarize(_pad(mosaic["atac"], mosaic.obs_names)), obs=pd.DataFrame(index=mosaic.obs_names),
                           var=pd.DataFrame(index=mosaic["atac"].var_names)),
    })
    padded.obs["batch"] = mosaic.obs["batch"].to_numpy()
    mv, cost["MULTIVI"] = train_multivi(padded, cfg["scvi_epochs"], seed)
    emb["MULTIVI"] = mv.get_latent_representation(padded)

    # gene activity (peaks linked to each gene by holocell's mm10 links) + shared PCA, no correction
    links = model.feature_space.maps["atac"].report
    genes = mosaic["rna"].var_names
    col = pd.Index(genes).get_indexer(links["anchor"].astype(str))
    ok = col >= 0
    link_mat = sp.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), col[ok])), shape=(len(links), len(genes)))
    activity = binarize(mosaic["atac"].X) @ link_mat
    x_rna = StandardScaler().fit_transform(log_normalize(mosaic["rna"].X))
    x_act = StandardScaler().fit_transform(log_normalize(activity))
    z = PCA(30, random_state=seed).fit_transform(np.vstack([x_rna, x_act]))
    order = np.concatenate([np.flatnonzero(is_rna), np.flatnonzero(~is_rna)])
    emb["gene activity + PCA"] = z[np.argsort(order)]

    rows = []
    modality = np.where(is_rna, "rna", "atac")
    for name, e in emb.items():
        row = {"method": name}
        for key in ("cell_type", "cell_type_fine"):
            lab = mosaic.obs[key].to_numpy()
            row[f"transfer {'coarse' if key == 'cell_type' else 'fine'}"] = knn_label_transfer_accuracy(
                e[is_rna], lab[is_rna], e[~is_rna], lab[~is_rna]
            )
        row["modality iLISI"] = ilisi(e, modality)
        row["modality ASW"] = silhouette_batch(e, modality, mosaic.obs["cell_type"].to_numpy())
        row["label ASW"] = silhouette_label(e, mosaic.obs["cell_type"].to_numpy())
        rows.append(row)
    results["task3_diagonal"] = rows
    results["cost"].extend({"task": "SNARE diagonal", "method": k, **v} for k, v in cost.items())


def _pad(adata: ad.AnnData, obs_names: pd.Index) -> sp.csr_matrix:
    rows = pd.Index(obs_names).get_indexer(adata.obs_names)
    x = sp.coo_matrix(adata.X)
    return sp.csr_matrix((x.data, (rows[x.row], x.col)), shape=(len(obs_names), adata.n_vars), dtype=np.float32)


def task_granja(cfg, seed, results):
    import scvi

    adata = hc.data.granja2019_bmmc(progressbar=False)
    rng = np.random.default_rng(seed + 2)
    cells = np.sort(rng.choice(adata.n_obs, cfg["n_granja"], replace=False))
    peaks = top_peaks(adata.X[cells], cfg["granja_peaks"])
    sub = adata[cells][:, peaks].copy()
    results["sizes"]["granja"] = {"cells": sub.n_obs, "peaks": int(sub.n_vars)}
    labels, donor = sub.obs["cell_type"].astype(str).to_numpy(), sub.obs["batch"].astype(str).to_numpy()
    emb, cost = {}, {}
    mdata = md.MuData({"atac": sub.copy()})
    mdata.obs["batch"] = donor
    model, cost["holocell"] = holocell_model(mdata, {"atac": "atac"}, species="human", genome="hg19", cfg=cfg, seed=seed)
    with PeakRSS() as t:
        emb["holocell"] = model.get_latent_representation(progress_bar=False)
    cost["holocell"]["embed cells/s"] = sub.n_obs / t.seconds

    pv_data = ad.AnnData(binarize(sub.X), obs=pd.DataFrame({"batch": donor}, index=sub.obs_names))
    scvi.settings.seed = seed
    scvi.model.PEAKVI.setup_anndata(pv_data, batch_key="batch")
    pv = scvi.model.PEAKVI(pv_data, n_latent=N_LATENT_SCVI)
    with PeakRSS() as t:
        pv.train(max_epochs=cfg["scvi_epochs"], early_stopping=False, enable_progress_bar=False)
    cost["PeakVI"] = scvi_cost(pv, sub.n_obs, t.seconds, t.gb)
    with PeakRSS() as t:
        emb["PeakVI"] = pv.get_latent_representation()
    cost["PeakVI"]["embed cells/s"] = sub.n_obs / t.seconds
    emb["LSI (TF-IDF + SVD)"] = lsi(binarize(sub.X), 30, seed)
    results["task4_granja"] = [{"method": k, **embedding_scores(v, labels, donor)} for k, v in emb.items()]
    results["cost"].extend({"task": "Granja scATAC", "method": k, **v} for k, v in cost.items())


def task_generation_cost(snare, test_names, cfg, seed, results):
    """Generate all 25,734 peaks for held-out cells with a model over every peak (cost only, 1 epoch)."""
    rng = np.random.default_rng(seed + 3)
    all_peaks = np.arange(snare["atac"].n_vars)
    fit_cells = sample_cells(snare.obs, TRAIN_LIBS, 20, rng)
    fit = _subset(snare, fit_cells, all_peaks)
    hc.HoloCell.setup_mudata(fit, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch",
                             species="mouse", genome="mm10")
    model = hc.HoloCell(fit, d_model=cfg["d_model"], seed=seed)
    model.train(max_epochs=1, enable_progress_bar=False, seed=seed, early_stopping=False)
    gen_cells = snare.obs_names.get_indexer(test_names[: cfg["n_gen"]])
    query = _subset(snare, gen_cells, all_peaks)
    with PeakRSS() as t:
        model.generate(query, target="atac", n_steps=8, progress_bar=False)
    results["generation_cost"] = {
        "cells": query.n_obs, "peaks": int(len(all_peaks)), "anchors": model.feature_space.n_anchors,
        "n_steps": 8, "seconds": t.seconds, "cells/s": query.n_obs / t.seconds, "peak RSS GB": t.gb,
    }


# --------------------------------------------------------------------------------------- report
def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chromatin.json").write_text(json.dumps(results, indent=2, default=float))
    lines = [
        "# ATAC quality on real cells (SNARE-seq2 mouse MOp, Granja 2019 human bone marrow)",
        "",
        f"Command: `{results['command']}` ({results['mode']} mode, seed {results['seed']}). "
        f"Machine: {results.get('machine', '2 shared CPU cores')} (quality numbers are seeded).",
        f"Sizes: `{json.dumps(results['sizes'])}`. Settings: `{json.dumps(results['settings'])}`.",
        "",
        "## 1. SNARE-seq2 paired prediction, held-out libraries 09J-09L",
        "",
        "AUROC per peak over peaks accessible in >= 1% of held-out cells; Pearson per gene on log1p CP10k.",
        "",
        format_table(results.get("task1_prediction", []), ["method", "RNA->ATAC AUROC", "ATAC->RNA Pearson", "peaks scored"]),
        "",
        "## 2. SNARE-seq2 joint embedding (training cells, 9 libraries, 15 coarse types)",
        "",
        format_table(results.get("task2_embedding", []),
                     ["method", "NMI", "ARI", "label ASW", "batch ASW", "iLISI", "graph conn."]),
        "",
        "## 3. SNARE-seq2 unpaired (diagonal): 09A-09F RNA only, 09G-09L ATAC only",
        "",
        "kNN(15) label transfer from RNA-only to ATAC-only cells; modality mixing (iLISI scaled to [0, 1], "
        "ASW batch with modality as batch).",
        "",
        format_table(results.get("task3_diagonal", []),
                     ["method", "transfer coarse", "transfer fine", "modality iLISI", "modality ASW", "label ASW"]),
        "",
        "## 4. Granja 2019 scATAC (two donors, 16 types)",
        "",
        format_table(results.get("task4_granja", []),
                     ["method", "NMI", "ARI", "label ASW", "batch ASW", "iLISI", "graph conn."]),
        "",
        "## 5. Cost",
        "",
        format_table(results["cost"],
                     ["task", "method", "epochs", "train s", "train cells/s", "embed cells/s", "peak RSS GB"]),
        "",
        f"Generation of all SNARE peaks: `{json.dumps(results.get('generation_cost', {}), default=float)}`",
        "",
        f"Errors: `{json.dumps(results.get('errors', {}))}`" if results.get("errors") else "",
        "",
        "## Ratio to the best peer (holocell / best peer; target >= 1.1)",
        "",
        format_table(results["ratios"], ["task", "metric", "holocell", "best peer", "peer value", "ratio"]),
        "",
    ]
    (out / "chromatin.md").write_text("\n".join(lines))


def ratios(results: dict) -> list[dict]:
    out = []
    specs = [
        ("task1_prediction", ["RNA->ATAC AUROC", "ATAC->RNA Pearson"]),
        ("task2_embedding", ["NMI", "ARI", "label ASW", "batch ASW", "iLISI", "graph conn."]),
        ("task3_diagonal", ["transfer coarse", "transfer fine", "modality iLISI", "modality ASW"]),
        ("task4_granja", ["NMI", "ARI", "label ASW", "batch ASW", "iLISI"]),
    ]
    for task, metrics in specs:
        rows = {r["method"]: r for r in results.get(task, [])}
        if "holocell" not in rows:
            continue
        for metric in metrics:
            peers = {k: r.get(metric) for k, r in rows.items() if k != "holocell" and r.get(metric) is not None}
            peers = {k: v for k, v in peers.items() if np.isfinite(v)}
            if not peers:
                continue
            best = max(peers, key=peers.get)
            mine = rows["holocell"].get(metric, np.nan)
            out.append({"task": task, "metric": metric, "holocell": mine, "best peer": best,
                        "peer value": peers[best], "ratio": mine / peers[best] if peers[best] else np.nan})
    return out


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [("task1_prediction", "RNA->ATAC AUROC"), ("task2_embedding", "ARI"),
              ("task3_diagonal", "transfer coarse"), ("task4_granja", "ARI")]
    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.2))
    for ax, (task, metric) in zip(axes, tables, strict=True):
        rows = results.get(task, [])
        names = [r["method"] for r in rows]
        vals = [r.get(metric, np.nan) for r in rows]
        ax.barh(names, vals, color=["tab:red" if n == "holocell" else "tab:gray" for n in names])
        ax.set_title(f"{task.split('_', 1)[1]}: {metric}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "chromatin.png", dpi=120)
    plt.close(fig)


def merge(paths: list[Path], out: Path) -> None:
    """One report from runs that each did some of the tasks (e.g. in parallel processes)."""
    results: dict = {"cost": [], "sizes": {}}
    for path in paths:
        if not (path / "chromatin.json").is_file():
            print(f"skipping {path}: no chromatin.json (that run has not finished a task)")
            continue
        part = json.loads((path / "chromatin.json").read_text())
        results["cost"].extend(part.pop("cost", []))
        results["sizes"].update(part.pop("sizes", {}))
        results.setdefault("errors", {}).update(part.pop("errors", {}))
        part.pop("ratios", None)
        results.update(part)
    results["command"] = results.get("command", "").split(" --tasks")[0] + " (tasks in parallel processes, then --merge)"
    results["ratios"] = ratios(results)
    write_report(results, out)
    plot(results, out)
    print((out / "chromatin.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and epochs (a smoke run)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="sizes by name (overrides --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="paired,diagonal,granja,generation")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine chromatin.json files of runs of single tasks")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    os.environ.setdefault(hc.data._registry.DATA_DIR_ENV, str(ROOT.parent / "shared" / "data"))
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    mode = args.size or ("quick" if args.quick else "full")
    cfg = SIZES[mode]
    tasks = args.tasks.split(",")
    command = f"python benchmarks/chromatin.py --size {mode} --tasks {args.tasks}"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    results = {"command": command, "mode": mode, "machine": device,
               "seed": args.seed, "settings": cfg, "sizes": {}, "cost": []}
    snare = hc.data.snareseq2_mop(progressbar=False)
    t0 = time.perf_counter()
    state = {"test_names": snare.obs_names[np.isin(snare.obs["batch"].astype(str), TEST_LIBS)]}
    jobs = {
        "paired": lambda: state.update(test_names=task_paired(snare, cfg, args.seed, results)),
        "diagonal": lambda: task_diagonal(snare, cfg, args.seed, results),
        "granja": lambda: task_granja(cfg, args.seed, results),
        "generation": lambda: task_generation_cost(snare, state["test_names"], cfg, args.seed, results),
    }
    for name in tasks:
        try:
            jobs[name]()
        except Exception as err:  # noqa: BLE001 - keep the other tasks' results; the report names the failure
            results.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        print(f"[{time.perf_counter() - t0:.0f}s] {name} done", flush=True)
        results["ratios"] = ratios(results)
        write_report(results, args.out)
    results["ratios"] = ratios(results)
    results["total seconds"] = time.perf_counter() - t0
    write_report(results, args.out)
    plot(results, args.out)
    print((args.out / "chromatin.md").read_text())


if __name__ == "__main__":
    main()
