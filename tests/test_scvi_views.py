"""scvi-tools' views of a model that holocell inherits: they read holocell's files and never unpickle
(``load_registry``, ``view_setup_args``, ``convert_legacy_save``), ``model.device`` and ``view_anndata_setup`` work,
and a batch category with no cells (left by subsetting a categorical column) is no training batch."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4, "n_latent": 4}
MODS = {"rna": "rna", "protein": "adt"}


def _pbmc(n_per_batch: int = 30):
    mdata = hc.data.pbmc_cite_mosaic()
    rng = np.random.default_rng(0)
    batches = mdata.obs["batch"].to_numpy()
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(batches == b), n_per_batch, replace=False)
                                   for b in np.unique(batches)]))  # fmt: skip
    return mdata[keep].copy()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    mdata = _pbmc()
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("views") / "model"
    model.save(path)
    return model, path


class _Exploit:
    """Unpickling it creates ``marker``: the proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_setup_views_of_a_saved_model_read_its_config_and_never_unpickle(saved, tmp_path, capsys):
    model, path = saved
    registry = hc.HoloCell.load_registry(path)
    assert registry["setup_method_name"] == "setup_mudata" and registry["setup_args"]["modalities"] == MODS
    hc.HoloCell.view_setup_args(path)
    assert "HoloCell.setup_mudata(mdata, modalities={'rna': 'rna', 'protein': 'adt'}" in capsys.readouterr().out
    marker = tmp_path / "pwned"
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "model.pt").write_bytes(pickle.dumps({"attr": _Exploit(marker)}))  # scvi-tools' file name
    for view in (hc.HoloCell.load_registry, hc.HoloCell.view_setup_args):
        with pytest.raises(FileNotFoundError, match="No holocell checkpoint"):
            view(folder)
    assert not marker.exists()  # scvi-tools' versions ran torch.load(weights_only=False) on model.pt
    with pytest.raises(NotImplementedError, match="which holocell never reads"):
        hc.HoloCell.convert_legacy_save(folder, tmp_path / "converted")
    assert not (tmp_path / "converted").exists() and not marker.exists()
    with pytest.raises(ValueError, match="fixed file names; pass prefix=None"):
        hc.HoloCell.load_registry(path, prefix="v1_")


def test_device_and_setup_summary(saved, capsys):
    model, _ = saved
    assert model.device == torch.device("cpu")
    model.view_anndata_setup()
    out = capsys.readouterr().out
    assert "HoloCell.setup_mudata(mdata, modalities=" in out and "4 training batches" in out
    model.view_anndata_setup(hide_state_registries=True)
    assert "training batches" not in capsys.readouterr().out


def test_a_batch_category_without_cells_is_no_training_batch():
    full = _pbmc()
    reference_data = full[full.obs["batch"] != "p4_0"].copy()  # keeps "p4_0" as an unused category
    assert "p4_0" in reference_data.obs["batch"].cat.categories
    hc.HoloCell.setup_mudata(reference_data, modalities=MODS, batch_key="batch")
    reference = hc.HoloCell(reference_data, **TINY)
    assert reference.batch_categories_ == ["p1_0", "p2_0", "p3_0"]
    reference.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    query_data = full[full.obs["batch"] == "p4_0"].copy()
    hc.HoloCell.setup_mudata(query_data, modalities=MODS, batch_key="batch")
    query = hc.HoloCell.load_query_data(query_data, reference)
    assert query.transfer_report_.loc["batches", "n_shared"] == 0  # was 1: an untrained row read as known
    before = query.module.network.batch.weight.detach().clone()
    query.train(max_epochs=1, batch_size=16, enable_progress_bar=False)  # was "Nothing to train"
    moved = ~torch.isclose(query.module.network.batch.weight, before).all(dim=1)
    assert moved[query.batch_categories_.index("p4_0")]
