"""The main job: train on the bundled PBMC mosaic with batch p4's protein hidden, and score it.

Run by ``holocell demo`` (and ``make demo``). Everything in the printed table is computed in the
same run, on the same split: holocell, kNN(15) and ridge on RNA PCA(50), the mean predictor. The scoring
itself is in :mod:`holocell.evaluation` (``score_prediction``, ``baseline_scores``).
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mudata as md
import numpy as np

from . import evaluation as ev
from .data import pbmc_cite_mosaic
from .data._registry import sha256sum
from .model import HoloCell
from .model._args import check_count
from .model._arguments import check_train_call
from .model._safe_write import read_regular, write_beside

HELD_OUT_BATCH = "p4_0"
TRAIN_PAIRED_BATCH = "p3_0"
OUTPUTS = ("results.md", "results.json", "umap.png", "pbmc_holocell.h5mu")
"""The files the demo writes into its output folder."""
MANIFEST = ".holocell_demo.json"
"""In the output folder: the SHA-256 of each file the demo wrote. A rerun replaces only those, unchanged; a file of
this name that is not such a record (a link, the user's own JSON) is refused before any work, never replaced."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class DemoSplit:
    """The PBMC data with one batch's protein hidden, and that protein kept aside for scoring."""

    mdata: md.MuData  # training MuData: batch p4 has RNA only
    held_out_cells: np.ndarray  # obs names of p4 cells
    held_out_protein: np.ndarray  # (n_p4, n_proteins) raw counts, hidden from training
    proteins: np.ndarray


def make_split(held_out_batch: str = HELD_OUT_BATCH) -> DemoSplit:
    """Bundled PBMC data with ``held_out_batch``'s protein removed from the ``adt`` modality."""
    full = pbmc_cite_mosaic()
    adt = full["adt"]
    hide = (adt.obs["batch"] == held_out_batch).to_numpy()
    if not hide.any():
        raise ValueError(f"No protein cells in batch {held_out_batch!r}.")
    held_out = adt[hide]
    mdata = md.MuData({"rna": full["rna"].copy(), "adt": adt[~hide].copy()})
    mdata.obs = mdata.obs.join(full.obs[["batch", "celltype"]])  # global labels for every cell
    return DemoSplit(
        mdata,
        held_out.obs_names.to_numpy(),
        np.asarray(held_out.X.toarray()),
        adt.var_names.to_numpy(),
    )


def baseline_rows(split: DemoSplit, full: md.MuData) -> list[dict]:
    """kNN, ridge and mean predictors: fit on the paired batch p3, predict the held-out batch
    (:func:`holocell.evaluation.baseline_scores`)."""
    rna, adt = full["rna"], full["adt"]
    train_cells = adt.obs_names[(adt.obs["batch"] == TRAIN_PAIRED_BATCH).to_numpy()]
    truth = ev.clr(split.held_out_protein)
    return ev.baseline_scores(rna[train_cells].X, adt[train_cells].X, rna[split.held_out_cells].X, truth, seed=0)


score = ev.score_prediction
"""Kept importable here; the scoring lives in :func:`holocell.evaluation.score_prediction`."""


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    max_epochs: int = 40,
    seed: int = 0,
    enable_progress_bar: bool | None = True,
    make_plot: bool = True,
    model_kwargs: dict | None = None,
    n_steps: int = 8,
) -> dict:
    """Train, embed, generate p4's protein, score against the held-out truth, write outputs.

    Writes ``out_dir/pbmc_holocell.h5mu`` (embedding in ``.obsm["X_holocell"]``, generated
    protein in ``.mod["adt_generated"]``: NaN rows for the protein-only batch p2, which has no RNA to generate
    from; the scored p4 cells all have RNA), ``out_dir/umap.png``, ``out_dir/results.json`` and
    ``out_dir/results.md`` (``~`` expanded), each atomically, and records them in ``out_dir/.holocell_demo.json``. A file of
    those names that an earlier demo did not write (or that changed since), or a ``.holocell_demo.json`` that is not
    the demo's record (a link, the user's own file), is never replaced: ``FileExistsError`` before any work (and again before each write, for a file that appeared during training), as are a
    ``max_epochs`` or ``seed`` that training refuses (``ValueError`` / ``TypeError``, before the folder is
    created). ``seed`` starts the model's weights and seeds its training. ``model_kwargs`` go to :class:`HoloCell`
    (default: its defaults, as ``holocell demo`` runs it; a smaller model for quick checks); ``n_steps`` is the
    number of denoising steps of the iterative row (8, as the demo runs it; fewer for quick checks). Returns the
    results dictionary.
    """
    out_dir = Path(out_dir).expanduser()  # "~/demo": the home folder, not a folder named "~"
    check_train_call(max_epochs, 32, 0.1, 20, None, seed)  # before the output folder is created
    n_steps = check_count(n_steps, "n_steps")
    check_demo_outputs(out_dir, OUTPUTS if make_plot else tuple(n for n in OUTPUTS if n != "umap.png"))
    out_dir.mkdir(parents=True, exist_ok=True)
    full = pbmc_cite_mosaic()
    split = make_split()
    mdata = split.mdata
    HoloCell.setup_mudata(
        mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch", species="human"
    )
    model = HoloCell(mdata, **{"seed": seed, **(model_kwargs or {})})  # the seed starts the weights as well
    t0 = time.perf_counter()
    model.train(max_epochs=max_epochs, seed=seed, enable_progress_bar=enable_progress_bar)
    train_s = time.perf_counter() - t0
    n_epochs = len(model.history_)

    t0 = time.perf_counter()
    mdata.obsm["X_holocell"] = model.get_latent_representation()
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    generated = model.generate(mdata, target="protein", n_steps=n_steps, key_added="adt_generated", seed=seed)
    generate_s = time.perf_counter() - t0

    truth = ev.clr(split.held_out_protein)
    pred = generated[split.held_out_cells].X
    steps = f"{n_steps} step" + ("s" if n_steps > 1 else "")
    rows = [ev.score_prediction(f"holocell (mosaic, {steps})", truth, np.asarray(pred))]
    if model.config.cell_state:  # the default point prediction: the cell state's likelihood mean
        mean = model.generate(mdata, target="protein", n_steps=0, key_added="adt_mean", var_suffix="_adt_mean", seed=seed)
        rows.insert(0, ev.score_prediction("holocell (mosaic, likelihood mean)", truth, np.asarray(mean[split.held_out_cells].X)))
    rows += baseline_rows(split, full)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {
        "task": f"RNA -> protein on batch {HELD_OUT_BATCH} (protein hidden in training); CLR per-protein Pearson",
        "rows": rows,
        "cost": {
            "train_seconds": train_s,
            "epochs": n_epochs,
            "train_cells_per_s": n_epochs * len(model.train_indices_) / train_s,
            "embed_cells_per_s": mdata.n_obs / embed_s,
            "generate_cells_per_s_8_steps": mdata.n_obs / generate_s,
            "peak_rss_mb": peak_rss_mb,
        },
        "seed": seed,
    }
    table = ev.format_table(rows, ["method", "pearson_mean", "pearson_median", "rmse"])
    cost = ev.format_table([results["cost"]], list(results["cost"]))
    with _demo_file(out_dir, "results.md") as tmp:
        tmp.write_text(f"{results['task']}\n\n{table}\n\nCost (this machine)\n\n{cost}\n")
    with _demo_file(out_dir, "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    if make_plot:
        with _demo_file(out_dir, "umap.png") as tmp:
            _umap_plot(mdata, tmp)
    with _demo_file(out_dir, "pbmc_holocell.h5mu", ".h5mu") as tmp:
        mdata.write(str(tmp))
    print(f"\n{results['task']}\n\n{table}\n\nCost\n\n{cost}\n")
    print(
        f"Wrote {out_dir}/pbmc_holocell.h5mu, results.md, results.json" + (", umap.png" if make_plot else "")
    )
    return results


def check_demo_outputs(out_dir: Path, names: tuple[str, ...]) -> None:
    """Refuse to write over a file in ``out_dir`` that an earlier demo did not write unchanged (its SHA-256 in
    :data:`MANIFEST`): the user's own ``results.md``, say, in the folder given to ``--out``. Called before any work,
    and again right before each output is written (training takes minutes)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"The demo's output folder {out_dir} is a file; choose a folder (e.g. demo_output).")
    record = out_dir / MANIFEST
    if os.path.lexists(record) and _read_record(record) is None:
        raise _not_record(record)
    for name in names:
        path = out_dir / name
        if os.path.lexists(path) and not _unchanged_output(path):
            raise _not_ours(path)


def _unchanged_output(path: Path) -> bool:
    """Whether ``path`` is a regular file with the SHA-256 the demo recorded for it."""
    if path.is_symlink() or not path.is_file():
        return False
    return _manifest(path.parent).get(path.name) == sha256sum(path)


def _not_ours(path: Path) -> FileExistsError:
    return FileExistsError(
        f"{path} exists and is not an unchanged output of an earlier demo; holocell never writes over it. "
        "Choose another output folder, or move or remove it yourself."
    )


@contextmanager
def _demo_file(out_dir: Path, name: str, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write ``out_dir / name`` to; put into place and recorded in the manifest.

    The path is checked again here, and once more at the rename: a new file is hard-linked into place (which fails
    if a file appeared meanwhile), an existing one replaced only when it is still the demo's unchanged output."""
    check_demo_outputs(out_dir, (name,))
    with write_beside(out_dir / name, _unchanged_output, _not_ours, suffix) as tmp:
        yield tmp
        digest = sha256sum(tmp)
    written = _manifest(out_dir) | {name: digest}
    with write_beside(out_dir / MANIFEST, lambda p: _read_record(p) is not None, _not_record, ".json") as tmp:
        tmp.write_text(json.dumps(written, indent=1))


def _read_record(path: Path) -> dict[str, str] | None:
    """The demo's record at ``path``, or None when what is there is not one: a link, not a regular file (a FIFO or
    ``/dev/zero`` is never read without end), larger than 1 MiB, or not a JSON object of SHA-256 hex strings."""
    if path.is_symlink():
        return None
    try:
        written = json.loads(read_regular(path, 1 << 20))
    except (OSError, ValueError):
        return None
    if not isinstance(written, dict) or not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in written.values()):
        return None
    return written


def _manifest(out_dir: Path) -> dict[str, str]:
    """The outputs recorded in ``out_dir`` (none when there is no record there, or it is not the demo's)."""
    return _read_record(out_dir / MANIFEST) or {}


def _not_record(path: Path) -> FileExistsError:
    return FileExistsError(
        f"{path} is not the record of outputs that holocell demo writes (it is a link, not a regular file, or not a "
        "JSON object of SHA-256 hashes); holocell never writes over it. Move or remove it yourself, or choose another "
        "output folder."
    )


def _umap_plot(mdata: md.MuData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    view = sc.AnnData(obs=mdata.obs[["batch", "celltype"]].copy())
    view.obsm["X_holocell"] = mdata.obsm["X_holocell"]
    sc.pp.neighbors(view, use_rep="X_holocell", random_state=0)
    sc.tl.umap(view, random_state=0)
    mdata.obsm["X_umap"] = view.obsm["X_umap"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    sc.pl.umap(view, color="celltype", ax=axes[0], show=False, title="holocell: cell type")
    sc.pl.umap(view, color="batch", ax=axes[1], show=False, title="holocell: batch")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
