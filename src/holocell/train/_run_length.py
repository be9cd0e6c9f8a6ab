"""A warning when a training run will be long: its first steps are timed and the rest projected.

A step's cost grows with the number of gene anchors (every cell reads and decodes every anchor), so a data set
with every gene and peak of a 10x Multiome run (about 40,000 anchors) trained at 20 s per step on a 2-core CPU,
so that a default run of 10,000 cells would take more than a day (``benchmarks/results/scaling.md``), and nothing
said so. The warning names the cost, what drives it
and what cuts it (docs/own_data.md, "Select features first").
"""

from __future__ import annotations

import math
import time
import warnings

import lightning.pytorch as pl

from .._warnings import HoloCellWarning

TIMED_STEPS = 3
"""Steps timed after the first (which pays for allocations and warm-up) before the projection."""


def duration(hours: float) -> str:
    """``"14 hours"``, ``"2.5 hours"`` or ``"40 minutes"``."""
    if hours >= 10:
        return f"{hours:.0f} hours"
    return f"{hours:.1f} hours" if hours >= 1 else f"{max(1.0, hours * 60):.0f} minutes"


class RunLengthWarning(pl.Callback):
    """Warn once per run, on rank 0, when the projected training time exceeds ``limit_hours``.

    Parameters
    ----------
    cost_drivers
        What makes a step of this model cost what it costs, e.g. ``"39,166 gene anchors (36,000 RNA features,
        99,990 peaks)"``; it goes into the message.
    limit_hours
        Hours above which it warns (``None``: never); ``train()`` passes ``hc.settings.long_run_hours`` as it is at
        the call, so that processes a distributed run starts see the caller's value.
    """

    def __init__(self, cost_drivers: str, limit_hours: float | None) -> None:
        self.cost_drivers = cost_drivers
        self.limit_hours = limit_hours
        self._ends: list[float] = []
        self._done = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ends, self._done = [], self.limit_hours is None or not trainer.is_global_zero

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._done:
            return
        self._ends.append(time.perf_counter())
        if len(self._ends) > TIMED_STEPS:  # the gaps between step ends: every timed step whole, data loading too
            self._check(trainer, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._done and len(self._ends) >= 2:  # a short epoch: project from the steps it had
            self._check(trainer, trainer.num_training_batches - 1)

    def _check(self, trainer: pl.Trainer, batch_idx: int) -> None:
        self._done = True
        bounded = trainer.max_epochs is not None and trainer.max_epochs >= 0
        if not bounded or not math.isfinite(trainer.num_training_batches):  # nothing to project from
            return
        seconds = (self._ends[-1] - self._ends[0]) / (len(self._ends) - 1)
        per_epoch = int(trainer.num_training_batches)
        remaining = (int(trainer.max_epochs) - trainer.current_epoch) * per_epoch - (batch_idx + 1)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            remaining = min(remaining, trainer.max_steps - trainer.global_step)
        hours = remaining * seconds / 3600
        if hours <= self.limit_hours:  # (None never gets here: on_train_start marks the run done)
            return
        device = trainer.strategy.root_device.type
        gpu = "train on a GPU (accelerator='gpu'), " if device == "cpu" else ""
        warnings.warn(
            f"This training run will take about {duration(hours)}: {remaining:,} more steps at {seconds:.2g} s each "
            f"on {device} (early stopping may end it sooner). A step's cost grows with the gene anchors: this model "
            f"has {self.cost_drivers}. To cut it, select features before setup_mudata (highly variable genes, the "
            f"peaks open in the most cells: docs/own_data.md, 'Select features first'), {gpu}or pass max_epochs=. "
            f"hc.settings.long_run_hours (now {self.limit_hours:g}) sets when this warning comes; None turns it off.",
            HoloCellWarning,
            stacklevel=2,
        )


__all__ = ["RunLengthWarning"]
