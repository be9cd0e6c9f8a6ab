"""GPU path: fp32 vs bf16-mixed training, inference throughput, and a larger model's training speed.

Not part of ``make bench`` (the reference machine has no GPU); run it where a CUDA device exists:
``python benchmarks/gpu.py [--epochs 100]``. Writes ``<out>/gpu.json`` and ``gpu.md``.

1. PBMC mosaic, task 1a of ``pbmc.py`` (p4's protein hidden): the default model trained in fp32 and
   in ``bf16-mixed``; RNA -> protein Pearson on p4 and training cells/s for both.
2. Inference on the GPU: embedding and 8-step protein generation cells/s for all 1,600 cells, in
   fp32 and under bf16 autocast.
3. A larger configuration (d_model 512, 8 blocks, 128 latents) on 20,000 simulated multiome cells:
   training cells/s for 2 epochs, fp32 vs bf16-mixed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, hide_modality, quiet, score_regression, write_results

import holocell as hc
from holocell import evaluation as ev
from holocell.model import HoloCell

HELD_OUT, OBS, MODS = "p4_0", ["batch", "celltype"], {"rna": "rna", "protein": "adt"}
LARGE = {"d_model": 512, "n_layers": 8, "n_heads": 8, "n_latents": 128}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pbmc_rows(epochs: int, seed: int) -> list[dict]:
    full = hc.data.pbmc_cite_mosaic()
    p4 = full.obs_names[(full.obs["batch"] == HELD_OUT).to_numpy()]
    truth = ev.clr(full["adt"][p4].X)
    rows = []
    for precision in (None, "bf16-mixed"):
        split = hide_modality(full, "adt", HELD_OUT, OBS)
        HoloCell.setup_mudata(split, modalities=MODS, batch_key="batch", species="human")
        model = HoloCell(split, seed=seed)
        t0 = time.perf_counter()
        model.train(max_epochs=epochs, seed=seed, enable_progress_bar=False, precision=precision,
                    batch_size=128, lr=2e-3)
        train_s = time.perf_counter() - t0
        row = {"precision": precision or "32", "epochs": epochs, "train_s": train_s,
               "inference_device": str(next(model.module.parameters()).device),
               "train_cells_per_s": len(model.history_) * len(model.train_indices_) / train_s}
        for label, ctx in [("fp32", nullcontext), ("bf16", lambda: torch.autocast("cuda", torch.bfloat16))]:
            with ctx():
                gen = model.generate(split[p4].copy(), target="protein", n_steps=8, seed=seed,
                                     progress_bar=False, batch_size=512)
                row[f"rna_to_protein_pearson_infer_{label}"] = score_regression("", truth, np.asarray(gen[p4].X))[
                    "pearson_mean"]
                _sync()
                t0 = time.perf_counter()
                model.get_latent_representation(progress_bar=False, batch_size=1024)
                _sync()
                row[f"embed_cells_per_s_{label}"] = split.n_obs / (time.perf_counter() - t0)
                query = split[p4].copy()
                t0 = time.perf_counter()
                model.generate(query, target="protein", n_steps=8, seed=seed, progress_bar=False, batch_size=512)
                _sync()
                row[f"generate_protein_8_cells_per_s_{label}"] = len(p4) / (time.perf_counter() - t0)
        # a GPU-trained model saves and reloads on the CPU with the same embedding
        with tempfile.TemporaryDirectory() as tmp:
            z_gpu = model.get_latent_representation(progress_bar=False)
            model.save(tmp, overwrite=True)
            z_cpu = HoloCell.load(tmp, split, device="cpu").get_latent_representation(progress_bar=False)
            row["reload_cpu_max_abs_diff"] = float(np.abs(z_gpu - z_cpu).max())
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def large_rows(n_cells: int, seed: int) -> list[dict]:
    sim, _ = hc.data.simulate_multiome(n_cells, species="human", seed=seed)
    rows = []
    for precision in (None, "bf16-mixed"):
        HoloCell.setup_mudata(sim, modalities={"rna": "rna", "atac": "atac", "protein": "protein"},
                              batch_key="batch")
        model = HoloCell(sim, seed=seed, **LARGE)
        t0 = time.perf_counter()
        model.train(max_epochs=2, seed=seed, enable_progress_bar=False, precision=precision, batch_size=256,
                    early_stopping=False)
        train_s = time.perf_counter() - t0
        row = {"config": "large", **LARGE, "n_cells": n_cells, "precision": precision or "32",
               "parameters": sum(p.numel() for p in model.module.parameters()),
               "train_cells_per_s": 2 * len(model.train_indices_) / train_s,
               "final_train_loss": float(model.history_["train_loss"].iloc[-1]),
               "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--large-cells", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    quiet()
    info = {"cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "quick": False}
    info["pbmc"] = pbmc_rows(args.epochs, args.seed)
    info["large"] = large_rows(args.large_cells, args.seed) if args.large_cells else []
    write_results(
        args.out, "gpu", f"GPU path ({info['cuda']})", info,
        [("PBMC, default model", info["pbmc"], list(info["pbmc"][0])),
         ("Larger model, simulated multiome", info["large"], list(info["large"][0]) if info["large"] else ["config"])],
        "Written by `benchmarks/gpu.py` on a CUDA device (`make bench-gpu`).",
        settings={"epochs": args.epochs, "large_cells": args.large_cells, "large": LARGE},
    )


if __name__ == "__main__":
    main()
