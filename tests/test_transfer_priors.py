"""Prior rows of a transferred model: anchors new to the reference get no row of a prior in the basis of the
reference's own data (co-expression, a GRN from its own ``grn_edges``), and shipped-table rows otherwise."""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
N_REF_GENES = 300


def _rna_mudata(batch: str, n_genes: int | None = None) -> md.MuData:
    """The bundled PBMC RNA of one batch (first ``n_genes`` genes), set up as an RNA-only MuData."""
    pbmc = hc.data.pbmc_cite_mosaic()
    rna = pbmc["rna"][pbmc["rna"].obs["batch"] == batch]
    rna = rna[:, :n_genes].copy() if n_genes is not None else rna.copy()
    mdata = md.MuData({"rna": rna})
    mdata.obs["batch"] = rna.obs["batch"].astype(str).to_numpy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="batch")
    return mdata


@pytest.fixture(scope="module")
def panels() -> tuple[md.MuData, md.MuData]:
    """A reference of 300 genes and a query of all 500 genes (200 new to the reference), other cells."""
    return _rna_mudata("p1_0", N_REF_GENES), _rna_mudata("p3_0")


def _reference(mdata: md.MuData, **kwargs) -> hc.HoloCell:
    model = hc.HoloCell(mdata, **TINY, **kwargs)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, seed=0)
    return model


def _prior(model: hc.HoloCell, name: str) -> np.ndarray:
    return getattr(model.module.network, f"prior_{name}").detach().cpu().numpy()


def _source(query: hc.HoloCell, reference: hc.HoloCell) -> np.ndarray:
    """Reference row of each query anchor, -1 for an anchor new to the reference."""
    index = {a: i for i, a in enumerate(reference.feature_space.anchors)}
    return np.array([index.get(a, -1) for a in query.feature_space.anchors])


def _check_shared_rows(query: hc.HoloCell, reference: hc.HoloCell, name: str, src: np.ndarray) -> None:
    shared = src >= 0
    np.testing.assert_array_equal(_prior(query, name)[shared], _prior(reference, name)[src[shared]])


def test_new_anchors_get_no_coexpression_row(panels):
    """New anchors read the query's own co-expression eigenvectors, another basis than the reference's rows that
    the transferred projection was trained on; gene family rows (a shipped table) stay as they were."""
    ref_data, query_data = panels
    reference = _reference(ref_data, priors=("coexpression", "family"))
    query = hc.HoloCell.load_query_data(query_data, reference)
    src = _source(query, reference)
    new = src < 0
    assert new.sum() >= 150 and (~new).sum() >= 250
    coexpression = _prior(query, "coexpression")
    assert (coexpression[new] == 0).all()  # values and the known flag (last column)
    assert coexpression[~new, -1].sum() > 0
    _check_shared_rows(query, reference, "coexpression", src)
    own = hc.HoloCell(query_data, priors=("coexpression", "family"), **TINY)  # what the query's data give
    assert (_prior(own, "coexpression")[new, -1] == 1).any()  # the rows that the transfer now leaves out
    np.testing.assert_array_equal(_prior(query, "family")[new], _prior(own, "family")[new])
    _check_shared_rows(query, reference, "family", src)
    report = query.prior_report_
    assert report.loc["coexpression", "n_new_unknown"] == new.sum()
    assert report.loc["coexpression", "n_known"] == coexpression[:, -1].sum()
    assert report.loc["family", "n_new_unknown"] == (new & (_prior(own, "family")[:, -1] == 0)).sum()


def test_new_anchors_get_no_row_of_the_references_own_grn(panels, tmp_path):
    """A reference trained with its own grn_edges: new anchors used to read the shipped Pathway Commons GRN."""
    ref_data, query_data = panels
    genes = list(ref_data["rna"].var_names)
    edges = pd.DataFrame({"tf": genes[:20] * 2, "target": genes[20:60]})
    reference = _reference(ref_data, priors="grn", grn_edges=edges)
    reference.save(tmp_path / "ref")
    query = hc.HoloCell.load_query_data(query_data, tmp_path / "ref")
    src = _source(query, reference)
    new = src < 0
    grn = _prior(query, "grn")
    assert (grn[new] == 0).all()
    _check_shared_rows(query, reference, "grn", src)
    assert grn[:, -1].sum() == _prior(reference, "grn")[:, -1].sum() > 0  # only the reference's own genes
    shipped = hc.HoloCell(query_data, priors="grn", **TINY)
    assert (_prior(shipped, "grn")[new, -1] == 1).sum() > 50  # what new anchors read before
    assert query.prior_report_.loc["grn", "n_new_unknown"] == new.sum()


def test_new_anchors_keep_rows_of_the_shipped_priors(panels, tmp_path):
    """A reference on the shipped GRN (and gene family, TSS position tables): new anchors get their shipped rows,
    in the same basis as the reference's; shared anchors keep the reference's rows."""
    ref_data, query_data = panels
    priors = ("grn", "family", "position")
    reference = _reference(ref_data, priors=priors)
    reference.save(tmp_path / "ref")
    query = hc.HoloCell.load_query_data(query_data, tmp_path / "ref")
    own = hc.HoloCell(query_data, priors=priors, **TINY)
    src = _source(query, reference)
    new = src < 0
    for name in priors:
        np.testing.assert_array_equal(_prior(query, name)[new], _prior(own, name)[new], err_msg=name)
        _check_shared_rows(query, reference, name, src)
        unknown = new & (_prior(own, name)[:, -1] == 0)
        assert query.prior_report_.loc[name, "n_new_unknown"] == unknown.sum() < new.sum(), name
