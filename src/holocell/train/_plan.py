"""Lightning training plan and data module for :class:`~holocell.nn.HoloCellModule`."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch

from ..data._mosaic import MosaicArrays, make_loader
from ..data._streaming import BackedMosaicArrays, make_chunked_loader
from ..nn import HoloCellModule


class TrainingPlan(pl.LightningModule):
    """Optimises the masked-diffusion loss with AdamW, linear warm-up and cosine decay.

    Parameters
    ----------
    module
        The holocell torch module.
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay, applied to matrices only (not to biases, norms or embeddings' zeros).
    warmup_steps
        Linear warm-up length in optimiser steps.
    total_steps
        Steps of the cosine schedule (the run length); the rate stays at its floor after.
    ema_decay
        If set, keep an exponential moving average of the weights (updated every step, used for
        validation and copied into the module when training ends). ``None`` disables it.
    """

    def __init__(
        self,
        module: HoloCellModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        total_steps: int = 10_000,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self._val_seed = 1234
        self.ema_decay = ema_decay
        self._ema: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ weight averaging
    def _float_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if v.is_floating_point()}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema_decay is None:
            return
        with torch.no_grad():
            state = self._float_state()
            if self._ema is None:
                self._ema = {k: v.detach().clone() for k, v in state.items()}
                return
            for k, v in state.items():
                self._ema[k].lerp_(v.detach(), 1.0 - self.ema_decay)

    def _swap_ema(self) -> None:
        """Exchange the live weights and the averaged ones."""
        if self._ema is None:
            return
        with torch.no_grad():
            state = self._float_state()
            for k, v in state.items():
                live = v.detach().clone()
                v.copy_(self._ema[k])
                self._ema[k] = live

    def on_validation_epoch_start(self) -> None:
        self._swap_ema()

    def on_validation_epoch_end(self) -> None:
        self._swap_ema()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._ema is not None:
            checkpoint["holocell_ema"] = {k: v.detach().cpu() for k, v in self._ema.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        ema = checkpoint.get("holocell_ema")
        if ema is not None and self.ema_decay is not None:
            device = next(self.module.parameters()).device
            self._ema = {k: v.to(device) for k, v in ema.items()}

    def on_train_end(self) -> None:
        self._swap_ema()  # leave the averaged weights in the module
        self._ema = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.module.loss(batch)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(
                f"holocell training loss is {out.loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); training stopped. Lower the learning rate "
                "(train(lr=...)), or check the input counts for extreme values."
            )
        n = batch["present"].shape[0]
        self.log("train_loss", out.loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=n)
        for m, v in out.per_modality.items():
            self.log(f"train_loss_{m}", v, on_epoch=True, on_step=False, batch_size=n)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # same masks every epoch, so validation curves are comparable
        generator = torch.Generator(device=batch["present"].device).manual_seed(self._val_seed + batch_idx)
        out = self.module.loss(batch, generator=generator)
        self.log(
            "validation_loss", out.loss, prog_bar=True, on_epoch=True, batch_size=batch["present"].shape[0]
        )

    def configure_optimizers(self):
        decay = [p for p in self.module.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.module.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            betas=(0.9, 0.98),
        )

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MosaicDataModule(pl.LightningDataModule):
    """Train / validation loaders over in-memory or backed (streamed) mosaic arrays.

    In-memory :class:`~holocell.data._mosaic.MosaicArrays` are shuffled cell by cell. Backed
    :class:`~holocell.data._streaming.BackedMosaicArrays` are streamed from disk and shuffled by
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
    ) -> None:
        super().__init__()
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
            return make_chunked_loader(
                self.arrays,
                self.train_indices,
                batch_size=self.batch_size,
                shuffle=True,
                seed=self.seed,
                drop_last=drop_last,
                block_size=self.block_size,
                blocks_per_buffer=self.blocks_per_buffer,
            )
        return make_loader(
            self.arrays,
            self.train_indices,
            batch_size=self.batch_size,
            shuffle=True,
            seed=self.seed,
            drop_last=drop_last,
        )

    def val_dataloader(self):
        if len(self.validation_indices) == 0:
            return []
        return make_loader(self.arrays, self.validation_indices, batch_size=self.batch_size)


def split_indices(n_cells: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation split of ``range(n_cells)``."""
    if not 0.0 <= validation_size < 1.0:
        raise ValueError(f"validation_size must be in [0, 1), got {validation_size}.")
    perm = np.random.default_rng(seed).permutation(n_cells)
    n_val = int(round(validation_size * n_cells))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
