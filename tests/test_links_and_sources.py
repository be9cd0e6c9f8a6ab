"""Set-up and generation mistakes that passed without a word (probe of the eleventh session, on real files).

The genome of the other species, ATAC without TSS positions, Ensembl ids beside peaks, one set of cells named
differently per modality, generation with nothing to generate from, ``transform_batch`` on a one-batch model, and
the query set-up message.
"""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pytest

import holocell as hc
from holocell import HoloCellWarning

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


@pytest.fixture(scope="module")
def multiome(shared_data_module, require_real_data) -> md.MuData:
    """The 10x PBMC Multiome slice (human, hg38; 45 genes named by symbol, gene_ids in var), 200 cells."""
    require_real_data("pbmc_multiome_1k")
    mdata = hc.data.pbmc_multiome_1k(progressbar=False)
    keep = np.asarray(mdata["atac"].X.sum(axis=1)).ravel() > 0
    keep &= np.asarray(mdata["rna"].X.sum(axis=1)).ravel() > 0
    return mdata[np.flatnonzero(keep)[:200]].copy()


@pytest.fixture
def data(multiome) -> md.MuData:
    return multiome.copy()


def _setup(mdata, **kwargs):
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, **kwargs)


@pytest.mark.parametrize(("species", "genome", "build"), [("mouse", "hg38", "human"), ("human", "mm10", "mouse"), ("human", "GRCm38", "mouse")])
def test_a_genome_of_the_other_species_is_refused(data, species, genome, build):
    """mouse + hg38 linked 2,232 of 3,000 mouse SNARE-seq2 peaks to human genes, more than the right build did."""
    before = data.copy()
    with pytest.raises(ValueError, match=rf"is a {build} build, but species='{species}'"):
        _setup(data, species=species, genome=genome)
    assert "_scvi_uuid" not in data.uns and data.obs.columns.equals(before.obs.columns)


def test_atac_without_tss_positions_is_refused_at_setup(data):
    """The error came one call later, from HoloCell(mdata), after setup had registered the data."""
    with pytest.raises(ValueError, match="needs TSS positions.*genome='hg38' \\(shipped: hg38, hg19, mm10\\)"):
        _setup(data)
    assert "_scvi_uuid" not in data.uns
    _setup(data, genome="hg38")  # the fix the message names


def test_ensembl_ids_beside_peaks_link_to_the_same_anchors_as_symbols(data):
    """docs/own_data.md: Multiome genes may be symbols or Ensembl ids; with ATAC the ids were refused."""
    symbols = data.copy()
    _setup(symbols, genome="hg38")
    by_symbol = hc.HoloCell(symbols, **TINY).feature_space
    data["rna"].var_names = data["rna"].var["gene_ids"].astype(str).to_numpy()
    data.update()
    _setup(data, genome="hg38")
    by_id = hc.HoloCell(data, **TINY).feature_space
    rna_anchor = lambda space: [space.anchors[i] for i in space.maps["rna"].anchor]  # noqa: E731
    atac_anchor = lambda space: [space.anchors[i] for i in space.maps["atac"].anchor]  # noqa: E731
    assert rna_anchor(by_id) == rna_anchor(by_symbol)
    assert atac_anchor(by_id) == atac_anchor(by_symbol)
    shared = set(rna_anchor(by_id)) & set(atac_anchor(by_id))
    assert len(shared) >= 10  # peaks and genes meet on anchors, as with symbols


def test_names_that_meet_no_tss_gene_are_still_refused(data):
    data["rna"].var_names = [f"feature{i}" for i in range(data["rna"].n_vars)]
    data.update()
    with pytest.raises(ValueError, match="is, or maps to, a gene of the TSS table"):
        _setup(data, genome="hg38", allow_unmatched_genes=True)


def test_one_set_of_cells_named_per_modality_is_pointed_out(data):
    """RNA '...-1' and ATAC '...-2' of the same cells: 400 unpaired cells, and nothing said so."""
    data["rna"].obs_names = [n.rsplit("-", 1)[0] + "-1" for n in data["rna"].obs_names]
    data["atac"].obs_names = [n.rsplit("-", 1)[0] + "-2" for n in data["atac"].obs_names]
    joined = md.MuData({"rna": data["rna"], "atac": data["atac"]})
    with pytest.warns(HoloCellWarning, match=r"No cell is measured in two modalities.*200 of the 200 cell names"):
        _setup(joined, genome="hg38")


def test_unpaired_cells_with_their_own_names_are_not_warned_about(data):
    """Diagonal integration on purpose: other cells in each modality, and a mosaic with some paired cells."""
    rna, atac = data["rna"][:100].copy(), data["atac"][100:].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)
        _setup(md.MuData({"rna": rna, "atac": atac}), genome="hg38")
        _setup(data, genome="hg38")


def test_generating_the_only_modality_of_a_model_is_refused(multiome):
    """It returned, and wrote, a matrix that was NaN everywhere."""
    mdata = md.MuData({"atac": multiome["atac"].copy()})
    hc.HoloCell.setup_mudata(mdata, modalities={"atac": "atac"}, genome="hg38")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(ValueError, match="only the atac modality.*nothing to generate atac from"):
        model.generate(mdata, target="atac")
    with pytest.raises(ValueError, match="nothing to generate atac from"):
        hc.tl.generate(mdata, model, target="atac")
    assert list(mdata.mod) == ["atac"]


def test_transform_batch_on_a_model_of_one_batch_says_why(data):
    """The message listed the placeholder batch '0', which the user never named."""
    _setup(data, genome="hg38")  # no batch_key
    model = hc.HoloCell(data, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    with pytest.raises(ValueError, match="knows one batch only.*leave transform_batch out"):
        model.generate(data, target="atac", transform_batch="sample1")
    assert "atac_generated" not in data.mod


def test_cells_with_no_source_modality_at_all_are_warned_about(trained_pbmc):
    """A protein-only batch asked for protein: every row NaN, and no warning (all cells are measured in it)."""
    mdata, model = trained_pbmc
    p2 = mdata[(mdata.obs["batch"] == "p2_0").to_numpy()].copy()
    with pytest.warns(HoloCellWarning, match=r"None of the \d+ cells is measured in a source modality"):
        out = model.generate(p2, target="protein", key_added="gen")
    assert np.isnan(out.X).all()


def test_a_query_not_set_up_is_told_to_call_load_query_data_again(trained_pbmc):
    mdata, model = trained_pbmc
    query = md.MuData({"rna": mdata["rna"][:20].copy()})
    with pytest.raises(ValueError, match=r"then pass it again \(HoloCell.load_query_data\(mdata, reference\)"):
        hc.HoloCell.load_query_data(query, model)


def test_scvi_tools_batch_key_inside_modalities_is_explained(trained_pbmc):
    """scvi-tools' setup_mudata takes modalities={"rna_layer": "rna", "batch_key": "rna"}."""
    mdata, _ = trained_pbmc
    fresh = md.MuData({name: mdata[name].copy() for name in mdata.mod})
    with pytest.raises(ValueError, match=r"scvi-tools' way to name the modality whose \.obs holds the batch"):
        hc.HoloCell.setup_mudata(fresh, modalities={"rna_layer": "rna", "batch_key": "rna"}, batch_key="batch")
