"""Label transfer of ``benchmarks/perturbation.py`` on real cells: PBMC CITE-seq and SNARE-seq2.

Both data sets are mosaics: holocell trains once on every cell without labels, then labels a query
from a reference across batches (paired cells of other libraries) and across modalities (a reference measured
with one modality, a query measured with another; paired cells of other libraries, unlabelled, are the bridge):

- PBMC (bundled): paired p3 -> paired p4; protein-only p2 -> RNA-only p1.
- SNARE-seq2 mouse motor cortex: 09A-09C RNA only, 09D-09I paired, 09J-09L ATAC only. Paired 09D-09F -> paired
  09G-09I; RNA-only 09A-09C -> ATAC-only 09J-09L. Each at the 15 coarse and the 23 fine types.

holocell rows: ``tl.annotate``'s frozen methods on the cell state (the default, ``"both"``, first: the row the
verdict compares) and the head fine-tuned with the encoder (``method="finetune"``), which sees the reference
labels only. Peers on the same cells: kNN(15) and logistic regression on PCA (PBMC: PCA(50) of RNA + protein; SNARE:
RNA PCA and ATAC LSI side by side). Across modalities the peers go through the bridge, as holocell does: each query cell
gets the reference modality imputed as the mean of its 15 nearest paired cells in its own modality's space.
"""

from __future__ import annotations

import time

import mudata as md
import numpy as np
import pandas as pd
from _peers import MULTIVI_MIN_CELLS, lsi_embedding, pca_embedding
from chromatin import HOLOCELL as CHROMATIN_SETTINGS
from chromatin import sample_cells, select_peaks
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler

import holocell as hc
from holocell import evaluation as ev
from holocell.tl._annotate import transfer_labels

#: rows of tl.annotate(method="finetune"): its defaults, then one setting changed each (docs/design.md)
FINETUNE_ROWS = {
    "holocell (fine-tuned head)": {},
    "holocell (fine-tuned head, ablation: classification_weight=1)": {"classification_weight": 1.0},
    "holocell (fine-tuned head, ablation: consistency_weight=0)": {"consistency_weight": 0.0},
    "holocell (fine-tuned head, ablation: class_weight=None)": {"class_weight": None},
}
#: SNARE-seq2 trains slowly (every cell carries hundreds of peak tokens): the defaults only
SNARE_FINETUNE_ROWS = dict(list(FINETUNE_ROWS.items())[:1])
SNARE_LIBS = {"rna": ["09A", "09B", "09C"], "paired": ["09D", "09E", "09F", "09G", "09H", "09I"],
              "atac": ["09J", "09K", "09L"]}
SNARE_LABELS = {"cell_type": "coarse", "cell_type_fine": "fine"}


def cls_row(task, method, y_true, y_pred) -> dict:
    return {"task": task, "method": method, "accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro")}


def holocell_rows(task, mdata, model, z, labels_key, ref, q, finetune_rows, args) -> list[dict]:
    """The frozen methods on ``z`` (the default first), then every fine-tuned head of ``finetune_rows``."""
    label = mdata.obs[labels_key].astype(str).to_numpy()
    rows = []
    for method in ("both", "knn", "classifier"):  # tl.annotate's default first: the row the verdict compares
        proba, classes = transfer_labels(z[ref], label[ref], z[q], method=method, seed=args.seed)
        rows.append(cls_row(task, f"holocell ({method})", label[q], classes[proba.argmax(1)]))
    tuned = mdata.copy()  # the head fine-tuned with the encoder sees the reference labels only
    tuned.obs["reference_label"] = mdata.obs[labels_key].astype(str).where(ref)
    for name, head_kwargs in finetune_rows.items():  # the defaults first, then the ablations
        hc.tl.annotate(tuned, model, labels_key="reference_label", query=q, reference=ref, method="finetune",
                       max_epochs=args.finetune_epochs, seed=args.seed, progress_bar=False,
                       **head_kwargs)  # fmt: skip
        rows.append(cls_row(task, name, label[q], tuned.obs["holocell_label"][q].astype(str)))
    return rows


def peer_rows(task, space, p_ref, p_q, y_ref, y_q, seed) -> list[dict]:
    """kNN(15) and logistic regression (standardised inputs) on the peers' embedding ``space``."""
    knn = KNeighborsClassifier(15).fit(p_ref, y_ref)
    sc = StandardScaler().fit(p_ref)
    lr = LogisticRegression(max_iter=2000, random_state=seed).fit(sc.transform(p_ref), y_ref)
    return [cls_row(task, f"kNN(15) on {space}", y_q, knn.predict(p_q)),
            cls_row(task, f"logistic regression on {space}", y_q, lr.predict(sc.transform(p_q)))]


def bridge(ref_x: np.ndarray, pair_query_space: np.ndarray, pair_ref_space: np.ndarray, query_x: np.ndarray):
    """The query's reference-modality features: the mean over its 15 nearest paired cells in the query's space."""
    nn = NearestNeighbors(n_neighbors=15).fit(pair_query_space)
    _, idx = nn.kneighbors(query_x)
    return ref_x, pair_ref_space[idx].mean(1)


# ----------------------------------------------------------------------------------------- PBMC
def pbmc_eval(args):
    mdata = hc.data.pbmc_cite_mosaic()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, d_model=args.pbmc_d_model, seed=args.seed)
    t0 = time.time()
    model.train(max_epochs=args.pbmc_epochs, enable_progress_bar=False, seed=args.seed)  # None: the default schedule
    train_s = time.time() - t0
    z = model.get_latent_representation(progress_bar=False)
    obs = mdata.obs
    batch, label = obs["batch"].astype(str).to_numpy(), obs["celltype"].astype(str).to_numpy()
    tasks = {"across batches (p3 -> p4, paired)": ("p3_0", "p4_0"),
             "across modalities (protein-only p2 -> RNA-only p1)": ("p2_0", "p1_0")}
    rows = []
    for task, (ref_b, q_b) in tasks.items():
        ref, q = batch == ref_b, batch == q_b
        rows += holocell_rows(task, mdata, model, z, "celltype", ref, q, FINETUNE_ROWS, args)
        x_ref, x_q = _pbmc_peer_inputs(mdata, obs.index[ref], obs.index[q])
        pca = PCA(n_components=min(50, x_ref.shape[1] - 1), random_state=args.seed).fit(np.vstack([x_ref, x_q]))
        rows += peer_rows(task, "PCA(50)", pca.transform(x_ref), pca.transform(x_q), label[ref], label[q], args.seed)
    return pd.DataFrame(rows), train_s, len(model.history_)


def _pbmc_peer_inputs(mdata, ref_cells, q_cells):
    """RNA + protein for paired cells; across modalities the query's protein through the paired bridge."""
    rna, adt = mdata["rna"], mdata["adt"]
    if np.isin(ref_cells, rna.obs_names).all() and np.isin(q_cells, adt.obs_names).all():
        def both(cells):
            return np.hstack([ev.log_normalize(rna[cells].X), ev.clr(adt[cells].X)])
        return both(ref_cells), both(q_cells)
    paired = np.intersect1d(rna.obs_names, adt.obs_names)
    r_pair, r_q = ev.log_normalize(rna[paired].X), ev.log_normalize(rna[q_cells].X)
    pca = PCA(n_components=50, random_state=0).fit(np.vstack([r_pair, r_q]))
    return bridge(ev.clr(adt[ref_cells].X), pca.transform(r_pair), ev.clr(adt[paired].X), pca.transform(r_q))


# ----------------------------------------------------------------------------------------- SNARE-seq2
def snare_mosaic(args) -> md.MuData:
    """``args.snare_per_lib`` cells of every library, RNA kept for 09A-09I and ATAC for 09D-09L."""
    snare = hc.data.snareseq2_mop(progressbar=False)
    libs = sum(SNARE_LIBS.values(), [])
    cells = sample_cells(snare.obs, libs, args.snare_per_lib, np.random.default_rng(args.seed))
    lib = snare.obs["batch"].astype(str).to_numpy()[cells]
    rna_cells = cells[~np.isin(lib, SNARE_LIBS["atac"])]
    atac_cells = cells[~np.isin(lib, SNARE_LIBS["rna"])]
    peaks = select_peaks(snare["atac"].X[atac_cells], MULTIVI_MIN_CELLS, args.snare_peaks)
    mosaic = md.MuData({"rna": snare["rna"][rna_cells].copy(), "atac": snare["atac"][atac_cells][:, peaks].copy()})
    obs = snare.obs.iloc[cells][["batch", *SNARE_LABELS]]
    for col in obs:
        mosaic.obs[col] = obs[col].astype(str).reindex(mosaic.obs_names).to_numpy()
    return mosaic


def snare_eval(args):
    mosaic = snare_mosaic(args)
    hc.HoloCell.setup_mudata(mosaic, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch", species="mouse",
                             genome="mm10")  # fmt: skip
    model = hc.HoloCell(mosaic, d_model=args.snare_d_model, seed=args.seed)
    cfg = CHROMATIN_SETTINGS["full"]  # chromatin.py's SNARE-seq2 schedule: the default, run to its end
    t0 = time.time()
    model.train(max_epochs=args.snare_epochs, batch_size=cfg["batch_size"], ema_decay=cfg["ema_decay"],
                early_stopping=False, enable_progress_bar=False, seed=args.seed)  # fmt: skip
    train_s = time.time() - t0
    z = model.get_latent_representation(progress_bar=False)
    lib = mosaic.obs["batch"].to_numpy()
    tasks = {"across batches (09D-09F -> 09G-09I, paired)": (SNARE_LIBS["paired"][:3], SNARE_LIBS["paired"][3:]),
             "across modalities (RNA-only 09A-09C -> ATAC-only 09J-09L)": (SNARE_LIBS["rna"], SNARE_LIBS["atac"])}
    rows = []
    for task, (ref_libs, q_libs) in tasks.items():
        ref, q = np.isin(lib, ref_libs), np.isin(lib, q_libs)
        x_ref, x_q, space = _snare_peer_inputs(mosaic, mosaic.obs_names[ref], mosaic.obs_names[q], args.seed)
        for key, level in SNARE_LABELS.items():
            name = f"{task}, {level} ({mosaic.obs[key].nunique()} types)"
            rows += holocell_rows(name, mosaic, model, z, key, ref, q, SNARE_FINETUNE_ROWS, args)
            label = mosaic.obs[key].to_numpy()
            rows += peer_rows(name, space, x_ref, x_q, label[ref], label[q], args.seed)
    sizes = {"cells": int(mosaic.n_obs), "peaks": int(mosaic["atac"].n_vars), "epochs": len(model.history_)}
    return pd.DataFrame(rows), train_s, sizes


def _snare_peer_inputs(mosaic, ref_cells, q_cells, seed):
    """Paired cells: RNA PCA and ATAC LSI (30 each) side by side. Across modalities: RNA PCA for the RNA-only
    reference; for the ATAC-only query, the mean RNA PCA of its 15 nearest paired cells in ATAC LSI space."""
    rna, atac = mosaic["rna"], mosaic["atac"]
    if np.isin(ref_cells, atac.obs_names).all() and np.isin(q_cells, rna.obs_names).all():
        cells = np.concatenate([ref_cells, q_cells])
        x = np.hstack([pca_embedding(rna[cells].X, seed=seed)[:, :30], lsi_embedding(atac[cells].X, seed=seed)[:, :30]])
        return x[: len(ref_cells)], x[len(ref_cells):], "PCA + LSI (30 + 30)"
    paired = np.intersect1d(rna.obs_names, atac.obs_names)
    rna_cells = np.concatenate([ref_cells, paired])
    z_rna = pca_embedding(rna[rna_cells].X, seed=seed)
    atac_cells = np.concatenate([paired, q_cells])
    z_atac = lsi_embedding(atac[atac_cells].X, seed=seed)
    n_ref, n_pair = len(ref_cells), len(paired)
    return (*bridge(z_rna[:n_ref], z_atac[:n_pair], z_rna[n_ref:], z_atac[n_pair:]), "RNA PCA(50) (query: bridge)")
