"""Tests for peak parsing, peak -> gene links and the gene-anchored feature space."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from holocell.data import simulate_multiome
from holocell.vocab import FeatureSpace, build_feature_space, link_peaks_to_genes, parse_peaks
from holocell.vocab._constants import DISTANCE_EDGES_BP, UNLINKED_BUCKET
from holocell.vocab._peaks import distance_bucket

N_EDGES = len(DISTANCE_EDGES_BP)


# ----------------------------------------------------------------------------- parse_peaks
@pytest.mark.parametrize("name", ["chr1:100-600", "chr1-100-600", "chr1_100_600"])
def test_parse_peak_names(name):
    out = parse_peaks(pd.DataFrame(index=[name, "chrX:5-10"]))
    assert list(out.columns) == ["chrom", "start", "end"]
    assert out.loc[name].tolist() == ["chr1", 100, 600]
    assert out.loc["chrX:5-10"].tolist() == ["chrX", 5, 10]
    assert out["start"].dtype == np.int64 and out["end"].dtype == np.int64
    assert list(out.index) == [name, "chrX:5-10"]


def test_parse_peaks_prefers_var_columns():
    var = pd.DataFrame(
        {"chrom": ["chr2", "chr3"], "start": ["10", 20.0], "end": [50, 80]}, index=["peakA", "peakB"]
    )
    out = parse_peaks(var)
    assert out["chrom"].tolist() == ["chr2", "chr3"]
    assert out["start"].tolist() == [10, 20]
    assert out["end"].tolist() == [50, 80]
    assert list(out.index) == ["peakA", "peakB"]


@pytest.mark.parametrize(
    "var",
    [
        pd.DataFrame({"chrom": ["chr1"], "start": [-50], "end": [600]}, index=["p"]),  # was a 100 Mb peak
        pd.DataFrame({"chrom": ["chr1"], "start": [100.5], "end": [600]}, index=["p"]),  # was truncated
        pd.DataFrame(index=["chr1:99999999999999999999-99999999999999999999999"]),  # was pandas' OverflowError
    ],
)
def test_parse_peaks_refuses_coordinates_that_are_no_positions(var):
    with pytest.raises(ValueError, match="not a whole number of base pairs from 0 to 2\\*\\*40"):
        parse_peaks(var)


def test_parse_peaks_bad_names():
    var = pd.DataFrame(index=["chr1:100-600", "CD3E", "chr1:abc-5", "chr2:1-2"])
    with pytest.raises(ValueError, match="2 ATAC features") as err:
        parse_peaks(var)
    msg = str(err.value)
    assert "'CD3E'" in msg and "chr1:100-600" in msg and "'chrom', 'start', 'end'" in msg


# ----------------------------------------------------------------------------- distance_bucket
def test_distance_bucket_up_and_downstream():
    d = np.array([-500, 500, -3_000, 3_000, 0, -99_000, 99_000, 100_000, -100_000])
    b = distance_bucket(d)
    assert b.dtype == np.int64
    assert b[0] == 0 and b[1] == N_EDGES  # within 1 kb
    assert b[2] == 1 and b[3] == N_EDGES + 1  # 1-5 kb
    assert b[4] == N_EDGES  # TSS itself counts as downstream
    assert b[5] == N_EDGES - 1 and b[6] == 2 * N_EDGES - 1
    assert b[7] == 2 * N_EDGES - 1 and b[8] == N_EDGES - 1
    assert (b < UNLINKED_BUCKET).all()
    # monotone in |distance| on each side
    mags = np.array([0, 999, 1_000, 4_999, 5_000, 20_000, 50_000, 100_000])
    assert np.all(np.diff(distance_bucket(mags)) >= 0)
    assert np.all(np.diff(distance_bucket(-mags - 1)) >= 0)


GENES = pd.DataFrame(
    {
        "gene_name": ["PLUS", "MINUS", "FAR"],
        "chrom": ["chr1", "chr1", "chr2"],
        "tss": [1_000_000, 5_000_000, 50_000],
        "strand": ["+", "-", "+"],
    }
)


def _peaks(mids, chrom="chr1"):
    mids = np.asarray(mids)
    return pd.DataFrame(
        {"chrom": chrom, "start": mids - 250, "end": mids + 250}, index=[f"p{i}" for i in range(len(mids))]
    )


def test_strand_aware_direction():
    peaks = _peaks([1_000_000 - 3_000, 1_000_000 + 3_000, 5_000_000 + 3_000, 5_000_000 - 3_000])
    links = link_peaks_to_genes(peaks, GENES)
    assert links["anchor"].tolist() == ["PLUS", "PLUS", "MINUS", "MINUS"]
    # + strand: smaller coordinate = upstream; - strand: larger coordinate = upstream
    assert links["distance"].tolist() == [-3_000, 3_000, -3_000, 3_000]
    upstream = links["bucket"] < N_EDGES
    assert upstream.tolist() == [True, False, True, False]
    assert links["bucket"].tolist() == [1, N_EDGES + 1, 1, N_EDGES + 1]


def test_nearest_tss_within_window_else_chromosome_bin():
    g = pd.concat(
        [GENES, pd.DataFrame({"gene_name": ["NEAR"], "chrom": ["chr1"], "tss": [1_050_000], "strand": ["+"]})]
    )
    peaks = pd.concat(
        [
            _peaks([1_040_000, 1_020_000, 1_099_000 + 50_000, 2_500_000, 5_099_000]),
            _peaks([12_345_678], chrom="chr7").rename(index={"p0": "other"}),
        ]
    )
    links = link_peaks_to_genes(peaks, g)
    assert links.loc["p0", "anchor"] == "NEAR"  # 10 kb from NEAR, 40 kb from PLUS
    assert links.loc["p1", "anchor"] == "PLUS"  # 20 kb from PLUS, 30 kb from NEAR
    assert links.loc["p2", "anchor"] == "NEAR"  # 99 kb from NEAR
    assert links.loc["p3", "anchor"] == "chr1:bin2"  # nothing within 100 kb
    assert links.loc["p4", "anchor"] == "MINUS"
    assert links.loc["p4", "distance"] == -99_000
    assert links.loc["other", "anchor"] == "chr7:bin12"  # chromosome without genes
    unlinked = links["anchor"].isin(["chr1:bin2", "chr7:bin12"])
    assert links.loc[unlinked, "distance"].isna().all()
    assert (links.loc[unlinked, "bucket"] == UNLINKED_BUCKET).all()
    assert links.loc[~unlinked, "distance"].notna().all()


def test_window_boundary_and_genes_without_coordinates():
    g = pd.concat(
        [GENES, pd.DataFrame({"gene_name": ["NOPOS"], "chrom": [None], "tss": [np.nan], "strand": ["+"]})]
    )
    peaks = _peaks([1_100_000, 1_100_001])
    links = link_peaks_to_genes(peaks, g)
    assert links["anchor"].tolist() == ["PLUS", "chr1:bin1"]
    assert links.loc["p0", "bucket"] == 2 * N_EDGES - 1
    assert link_peaks_to_genes(peaks, g, window=10)["anchor"].tolist() == ["chr1:bin1", "chr1:bin1"]


# ----------------------------------------------------------------------------- build_feature_space
@pytest.fixture(scope="module")
def sim():
    mdata, truth = simulate_multiome(
        30, n_genes=40, n_tfs=5, n_proteins=8, n_distal_peaks=6, peaks_per_gene=2, seed=3
    )
    return mdata, truth


def _gene_table(rna_var):
    return pd.DataFrame(
        {
            "gene_name": rna_var.index.astype(str),
            "chrom": rna_var["chrom"].astype(str),
            "tss": rna_var["tss"],
            "strand": rna_var["strand"],
        }
    )


@pytest.fixture(scope="module")
def space(sim):
    mdata, _ = sim
    var = {m: mdata.mod[m].var for m in ("rna", "atac", "protein")}
    return build_feature_space(var, gene_table=_gene_table(mdata.mod["rna"].var))


def test_every_feature_has_an_anchor(sim, space):
    mdata, _ = sim
    assert len(set(space.anchors)) == space.n_anchors
    for m in ("rna", "atac", "protein"):
        mm = space.maps[m]
        assert len(mm.features) == mdata.mod[m].n_vars
        assert list(mm.features) == list(mdata.mod[m].var_names)
        assert mm.anchor.dtype == np.int64
        assert mm.anchor.min() >= 0 and mm.anchor.max() < space.n_anchors
        assert space.slot_exists(m).sum() == len(np.unique(mm.anchor))
    # RNA genes occupy distinct anchors named after themselves
    rna = space.maps["rna"]
    assert [space.anchors[i] for i in rna.anchor] == list(mdata.mod["rna"].var_names)
    assert len(np.unique(rna.anchor)) == len(rna.anchor)


def test_protein_shares_anchor_with_its_gene(sim, space):
    mdata, truth = sim
    rna_anchor = dict(zip(space.maps["rna"].features, space.maps["rna"].anchor, strict=True))
    prot = space.maps["protein"]
    gene_of = mdata.mod["protein"].var["gene"]
    for name, a in zip(prot.features, prot.anchor, strict=True):
        assert a == rna_anchor[gene_of[name]]
        assert space.anchors[a] == gene_of[name]
    assert (prot.report["how"] == "var_column").all()
    pairs = set(zip(truth.gene_protein["gene"], truth.gene_protein["protein"], strict=True))
    assert pairs == {(g, p) for p, g in gene_of.items()}


def test_atac_peaks_link_to_their_true_gene(sim, space):
    mdata, truth = sim
    atac = space.maps["atac"]
    assert atac.bucket is not None and atac.bucket.shape == atac.anchor.shape
    anchor_name = pd.Series([space.anchors[i] for i in atac.anchor], index=atac.features)
    cre = truth.cre_gene.set_index("peak")["gene"]
    assert (anchor_name[cre.index] == cre).all()
    assert (atac.bucket[np.isin(atac.features, cre.index)] < UNLINKED_BUCKET).all()
    distal = ~anchor_name.index.isin(cre.index)
    assert distal.sum() == 6
    assert anchor_name[distal].str.contains(r"^chr\d+:bin\d+$").all()
    assert (atac.report.loc[distal, "how"] == "chromosome_bin").all()
    assert set(atac.report["how"]) == {"chromosome_bin", "tss_window"}


def test_second_antibody_for_a_gene_gets_its_own_anchor():
    rna = pd.DataFrame(index=["CD4", "CD8A"])
    prot = pd.DataFrame(
        {"gene": ["CD4", "CD4", None, "CD8A", "NOTINRNA"]}, index=["cd4a", "cd4b", "iso", "cd8", "x"]
    )
    space = build_feature_space({"rna": rna, "protein": prot})
    names = [space.anchors[i] for i in space.maps["protein"].anchor]
    assert names == ["CD4", "protein:cd4b", "protein:iso", "CD8A", "protein:x"]  # "NOTINRNA" is no gene
    assert space.maps["protein"].anchor[0] == space.maps["rna"].anchor[0]
    assert space.maps["protein"].report["how"].tolist() == [
        "var_column",
        "var_column",
        "unmapped",
        "var_column",
        "unmapped",
    ]


def test_protein_mapping_callable_and_no_mapping():
    rna = pd.DataFrame(index=["CD4"])
    prot = pd.DataFrame(index=["anti-CD4", "junk"])

    def mapper(names):
        return pd.DataFrame({"protein": names, "gene": ["CD4", None], "how": ["alias", "unmapped"]})

    space = build_feature_space({"rna": rna, "protein": prot}, map_proteins=mapper)
    assert [space.anchors[i] for i in space.maps["protein"].anchor] == ["CD4", "protein:junk"]
    bare = build_feature_space({"protein": prot})
    assert bare.anchors == ["protein:anti-CD4", "protein:junk"]


def test_build_feature_space_errors():
    with pytest.raises(ValueError, match="Unknown modalities"):
        build_feature_space({"adt": pd.DataFrame(index=["a"])})
    with pytest.raises(ValueError, match="TSS"):
        build_feature_space({"atac": pd.DataFrame(index=["chr1:1-10"])})


def test_to_dict_round_trip(space):
    d = json.loads(json.dumps(space.to_dict()))
    back = FeatureSpace.from_dict(d)
    assert back.anchors == space.anchors
    assert set(back.maps) == set(space.maps)
    for m, mm in space.maps.items():
        assert list(back.maps[m].features) == list(mm.features)
        np.testing.assert_array_equal(back.maps[m].anchor, mm.anchor)
        if mm.bucket is None:
            assert back.maps[m].bucket is None
        else:
            np.testing.assert_array_equal(back.maps[m].bucket, mm.bucket)
        np.testing.assert_array_equal(back.slot_exists(m), space.slot_exists(m))
    assert back.to_dict() == space.to_dict()
