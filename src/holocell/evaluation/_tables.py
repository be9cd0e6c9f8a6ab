"""Plain-text result tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

__all__ = ["format_table"]


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | Integral):
        return str(value)
    if isinstance(value, Real):
        v = float(value)
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(value).replace("|", "\\|")


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render ``rows`` as a GitHub-flavoured markdown table.

    Parameters
    ----------
    rows
        One mapping per table row; missing keys render as empty cells.
    columns
        Column names, in display order (also the header).

    Returns
    -------
    str
        Markdown table; floats are shown with 3 decimals, ``NaN`` as ``nan``.
    """
    if not columns:
        raise ValueError("columns must be non-empty")
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
