"""Multi-process (DDP) runs, and those whose worker processes Lightning starts itself (``strategy="ddp_spawn"``,
``"ddp_fork"``, ``"ddp_notebook"``).

A mosaic mini-batch can lack a modality, whose output heads then take no part in its loss; DDP must be told to
expect that (:func:`allow_unused_parameters`), or it fails, or hangs when only one process's mini-batch lacks it.

Lightning's multiprocessing launcher hands each worker the trainer, its callbacks, the training plan and the data
(pickled for ``"spawn"``, copied by ``fork`` otherwise), and brings back only the weights, the trainer's state and
its ``callback_metrics``. So:

- what the run holds must pickle: the weight average's update is an object (:class:`EMAUpdate`), not a closure;
- data streamed from an open HDF5 file cannot be pickled: :func:`check_spawned_data` refuses them before any work;
- GNU OpenMP does not survive a fork: once numba's OpenMP threads ran (UMAP), :func:`check_fork_safe` refuses a
  forking launcher before any work (its workers hung);
- the epoch history that rank 0's logger fills stays in the worker: :func:`history_handed_back` carries it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from ..data.arrays import BackedMosaicArrays, MosaicArrays
from ..vocab import MODALITIES


class EMAUpdate:
    """The exponential-moving-average update of :func:`torch.optim.swa_utils.get_ema_multi_avg_fn`
    (``ema.lerp_(w, 1 - decay)``), as an object that pickles (torch's is a closure, which ``"ddp_spawn"`` cannot
    send to its workers).

    Parameters
    ----------
    decay
        Weight of the old average at each update.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema_params: list[torch.Tensor], current_params: list[torch.Tensor], _n_averaged) -> None:
        """Move each averaged tensor towards the current one by ``1 - decay``."""
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, 1 - self.decay)
        else:  # foreach lerp takes only float and complex tensors
            for ema, current in zip(ema_params, current_params, strict=True):
                ema.copy_(ema * self.decay + current * (1 - self.decay))


class WeightEMA(WeightAveraging):
    """Exponential moving average of the weights, updated after every optimiser step.

    Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` with the EMA update of
    :func:`torch.optim.swa_utils.get_ema_multi_avg_fn` (``ema.lerp_(w, 1 - decay)``, :class:`EMAUpdate`), over the
    parameters (the buffers are constant). Validation runs on the averaged weights, which end up in the module
    when training ends; checkpoints hold both. The average lives on the training device.

    Parameters
    ----------
    decay
        Weight of the old average at each update.
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {decay!r}.")
        super().__init__(use_buffers=False, multi_avg_fn=EMAUpdate(decay))
        self.decay = decay

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Create the average on the device the run trains on (the module is still on the CPU here)."""
        if self._device is None:
            self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)


def launches_processes(trainer: pl.Trainer) -> bool:
    """Whether Lightning trains in worker processes it starts from this one (spawn, fork or forkserver)."""
    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


def allow_unused_parameters(trainer: pl.Trainer, arrays: MosaicArrays | BackedMosaicArrays, modalities) -> None:
    """Let DDP find the parameters a step does not use (``find_unused_parameters=True``) when some cells lack one of
    the model's ``modalities``, unless the run's strategy set it: a mini-batch without a modality leaves that
    modality's heads out of its loss. Without it DDP failed ("parameters that were not used in producing the loss")
    or, when only one process's mini-batch lacked the modality, hung in the gradient all-reduce. Data with every
    modality in every cell keep DDP's default (no extra pass over the graph, and no warning about it)."""
    options = getattr(trainer.strategy, "_ddp_kwargs", None)
    if not isinstance(trainer.strategy, DDPStrategy) or not isinstance(options, dict):
        return
    if not arrays.present[:, [MODALITIES.index(m) for m in modalities]].all():
        options.setdefault("find_unused_parameters", True)


def check_spawned_data(trainer: pl.Trainer, arrays: MosaicArrays | BackedMosaicArrays, strategy) -> None:
    """Refuse, before any work, to stream a backed ``.h5mu`` to workers that receive the data pickled
    (``strategy="ddp_spawn"``; ``strategy`` is the run's argument, named in the message): its open HDF5 datasets
    cannot be pickled."""
    if not isinstance(arrays, BackedMosaicArrays) or not launches_processes(trainer):
        return
    if trainer.strategy.launcher.is_interactive_compatible:  # fork: the workers inherit the open file
        return
    raise ValueError(
        f"strategy={strategy!r} starts its worker processes with 'spawn', which sends "
        "them the data pickled, and the counts of this backed .h5mu are an open HDF5 file, which cannot be pickled. "
        "Run the script with strategy='ddp' (`python train.py`: each process opens the file itself), use "
        "strategy='ddp_fork' (or 'ddp_notebook' in Jupyter; not on Windows), or read the file into memory "
        "(mudata.read_h5mu(path) without backed=)."
    )


def check_worker_processes(trainer: pl.Trainer, arrays: MosaicArrays | BackedMosaicArrays, strategy) -> None:
    """The checks, before any work, of the processes Lightning would start: :func:`check_spawned_data` and
    :func:`check_fork_safe`."""
    check_spawned_data(trainer, arrays, strategy)
    check_fork_safe(trainer, strategy)


def check_fork_safe(trainer: pl.Trainer, strategy) -> None:
    """Refuse, before any work, to fork this process for training (``strategy="ddp_fork"`` / ``"ddp_notebook"``)
    once numba has started its OpenMP threads here (scanpy's UMAP and neighbours do): GNU OpenMP is not fork-safe,
    and the forked workers hung in their first parallel torch operation, without a message or an end."""
    if not launches_processes(trainer) or not trainer.strategy.launcher.is_interactive_compatible:
        return
    numba = sys.modules.get("numba")
    try:
        layer = numba.threading_layer() if numba is not None else None
    except ValueError:  # numba's threads have not started in this process
        return
    if layer == "omp" and numba.config.NUMBA_NUM_THREADS > 1:
        raise RuntimeError(
            f"strategy={strategy!r} forks this process, and this process has already run numba's OpenMP threads "
            "(e.g. sc.pp.neighbors, sc.tl.umap): GNU OpenMP does not survive a fork, and the training processes would "
            "hang. Train with strategy='ddp' from a script (fresh processes) or 'ddp_spawn' (not for backed data), "
            "or train before the UMAP (in Jupyter: restart the kernel), or set the environment variable "
            "NUMBA_THREADING_LAYER=workqueue before numba is imported."
        )


class HistoryHandBack(pl.Callback):
    """In a worker that Lightning started, local rank 0 writes the run's epoch rows (the training plan's
    ``history_rows``) to ``path`` when the fit ends, for the process that called ``train`` to read back.

    Parameters
    ----------
    path
        JSON file, in a folder of the calling process.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._caller = os.getpid()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the rows (only in local rank 0 of the workers; the calling process fills its own)."""
        rows = getattr(pl_module, "history_rows", None)
        if os.getpid() == self._caller or trainer.local_rank != 0 or rows is None:
            return
        part = self.path.with_suffix(".part")
        part.write_text(json.dumps([dict(row) for row in rows]))
        os.replace(part, self.path)

    def read(self) -> list[dict[str, float]] | None:
        """The rows a worker wrote (``None`` if none did)."""
        if not self.path.is_file():
            return None
        return [{k: float(v) for k, v in row.items()} for row in json.loads(self.path.read_text())]


@contextlib.contextmanager
def history_handed_back(trainer: pl.Trainer, rows: list[dict[str, float]]) -> Iterator[None]:
    """Around ``trainer.fit``: when Lightning trains in worker processes, put rank 0's epoch rows into ``rows`` (the
    calling process's history, which its copy of the logger never fills) once the fit is done."""
    if not launches_processes(trainer):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="holocell-history-") as folder:
        callback = HistoryHandBack(Path(folder) / "history.json")
        trainer.callbacks.append(callback)
        yield
        handed = callback.read()
        if handed is not None:
            rows[:] = handed


__all__ = [
    "EMAUpdate",
    "HistoryHandBack",
    "WeightEMA",
    "allow_unused_parameters",
    "check_fork_safe",
    "check_spawned_data",
    "check_worker_processes",
    "history_handed_back",
]
