"""The command line's errors: one line ``holocell: error: ...``, exit code 2, no traceback and nothing written.

Covers the Python API's refusals of the user's input (an unknown modality, gene, batch key or model), output keys
that an ``.h5mu`` file cannot hold (``--key-added ""`` or ``a/b``), and names given twice in a list option.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import holocell as hc
from holocell.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory, _pbmc_session):
    """150 PBMC cells as a file, and a tiny model trained on their RNA alone (no protein)."""
    folder = tmp_path_factory.mktemp("cli_errors")
    data = folder / "pbmc.h5mu"
    _pbmc_session[_pbmc_session.obs_names[::11]].copy().write(data)
    model = folder / "model"
    main(["train", str(data), "--model", str(model), "--modalities", "rna=rna", "--max-epochs", "1",
          "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--n-latents", "4", "--no-progress"])  # fmt: skip
    return data, model


def _fails(capsys, argv: list[str], words: str | list[str]) -> str:
    """Run ``holocell <argv>``: exit code 2 and one line of stderr holding ``words`` (each of them, for a list);
    returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("holocell: error: "), err
    for word in [words] if isinstance(words, str) else words:
        assert word in err, (word, err)
    return err


def _parse_fails(capsys, argv: list[str], words: str) -> None:
    """A usage error found by the argument parser: its usage lines, then ``holocell <command>: error: ...``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith(f"holocell {argv[0]}: error: ") and words in last, err


def _argv(kind: str, data: Path, model: Path, out: Path) -> list[str]:
    """A command that the Python API refuses, with the words its message must hold."""
    load = [str(data), "--model", str(model), "--out", str(out)]
    train = ["train", str(data), "--model", str(out.with_suffix("")), "--modalities", "rna=rna", "--no-progress"]
    return {
        "embed_modality": ["embed", *load, "--modality", "protein"],
        "embed_no_model": ["embed", str(data), "--model", str(out.parent / "nomodel"), "--out", str(out)],
        "generate_target": ["generate", *load, "--target", "protein"],
        "perturb_genes": ["perturb", *load, "--genes", "NOPE"],
        "train_batch_key": [*train, "--batch-key", "nope", "--max-epochs", "1"],
        "train_epochs": [*train, "--max-epochs", "0"],
        "train_heads": [*train, "--d-model", "15", "--n-heads", "2", "--max-epochs", "1"],
        "train_accelerator": [*train, "--accelerator", "tpu", "--max-epochs", "1"],
    }[kind]


API_ERRORS = {
    "embed_modality": "Unknown modality ['protein']",
    "embed_no_model": "is not a registered checkpoint",
    "generate_target": "Unknown target 'protein'",
    "perturb_genes": "Unknown genes ['NOPE']",  # a KeyError: its message without the quotes of the repr
    "train_batch_key": "batch_key 'nope' is not a column",
    "train_epochs": "--max-epochs must be an integer >= 1",  # the option, not the keyword max_epochs
    "train_heads": "n_heads=2 must divide d_model=15",  # was an AssertionError
    "train_accelerator": "--accelerator tpu",  # Lightning: ImportError (no torch_xla)
}


@pytest.mark.parametrize("kind", sorted(API_ERRORS))
def test_api_refusals_are_one_line_errors(files, tmp_path, capsys, snapshot, kind):
    """Each printed a traceback of 5-8 frames and exited with code 1."""
    data, model = files
    before = snapshot(tmp_path)
    err = _fails(capsys, _argv(kind, data, model, tmp_path / "out.h5mu"), API_ERRORS[kind])
    assert 'error: "' not in err  # no repr quotes around a KeyError's message
    assert snapshot(tmp_path) == before


def test_api_refusal_in_a_process_exits_2_without_traceback(files, tmp_path):
    """The installed entry point: exit status 2, one line on stderr."""
    data, _ = files
    env = {**os.environ, "PYTHONPATH": str(Path(hc.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "holocell.cli", "embed", str(data), "--model", str(tmp_path / "nomodel"),
         "--out", str(tmp_path / "e.h5mu")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("holocell: error: ")
    assert "is not a registered checkpoint" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_traceback_on_request(files, tmp_path, capsys, monkeypatch):
    """HOLOCELL_TRACEBACK=1 prints the refusal's traceback above the same one-line error and exit code 2."""
    data, _ = files
    argv = ["embed", str(data), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "e.h5mu")]
    monkeypatch.setenv("HOLOCELL_TRACEBACK", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("Traceback"), err
    assert err.splitlines()[-1].startswith("holocell: error: ") and "is not a registered checkpoint" in err
    monkeypatch.setenv("HOLOCELL_TRACEBACK", "0")  # 0 means off
    _fails(capsys, argv, "is not a registered checkpoint")


@pytest.mark.parametrize(
    ("command", "key", "words"),
    [
        ("embed", "", "--key-added must be a non-empty string"),
        ("embed", "  ", "--key-added must be a non-empty string"),
        ("embed", "a/b", "--key-added='a/b' holds '/'"),
        ("generate", "a/b", "--key-added='a/b' holds '/'"),
        ("generate", "", "--key-added must be a non-empty string"),
        ("perturb", "x/", "--key-added='x/' holds '/'"),
        ("grn", "", "--key-added must be a non-empty string"),
    ],
)
def test_unreadable_output_keys_are_refused_before_any_work(files, tmp_path, capsys, snapshot, command, key, words):
    """``--key-added ""`` / ``a/b`` wrote .h5mu files that mudata could not read back."""
    data, _ = files
    extra = {"generate": ["--target", "rna"], "perturb": ["--genes", "CD3E"], "grn": []}.get(command, [])
    before = snapshot(tmp_path)
    _fails(capsys, [command, str(data), "--model", str(tmp_path / "never_read"), "--out", str(tmp_path / "o.h5mu"),
                    "--key-added", key, *extra], words)  # fmt: skip
    assert snapshot(tmp_path) == before


def test_names_given_twice_are_refused(files, tmp_path, capsys, snapshot):
    """``--modalities rna=rna,rna=atac`` kept the last one silently."""
    data, _ = files
    before = snapshot(tmp_path)
    train = ["train", str(data), "--model", str(tmp_path / "m")]
    _parse_fails(capsys, [*train, "--modalities", "rna=rna,rna=atac"], "modality 'rna' is named twice")
    _parse_fails(capsys, [*train, "--modalities", "rna=rna", "--devices", "0,0"], "names a device twice")
    out = ["--model", str(tmp_path / "never_read"), "--out", str(tmp_path / "o.h5mu")]
    _parse_fails(capsys, ["perturb", str(data), *out, "--genes", "CD3E,MS4A1,CD3E"], "'CD3E' given twice")
    _parse_fails(capsys, ["embed", str(data), *out, "--modalities", "rna=rna,protein=adt,rna=adt"], "named twice")
    assert snapshot(tmp_path) == before


def test_missing_files_are_usage_errors(files, tmp_path, capsys):
    """A missing input or config file: exit code 2, like every other usage error (was 1)."""
    data, model = files
    _fails(capsys, ["embed", str(tmp_path / "gone.h5mu"), "--model", str(model), "--out", str(tmp_path / "o.h5mu")],
           "input file")  # fmt: skip
    _fails(capsys, ["pretrain", str(data), "--config", str(tmp_path / "gone.json"), "--out", str(tmp_path / "p")],
           "config file")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_embed_never_replaces_an_embedding_holocell_did_not_write(files, tmp_path, capsys):
    """``embed --key-added X_pca`` wrote over the user's PCA in the output; it follows ``tl.embed``'s rule now."""
    import mudata as md
    import numpy as np

    data, model = files
    mine = md.read_h5mu(data)
    mine.obsm["X_pca"] = np.ones((mine.n_obs, 3))
    mine.write(tmp_path / "mine.h5mu")
    out = tmp_path / "o.h5mu"
    _fails(capsys, ["embed", str(tmp_path / "mine.h5mu"), "--model", str(model), "--out", str(out),
                    "--key-added", "X_pca"], "X_pca")  # fmt: skip
    assert not out.exists()
    # the model reads RNA alone: the protein-only cells of the file have no data for it (NaN rows, a warning)
    with pytest.warns(hc.HoloCellWarning, match="have none of the modalities read"):
        assert main(["embed", str(tmp_path / "mine.h5mu"), "--model", str(model), "--out", str(out),
                     "--key-added", "X_hc"]) == 0  # fmt: skip
    written = md.read_h5mu(out)
    assert written.obsm["X_hc"].shape[0] == written.n_obs and (written.obsm["X_pca"] == 1).all()
    no_rna = np.asarray(written.obsmap["rna"]) == 0
    assert no_rna.any() and np.isnan(written.obsm["X_hc"][no_rna]).all()
    assert np.isfinite(written.obsm["X_hc"][~no_rna]).all()
