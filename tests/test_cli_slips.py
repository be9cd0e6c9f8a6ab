"""The command line and the set-up of real chromatin data (thirteenth session's probe): a genome build that is not
the peaks' own, build aliases against a saved model, Ctrl-C, and the example of a wrong modality name."""

from __future__ import annotations

import numpy as np
import pytest

import holocell as hc
from holocell import HoloCellWarning
from holocell.cli import main

TINY_ARGS = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--n-latents", "8", "--max-epochs", "1",
             "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def multiome(shared_data_module, require_real_data, tmp_path_factory):
    """300 cells of the 10x PBMC Multiome (GRCh38 peaks), written as an .h5mu."""
    require_real_data("pbmc_multiome_1k")
    mdata = hc.data.pbmc_multiome_1k(progressbar=False)
    mdata = mdata[np.sort(np.random.default_rng(0).choice(mdata.n_obs, 300, replace=False))].copy()
    path = tmp_path_factory.mktemp("multiome") / "multiome.h5mu"
    mdata.write(path)
    return path


@pytest.mark.filterwarnings("ignore:.*have no counts at all")
def test_a_genome_build_the_peaks_were_not_called_on_is_named(multiome):
    import mudata as md

    mdata = md.read_h5mu(multiome)
    with pytest.warns(HoloCellWarning, match=r"look called on hg38, not genome='hg19': 2\d\.\d% of them lie within 1 kb"):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, genome="hg19")
    with pytest.warns(HoloCellWarning) as rec:  # the right build: no word about it
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, genome="GRCh38")
    assert not any("look called on" in str(w.message) for w in rec)


@pytest.mark.filterwarnings("ignore:.*have no counts at all")
def test_a_build_alias_is_the_saved_build(multiome, tmp_path, capsys):
    model = tmp_path / "m"
    main(["train", str(multiome), "--modalities", "rna=rna,atac=atac", "--genome", "hg38", "--model", str(model),
          *TINY_ARGS])  # fmt: skip
    main(["embed", str(multiome), "--model", str(model), "--genome", "GRCh38", "--out", str(tmp_path / "e.h5mu")])
    assert (tmp_path / "e.h5mu").is_file()  # refused as "differs from the set-up saved with the model" before


def test_ctrl_c_ends_with_one_line_and_exit_code_130(pbmc, tmp_path, monkeypatch, capsys):
    pbmc.write(tmp_path / "cite.h5mu")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt("Training interrupted in epoch 3: the model keeps the weights the run reached")

    monkeypatch.setattr(hc.HoloCell, "train", interrupted)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path / "cite.h5mu"), "--modalities", "rna=rna,protein=adt", "--model",
              str(tmp_path / "m"), "--checkpoint-dir", str(tmp_path / "ck"), *TINY_ARGS])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 130 and len(err.splitlines()) == 1, err
    assert err.startswith("holocell: interrupted: train stopped") and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_a_wrong_modality_name_suggests_an_unused_modality(pbmc):
    with pytest.raises(KeyError, match=r"e.g. modalities=\{'protein': 'adt'\}"):  # it offered 'rna', read as rna
        hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "protein"})


def test_a_refused_number_names_its_option(pbmc, tmp_path, cli_fails):
    pbmc.write(tmp_path / "cite.h5mu")
    cli_fails(["embed", str(tmp_path / "cite.h5mu"), "--out", str(tmp_path / "e.h5mu"), "--batch-size", "0"],
              ["--batch-size must be an integer >= 1"], absent=("batch_size",))  # fmt: skip
