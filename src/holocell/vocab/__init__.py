"""Gene anchors: feature -> anchor maps, peak -> gene links, shipped gene and antibody tables."""

from ._constants import MODALITIES, N_BUCKETS, SPECIES
from ._feature_space import FeatureSpace, ModalityMap, build_feature_space
from ._genes import detect_gene_id_type, load_human_genes, load_orthologs, map_genes, rename_to_anchors
from ._peaks import link_peaks_to_genes, parse_peaks
from ._tables import clean_antibody_name, load_gene_table, map_proteins_to_genes, read_tss_file

__all__ = [
    "MODALITIES",
    "N_BUCKETS",
    "SPECIES",
    "FeatureSpace",
    "ModalityMap",
    "build_feature_space",
    "clean_antibody_name",
    "detect_gene_id_type",
    "link_peaks_to_genes",
    "load_gene_table",
    "load_human_genes",
    "load_orthologs",
    "map_genes",
    "map_proteins_to_genes",
    "parse_peaks",
    "read_tss_file",
    "rename_to_anchors",
]
