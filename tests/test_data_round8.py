"""Session 8 docs probe (probe_docs findings 1, 2, 3, 6, 8, 9, 10): merging, set-up messages, the registry.

- 1/2: ``hc.data.merge_datasets`` reads the command line's modality names (``adt`` is protein), warns about a
  modality it leaves out, and with ``modalities=`` gives the mosaic its docstring promises when one data set lacks one.
- 3: a ``batch_key`` held only by modalities' own ``.obs`` (or pulled as ``"rna:sample"``): the error gives the line
  that works, never "run mdata.pull_obs()" (which keeps the prefix, so the same error came back).
- 6: a converted data set's registry entry has no URL of one original file beside the converted file's sha256.
- 8: ``train(accelerator="gpu")`` on a machine without one: a ``ValueError`` naming the fix, before any data work.
- 9: the "changed after setup" error names the modality whose cells changed.
- 10: ``load_pretrained`` (and ``merge_datasets``) emit no mudata ``FutureWarning``.
"""

from __future__ import annotations

import re
import warnings

import mudata as md
import numpy as np
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
CITE = {"rna": "rna", "protein": "adt"}


def _batch(pbmc, batch: str) -> md.MuData:
    return pbmc[pbmc.obs["batch"] == batch].copy()


def _rna_only(pbmc, batch: str) -> md.MuData:
    out = md.MuData({"rna": _batch(pbmc, batch)["rna"].copy()})
    out.obs["batch"] = batch
    return out


def _mudata_future_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, FutureWarning) and "pull" in str(w.message)]


# ------------------------------------------------------------------------------------------ findings 1 and 2
def test_merge_datasets_reads_the_command_lines_modality_names(pbmc):
    a, b = _batch(pbmc, "p3_0"), _batch(pbmc, "p4_0")
    assert list(a.mod) == ["rna", "adt"]
    merged = hc.data.merge_datasets({"a": a, "b": b}, species="human")
    assert sorted(merged.mod) == ["protein", "rna"]  # adt used to be dropped without a word
    assert merged["protein"].n_obs == a["adt"].n_obs + b["adt"].n_obs
    gex = md.MuData({"GEX": a["rna"].copy(), "prot": a["adt"].copy()})
    assert sorted(hc.data.merge_datasets({"g": gex}).mod) == ["protein", "rna"]


def test_merge_datasets_warns_about_a_modality_it_leaves_out(pbmc):
    a = _batch(pbmc, "p3_0")
    odd = md.MuData({"rna": a["rna"].copy(), "antibodies": a["adt"].copy()})
    with pytest.warns(hc.HoloCellWarning, match=r"'odd': \['antibodies'\].*modalities=\{'rna': 'rna', 'protein': 'antibodies'\}"):
        merged = hc.data.merge_datasets({"odd": odd})
    assert list(merged.mod) == ["rna"]
    merged = hc.data.merge_datasets({"odd": odd}, modalities={"rna": "rna", "protein": "antibodies"})
    assert sorted(merged.mod) == ["protein", "rna"]
    # named in modalities=, but this data set calls it otherwise: it may be the protein under another name
    with pytest.warns(hc.HoloCellWarning, match=r"'odd': \['antibodies'\].*not named in modalities="):
        hc.data.merge_datasets({"a": a, "odd": odd}, modalities=CITE)
    with pytest.raises(KeyError, match=r"'x' has none of .*its modalities are \['other'\].*modalities="):
        hc.data.merge_datasets({"a": a, "x": md.MuData({"other": a["rna"].copy()})})


def test_merge_datasets_with_modalities_skips_one_a_data_set_lacks(pbmc):
    a, b = _batch(pbmc, "p3_0"), _rna_only(pbmc, "p4_0")
    merged = hc.data.merge_datasets({"a": a, "b": b}, species="human", modalities=CITE)  # no warning: b is RNA only
    assert sorted(merged.mod) == ["protein", "rna"]
    assert set(merged["protein"].obs["source"]) == {"a"} and set(merged["rna"].obs["source"]) == {"a", "b"}
    assert merged.n_obs == a.n_obs + b.n_obs
    with pytest.raises(KeyError, match=r"'b' has none of the modalities \{'protein': 'adt'\}"):
        hc.data.merge_datasets({"a": a, "b": b}, modalities={"protein": "adt"})
    with pytest.raises(KeyError, match=r"No data set has the modality \{'protein': 'adts'\}"):
        hc.data.merge_datasets({"a": a, "b": b}, modalities={"rna": "rna", "protein": "adts"})


# ------------------------------------------------------------------------------------------------ finding 3
def test_setup_batch_key_only_in_modalities_gives_the_line_that_works(pbmc):
    mdata = pbmc  # a mosaic: RNA and protein each lack some cells
    for name in mdata.mod:
        mdata[name].obs["sample"] = mdata[name].obs["batch"].astype(str)
    fix = ("mdata.obs['sample'] = mdata['rna'].obs['sample'].combine_first(mdata['adt'].obs['sample'])"
           ".reindex(mdata.obs_names)")  # fmt: skip
    for pulled in (False, True):
        if pulled:
            mdata.pull_obs()  # the old message's advice: it gives 'rna:sample', 'adt:sample', each with NaNs
        with pytest.raises(KeyError) as err:
            hc.HoloCell.setup_mudata(mdata, modalities=CITE, batch_key="sample")
        assert fix in str(err.value) and "pull_obs" not in str(err.value)
    mdata.obs["sample"] = mdata["rna"].obs["sample"].combine_first(mdata["adt"].obs["sample"]).reindex(mdata.obs_names)
    hc.HoloCell.setup_mudata(mdata, modalities=CITE, batch_key="sample")
    assert mdata.obs["sample"].notna().all()


def test_setup_offers_the_pulled_column_when_it_covers_every_cell(pbmc):
    mdata = md.MuData({"rna": _batch(pbmc, "p3_0")["rna"].copy()})  # one modality, in every cell
    mdata["rna"].obs["sample"] = "s1"
    mdata.pull_obs()
    with pytest.raises(KeyError, match=re.escape("or pass batch_key='rna:sample'")):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="sample")
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="rna:sample")


def test_inference_batch_key_only_in_a_modality_gives_the_copy_line(trained_pbmc, pbmc):
    _, model = trained_pbmc
    new = md.MuData({"rna": _batch(pbmc, "p4_0")["rna"].copy()})
    new["rna"].obs["batch"] = "p4_0"
    fix = "mdata.obs['batch'] = mdata['rna'].obs['batch'].reindex(mdata.obs_names)"
    for pulled in (False, True):
        if pulled:
            new.pull_obs()  # gives 'rna:batch' even on a MuData of one modality
        with pytest.raises(KeyError) as err:
            model.get_latent_representation(new, progress_bar=False)
        assert fix in str(err.value) and "pull_obs" not in str(err.value)
    new.obs["batch"] = new["rna"].obs["batch"].reindex(new.obs_names)
    with pytest.warns(hc.HoloCellWarning, match="no modality"):  # RNA only, for an RNA + protein model
        z = model.get_latent_representation(new, progress_bar=False)
    assert z.shape[0] == new.n_obs and np.isfinite(z).all()


# ------------------------------------------------------------------------------------------------ finding 6
def test_converted_data_sets_name_no_url_of_one_original_file():
    for name in ("snareseq2_mop", "granja2019_bmmc", "pbmc_multiome_1k"):
        entry = hc.data.REGISTRY[name]
        assert entry.url is None and entry.sources  # its sha256 is the converted file's; no file has both
        for source in entry.sources:
            original = hc.data.REGISTRY[source]
            assert source.startswith(f"{name}:") and original.url.endswith("/" + source.split(":", 1)[1])
            assert re.fullmatch(r"[0-9a-f]{64}", original.sha256) and original.sha256 != entry.sha256
    assert len(hc.data.REGISTRY["snareseq2_mop"].sources) == 5


# ------------------------------------------------------------------------------------------------ finding 8
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_train_on_an_accelerator_this_machine_lacks(pbmc, monkeypatch):
    hc.HoloCell.setup_mudata(pbmc, modalities=CITE, batch_key="batch")
    model = hc.HoloCell(pbmc, **TINY)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}

    def no_data_work(*args, **kwargs):
        raise AssertionError("the data were read before the accelerator was checked")

    monkeypatch.setattr(hc.HoloCell, "_arrays", no_data_work)
    with pytest.raises(ValueError, match=r"accelerator='gpu', devices=8.*accelerator='cpu'.*devices=") as err:
        model.train(accelerator="gpu", devices=8, strategy="ddp", max_epochs=1, enable_progress_bar=False)
    assert "gpu" in str(err.value).lower()
    assert not model.is_trained_
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


# ------------------------------------------------------------------------------------------------ finding 9
def test_changed_after_setup_names_the_modality_whose_cells_changed(pbmc):
    hc.HoloCell.setup_mudata(pbmc, modalities=CITE, batch_key="batch")
    model = hc.HoloCell(pbmc, **TINY)
    n_rna = pbmc["rna"].n_obs
    pbmc.mod["rna"] = pbmc["rna"][:1000].copy()
    pbmc.update()
    with pytest.raises(ValueError, match=rf"modality 'rna' changed cells \({n_rna} at setup, 1000 now"):
        model.get_latent_representation(progress_bar=False)

    other = _batch(pbmc.copy(), "p3_0")
    hc.HoloCell.setup_mudata(other, modalities=CITE, batch_key="batch")
    model = hc.HoloCell(other, **TINY)
    other.mod["rna"] = other["rna"][::-1].copy()  # the same cells, in another order
    other.update()
    with pytest.raises(ValueError, match="modality 'rna' changed its cell names or their order"):
        model.get_latent_representation(progress_bar=False)


# ----------------------------------------------------------------------------------------------- finding 10
def test_load_pretrained_and_merge_emit_no_mudata_future_warning(pbmc):
    model, caught = _mudata_future_warnings(lambda: hc.HoloCell.load_pretrained("holocell-small"))
    assert not caught, [str(w.message) for w in caught]
    assert model.modalities_
    a = _batch(pbmc, "p3_0")
    _, caught = _mudata_future_warnings(lambda: hc.data.merge_datasets({"a": a, "b": a["rna"].copy()}))
    assert not caught, [str(w.message) for w in caught]
