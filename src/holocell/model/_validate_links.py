"""Set-up checks of how the modalities meet: peaks -> genes (genome, species, gene names) and cells across modalities.

Each catches a mistake that would otherwise train without a word: peaks linked to the other species' genes, RNA
names the peaks' genes never meet, or one set of cells read as two because its names differ per modality.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pandas as pd
from mudata import MuData

from .._warnings import HoloCellWarning, user_stacklevel
from ..vocab import (
    link_peaks_to_genes,
    load_gene_table,
    map_genes,
    map_proteins_to_genes,
    parse_peaks,
    read_tss_file,
)
from ..vocab._feature_space import gene_column_anchors
from ..vocab._tables import GENOME_SPECIES, normalise_genome

#: A cell name's last part after "-" (10x's "-1" GEM well, anndata's ``index_unique="-"``), which can differ per
#: modality for the same cells.
_BARCODE = r"([ACGT]{16})"
"""A 10x cell barcode inside a cell name."""
_SUFFIX = r"-[^-]+$"
#: Share of a modality's cell names that must meet another modality's, once that suffix is removed, to warn.
PAIRING_SHARE = 0.5
#: True while a saved model is set up again on its data: its saved feature space holds the peak -> gene links.
_SAVED_LINKS: ContextVar[bool] = ContextVar("holocell_saved_links", default=False)


@contextmanager
def saved_feature_space() -> Iterator[None]:
    """Set-up inside the block belongs to a model rebuilt from a checkpoint, whose feature space has the links."""
    token = _SAVED_LINKS.set(True)
    try:
        yield
    finally:
        _SAVED_LINKS.reset(token)


def check_genome_species(genome, species: str) -> None:
    """``ValueError`` when ``genome`` is a shipped build of the other species than ``species``."""
    if not isinstance(genome, str):
        return
    try:
        build = normalise_genome(genome)
    except (ValueError, FileNotFoundError):  # a TSS file, or a name the model build refuses with its own message
        return
    if GENOME_SPECIES[build] != species:
        matching = [b for b, s in GENOME_SPECIES.items() if s == species]
        raise ValueError(
            f"genome={genome!r} is a {GENOME_SPECIES[build]} build, but species={species!r}: peaks would link to "
            f"the other species' genes. Pass the build the peaks were called on (for {species}: "
            f"{' or '.join(repr(b) for b in matching)}), or species={GENOME_SPECIES[build]!r} if the cells are "
            f"{GENOME_SPECIES[build]}."
        )


def _name_keys(names: pd.Index) -> list[tuple[str, pd.Series]]:
    """Ways two names of one cell may differ: the last ``-`` part (``-1`` vs ``-2``), or everything but the 16-base
    10x barcode (a sample prefix, R's ``.1``, another case); a key is ``NaN`` where a name has none, and where it
    cannot name one cell: shared by several cells of the modality (``D1`` of ``D1-rna0``, ``D1-rna1``) or a bare
    number (``0`` of ``0-rna``: anndata's ``index_unique`` on integer ids, which unrelated samples share)."""
    text = pd.Series(names)
    keys = [("once the last '-' part is cut", text.str.replace(_SUFFIX, "", regex=True)),
            ("by their 16-base barcode", text.str.upper().str.extract(_BARCODE, expand=False))]
    return [(how, _naming_one_cell(key)) for how, key in keys]


def _naming_one_cell(key: pd.Series) -> pd.Series:
    """``key`` with ``NaN`` where it is shared by several names or is a bare number."""
    shared = key.map(key.value_counts()).gt(1)
    number = key.str.fullmatch(r"\d+", na=False).astype(bool)
    return key.where(~shared & ~number)


def check_pairing(mdata: MuData, modalities: Mapping[str, str]) -> None:
    """Warn when no cell is in two modalities, but most names of one meet the other's once a "-" suffix is cut, or
    by their 10x barcode."""
    names = {m: mdata.mod[name].obs_names.astype(str) for m, name in modalities.items()}
    if len(names) < 2 or any(len(a.intersection(b)) for a, b in itertools.combinations(names.values(), 2)):
        return
    keys = {m: _name_keys(n) for m, n in names.items()}  # once per modality, not per pair
    for (m1, a), (m2, b) in itertools.combinations(names.items(), 2):
        for (how, key_a), (_, key_b) in zip(keys[m1], keys[m2], strict=True):
            meets = (key_b.isin(set(key_a.dropna())) & key_b.notna()).to_numpy()
            if meets.sum() >= PAIRING_SHARE * min(len(a), len(b)):
                example = b[meets][0]
                twin = a[(key_a == key_b.to_numpy()[meets][0]).to_numpy()][0]
                warnings.warn(
                    f"No cell is measured in two modalities: modalities {modalities[m1]!r} and {modalities[m2]!r} "
                    f"share no cell name. Yet {int(meets.sum())} of the {len(b)} cell names of {modalities[m2]!r} "
                    f"meet one of {modalities[m1]!r} {how} (e.g. {example!r} and {twin!r}). If they are the same "
                    "cells, give each cell one name in every modality before building the MuData (e.g. "
                    f"mdata.mod[{modalities[m2]!r}].obs_names = <the names in {modalities[m1]!r}>, then "
                    "mdata.update()), and set it up again: holocell pairs a cell's modalities by name. Unpaired cells "
                    "need no change.",
                    HoloCellWarning,
                    stacklevel=3,
                )
                return


def check_vocabulary(
    mdata: MuData, modalities: Mapping[str, str], genome, species: str = "human", gene_id_type: str = "auto"
) -> None:
    """Features that cannot meet the gene vocabulary: an error where linking would silently fail."""
    if "atac" in modalities:
        check_genome_species(genome, species)
        try:
            table = gene_table_for(mdata, modalities, genome)
        except (ValueError, OSError):
            # e.g. a DataFrame genome saved as text in a checkpoint: the saved feature space is used
            # then, and a bad genome for a new model fails when its feature space is built
            table = None
        if table is None and genome is None and not _SAVED_LINKS.get():
            raise ValueError(
                "Linking ATAC peaks to genes needs TSS positions: pass the genome build the peaks were called on, "
                "e.g. genome='hg38' (shipped: hg38, hg19, mm10), or a path to a BED/GTF of TSSs (in Python also a "
                "DataFrame with columns gene_name, chrom, tss, strand); or give the RNA modality's .var the "
                "columns 'chrom', 'tss', 'strand'."
            )
        if table is not None:
            _check_peaks_meet_genes(mdata, modalities, table, genome, species, gene_id_type)
    if "protein" in modalities:
        var = mdata.mod[modalities["protein"]].var
        if "gene" in var.columns:
            _check_gene_column(var["gene"], mdata, modalities, species)
        else:
            mapped = map_proteins_to_genes(var.index.astype(str).tolist())
            if mapped["gene"].isna().all():
                warnings.warn(
                    f"No antibody of modality {modalities['protein']!r} (e.g. {var.index[:3].tolist()}) "
                    "maps to a gene; each keeps an anchor of its own, so protein shares no token with RNA "
                    "or ATAC. Add a 'gene' column (gene symbols) to its .var to link them; the mapping is "
                    "in model.feature_space.maps['protein'].report.",
                    HoloCellWarning,
                    stacklevel=3,
                )


def _check_peaks_meet_genes(
    mdata: MuData, modalities: Mapping[str, str], table: pd.DataFrame, genome, species: str, gene_id_type: str
) -> None:
    peaks = parse_peaks(mdata.mod[modalities["atac"]].var)
    peak_chroms = set(peaks["chrom"].astype(str))
    gene_chroms = set(table["chrom"].dropna().astype(str))
    if not peak_chroms & gene_chroms:
        raise ValueError(
            f"No ATAC peak lies on a chromosome of the gene TSS table (peaks: "
            f"{sorted(peak_chroms)[:3]}, genes: {sorted(gene_chroms)[:3]}), so no peak could link "
            "to a gene. Pass the genome build the peaks were called on (genome='hg38', 'hg19', "
            "'mm10' or a BED/GTF path), or rename chromosomes to match (e.g. '1' -> 'chr1')."
        )
    _warn_other_build(peaks, table, genome)
    if "rna" not in modalities or genome is None:
        return
    genes = table["gene_name"].astype(str)
    rna_names = mdata.mod[modalities["rna"]].var_names.astype(str)
    if rna_names.isin(genes).any():
        return
    # names of another kind (Ensembl ids): peaks and genes meet when their anchors do
    rna_anchors = set(map_genes(list(rna_names), species, gene_id_type)["anchor"])
    if rna_anchors & set(map_genes(list(genes.unique()), species, "symbol")["anchor"]):
        return
    raise ValueError(
        f"No RNA feature name of modality {modalities['rna']!r} (e.g. {rna_names[:3].tolist()}) is, or maps to, a "
        f"gene of the TSS table (e.g. {sorted(set(genes))[:3]}), so peaks would link to anchors the RNA does not "
        "share. Use gene symbols or Ensembl ids as RNA var_names (muon's read_10x_h5 keeps the ids in "
        "var['gene_ids']), or pass a TSS table named like them."
    )


BUILD_CHECK_PEAKS = 20_000
"""Peaks (a fixed sample) the build check links against each shipped build of the species."""


def _warn_other_build(peaks: pd.DataFrame, table: pd.DataFrame, genome) -> None:
    """:class:`HoloCellWarning` when the peaks lie near TSSs of another shipped build of the species far more often
    than near those of ``genome`` (the check of docs/data.md: the right build has more than twice the share of
    peaks within 1 kb of a TSS); peaks linked through the wrong build link to the wrong genes."""
    try:
        given = normalise_genome(genome) if isinstance(genome, str) else None
    except (ValueError, FileNotFoundError):
        return
    if given is None or len(peaks) < 50:
        return
    sample = peaks.sample(min(len(peaks), BUILD_CHECK_PEAKS), random_state=0) if len(peaks) > BUILD_CHECK_PEAKS else peaks

    def near(genes: pd.DataFrame) -> float:
        return float((link_peaks_to_genes(sample, genes)["distance"].abs() <= 1_000).mean())

    share = near(table)
    for other in (b for b in GENOME_SPECIES if b != given and GENOME_SPECIES[b] == GENOME_SPECIES[given]):
        other_share = near(load_gene_table(other))
        if other_share >= 0.05 and other_share > 2 * share:
            warnings.warn(
                f"The ATAC peaks look called on {other}, not genome={genome!r}: {other_share:.1%} of them lie within "
                f"1 kb of a TSS of {other}, {share:.1%} of {given} (the right build has more than twice the share). "
                f"Peaks are linked to genes through the build given; pass genome={other!r} if the peaks are {other} "
                "coordinates.",
                HoloCellWarning,
                stacklevel=user_stacklevel(),
            )
            return


def _check_gene_column(column: pd.Series, mdata: MuData, modalities: Mapping[str, str], species: str) -> None:
    """Warn when no value of the protein ``.var["gene"]`` column is a known gene or an RNA feature."""
    rna = set(mdata.mod[modalities["rna"]].var_names.astype(str)) if "rna" in modalities else set()
    if any(g is not None for g in gene_column_anchors(column.tolist(), dict.fromkeys(rna, ""), species)):
        return
    warnings.warn(
        f"No value of the 'gene' column of modality {modalities['protein']!r} (e.g. {column.astype(str).tolist()[:3]}) "
        f"is a known {species} gene (symbol or Ensembl id) or an RNA feature name, so every antibody keeps an "
        "anchor of its own and protein shares no token with RNA or ATAC. Put the antibodies' gene symbols or "
        "Ensembl ids in .var['gene']; the mapping is in model.feature_space.maps['protein'].report.",
        HoloCellWarning,
        stacklevel=4,
    )


def gene_table_for(mdata: MuData, modalities: Mapping[str, str], genome) -> pd.DataFrame | None:
    """TSS table for peak -> gene links: the ``genome`` argument, else RNA ``var`` coordinates."""
    if isinstance(genome, pd.DataFrame):
        return genome
    if isinstance(genome, str | Path) and str(genome).strip() and Path(str(genome)).expanduser().is_file():
        return read_tss_file(genome)  # "~/genes.bed" as model/_build.py reads it
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
