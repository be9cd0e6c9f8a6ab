"""``tl.perturb``'s outputs say what was asked: a CRE edit that cannot reach what is regenerated is refused (every
shift was 0), a rerun with the same key leaves no modality of the earlier run, the summary keeps ``n_top``
responders however many genes were edited, a peak named in another form gets the data's form in the error, and
the shift modalities' features can get names of their own (``var_suffix``), so ``mdata.var_names`` stay unique."""

from __future__ import annotations

import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

SIM_GENES = r"RNA features of modality .* map to a known"


@pytest.fixture(scope="module")
def sim():
    mdata, truth = hc.data.simulate_multiome(200, n_genes=40, n_tfs=5, n_proteins=8, seed=0)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"},
                                 batch_key="batch")  # fmt: skip
    model = hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4, n_latent=8)
    model.train(max_epochs=1, enable_progress_bar=False)
    return mdata, model, truth


def test_a_cre_edit_that_cannot_reach_the_regenerated_modality_is_refused(sim):
    mdata, model, _ = sim
    cre = str(mdata["atac"].var_names[0])
    for kwargs in ({"regenerate": ["protein"]}, {"regenerate": ["rna"], "sources": []},
                   {"regenerate": ["rna"], "sources": ["protein"]}):  # fmt: skip
        with pytest.raises(ValueError, match="reaches .* only through the chromatin.*every shift would be 0"):
            hc.tl.perturb(mdata, model, cres=[cre], progress_bar=False, copy=True, **kwargs)
    out = hc.tl.perturb(mdata, model, cres=[cre], flow="joint", regenerate=["protein"], progress_bar=False, copy=True)
    assert "holocell_perturb_protein" in out.mod  # the joint flow reads the chromatin for protein directly


def test_a_rerun_with_the_same_key_leaves_nothing_of_the_earlier_run(sim):
    mdata, model, _ = sim
    work = mdata.copy()
    gene = str(work["rna"].var_names[0])
    hc.tl.perturb(work, model, genes=[gene], progress_bar=False)
    assert {"holocell_perturb_rna", "holocell_perturb_protein"} <= set(work.mod)
    hc.tl.perturb(work, model, genes=[gene], regenerate=["rna"], progress_bar=False)
    assert "holocell_perturb_protein" not in work.mod and "holocell_perturb_rna" in work.mod
    assert work.uns["holocell_perturb"]["params"]["regenerate"] == ["rna"]
    work[:5].copy()  # still a valid MuData


def test_the_summary_keeps_n_top_responders_besides_the_edited_genes(sim):
    mdata, model, _ = sim
    work = mdata.copy()
    genes = [str(g) for g in work["rna"].var_names[:12]]
    hc.tl.perturb(work, model, genes=genes, n_top=5, progress_bar=False)
    summary = work.uns["holocell_perturb"]["summary"]
    rna = summary[summary["modality"] == "rna"]
    assert (~rna["edited"]).sum() == 5 and set(rna.loc[rna["edited"], "feature"]) == set(genes)
    assert rna["abs_mean_shift"].is_monotonic_decreasing and list(rna["rank"]) == list(range(1, len(rna) + 1))
    hc.pl.perturbation(work, n_top=5, show=False)  # refused before: "No 'rna' responders"


def test_a_peak_named_in_another_form_gets_the_datas_form(sim):
    mdata, model, _ = sim
    name = str(mdata["atac"].var_names[0])
    other = name.replace(":", "-")
    with pytest.raises(KeyError, match=rf"Peaks are named as in the data, e.g. '{name}'"):
        hc.tl.perturb(mdata, model, cres=[other], progress_bar=False, copy=True)


def test_shift_features_have_names_of_their_own(sim):
    mdata, model, _ = sim
    work = mdata.copy()
    genes = [str(g) for g in work["rna"].var_names[:2]]
    default = hc.tl.perturb(mdata, model, genes=genes[:1], n_steps=1, progress_bar=False, copy=True)
    assert default["holocell_perturb_rna"].var_names.equals(mdata["rna"].var_names)  # [:, gene] reads the shift
    hc.tl.perturb(work, model, genes=genes[:1], n_steps=1, var_suffix="auto", progress_bar=False)
    hc.tl.perturb(work, model, genes=genes[1:], n_steps=1, key_added="ko2", var_suffix="auto", progress_bar=False)
    shift = work["holocell_perturb_rna"]
    assert shift.var_names.tolist() == [f"{g}_holocell_perturb" for g in work["rna"].var_names]
    assert shift.var["measured_name"].tolist() == work["rna"].var_names.tolist()
    assert work["ko2_protein"].var_names[0] == f"{work['protein'].var_names[0]}_ko2"
    assert work.var_names.is_unique  # measured features and two runs side by side
    assert work.uns["ko2"]["params"]["var_suffix"] == "_ko2"
    summary = work.uns["holocell_perturb"]["summary"]
    assert set(summary["feature"]) <= set(work["rna"].var_names) | set(work["protein"].var_names)  # measured names
    hc.pl.perturbation(work, kind="heatmap", groupby="cell_type", n_top=3, show=False)  # finds the summary's features
    own = hc.tl.perturb(mdata, model, genes=genes[:1], n_steps=1, var_suffix=".ko", progress_bar=False, copy=True)
    assert own["holocell_perturb_rna"].var_names[0] == f"{genes[0]}.ko"
    for bad in ("", 5):
        with pytest.raises(ValueError, match="var_suffix must be a non-empty string, 'auto' or None"):
            hc.tl.perturb(mdata, model, genes=genes[:1], var_suffix=bad, progress_bar=False, copy=True)
