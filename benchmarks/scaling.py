"""Scaling: embedding time and peak memory at 1k / 10k / 100k cells, generation of a 50k-peak ATAC profile, and
the training step against the number of gene anchors.

Task 5 of issue 4. Cells are drawn (with replacement, fixed seed) from a ``simulate_multiome`` base
data set, so that 100k cells cost seconds to make; speed does not depend on the values. The
models are holocell's default network with initial weights: throughput and memory do not depend on
what the weights are. Each measurement runs in a fresh process; peak memory is sampled (psutil,
every 10 ms) during the measured call, beside the RSS before it (data + model).

The training step is timed on real data sets at the benchmarks' feature selections and at every feature they
have, and on a synthetic data set of a 10x Multiome run's size (real hg38 gene symbols, peaks placed near real
TSSs, counts at a 10x run's sparsity), whose values do not matter for the cost: ``train()`` as a user calls it,
one step to warm up and three timed (the gaps between step ends, data loading included).

Run: ``python benchmarks/scaling.py [--quick]`` (full runs read the real data sets: ``$HOLOCELL_DATA_DIR``).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from _common import parse_args, quiet, write_results
from lightning.pytorch import Callback

from holocell.data import simulate_multiome
from holocell.model import HoloCell
from holocell.train import TrainingConfig


class PeakRSS:
    """Sample this process's RSS in a thread; ``peak_mb`` after the ``with`` block."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.start_mb = self._proc.memory_info().rss / 2**20
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)


def resample(base: md.MuData, n_cells: int, seed: int) -> md.MuData:
    """``n_cells`` cells drawn with replacement from ``base`` (unique names, same features)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, base.n_obs, n_cells)
    mods = {}
    for name, a in base.mod.items():
        sub = a[idx].copy()
        sub.obs_names = [f"c{i}" for i in range(n_cells)]
        mods[name] = sub
    out = md.MuData(mods)
    out.obs["batch"] = mods["rna"].obs["batch"].to_numpy()
    return out


def embed_at(n_cells: int, seed: int) -> dict:
    """Embedding seconds and memory for ``n_cells`` RNA + protein cells."""
    quiet()
    base, _ = simulate_multiome(2000, modalities=("rna", "protein"), n_genes=500, seed=seed)
    mdata = resample(base, n_cells, seed)
    HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = HoloCell(mdata, seed=seed)
    model.get_latent_representation(mdata[:256].copy(), progress_bar=False)  # warm-up
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        z = model.get_latent_representation(progress_bar=False)
        seconds = time.perf_counter() - t0
    assert z.shape[0] == n_cells
    return {"task": "embed", "cells": n_cells, "anchors": model.config.n_anchors, "seconds": seconds,
            "cells_per_s": n_cells / seconds, "rss_before_mb": mem.start_mb, "peak_rss_mb": mem.peak_mb,
            "peak_minus_before_mb": mem.peak_mb - mem.start_mb}


def atac_at(n_cells: int, seed: int, n_steps: int) -> dict:
    """Generate ATAC (about 50k peaks) from RNA for ``n_cells`` cells."""
    quiet()
    base, _ = simulate_multiome(300, modalities=("rna", "atac"), n_genes=2000, peaks_per_gene=25,
                                n_distal_peaks=0, seed=seed)
    mdata = resample(base, n_cells, seed)
    HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch")
    model = HoloCell(mdata, seed=seed)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        gen = model.generate(mdata, target="atac", n_steps=n_steps, progress_bar=False)
        seconds = time.perf_counter() - t0
    out_mb = gen.X.nbytes / 2**20
    return {"task": f"generate ATAC ({n_steps} steps)", "cells": n_cells, "peaks": int(base["atac"].n_vars),
            "anchors": model.config.n_anchors, "seconds": seconds, "cells_per_s": n_cells / seconds,
            "rss_before_mb": mem.start_mb, "peak_rss_mb": mem.peak_mb,
            "peak_minus_before_mb": mem.peak_mb - mem.start_mb, "output_mb": out_mb}


class StepTimes(Callback):
    """The wall-clock times at which training steps end."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.ends.append(time.perf_counter())


def tenx_like(n_cells: int, n_genes: int, n_peaks: int, genes_per_cell: int, peaks_per_cell: int,
              seed: int) -> md.MuData:
    """RNA + ATAC of a 10x Multiome run's size: real hg38 symbols, peaks within 50 kb of real TSSs, random counts."""
    from holocell.vocab import load_gene_table

    rng = np.random.default_rng(seed)
    table = load_gene_table("hg38").drop_duplicates("gene_name")
    genes = table.sample(n=min(n_genes, len(table)), random_state=seed)
    near = table.iloc[rng.integers(0, len(table), n_peaks)]
    start = (near["tss"].to_numpy() + rng.integers(-50_000, 50_000, n_peaks)).clip(1)
    peaks = pd.Index([f"{c}:{s}-{s + 500}" for c, s in zip(near["chrom"], start, strict=True)]).drop_duplicates()

    def counts(n_features: int, per_cell: int, binary: bool) -> sp.csr_matrix:
        rows = np.repeat(np.arange(n_cells), per_cell)
        cols = rng.integers(0, n_features, rows.size)
        values = np.ones(rows.size) if binary else rng.geometric(0.5, rows.size)
        x = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=(n_cells, n_features))
        x.sum_duplicates()
        if binary:
            x.data[:] = 1.0
        return x

    names = pd.Index([f"cell{i}-1" for i in range(n_cells)])
    rna = ad.AnnData(counts(len(genes), genes_per_cell, False), obs=pd.DataFrame(index=names),
                     var=pd.DataFrame(index=genes["gene_name"].to_numpy()))
    atac = ad.AnnData(counts(len(peaks), peaks_per_cell, True), obs=pd.DataFrame(index=names),
                      var=pd.DataFrame(index=peaks))
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["batch"] = rng.choice(["s1", "s2"], n_cells)
    return mdata


def most_open_peaks(atac: ad.AnnData, n: int) -> ad.AnnData:
    """The ``n`` peaks open in the most cells (docs/own_data.md, "Select features first")."""
    open_frac = np.asarray((atac.X > 0).mean(axis=0)).ravel()
    return atac[:, np.sort(np.argsort(-open_frac, kind="stable")[:n])].copy()


def step_case(case: str, n_cells: int, seed: int) -> tuple[md.MuData, dict, dict]:
    """A data set of ``case`` (name: modalities, setup arguments)."""
    import holocell as hc

    rng = np.random.default_rng(seed)
    if case == "pbmc":
        return hc.data.pbmc_cite_mosaic(), {"rna": "rna", "protein": "adt"}, {}
    if case.startswith("snare"):
        full = hc.data.snareseq2_mop(progressbar=False)
        sub = full[np.sort(rng.choice(full.n_obs, n_cells, replace=False))].copy()
        atac = sub["atac"] if case == "snare_all" else most_open_peaks(sub["atac"], 1_500)
        mdata = md.MuData({"rna": sub["rna"], "atac": atac})
        mdata.obs["batch"] = sub.obs["batch"].astype(str).to_numpy()
        return mdata, {"rna": "rna", "atac": "atac"}, {"species": "mouse", "genome": "mm10"}
    if case.startswith("granja"):
        full = hc.data.granja2019_bmmc(progressbar=False)
        cells = np.sort(rng.choice(full.n_obs, n_cells, replace=False))
        atac = full[cells].copy() if case == "granja_all" else most_open_peaks(full[cells], 1_500)
        mdata = md.MuData({"atac": atac})
        mdata.obs["batch"] = full.obs["batch"].iloc[cells].astype(str).to_numpy()
        return mdata, {"atac": "atac"}, {"species": "human", "genome": "hg19"}
    n_genes, n_peaks = {"tenx_all": (36_601, 100_000), "tenx_selected": (4_000, 20_000),
                        "tenx_small": (2_000, 5_000)}[case]
    # per cell: 30% of the genes and 15% of the peaks, at most 2,000 and 6,000 (a 10x run's medians, about)
    mdata = tenx_like(n_cells, n_genes, n_peaks, min(2_000, int(0.3 * n_genes)), min(6_000, int(0.15 * n_peaks)), seed)
    return mdata, {"rna": "rna", "atac": "atac"}, {"species": "human", "genome": "hg38"}


STEP_CASES = {
    "pbmc": "PBMC CITE-seq mosaic (bundled), every feature",
    "snare": "SNARE-seq2, every gene, the 1,500 most open peaks",
    "snare_all": "SNARE-seq2, every gene and peak",
    "granja": "Granja 2019 scATAC, the 1,500 most open peaks",
    "granja_all": "Granja 2019 scATAC, every peak of the file",
    "tenx_small": "10x Multiome-like (synthetic), 2,000 genes, 5,000 peaks",
    "tenx_selected": "10x Multiome-like (synthetic), 4,000 genes, 20,000 peaks",
    "tenx_all": "10x Multiome-like (synthetic), every gene and peak: 36,601 genes, 100,000 peaks",
}


STEP_CELLS, STEP_TIMED = 256, 3  # cells of a training-step case; steps timed after one warm-up step


def default_run_steps(n_cells: int, validation_size: float = 0.1, batch_size: int = 32) -> tuple[int, int]:
    """Epochs and steps per epoch of ``train()``'s default schedule for ``n_cells`` cells."""
    per_epoch = int(n_cells * (1 - validation_size)) // batch_size
    return TrainingConfig().default_epochs(per_epoch), per_epoch


def train_step_at(case: str, seed: int, n_cells: int = STEP_CELLS, timed: int = STEP_TIMED) -> dict:
    """Seconds per training step of the default model (batch 32) on ``case``, and the peak memory."""
    quiet()
    import holocell as hc

    mdata, modalities, setup = step_case(case, n_cells, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hc.HoloCellWarning)  # e.g. cells with no open peak among those kept
        HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", **setup)
        model = HoloCell(mdata, seed=seed)
        steps = StepTimes()
        with PeakRSS() as mem:
            model.train(max_epochs=1, limit_train_batches=timed + 1, limit_val_batches=0, early_stopping=False,
                        enable_progress_bar=False, seed=seed, callbacks=[steps])
    per_step = (steps.ends[-1] - steps.ends[0]) / (len(steps.ends) - 1)
    features = {m: int(mdata[name].n_vars) for m, name in modalities.items()}
    ten_k_steps = np.prod(default_run_steps(10_000))
    return {"task": STEP_CASES[case], "anchors": model.config.n_anchors, "genes": features.get("rna", 0),
            "peaks": features.get("atac", 0), "seconds_per_step": per_step,
            "hours_per_1500_steps": per_step * 1500 / 3600,
            "hours_default_run_10k_cells": per_step * ten_k_steps / 3600,
            "peak_rss_mb": mem.peak_mb}


def fresh(fn, *args) -> dict:
    """Run in a new spawned process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    sizes = [1_000, 5_000] if args.quick else [1_000, 10_000, 100_000]
    atac_cells = 200 if args.quick else 10_000
    rows = [fresh(embed_at, n, args.seed) for n in sizes]
    for r in rows:
        r["seconds_per_1k_cells"] = 1e3 * r["seconds"] / r["cells"]
    atac = [fresh(atac_at, atac_cells, args.seed, 8)]
    cases = ["pbmc", "tenx_small"] if args.quick else list(STEP_CASES)
    steps = [fresh(train_step_at, case, args.seed) for case in cases]
    results = {"quick": args.quick, "seed": args.seed, "embed": rows, "atac": atac, "train_step": steps,
               "target_peak_under_4gb_at_largest": rows[-1]["peak_rss_mb"] < 4096}
    epochs, per_epoch = default_run_steps(10_000)
    cols = ["task", "cells", "anchors", "seconds", "seconds_per_1k_cells", "cells_per_s", "rss_before_mb",
            "peak_rss_mb", "peak_minus_before_mb"]
    notes = (
        "Default network (d_model 128, 2 layers, 32 latents). Embedding reads the registered MuData in "
        "mini-batches (CSR counts in memory, one dense mini-batch at a time). Linear time means a flat "
        "`seconds_per_1k_cells`; flat memory means `peak_minus_before_mb` not growing with cells. The "
        "machine is shared (2 cores): times are pessimistic. Peak memory at the largest size under 4 GB: "
        f"{'yes' if results['target_peak_under_4gb_at_largest'] else 'NO'}. Training steps: the default model "
        f"(d_model 128, batch 32) through `train()`, {STEP_CELLS} cells, one warm-up step and {STEP_TIMED} timed; "
        f"`hours_default_run_10k_cells` is the default schedule of 10,000 cells ({epochs} epochs of {per_epoch} steps). "
        "The cost of "
        "a step grows with the gene anchors (every cell reads and decodes every anchor), not with the features as "
        "such: anchors are the genes and the genes nearest the peaks."
    )
    write_results(args.out, "scaling", "Scaling (simulated cells)", results, [
        ("Embedding", rows, cols),
        ("ATAC generation", atac, cols[:3] + ["peaks"] + cols[3:] + ["output_mb"]),
        ("Training step against the gene anchors", steps,
         ["task", "anchors", "genes", "peaks", "seconds_per_step", "hours_per_1500_steps",
          "hours_default_run_10k_cells", "peak_rss_mb"]),
    ], notes, settings={"embed_sizes": sizes, "atac_cells": atac_cells, "train_step_cases": cases})


if __name__ == "__main__":
    main()
