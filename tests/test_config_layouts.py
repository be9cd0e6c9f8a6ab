"""Checkpoint config validation (issue 20) on the config layout of issue 17.

Configs written since issue 17 hold typed ``"objective"`` / ``"training"`` sections and no ``"network"``;
older ones (the shipped ``holocell-small`` among them) hold ``"network"`` and no typed sections. Both
layouts are validated in full, the typed sections one rule per dataclass field, and the shapes expected
from a config name the parameters of the real network.
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import nullcontext
from dataclasses import fields

import pytest

import holocell as hc
from holocell.cli import main
from holocell.model import _checkpoint, _pretrained
from holocell.model._config_check import OBJECTIVE, TRAINING, validate_config
from holocell.model._config_header import check_header, expected_shapes
from holocell.nn import ObjectiveConfig
from holocell.train import TrainingConfig

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
FIX = "save the model again or fetch a fresh copy"
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up (or loading a model onto it, which
#: replays the setup) reports that few RNA features are vocabulary genes (issue 20). The tests expect it.
SIM_GENES = r"RNA features of modality .* map to a known"


def _sim_genes():
    return pytest.warns(hc.HoloCellWarning, match=SIM_GENES)


def _sim(atac: bool = False):
    mdata = hc.data.simulate_multiome(
        64, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, seed=0
    )[0]
    mods = {"rna": "rna", "protein": "protein"}
    extra = {}
    if atac:
        mods["atac"] = "atac"
        var = mdata["rna"].var
        extra["genome"] = var.assign(gene_name=var.index)[
            ["gene_name", "chrom", "tss", "strand"]
        ].reset_index(drop=True)
    # 64 simulated cells: with ATAC, two have no ATAC count at all, and holocell says so at setup
    empty = pytest.warns(hc.HoloCellWarning, match="have no counts at all") if atac else nullcontext()
    with empty, _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities=mods, batch_key="batch", **extra)
    return mdata


@pytest.fixture(scope="module")
def model():
    return hc.HoloCell(_sim(), **TINY, p_hide_library=0.1, train_config={"lr": 3e-4})


@pytest.fixture
def saved(model, tmp_path):
    model.save(tmp_path / "model")
    return tmp_path / "model"


def _rewrite(saved, edit) -> dict:
    path = saved / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))  # NaN is written as the JSON literal NaN
    return config


def _old_layout(model):
    def edit(config):
        del config["objective"], config["training"]
        config["network"] = model.config.to_dict()

    return edit


def test_rule_tables_have_one_line_per_field_of_the_typed_configs():
    assert [r.key for r in OBJECTIVE] == [f.name for f in fields(ObjectiveConfig)]
    assert [r.key for r in TRAINING] == [f.name for f in fields(TrainingConfig)]
    # every default passes its own rules
    config = json.loads(
        json.dumps({"objective": ObjectiveConfig().to_dict(), "training": TrainingConfig().to_dict()})
    )
    from holocell.model._config_check import check_section, check_training

    check_section(config["objective"], OBJECTIVE, "defaults", "objective.")
    check_section(config["training"], TRAINING, "defaults", "training.")
    check_training(config["training"], "defaults")


def test_new_layout_round_trips(model, saved):
    config = json.loads((saved / "config.json").read_text())
    assert "network" not in config and {"objective", "training"} <= set(config)
    with _sim_genes():
        loaded = hc.HoloCell.load(saved, _sim())
    assert loaded.objective_config == model.objective_config and loaded.train_config.lr == 3e-4


BAD = [  # (section, key, value, words in the message)
    ("objective", "eps", 0.0, "'objective.eps' must lie in (0, 1)"),
    ("objective", "p_whole", 1.5, "'objective.p_whole' must lie in [0, 1]"),
    ("objective", "align_temperature", 0, "'objective.align_temperature' must lie in (0,"),
    ("objective", "regression_weight", math.nan, "'objective.regression_weight' must be a finite number"),
    ("objective", "p_hide_library", "0.1", "'objective.p_hide_library' must be a number"),
    ("objective", "kl_wieght", 1.0, "'objective.kl_wieght' is not a key holocell knows"),
    ("training", "lr", 0.0, "'training.lr' must lie in (0,"),
    ("training", "warmup_steps", 2.5, "'training.warmup_steps' must be an integer"),
    ("training", "betas", [0.9], "'training.betas' must be two numbers in [0, 1)"),
    ("training", "betas", [0.9, 1.0], "'training.betas' must be two numbers in [0, 1)"),
    ("training", "min_epochs", 500, "'training.min_epochs' is 500, more than training.max_epochs 400"),
    ("training", "gradient_clip_val", -1.0, "'training.gradient_clip_val' must lie in (0,"),
    ("training", "schedule", "cosine", "'training.schedule' is not a key holocell knows"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "words"), BAD, ids=[f"{b[0]}.{b[1]}={b[2]!r}" for b in BAD]
)
def test_bad_typed_settings_are_named(saved, section, key, value, words):
    _rewrite(saved, lambda c: c[section].__setitem__(key, value))
    for load in (lambda: hc.HoloCell.load(saved, _sim()), lambda: hc.HoloCell.load_pretrained(saved)):
        with pytest.raises(ValueError) as err:
            load()
        assert type(err.value).__name__ == "ConfigError" and words in str(err.value), str(err.value)
        assert FIX in str(err.value)


def test_typed_sections_are_optional_and_no_clipping_is_allowed(model, saved):
    _rewrite(saved, lambda c: c["training"].__setitem__("gradient_clip_val", None))
    with _sim_genes():
        assert hc.HoloCell.load(saved, _sim()).train_config.gradient_clip_val is None
    _rewrite(saved, lambda c: (c.pop("objective"), c.pop("training")))  # neither layout's extras
    with _sim_genes():
        loaded = hc.HoloCell.load(saved, _sim())
    assert loaded.objective_config == ObjectiveConfig() and loaded.train_config == TrainingConfig()


def test_old_layout_with_network_is_accepted_and_validated(model, saved):
    config = _rewrite(saved, _old_layout(model))
    with _sim_genes():
        loaded = hc.HoloCell.load(saved, _sim())  # old files load; their settings are the defaults
    assert loaded.train_config == TrainingConfig() and loaded.objective_config == ObjectiveConfig()
    cases = [
        (
            lambda c: c["network"].__setitem__("n_latents", 16),
            "'network.n_latents' is 16, init_params.n_latents 8",
        ),
        (
            lambda c: c["network"].__setitem__("n_batches", 7),
            "'network.n_batches' is 7, but the config lists",
        ),
        (lambda c: c["network"].__setitem__("width", 7), "'network.width' is not a key holocell knows"),
        (
            lambda c: c["network"].__setitem__("mlp_ratio", 2),
            "tensor 'network.read_in.mlp.fc.weight' has shape",
        ),
    ]
    for edit, words in cases:
        (saved / "config.json").write_text(json.dumps(config))
        _rewrite(saved, edit)
        with pytest.raises(ValueError, match="save the model again") as err:
            hc.HoloCell.load(saved, _sim())
        assert words in str(err.value), str(err.value)


def test_shipped_checkpoint_has_the_old_layout_and_passes():
    path = _pretrained.resolve("holocell-small-v1")
    with _pretrained.unpacked(path) as ckpt:
        config = _checkpoint.read_checkpoint(ckpt, str(path))  # config rules and safetensors header
    assert "network" in config and "objective" not in config and "training" not in config
    model = hc.HoloCell.load_pretrained("holocell-small-v1")
    # format 2: trained before the distilled alignment became the default, it keeps the settings it had
    assert model.objective_config == ObjectiveConfig(align_weight=0.0, align_mode="contrastive")
    assert model.train_config == TrainingConfig()


@pytest.mark.parametrize("old", [False, True], ids=["new layout", "old layout"])
def test_expected_shapes_name_the_parameters_of_the_real_network(old):
    """Every tensor the header check looks for is a parameter or buffer of the refactored network, with
    that shape (RNA, protein, ATAC and a prior, so every family of names is covered)."""
    model = hc.HoloCell(_sim(atac=True), **TINY, priors=["position"])
    config = _checkpoint.model_config(model) | {"weights_sha256": "0" * 64}
    if old:
        _old_layout(model)(config)
    config = validate_config(json.loads(json.dumps(config)), "test")
    state = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
    shapes = expected_shapes(config)
    assert {"network.peak_anchor", "network.prior_position", "network.slots.rna.bin.weight"} <= set(shapes)
    for name, (shape, _) in shapes.items():
        assert state.get(name) == shape, name
    check_header(config, state, "test")


@pytest.mark.parametrize(
    ("model_section", "words"),
    [
        ({"p_whole": 1.5}, "key 'model.p_whole' must lie in [0, 1]"),
        ({"eps": 0}, "key 'model.eps' must lie in (0, 1)"),
        ({"train_config": {"lr": "high"}}, "key 'model.train_config.lr' must be a number"),
        ({"train_config": {"betas": [0.9, 2]}}, "key 'model.train_config.betas' must be two numbers"),
        ({"batch_categories": ["a"]}, "key 'model.batch_categories' is not a key holocell knows"),
    ],
)
def test_pretrain_config_checks_the_typed_settings(tmp_path, capsys, model_section, words):
    data = tmp_path / "in.h5mu"
    data.write_bytes(b"not read: the config is checked first")
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model": model_section}))
    with pytest.raises(SystemExit) as err:
        main(["pretrain", str(data), "--config", str(path), "--out", str(tmp_path / "pre.zip")])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert words in line and str(path) in line, line
    assert not (tmp_path / "pre.zip").exists()


def test_pretrain_config_accepts_objective_fields_and_train_config(tmp_path):
    from holocell._cli_config import check_pretrain_config

    train_config = {"lr": 3e-4, "betas": [0.9, 0.95], "min_epochs": 2, "max_epochs": 5}
    model = {"d_model": 32, "p_hide_library": 0.1, "eps": 0.05, "train_config": train_config}
    check_pretrain_config({"model": model}, str(tmp_path / "cfg.json"))


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"config.json holds {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_history_is_saved_with_the_model_and_checked_when_loaded(model, saved, tmp_path):
    import pandas as pd

    assert "history" not in _strict_json((saved / "config.json").read_text())  # an untrained model has none
    with _sim_genes():
        assert hc.HoloCell.load(saved, _sim()).history_ is None
    trained = hc.HoloCell(_sim(), **TINY)
    trained.train(max_epochs=3, batch_size=16, enable_progress_bar=False)
    trained.history_.loc[1, "validation_loss"] = math.nan  # a metric missing in one epoch stays missing
    trained.save(tmp_path / "trained")
    config = _strict_json((tmp_path / "trained" / "config.json").read_text())
    assert config["format_version"] >= 5 and config["history"]["epoch"] == [0, 1, 2]
    assert config["history"]["validation_loss"][1] is None
    with _sim_genes():
        loaded = hc.HoloCell.load(tmp_path / "trained", _sim())
    pd.testing.assert_frame_equal(loaded.history_, trained.history_)
    for edit, words in [
        (lambda h: h["train_loss"].pop(), "'history' must map 'epoch' and each metric's name to lists of one length"),
        (lambda h: h.__setitem__("epoch", [0, 0, 1]), "'history.epoch' has duplicated entries"),
        (lambda h: h["train_loss"].__setitem__(0, "low"), "'history.train_loss[0]' must be a number"),
        (lambda h: h.__setitem__("kl", 1.0), "'history' must map 'epoch' and each metric's name to lists"),
    ]:
        shutil.copytree(tmp_path / "trained", tmp_path / "edited", dirs_exist_ok=True)
        _rewrite(tmp_path / "edited", lambda c, edit=edit: edit(c["history"]))
        with pytest.raises(ValueError, match="ConfigError|history") as err:
            hc.HoloCell.load(tmp_path / "edited", _sim())
        assert type(err.value).__name__ == "ConfigError" and words in str(err.value), str(err.value)


def test_pretrain_config_takes_progress_bar_as_train_does(tmp_path):
    """``HoloCell.train`` takes ``progress_bar=`` (session 9); a config's ``train.progress_bar`` got Lightning's
    "unexpected keyword argument" (then the two-names error) only once training started."""
    from holocell._cli_config import ConfigError, check_pretrain_config

    check_pretrain_config({"train": {"progress_bar": False}}, str(tmp_path / "cfg.json"))
    with pytest.raises(ConfigError, match="progress_bar"):
        check_pretrain_config({"train": {"progress_bar": "no"}}, str(tmp_path / "cfg.json"))
