"""Names fixed once: modality order, species codes and peak-position buckets."""

from __future__ import annotations

from typing import Final, Literal

#: Modalities holocell knows, in the order used for every per-modality tensor.
MODALITIES: Final[tuple[str, str, str]] = ("rna", "atac", "protein")
Modality = Literal["rna", "atac", "protein"]

#: Species codes, the index of the species token.
SPECIES: Final[tuple[str, str]] = ("human", "mouse")

#: Half-window of peak -> gene linking, in base pairs (peak midpoint to TSS).
LINK_WINDOW_BP: Final[int] = 100_000

#: Upper edges (bp) of the distance buckets used for peaks linked to a gene. Each bucket exists
#: upstream and downstream of the TSS, so a linked peak falls in one of ``2 * len(...)`` buckets.
DISTANCE_EDGES_BP: Final[tuple[int, ...]] = (1_000, 5_000, 20_000, 50_000, LINK_WINDOW_BP + 1)

#: Bucket index given to peaks with no gene in range (they sit on chromosome-bin anchors).
UNLINKED_BUCKET: Final[int] = 2 * len(DISTANCE_EDGES_BP)
N_BUCKETS: Final[int] = UNLINKED_BUCKET + 1

#: Size of the chromosome bins that own peaks with no gene in range.
CHROM_BIN_BP: Final[int] = 1_000_000

#: Prefix of anchors that belong to an antibody with no gene of its own.
PROTEIN_ANCHOR_PREFIX: Final[str] = "protein:"

#: Prefix of anchors of mouse genes with no one-to-one human ortholog.
MOUSE_ANCHOR_PREFIX: Final[str] = "mouse:"
