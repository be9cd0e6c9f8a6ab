"""Whether Lightning can use an ``accelerator`` / ``devices`` pair on this machine, checked before any data work.

Shared by :meth:`holocell.HoloCell.train` and the command line (``holocell train --accelerator``, the
``pretrain`` config's ``train`` section): both ask Lightning itself by building a ``Trainer`` with the options.
"""

from __future__ import annotations

import warnings

from .._settings import settings


def trainer_problem(options: dict) -> str | None:
    """Why Lightning cannot build a ``Trainer`` with ``options`` on this machine (one line), or ``None``."""
    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        with settings.lightning_logging(), warnings.catch_warnings():  # its device notes come again in training
            warnings.simplefilter("ignore")
            pl.Trainer(**{"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                          "enable_model_summary": False, **options})  # fmt: skip
    except (ValueError, TypeError, ImportError, MisconfigurationException) as err:  # tpu without torch_xla: ImportError
        return " ".join(str(err).split()) or type(err).__name__
    return None


def check_devices(accelerator, devices) -> None:
    """``ValueError`` naming ``accelerator=`` / ``devices=`` and the fix when Lightning cannot use them here (e.g.
    ``accelerator="gpu"`` on a machine without one); ``"auto"`` for both always works and is not checked."""
    if isinstance(accelerator, str) and accelerator == "auto" and isinstance(devices, str) and devices == "auto":
        return
    problem = trainer_problem({"accelerator": accelerator, "devices": devices})
    if problem:
        raise ValueError(
            f"train(accelerator={accelerator!r}, devices={devices!r}) cannot run on this machine ({problem}). Pass "
            "an accelerator it has, accelerator='cpu', 'gpu', 'mps' or 'auto' (the best one found), and devices= it "
            "has (e.g. devices=1, or devices='auto'). Nothing was trained."
        )


__all__ = ["check_devices", "trainer_problem"]
