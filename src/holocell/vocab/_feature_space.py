"""The gene-anchored feature space: which anchor (token) each feature of each modality belongs to.

Gene anchors are the sequence positions of holocell. RNA genes sit on the anchor of their
canonical human gene (symbol, alias or Ensembl id of a human gene; a mouse gene's one-to-one human
ortholog, see :func:`~holocell.vocab.map_genes`), antibodies on the anchor of their coding gene, ATAC peaks on the anchor of the gene whose
TSS is nearest (or on a chromosome-bin anchor when no gene is within range). Every feature gets an
anchor: unmapped antibodies keep an anchor of their own, so nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._constants import MODALITIES, PROTEIN_ANCHOR_PREFIX
from ._genes import map_genes, mark_duplicates
from ._peaks import link_peaks_to_genes, parse_peaks


@dataclass
class ModalityMap:
    """How the features of one modality land on anchors.

    Attributes
    ----------
    features
        Feature names in the modality's ``var`` order.
    anchor
        Anchor index of each feature, shape ``(n_features,)``.
    bucket
        ATAC only: distance bucket of each peak relative to its anchor's TSS.
    report
        One row per feature: the anchor name and how the link was made.
    """

    features: np.ndarray
    anchor: np.ndarray
    bucket: np.ndarray | None = None
    report: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_dict(self) -> dict:
        """JSON-serialisable form (used in checkpoints)."""
        out = {"features": self.features.tolist(), "anchor": self.anchor.tolist()}
        if self.bucket is not None:
            out["bucket"] = self.bucket.tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> ModalityMap:
        """Inverse of :meth:`to_dict`."""
        bucket = np.asarray(d["bucket"], dtype=np.int64) if "bucket" in d else None
        return cls(np.asarray(d["features"], dtype=object), np.asarray(d["anchor"], dtype=np.int64), bucket)


@dataclass
class FeatureSpace:
    """Anchors and the per-modality maps onto them.

    Attributes
    ----------
    anchors
        Anchor names; position ``i`` is anchor index ``i``.
    maps
        Modality name (one of ``"rna"``, ``"atac"``, ``"protein"``) -> :class:`ModalityMap`.
    """

    anchors: list[str]
    maps: dict[str, ModalityMap]

    @property
    def n_anchors(self) -> int:
        """Number of anchors (tokens per cell before the prefix)."""
        return len(self.anchors)

    def slot_exists(self, modality: str) -> np.ndarray:
        """Boolean ``(n_anchors,)``: anchors that carry a value slot for ``modality``."""
        exists = np.zeros(self.n_anchors, dtype=bool)
        if modality in self.maps:
            exists[self.maps[modality].anchor] = True
        return exists

    def to_dict(self) -> dict:
        """JSON-serialisable form (used in checkpoints)."""
        return {"anchors": list(self.anchors), "maps": {k: v.to_dict() for k, v in self.maps.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSpace:
        """Inverse of :meth:`to_dict` (the reports are not saved: see :meth:`attach_reports`)."""
        return cls(list(d["anchors"]), {k: ModalityMap.from_dict(v) for k, v in d["maps"].items()})

    def attach_reports(self, rebuilt: FeatureSpace | None) -> None:
        """Give each map the report of the same modality in ``rebuilt``, checked against this space's anchors.

        A row whose anchor in ``rebuilt`` is not this space's anchor keeps this space's anchor and says
        ``how="checkpoint"`` (its gene columns are cleared); a modality that ``rebuilt`` lacks, or with
        other features, gets a report of this space's anchors with ``how="checkpoint"`` on every row.
        """
        for m, fmap in self.maps.items():
            names = [self.anchors[i] for i in fmap.anchor]
            other = None if rebuilt is None else rebuilt.maps.get(m)
            if other is None or not np.array_equal(other.features, fmap.features) or other.report.empty:
                fmap.report = pd.DataFrame({"anchor": names, "how": CHECKPOINT}, index=pd.Index(fmap.features))
                continue
            report = other.report.copy()
            differs = report["anchor"].astype(str).to_numpy() != np.asarray(names, dtype=str)
            if differs.any():
                report = report.astype({c: object for c in ("anchor", "how", *_GENE_COLUMNS) if c in report})
                report.loc[differs, "anchor"] = np.asarray(names, dtype=object)[differs]
                report.loc[differs, "how"] = CHECKPOINT
                for c in _GENE_COLUMNS:
                    if c in report:
                        report.loc[differs, c] = None
            fmap.report = report


#: ``how`` of a report row whose link could not be rebuilt as saved: the anchor is the checkpoint's.
CHECKPOINT = "checkpoint"
_GENE_COLUMNS = ("symbol", "ensembl_id", "gene")


_PREFERRED: ContextVar[FeatureSpace | None] = ContextVar("holocell_preferred_anchors", default=None)


@contextmanager
def preferred_anchors(space: FeatureSpace | None) -> Iterator[None]:
    """Within the block, :func:`build_feature_space` called without ``preferred`` prefers ``space``'s anchors.

    Transfer builds the query's feature space inside it (the model's constructor builds it), so that every query
    feature the reference has keeps the reference's anchor, whatever the order of the query's ``.var``.
    """
    token = _PREFERRED.set(space)
    try:
        yield
    finally:
        _PREFERRED.reset(token)


def _preferred_map(space: FeatureSpace | None, modality: str) -> dict[str, str]:
    """Feature name -> anchor name of ``modality`` in ``space`` (empty without it)."""
    if space is None or modality not in space.maps:
        return {}
    fmap = space.maps[modality]
    return {str(f): space.anchors[int(i)] for f, i in zip(fmap.features, fmap.anchor, strict=True)}


def _prefer_rna(report: pd.DataFrame, preferred: Mapping[str, str]) -> pd.DataFrame:
    """Duplicates marked in a :func:`map_genes` report (``mark_duplicates``), the names in ``preferred`` fixed on
    their anchors first.

    A fixed name whose anchor is not its mapped one says ``how="duplicate"`` when it sits on an anchor of its own
    name (as ``mark_duplicates`` names them), ``how="checkpoint"`` otherwise.
    """
    names = report.index.astype(str)
    fixed = np.asarray(names.isin(list(preferred)), dtype=bool)
    if not fixed.any():
        return mark_duplicates(report)
    anchor, how = report["anchor"].to_numpy(dtype=object).copy(), report["how"].to_numpy(dtype=object).copy()
    wanted = np.array([preferred[n] for n in names[fixed]], dtype=object)
    moved = anchor[fixed] != wanted
    own = np.array([a in (n, f"rna:{n}") for n, a in zip(names[fixed], wanted, strict=True)], dtype=bool)
    how[np.flatnonzero(fixed)[moved]] = np.where(own[moved], "duplicate", CHECKPOINT)
    anchor[fixed] = wanted
    rest = mark_duplicates(report.iloc[np.flatnonzero(~fixed)], taken=set(wanted))
    anchor[~fixed], how[~fixed] = rest["anchor"].to_numpy(dtype=object), rest["how"].to_numpy(dtype=object)
    report = report.copy()
    report["anchor"], report["how"] = anchor, how
    return report


class _AnchorIndex:
    """Grows the anchor list while keeping names unique."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def get(self, name: str) -> int:
        if name not in self.index:
            self.index[name] = len(self.names)
            self.names.append(name)
        return self.index[name]


def build_feature_space(
    var: Mapping[str, pd.DataFrame],
    *,
    map_proteins: Callable[[list[str]], pd.DataFrame] | None = None,
    gene_table: pd.DataFrame | None = None,
    species: str = "human",
    gene_id_type: str = "auto",
    preferred: FeatureSpace | None = None,
) -> FeatureSpace:
    """Build the anchors of a dataset from its modalities' ``var`` tables.

    Parameters
    ----------
    var
        Modality name -> that modality's ``.var`` (index = feature names).
    map_proteins
        Callable taking antibody names and returning a DataFrame with columns ``protein``,
        ``gene`` (None when unmapped) and ``how``. A ``gene`` column in the protein ``var``
        takes precedence over it.
    gene_table
        Gene TSS table (``gene_name``, ``chrom``, ``tss``, ``strand``) for peak -> gene links.
        Required when ``"atac"`` is present.
    species
        ``"human"`` or ``"mouse"``: the species of the RNA names (and of the gene table's names).
    gene_id_type
        RNA var names are ``"symbol"``, ``"ensembl"`` or ``"auto"`` (detected per name).
    preferred
        A reference's feature space (default: the one of an enclosing :func:`preferred_anchors` block, else none):
        every RNA gene and antibody it has (same name, same modality) takes its anchor there; only the others are
        assigned as without it. Without it, of two antibodies against one gene the first in ``.var`` order takes
        the gene's anchor (of two genes on one anchor, the exact match or else the first).

    Returns
    -------
    The :class:`FeatureSpace`.
    """
    unknown = set(var) - set(MODALITIES)
    if unknown:
        raise ValueError(f"Unknown modalities {sorted(unknown)}; holocell knows {list(MODALITIES)}.")
    preferred = preferred if preferred is not None else _PREFERRED.get()
    anchors = _AnchorIndex()
    maps: dict[str, ModalityMap] = {}
    gene_anchor: dict[str, str] = {}  # RNA name -> anchor, so peaks and antibodies of a gene join it

    def canonical(names: list[str], sp: str) -> list[str]:
        new = [n for n in dict.fromkeys(names) if n not in gene_anchor]
        if new:
            gene_anchor.update(zip(new, map_genes(new, sp, "symbol")["anchor"], strict=True))
        return [gene_anchor[n] for n in names]

    if "rna" in var:
        genes = var["rna"].index.astype(str)
        report = _prefer_rna(map_genes(list(genes), species, gene_id_type), _preferred_map(preferred, "rna"))
        gene_anchor.update(zip(genes, report["anchor"], strict=True))
        idx = np.array([anchors.get(a) for a in report["anchor"]], dtype=np.int64)
        maps["rna"] = ModalityMap(np.asarray(genes, dtype=object), idx, report=report)
    if "protein" in var:
        maps["protein"] = _map_protein(
            var["protein"], anchors, map_proteins, canonical, species, gene_anchor, _preferred_map(preferred, "protein")
        )
    if "atac" in var:
        if gene_table is None:
            raise ValueError(
                "Linking ATAC peaks to genes needs TSS positions: pass genome='hg38', 'hg19', 'mm10', "
                "a path to a BED/GTF of TSSs, or a DataFrame with columns gene_name, chrom, tss, strand "
                "to setup_mudata (or give the RNA modality's .var the columns 'chrom', 'tss', 'strand')."
            )
        peaks = parse_peaks(var["atac"])
        links = link_peaks_to_genes(peaks, gene_table)
        linked = links["distance"].notna().to_numpy()
        names = links["anchor"].astype(str).tolist()
        mapped = canonical([n for n, ok in zip(names, linked, strict=True) if ok], species)
        it = iter(mapped)
        links["anchor"] = [next(it) if ok else n for n, ok in zip(names, linked, strict=True)]
        idx = np.array([anchors.get(a) for a in links["anchor"]], dtype=np.int64)
        links["how"] = np.where(links["distance"].isna(), "chromosome_bin", "tss_window")
        maps["atac"] = ModalityMap(
            np.asarray(var["atac"].index.astype(str), dtype=object),
            idx,
            bucket=links["bucket"].to_numpy(dtype=np.int64, copy=True),
            report=links,
        )
    return FeatureSpace(anchors.names, maps)


def _map_protein(
    var: pd.DataFrame,
    anchors: _AnchorIndex,
    map_proteins: Callable[[list[str]], pd.DataFrame] | None,
    canonical: Callable[[list[str], str], list[str]],
    species: str,
    rna_anchor: Mapping[str, str],
    preferred: Mapping[str, str],
) -> ModalityMap:
    names = var.index.astype(str).tolist()
    if "gene" in var.columns:  # already anchors: RNA names join their anchor, others are read as genes of species
        genes = gene_column_anchors(var["gene"].tolist(), rna_anchor, species)
        how = ["var_column" if g is not None else "unmapped" for g in genes]
    elif map_proteins is not None:
        mapped = map_proteins(names)
        genes = [g if isinstance(g, str) and g else None for g in mapped["gene"]]
        how = mapped["how"].astype(str).tolist()
        known = [g for g in genes if g is not None]
        canon = dict(zip(known, canonical(known, "human"), strict=True))  # the alias table names human genes
        genes = [canon[g] if g is not None else None for g in genes]
    else:
        genes, how = [None] * len(names), ["unmapped"] * len(names)
    taken = {preferred[n] for n in names if n in preferred}
    anchor_names = []
    for name, gene in zip(names, genes, strict=True):
        # One antibody per gene anchor; a second antibody against the same gene, or one with no
        # gene, keeps an identity of its own. An antibody of the preferred (reference's) map keeps its anchor there.
        if name in preferred:
            anchor_names.append(preferred[name])
        elif gene is not None and gene not in taken:
            taken.add(gene)
            anchor_names.append(gene)
        else:
            anchor_names.append(PROTEIN_ANCHOR_PREFIX + name)
    idx = np.array([anchors.get(a) for a in anchor_names], dtype=np.int64)
    report = pd.DataFrame({"gene": genes, "anchor": anchor_names, "how": how}, index=names)
    return ModalityMap(np.asarray(names, dtype=object), idx, report=report)


def gene_column_anchors(values: Sequence, rna_anchor: Mapping[str, str], species: str) -> list[str | None]:
    """Anchors of the values of a protein ``.var["gene"]`` column; None for a value that is no known gene.

    A value that is an RNA feature name joins that feature's anchor; any other value is read with
    :func:`~holocell.vocab.map_genes` (``gene_id_type="auto"``: symbols, or Ensembl ids with or without
    version).
    """
    text = [v if isinstance(v, str) and v.strip() else None for v in values]
    new = [v for v in dict.fromkeys(text) if v is not None and v not in rna_anchor]
    rep = map_genes(new, species, "auto") if new else None
    found = {} if rep is None else {
        n: a for n, a, h in zip(new, rep["anchor"], rep["how"], strict=True) if h != "unmapped"
    }
    return [None if v is None else rna_anchor.get(v, found.get(v)) for v in text]
