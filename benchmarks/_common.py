"""Shared helpers of the benchmark scripts: arguments, splits, peers, timing and result files.

Every script runs holocell and its peers on the same split in the same process run and writes
``benchmarks/results/<name>.json`` and ``<name>.md`` (plus plots). Nothing here is part of the
installed package.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from holocell import evaluation as ev
from holocell._demo import score
from holocell.model import HoloCell

RESULTS = Path(__file__).resolve().parent / "results"
GFLOPS_PEAK_CPU = 320.0  # fp32 matmul peak of the 2-core reference CPU (DESIGN.md section 4)


# ------------------------------------------------------------------------------------------- plumbing
def parse_args(description: str) -> argparse.Namespace:
    """``--quick``, ``--seed`` and ``--out`` shared by every script."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer epochs / cells, for iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args()


def quiet() -> None:
    """Silence Lightning / scvi-tools chatter (the tables are the output)."""
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextmanager
def timer(store: dict, key: str):
    """Store the wall-clock seconds of the ``with`` body in ``store[key]``."""
    t0 = time.perf_counter()
    yield
    store[key] = time.perf_counter() - t0


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs of ``fn`` (seconds): the machine is shared, so the minimum is the
    least-disturbed reading."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def mflop(fn: Callable[[], object]) -> float:
    """Millions of floating-point operations of the matrix products (linear layers, matmuls) that ``fn``
    runs, from ``torch.profiler(with_flops=True)``; attention-kernel and element-wise work is not counted,
    so this is a lower bound dominated by the linear layers."""
    from torch.profiler import profile

    with profile(with_flops=True) as prof:
        fn()
    return sum(e.flops or 0 for e in prof.key_averages()) / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
    }


def write_results(
    out: Path, name: str, title: str, results: dict, sections: Sequence[tuple[str, list[dict], list[str]]], notes: str
) -> None:
    """Write ``out/<name>.json`` (``results``) and ``out/<name>.md`` (one table per section + notes)."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "machine": machine()}
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=_json_default))
    parts = [f"## {title}\n"]
    for heading, rows, columns in sections:
        parts.append(f"### {heading}\n\n{ev.format_table(rows, columns)}\n")
    load = ", ".join(f"{x:.1f}" for x in results["machine"]["load_average_1_5_15"])
    mode = "--quick run" if results.get("quick") else "full run"
    parts.append(notes.strip() + f"\n\n_{mode}; load average at the end (1/5/15 min): {load}._\n")
    text = "\n".join(parts)
    (out / f"{name}.md").write_text(text)
    print(text)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# ------------------------------------------------------------------------------------------- data
def hide_modality(full: md.MuData, mod: str, batch: str, obs_cols: Sequence[str]) -> md.MuData:
    """Copy of ``full`` without modality ``mod`` for the cells of ``batch`` (a true mosaic).

    The user's object is not modified; global ``obs`` keeps ``obs_cols`` for every cell.
    """
    mods = {}
    for name, a in full.mod.items():
        keep = ~(a.obs["batch"].astype(str) == batch).to_numpy() if name == mod else np.ones(a.n_obs, bool)
        mods[name] = a[keep].copy()
    out = md.MuData(mods)
    out.obs = out.obs.join(full.obs[list(obs_cols)])
    return out


def hide_cells(full: md.MuData, hidden: Mapping[str, np.ndarray], obs_cols: Sequence[str]) -> md.MuData:
    """Copy of ``full`` where modality ``m`` loses the cells named in ``hidden[m]``."""
    mods = {}
    for name, a in full.mod.items():
        drop = np.isin(a.obs_names, hidden.get(name, []))
        mods[name] = a[~drop].copy()
    out = md.MuData(mods)
    out.obs = out.obs.join(full.obs[list(obs_cols)])
    return out


def counts_in(mdata: md.MuData, mod: str, cells: Sequence[str]) -> np.ndarray:
    """Dense counts of ``cells`` in ``mdata[mod]`` (rows in the order of ``cells``)."""
    x = mdata[mod][list(cells)].X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def has_mod(mdata: md.MuData, mod: str) -> np.ndarray:
    """``(n_obs,)`` bool: the global cell has modality ``mod``."""
    return np.asarray(mdata.obsm[mod]).astype(bool)


def padded(mdata: md.MuData, mods: Sequence[str]) -> md.MuData:
    """Fully paired copy of ``mdata`` for scvi-tools: absent cells become zero rows (MultiVI's
    convention for a missing modality). Global ``obs`` columns are copied into every modality."""
    cells = mdata.obs_names
    out = {}
    for name in mods:
        a = mdata[name]
        x = sp.csr_matrix(a.X, dtype=np.float32)
        pos = pd.Series(np.arange(a.n_obs), index=a.obs_names).reindex(cells)
        rows = np.flatnonzero(pos.notna().to_numpy())
        sel = sp.csr_matrix((np.ones(rows.size), (rows, pos.to_numpy()[rows].astype(int))), shape=(len(cells), a.n_obs))
        obs = mdata.obs.drop(columns=[c for c in mdata.obs.columns if ":" in c]).copy()
        out[name] = ad.AnnData(X=sp.csr_matrix(sel @ x), obs=obs, var=a.var.copy())
    result = md.MuData(out)
    result.obs = mdata.obs.drop(columns=[c for c in mdata.obs.columns if ":" in c]).copy()
    return result


# ------------------------------------------------------------------------------------------- holocell
def train_holocell(
    mdata: md.MuData, modalities: dict[str, str], epochs: int, seed: int, **model_kwargs
) -> tuple[HoloCell, float]:
    """Set up, build and train holocell with its defaults; returns the model and the training seconds."""
    HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", species="human")
    model = HoloCell(mdata, seed=seed, **model_kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, seed=seed, enable_progress_bar=False)
    return model, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------- scvi-tools peers
def scvi_seed(seed: int) -> None:
    """Seed scvi-tools (and torch / numpy through it)."""
    import scvi

    scvi.settings.seed = seed
    scvi.settings.verbosity = logging.ERROR


def totalvi_inputs(full: md.MuData, split: md.MuData, protein_mod: str = "adt") -> tuple[ad.AnnData, np.ndarray]:
    """TOTALVI's inputs from a mosaic split: the RNA cells (``obs`` = ``batch`` only) and their protein counts,
    zero rows for RNA cells without protein (see :func:`train_totalvi`)."""
    rna_cells = split["rna"].obs_names
    protein = np.zeros((len(rna_cells), full[protein_mod].n_vars))
    has = np.isin(rna_cells, split[protein_mod].obs_names)
    protein[has] = split[protein_mod][rna_cells[has]].X.toarray()
    rna = split["rna"].copy()
    rna.obs = rna.obs[["batch"]].astype(str).astype("category")
    return rna, protein


def train_totalvi(rna: ad.AnnData, protein: np.ndarray, proteins: Sequence[str], epochs: int, seed: int):
    """TOTALVI on RNA cells with their protein counts (zeros where a batch has no protein measured:
    scvi-tools' protein batch mask then drops those batches from the protein likelihood)."""
    import scvi

    scvi_seed(seed)
    adata = rna.copy()
    adata.obsm["protein_expression"] = pd.DataFrame(protein, index=adata.obs_names, columns=list(proteins))
    scvi.model.TOTALVI.setup_anndata(adata, protein_expression_obsm_key="protein_expression", batch_key="batch")
    model = scvi.model.TOTALVI(adata, override_missing_proteins=True)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, early_stopping=False)
    return model, adata, time.perf_counter() - t0


def train_multivi(mdata: md.MuData, layers: dict[str, str], epochs: int, seed: int):
    """MULTIVI on a zero-padded copy of a mosaic MuData (``layers``: scvi setup argument -> modality)."""
    import scvi

    scvi_seed(seed)
    mods = list(layers.values())
    pad = padded(mdata, mods)
    scvi.model.MULTIVI.setup_mudata(pad, batch_key="batch", modalities={**layers, "batch_key": mods[0]})
    kwargs = {"n_genes": pad[layers["rna_layer"]].n_vars} if "rna_layer" in layers else {}
    kwargs["n_regions"] = pad[layers["atac_layer"]].n_vars if "atac_layer" in layers else 0
    model = scvi.model.MULTIVI(pad, **kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, early_stopping=False)
    return model, pad, time.perf_counter() - t0


def train_scvi(rna: ad.AnnData, epochs: int, seed: int):
    """SCVI on RNA counts with batch as covariate."""
    import scvi

    scvi_seed(seed)
    adata = rna.copy()
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, early_stopping=False)
    return model, adata, time.perf_counter() - t0


def genie3_scores(expr: pd.DataFrame, tfs: Sequence[str], seed: int) -> pd.Series:
    """GENIE3-like TF -> gene scores: for each gene (column of ``expr``, cells x genes), the feature importances
    of an extra-trees regression on the other TFs' expression. Index ``(tf, target)``."""
    from sklearn.ensemble import ExtraTreesRegressor

    scores = {}
    for g in expr.columns:
        regs = [t for t in tfs if t != g]
        et = ExtraTreesRegressor(n_estimators=100, max_features="sqrt", random_state=seed, n_jobs=1)
        et.fit(expr[regs].to_numpy(), expr[g].to_numpy())
        scores.update({(t, g): w for t, w in zip(regs, et.feature_importances_, strict=True)})
    return pd.Series(scores)


def pca_embedding(x: np.ndarray, n_pcs: int = 50, seed: int = 0, transform: str = "log") -> np.ndarray:
    """PCA of log-normalised (``"log"``) or CLR (``"clr"``) counts."""
    from sklearn.decomposition import PCA

    values = ev.log_normalize(x) if transform == "log" else ev.clr(x)
    return PCA(n_components=min(n_pcs, min(values.shape) - 1), random_state=seed).fit_transform(values)


# ------------------------------------------------------------------------------------------- scoring
def score_regression(method: str, truth: np.ndarray, pred: np.ndarray) -> dict:
    """Per-feature Pearson (mean and median over features that vary; constant predictions count as 0)
    and RMSE: the demo's scoring, so the two tables agree."""
    return score(method, truth, pred)


def score_auroc(method: str, truth: np.ndarray, scores: np.ndarray) -> dict:
    """Per-peak AUROC (mean / median over peaks with both classes)."""
    a = ev.per_feature_auroc(truth, scores)
    return {"method": method, "auroc_mean": float(np.nanmean(a)), "auroc_median": float(np.nanmedian(a))}


def mark_winner(rows: list[dict], metric: str, higher_is_better: bool = True) -> dict:
    """Compare holocell (rows whose method starts with ``holocell``) with the best peer on ``metric``."""
    ours = [r for r in rows if r["method"].startswith("holocell") and r.get(metric) is not None]
    peers = [r for r in rows if not r["method"].startswith("holocell") and r.get(metric) is not None]
    peers = [r for r in peers if not np.isnan(r[metric])]
    if not ours or not peers:
        return {}
    best = max(peers, key=lambda r: r[metric]) if higher_is_better else min(peers, key=lambda r: r[metric])
    h = ours[0][metric]
    rel = (h - best[metric]) / abs(best[metric]) if best[metric] else float("nan")
    if not higher_is_better:
        rel = -rel
    return {
        "metric": metric,
        "holocell": h,
        "best_peer": best["method"],
        "best_peer_value": best[metric],
        "relative_gain": rel,
        "meets_target_10pct": bool(rel >= 0.10),
    }
