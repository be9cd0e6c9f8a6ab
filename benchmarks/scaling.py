"""Scaling: embedding time and peak memory at 1k / 10k / 100k cells, and generation of a 50k-peak ATAC profile.

Task 5 of issue 4. Cells are drawn (with replacement, fixed seed) from a ``simulate_multiome`` base
data set, so that 100k cells cost seconds to make; speed does not depend on the values. The
models are holocell's default network with initial weights: throughput and memory do not depend on
what the weights are. Each measurement runs in a fresh process; peak memory is sampled (psutil,
every 10 ms) during the measured call, beside the RSS before it (data + model).

Run: ``python benchmarks/scaling.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import mudata as md
import numpy as np
from _common import parse_args, quiet, write_results

from holocell.data import simulate_multiome
from holocell.model import HoloCell


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
    results = {"quick": args.quick, "seed": args.seed, "embed": rows, "atac": atac,
               "target_peak_under_4gb_at_largest": rows[-1]["peak_rss_mb"] < 4096}
    cols = ["task", "cells", "anchors", "seconds", "seconds_per_1k_cells", "cells_per_s", "rss_before_mb",
            "peak_rss_mb", "peak_minus_before_mb"]
    notes = (
        "Default network (d_model 128, 2 layers, 32 latents). Embedding reads the registered MuData in "
        "mini-batches (CSR counts in memory, one dense mini-batch at a time). Linear time means a flat "
        "`seconds_per_1k_cells`; flat memory means `peak_minus_before_mb` not growing with cells. The "
        "machine is shared (2 cores): times are pessimistic. Peak memory at the largest size under 4 GB: "
        f"{'yes' if results['target_peak_under_4gb_at_largest'] else 'NO'}."
    )
    write_results(args.out, "scaling", "Scaling (simulated cells)", results, [
        ("Embedding", rows, cols),
        ("ATAC generation", atac, cols[:3] + ["peaks"] + cols[3:] + ["output_mb"]),
    ], notes, settings={"embed_sizes": sizes, "atac_cells": atac_cells})


if __name__ == "__main__":
    main()
