"""``holocell.settings``: nothing happens at import; each switch acts when set (issue 17)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

import holocell as hc

_SRC = str(Path(hc.__file__).parents[1])


def _run(code: str, env: dict | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    base["PYTHONPATH"] = _SRC
    out = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.fixture
def restore_settings():
    saved = (hc.settings.progress_bar, hc.settings.lightning_log_level, logging.getLogger("holocell").level)
    yield hc.settings
    hc.settings.progress_bar, hc.settings.lightning_log_level = saved[:2]
    logging.getLogger("holocell").setLevel(saved[2])


def test_import_changes_nothing_outside_the_package():
    code = (
        "import logging, os, sys\n"
        "before = logging.getLogger('lightning.pytorch').level\n"
        "import holocell\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), logging.getLogger('lightning.pytorch').level == before,"
        " 'torch' in sys.modules)"
    )
    # the environment is untouched, another library's logger too, and nothing heavy is loaded yet
    assert _run(code) == "None True False"
    assert _run(code, {"THP_MEM_ALLOC_ENABLE": "0"}).startswith("0 ")


def _thp_available() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[never]" not in path.read_text()


@pytest.mark.skipif(not _thp_available(), reason="transparent huge pages are off in this kernel")
def test_huge_pages_setting_backs_large_tensors_when_set_before_use():
    code = (
        "import holocell as hc\n"
        "hc.settings.huge_pages = True\n"
        "mdata, _ = hc.data.simulate_multiome(40, n_genes=20, n_tfs=4, n_proteins=5, seed=0)\n"
        "hc.HoloCell.setup_mudata(mdata, modalities={'rna': 'rna', 'protein': 'protein'}, batch_key='batch')\n"
        "model = hc.HoloCell(mdata, d_model=32, n_layers=1, n_heads=2, n_latents=8)\n"
        "import torch\n"
        "x = torch.ones(32 * 1024 * 1024); x += 1  # 128 MB\n"
        "huge = sum(int(l.split()[1]) for l in open('/proc/self/smaps') if l.startswith('AnonHugePages:'))\n"
        "import os; print(os.environ['THP_MEM_ALLOC_ENABLE'], huge > 0)"
    )
    assert _run(code) == "1 True"


def test_huge_pages_switch_and_the_command_line_turns_it_on():
    assert _run("import holocell as hc, os\nhc.settings.huge_pages = True\nhc.settings.huge_pages = False\n"
                "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), hc.settings.huge_pages)") == "None False"
    code = (
        "import os, holocell.cli as cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    )
    assert _run(code).splitlines()[-1] == "1"


def test_progress_bar_none_follows_the_setting(trained_pbmc, restore_settings, capsys):
    _, model = trained_pbmc
    restore_settings.progress_bar = True
    model.get_latent_representation(indices=range(20), progress_bar=None)
    assert "embedding" in capsys.readouterr().err
    restore_settings.progress_bar = False
    model.get_latent_representation(indices=range(20), progress_bar=None)
    assert capsys.readouterr().err == ""
    model.get_latent_representation(indices=range(20), progress_bar=True)  # an explicit choice wins
    assert "embedding" in capsys.readouterr().err
    restore_settings.progress_bar = "auto"  # pytest captures stderr: not a terminal, not Jupyter
    assert restore_settings.show_progress(None) is False
    with pytest.raises(ValueError, match="progress_bar"):
        restore_settings.progress_bar = "yes"


def test_verbosity_sets_the_holocell_logger(restore_settings):
    restore_settings.verbosity = "info"
    assert logging.getLogger("holocell").level == logging.INFO == restore_settings.verbosity
    assert logging.getLogger("holocell").hasHandlers()
    restore_settings.verbosity = logging.WARNING
    assert restore_settings.verbosity == logging.WARNING
    with pytest.raises(ValueError, match="logging level"):
        restore_settings.verbosity = "chatty"


class _LevelDuringFit(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.level = logging.getLogger("lightning.pytorch").level


def test_lightning_log_level_applies_only_while_training(pbmc, restore_settings):
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(pbmc, d_model=32, n_layers=1, n_heads=2, n_latents=8)
    before = logging.getLogger("lightning.pytorch").level
    restore_settings.lightning_log_level = "error"
    seen = _LevelDuringFit()
    model.train(max_epochs=1, enable_progress_bar=False, callbacks=[seen], limit_train_batches=2, limit_val_batches=1)
    assert seen.level == logging.ERROR
    assert logging.getLogger("lightning.pytorch").level == before


def test_settings_refuse_what_they_would_ignore(restore_settings, monkeypatch):
    """A typo (`progres_bar`) was stored and did nothing; huge_pages="no" turned huge pages on; verbosity=99 was
    accepted."""
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    with pytest.raises(AttributeError, match="no setting 'progres_bar'; did you mean 'progress_bar'"):
        restore_settings.progres_bar = False
    for bad in ("no", "false", 1):
        with pytest.raises(TypeError, match="huge_pages must be True or False"):
            restore_settings.huge_pages = bad
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ
    for bad in (99, -3):
        with pytest.raises(ValueError, match="between 0 and 50"):
            restore_settings.verbosity = bad


def test_numpy_bools_are_bools_and_a_progress_bar_argument_is_checked(trained_pbmc, restore_settings, monkeypatch,
                                                                      capsys):  # fmt: skip
    """``np.True_`` was refused by ``huge_pages`` / ``progress_bar`` (its type is ``numpy.bool`` under NumPy 2); a
    per-call ``progress_bar="no"`` showed a bar (any truthy value did)."""
    import numpy as np

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    restore_settings.huge_pages = np.True_
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    restore_settings.huge_pages = np.False_
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ
    restore_settings.progress_bar = np.False_
    assert restore_settings.progress_bar is False
    _, model = trained_pbmc
    for bad in ("no", "false", 1):
        with pytest.raises(ValueError, match="progress_bar must be True, False, 'auto' or None"):
            model.get_latent_representation(indices=range(5), progress_bar=bad)
    with pytest.raises(ValueError, match="progress_bar must be"):
        model.train(max_epochs=1, enable_progress_bar="no")
    model.get_latent_representation(indices=range(5), progress_bar=np.False_)
    assert capsys.readouterr().err == ""


def test_holocell_messages_print_once_after_the_user_configures_logging(monkeypatch):
    """After hc.settings.verbosity, a logging.basicConfig printed every holocell message twice."""
    import io

    from holocell._settings import _FallbackHandler

    stream = io.StringIO()
    handler = _FallbackHandler(stream)
    record = logging.LogRecord("holocell", logging.INFO, __file__, 1, "hello", None, None)
    monkeypatch.setattr(logging.root, "handlers", [])
    handler.emit(record)
    assert stream.getvalue() == "hello\n"  # nothing else would print it
    monkeypatch.setattr(logging.root, "handlers", [logging.StreamHandler(io.StringIO())])
    handler.emit(record)
    assert stream.getvalue() == "hello\n"  # the user's handler prints it now
