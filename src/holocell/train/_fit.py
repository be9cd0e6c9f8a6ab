"""A training run with Lightning: split, trainer, callbacks, the epoch history, and the fit itself.

:meth:`holocell.HoloCell.train` calls :func:`fit`; nothing here knows about AnnData.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import Logger

from .._settings import settings
from .._warnings import HoloCellWarning
from ..data.arrays import BackedMosaicArrays, MosaicArrays
from ..nn import HoloCellModule
from ._config import TrainingConfig, run_settings
from ._plan import HISTORY_KEY, MosaicDataModule, TrainingPlan, logged_rows, split_indices, warn_split
from ._processes import WeightEMA, allow_unused_parameters, check_worker_processes, history_handed_back
from ._resume import check_checkpoint_dir, check_resumed_run, check_same_model, epochs_done, read_checkpoint
from ._rng import global_random_state_kept
from ._run_marker import run_claimed


class HistoryLogger(Logger):
    """A Lightning logger that keeps the epoch-level metrics in memory (``model.history_``).

    Lightning logs the validation metrics and the training-epoch metrics of an epoch in separate calls,
    each tagged with the epoch; :meth:`frame` joins them into one row per epoch.

    It writes no file. It comes after the run's own loggers (``train(logger=...)``), so Lightning's folders
    (``trainer.log_dir``, a ``ModelCheckpoint`` without ``dirpath``) are theirs, as in plain Lightning. Without one,
    :attr:`save_dir` is Lightning's default, ``<default_root_dir>/lightning_logs/version_<N>`` (a new ``N`` per run,
    made only when something is written there), and :attr:`name` and :attr:`version` are empty: a ``ModelCheckpoint``
    writes to ``<save_dir>/checkpoints``, as under Lightning's default logger.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []
        #: Where Lightning's default logger would put its folders (the trainer's ``default_root_dir``; set by fit).
        self.default_root_dir: str | None = None
        self.lead: Logger | None = None  # the run's own first logger, if any (set by fit)
        self._save_dir: str | None = None

    @property
    def name(self) -> str:
        """Logger name (empty: :attr:`save_dir` is the run's whole folder)."""
        return ""

    @property
    def version(self) -> int | str:
        """The run's own first logger's version (the progress bar shows it once), else empty (see above)."""
        return "" if self.lead is None else self.lead.version

    @property
    def save_dir(self) -> str | None:
        """``<default_root_dir>/lightning_logs/version_<N>``, the first ``N`` free there (fixed at first use)."""
        if self._save_dir is None and self.default_root_dir is not None:
            logs = os.path.join(self.default_root_dir, "lightning_logs")
            fs = get_filesystem(logs)  # a local folder or s3://...
            found = [os.path.basename(str(p).rstrip("/")) for p in fs.ls(logs, detail=False)] if fs.isdir(logs) else []
            taken = [int(name[8:]) for name in found if name.startswith("version_") and name[8:].isdigit()]
            self._save_dir = os.path.join(logs, f"version_{max(taken, default=-1) + 1}")
        return self._save_dir

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Hyper-parameters are not logged (they are in the model's configs)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record one call's metrics (they carry their ``epoch``)."""
        self.rows.append({k: float(v) for k, v in metrics.items()})

    def frame(self) -> pd.DataFrame:
        """One row per epoch (index ``epoch``), one column per logged metric, in order of first appearance."""
        rows = [r for r in self.rows if "epoch" in r]
        if not rows:
            return pd.DataFrame()
        frame = pd.DataFrame(rows)
        frame["epoch"] = frame["epoch"].astype(int)
        return frame.groupby("epoch", sort=True).first()


class EarlyStoppingAfterWarmup(pl.callbacks.EarlyStopping):
    """Early stopping on ``validation_loss`` that starts counting once the KL warm-up of the cell state is over.

    During the warm-up the training loss weighs the cell state's KL term by less than 1 while the validation
    loss always weighs it by 1, so the validation loss can rise for the whole warm-up while training is on course
    (the posterior spreads out before the KL weight reins it in). Counting those epochs stopped long runs at the
    end of the warm-up: a 60-epoch run (warm-up 20 epochs, patience 20) ended after 21 epochs with its best
    validation loss at epoch 0. Epochs before the warm-up ends neither count towards ``patience`` nor set the
    best score.

    Parameters
    ----------
    patience
        Epochs without improvement, after the warm-up, before training stops.
    """

    def __init__(self, patience: int) -> None:
        super().__init__("validation_loss", patience=patience, mode="min")

    @staticmethod
    def _warming_up(pl_module: pl.LightningModule) -> bool:
        return isinstance(pl_module, TrainingPlan) and pl_module.warming_up()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._warming_up(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._warming_up(pl_module):
            super().on_validation_end(trainer, pl_module)


class RowFreeze:
    """Holds some rows of parameters at fixed values: zero gradient, and restored after every step of the
    optimizers it is attached to (:meth:`attach`), which also undoes decoupled weight decay.

    Parameters
    ----------
    module
        The module whose parameters are frozen.
    frozen
        Parameter name -> ``(n_rows,)`` bool, rows to hold.
    """

    def __init__(self, module: torch.nn.Module, frozen: dict[str, np.ndarray]) -> None:
        params = dict(module.named_parameters())
        self.rows: dict[str, tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = {}
        self._grad_hooks = []
        for key, rows in frozen.items():
            p = params[key]
            mask = torch.from_numpy(rows).to(p.device)
            self.rows[key] = (p, mask, p.detach()[mask].clone())
            shape = (-1,) + (1,) * (p.dim() - 1)
            self._grad_hooks.append(p.register_hook(_zero_rows(mask.view(shape))))

    @torch.no_grad()
    def restore(self) -> None:
        """Write the held values back into their rows."""
        for p, mask, values in self.rows.values():
            p[mask.to(p.device)] = values.to(p.device, p.dtype)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Restore the rows after every step of ``optimizer`` (and of no other); returns the hook handle."""
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.restore())

    def remove(self) -> None:
        """Remove the gradient hooks (the rows become trainable again)."""
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks = []


def _zero_rows(mask: torch.Tensor):
    """Gradient hook that zeroes the rows in ``mask``."""
    return lambda grad: grad.masked_fill(mask.to(grad.device), 0.0)


class RowFreezeCallback(pl.Callback):
    """Attaches a :class:`RowFreeze` to the optimizers of this training run only, for the run's length."""

    def __init__(self, freeze: RowFreeze) -> None:
        self.freeze = freeze
        self._handles = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hook the run's optimizers (created by the strategy just before)."""
        self._handles = [self.freeze.attach(opt) for opt in trainer.optimizers]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Unhook them."""
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass
class FitResult:
    """What a training run leaves behind.

    Attributes
    ----------
    train_indices, validation_indices
        Cells of each split.
    history
        One row per epoch of the logged losses (see :class:`HistoryLogger`).
    device
        Where training ran (single-process runs leave the module there).
    """

    train_indices: np.ndarray
    validation_indices: np.ndarray
    history: pd.DataFrame
    device: torch.device | None


def fit(
    module: HoloCellModule,
    arrays: MosaicArrays | BackedMosaicArrays,
    config: TrainingConfig,
    *,
    max_epochs: int | None = None,
    batch_size: int = 32,
    validation_size: float = 0.1,
    early_stopping: bool = True,
    early_stopping_patience: int = 20,
    ema_decay: float | None = None,
    total_steps: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str | pl.strategies.Strategy = "auto",
    num_nodes: int = 1,
    enable_progress_bar: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    run_identity: dict | None = None,
    **trainer_kwargs,
) -> FitResult:
    """Train ``module`` on ``arrays`` with Lightning (arguments as in :meth:`holocell.HoloCell.train`).

    The run seeds the process-wide generators from ``seed`` (reproducible runs); Python's, NumPy's and torch's
    global random state and the environment are put back as they were afterwards (:mod:`holocell.train._rng`).

    Parameters
    ----------
    module
        The torch module; trained in place (left in eval mode).
    arrays
        Counts of the registered cells.
    config
        Optimiser and schedule settings of this run.
    ema_decay
        Keep an exponential moving average of the weights (:class:`WeightEMA`); ``None``: the last weights.
    total_steps
        Length of the cosine schedule (default: the run's optimiser steps per device).
    callbacks
        Extra Lightning callbacks (e.g. :class:`RowFreezeCallback`).
    run_identity
        What the model is (network sizes, feature space, cells; ``HoloCell._run_identity``): written into every
        checkpoint, and compared with a resumed checkpoint's (:mod:`holocell.train._resume`).
    **trainer_kwargs
        Passed to :class:`lightning.pytorch.Trainer`; a ``logger`` (or a list) comes before holocell's own
        (:class:`HistoryLogger`), so that its folder is ``trainer.log_dir``, as in plain Lightning. They
        override holocell's ``enable_model_summary=False``, ``num_sanity_val_steps=0``, ``config.gradient_clip_val``
        and ``enable_checkpointing`` (on when ``callbacks`` hold a checkpoint callback). ``limit_val_batches=0``
        leaves out early stopping.

    Raises
    ------
    KeyboardInterrupt
        The run was interrupted: Lightning's ``SystemExit(1)`` turned back into the interrupt (:func:`raise_interrupt`).
    ValueError
        ``resume=True`` without ``checkpoint_dir``; a fresh run into a folder holding an earlier run's checkpoints;
        a ``last.ckpt`` that is not a holocell checkpoint, or one of another model; no cell left for training;
        backed (streamed) ``arrays`` with a strategy that spawns its processes (``"ddp_spawn"``).
    """
    folder, resume_from = check_checkpoint_dir(checkpoint_dir, resume)
    checkpoint = None
    if resume_from is not None:  # before any work: is it a holocell checkpoint, of this model?
        state = {f"module.{k}": v for k, v in module.state_dict().items()}
        checkpoint = read_checkpoint(resume_from)
        check_same_model(resume_from, checkpoint, run_identity, state)
    elif resume:
        warnings.warn(
            f"No checkpoint at {folder / 'last.ckpt'}; training starts from scratch.", HoloCellWarning, stacklevel=3
        )
    # the run seeds the process-wide generators (and PL_GLOBAL_SEED / PL_SEED_WORKERS) to be reproducible;
    # the user's random streams and environment are put back afterwards, also when the run fails
    start = 0 if checkpoint is None else epochs_done(checkpoint)  # a resumed run goes on from its epoch
    with global_random_state_kept():  # resumed: other masking draws than epoch 0's (the data order is fast-forwarded)
        pl.seed_everything(seed if start == 0 else (seed + 7919 * start) % 2**32, verbose=False)
        train_idx, val_idx = split_indices(arrays.n_cells, validation_size, seed)
        if len(train_idx) == 0:
            raise ValueError(
                f"validation_size={validation_size} holds out {len(val_idx)} of the {arrays.n_cells} cells, leaving no cell "
                f"to train on. Lower validation_size (e.g. 0.1) so that at least one cell, better a batch of "
                f"batch_size={batch_size}, remains for training."
            )
        warn_split(arrays, train_idx, val_idx, validation_size, early_stopping)
        steps_per_epoch = max(1, len(train_idx) // batch_size)
        if max_epochs is None:
            max_epochs = config.default_epochs(steps_per_epoch)
        run_setup = run_settings(seed, validation_size, batch_size, ema_decay, config)
        if checkpoint is not None:  # epochs left to train; the run's own settings
            check_resumed_run(resume_from, checkpoint, max_epochs, run_setup)
        history = HistoryLogger()
        if checkpoint is not None:  # a resumed run's history_ starts with the epochs the checkpoint logged
            history.rows.extend(logged_rows(checkpoint.get(HISTORY_KEY)))
        loggers = [*extra_loggers(trainer_kwargs.pop("logger", None)), history]  # the user's first decides log_dir
        callbacks = list(callbacks)
        if ema_decay is not None:
            callbacks.append(WeightEMA(ema_decay))
        if early_stopping and len(val_idx) > 0 and trainer_kwargs.get("limit_val_batches") != 0:  # 0: no validation
            callbacks.append(EarlyStoppingAfterWarmup(early_stopping_patience))
        if folder is not None:
            # no version counter: a run writes its own last.ckpt (a fresh run into a folder holding another run's is
            # refused above), so resume=True always reads the latest checkpoint of the run it continues
            callbacks.append(
                pl.callbacks.ModelCheckpoint(
                    dirpath=folder, filename="{epoch}-{step}", save_top_k=1, save_last=True, enable_version_counter=False
                )
            )
        trainer_kwargs.setdefault("log_every_n_steps", 1)  # only epoch-level metrics are logged
        # holocell's defaults for these Trainer arguments; the caller's (trainer_kwargs) win
        own = {"enable_model_summary": False, "num_sanity_val_steps": 0, "gradient_clip_val": config.gradient_clip_val,
               "enable_checkpointing": any(isinstance(c, pl.callbacks.Checkpoint) for c in callbacks)}  # fmt: skip
        with settings.lightning_logging():
            trainer = pl.Trainer(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                num_nodes=num_nodes,
                callbacks=callbacks,
                enable_progress_bar=enable_progress_bar,
                logger=loggers,
                **{**own, **trainer_kwargs},
            )
            history.default_root_dir, history.lead = trainer.default_root_dir, (loggers[0] if len(loggers) > 1 else None)
            check_worker_processes(trainer, arrays, strategy)  # before any work
            allow_unused_parameters(trainer, arrays, module.modalities)  # a mosaic mini-batch may lack a modality
            # each device sees 1/world_size of the mini-batches (in memory: Lightning's sampler; streamed: ChunkedBatches)
            steps_per_device = max(1, -(-steps_per_epoch // trainer.world_size))
            steps = max_epochs * steps_per_device if total_steps is None else total_steps
            plan = TrainingPlan(module, config, total_steps=steps, run_identity=run_identity, checkpoint_dir=folder)
            plan.history_rows, plan.run_settings = history.rows, run_setup
            datamodule = MosaicDataModule(arrays, train_idx, val_idx, batch_size, seed, start_epoch=start)
            # Lightning keeps each submodule's mode: a module left in eval mode by an earlier fit, load or
            # transfer would train without dropout (and Lightning would warn about it)
            module.train()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__`.*")  # streaming
                warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated")  # Lightning's own
                warnings.filterwarnings("ignore", message="Total length of .* across ranks is zero")  # no validation cell
                if folder is not None:  # it holds the run's marker (resumed, its checkpoints); others' are refused
                    ours = re.escape(os.path.realpath(folder))  # only holocell's own callback: a user's warns as usual
                    warnings.filterwarnings("ignore", message=f"Checkpoint directory {ours} exists and is not empty")
                try:
                    # one run at a time in checkpoint_dir; rank 0's epoch rows come back from spawned / forked workers
                    with run_claimed(folder, resume_from is not None), history_handed_back(trainer, history.rows):
                        trainer.fit(plan, datamodule=datamodule, ckpt_path=None if resume_from is None else str(resume_from), weights_only=True)
                except SystemExit as exit_:
                    raise_interrupt(trainer, exit_, module)
                    raise
        device = trainer.strategy.root_device if trainer.world_size == 1 else None
        module.eval()
        return FitResult(train_idx, val_idx, history.frame(), device)


def raise_interrupt(trainer: pl.Trainer, exit_: SystemExit, module: torch.nn.Module) -> None:
    """Lightning answers Ctrl+C (a ``KeyboardInterrupt``) in ``trainer.fit`` with ``sys.exit(1)``, so a script's
    ``except KeyboardInterrupt`` never ran: raise the ``KeyboardInterrupt`` again, with ``module`` in eval mode, on
    the device it trained on (as after a finished run), holding the weights the run reached. Any other
    ``SystemExit`` is left to the caller."""
    if trainer.interrupted and isinstance(exit_.__context__, KeyboardInterrupt):
        if trainer.world_size == 1:  # Lightning's teardown moved it to the CPU
            module.to(trainer.strategy.root_device)
        module.eval()
        raise KeyboardInterrupt(
            f"Training interrupted in epoch {trainer.current_epoch}: the model keeps the weights the run reached "
            "(history_ and is_trained_ are not updated)."
        ) from None


def extra_loggers(logger) -> list[Logger]:
    """The run's ``logger=`` as a list of Lightning loggers beside holocell's own (which fills ``model.history_``):
    ``None`` / ``False``: none; a :class:`~lightning.pytorch.loggers.Logger` or a list of them."""
    if logger is None or logger is False:
        return []
    items = list(logger) if isinstance(logger, list | tuple) else [logger]
    if not all(isinstance(x, Logger) for x in items):
        raise ValueError(
            f"logger={logger!r}: holocell always logs the epoch losses to model.history_ with its own logger; pass a "
            "Lightning logger (e.g. lightning.pytorch.loggers.CSVLogger('logs')) or a list of them to log elsewhere "
            "as well, or leave logger out."
        )
    return items


KL_PER_DIMENSION_LIMIT = 100.0
"""Mean KL of the cell state per dimension of ``z`` (nats per cell) above which a run is reported as diverged: a
posterior mean about 14 prior standard deviations from 0 in every dimension. Converged runs stay far below it."""


def cell_state_diverged(history: pd.DataFrame, n_latent: int) -> bool:
    """Whether the cell state of a run has diverged: its last epoch's mean KL per cell (``train_loss_kl``) is not
    finite or above :data:`KL_PER_DIMENSION_LIMIT` times ``n_latent``. ``False`` for a run without a cell state."""
    if "train_loss_kl" not in history or history.empty:
        return False
    kl = float(history["train_loss_kl"].iloc[-1])
    return not (np.isfinite(kl) and kl <= KL_PER_DIMENSION_LIMIT * n_latent)


def check_cell_state(history: pd.DataFrame, n_latent: int) -> None:
    """Warn when the cell state of a run has diverged (its last epoch's mean KL far above any fitted posterior).

    Parameters
    ----------
    history
        ``model.history_`` of the run (its ``train_loss_kl`` column: mean KL per cell of each epoch).
    n_latent
        Size of ``z``.
    """
    if not cell_state_diverged(history, n_latent):
        return
    kl = float(history["train_loss_kl"].iloc[-1])
    warnings.warn(
        f"The cell state diverged in training: its KL from the prior is {kl:.4g} nats per cell in the last epoch "
        f"(a fitted {n_latent}-dimensional state stays below {KL_PER_DIMENSION_LIMIT * n_latent:.0f}), so its "
        "posterior means are far outside the prior and the embedding and generation are unreliable. Train again "
        "with a lower learning rate (train(lr=...)), a shorter KL warm-up (HoloCell(..., kl_warmup=...)) or, if "
        "you lowered it, a kl_weight closer to 1; "
        "model.history_ shows when train_loss_kl started to grow.",
        HoloCellWarning,
        stacklevel=3,
    )


def run_config(base: TrainingConfig, lr: float | None, plan_kwargs: dict | None) -> tuple[TrainingConfig, dict]:
    """The run's :class:`TrainingConfig` (``base`` with ``plan_kwargs`` and ``lr`` applied) and the
    plan arguments that are not config fields (``ema_decay``, ``total_steps``)."""
    overrides = dict(plan_kwargs or {})
    extra = {k: overrides.pop(k) for k in ("ema_decay", "total_steps") if k in overrides}
    if lr is not None:
        overrides["lr"] = lr
    try:
        return replace(base, **overrides), extra
    except TypeError as err:
        raise TypeError(f"Unknown plan_kwargs: {err}; use fields of holocell.train.TrainingConfig.") from err


__all__ = ["FitResult", "HistoryLogger", "RowFreeze", "RowFreezeCallback", "WeightEMA", "fit", "run_config"]
