"""Where the ``tl`` functions write, and the rule that keeps the user's data: a key is replaced only when
holocell wrote it.

Each function records its run in ``mdata.uns[key_added]`` (:data:`RECORDS`). Running it again with the
same ``key_added`` replaces its earlier results, as documented. A key that exists without that record
(a column, embedding, modality or ``.uns`` entry of the user, of scanpy, or holocell's set-up keys) is
never replaced: the call stops with a ``ValueError`` before anything is computed or written.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

import pandas as pd
from anndata import AnnData
from mudata import MuData

from ..data._stores import zarr_store
from ..model._args import check_key_added
from ..model._obs_copy import obs_copy_fix
from ..model._outputs import check_obsm_free

#: columns of ``tl.perturb``'s summary table, of ``tl.fate_shift``'s ranking and of ``tl.grn``'s edge table
SUMMARY_COLUMNS = ("modality", "feature", "mean_shift", "abs_mean_shift", "frac_up", "edited", "rank")
FATE_COLUMNS = ("gene", "score", "cosine", "distance_before", "distance_after", "rank")
GRN_COLUMNS = ("tf", "target", "similarity", "knockout_effect", "score", "rank")
#: the index name of ``tl.grn``'s edge table: the mark that tells it from another table with the same columns
#: (``DataFrame.attrs`` would be lighter, but is lost in an ``.h5mu`` file; the index name is kept)
GRN_MARK = "holocell_grn_edge"

#: function -> what its ``mdata.uns[key_added]`` holds (the keys of a dict, or the columns of the table)
RECORDS = {
    "embed": ("params",),
    "perturb": ("params", "summary"),
    "annotate": ("params", "classes"),
    "fate_shift": ("params", "ranking"),
    "grn": GRN_COLUMNS,
}
#: function -> the entries of its record's ``"params"`` that every run writes (other tools' records, scanpy's
#: included, have a ``"params"`` too), and the table its record holds with that table's columns
RECORD_PARAMS = {
    "embed": ("modality",),
    "perturb": ("mode", "n_steps"),
    "annotate": ("labels_key", "method"),
    "fate_shift": ("groupby", "source", "target", "mode"),
}
RECORD_TABLES = {"perturb": ("summary", SUMMARY_COLUMNS), "fate_shift": ("ranking", FATE_COLUMNS)}


#: ``tl`` functions the command line runs on ``.h5mu`` files, and its command for each
CLI_COMMANDS = {"embed": "embed", "generate": "generate", "perturb": "perturb", "grn": "grn"}


def check_mudata(mdata, function: str) -> None:
    """Refuse anything but a MuData: a ``tl`` function adds its results to the object it is given (``TypeError``).

    A file path used to be run in full and its results dropped (``tl.generate``), or to fail with a bare
    ``AttributeError`` after the checks (``tl.embed``, ``tl.perturb``, ``tl.annotate``).
    """
    if isinstance(mdata, MuData):
        return
    if isinstance(mdata, str | os.PathLike):
        cli = CLI_COMMANDS.get(function)
        terminal = f"; or run `holocell {cli} {os.fspath(mdata)} --out out.h5mu`, which reads and writes files" if cli else ""
        store = zarr_store(mdata)  # a zarr folder: read_h5mu would fail on it
        read = f"mdata = {store[1]} ({store[0]})" if store else "mdata = mudata.read_h5mu(path) (backed='r' keeps the matrices on disk)"
        raise TypeError(
            f"hc.tl.{function} adds its results to a MuData object, and got a file path, {os.fspath(mdata)!r} "
            f"(the file is never written). Read it first, {read}, and save the results with "
            f"mdata.write(new_path){terminal}."
        )
    if isinstance(mdata, AnnData):
        raise TypeError(
            f"hc.tl.{function} reads a MuData, and got an AnnData: wrap it, mdata = mudata.MuData({{'rna': adata}}) "
            "(the key is the modality name given to setup_mudata)."
        )
    raise TypeError(f"hc.tl.{function} reads a MuData, got {type(mdata).__name__}.")


def missing_column_message(mdata: MuData, key: str, argument: str) -> str:
    """Why ``key`` (the value of ``argument``) is not a column of ``mdata.obs``: a modality's own ``.obs`` holds it
    (e.g. after ``sc.tl.leiden(mdata["rna"])``), or it is a wrong name."""
    fix = obs_copy_fix(mdata, key, argument, partial_ok=True)
    if not fix:
        return f"mdata.obs has no column {key!r}; pass {argument}= one of {list(mdata.obs.columns)[:20]}."
    return f"mdata.obs has no column {key!r}. {fix}."


def written_by(value, function: str) -> bool:
    """Whether ``value`` (an ``mdata.uns`` entry) is the record of a ``holocell.tl.<function>`` run: ``grn``'s
    table has all its columns and its mark (:data:`GRN_MARK`); a dict record has the function's entries, the
    entries of ``"params"`` that every run writes (:data:`RECORD_PARAMS`) and its table's columns. Each survives
    an ``.h5mu`` write and read."""
    if function == "grn":
        return isinstance(value, pd.DataFrame) and value.index.name == GRN_MARK and set(GRN_COLUMNS) <= set(value)
    if not (isinstance(value, Mapping) and set(RECORDS[function]) <= set(value)):
        return False
    if not (isinstance(value["params"], Mapping) and set(RECORD_PARAMS[function]) <= set(value["params"])):
        return False
    entry, columns = RECORD_TABLES.get(function, (None, ()))
    return entry is None or (isinstance(value[entry], pd.DataFrame) and set(columns) <= set(value[entry].columns))


def unmarked_grn_hint(value, key_added: str) -> str:
    """For ``check_outputs``: a table with ``grn``'s columns but not its mark (e.g. written by a holocell before
    the mark, or renamed from another tool's edges) is not replaced; say how to replace it knowingly."""
    if not (isinstance(value, pd.DataFrame) and set(GRN_COLUMNS) <= set(value.columns)):
        return ""
    return (
        f" It has grn's columns but not grn's mark (the index name {GRN_MARK!r}), so it may be another tool's "
        f"edges; if it is an earlier grn table you no longer need, del mdata.uns[{key_added!r}]."
    )


def check_outputs(
    mdata: MuData,
    key_added: str,
    function: str,
    *,
    obs: Sequence[str] = (),
    obsm: Sequence[str] = (),
    mod: Sequence[str] = (),
) -> None:
    """Refuse to write where holocell would replace data it did not write.

    Parameters
    ----------
    mdata
        The MuData written to.
    key_added
        The function's ``key_added`` (its record goes to ``mdata.uns[key_added]``).
    function
        The ``holocell.tl`` function (a key of :data:`RECORDS`).
    obs, obsm, mod
        The other keys the function writes. A new modality name of ``mod`` must not be an ``mdata.obsm`` key of
        other data either (mudata writes each modality's mask of cells there), also on a rerun.
    """
    check_key_added(key_added)
    check_obsm_free(mdata, mod)  # an .obsm entry under a modality name is never the function's own output
    record = mdata.uns.get(key_added)
    if written_by(record, function):
        return  # an earlier run of the same function: replacing it is the documented behaviour
    taken = [f"mdata.uns[{key_added!r}]"] if key_added in mdata.uns else []
    taken += [f"mdata.obs[{k!r}]" for k in obs if k in mdata.obs.columns]
    taken += [f"mdata.obsm[{k!r}]" for k in obsm if k in mdata.obsm]
    taken += [f"mdata.mod[{k!r}]" for k in mod if k in mdata.mod]
    if taken:
        raise ValueError(
            f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''} and {'was' if len(taken) == 1 else 'were'} "
            f"not written by holocell.tl.{function} (mdata.uns[{key_added!r}] holds no record of it); holocell never "
            f"replaces data it did not write. Pass another key_added=, or delete {'it' if len(taken) == 1 else 'them'} "
            f"yourself if you mean to replace it.{unmarked_grn_hint(record, key_added) if function == 'grn' else ''}"
        )


def working_copy(mdata: MuData, copy: bool) -> MuData:
    """``mdata`` itself, or (``copy=True``) an in-memory copy; a backed MuData cannot be copied so (``ValueError``)."""
    if not copy:
        return mdata
    if getattr(mdata, "isbacked", False):
        raise ValueError(
            "copy=True copies the MuData in memory, but this one is backed (its matrices stay on disk). Read it "
            "into memory first (mudata.read_h5mu(path)), or call without copy=True: the results are then added to "
            "this object in memory, and the file on disk is not changed."
        )
    state = random.getstate()  # MuData.copy draws from Python's global random module (a temporary name)
    try:
        return mdata.copy()
    finally:
        random.setstate(state)


__all__ = ["FATE_COLUMNS", "GRN_COLUMNS", "GRN_MARK", "RECORDS", "RECORD_PARAMS", "RECORD_TABLES", "SUMMARY_COLUMNS", "check_key_added", "check_mudata", "check_outputs", "missing_column_message", "working_copy", "written_by"]
