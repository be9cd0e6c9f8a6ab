"""``holocell pretrain`` refuses a bad config or input as one line ``holocell: error: ...`` with exit code 2, no
traceback and nothing written: what the config alone can tell before any data is read (a ``datasets`` key that
matches no input, layer names, ``train`` options, ``plan_kwargs``, ``genome``, ``model.priors``), what only a file
can tell as soon as it is opened (a missing layer or batch key, a normalised ``.X``), naming the input and the config
key that fixes it. Also ``holocell demo`` with arguments training refuses: refused before its folder is created.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from holocell._demo import run_demo
from holocell.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {"d_model": 16, "n_heads": 2, "n_layers": 1, "n_latents": 4, "n_latent": 4}


def _fails(capsys, argv: list[str], words: list[str]) -> str:
    """Run ``holocell <argv>``: exit code 2 and one line of stderr holding each of ``words``; returns that line.
    (As ``test_cli_errors._fails``: test modules cannot import each other under ``--import-mode=importlib``.)"""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("holocell: error: "), err
    for word in words:
        assert word in err, (word, err)
    return err




def _pretrain(tmp_path, config: dict, inputs) -> tuple[list[str], object]:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model": MODEL, "train": {"max_epochs": 1}, **config}))
    out = tmp_path / "out" / "pre.zip"
    return ["pretrain", "--config", str(path), *map(str, inputs), "--out", str(out), "--no-progress"], out


@pytest.fixture
def unread(tmp_path):
    """Two inputs that are not HDF5 at all: a check that reads them fails with another message."""
    paths = [tmp_path / "a.h5mu", tmp_path / "b.h5mu"]
    for p in paths:
        p.write_text("not read: the config and the inputs' names are checked first")
    return paths


@pytest.fixture(scope="module")
def real(tmp_path_factory, _pbmc_session):
    """Two tiny PBMC files: ``a`` (raw counts in .X) and ``b`` (RNA normalised in .X, raw counts in a layer)."""
    folder = tmp_path_factory.mktemp("pretrain_inputs")
    small = _pbmc_session[_pbmc_session.obs_names[::40]].copy()
    small.write(folder / "a.h5mu")
    rna = small["rna"]
    rna.layers["counts"] = rna.X.copy()
    rna.X = rna.X.multiply(1 / np.maximum(rna.X.sum(axis=1), 1)).tocsr() * 1e4
    small.write(folder / "b.h5mu")
    return folder / "a.h5mu", folder / "b.h5mu"


def test_a_datasets_key_that_matches_no_input_is_refused_before_reading(tmp_path, unread, capsys):
    """A typo (``a.h5m`` for ``a.h5mu``) was ignored: the file trained with the wrong name and batches, exit 0."""
    argv, out = _pretrain(tmp_path, {"datasets": {"a.h5m": {"name": "A", "batch_key": "donor"}}}, unread)
    _fails(capsys, argv, ["'datasets' key(s) ['a.h5m'] match no input file", "'a.h5m' could be 'a.h5mu'",
                          "nothing was read"])  # fmt: skip
    assert not out.parent.exists()
    # two keys for one input (its path and its name): one of them would be ignored
    argv, out = _pretrain(tmp_path, {"datasets": {str(unread[0]): {}, "a.h5mu": {"name": "x"}}}, unread)
    _fails(capsys, argv, ["both name input", "keep one of them"])
    # two inputs under one data set name: refused before reading, not after merging
    argv, out = _pretrain(tmp_path, {"datasets": {"a.h5mu": {"name": "b"}}}, unread)
    _fails(capsys, argv, ["would all be data set 'b'", "names must be unique"])
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"datasets": {"b.h5mu": {"layers": {"rna": 5}}}}, ["'datasets.b.h5mu.layers.rna' must be the name of a layer", "got 5"]),
        ({"datasets": {"b.h5mu": {"layers": {"rna": ""}}}}, ["'datasets.b.h5mu.layers.rna' must be the name of a layer"]),
        ({"datasets": {"b.h5mu": {"modalities": {"rna": "rna", "protein": "adt"}, "layers": {"adt": "counts"}}}},
         ["'datasets.b.h5mu.layers.adt'", "key it by the holocell modality 'protein'"]),
        ({"datasets": {"b.h5mu": {"layers": {"prot": "counts"}}}}, ["keyed by holocell modality ['rna', 'atac', 'protein']"]),
        ({"modalities": {"rna": "rna"}, "datasets": {"b.h5mu": {"layers": {"protein": "counts"}}}},
         ["'datasets.b.h5mu.layers.protein' names modality 'protein'", "do not include"]),
        ({"train": {"accelerator": "nope"}}, ["Lightning cannot train with the options {'accelerator': 'nope'}"]),
        pytest.param({"train": {"accelerator": "gpu"}}, ["cannot train with the options {'accelerator': 'gpu'}"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
        ({"train": {"callbacks": "x"}}, ["'train.callbacks' needs Lightning objects", "JSON config cannot hold"]),
        ({"train": {"logger": "csv"}}, ["'train.logger' needs Lightning objects"]),
        ({"train": {"gradient_clip_val": 0.5}}, ["'train.gradient_clip_val' is set by holocell", "plan_kwargs"]),
        ({"train": {"plan_kwargs": {"foo": 1}}}, ["'train.plan_kwargs.foo' is not a training setting"]),
        ({"train": {"plan_kwargs": {"lr": -1.0}}}, ["key 'train.plan_kwargs'", "'lr'"]),
        ({"train": {"plan_kwargs": {"total_steps": 0}}}, ["key 'train.plan_kwargs'", "total_steps"]),
        ({"train": {"seed": 2**40}}, ["key 'train.seed' must lie in"]),
        ({"train": {"ema_decay": 1.0}}, ["section 'train': ema_decay must be a number in (0, 1)"]),
        ({"genome": "hg99"}, ["key 'genome': Unknown genome 'hg99'"]),
        ({"genome": "nowhere/genes.gtf"}, ["key 'genome'", "looks like a file path"]),
        ({"model": {**MODEL, "priors": ["grn", "nope"]}}, ["key 'model.priors': Unknown prior ['nope']"]),
        ({"model": {**MODEL, "priors": 5}}, ["key 'model.priors' must be a string or an array"]),
    ],
)
def test_config_problems_are_refused_before_any_data_is_read(tmp_path, unread, capsys, config, words):
    argv, out = _pretrain(tmp_path, config, unread)
    line = _fails(capsys, argv, [*words, "Fix the config file"])
    assert "cfg.json" in line and not out.parent.exists()


def test_input_problems_name_the_input_and_the_config_key(tmp_path, real, capsys):
    a, b = real
    # a layer the file lacks (printed as `holocell: error: nope`)
    argv, out = _pretrain(tmp_path, {"datasets": {"b.h5mu": {"layers": {"rna": "nope"}}}}, real)
    _fails(capsys, argv, [f"input {b}: modality 'rna' (rna) has no layer 'nope'; layers: ['counts']",
                          "'datasets.b.h5mu.layers.rna'"])  # fmt: skip
    # a layer for a modality the file is not read with
    argv, out = _pretrain(tmp_path, {"datasets": {"b.h5mu": {"layers": {"atac": "counts"}}}}, real)
    _fails(capsys, argv, [f"input {b}: 'datasets.b.h5mu.layers' names modality 'atac'"])
    # a normalised .X: the input and the config key that fixes it, not `rna_layer='counts'`
    argv, out = _pretrain(tmp_path, {}, real)
    line = _fails(capsys, argv, [f"input {b} (.X of modality 'rna')", "looks normalised",
                                 "datasets.b.h5mu.layers.rna", "layers of 'rna': ['counts']"])  # fmt: skip
    assert "rna_layer=" not in line
    # a batch key the file lacks: refused as the file is opened, not after all were merged
    argv, out = _pretrain(tmp_path, {"batch_key": "donor"}, real)
    _fails(capsys, argv, [f"input {a}: batch_key 'donor' is not an obs column", "'datasets.a.h5mu.batch_key'"])
    assert not out.parent.exists()


def test_a_batch_key_with_missing_values_is_refused(tmp_path, _pbmc_session, capsys):
    """A NaN batch used to become a batch '<name>:nan' of its own without a word (setup_mudata refuses NaN)."""
    small = _pbmc_session[_pbmc_session.obs_names[::40]].copy()
    small.obs["donor"] = ["d1"] * (small.n_obs - 3) + [np.nan] * 3
    small.write(tmp_path / "c.h5mu")
    argv, out = _pretrain(tmp_path, {"batch_key": "donor"}, [tmp_path / "c.h5mu"])
    _fails(capsys, argv, [f"input {tmp_path / 'c.h5mu'}: batch_key 'donor' is missing (NaN) for 3 cells", "fillna"])
    assert not out.parent.exists()


def test_demo_refuses_bad_arguments_before_creating_its_folder(tmp_path, capsys):
    out = tmp_path / "demo_a"
    _fails(capsys, ["demo", "--max-epochs", "0", "--out", str(out)], ["--max-epochs must be an integer >= 1", "got 0"])
    _fails(capsys, ["demo", "--seed", "-1", "--out", str(out)], ["--seed must be an integer >= 0"])
    _fails(capsys, ["demo", "--seed", str(2**40), "--out", str(out)], ["--seed must be an integer from 0 to"])
    with pytest.raises(ValueError, match="max_epochs must be an integer >= 1"):
        run_demo(out, max_epochs=0)
    assert not out.exists()


def test_pretrain_over_two_species_joins_orthologs_and_records_each_cells_species(tmp_path, real, capsys):
    """``datasets.<file>.species``: a mouse file's genes join their one-to-one human orthologs (one feature, one
    anchor), and each cell carries its own species token; without it the mouse cells were set up as human."""
    import mudata as md

    import holocell as hc

    human = md.read_h5mu(real[0])
    orth = hc.vocab.load_orthologs()
    one2one = orth[orth["type"] == "one2one"].drop_duplicates("human_symbol").set_index("human_symbol")
    genes = [g for g in human["rna"].var_names if g in one2one.index]
    mouse_rna = human["rna"][:, genes].copy()
    mouse_rna.var_names = one2one.loc[genes, "mouse_symbol"].to_numpy()
    mouse_rna.obs_names = [f"m{c}" for c in mouse_rna.obs_names]
    mouse = md.MuData({"rna": mouse_rna})
    mouse.obs["batch"] = "m1"
    mouse.write(tmp_path / "mouse.h5mu")
    config = {"batch_key": "batch", "datasets": {"mouse.h5mu": {"species": "mouse"}}}
    argv, out = _pretrain(tmp_path, config, [real[0], tmp_path / "mouse.h5mu"])
    main(argv)
    model = hc.HoloCell.load_pretrained(str(out))
    setup = model.adata_manager.registry["setup_args"]
    assert setup["species_key"] == "species" and setup["species"] == "human"
    features = set(model.feature_space.maps["rna"].features)
    assert len(genes) > 50 and set(genes) <= features  # the mouse genes joined their human orthologs' features
    assert not features & set(mouse_rna.var_names)  # no mouse symbol is a feature of its own
    # each cell's species token, in the merged data the command sets up
    from holocell.data._merge import MergeInput, merge_for_pretraining

    merged = merge_for_pretraining(
        [MergeInput("h", human, {"rna": "rna"}), MergeInput("m", mouse, {"rna": "rna"}, species="mouse")]
    )
    assert (merged.obs["species"] == np.where(merged.obs["source"] == "m", "mouse", "human")).all()
    assert merged["rna"].n_vars == human["rna"].n_vars  # every mouse gene joined its human ortholog
    # ATAC of a mouse input in a two-species run: refused before anything is merged
    sim, _ = hc.data.simulate_multiome(30, n_genes=20, n_tfs=2, n_proteins=4, species="mouse", seed=0)
    sim.write(tmp_path / "msim.h5mu")
    (tmp_path / "second").mkdir()
    argv, out2 = _pretrain(tmp_path / "second", {"datasets": {"msim.h5mu": {"species": "mouse"}}},
                           [real[0], tmp_path / "msim.h5mu"])  # fmt: skip
    _fails(capsys, argv, ["data set 'msim' (mouse) brings ATAC to a pretraining of several species", "modalities"])
    assert not out2.parent.exists()
