"""``history_`` in a checkpoint's ``config.json``: the epoch numbers and one list per metric.

A missing value (a metric not logged in an epoch) is ``null``, so the file stays strict JSON. The
config check (:mod:`._config_check`) validates the entry before a model is built from it.
"""

from __future__ import annotations

import math

import pandas as pd


def history_entry(model) -> dict:
    """``{"history": ...}`` for ``model.history_`` (one row per epoch), or ``{}`` when it has none."""
    frame = getattr(model, "history_", None)
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return {}
    columns: dict[str, list] = {"epoch": [int(e) for e in frame.index]}
    for name in frame.columns:
        columns[str(name)] = [float(v) if math.isfinite(v) else None for v in frame[name].astype(float)]
    return {"history": columns}


def history_from_config(config: dict) -> pd.DataFrame | None:
    """The ``history_`` a config records (index ``epoch``), or ``None`` (written before format 5, or untrained)."""
    columns = config.get("history")
    if columns is None:
        return None
    index = pd.Index(columns["epoch"], name="epoch", dtype="int64")
    values = {k: [math.nan if v is None else float(v) for v in vs] for k, vs in columns.items() if k != "epoch"}
    return pd.DataFrame(values, index=index, dtype="float64")


__all__ = ["history_entry", "history_from_config"]
