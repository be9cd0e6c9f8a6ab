"""How to bring a column the model reads from the global ``mdata.obs`` (``batch_key``, ``species_key``) there, when
the user has it only in modalities' own ``.obs`` or as mudata's ``pull_obs()`` copies ``"<modality>:<key>"``.

``pull_obs()`` keeps that prefix (even on a MuData of one modality), so "run pull_obs()" never gives the column the
model asks for; in a mosaic each modality's copy also lacks the cells that modality did not measure. The fix given is
the one line that works: the modalities' columns joined, one value per cell.
"""

from __future__ import annotations

import pandas as pd
from mudata import MuData


def obs_copy_fix(mdata: MuData, key, argument: str | None = None, *, partial_ok: bool = False) -> str:
    """The line that copies ``key`` into the global ``mdata.obs`` (no final full stop), or ``""`` when no modality's
    ``.obs`` and no ``"<modality>:<key>"`` column of ``mdata.obs`` holds it.

    Parameters
    ----------
    mdata
        The MuData.
    key
        The column the model reads from ``mdata.obs``.
    argument
        The set-up argument that names the column (``"batch_key"``): a complete ``"<modality>:<key>"`` column in
        ``mdata.obs`` is offered as its value too. ``None`` at inference, where the model's name is fixed.
    """
    if not isinstance(key, str):
        return ""
    holders = [name for name, adata in mdata.mod.items() if key in adata.obs]
    pulled = [c for c in mdata.obs.columns if isinstance(c, str) and c.endswith(f":{key}")]
    if holders:
        columns = [mdata.mod[name].obs[key] for name in holders]
        texts = [f"mdata[{name!r}].obs[{key!r}]" for name in holders]
        where = (f"Modality {holders[0]!r} holds it in its own obs" if len(holders) == 1 else
                 f"Modalities {', '.join(map(repr, holders))} hold it in their own obs, each for its cells")  # fmt: skip
    elif pulled:
        columns, texts = [mdata.obs[c] for c in pulled], [f"mdata.obs[{c!r}]" for c in pulled]
        where = f"mdata.obs has mudata's {'copy' if len(pulled) == 1 else 'copies'} {', '.join(map(repr, pulled))}"
    else:
        return ""
    line = texts[0] + "".join(f".combine_first({t})" for t in texts[1:]) + (".reindex(mdata.obs_names)" * bool(holders))
    fix = f"{where}: copy it to the global obs, mdata.obs[{key!r}] = {line}"
    try:
        joined = columns[0]
        for column in columns[1:]:
            joined = joined.combine_first(column)
        n_missing = int(pd.isna(joined.reindex(mdata.obs_names)).sum())
    except ValueError:  # duplicated cell names: refused by set-up's own check
        n_missing = 0
    if n_missing and not partial_ok:
        fix += f" ({n_missing} cells are in no modality that has it and would be NaN: give them a value first)"
    offered = [c for c in pulled if partial_ok or not pd.isna(mdata.obs[c]).any()]
    if argument is not None and offered:
        fix += f", or pass {argument}={offered[0]!r}, mudata's copy of it in mdata.obs"
    elif argument is not None and partial_ok:
        fix += f", or run mdata.pull_obs() and pass {argument}={f'{holders[0]}:{key}'!r}, the name it gets there"
    return fix


__all__ = ["obs_copy_fix"]
