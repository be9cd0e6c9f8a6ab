"""The command line has the Python API's options and defaults (issue 19): layers, batch size, devices,
seed, version, and ``perturb`` / ``grn`` on ``.h5mu`` files with atomic, never-overwriting outputs."""

from __future__ import annotations

import inspect

import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc
from holocell._cli_parser import build_parser
from holocell._demo import run_demo
from holocell.cli import main

SETUP = dict.fromkeys(
    ("batch_key", "species", "genome", "rna_layer", "atac_layer", "protein_layer"), hc.HoloCell.setup_mudata
)
#: subcommand -> (arguments that make it parse, {option dest: the API function whose parameter it is})
#: holocell's warning about the simulator's gene names (SIM1, ...), expected whenever a command sets up that data
SIM_GENES = r"RNA features of modality .* map to a known"


def run(argv: list[str]) -> None:
    """``holocell <argv>`` on the simulated data (which warns that its genes are not human genes)."""
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        main(argv)


PARITY = {
    "demo": ([], {"max_epochs": run_demo, "seed": run_demo}),
    "train": (
        ["in.h5mu", "--model", "m", "--modalities", "rna=rna"],
        {
            **SETUP,
            **dict.fromkeys(
                ("max_epochs", "batch_size", "accelerator", "devices", "seed"), hc.HoloCell.train
            ),
            **dict.fromkeys(("d_model", "n_layers", "n_heads", "n_latents"), hc.HoloCell.__init__),
        },
    ),
    "embed": (
        ["in.h5mu", "--out", "o.h5mu"],
        {
            **SETUP,
            **dict.fromkeys(("modality", "batch_size", "device"), hc.HoloCell.get_latent_representation),
        },
    ),
    "generate": (
        ["in.h5mu", "--out", "o.h5mu", "--target", "rna"],
        {
            **SETUP,
            **dict.fromkeys(
                ("n_steps", "key_added", "seed", "batch_size", "device", "var_suffix"), hc.HoloCell.generate
            ),
        },
    ),
    "perturb": (
        ["in.h5mu", "--out", "o.h5mu"],
        {
            **SETUP,
            **dict.fromkeys(
                (
                    "genes",
                    "cres",
                    "mode",
                    "regenerate",
                    "sources",
                    "overexpress_quantile",
                    "n_top",
                    "n_steps",
                    "key_added",
                    "var_suffix",
                    "batch_size",
                    "device",
                    "seed",
                ),
                hc.tl.perturb,
            ),
        },
    ),  # fmt: skip
    "grn": (
        ["in.h5mu", "--out", "o.h5mu"],
        {
            **SETUP,
            **dict.fromkeys(
                (
                    "tfs",
                    "targets",
                    "method",
                    "sources",
                    "n_cells",
                    "n_steps",
                    "key_added",
                    "batch_size",
                    "device",
                    "seed",
                ),
                hc.tl.grn,
            ),
        },
    ),
}


@pytest.mark.parametrize("command", sorted(PARITY))
def test_cli_defaults_are_the_api_defaults(command):
    argv, options = PARITY[command]
    args = build_parser().parse_args([command, *argv])
    for dest, function in options.items():
        expected = inspect.signature(function).parameters[dest].default
        assert getattr(args, dest) == expected, (command, dest, getattr(args, dest), expected)


@pytest.mark.parametrize("command", sorted(PARITY))
def test_help_shows_every_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = " ".join(sub.format_help().split())
    for action in sub._actions:
        if action.option_strings and action.dest in PARITY[command][1]:
            assert f"(default: {action.default})" in text, (command, action.dest)


@pytest.mark.parametrize("command", sorted(PARITY))
def test_help_gives_no_default_for_required_options_or_switches(command):
    """``--out OUT output .h5mu`` rather than ``... (default: None)``; ``--overwrite`` without ``(default: False)``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = " ".join(sub.format_help().split())
    quiet = [a for a in sub._actions if a.option_strings and (a.required or a.nargs == 0) and a.help]
    assert quiet
    for action in quiet:
        help_text = " ".join(action.help.split())
        assert help_text in text and f"{help_text} (default:" not in text, (command, action.dest)


def test_train_help_shows_the_api_sizes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "transformer layers (default: 2)" in text and "cells per training step (default: 32)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"holocell {hc.__version__}"


@pytest.fixture
def counts_h5mu(tmp_path, simulated):
    """The simulated mosaic with raw counts in layers["counts"] and log-normalised values in X."""
    mdata, _ = simulated
    mdata = mdata.copy()
    for name in ("rna", "protein"):
        adata = mdata[name]
        adata.layers["counts"] = adata.X.copy()
        adata.X = adata.X.copy()
        adata.X.data = np.log1p(adata.X.data) + 0.5  # not counts: refused unless the layer is named
    path = tmp_path / "counts.h5mu"
    mdata.write(path)
    return path


TRAIN = ["--modalities", "rna=rna,protein=protein", "--batch-key", "batch", "--max-epochs", "1", "--d-model", "32",
         "--n-layers", "1", "--n-heads", "2", "--n-latents", "8", "--no-progress"]  # fmt: skip


@pytest.fixture
def trained_dir(counts_h5mu, tmp_path):
    model_dir = tmp_path / "model"
    run(
        ["train", str(counts_h5mu), "--model", str(model_dir), *TRAIN, "--rna-layer", "counts",
         "--protein-layer", "counts", "--batch-size", "16", "--accelerator", "cpu", "--devices", "1", "--seed", "3"]
    )  # fmt: skip
    return model_dir


def test_train_reads_the_counts_layer(counts_h5mu, trained_dir, tmp_path, capsys):
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        model = hc.HoloCell.load(trained_dir, md.read_h5mu(counts_h5mu))
    setup = model.adata_manager.registry["setup_args"]
    assert setup["rna_layer"] == "counts" and setup["protein_layer"] == "counts"
    with pytest.raises(SystemExit) as exit_:  # X holds decimals: the layer option is needed (one line, exit code 2)
        main(["train", str(counts_h5mu), "--model", str(tmp_path / "other"), *TRAIN])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("holocell: error: ") and "--rna-layer counts" in err, err
    out = tmp_path / "embedded.h5mu"
    run(
        [
            "embed",
            str(counts_h5mu),
            "--model",
            str(trained_dir),
            "--out",
            str(out),
            "--batch-size",
            "7",
            "--device",
            "cpu",
        ]
    )
    assert md.read_h5mu(out).obsm["X_holocell"].shape[1] == 32


def test_generate_names_and_suffix_option(counts_h5mu, trained_dir, tmp_path):
    out = tmp_path / "gen.h5mu"
    run(
        [
            "generate",
            str(counts_h5mu),
            "--model",
            str(trained_dir),
            "--out",
            str(out),
            "--target",
            "protein",
            "--n-steps",
            "1",
        ]
    )
    written = md.read_h5mu(out)
    assert written["protein_generated"].var_names[0] == f"{written['protein'].var_names[0]}_generated"
    assert written.var_names.is_unique
    run(["generate", str(counts_h5mu), "--model", str(trained_dir), "--out", str(out), "--target", "protein",
         "--n-steps", "1", "--var-suffix", "", "--overwrite"])  # fmt: skip
    assert md.read_h5mu(out)["protein_generated"].var_names.equals(written["protein"].var_names)


def test_perturb_and_grn_commands(counts_h5mu, trained_dir, tmp_path, capsys, snapshot):
    out = tmp_path / "perturbed.h5mu"
    run(["perturb", str(counts_h5mu), "--model", str(trained_dir), "--out", str(out), "--genes", "SIM1",
         "--n-steps", "1", "--n-top", "5", "--seed", "1"])  # fmt: skip
    written = md.read_h5mu(out)
    summary = pd.DataFrame(written.uns["holocell_perturb"]["summary"])
    assert len(summary) > 0 and set(summary["modality"]) <= {"rna", "protein"}
    assert written["holocell_perturb_rna"].var_names.equals(written["rna"].var_names)  # the measured names
    named = tmp_path / "named.h5mu"
    run(["perturb", str(counts_h5mu), "--model", str(trained_dir), "--out", str(named), "--genes", "SIM1",
         "--n-steps", "1", "--sources", "none", "--var-suffix", "auto", "--regenerate", "rna"])  # fmt: skip
    named = md.read_h5mu(named)
    shift = named["holocell_perturb_rna"]
    assert shift.var_names[0] == f"{shift.var['measured_name'].iloc[0]}_holocell_perturb" and named.var_names.is_unique
    assert list(named.uns["holocell_perturb"]["params"]["sources"]) == []
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # never overwritten without --overwrite
        main(["perturb", str(counts_h5mu), "--model", str(trained_dir), "--out", str(out), "--genes", "SIM1"])
    assert exit_.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    with pytest.raises(SystemExit) as exit_:
        main(["perturb", str(counts_h5mu), "--model", str(trained_dir), "--out", str(tmp_path / "p2.h5mu")])
    assert exit_.value.code == 2 and "--genes" in capsys.readouterr().err

    out, table = tmp_path / "grn.h5mu", tmp_path / "edges.tsv"
    run(["grn", str(counts_h5mu), "--model", str(trained_dir), "--out", str(out), "--table", str(table),
         "--tfs", "SIM1,SIM2", "--method", "embedding"])  # fmt: skip
    edges = pd.read_csv(table, sep="\t")
    assert set(edges["tf"]) == {"SIM1", "SIM2"}
    assert len(pd.DataFrame(md.read_h5mu(out).uns["holocell_grn"])) == len(edges)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["grn", str(counts_h5mu), "--model", str(trained_dir), "--out", str(tmp_path / "new.h5mu"),
              "--table", str(table), "--tfs", "SIM1"])  # fmt: skip
    assert exit_.value.code == 2 and "edges.tsv already exists" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_grn_n_cells_takes_all(capsys):
    parser = build_parser()
    assert parser.parse_args(["grn", "in.h5mu", "--out", "o.h5mu", "--n-cells", "all"]).n_cells is None
    assert parser.parse_args(["grn", "in.h5mu", "--out", "o.h5mu", "--n-cells", "50"]).n_cells == 50
    # the perturbation tutorial's tl.grn(..., sources=[]) from the terminal
    assert parser.parse_args(["grn", "in.h5mu", "--out", "o.h5mu", "--sources", "none"]).sources == []
    assert parser.parse_args(["grn", "in.h5mu", "--out", "o.h5mu", "--sources", "atac"]).sources == ["atac"]
    with pytest.raises(SystemExit):
        parser.parse_args(["grn", "in.h5mu", "--out", "o.h5mu", "--n-cells", "half"])
    assert "expected a number of cells or 'all', got 'half'" in capsys.readouterr().err
