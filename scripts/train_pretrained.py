"""Train the shipped ``holocell-small`` checkpoint (CPU, a few minutes).

Data: one mosaic MuData that concatenates
- the bundled real PBMC CITE-seq (``hc.data.pbmc_cite_mosaic``), batches p1 (RNA only), p2 (protein
  only) and p3 (paired); batch **p4 is held out** so that ``benchmarks/transfer.py`` can score the
  checkpoint zero-shot and fine-tuned on cells it never saw;
- a simulated human multiome (``hc.data.simulate_multiome``: RNA + ATAC + protein, one batch
  without protein), which is the only ATAC the checkpoint sees.

Human only: the shared human/mouse vocabulary (orthologs) has not landed on this branch, and a
MuData carries one species at setup. Features a source does not measure (the simulator's genes in
PBMC cells and vice versa) read as zero counts in that source's cells; ATAC and protein are absent
(masked) where a source lacks them.

Usage::

    python scripts/train_pretrained.py [--out src/holocell/model/_files/holocell-small-v1.zip]
        [--max-epochs 30] [--max-minutes 15] [--seed 0]

Training stops at ``--max-epochs`` or after ``--max-minutes`` of wall-clock time, whichever comes
first (the epochs actually run are recorded next to the archive).

Prints the archive's sha256 for the registry (``holocell/model/_files/README.md``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import mudata as md

import holocell as hc
from holocell.data._merge import MergeInput, merge_for_pretraining
from holocell.data._registry import sha256sum

HELD_OUT_BATCH = "p4_0"
SIM_CELLS = 600
MODEL_KWARGS = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_latents": 16, "seed": 0}
SIM_KWARGS = {"n_genes": 200, "n_tfs": 20, "n_proteins": 30, "n_batches": 2, "missing": {"protein": ["batch1"]}}


def pretraining_mudata(n_sim_cells: int = SIM_CELLS, seed: int = 0) -> md.MuData:
    """PBMC (without the held-out batch) + simulated multiome, as one mosaic MuData.

    Modalities ``rna``, ``atac`` and ``protein``; ``obs["batch"]`` (``pbmc:p1_0``, ...,
    ``sim:batch0``, ...) and ``obs["source"]``. The RNA ``var`` carries ``chrom``/``tss``/``strand``
    of the simulator's genes (PBMC genes have none), which is what links the simulated peaks.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pbmc = hc.data.pbmc_cite_mosaic()
        sim, _ = hc.data.simulate_multiome(n_sim_cells, species="human", seed=seed, **SIM_KWARGS)
    keep = pbmc.obs_names[pbmc.obs["batch"].astype(str) != HELD_OUT_BATCH]
    pbmc = pbmc[keep].copy()
    return merge_for_pretraining(
        [
            MergeInput("pbmc", pbmc, {"rna": "rna", "protein": "adt"}, batch_key="batch"),
            MergeInput("sim", sim, {"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="src/holocell/model/_files/holocell-small-v1.zip")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock cap of training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mdata = pretraining_mudata(seed=args.seed)
    print(mdata)
    hc.HoloCell.setup_mudata(
        mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch"
    )
    model = hc.HoloCell(mdata, **MODEL_KWARGS)
    print(model)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        seed=args.seed,
        enable_progress_bar=False,
        max_time={"minutes": args.max_minutes},
    )
    seconds = time.perf_counter() - start
    out = model.save_pretrained(args.out, overwrite=True)
    info = {
        "file": str(out),
        "bytes": out.stat().st_size,
        "sha256": sha256sum(out),
        "holocell_version": hc.__version__,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "max_minutes": args.max_minutes,
        "epochs_run": len(model.history_),
        "train_seconds": round(seconds, 1),
        "model_kwargs": MODEL_KWARGS,
        "simulator_kwargs": {**SIM_KWARGS, "n_cells": SIM_CELLS, "seed": args.seed},
        "n_cells": int(mdata.n_obs),
        "n_anchors": model.feature_space.n_anchors,
        "final_validation_loss": float(model.history_["validation_loss"].iloc[-1]),
    }
    print(json.dumps(info, indent=1))
    Path(args.out).with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
