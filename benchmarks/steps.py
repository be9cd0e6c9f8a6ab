"""Generation quality against the number of denoising steps, with low-confidence and random remasking.

Two tasks, each trained once and then generated with every (steps, remasking) pair through the public
``HoloCell.generate(..., n_steps=, remasking=)`` only:

- PBMC RNA -> protein on batch p4 (protein hidden in training; CLR per-protein Pearson), the split of
  ``pbmc.py``;
- SNARE-seq2 RNA -> ATAC on held-out libraries 09J-09L (per-peak AUROC), the split of ``chromatin.py``.

``--steps`` is a comma-separated list (default ``0,1,2,4,8,16``). ``0`` is one-shot decoding of the count
likelihood's mean from the cell state (the default of ``generate`` for point predictions); it has no
remasking, so it is run once. A value the model does not accept is recorded as an error row, not a crash.
The SNARE model uses ``chromatin.py``'s sizes and holocell settings (default training schedule). Writes
``<out>/steps.json``, ``steps.md`` and ``steps.png``.

Run: ``python benchmarks/steps.py [--quick] [--steps 0,1,2,4,8,16]``.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _common import (
    ROOT,
    hide_modality,
    parser,
    quiet,
    score_auroc,
    score_regression,
    train_holocell,
    write_results,
)

import holocell as hc
from holocell import evaluation as ev

REMASKING = ("low_confidence", "random")
ONE_SHOT = "none (one-shot mean)"
"""The ``remasking`` column of the ``n_steps=0`` row."""
#: PBMC epochs as in ``pbmc.py``; SNARE: the mode of ``chromatin.py`` whose sizes and holocell settings are used
HOLOCELL = {"quick": {"pbmc_epochs": 3, "snare": "quick"}, "full": {"pbmc_epochs": 40, "snare": "full"}}


def sweep(model, query, target: str, steps: list[int], score, seed: int) -> list[dict]:
    rows = []
    runs = [(ONE_SHOT, 0)] if 0 in steps else []
    runs += [(remasking, n) for remasking in REMASKING for n in steps if n != 0]
    for remasking, n in runs:
        row = {"remasking": remasking, "n_steps": n}
        try:
            t0 = time.perf_counter()
            gen = model.generate(query, target=target, n_steps=n, seed=seed, key_added="steps_gen",
                                 overwrite=True, progress_bar=False,
                                 **({} if remasking == ONE_SHOT else {"remasking": remasking}))
            row["seconds"] = time.perf_counter() - t0
            row["cells/s"] = query.n_obs / row["seconds"]
            row.update(score(np.asarray(gen.X)))
        except (ValueError, TypeError) as err:
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        print(row, flush=True)
    return rows


def pbmc_task(cfg: dict, steps: list[int], seed: int) -> list[dict]:
    full = hc.data.pbmc_cite_mosaic()
    p4 = full.obs_names[(full.obs["batch"] == "p4_0").to_numpy()]
    split = hide_modality(full, "adt", "p4_0", ["batch", "celltype"])
    model, _ = train_holocell(split, {"rna": "rna", "protein": "adt"}, cfg["pbmc_epochs"], seed)
    truth = ev.clr(full["adt"][p4].X)
    query = split[p4].copy()
    return sweep(model, query, "protein", steps,
                 lambda x: {k: v for k, v in score_regression("", truth, x).items() if k != "method"}, seed)


def snare_task(cfg: dict, steps: list[int], seed: int) -> list[dict]:
    import chromatin as ch

    sizes, hc_cfg = ch.SIZES[cfg["snare"]], ch.HOLOCELL[cfg["snare"]]
    snare = hc.data.snareseq2_mop(progressbar=False)
    rng = np.random.default_rng(seed)
    train_cells = ch.sample_cells(snare.obs, ch.TRAIN_LIBS, sizes["per_lib"], rng)
    test_cells = ch.sample_cells(snare.obs, ch.TEST_LIBS, sizes["test_per_lib"], rng)
    peaks = ch.select_peaks(snare["atac"].X[train_cells], ch.MULTIVI_MIN_CELLS, sizes["max_peaks"])
    train, test = ch._subset(snare, train_cells, peaks), ch._subset(snare, test_cells, peaks)
    model, _ = ch.holocell_model(train, {"rna": "rna", "atac": "atac"}, species="mouse", genome="mm10",
                                 cfg=hc_cfg, seed=seed)  # the model of chromatin.py's paired task
    truth = ch.binarize(test["atac"].X).toarray()
    return sweep(model, test, "atac", steps,
                 lambda x: {k: v for k, v in score_auroc("", truth, x).items() if k != "method"}, seed)


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("pbmc", "pearson_mean", "PBMC RNA -> protein (Pearson)"),
              ("snare", "auroc_mean", "SNARE-seq2 RNA -> ATAC (AUROC)")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (key, metric, title) in zip(axes, panels, strict=True):
        for remasking in REMASKING:
            rows = [r for r in results.get(key, []) if r["remasking"] == remasking and metric in r]
            ax.plot([r["n_steps"] for r in rows], [r[metric] for r in rows], marker="o", label=remasking)
        for r in results.get(key, []):
            if r["remasking"] == ONE_SHOT and metric in r:
                ax.axhline(r[metric], color="grey", linestyle="--", label="one-shot mean (n_steps=0)")
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xlabel("denoising steps")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", default="0,1,2,4,8,16", help="comma-separated step counts (0: one-shot mean)")
    p.add_argument("--tasks", default="pbmc,snare")
    args = p.parse_args()
    os.environ.setdefault(hc.data._registry.DATA_DIR_ENV, str(ROOT.parent / "shared" / "data"))
    quiet()
    cfg = HOLOCELL["quick" if args.quick else "full"]
    steps = [int(s) for s in args.steps.split(",")]
    results = {"quick": args.quick, "seed": args.seed, "steps": steps}
    tasks = args.tasks.split(",")
    if "pbmc" in tasks:
        results["pbmc"] = pbmc_task(cfg, steps, args.seed)
    if "snare" in tasks:
        results["snare"] = snare_task(cfg, steps, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "steps.png")
    write_results(
        args.out, "steps", "Generation quality against denoising steps", results,
        [("PBMC RNA -> protein, batch p4 (CLR, per protein)", results.get("pbmc", []),
          ["remasking", "n_steps", "pearson_mean", "rmse", "cells/s", "error"]),
         ("SNARE-seq2 RNA -> ATAC, held-out libraries (per peak)", results.get("snare", []),
          ["remasking", "n_steps", "auroc_mean", "cells/s", "error"])],
        "One trained model per task; every row generates the same held-out cells with the public "
        "`HoloCell.generate(n_steps=, remasking=)`. Plot: `steps.png`. No verdicts: this page compares holocell "
        "with itself.",
        settings={"holocell": cfg, "steps": steps},
    )


if __name__ == "__main__":
    main()
