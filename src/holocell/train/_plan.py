"""Lightning training plan and data module for :class:`~holocell.nn.HoloCellModule`."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from .._warnings import HoloCellWarning, user_stacklevel
from ..data.arrays import BackedMosaicArrays, MosaicArrays, make_chunked_loader, make_loader
from ..nn import HoloCellModule
from ._config import TrainingConfig
from ._resume import IDENTITY_KEY, SETTINGS_KEY, relocate_checkpoint_paths

#: Key of the epoch metrics logged so far in a training checkpoint (a resumed run's ``history_`` continues them).
#: Lightning writes the checkpoint after the epoch's validation and before it logs the epoch's training metrics,
#: so the checkpoint's last epoch lacks those (NaN in ``history_``).
HISTORY_KEY = "holocell_history"


def logged_rows(rows) -> list[dict[str, float]]:
    """The metric rows a training checkpoint recorded (:data:`HISTORY_KEY`); rows that are
    not ``{name: number}`` are skipped (checkpoints written before the key have none)."""
    if not isinstance(rows, list):
        return []
    ok = [r for r in rows if isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, int | float) for k, v in r.items())]
    return [{k: float(v) for k, v in r.items()} for r in ok]


class TrainingPlan(pl.LightningModule):
    """Optimises the masked-diffusion loss with AdamW, linear warm-up and cosine decay.

    The weight average (EMA) is a callback of the run, :class:`~holocell.train.WeightEMA`.

    Parameters
    ----------
    module
        The holocell torch module.
    config
        Optimiser and schedule settings (default :class:`TrainingConfig`).
    total_steps
        Steps of the cosine schedule (the run length); the rate stays at its floor after.
    run_identity
        What the model is (network sizes, feature space, cells), written into every checkpoint so that a resumed
        run can check it continues the same model (:mod:`holocell.train._resume`).
    checkpoint_dir
        The run's checkpoint folder, if any (a resumed run that moved re-points the recorded paths there).
    **overrides
        :class:`TrainingConfig` fields to override, e.g. ``lr=3e-4``.
    """

    def __init__(
        self,
        module: HoloCellModule,
        config: TrainingConfig | None = None,
        *,
        total_steps: int = 10_000,
        run_identity: dict | None = None,
        checkpoint_dir: Path | None = None,
        **overrides,
    ) -> None:
        super().__init__()
        self.module = module
        self.config = replace(config or TrainingConfig(), **overrides)
        self.total_steps = max(total_steps, self.config.warmup_steps + 1)
        self.run_identity = run_identity
        self.checkpoint_dir = checkpoint_dir
        self.history_rows: list[dict[str, float]] | None = None  # the run's HistoryLogger rows (set by fit)
        self.run_settings: dict | None = None  # seed, split, batch size, schedule (set by fit; resume compares)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the run identity and the metrics logged so far in the checkpoint (plain numbers and strings:
        ``weights_only`` loading reads them)."""
        if self.run_identity is not None:
            checkpoint[IDENTITY_KEY] = self.run_identity
        if self.history_rows is not None:
            checkpoint[HISTORY_KEY] = [dict(row) for row in self.history_rows]
        if self.run_settings is not None:
            checkpoint[SETTINGS_KEY] = dict(self.run_settings)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming in a checkpoint folder that has moved since: re-point the recorded checkpoint paths at it."""
        if self.checkpoint_dir is not None:
            relocate_checkpoint_paths(checkpoint, self.checkpoint_dir)

    def kl_scale(self) -> float:
        """Warm-up factor of the cell state's KL term: rises linearly from 0 to 1 over the objective's
        ``kl_warmup`` fraction of the run (1 for validation)."""
        warmup = self.module.objective.kl_warmup * self.total_steps
        return 1.0 if warmup < 1 else min(1.0, (self.global_step + 1) / warmup)

    def warming_up(self) -> bool:
        """Whether the cell state's KL warm-up is still under way (never for a model without a cell state)."""
        return bool(self.module.network.config.cell_state) and self.kl_scale() < 1.0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.module.loss(batch, kl_scale=self.kl_scale())
        if not torch.isfinite(out.loss):
            raise FloatingPointError(
                f"holocell training loss is {out.loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); training stopped. Lower the learning rate "
                "(train(lr=...)), or check the input counts for extreme values."
            )
        n = batch["present"].shape[0]
        sync = self._distributed()
        self.log("train_loss", out.loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=n, sync_dist=sync)
        for m, (v, size) in self._logged_parts(out.per_modality, n, sync).items():
            self.log(f"train_loss_{m}", v, on_epoch=True, on_step=False, batch_size=size, sync_dist=sync)
        return out.loss

    def _distributed(self) -> bool:
        """Whether the run has several processes: its epoch losses are then averaged over all of them
        (``sync_dist``), so that ``history_`` and early stopping see every cell, not one process's share."""
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def _logged_parts(self, parts: dict[str, torch.Tensor], n: int, sync: bool) -> dict[str, tuple[torch.Tensor, int]]:
        """The loss parts to log with their weights (cells). Synchronised over processes, every process must log
        the same names in the same order every step, so a modality missing from this mini-batch is logged with
        weight 0 (it does not change the epoch's mean; an epoch in which no process saw it logs NaN)."""
        if not sync:
            return {m: (v, n) for m, v in parts.items()}
        modalities = self.module.modalities
        none = (torch.zeros((), device=self.device), 0)
        logged = {m: (parts[m], n) if m in parts else none for m in modalities}
        return {**logged, **{m: (v, n) for m, v in parts.items() if m not in modalities}}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # same masks every epoch, so validation curves are comparable
        generator = torch.Generator(device=batch["present"].device).manual_seed(self.config.validation_seed + batch_idx)
        out = self.module.loss(batch, generator=generator)
        self.log(
            "validation_loss",
            out.loss,
            prog_bar=True,
            on_epoch=True,
            batch_size=batch["present"].shape[0],
            sync_dist=self._distributed(),
        )

    def _fused_optimizer(self) -> bool:
        """Whether AdamW runs fused (one kernel over all parameters; about 4x faster optimiser steps on a CPU,
        docs/design.md). Only where it is safe: full precision (mixed precision's gradient clipping refuses an
        optimiser that unscales internally), parameters on CPU or CUDA, and a torch with a fused CPU AdamW (2.4)."""
        try:
            precision = str(self.trainer.precision)
        except RuntimeError:  # not attached to a trainer
            return False
        devices = {p.device.type for p in self.module.parameters()}
        return precision in ("32-true", "32") and devices <= {"cpu", "cuda"} and torch.__version__ >= "2.4"

    def configure_optimizers(self):
        c = self.config
        decay = [p for p in self.module.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.module.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=c.lr,
            betas=c.betas,
            **({"fused": True} if self._fused_optimizer() else {}),
        )

        def schedule(step: int) -> float:
            if step < c.warmup_steps:
                return (step + 1) / c.warmup_steps
            progress = min(1.0, (step - c.warmup_steps) / (self.total_steps - c.warmup_steps))
            return c.lr_floor + (1 - c.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MosaicDataModule(pl.LightningDataModule):
    """Train / validation loaders over in-memory or backed (streamed) mosaic arrays.

    In-memory :class:`~holocell.data.arrays.MosaicArrays` are shuffled cell by cell. Backed
    :class:`~holocell.data.arrays.BackedMosaicArrays` are streamed from disk and shuffled by
    chunk (block order, then cells within a buffer of blocks), so memory stays flat in the number
    of cells; see :mod:`holocell.data._streaming`.

    Parameters
    ----------
    arrays
        Counts of the registered cells.
    train_indices, validation_indices
        Cells of each split.
    batch_size
        Cells per mini-batch.
    seed
        Seed of the shuffling.
    block_size, blocks_per_buffer
        Streaming only: consecutive cells per disk read, and blocks shuffled together.
    """

    def __init__(
        self,
        arrays: MosaicArrays | BackedMosaicArrays,
        train_indices: np.ndarray,
        validation_indices: np.ndarray,
        batch_size: int,
        seed: int,
        block_size: int = 1024,
        blocks_per_buffer: int = 8,
        start_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.start_epoch = start_epoch  # a resumed run's first epoch: the shuffle goes on from there
        self.arrays = arrays
        self.train_indices = train_indices
        self.validation_indices = validation_indices
        self.batch_size = batch_size
        self.seed = seed
        self.block_size = block_size
        self.blocks_per_buffer = blocks_per_buffer

    def train_dataloader(self):
        drop_last = len(self.train_indices) > self.batch_size
        if isinstance(self.arrays, BackedMosaicArrays):
            # streamed batches are shared out among the processes here (Lightning's distributed sampler
            # does it for the in-memory loader)
            rank, world_size = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
            return make_chunked_loader(
                self.arrays,
                self.train_indices,
                batch_size=self.batch_size,
                shuffle=True,
                seed=self.seed,
                drop_last=drop_last,
                block_size=self.block_size,
                blocks_per_buffer=self.blocks_per_buffer,
                rank=rank,
                world_size=world_size,
                start_epoch=self.start_epoch,
            )
        return make_loader(
            self.arrays,
            self.train_indices,
            batch_size=self.batch_size,
            shuffle=True,
            seed=self.seed,
            drop_last=drop_last,
            start_epoch=self.start_epoch,
        )

    def val_dataloader(self):
        if len(self.validation_indices) == 0:
            return []
        return make_loader(self.arrays, self.validation_indices, batch_size=self.batch_size)


def warn_split(arrays, train_idx: np.ndarray, val_idx: np.ndarray, validation_size: float, early_stopping: bool) -> None:
    """:class:`~holocell.HoloCellWarning`s about a split: no validation cell although one was asked for (early
    stopping is then off), and batches whose every cell landed in validation (their decoder rows never train)."""
    n_cells = len(train_idx) + len(val_idx)
    if early_stopping and validation_size > 0 and len(val_idx) == 0:
        warnings.warn(
            f"validation_size={validation_size} holds out no cell of the {n_cells}, so early stopping is "
            f"off and the run lasts max_epochs. Raise validation_size to at least {1 / n_cells:.3g} "
            "for early stopping, or pass early_stopping=False to train on every cell without this warning.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    batch = np.asarray(arrays.batch)
    unseen = np.setdiff1d(np.unique(batch[val_idx]), np.unique(batch[train_idx]))
    if len(unseen):
        warnings.warn(
            f"The random split of validation_size={validation_size} put every cell of {len(unseen)} batch(es) in "
            f"validation (batch codes {unseen[:5].tolist()}): the model never trains on them, and their decoder rows "
            "stay as initialised. Lower validation_size, or pass another seed.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )


def split_indices(n_cells: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation split of ``range(n_cells)``."""
    if not 0.0 <= validation_size < 1.0:
        raise ValueError(f"validation_size must be in [0, 1), got {validation_size}.")
    perm = np.random.default_rng(seed).permutation(n_cells)
    n_val = int(round(validation_size * n_cells))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
