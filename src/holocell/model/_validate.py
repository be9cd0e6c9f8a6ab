"""Checks on user input at setup, with messages that name the problem and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from mudata import MuData

from ..vocab import MODALITIES, SPECIES, load_gene_table, read_tss_file

_LAYER_SUFFIX = "_layer"
_BACKED_SAMPLE_ROWS = 10_000  # rows of a backed matrix read to check for counts


def normalise_modalities(modalities: Mapping[str, str] | None) -> dict[str, str]:
    """``{"rna": "rna", "protein": "adt"}``; scvi-style keys (``"rna_layer"``) are accepted too."""
    if not modalities:
        raise ValueError(
            "setup_mudata needs `modalities`, a dict from holocell modality to a key of mdata.mod, "
            "e.g. modalities={'rna': 'rna', 'protein': 'adt'} (any non-empty subset of 'rna', 'atac', 'protein')."
        )
    out = {}
    for key, name in modalities.items():
        m = key[: -len(_LAYER_SUFFIX)] if key.endswith(_LAYER_SUFFIX) else key
        if m not in MODALITIES:
            raise ValueError(f"Unknown modality {key!r} in `modalities`; use keys from {list(MODALITIES)}.")
        out[m] = name
    return out


def validate_setup(
    mdata: MuData,
    modalities: Mapping[str, str],
    layers: Mapping[str, str | None],
    batch_key: str | None,
    species: str,
) -> None:
    """Raise a clear error for input holocell cannot use; never modifies ``mdata``."""
    if not isinstance(mdata, MuData):
        raise TypeError(
            f"setup_mudata needs a MuData, got {type(mdata).__name__}. Wrap an AnnData with "
            "mudata.MuData({'rna': adata})."
        )
    if species not in SPECIES:
        raise ValueError(f"species must be one of {list(SPECIES)}, got {species!r}.")
    for m, name in modalities.items():
        if name not in mdata.mod:
            raise KeyError(
                f"Modality {name!r} (for {m!r}) is not in mdata.mod; available: {list(mdata.mod)}. "
                f"Fix the `modalities` argument, e.g. modalities={{{m!r}: {next(iter(mdata.mod))!r}}}."
            )
        adata = mdata.mod[name]
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ValueError(f"Modality {name!r} has shape {adata.shape}; it needs cells and features.")
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
            raise ValueError(
                f"Modality {name!r} has duplicated feature names (e.g. {dup}); make them unique with "
                f"mdata.mod[{name!r}].var_names_make_unique()."
            )
        layer = layers.get(m)
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"Layer {layer!r} not in mdata.mod[{name!r}].layers; available: {list(adata.layers)}."
            )
        _check_counts(adata.X if layer is None else adata.layers[layer], name, m)
    if batch_key is not None and batch_key not in mdata.obs:
        pulled = [c for c in mdata.obs.columns if c.endswith(f":{batch_key}")]
        hint = " Run mdata.pull_obs() to bring modality columns to the global obs." if pulled else ""
        raise KeyError(f"batch_key {batch_key!r} is not a column of the global mdata.obs.{hint}")
    if batch_key is not None and pd.isna(mdata.obs[batch_key]).any():
        raise ValueError(
            f"mdata.obs[{batch_key!r}] has missing values; every cell needs a batch "
            "(fill them, e.g. with 'unknown')."
        )


def _check_counts(x, name: str, m: str) -> None:
    if not (sp.issparse(x) or isinstance(x, np.ndarray)):  # backed (h5py / zarr): check the first rows only
        x = x[: min(x.shape[0], _BACKED_SAMPLE_ROWS)]
    values = x.data if sp.issparse(x) else np.asarray(x)
    sample = values.ravel()[:1_000_000]
    if not np.isfinite(sample).all():
        raise ValueError(f"Modality {name!r} contains NaN or Inf; holocell needs raw counts.")
    if (sample < 0).any():
        raise ValueError(
            f"Modality {name!r} has negative values: it looks normalised or scaled. holocell needs raw "
            f"counts; pass the layer that holds them ({m}_layer='counts')."
        )
    if not np.allclose(sample, np.round(sample)):
        raise ValueError(
            f"Modality {name!r} has non-integer values: it looks normalised. holocell needs raw counts; "
            f"pass the layer that holds them ({m}_layer='counts')."
        )


def gene_table_for(mdata: MuData, modalities: Mapping[str, str], genome) -> pd.DataFrame | None:
    """TSS table for peak -> gene links: the ``genome`` argument, else RNA ``var`` coordinates."""
    if isinstance(genome, pd.DataFrame):
        return genome
    if isinstance(genome, str | Path) and Path(str(genome)).exists():
        return read_tss_file(genome)
    if genome is not None:
        return load_gene_table(str(genome))
    if "rna" in modalities:
        var = mdata.mod[modalities["rna"]].var
        if {"chrom", "tss", "strand"}.issubset(var.columns):
            return pd.DataFrame(
                {
                    "gene_name": var.index.astype(str),
                    "chrom": var["chrom"].astype(str),
                    "tss": var["tss"],
                    "strand": var["strand"],
                }
            )
    return None
