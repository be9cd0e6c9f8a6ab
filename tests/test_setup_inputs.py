"""``HoloCell.setup_mudata`` on inputs users actually have: binarised ATAC, a typo in ``modalities``, mouse
symbols with the default species, merged sample sheets, missing batch / species values, modalities changed
without ``mdata.update()`` and AnnData views.

Each refused input is checked for the exception type, a message that names the problem and the fix, the fix
itself (run as the message gives it), and a MuData left exactly as it was.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell import HoloCell, HoloCellWarning

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MOUSE = Path(__file__).parent / "data" / "mouse_10x_300cells.h5ad"
PBMC_MODS = {"rna": "rna", "protein": "adt"}


# ----------------------------------------------------------------------------- helpers
def _small_pbmc(pbmc: md.MuData, per_batch: int = 15) -> md.MuData:
    """A few cells of each batch of the bundled PBMC mosaic: human genes, no setup warnings."""
    keep = pbmc.obs.groupby("batch", observed=True).head(per_batch).index
    return pbmc[pbmc.obs_names.isin(keep)].copy()


def _atac_only(n: int = 40) -> tuple[md.MuData, pd.DataFrame]:
    """Simulated ATAC on its own, with the TSS table of the simulated genes (no RNA vocabulary warnings)."""
    sim, _ = hc.data.simulate_multiome(
        n, n_genes=20, n_tfs=4, n_proteins=0, modalities=("rna", "atac"), peaks_per_gene=3, seed=0
    )
    var = sim["rna"].var
    tss = var.assign(gene_name=var.index)[["gene_name", "chrom", "tss", "strand"]].reset_index(drop=True)
    mdata = md.MuData({"atac": sim["atac"].copy()})
    mdata.obs["batch"] = sim["atac"].obs["batch"].astype(str).to_numpy()
    return mdata, tss


def _state(mdata: md.MuData) -> dict:
    """Everything a refused setup must leave alone."""
    mods = {}
    for name, a in mdata.mod.items():
        x = a.X.toarray() if sp.issparse(a.X) else np.array(a.X)
        mods[name] = (a.obs.copy(), a.var.copy(), x, a.is_view, sorted(a.layers), sorted(a.uns))
    return {
        "obs": mdata.obs.copy(),
        "var": mdata.var.copy(),
        "obsmap": {k: np.asarray(v).copy() for k, v in mdata.obsmap.items()},
        "uns": sorted(mdata.uns),
        "mods": mods,
    }


def _assert_unchanged(mdata: md.MuData, before: dict) -> None:
    after = _state(mdata)
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    assert after["uns"] == before["uns"]
    assert after["obsmap"].keys() == before["obsmap"].keys()
    for k in before["obsmap"]:
        np.testing.assert_array_equal(after["obsmap"][k], before["obsmap"][k])
    assert after["mods"].keys() == before["mods"].keys()
    for name, (obs, var, x, view, layers, uns) in before["mods"].items():
        obs2, var2, x2, view2, layers2, uns2 = after["mods"][name]
        pd.testing.assert_frame_equal(obs2, obs)
        pd.testing.assert_frame_equal(var2, var)
        assert x2.dtype == x.dtype
        np.testing.assert_array_equal(x2, x)
        assert (view2, layers2, uns2) == (view, layers, uns)


def _refused(mdata: md.MuData, exc: type[Exception], match: str, **kwargs) -> str:
    """Set up ``mdata`` expecting ``exc``; check that nothing changed; return the message."""
    before = _state(mdata)
    with pytest.raises(exc, match=match) as err:
        HoloCell.setup_mudata(mdata, **kwargs)
    _assert_unchanged(mdata, before)
    return str(err.value)


def _fix_in(message: str, start: str, end: str) -> str:
    """The code a message suggests: from ``start`` up to (not including) ``end``."""
    found = re.search(re.escape(start) + r".*?(?=" + re.escape(end) + ")", message)
    assert found, (start, message)
    return found.group(0)


def _run_fix(code: str, mdata: md.MuData) -> md.MuData:
    """Run the suggested ``code`` as the user would (it may rebind ``mdata``)."""
    scope = {"mdata": mdata, "np": np, "pd": pd}
    exec(code, scope)
    return scope["mdata"]


def _holocell_warnings(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if issubclass(w.category, HoloCellWarning)]


# ----------------------------------------------------------------------------- bool matrices (D04)
@pytest.mark.parametrize("dense", [False, True])
def test_bool_atac_is_read_as_binary_in_memory_and_backed(dense, tmp_path):
    mdata, tss = _atac_only()
    binary = mdata["atac"].X > 0
    mdata.mod["atac"].X = binary.toarray() if dense else binary.tocsr()
    assert mdata["atac"].X.dtype == np.bool_
    as_float = mdata.copy()
    as_float.mod["atac"].X = mdata["atac"].X.astype(np.float32)
    HoloCell.setup_mudata(mdata, modalities={"atac": "atac"}, batch_key="batch", genome=tss)
    model = HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0, batch_size=16)
    z = model.get_latent_representation(progress_bar=False)
    np.testing.assert_array_equal(model.get_latent_representation(as_float, progress_bar=False), z)
    # the same bool matrix read from a backed file: setup accepts it and the rows stream as 0/1
    path = tmp_path / "binary.h5mu"
    mdata.write(path)
    backed = md.read_h5mu(path, backed=True)
    try:
        assert backed["atac"].X.dtype == np.bool_
        np.testing.assert_array_equal(model.get_latent_representation(backed, progress_bar=False), z)
        HoloCell.setup_mudata(backed, modalities={"atac": "atac"}, batch_key="batch", genome=tss)
    finally:
        backed.file.close()


@pytest.mark.parametrize("mod", ["rna", "adt"])
def test_bool_rna_or_protein_is_refused_with_the_layer_fix(pbmc, mod):
    mdata = _small_pbmc(pbmc)
    counts = mdata[mod].X.copy()
    mdata.mod[mod].X = counts > 0  # binarised: presence, not counts
    m = "rna" if mod == "rna" else "protein"
    msg = _refused(mdata, TypeError, "bool values", modalities=PBMC_MODS, batch_key="batch")
    assert f"'{mod}'" in msg and "not counts" in msg and f"{m}_layer='counts'" in msg
    mdata.mod[mod].layers["counts"] = counts  # the fix: the counts in a layer, named at setup
    HoloCell.setup_mudata(mdata, modalities=PBMC_MODS, batch_key="batch", **{f"{m}_layer": "counts"})


# ----------------------------------------------------------------------------- one mod as two modalities (D05)
def test_one_mod_entry_for_two_modalities_is_refused(pbmc):
    mdata = _small_pbmc(pbmc)
    msg = _refused(mdata, ValueError, "maps both 'rna' and 'protein' to mdata.mod\\['rna'\\]",
                   modalities={"rna": "rna", "protein": "rna"}, batch_key="batch")  # fmt: skip
    assert "its own mdata.mod entry" in msg and "'adt'" in msg  # the unused key, i.e. the likely fix
    HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")


def test_one_modality_given_twice_is_still_refused(pbmc):
    mdata = _small_pbmc(pbmc)
    _refused(mdata, ValueError, "names 'rna' twice", modalities={"rna": "rna", "rna_layer": "rna"})


# ----------------------------------------------------------------------------- letter case of the species (D06)
@pytest.fixture(scope="module")
def mouse_symbols() -> md.MuData:
    """60 real mouse cells with their gene symbols (``Xkr4``, ``Cd4``, ...) as var_names."""
    mouse = ad.read_h5ad(MOUSE)[:60].copy()
    mouse.var_names = mouse.var["symbol"].astype(str).to_numpy()
    mouse.var_names_make_unique()
    mdata = md.MuData({"rna": mouse})
    mdata.obs["batch"] = "b"
    return mdata


def test_mouse_symbols_with_default_species_warn(mouse_symbols):
    mdata = mouse_symbols.copy()
    caught = _holocell_warnings(
        lambda: HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="batch")
    )
    case = [w for w in caught if "written like mouse gene symbols" in w]
    assert len(case) == 1, caught
    assert "'rna'" in case[0] and "species='mouse'" in case[0] and re.search(r"\d+ of \d+", case[0])
    # the fix: no warning at all
    fixed = mouse_symbols.copy()
    assert (
        _holocell_warnings(
            lambda: HoloCell.setup_mudata(
                fixed, modalities={"rna": "rna"}, batch_key="batch", species="mouse"
            )
        )
        == []
    )


def test_human_symbols_with_species_mouse_warn(pbmc):
    mdata = _small_pbmc(pbmc)
    caught = _holocell_warnings(
        lambda: HoloCell.setup_mudata(mdata, modalities=PBMC_MODS, batch_key="batch", species="mouse")
    )
    case = [w for w in caught if "written like human gene symbols" in w]
    assert len(case) == 1 and "species='human'" in case[0], caught


def test_letter_case_check_spares_matching_data(pbmc, mouse_symbols):
    """Human symbols as human, mouse Ensembl ids, and the simulator's names in either species: no case warning."""
    HoloCell.setup_mudata(_small_pbmc(pbmc), modalities=PBMC_MODS, batch_key="batch")  # warnings are errors
    ids = md.MuData({"rna": ad.read_h5ad(MOUSE)[:60].copy()})
    ids.obs["batch"] = "b"
    HoloCell.setup_mudata(ids, modalities={"rna": "rna"}, batch_key="batch", species="mouse")
    for species in ("human", "mouse"):
        sim, _ = hc.data.simulate_multiome(30, n_genes=20, n_tfs=4, n_proteins=0, modalities=("rna",),
                                           species=species, seed=0)  # fmt: skip
        caught = _holocell_warnings(
            lambda sim=sim, species=species: HoloCell.setup_mudata(
                sim, modalities={"rna": "rna"}, batch_key="batch", species=species
            )
        )
        assert not [w for w in caught if "written like" in w], caught


# ----------------------------------------------------------------------------- batch column (D07, D08)
@pytest.mark.parametrize("categorical", [False, True])
def test_batch_column_of_mixed_types_is_refused(pbmc, categorical):
    mdata = _small_pbmc(pbmc)
    batch = mdata.obs["batch"].astype(object).to_numpy()
    batch[:5] = 1
    batch[5:8] = 2.0
    mdata.obs["batch"] = pd.Categorical(batch) if categorical else batch
    msg = _refused(mdata, ValueError, "mixes value types", modalities=PBMC_MODS, batch_key="batch")
    assert (
        "mdata.obs['batch']" in msg and "str (" in msg and "int (5 cells)" in msg and "float (3 cells)" in msg
    )
    mdata = _run_fix(_fix_in(msg, "mdata.obs['batch'] = ", " (then"), mdata)
    HoloCell.setup_mudata(mdata, modalities=PBMC_MODS, batch_key="batch")
    assert {"1", "2.0"} <= set(mdata.obs["batch"])


@pytest.mark.parametrize("kind", ["object", "category", "float"])
def test_batch_nan_fixes_in_the_message_work(pbmc, kind):
    mdata = _small_pbmc(pbmc)
    if kind == "float":
        batch = pd.Series(mdata.obs["batch"].cat.codes.astype(float).to_numpy(), index=mdata.obs_names)
    else:
        batch = mdata.obs["batch"].astype(kind)
    batch.iloc[[0, 3, 7]] = np.nan
    batch.iloc[5] = None
    mdata.obs["batch"] = batch
    msg = _refused(mdata, ValueError, "4 missing values", modalities=PBMC_MODS, batch_key="batch")
    assert "mdata.obs['batch']" in msg
    fill = _fix_in(msg, "mdata.obs['batch'] = ", " (a batch")
    drop = _fix_in(msg, "mdata = mdata[", ".copy()") + ".copy()"
    filled = _run_fix(fill, mdata.copy())
    assert (filled.obs["batch"] == "unknown").sum() == 4 and not filled.obs["batch"].isin(
        ["nan", "None"]
    ).any()
    HoloCell.setup_mudata(filled, modalities=PBMC_MODS, batch_key="batch")
    dropped = _run_fix(drop, mdata.copy())
    assert dropped.n_obs == mdata.n_obs - 4
    HoloCell.setup_mudata(dropped, modalities=PBMC_MODS, batch_key="batch")


# ----------------------------------------------------------------------------- species_key values (D09)
@pytest.mark.parametrize("kind", ["object", "category"])
def test_species_key_missing_values_are_counted_and_fixable(pbmc, kind):
    mdata = _small_pbmc(pbmc)
    species = pd.Series("human", index=mdata.obs_names, dtype=object)
    species.iloc[:5] = np.nan
    mdata.obs["species"] = species.astype(kind)
    msg = _refused(mdata, ValueError, "5 missing values", modalities=PBMC_MODS, batch_key="batch",
                   species_key="species")  # fmt: skip
    assert "mdata.obs['species']" in msg and "'nan'" not in msg and "np.str_" not in msg
    fill = _fix_in(msg, "mdata.obs['species'] = ", ", or drop")
    drop = _fix_in(msg, "mdata = mdata[", ".copy()") + ".copy()"
    for fixed in (_run_fix(fill, mdata.copy()), _run_fix(drop, mdata.copy())):
        HoloCell.setup_mudata(fixed, modalities=PBMC_MODS, batch_key="batch", species_key="species")


def test_species_key_unknown_values_print_as_text(pbmc):
    mdata = _small_pbmc(pbmc)
    mdata.obs["species"] = pd.Categorical(["Human"] * 3 + ["human"] * (mdata.n_obs - 3))
    msg = _refused(mdata, ValueError, "3 cells with values other than", modalities=PBMC_MODS, batch_key="batch",
                   species_key="species")  # fmt: skip
    assert "['Human']" in msg and "np.str_" not in msg
    drop = _fix_in(msg, "mdata = mdata[", ".copy()") + ".copy()"
    HoloCell.setup_mudata(_run_fix(drop, mdata.copy()), modalities=PBMC_MODS, batch_key="batch",
                          species_key="species")  # fmt: skip


# ----------------------------------------------------------------------------- structure (D10, D11)
def test_modality_replaced_without_update_is_refused_at_setup(pbmc):
    mdata = _small_pbmc(pbmc)
    mdata.mod["adt"] = mdata["adt"][5:].copy()  # filtered, mdata.update() forgotten
    msg = _refused(mdata, ValueError, "mdata.mod\\['adt'\\] changed after the MuData was last updated",
                   modalities=PBMC_MODS, batch_key="batch")  # fmt: skip
    assert "mdata.update()" in msg
    mdata.update()
    HoloCell.setup_mudata(mdata, modalities=PBMC_MODS, batch_key="batch")
    model = HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)


def test_view_modality_is_refused_with_a_working_fix(pbmc):
    mdata = _small_pbmc(pbmc)
    mdata.mod["rna"] = mdata["rna"][:, :300]
    mdata.update()
    assert mdata["rna"].is_view
    msg = _refused(
        mdata, ValueError, "mdata.mod\\['rna'\\] is a view", modalities=PBMC_MODS, batch_key="batch"
    )
    fixed = _run_fix(msg.split("Make a copy: ")[1].rstrip("."), mdata)
    assert not fixed["rna"].is_view and fixed["rna"].n_vars == 300
    HoloCell.setup_mudata(fixed, modalities=PBMC_MODS, batch_key="batch")
    model = HoloCell(fixed, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)


def test_view_of_a_mudata_is_refused_with_a_working_fix(pbmc):
    full = _small_pbmc(pbmc, per_batch=30)
    mdata = full[full.obs["batch"] != "p4_0"]
    assert mdata.is_view
    msg = _refused(
        mdata, ValueError, "mdata is a view of another MuData", modalities=PBMC_MODS, batch_key="batch"
    )
    fixed = _run_fix(_fix_in(msg, "mdata = mdata.copy()", "."), mdata)
    assert not fixed.is_view
    HoloCell.setup_mudata(fixed, modalities=PBMC_MODS, batch_key="batch")
