"""A transferred model's tie to its reference, as the ``transfer`` section of a checkpoint's ``config.json``.

A model made by :meth:`~holocell.HoloCell.load_query_data` or ``load_pretrained(name, mdata)`` knows which rows of
its parameters have a pretrained value (:class:`~holocell.model._transfer.TransferState`), whether
:meth:`~holocell.HoloCell.freeze` holds them, and its ``transfer_report_``. Since checkpoint format 6, ``save``
writes them::

    "transfer": {
        "new_rows": {"<parameter>": {"n_rows": 1200, "new": [3, 17, ...]}, ...},  # rows without a pretrained value
        "fresh": ["<parameter>", ...],                                          # parameters the reference lacked
        "freeze": {"except_new": true} | null,                                  # freeze() active, and how
        "report": {"rows": [...], "n_query": [...], "n_reference": [...], "n_shared": [...]} | null,
        "reference_modalities": {"protein": "adt"}                              # kept, the data lack them
    }

and ``load`` restores them and calls ``freeze()`` again, so that a loaded query model trains as the saved one did.
Files without the section (plain models, and every file before format 6) load as plain models. The section is
untrusted input: :func:`check_transfer` validates it (from :func:`~holocell.model._config_check.validate_config`)
and :func:`check_transfer_header` checks its rows against the tensor shapes of the safetensors header, before
anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._config_check import MAX_ANCHORS, Rule, _check_list, _fail, check_section
from ._transfer import BATCH_KEYS, KEEPABLE, TransferState

if TYPE_CHECKING:
    from ._holocell import HoloCell

TRANSFER = (
    Rule("new_rows", dict),
    Rule("fresh", list),
    Rule("freeze", dict, null=True),
    Rule("report", dict, null=True),
    Rule("reference_modalities", dict, required=False),
)
ROWS = (Rule("n_rows", int, 1, MAX_ANCHORS), Rule("new", list))
FREEZE = (Rule("except_new", bool),)
REPORT_COUNTS = ("n_query", "n_reference", "n_shared")
REPORT = (Rule("rows", list), *(Rule(c, list) for c in REPORT_COUNTS))


# ------------------------------------------------------------------------------------ writing
def transfer_entry(model: HoloCell) -> dict:
    """``{"transfer": ...}`` for a transferred model, or ``{}`` for a model with no pretrained reference."""
    info = model._transfer_state
    if info is None:
        return {}
    rows = {k: {"n_rows": len(m), "new": np.flatnonzero(m).tolist()} for k, m in info.new_rows.items()}
    section = {"new_rows": rows, "fresh": list(info.fresh), "freeze": _freeze_entry(model)}
    if kept := reference_modalities(model):
        section["reference_modalities"] = kept
    return {"transfer": section | {"report": _report_entry(model.transfer_report_)}}


def reference_modalities(model: HoloCell) -> dict[str, str]:
    """The modalities ``model`` kept from its reference that its data lack (``load_query_data``): name -> the
    reference's modality name, read in a MuData that has it."""
    registered = model.adata_manager.registry["setup_args"]["modalities"]
    return {m: name for m, name in model.modalities_.items() if m not in registered}


def _freeze_entry(model: HoloCell) -> dict | None:
    """``freeze()``'s arguments when it holds the model now, else ``None`` (never frozen, or after ``unfreeze()``).

    ``freeze()`` leaves some parameter untrainable; with ``except_new=False`` only batch rows stay trainable, so a
    trainable parameter of another kind means ``except_new=True`` (when there is none, both give the same freeze).
    """
    params = dict(model.module.named_parameters())
    if model._row_freeze is None and all(p.requires_grad for p in params.values()):
        return None
    return {"except_new": any(p.requires_grad for k, p in params.items() if k not in BATCH_KEYS)}


def _report_entry(report: pd.DataFrame | None) -> dict | None:
    if report is None:
        return None
    return {"rows": [str(r) for r in report.index]} | {c: [int(v) for v in report[c]] for c in REPORT_COUNTS}


# ------------------------------------------------------------------------------------ reading
def restore_transfer(model: HoloCell, config: dict) -> None:
    """Give a loaded ``model`` the transfer state, ``transfer_report_`` and freeze its config records.

    ``config`` passed :func:`check_transfer` and :func:`check_transfer_header`; call this once the weights are
    loaded (``freeze()`` holds the rows at their current values).
    """
    section = config.get("transfer")
    if section is None:
        return
    new_rows = {}
    for key, rows in section["new_rows"].items():
        new_rows[key] = np.zeros(rows["n_rows"], dtype=bool)
        new_rows[key][np.asarray(rows["new"], dtype=np.int64)] = True
    model._transfer_state = TransferState(new_rows=new_rows, fresh=list(section["fresh"]))
    registered = model.adata_manager.registry["setup_args"]["modalities"]  # kept ones get their names back
    model.modalities_.update({m: v for m, v in section.get("reference_modalities", {}).items() if m not in registered})
    model.transfer_report_ = _report_frame(section["report"])
    if section["freeze"] is not None:
        model.freeze(**section["freeze"])


def _report_frame(entry: dict | None) -> pd.DataFrame | None:
    """The ``transfer_report_`` DataFrame (as :func:`~holocell.model._transfer.overlap_report` builds it)."""
    if entry is None:
        return None
    rows = {r: tuple(entry[c][i] for c in REPORT_COUNTS) for i, r in enumerate(entry["rows"])}
    report = pd.DataFrame.from_dict(rows, orient="index", columns=list(REPORT_COUNTS))
    report["fraction_shared"] = report["n_shared"] / report["n_query"].clip(lower=1)
    return report


# ------------------------------------------------------------------------------------ checks
def check_transfer(section: Mapping, where: str) -> None:
    """Validate a config's ``transfer`` section (JSON only): keys, types, row indices, report counts.

    Parameters
    ----------
    section
        ``config["transfer"]``, which the top-level check found to be an object.
    where
        The file, for the messages (each names the offending key, ``transfer.<...>``).
    """
    check_section(section, TRANSFER, where, "transfer.")
    for name, rows in section["new_rows"].items():
        key = f"transfer.new_rows.{name}"
        if not isinstance(rows, dict):
            raise _fail(where, key, "must be an object")
        check_section(rows, ROWS, where, key + ".")
        _check_list(rows["new"], where, key + ".new", int, high=rows["n_rows"], unique=True)
    _check_list(section["fresh"], where, "transfer.fresh", str, unique=True)
    if section["freeze"] is not None:
        check_section(section["freeze"], FREEZE, where, "transfer.freeze.")
    if section["report"] is not None:
        _check_report(section["report"], where)
    kept = section.get("reference_modalities", {})
    if any(m not in KEEPABLE or not isinstance(v, str) or not v for m, v in kept.items()):
        raise _fail(where, "transfer.reference_modalities", f"must map some of {list(KEEPABLE)} to modality names")


def _check_report(report: Mapping, where: str) -> None:
    check_section(report, REPORT, where, "transfer.report.")
    n = len(report["rows"])
    _check_list(report["rows"], where, "transfer.report.rows", str, unique=True)
    for c in REPORT_COUNTS:
        key = f"transfer.report.{c}"
        if len(report[c]) != n:
            raise _fail(where, key, f"has {len(report[c])} entries for {n} rows")
        _check_list(report[c], where, key, int, high=MAX_ANCHORS + 1)
    bad = [r for r, q, s in zip(report["rows"], report["n_query"], report["n_shared"], strict=True) if s > q]
    if bad:
        raise _fail(where, "transfer.report.n_shared", f"exceeds n_query for {_names(bad)}")


def check_transfer_header(config: dict, header: Mapping[str, Sequence[int]], where: str) -> None:
    """Check the ``transfer`` section against the weights: each parameter it names is a tensor of the weights, and
    ``new_rows.<parameter>.n_rows`` is that tensor's number of rows.

    Parameters
    ----------
    config
        A config that passed :func:`~holocell.model._config_check.validate_config`.
    header
        Tensor name -> shape, from the safetensors header only.
    where
        The checkpoint, for the messages.
    """
    section = config.get("transfer")
    if section is None:
        return
    for name, rows in section["new_rows"].items():
        shape = header.get(name)
        key = f"transfer.new_rows.{name}"
        if shape is None or len(shape) == 0:
            raise _fail(where, key, "names no parameter with rows in the weights (model.safetensors)")
        if shape[0] != rows["n_rows"]:
            raise _fail(
                where, key + ".n_rows", f"is {rows['n_rows']}, the weights' tensor has {shape[0]} rows"
            )
    unknown = [name for name in section["fresh"] if name not in header]
    if unknown:
        raise _fail(
            where, "transfer.fresh", f"names {_names(unknown)}, not in the weights (model.safetensors)"
        )


def _names(values: list) -> str:
    return ", ".join(repr(v) for v in values[:3]) + (", ..." if len(values) > 3 else "")


__all__ = ["check_transfer", "check_transfer_header", "restore_transfer", "transfer_entry"]
