"""holocell leaves the process's global state alone: the user's random generators and environment after ``train``,
the root logger after ``generate``, and no figure left open by a saved plot; and the plots say what they show."""

from __future__ import annotations

import json
import logging
import os
import random

import matplotlib

matplotlib.use("Agg")

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 8, "n_latent": 8}
#: the simulator's genes (SIM1, ...) are synthetic: setting its data up reports that few are vocabulary genes
SIM_GENES = r"RNA features of modality .* map to a known"
SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def _setup(mdata) -> None:
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")


@pytest.fixture(scope="module")
def sim():
    """150 simulated RNA + protein cells and a tiny model trained 1 epoch on them (read-only)."""
    mdata, _ = hc.data.simulate_multiome(150, n_genes=40, n_tfs=5, n_proteins=8, modalities=("rna", "protein"), seed=0)
    _setup(mdata)
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    return mdata, model


def _global_state() -> tuple:
    """Python's, NumPy's and torch's global random state, as comparable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (the state under test)
    return random.getstate(), (kind, keys.tobytes(), pos, has_gauss, gauss), torch.get_rng_state().numpy().tobytes()


def _user_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the user's legacy global generator)
    torch.manual_seed(seed)


def _train(mdata, **kwargs):
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, **kwargs)
    return model


def test_train_leaves_the_global_random_state_and_environment_as_they_were(sim):
    """``train(seed=)`` seeded Python's, NumPy's and torch's global generators and left them so (and
    ``PL_GLOBAL_SEED`` / ``PL_SEED_WORKERS`` in ``os.environ``): a user's seeded "subsample, train" loop drew the
    same cells every time. The run still sees the same seeded streams: the same seed, the same model."""
    mdata, _ = sim
    embeddings = []
    for user_seed in (1, 2):
        _user_seeds(user_seed)
        before, environment = _global_state(), dict(os.environ)
        model = _train(mdata, seed=3)
        assert _global_state() == before
        assert dict(os.environ) == environment and not set(SEED_VARIABLES) & set(os.environ)
        embeddings.append(model.get_latent_representation(progress_bar=False))
    assert embeddings[0].tobytes() == embeddings[1].tobytes()  # reproducible, whatever the user's seeds

    # a seeded loop of "random subsample -> train" draws new cells each time
    np.random.seed(42)  # noqa: NPY002
    picks = []
    for _ in range(2):
        picks.append(np.random.choice(mdata.n_obs, 5, replace=False).tolist())  # noqa: NPY002
        _train(mdata, seed=0)
    np.random.seed(42)  # noqa: NPY002
    assert picks == [np.random.choice(mdata.n_obs, 5, replace=False).tolist() for _ in range(2)]  # noqa: NPY002


class _Stop(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        raise RuntimeError("stopped by the test")


def test_train_puts_the_global_state_back_when_the_run_fails(sim):
    mdata, _ = sim
    os.environ["PL_GLOBAL_SEED"] = "17"  # e.g. the user's own seed_everything(17)
    try:
        _user_seeds(5)
        before = _global_state()
        with pytest.raises(RuntimeError, match="stopped by the test"):
            _train(mdata, seed=0, callbacks=[_Stop()])
        assert _global_state() == before
        assert os.environ["PL_GLOBAL_SEED"] == "17" and "PL_SEED_WORKERS" not in os.environ
    finally:
        os.environ.pop("PL_GLOBAL_SEED", None)


def test_generate_leaves_the_root_logger_and_random_state_alone(sim):
    """mudata's ``set_options`` context logs with the module-level ``logging.info``, which gave a root logger without
    handlers a ``StreamHandler`` (``logging.basicConfig``): the user's own ``basicConfig`` then did nothing."""
    mdata, model = sim
    work = mdata.copy()
    root = logging.getLogger()
    saved = root.handlers[:]  # pytest's capture handlers: the test needs a root logger without any
    for handler in saved:
        root.removeHandler(handler)
    try:
        random.seed(11)
        before = random.getstate()
        model.generate(work, target="protein", progress_bar=False)
        model.generate(work, target="protein", overwrite=True, progress_bar=False)
        added = root.handlers[:]
        assert random.getstate() == before  # mudata's update draws temporary column names from it
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    assert added == []
    assert "protein_generated" in work.mod


def test_a_saved_plot_closes_the_figure_it_made(sim, tmp_path):
    """``save=`` left every figure open (scanpy closes the figures it saves): a loop of saved plots piled them up
    past matplotlib's 20-figure warning. The returned Axes stays usable; a figure of the user's own ``ax`` stays."""
    _, model = sim
    plt.close("all")
    for k in range(3):
        ax = hc.pl.training_history(model, save=tmp_path / f"history_{k}.png", show=False)
    assert plt.get_fignums() == []
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "validation_loss"]
    ax.figure.savefig(tmp_path / "again.png")  # the Axes of the closed figure can still be drawn and saved
    assert (tmp_path / "again.png").stat().st_size > 1000
    hc.pl.training_history(model, save=tmp_path / "shown.png", show=True)  # Agg: nothing on screen, closed too
    assert plt.get_fignums() == []
    fig, own = plt.subplots()
    assert hc.pl.training_history(model, ax=own, save=tmp_path / "own.png") is own
    assert plt.get_fignums() == [fig.number]  # the user's figure is theirs to close
    plt.close("all")


def test_training_history_of_a_loaded_model_says_when_the_file_has_none(sim, tmp_path):
    """A model loaded from disk has its ``history_`` (format 5); one from an older file is trained but has none,
    and the plot says so (it told the user to train it)."""
    mdata, model = sim
    model.save(tmp_path / "model")
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        loaded = hc.HoloCell.load(tmp_path / "model", mdata)
    pd.testing.assert_frame_equal(loaded.history_, model.history_)
    assert len(hc.pl.training_history(loaded, show=False).get_lines()[0].get_xdata()) == len(model.history_)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    del config["history"]  # as written before format 5
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        loaded = hc.HoloCell.load(tmp_path / "model", mdata)
    assert loaded.is_trained_ and loaded.history_ is None
    with pytest.raises(ValueError, match="loaded from a file written without one") as err:
        hc.pl.training_history(loaded, show=False)
    assert "call model.train" not in str(err.value)
    # the way out the message gives works
    model.history_.to_csv(tmp_path / "history.csv")
    ax = hc.pl.training_history(pd.read_csv(tmp_path / "history.csv", index_col="epoch"), show=False)
    assert len(ax.get_lines()[0].get_xdata()) == len(model.history_)
    with pytest.raises(ValueError, match="call model.train"):  # an untrained model: as before
        hc.pl.training_history(hc.HoloCell(mdata, **TINY), show=False)
    plt.close("all")


def _groups(ax) -> dict[str, tuple]:
    return {c.get_label(): tuple(np.round(c.get_facecolor()[0], 4)) for c in ax.collections if len(c.get_offsets())}


def test_generated_vs_measured_gives_every_group_its_own_colour_in_the_column_order(sim):
    """Colours cycled after 10 groups (two cell types drawn alike) and groups came in order of first appearance."""
    mdata, model = sim
    work = mdata.copy()
    model.generate(work, target="protein", progress_bar=False)
    feature = str(work["protein"].var_names[0])
    kwargs = {"measured": "protein", "generated": "protein_generated", "show": False}

    names = [f"type{k:02d}" for k in range(12)]
    values = [names[(7 * i) % 12] for i in range(work.n_obs)]  # first appearance is not the category order
    values[0] = None  # a cell without a label
    work.obs["fine"] = pd.Categorical(values, categories=[*names[::-1], "unused"])
    groups = _groups(hc.pl.generated_vs_measured(work, feature, color="fine", **kwargs))
    assert list(groups) == [*names[::-1], "nan"]  # the categories' order; empty ones not drawn; missing last
    assert len(set(groups.values())) == 13  # 12 colours and the grey of the missing label
    assert groups["nan"] == tuple(np.round(matplotlib.colors.to_rgba("lightgray", 0.7), 4))

    work.obs["many"] = [f"g{i % 25}" for i in range(work.n_obs)]  # not categorical: sorted values
    groups = _groups(hc.pl.generated_vs_measured(work, feature, color="many", **kwargs))
    assert list(groups) == sorted(f"g{i}" for i in range(25)) and len(set(groups.values())) == 25

    work.obs["number"] = [i % 12 for i in range(work.n_obs)]  # numbers: in numeric order
    groups = _groups(hc.pl.generated_vs_measured(work, feature, color="number", **kwargs))
    assert list(groups) == [str(i) for i in range(12)] and len(set(groups.values())) == 12
    plt.close("all")
