"""The contract of expensive work: the user's random state is left alone, a device is checked before any work,
long loops show one progress bar that can be turned off, and the command line's ``--seed`` seeds the whole run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import holocell as hc
from holocell.cli import main
from holocell.nn import RowNoise

MODS = {"rna": "rna", "protein": "adt"}
SMALL = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--n-latents", "8"]


def test_inference_leaves_the_users_torch_and_python_streams_alone(trained_pbmc):
    mdata, model = trained_pbmc
    torch.manual_seed(5)
    random.seed(5)
    expected = torch.rand(3), random.random()
    torch.manual_seed(5)
    random.seed(5)
    model.get_latent_representation(progress_bar=False)
    model.get_normalized_expression(gene_list=list(mdata.mod["rna"].var_names[:3]), progress_bar=False)
    hc.tl.embed(mdata, model, copy=True, progress_bar=False)  # a MuData copy draws from Python's random module
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_devices_are_checked_before_any_work(trained_pbmc, pbmc):
    _, model = trained_pbmc
    hc.HoloCell.setup_mudata(pbmc, modalities=MODS, batch_key="batch")
    with pytest.raises(ValueError, match="'tpu' is not a torch device"):
        hc.HoloCell.load_query_data(pbmc, model, device="tpu")
    with pytest.raises(TypeError, match=r"train\(\) got device='cpu'.*accelerator="):
        hc.HoloCell(pbmc, d_model=32, n_layers=1, n_heads=2, n_latents=8).train(device="cpu", max_epochs=1)


def test_one_bar_counts_the_genes_and_the_comparisons(trained_pbmc, capsys):
    mdata, model = trained_pbmc
    genes = list(mdata.mod["rna"].var_names[:3])
    capsys.readouterr()
    results = list(model.iter_perturbations(mdata, genes, indices=range(30), n_steps=1, progress_bar=True))
    err = capsys.readouterr().err
    assert len(results) == 3 and "perturbing genes" in err and "3/3" in err and "perturbing:" not in err
    list(model.iter_perturbations(mdata, genes, indices=range(30), n_steps=1, progress_bar=False))
    assert capsys.readouterr().err == ""

    table = model.differential_expression(groupby="celltype", group1=["B", "CD4 T"], n_samples_overall=60,
                                          m_permutation=100, progress_bar=True)  # fmt: skip
    err = capsys.readouterr().err
    assert set(table["comparison"]) == {"B vs Rest", "CD4 T vs Rest"} and "comparisons" in err and "2/2" in err
    model.differential_expression(groupby="celltype", group1="B", n_samples_overall=60, m_permutation=100,
                                  progress_bar=False)  # fmt: skip
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress_bar must be"):
        model.differential_expression(groupby="celltype", group1="B", progress_bar="no")


def test_fate_shift_shows_its_gene_loop(trained_pbmc, capsys):
    mdata, model = trained_pbmc
    genes = list(mdata.mod["rna"].var_names[:3])
    capsys.readouterr()
    hc.tl.fate_shift(mdata, model, groupby="celltype", source="B", target="CD4 T", genes=genes, n_cells=20,
                     n_steps=1, copy=True, progress_bar=True)  # fmt: skip
    assert "perturbing genes" in capsys.readouterr().err


def test_the_command_lines_seed_starts_the_weights_and_the_bar_follows_the_setting(tmp_path, pbmc, capsys):
    data = tmp_path / "pbmc.h5mu"
    pbmc.write(data)
    with pytest.raises(SystemExit):  # `--device` is not read as `--devices` (whose message named an option not given)
        main(["train", str(data), "--model", str(tmp_path / "m0"), "--modalities", "rna=rna,protein=adt",
              "--device", "cpu"])  # fmt: skip
    assert "unrecognized arguments: --device cpu" in capsys.readouterr().err
    model_dir = tmp_path / "m"
    argv = ["train", str(data), "--model", str(model_dir), "--modalities", "rna=rna,protein=adt", "--batch-key",
            "batch", "--max-epochs", "1", "--seed", "3", *SMALL]  # fmt: skip
    assert main(argv) == 0
    assert "%|" not in capsys.readouterr().err  # not a terminal: no bar (it was forced on, into log files)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["init_params"]["seed"] == 3, config["init_params"]


def test_a_cells_sample_follows_its_row_not_its_batch(trained_pbmc):
    mdata, model = trained_pbmc
    runs = {
        (size, seed): model.generate(mdata.copy(), target="protein", n_steps=2, temperature=1.0, batch_size=size,
                                     seed=seed, progress_bar=False).layers["bins"]  # fmt: skip
        for size, seed in ((7, 3), (256, 3), (256, 4))
    }
    measured = runs[256, 3] >= 0
    assert np.array_equal(runs[7, 3], runs[256, 3])  # one stream per cell: the batch size does not matter
    assert (runs[256, 4] != runs[256, 3])[measured].mean() > 0.5  # another seed, other draws

    whole = RowNoise(3, range(5)).rand((5, 4))
    assert torch.equal(RowNoise(3, [2, 3]).rand((2, 4)), whole[2:4])  # a row's stream, whatever its batch
    assert not torch.equal(RowNoise(4, range(5)).rand((5, 4)), whole)
