"""Training-length and capacity sweep of holocell on the PBMC mosaic split (p4 held out).

Answers "does holocell lose to kNN because it is under-trained or under-sized?" Each configuration
trains on the split of ``pbmc.py`` task 1a (p4's protein hidden) and 1b (p4's RNA hidden) and scores
generation on p4 exactly as ``pbmc.py`` does. Runs on whatever accelerator Lightning finds.

Run: ``python benchmarks/sweep.py --configs base:5,base:50 [--precision bf16-mixed]``; a config is
``name:epochs`` with ``name`` a key of ``CONFIGS``. Writes ``<out>/sweep.json`` and ``sweep.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, hide_modality, quiet, score_regression, write_results

from holocell import evaluation as ev
from holocell.data import pbmc_cite_mosaic
from holocell.model import HoloCell

HELD_OUT, OBS, MODS = "p4_0", ["batch", "celltype"], {"rna": "rna", "protein": "adt"}
CONFIGS = {
    "base": {},  # the defaults: d_model 128, 2 layers, 32 latents
    "wide": {"d_model": 256, "n_heads": 8, "n_latents": 64},
    "deep": {"d_model": 256, "n_layers": 6, "n_heads": 8, "n_latents": 64},
}


def run(name: str, epochs: int, seed: int, precision: str | None, batch_size: int, lr: float) -> dict:
    full = pbmc_cite_mosaic()
    p4 = full.obs_names[(full.obs["batch"] == HELD_OUT).to_numpy()]
    row = {"config": name, "epochs": epochs, "precision": precision or "32", "batch_size": batch_size, "lr": lr}
    for task, hidden, target, truth in [
        ("rna_to_protein", "adt", "protein", ev.clr(full["adt"][p4].X)),
        ("protein_to_rna", "rna", "rna", ev.log_normalize(full["rna"][p4].X)),
    ]:
        split = hide_modality(full, hidden, HELD_OUT, OBS)
        HoloCell.setup_mudata(split, modalities=MODS, batch_key="batch", species="human")
        model = HoloCell(split, seed=seed, **CONFIGS[name])
        t0 = time.perf_counter()
        model.train(max_epochs=epochs, seed=seed, enable_progress_bar=False, precision=precision,
                    batch_size=batch_size, lr=lr)
        row[f"{task}_train_s"] = time.perf_counter() - t0
        row[f"{task}_val_loss"] = float(model.history_["validation_loss"].iloc[-1])
        gen = model.generate(split[p4].copy(), target=target, n_steps=8, seed=seed, progress_bar=False)
        s = score_regression(name, truth, np.asarray(gen[p4].X))
        row[f"{task}_pearson"] = s["pearson_mean"]
        row[f"{task}_rmse"] = s["rmse"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="base:5,base:30,base:100")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="sweep")
    args = parser.parse_args()
    quiet()
    rows = []
    for item in args.configs.split(","):
        name, epochs = item.split(":")
        rows.append(run(name, int(epochs), args.seed, args.precision, args.batch_size, args.lr))
    info = {"rows": rows, "quick": False, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    cols = ["config", "epochs", "precision", "batch_size", "lr", "rna_to_protein_pearson", "rna_to_protein_train_s",
            "protein_to_rna_pearson", "protein_to_rna_train_s"]
    write_results(args.out, args.tag, "holocell training-length and capacity sweep (PBMC p4)", info,
                  [("Configurations", rows, cols)], "Written by `benchmarks/sweep.py`.",
                  settings={"configs": args.configs, "precision": args.precision, "batch_size": args.batch_size,
                            "lr": args.lr, "model_configs": CONFIGS})


if __name__ == "__main__":
    main()
