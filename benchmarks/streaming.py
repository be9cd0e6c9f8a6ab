"""Scaling: embedding / training / generation time and peak memory as the number of cells grows.

Usage::

    python benchmarks/streaming.py            # 1k, 10k, 100k, 200k cells; ATAC generation for 10k cells
    python benchmarks/streaming.py --quick    # 1k and 10k cells; ATAC generation for 1k cells
    python benchmarks/streaming.py --embed-sizes 1000 10000 100000 --memory-sizes 1000 10000   # a subset

Data: ``hc.data.simulate_multiome`` (RNA + ATAC + protein, batch1 lacks protein). The simulator holds
dense ``(cells, peaks)`` arrays, so large sets are built by tiling one simulated block of 10,000
cells: every further copy has its counts binomially thinned (p = 0.9, its own seed) and its own cell
names, then the tiled set is written to ``.h5mu``. The 50,000-peak set for generation tiles a block
of 500 cells the same way (500 genes x 96 linked peaks + 2,000 distal peaks).

Every measurement runs in a fresh subprocess; peak memory is that child's ``VmHWM`` (it includes
Python, torch and the model: ``baseline`` is the RSS after imports and model loading, before the
pass). The model is a small ``HoloCell`` (``--model``, default d_model 64, 1 layer, 16 latents: the
default size is ~5x slower per cell and too slow for 200k cells on the shared 2-core CPU this was
written on; pass ``--model '{}'`` for the defaults), trained for a fixed number of steps by the
training measurement on 10,000 backed cells; cost does not depend on how well it is trained.
Timings on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import provenance, provenance_line, write_json

ROOT = Path(__file__).resolve().parents[1]
MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
SIM = {"n_genes": 200, "n_tfs": 20, "peaks_per_gene": 4, "n_distal_peaks": 50, "n_proteins": 30}
SMALL = {"d_model": 64, "n_layers": 1, "n_heads": 4, "n_latents": 16}
SIM_50K_PEAKS = {"n_genes": 500, "n_tfs": 20, "peaks_per_gene": 96, "n_distal_peaks": 2000, "n_proteins": 30}


# ------------------------------------------------------------------------------------------ data
def write_tiled(path: Path, n_cells: int, base_cells: int, sim: dict, seed: int = 0) -> None:
    """Simulate ``base_cells`` cells and tile them (binomially thinned copies) to ``n_cells`` in ``path``."""
    import anndata as ad
    import mudata as md
    import pandas as pd
    import scipy.sparse as sp

    import holocell as hc

    if n_cells % base_cells:
        raise ValueError(f"n_cells ({n_cells}) must be a multiple of base_cells ({base_cells}).")
    base, _ = hc.data.simulate_multiome(base_cells, missing={"protein": ["batch1"]}, seed=seed, **sim)
    rng = np.random.default_rng(seed + 1)
    n_copies = n_cells // base_cells
    mods = {}
    for name in ["rna", "atac", "protein"]:
        a = base.mod[name]
        blocks, names = [], []
        for k in range(n_copies):
            x = a.X.tocsr().astype(np.float32)
            if k > 0:
                x = x.copy()
                x.data = rng.binomial(x.data.astype(np.int64), 0.9).astype(np.float32)
                x.eliminate_zeros()
            blocks.append(x)
            names.append(a.obs_names + f"-{k}")
        obs = pd.concat([a.obs] * n_copies)
        obs.index = pd.Index(np.concatenate(names))
        mods[name] = ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=a.var.copy())
    del base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData(mods)
        cells = pd.concat([mods["rna"].obs, mods["atac"].obs]).groupby(level=0, sort=False).first()
        mdata.obs["batch"] = cells["batch"].reindex(mdata.obs_names).astype("category")
        mdata.obs["cell_type"] = cells["cell_type"].reindex(mdata.obs_names).astype("category")
        mdata.write(str(path))


def dataset(cache: Path, n_cells: int, peaks_50k: bool = False) -> Path:
    """Path of the cached tiled set (written on first use)."""
    name = f"sim{'_50kpeaks' if peaks_50k else ''}_{n_cells}.h5mu"
    path = cache / name
    if not path.exists():
        sim, base = (SIM_50K_PEAKS, 500) if peaks_50k else (SIM, min(n_cells, 10_000))
        t0 = time.perf_counter()
        write_tiled(path, n_cells, base, sim)
        print(f"  wrote {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------------------ workers
def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (Linux) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    """Current resident set size (MB)."""
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """Peak resident set size of this process (MB).

    ``VmHWM``, not ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` over ``fork`` + ``execve``,
    so a child's value is at least its parent's RSS at the fork (here: the process that built the
    data sets). ``VmHWM`` belongs to the child's own address space. Both are in the JSON.
    """
    return _status_mb("VmHWM")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _open(path: str, backed: bool):
    import mudata as md

    return md.read_h5mu(path, backed=True) if backed else md.read_h5mu(path)


def work_train(path: str, steps: int, batch_size: int, save_to: str | None, model_kwargs: dict) -> dict:
    """Fixed number of training steps on the backed file."""
    import holocell as hc

    mdata = _open(path, backed=True)
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(mdata, **model_kwargs)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    model.train(
        max_epochs=10_000,
        max_steps=steps,
        batch_size=batch_size,
        validation_size=0.0,
        early_stopping=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    seconds = time.perf_counter() - t0
    if save_to:
        model.save(save_to, overwrite=True)
    return {
        "task": "train (backed)",
        "n_cells": mdata.n_obs,
        "steps": steps,
        "batch_size": batch_size,
        "seconds": seconds,
        "cells_per_s": steps * batch_size / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _peak_mb(),
        "ru_maxrss_mb": _maxrss_mb(),
    }


def work_embed(path: str, model_dir: str, backed: bool, limit: int | None = None) -> dict:
    """Embed every cell (or the first ``limit`` cells) with a saved model."""
    import holocell as hc

    mdata = _open(path, backed)
    model = hc.HoloCell.load(model_dir, mdata)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    indices = None if limit is None or limit >= mdata.n_obs else np.arange(limit)
    z = model.get_latent_representation(indices=indices, progress_bar=False)
    seconds = time.perf_counter() - t0
    part = "" if indices is None else f", first {limit:,} of {mdata.n_obs:,} cells"
    return {
        "task": f"embed ({'backed' if backed else 'in memory'}{part})",
        "n_cells": int(z.shape[0]),
        "seconds": seconds,
        "cells_per_s": z.shape[0] / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _peak_mb(),
        "ru_maxrss_mb": _maxrss_mb(),
        "output_mb": z.nbytes / 2**20,
    }


def work_generate(path: str, model_dir: str, n_steps: int) -> dict:
    """Generate every peak of ATAC for every cell (from RNA + protein) with a saved model."""
    import holocell as hc

    mdata = _open(path, backed=True)
    model = hc.HoloCell.load(model_dir, mdata)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    out = model.generate(mdata, target="atac", n_steps=n_steps, progress_bar=False)
    seconds = time.perf_counter() - t0
    return {
        "task": f"generate ATAC, {out.n_vars:,} peaks, {n_steps} steps (backed)",
        "n_cells": out.n_obs,
        "n_peaks": out.n_vars,
        "seconds": seconds,
        "cells_per_s": out.n_obs / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _peak_mb(),
        "ru_maxrss_mb": _maxrss_mb(),
        "output_mb": out.X.nbytes / 2**20,
    }


WORKERS = {"train": work_train, "embed": work_embed, "generate": work_generate}


def run_worker(name: str, **kwargs) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, __file__, "--worker", name, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} {kwargs} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  {result['task']:<45} {result['n_cells']:>8,} cells  {result['seconds']:8.1f} s  "
        f"{result['cells_per_s']:8.0f} cells/s  peak {result['peak_rss_mb']:7.0f} MB",
        flush=True,
    )
    return result


# ------------------------------------------------------------------------------------------ report
def to_markdown(results: list[dict], model_kwargs: dict, meta: dict) -> str:
    lines = [
        "# Scaling: time and peak memory against the number of cells",
        "",
        "Simulated RNA + ATAC + protein mosaic (200 genes, 850 peaks, 30 proteins; "
        "batch1 lacks protein), sets above 10,000 cells tiled from one 10,000-cell block with binomially "
        f"thinned counts; `HoloCell({model_kwargs})`. Each row is a fresh "
        "process; *peak* is its high-water RSS (`VmHWM`: Python + torch + model + data), *baseline* "
        "its RSS after "
        "imports and model loading. CPU: 2 cores shared with other jobs, so times are indicative only.",
        "",
        "| task | cells | seconds | cells/s | baseline RSS (MB) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} | {r['n_cells']:,} | {r['seconds']:.1f} | {r['cells_per_s']:,.0f} | "
            f"{r['baseline_rss_mb']:,.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    gen = [r for r in results if r["task"].startswith("generate")]
    if gen:
        lines += [
            "",
            "Generation returns a dense `(cells, peaks)` float32 matrix: "
            f"{gen[0]['output_mb']:,.0f} MB of the "
            "generation peak is that output. Generation batches are sized so that one `(cells, peaks)` "
            "tensor stays near 16 MB; training uses 128-cell mini-batches read from disk in blocks of 1,024 "
            "cells, 8 blocks shuffled together.",
        ]
    lines += ["", provenance_line(meta)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k cells only, generation for 1k")
    full = [1_000, 10_000, 100_000, 200_000]
    parser.add_argument("--train-sizes", type=int, nargs="*", default=full, help="backed training")
    parser.add_argument("--embed-sizes", type=int, nargs="*", default=full, help="backed embedding")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=full[:3], help="in-memory embedding")
    parser.add_argument("--embed-limit", type=int, help="embed only the first N cells of each file")
    parser.add_argument("--gen-cells", type=int, default=10_000, help="cells for 50k-peak ATAC generation")
    parser.add_argument("--cache", default=str(ROOT / "build" / "streaming"), help="data sets go here")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--model", default=json.dumps(SMALL), help="HoloCell keyword arguments (JSON)")
    parser.add_argument(
        "--tasks", nargs="+", default=["train", "generate", "embed"], help="measurements to run (default all)"
    )
    parser.add_argument("--merge", nargs="+", help="merge these result JSON files into --out, run nothing")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, kwargs = args.worker
        print(json.dumps(WORKERS[name](**json.loads(kwargs))))
        return

    if args.merge:
        records = [json.loads(Path(f).read_text()) for f in args.merge]
        results = [r for record in records for r in record["results"]]
        model_kwargs = records[0]["model_kwargs"]
        out = Path(args.out)
        meta = {**records[0]["meta"], "command": " && ".join(r["meta"]["command"] for r in records)}
        record = {"quick": records[0].get("quick"), "model_kwargs": model_kwargs, "results": results, "meta": meta}
        write_json(out, "streaming", record)
        (out / "streaming.md").write_text(to_markdown(results, model_kwargs, meta))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.train_sizes = args.embed_sizes = args.memory_sizes = [1_000, 10_000]
        args.gen_cells = 1_000
    sizes = sorted({10_000, *args.train_sizes, *args.embed_sizes, *args.memory_sizes})
    gen_cells = args.gen_cells
    kw = {"model_kwargs": json.loads(args.model)}
    model_dir = str(cache / "model_10k")
    paths = {n: str(dataset(cache, n)) for n in sizes}
    results: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("cache", "out", "worker", "merge")}
    meta = provenance(settings, args.quick)
    stem = "streaming"

    def measure(name: str, keep: bool = True, **kwargs) -> None:
        """Run one worker; keep its result and rewrite the tables (partial runs still leave them)."""
        result = run_worker(name, **kwargs)
        if not keep:
            return
        results.append(result)
        record = {"quick": args.quick, "model_kwargs": kw["model_kwargs"], "results": results, "meta": meta}
        write_json(out, stem, record)
        (out / f"{stem}.md").write_text(to_markdown(results, kw["model_kwargs"], meta))

    print("training (backed, fixed steps):", flush=True)
    if "train" not in args.tasks:
        args.train_sizes = [] if Path(model_dir).exists() else [10_000]
    elif 10_000 not in args.train_sizes:  # the 10k training run provides the model
        args.train_sizes = sorted([10_000, *args.train_sizes])
    for n in args.train_sizes:
        save = model_dir if n == 10_000 else None
        measure("train", path=paths[n], steps=args.train_steps, batch_size=128, save_to=save, **kw)
    if "generate" in args.tasks:
        print("generation (50,000 peaks):", flush=True)
        gen_path = str(dataset(cache, gen_cells, peaks_50k=True))
        gen_model = str(cache / f"model_50kpeaks_{gen_cells}")
        measure("train", False, path=gen_path, steps=args.train_steps, batch_size=64, save_to=gen_model, **kw)
        measure("generate", path=gen_path, model_dir=gen_model, n_steps=8)
    if "embed" not in args.tasks:
        args.embed_sizes = args.memory_sizes = []
    print("embedding:", flush=True)
    for n in args.embed_sizes:
        measure("embed", path=paths[n], model_dir=model_dir, backed=True, limit=args.embed_limit)
    for n in args.memory_sizes:
        measure("embed", path=paths[n], model_dir=model_dir, backed=False, limit=args.embed_limit)

    print(f"wrote {stem}.md and .json in {args.out}")


if __name__ == "__main__":
    main()
