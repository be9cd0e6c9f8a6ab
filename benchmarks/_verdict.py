"""The one verdict rule of the benchmarks: holocell against the best peer that saw the same cells.

Every script puts its comparisons through :func:`verdicts`; ``summary.py`` only reads what it wrote.

- A table row is a method's result on one task. Rows may carry ``cells`` (how many cells the method
  embedded or predicted); holocell is compared only with rows on the same cells, so that an RNA-only
  peer (SCVI, PCA) is compared with holocell on the RNA cells, not on all cells.
- holocell rows are those whose ``method`` starts with ``holocell``; every other row is a peer,
  deep models and baselines alike (PCA, LSI, kNN, ridge, the mean predictor). When a table has several
  holocell rows on the same cells (e.g. zero-shot and fine-tuned), the first is compared: scripts list
  holocell's primary setting first, so that no verdict picks the best of holocell's variants.
- ratio = holocell / best peer for a higher-is-better metric, best peer / holocell for a
  lower-is-better one (RMSE), so > 1 always favours holocell.
- verdict: ``better`` (ratio >= 1.1), ``level`` (0.9 <= ratio < 1.1) or ``worse`` (ratio < 0.9);
  ``n/a`` when the ratio is not defined (a value <= 0, or missing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from holocell.evaluation import format_table

TARGET = 1.1  # holocell counts as better at >= 1.1x the best peer
LEVEL = 0.9  # ... and level down to 0.9x
COLUMNS = ["task", "metric", "cells", "holocell", "best peer", "peer value", "ratio", "verdict"]


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def ratio_of(holocell: float, peer: float, higher_is_better: bool = True) -> float:
    """holocell / peer (higher is better) or peer / holocell (lower is better); NaN unless both are > 0."""
    if not (_finite(holocell) and _finite(peer)) or holocell <= 0 or peer <= 0:
        return float("nan")
    return holocell / peer if higher_is_better else peer / holocell


def verdict_of(ratio: float) -> str:
    """``better`` / ``level`` / ``worse`` / ``n/a`` for a ratio (see the module docstring)."""
    if not _finite(ratio):
        return "n/a"
    return "better" if ratio >= TARGET else "level" if ratio >= LEVEL else "worse"


def verdicts(
    task: str,
    rows: Sequence[Mapping],
    metrics: Sequence[str],
    *,
    lower_is_better: Sequence[str] = ("rmse",),
    cells_key: str = "cells",
) -> list[dict]:
    """One verdict per metric and per set of cells that holocell and at least one peer were scored on.

    Parameters
    ----------
    task
        Name of the task (shown in the summary).
    rows
        Table rows (``method`` plus metric values, optionally ``cells_key``).
    metrics
        Metrics to compare.
    lower_is_better
        Metrics where smaller values win.
    cells_key
        Row key of the cell set; rows without it form one set.

    Returns
    -------
    list of dict
        ``task``, ``metric``, ``cells``, ``holocell_method``, ``holocell``, ``best_peer``,
        ``best_peer_value``, ``ratio``, ``verdict``, ``peers`` (every peer compared).
    """
    out = []
    groups: dict[object, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(row.get(cells_key), []).append(row)
    for metric in metrics:
        higher = metric not in lower_is_better
        for cells, group in groups.items():
            ours = [r for r in group if str(r["method"]).startswith("holocell") and _finite(r.get(metric))]
            peers = [r for r in group if not str(r["method"]).startswith("holocell") and _finite(r.get(metric))]
            if not ours or not peers:
                continue
            best = max(peers, key=lambda r: r[metric]) if higher else min(peers, key=lambda r: r[metric])
            mine = ours[0]
            ratio = ratio_of(mine[metric], best[metric], higher)
            out.append({
                "task": task,
                "metric": metric,
                "cells": cells,
                "holocell_method": mine["method"],
                "holocell": mine[metric],
                "best_peer": best["method"],
                "best_peer_value": best[metric],
                "higher_is_better": higher,
                "ratio": ratio,
                "verdict": verdict_of(ratio),
                "peers": [r["method"] for r in peers],
            })
    return out


def verdict_table(rows: Sequence[Mapping]) -> str:
    """Markdown table of verdicts."""
    shown = [
        {"task": v["task"], "metric": v["metric"], "cells": v.get("cells"), "holocell": v["holocell"],
         "best peer": v["best_peer"], "peer value": v["best_peer_value"], "ratio": v["ratio"],
         "verdict": v["verdict"]}
        for v in rows
    ]
    return format_table(shown, COLUMNS)
