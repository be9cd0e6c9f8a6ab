"""Perturbation arguments found by the seventh round of probes: the staged protein stage honours ``sources``, a CRE
edit on a model without ATAC says so first, and ``iter_perturbations`` checks its arguments before reading data."""

from __future__ import annotations

import numpy as np
import pytest

PROTEIN_ONLY = {"regenerate": ["protein"], "n_steps": 2, "progress_bar": False}


def _paired_cells(mdata, n: int = 30) -> np.ndarray:
    return np.flatnonzero((mdata.obsmap["rna"] > 0) & (mdata.obsmap["adt"] > 0))[:n]


def test_staged_protein_stage_reads_only_the_edited_genes_without_an_rna_source(trained_pbmc):
    mdata, model = trained_pbmc
    cells = _paired_cells(mdata)
    genes = ["MS4A1", "CD79A", "NKG7"]
    with_rna = model.predict_perturbation(mdata, genes=genes, sources=["rna"], indices=cells, **PROTEIN_ONLY)
    alone = model.predict_perturbation(mdata, genes=genes, sources=[], indices=cells, **PROTEIN_ONLY)
    # the protein stage reads the cell's RNA with the edits, or the edited genes alone: two different predictions
    assert not np.allclose(with_rna.control["protein"][cells], alone.control["protein"][cells])
    assert alone.params["sources"] == [] and with_rna.params["sources"] == ["rna"]
    # the embeddings are the final states, so an edit moves them with either source (it was exactly 0 with [])
    for res in (with_rna, alone):
        shift = res.embedding_perturbed[cells] - res.embedding_control[cells]
        assert np.isfinite(shift).all() and np.abs(shift).max() > 0


def test_staged_rna_and_protein_flow_is_unchanged_by_the_protein_stage_view(trained_pbmc):
    """With RNA regenerated, the protein stage reads the RNA stage's output whatever the sources: the same result
    for sources=[] as for the default (the model has no other source)."""
    mdata, model = trained_pbmc
    cells = _paired_cells(mdata, 20)
    kw = {"genes": ["MS4A1"], "indices": cells, "n_steps": 2, "progress_bar": False}
    a = model.predict_perturbation(mdata, sources=[], **kw)
    b = model.predict_perturbation(mdata, **kw)
    np.testing.assert_array_equal(a.perturbed["protein"][cells], b.perturbed["protein"][cells])


def test_cre_edit_on_a_model_without_atac_names_the_missing_modality(trained_pbmc):
    mdata, model = trained_pbmc
    with pytest.raises(ValueError, match="has no 'atac' modality, so CREs cannot be perturbed"):
        model.predict_perturbation(mdata, cres=["chr1:100-200"], progress_bar=False)


def test_iter_perturbations_checks_its_arguments_before_the_first_gene(trained_pbmc):
    mdata, model = trained_pbmc
    with pytest.raises(ValueError, match="`genes` is empty"):
        next(model.iter_perturbations(mdata, genes=[]))
    with pytest.raises(TypeError, match="takes no `cres`"):
        model.iter_perturbations(mdata, genes=["MS4A1"], cres=["chr1:100-200"]).__next__()
    with pytest.raises(TypeError, match="Did you mean 'n_steps'"):
        next(model.iter_perturbations(mdata, genes=["MS4A1"], n_step=1))
    with pytest.raises(ValueError, match="overexpress_quantile"):
        next(model.iter_perturbations(mdata, genes=["MS4A1"], mode="overexpress", overexpress_quantile=0))
    gene, res = next(model.iter_perturbations(mdata, genes=["MS4A1"], n_steps=1, progress_bar=False))
    assert gene == "MS4A1" and res.params["n_steps"] == 1
