"""Train the shipped ``holocell-small`` checkpoint (a few minutes on a GPU, longer on a CPU).

Data: one mosaic MuData that concatenates
- the bundled real PBMC CITE-seq (``hc.data.pbmc_cite_mosaic``), batches p1 (RNA only), p2 (protein
  only) and p3 (paired); batch **p4 is held out** so that ``benchmarks/transfer.py`` can score the
  checkpoint zero-shot and fine-tuned on cells it never saw;
- a simulated human multiome (``hc.data.simulate_multiome``: RNA + ATAC + protein, one batch
  without protein), which is the only ATAC the checkpoint sees;
- mouse RNA on the shared human/mouse anchors (``hc.vocab.rename_to_anchors``, one-to-one
  orthologs), species token ``mouse``: the RNA of the SNARE-seq2 mouse motor cortex
  (``hc.data.snareseq2_mop``, ``--mop-cells`` cells, its mm10 ATAC left out) and, with
  ``--mouse-zarr``, the 10,000-cell mouse 10x subset of scanpy's test data.

Features a source does not measure (the simulator's genes in PBMC cells and vice versa) read as zero
counts in that source's cells; ATAC and protein are absent (masked) where a source lacks them.

Usage::

    python scripts/train_pretrained.py [--out src/holocell/model/_files/holocell-small-v1.zip]
        [--max-epochs 30] [--max-minutes 15] [--seed 0] [--mop-cells 4000]
        [--mouse-zarr .../scanpy/tests/_data/10x-10k-subset.zarr] [--batch-size 128] [--lr 2e-3] [--keep-diverged]

Training stops at ``--max-epochs`` or after ``--max-minutes`` of wall-clock time, whichever comes
first (the epochs actually run are recorded next to the archive). A run whose cell state diverged (see
``HoloCell.train``'s warning) writes nothing, so it never replaces the shipped archive, unless ``--keep-diverged``.

Prints the archive's sha256 for the registry (``holocell/model/_files/README.md``) and writes the training
record next to the archive (``<archive>.json``: cells per source, network, parameters, epochs, the
command; file names only, never a machine's absolute path). The model card in ``docs/pretrained.md`` is
generated from that record by ``benchmarks/summary.py``.

``--record-only`` trains nothing: it reads the existing record and archive, adds what an older record
lacks (the parameter count, the command) and drops absolute paths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import lightning.pytorch as pl
import mudata as md
import numpy as np

import holocell as hc
from holocell.data._merge import MergeInput, merge_for_pretraining
from holocell.data._registry import sha256sum
from holocell.train._fit import cell_state_diverged

HELD_OUT_BATCH = "p4_0"
SIM_CELLS = 600
MODEL_KWARGS = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_latents": 16, "seed": 0}
SIM_KWARGS = {"n_genes": 200, "n_tfs": 20, "n_proteins": 30, "n_batches": 2, "missing": {"protein": ["batch1"]}}


class EpochPrinter(pl.Callback):
    """Print each epoch's losses as it ends (the run is long; a diverging cell state shows early)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if "loss" in k}
        print(f"epoch {trainer.current_epoch}: {metrics}", flush=True)


def _mouse_rna(adata: ad.AnnData, n_cells: int | None, seed: int) -> md.MuData:
    """Mouse RNA renamed onto the shared anchors (a random ``n_cells`` subset), as a MuData."""
    if n_cells is not None and n_cells < adata.n_obs:
        keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, n_cells, replace=False))
        adata = adata[keep]
    rna = hc.vocab.rename_to_anchors(adata, species="mouse")
    rna.var = rna.var[[]]
    out = md.MuData({"rna": rna})
    if "batch" in adata.obs:
        out.obs["batch"] = adata.obs["batch"].astype(str).to_numpy()
    return out


def pretraining_mudata(
    n_sim_cells: int = SIM_CELLS, seed: int = 0, mop_cells: int = 0, mouse_zarr: str | None = None
) -> md.MuData:
    """PBMC (without the held-out batch) + simulated multiome (+ mouse RNA), as one mosaic MuData.

    Modalities ``rna``, ``atac`` and ``protein``; ``obs["batch"]`` (``pbmc:p1_0``, ...,
    ``sim:batch0``, ...), ``obs["source"]`` and ``obs["species"]``. The RNA ``var`` carries
    ``chrom``/``tss``/``strand`` of the simulator's genes (PBMC genes have none), which is what links
    the simulated peaks.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pbmc = hc.data.pbmc_cite_mosaic()
        sim, _ = hc.data.simulate_multiome(n_sim_cells, species="human", seed=seed, **SIM_KWARGS)
    keep = pbmc.obs_names[pbmc.obs["batch"].astype(str) != HELD_OUT_BATCH]
    pbmc = pbmc[keep].copy()
    inputs = [
        MergeInput("pbmc", pbmc, {"rna": "rna", "protein": "adt"}, batch_key="batch"),
        MergeInput("sim", sim, {"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch"),
    ]
    if mop_cells:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mop = hc.data.snareseq2_mop(progressbar=False)
        rna = mop["rna"].copy()
        rna.obs["batch"] = mop.obs.loc[rna.obs_names, "batch"].astype(str).to_numpy()
        inputs.append(MergeInput("mop", _mouse_rna(rna, mop_cells, seed), {"rna": "rna"}, batch_key="batch"))
    if mouse_zarr:
        tenx = ad.read_zarr(mouse_zarr)
        tenx.var_names = tenx.var["gene_ids"].astype(str).to_numpy()  # Ensembl ids: unique, unambiguous
        inputs.append(MergeInput("mouse10x", _mouse_rna(tenx, None, seed), {"rna": "rna"}))
    merged = merge_for_pretraining(inputs)
    mouse = merged.obs["source"].astype(str).isin(["mop", "mouse10x"]).to_numpy()
    merged.obs["species"] = np.where(mouse, "mouse", "human")
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="src/holocell/model/_files/holocell-small-v1.zip")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock cap of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mop-cells", type=int, default=4000, help="mouse SNARE-seq2 RNA cells (0: none)")
    parser.add_argument("--mouse-zarr", default=None, help="scanpy's tests/_data/10x-10k-subset.zarr")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--model-kwargs", type=json.loads, default={},
                        help='JSON of HoloCell arguments over the defaults, e.g. \'{"kl_warmup": 0.1}\'')
    parser.add_argument("--keep-diverged", action="store_true", help="write the archive even if the cell state diverged")
    parser.add_argument("--record-only", action="store_true", help="update the record of the existing archive")
    args = parser.parse_args()
    if not isinstance(args.model_kwargs, dict):
        parser.error(f"--model-kwargs must be a JSON object of HoloCell arguments, got {args.model_kwargs!r}.")
    if args.record_only:
        update_record(Path(args.out))
        return
    mdata = pretraining_mudata(seed=args.seed, mop_cells=args.mop_cells, mouse_zarr=args.mouse_zarr)
    print(mdata)
    print(mdata.obs.groupby(["source", "species"], observed=True).size())
    hc.HoloCell.setup_mudata(
        mdata,
        modalities={"rna": "rna", "atac": "atac", "protein": "protein"},
        batch_key="batch",
        species_key="species",
        gene_id_type="symbol",
    )
    model_kwargs = {**MODEL_KWARGS, **args.model_kwargs}
    model = hc.HoloCell(mdata, **model_kwargs)
    print(model)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        seed=args.seed,
        enable_progress_bar=False,
        max_time={"minutes": args.max_minutes},
        batch_size=args.batch_size,
        lr=args.lr,
        callbacks=[EpochPrinter()],
    )
    seconds = time.perf_counter() - start
    print(model.history_.to_string())
    if cell_state_diverged(model.history_, model.module.network.config.n_latent) and not args.keep_diverged:
        sys.exit(f"The cell state diverged (train_loss_kl above); {args.out} was not written (--keep-diverged writes it).")
    out = model.save_pretrained(args.out, overwrite=True)
    info = {
        "file": out.name,
        "command": _command(),
        "n_parameters": sum(p.numel() for p in model.module.parameters()),
        "bytes": out.stat().st_size,
        "sha256": sha256sum(out),
        "holocell_version": hc.__version__,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "max_minutes": args.max_minutes,
        "epochs_run": len(model.history_),
        "train_seconds": round(seconds, 1),
        "model_kwargs": model_kwargs,
        "simulator_kwargs": {**SIM_KWARGS, "n_cells": SIM_CELLS, "seed": args.seed},
        "n_cells": int(mdata.n_obs),
        "cells_per_source": {str(k): int(v) for k, v in mdata.obs["source"].value_counts().items()},
        "mop_cells": args.mop_cells,
        "mouse_zarr": Path(args.mouse_zarr).name if args.mouse_zarr else None,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": str(next(model.module.parameters()).device),
        "n_anchors": model.feature_space.n_anchors,
        "final_validation_loss": float(model.history_["validation_loss"].iloc[-1]),
    }
    print(json.dumps(info, indent=1))
    Path(args.out).with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


def _command() -> str:
    """This script's command line with file arguments reduced to their names (no machine paths)."""
    args = [Path(a).name if "/" in a else a for a in sys.argv[1:]]
    return " ".join(["python scripts/train_pretrained.py", *args])


def update_record(archive: Path) -> None:
    """Rewrite ``<archive>.json`` from the archive itself: parameter count, file name only, no absolute paths."""
    record_path = archive.with_suffix(".json")
    info = json.loads(record_path.read_text())
    model = hc.HoloCell.load_pretrained(str(archive))
    info["file"] = archive.name
    info["n_parameters"] = sum(p.numel() for p in model.module.parameters())
    info.setdefault(
        "command",
        "python scripts/train_pretrained.py "
        f"--max-epochs {info['max_epochs']} --max-minutes {info['max_minutes']} --mop-cells {info['mop_cells']}"
        + (f" --mouse-zarr <scanpy sdist>/tests/_data/{info['mouse_zarr']}" if info.get("mouse_zarr") else "")
        + f" --seed {info['seed']} --batch-size {info['batch_size']} --lr {info['lr']}",
    )
    if sha256sum(archive) != info["sha256"]:
        info["archive_sha256_now"] = sha256sum(archive)  # the shipped archive was repacked after training
    record_path.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
