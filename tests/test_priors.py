"""Prior-knowledge matrices: shapes, alignment to anchors, and a model with priors on/off."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import holocell as hc
from holocell.priors import (
    PRIOR_INPUT_DIMS,
    PRIORS,
    coexpression_prior,
    grn_prior,
    load_grn_edges,
    load_priors,
    position_prior,
)

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
ANCHORS = ["CD4", "mouse:Gm1992", "KMT2A", "chr1:bin3", "SPI1", "CD8A"]


def test_priors_are_aligned_to_anchors():
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2.0, size=(50, 3)).astype(np.float32))
    mats = load_priors(ANCHORS, PRIORS, rna_counts=counts, rna_anchor=[0, 2, 5])
    assert list(mats) == list(PRIORS)
    for name, m in mats.items():
        assert m.values.shape == (len(ANCHORS), PRIOR_INPUT_DIMS[name] - 1) == (len(ANCHORS), len(m.columns))
        assert m.values.dtype == np.float32 and np.isfinite(m.values).all()
        assert not m.known[1] and not m.known[3]  # mouse-only and chromosome-bin anchors
        assert (m.values[~m.known] == 0).all()
        assert m.network_input().shape == (len(ANCHORS), PRIOR_INPUT_DIMS[name])
    for name in ("grn", "family", "position"):
        assert mats[name].known[[0, 2, 4, 5]].all(), name  # human genes known to the shipped tables
    assert mats["coexpression"].known.tolist() == [True, False, True, False, False, True]


def test_position_prior_encodes_the_chromosome():
    m = position_prior(["CD4", "CD8A", "CD8B", "GAPDH"])
    chrom = {c: i for i, c in enumerate(m.columns)}
    # CD4 and GAPDH sit on chr12, CD8A/CD8B on chr2 (the standardised one-hot is highest there)
    assert m.values[0, chrom["chr12"]] == m.values[3, chrom["chr12"]] > m.values[1, chrom["chr12"]]
    assert m.values[1, chrom["chr2"]] == m.values[2, chrom["chr2"]] > m.values[0, chrom["chr2"]]
    assert np.linalg.norm(m.values[1] - m.values[2]) < np.linalg.norm(m.values[1] - m.values[0])


def test_grn_prior_from_user_edges():
    edges = pd.DataFrame({"tf": ["A", "A", "B", "B", "C"], "target": ["X", "Y", "X", "Y", "Z"]})
    m = grn_prior(["A", "B", "C", "X", "Y", "Z", "unknown"], edges)
    assert m.known.tolist() == [True] * 6 + [False]
    np.testing.assert_allclose(m.values[0], m.values[1], atol=1e-5)  # same targets
    np.testing.assert_allclose(m.values[3], m.values[4], atol=1e-5)  # same regulators
    assert np.linalg.norm(m.values[0] - m.values[2]) > 1e-3
    with pytest.raises(ValueError, match="'tf' and 'target'"):
        grn_prior(["A"], pd.DataFrame({"source": ["A"], "target": ["B"]}))
    shipped = load_grn_edges()
    assert list(shipped.columns) == ["tf", "target"] and len(shipped) > 100_000


def test_coexpression_prior_groups_correlated_genes():
    rng = np.random.default_rng(0)
    base = rng.poisson(5.0, size=(200, 1))
    other = rng.poisson(5.0, size=(200, 1))
    counts = np.hstack([base, base, other, np.zeros((200, 1), dtype=int), rng.poisson(5.0, size=(200, 2))])
    m = coexpression_prior(8, counts, feature_anchor=[0, 1, 2, 3, 4, 5])
    assert m.known.tolist() == [True, True, True, False, True, True, False, False]
    np.testing.assert_allclose(m.values[0], m.values[1], atol=1e-4)


def test_unknown_prior_name_is_rejected(pbmc):
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    with pytest.raises(ValueError, match="Unknown prior.*grn"):
        hc.HoloCell(pbmc, priors=("grn", "go_terms"), **TINY)


@pytest.mark.parametrize("priors", [None, "all"])
def test_model_with_priors_trains_and_round_trips(pbmc, priors, tmp_path):
    cells = np.random.default_rng(0).choice(pbmc.n_obs, 160, replace=False)
    pbmc = pbmc[np.sort(cells)].copy()
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(pbmc, priors=priors, **TINY)
    net = model.module.network
    if priors is None:
        assert net.prior_names == [] and not hasattr(net, "prior_gate")
    else:
        assert net.prior_names == list(PRIORS)
        assert (net.prior_gate == 0).all()
        assert model.prior_report_.loc["grn", "n_known"] > 0
        before = net.anchor_embedding().detach().clone()
        torch.testing.assert_close(before, net.anchor.weight.detach())  # gates start closed
    model.train(max_epochs=2, batch_size=64, enable_progress_bar=False)
    z = model.get_latent_representation()
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["init_params"]["priors"] == (None if priors is None else "all")
    loaded = hc.HoloCell.load(tmp_path / "m", pbmc)
    assert loaded.priors_ == model.priors_
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[k], v.cpu())  # load: CPU
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-5)
    if priors is not None:
        assert (net.prior_gate != 0).any()  # the gates learn
        assert net.prior_grn.abs().sum() > 0


def test_own_grn_edges_are_checked_and_kept_by_transfer(pbmc, tmp_path):
    """grn_edges without the 'grn' prior were dropped silently, edges on no anchor gave an all-zero prior without a
    word, NaN names became a gene 'nan', and a transferred model read the shipped GRN instead of its reference's."""
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    genes = list(pbmc["rna"].var_names)
    edges = pd.DataFrame({"tf": genes[:10], "target": genes[10:20]})
    with pytest.raises(ValueError, match="priors=\\['grn', ...\\] too"):
        hc.HoloCell(pbmc, grn_edges=edges, **TINY)
    with pytest.raises(TypeError, match="GRN edges must be a DataFrame"):
        hc.HoloCell(pbmc, priors="grn", grn_edges=[("A", "B")], **TINY)
    with pytest.raises(ValueError, match="1 GRN edges have no tf or no target"):
        hc.HoloCell(pbmc, priors="grn", grn_edges=pd.DataFrame({"tf": [genes[0], None], "target": genes[1:3]}), **TINY)
    with pytest.warns(hc.HoloCellWarning, match="None of the grn_edges' genes is an anchor"):
        hc.HoloCell(pbmc, priors="grn", grn_edges=pd.DataFrame({"tf": ["zz1"], "target": ["zz2"]}), **TINY)
    reference = hc.HoloCell(pbmc, priors="grn", grn_edges=edges, **TINY)
    archive = reference.save_pretrained(tmp_path / "ref.zip")
    query = hc.data.pbmc_cite_mosaic()
    hc.HoloCell.setup_mudata(query, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    transferred = hc.HoloCell.load_pretrained(archive, query)
    own = reference.module.state_dict()["network.prior_grn"]
    assert torch.equal(transferred.module.state_dict()["network.prior_grn"], own)
    shipped = hc.HoloCell(query, priors="grn", **TINY).module.state_dict()["network.prior_grn"]
    assert not torch.equal(own, shipped)
