"""Shared helpers of the benchmark scripts: arguments, splits, peers, timing and result files.

Every script runs holocell and its peers on the same split in the same process run and writes
``benchmarks/results/<name>.json`` and ``<name>.md`` (plus plots). Nothing here is part of the
installed package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _verdict import verdict_table

import holocell as hc
from holocell import evaluation as ev
from holocell.model import HoloCell

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GFLOPS_PEAK_CPU = 320.0  # fp32 matmul peak of the 2-core reference CPU (DESIGN.md section 4)

# A benchmark script is a process of its own, like the `holocell` command line: back large CPU tensors with
# transparent huge pages (~40% of CPU embedding time was first-touch page faults, docs/design.md). Since
# issue 17 importing holocell sets nothing, so the scripts switch it on here, when they import this module,
# before their first model or tensor. A test that imports these helpers leaves its process alone.
# holocell before issue 17 (the tree of a `cost.py --baseline` run) has no `settings`: it switched them on at import.
if Path(sys.argv[0]).resolve().parent == Path(__file__).resolve().parent and hasattr(hc, "settings"):
    hc.settings.huge_pages = True


# ------------------------------------------------------------------------------------------- plumbing
def parser(description: str) -> argparse.ArgumentParser:
    """``--quick``, ``--seed`` and ``--out`` shared by every script (add more, then ``parse_args()``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer epochs / cells, for iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser


def parse_args(description: str) -> argparse.Namespace:
    """The shared arguments only."""
    return parser(description).parse_args()


def quiet() -> None:
    """Silence Lightning / scvi-tools logging chatter (the tables are the output). Warnings are left alone."""
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def timer(store: dict, key: str):
    """Store the wall-clock seconds of the ``with`` body in ``store[key]``."""
    t0 = time.perf_counter()
    yield
    store[key] = time.perf_counter() - t0


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs of ``fn`` (seconds): the machine is shared, so the minimum is the
    least-disturbed reading."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def mflop(fn: Callable[[], object]) -> float:
    """Millions of floating-point operations of the matrix products (linear layers, matmuls) that ``fn``
    runs, from ``torch.profiler(with_flops=True)``; attention-kernel and element-wise work is not counted,
    so this is a lower bound dominated by the linear layers."""
    from torch.profiler import profile

    with profile(with_flops=True) as prof:
        fn()
    return sum(e.flops or 0 for e in prof.key_averages()) / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on: CPU, cores, torch, the device holocell trains on, the load."""
    cuda = torch.cuda.is_available()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "huge_pages": hc.settings.huge_pages,
        "platform": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> dict:
    """The commit the scripts ran from, and whether the work tree had uncommitted changes (read when the
    script starts: see ``_START``)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks/*.py"))
    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown", "dirty": dirty}


_START: dict = {}


def command() -> str:
    """How this script was started, relative to the repository root; other absolute paths keep their name only."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        script = Path(script.name)

    def clean(arg: str) -> str:
        arg = arg.replace(str(ROOT) + "/", "")
        return f"<path>/{Path(arg).name}" if arg.startswith("/") else arg

    return " ".join(["python", str(script), *map(clean, sys.argv[1:])])


def provenance(settings: Mapping | None = None, quick: bool | None = None) -> dict:
    """Date, commit, machine, command and settings of a run: the ``meta`` block of every result file."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(_START or git_commit()),
        "command": command(),
        "quick": quick,
        "settings": dict(settings or {}),
        "machine": machine(),
    }


def provenance_line(meta: Mapping) -> str:
    """One markdown line naming the command, date, commit and machine of a result file."""
    m = meta["machine"]
    dirty = " (uncommitted changes)" if meta.get("dirty") else ""
    mode = {True: "quick run", False: "full run", None: "run"}[meta.get("quick")]
    return (
        f"_{mode}: `{meta['command']}` on {meta['date']}, commit `{meta['commit']}`{dirty}; "
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), device {m['device']}; "
        f"load average {', '.join(f'{x:.1f}' for x in m['load_average_1_5_15'])}._"
    )


def write_json(out: Path, name: str, results: Mapping) -> Path:
    """Write ``out/<name>.json`` (numpy values converted)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    return path


def write_results(
    out: Path,
    name: str,
    title: str,
    results: dict,
    sections: Sequence[tuple[str, list[dict], list[str]]],
    notes: str,
    *,
    settings: Mapping | None = None,
) -> None:
    """Write ``out/<name>.json`` (``results`` + ``meta``: date, commit, machine, command, settings) and
    ``out/<name>.md`` (one table per section, the verdicts, the notes and the provenance line)."""
    results = {**results, "meta": provenance(settings, results.get("quick"))}
    write_json(out, name, results)
    parts = [f"## {title}\n"]
    for heading, rows, columns in sections:
        parts.append(f"### {heading}\n\n{ev.format_table(rows, columns)}\n")
    if results.get("verdicts"):
        parts.append(f"### Verdicts (holocell vs the best peer on the same cells)\n\n{verdict_table(results['verdicts'])}\n")
    parts.append(notes.strip() + "\n\n" + provenance_line(results["meta"]) + "\n")
    text = "\n".join(parts)
    (out / f"{name}.md").write_text(text)
    print(text)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# ------------------------------------------------------------------------------------------- data
def hide_modality(full: md.MuData, mod: str, batch: str, obs_cols: Sequence[str]) -> md.MuData:
    """Copy of ``full`` without modality ``mod`` for the cells of ``batch`` (a true mosaic).

    The user's object is not modified; global ``obs`` keeps ``obs_cols`` for every cell.
    """
    mods = {}
    for name, a in full.mod.items():
        keep = ~(a.obs["batch"].astype(str) == batch).to_numpy() if name == mod else np.ones(a.n_obs, bool)
        mods[name] = a[keep].copy()
    out = md.MuData(mods)
    out.obs = out.obs.join(full.obs[list(obs_cols)])
    return out


def hide_cells(full: md.MuData, hidden: Mapping[str, np.ndarray], obs_cols: Sequence[str]) -> md.MuData:
    """Copy of ``full`` where modality ``m`` loses the cells named in ``hidden[m]``."""
    mods = {}
    for name, a in full.mod.items():
        drop = np.isin(a.obs_names, hidden.get(name, []))
        mods[name] = a[~drop].copy()
    out = md.MuData(mods)
    out.obs = out.obs.join(full.obs[list(obs_cols)])
    return out


def counts_in(mdata: md.MuData, mod: str, cells: Sequence[str]) -> np.ndarray:
    """Dense counts of ``cells`` in ``mdata[mod]`` (rows in the order of ``cells``)."""
    x = mdata[mod][list(cells)].X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def has_mod(mdata: md.MuData, mod: str) -> np.ndarray:
    """``(n_obs,)`` bool: the global cell has modality ``mod``."""
    return np.asarray(mdata.obsm[mod]).astype(bool)


# ------------------------------------------------------------------------------------------- holocell
def train_holocell(
    mdata: md.MuData, modalities: dict[str, str], epochs: int, seed: int, **model_kwargs
) -> tuple[HoloCell, float]:
    """Set up, build and train holocell with its defaults; returns the model and the training seconds."""
    HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", species="human")
    model = HoloCell(mdata, seed=seed, **model_kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, seed=seed, enable_progress_bar=False)
    return model, time.perf_counter() - t0


def genie3_scores(expr: pd.DataFrame, tfs: Sequence[str], seed: int) -> pd.Series:
    """GENIE3-like TF -> gene scores: for each gene (column of ``expr``, cells x genes), the feature importances
    of an extra-trees regression on the other TFs' expression. Index ``(tf, target)``."""
    from sklearn.ensemble import ExtraTreesRegressor

    scores = {}
    for g in expr.columns:
        regs = [t for t in tfs if t != g]
        et = ExtraTreesRegressor(n_estimators=100, max_features="sqrt", random_state=seed, n_jobs=1)
        et.fit(expr[regs].to_numpy(), expr[g].to_numpy())
        scores.update({(t, g): w for t, w in zip(regs, et.feature_importances_, strict=True)})
    return pd.Series(scores)


# ------------------------------------------------------------------------------------------- scoring
def score_regression(method: str, truth: np.ndarray, pred: np.ndarray, **extra) -> dict:
    """A table row: per-feature Pearson (mean / median over features that vary in the truth; a constant
    prediction counts as 0) and RMSE, from :func:`holocell.evaluation.prediction_scores`."""
    return {"method": method, **extra, **ev.prediction_scores(truth, np.asarray(pred))}


def score_auroc(method: str, truth: np.ndarray, scores: np.ndarray, **extra) -> dict:
    """A table row: per-peak AUROC (mean / median over peaks with both classes in >= 1% of cells), from
    :func:`holocell.evaluation.auroc_scores`."""
    return {"method": method, **extra, **ev.auroc_scores(truth, np.asarray(scores))}


_START.update(git_commit())  # the commit at the start of the run, not at its end
