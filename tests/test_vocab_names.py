"""Gene and antibody names that used to land on the wrong gene: case fallback, Greek letters, short aliases, species."""

from __future__ import annotations

import hashlib
import warnings

import anndata as ad
import numpy as np
import pytest

import holocell as hc
from holocell import HoloCellWarning
from holocell.vocab import map_genes, map_proteins_to_genes, rename_to_anchors

SMALL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}

#: Digests of the mappings computed by the code before these fixes (exact names must map exactly as before).
PBMC_RNA_DIGEST = "61a2289ecf0fe1f7"
PBMC_ADT_DIGEST = "ecfa3c99666d2991"
SIM_RNA_DIGEST = "41532e9af7cedf5c"


def _digest(rows) -> str:
    return hashlib.sha256("\n".join("\t".join(map(str, r)) for r in rows).encode()).hexdigest()[:16]


def _anchor_rows(adata) -> list[tuple[str, str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)  # human names read as human: no species warning
        renamed = rename_to_anchors(adata, species="human")
    return list(zip(renamed.var["original_name"], renamed.var_names, renamed.var["how"], strict=True))


def test_exact_names_of_bundled_data_map_as_before(pbmc):
    assert _digest(_anchor_rows(pbmc["rna"])) == PBMC_RNA_DIGEST
    adt = map_proteins_to_genes(list(pbmc["adt"].var_names))
    assert _digest(adt.itertuples(index=False)) == PBMC_ADT_DIGEST
    sim = hc.data.simulate_multiome()[0]
    assert _digest(_anchor_rows(sim["rna"])) == SIM_RNA_DIGEST


def test_case_fallback_takes_the_canonical_symbol():
    lower = ["fli1", "flii", "hk1", "klk1", "alb", "glud1", "cps1", "elk3", "emb", "Fli1", "cd4"]
    rep = map_genes(lower)
    assert rep["anchor"].tolist() == [n.upper() for n in lower]
    assert set(rep["how"]) == {"alias"}


@pytest.mark.parametrize("name", ["p27", "p45", "p68", "SWS", "DELTA"])
def test_ambiguous_names_are_not_guessed_by_case(name):
    row = map_genes([name]).iloc[0]
    assert row["how"] == "unmapped" and row["anchor"] == name and row["symbol"] is None


def test_exact_symbol_keeps_the_anchor_over_an_alias():
    rep = map_genes(["P53", "TP53"])
    assert rep["anchor"].tolist() == ["TP53", "TP53"] and rep["how"].tolist() == ["alias", "symbol"]
    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    adata.var_names = ["P53", "TP53"]
    out = rename_to_anchors(adata, species="human")
    assert out.var_names.tolist() == ["P53", "TP53"]
    assert out.var["how"].tolist() == ["duplicate", "symbol"]


def test_lower_case_model_puts_genes_on_their_own_anchor(pbmc):
    rna = pbmc["rna"]
    names = [n.lower() for n in rna.var_names]
    names[:4] = ["fli1", "flii", "hk1", "klk1"]
    rna.var_names = names
    pbmc.update()
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(pbmc, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    report = model.feature_space.maps["rna"].report
    assert report.loc[["fli1", "flii", "hk1", "klk1"], "anchor"].tolist() == ["FLI1", "FLII", "HK1", "KLK1"]
    assert (report["how"] != "duplicate").all()


@pytest.mark.parametrize(
    ("greek", "ascii_name"),
    [
        ("TCR α/β", "TCRab"),
        ("TCR γ/δ", "TCRgd"),
        ("TCRγδ", "TCRgd"),
        ("TCR Vδ2", "TCR_Vd2"),
        ("TCR Vγ9", "TCR_Vg9"),
    ],
)
def test_greek_antibody_names_read_as_ascii(greek, ascii_name):
    got, want = map_proteins_to_genes([greek, ascii_name])["gene"].tolist()
    assert got == want and got is not None
    assert hc.vocab.clean_antibody_name("TCR α/β") == "tcr.a.b"


def test_greek_letters_keep_different_chains_apart():
    genes = map_proteins_to_genes(["TCR α/β", "TCR γ/δ"])["gene"].tolist()
    assert genes[0] != genes[1] and not any(g.startswith("TRBV") for g in genes)


@pytest.mark.parametrize("name", ["Gr-1", "NK-1.1", "NK1.1", "anti-mouse NK-1.1"])
def test_short_alias_keys_are_not_guessed(name):
    row = map_proteins_to_genes([name]).iloc[0]
    assert row["gene"] is None and row["how"] == "unmapped"


def test_mouse_panels_take_no_human_alias():
    human = map_proteins_to_genes(["Sca-1", "CD4"])
    mouse = map_proteins_to_genes(["Sca-1", "CD4"], species="mouse")
    assert human["how"].tolist()[0] == "alias"  # a human panel keeps the alias table
    assert mouse["gene"].tolist() == [None, "CD4"]
    with pytest.raises(ValueError, match="species must be"):
        map_proteins_to_genes(["CD4"], species="rat")


def test_rename_to_anchors_warns_when_names_look_like_the_other_species(pbmc):
    rna = pbmc["rna"]
    with pytest.warns(HoloCellWarning, match="species='human'"):
        renamed = rename_to_anchors(rna)  # the default is species="mouse"
    assert renamed.n_vars == rna.n_vars  # still renamed as asked: the default is not changed silently
    mouse_like = rna[:, :50].copy()
    mouse_like.var_names = [n[:1] + n[1:].lower() for n in mouse_like.var_names]
    with pytest.warns(HoloCellWarning, match="species='mouse'"):
        rename_to_anchors(mouse_like, species="human")
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)
        rename_to_anchors(mouse_like, species="mouse")
        rename_to_anchors(rna, species="human")
