"""The demo's numbers as a benchmark result: ``holocell demo`` (PBMC RNA -> protein on batch p4) run by a script.

Runs :func:`holocell._demo.run_demo` (the same code as ``holocell demo``) in a temporary folder and writes
``<out>/demo.json`` and ``demo.md`` with provenance, and ``<out>/demo_umap.png`` (the demo's own plot).
Peers in the same run: kNN(15) and ridge on RNA PCA(50) fit on the paired batch p3, the mean predictor.

Run: ``python benchmarks/demo.py [--quick] [--out benchmarks/results]``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from _common import parse_args, quiet, write_results
from _verdict import verdicts

from holocell._demo import run_demo

#: holocell's settings in this script: the demo's own default is 40 epochs
HOLOCELL = {"quick": {"max_epochs": 12}, "full": {"max_epochs": 40}}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    quiet()
    cfg = HOLOCELL["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_demo(tmp, max_epochs=cfg["max_epochs"], seed=args.seed, enable_progress_bar=False)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "umap.png", args.out / "demo_umap.png")
    rows = results["rows"]
    results = {**results, "quick": args.quick, "verdicts": verdicts("PBMC RNA -> protein (demo, p4)", rows,
                                                                    ["pearson_mean", "rmse"])}
    cost = results["cost"]
    write_results(
        args.out, "demo", "Demo: PBMC RNA -> protein on batch p4 (`holocell demo`)", results,
        [("Prediction (CLR, per protein)", rows, ["method", "pearson_mean", "pearson_median", "rmse"]),
         ("Cost on this machine", [cost], list(cost))],
        f"{results['task']}. Same code as `holocell demo --out DIR`; UMAP of the embedding in `demo_umap.png`.",
        settings={"holocell": cfg},
    )


if __name__ == "__main__":
    main()
