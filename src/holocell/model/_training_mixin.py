"""HoloCell.train (mixed into :class:`HoloCell`): the model's side of a training run.

The Lightning set-up, the epoch history and the run itself are in :mod:`holocell.train`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl

from .._settings import settings
from ..train import RunLengthWarning, fit
from ..train._devices import check_devices
from ..train._fit import check_cell_state, run_config
from ..train._resume import check_checkpoint_dir
from ._arguments import (
    as_callbacks,
    check_checkpointing,
    check_plan_extras,
    check_train_call,
    check_trainer_kwargs,
    check_training,
    clip_in_plan,
    progress_switch,
)
from ._train_safety import check_loader_arguments, check_precision, weights_kept_on_failure


class TrainingMixin:
    """:meth:`train`; sets ``is_trained_``, ``history_``, ``train_indices_`` and ``validation_indices_``."""

    def _run_identity(self) -> dict:
        """What this model is, for checkpoints to be resumed only into the same model: network sizes, modalities,
        features (counts and a sha256 of the anchors and names) and cells (count and a digest of their names)."""
        space = self.feature_space
        names = hashlib.sha256("\0".join(space.anchors).encode())
        for m in sorted(self.modalities_):
            names.update(("\1" + m + "\0" + "\0".join(map(str, space.maps[m].features))).encode())
        return {
            "network": {k: v for k, v in asdict(self.config).items() if isinstance(v, int | float | str | bool)},
            "modalities": dict(self.modalities_),
            "features": {m: len(space.maps[m].features) for m in sorted(self.modalities_)},
            "features_sha256": names.hexdigest(),
            "n_cells": int(self._fingerprint["n_obs"]),
            "cells_sha256": str(self._fingerprint["obs_names"]),
        }

    def _check_trainable(self) -> None:
        """Refuse a run with no trainable parameter (it failed in the first backward pass)."""
        if not any(p.requires_grad for p in self.module.parameters()):
            raise ValueError(
                "Nothing to train: every parameter of this model is frozen (requires_grad is False; freeze() leaves "
                "nothing trainable when the query data add no gene, peak or batch the reference lacks). Call "
                "model.unfreeze() to fine-tune all of it, or freeze only when the query data bring new features "
                "or batches."
            )

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        batch_size: int = 32,
        validation_size: float = 0.1,
        early_stopping: bool = True,
        early_stopping_patience: int = 20,
        lr: float | None = None,
        ema_decay: float | None = 0.995,
        seed: int = 0,
        enable_progress_bar: bool | None = None,
        plan_kwargs: dict | None = None,
        *,
        strategy: str | pl.strategies.Strategy = "auto",
        precision: str | int | None = None,
        num_nodes: int = 1,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress_bar: bool | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train by masked discrete diffusion with Lightning.

        Calling ``train`` again on a trained model (or on a transferred one) continues from its current weights
        as a new run: the learning-rate warm-up and cosine schedule, the KL warm-up, the weight average
        (``ema_decay``) and the epoch count start again, so ``train(2)`` then ``train(2)`` is not ``train(4)``;
        ``history_`` is replaced by the new run's epochs, and ``train_indices_`` / ``validation_indices_`` by its
        split. The validation cells are drawn from ``seed``: keep the same ``seed`` to keep them, as another seed
        holds out cells the earlier run trained on (an optimistic validation loss and early stopping). To
        continue an interrupted run instead, use ``checkpoint_dir`` with ``resume=True``.

        Parameters
        ----------
        max_epochs
            Epochs; by default about ``train_config.target_steps`` (1,500) optimiser steps, between
            ``train_config.min_epochs`` (20) and ``train_config.max_epochs`` (400) epochs.
        accelerator, devices
            Lightning device selection (``"cpu"``, ``"gpu"``, ``"auto"``; ``devices=8`` or ``[0, 1]``).
        batch_size
            Cells per mini-batch (per device).
        validation_size
            Fraction of cells held out to monitor the loss (and for early stopping); rounded to a number of
            cells. When that number is 0 the run has no early stopping (a ``HoloCellWarning`` says so, unless
            ``early_stopping=False``).
        early_stopping
            Stop when the validation loss has not improved for ``early_stopping_patience`` epochs, counted
            from the end of the cell state's KL warm-up (the validation loss weighs the KL fully, the
            training loss by the warm-up factor, so the two are not comparable before).
        lr
            Peak learning rate (AdamW, warm-up, cosine decay); default ``train_config.lr`` (2e-3).
        ema_decay
            Decay of the exponential moving average of the weights that the model keeps at the
            end of training (``None``: keep the last weights).
        seed
            Seeds the train/validation split, the shuffling and the diffusion masks of this run: the same seed
            gives the same trained model. The run seeds the process-wide generators for this; Python's
            ``random``, NumPy's and torch's global random state and ``os.environ`` are put back as they were
            when ``train`` returns (or raises).
        enable_progress_bar, progress_bar
            Show Lightning's progress bar (``None``: follow :data:`holocell.settings` ``.progress_bar``).
            ``progress_bar`` is the name the other holocell methods use, ``enable_progress_bar`` scvi-tools'; they
            are the same switch: give either (both with different values is refused).
        plan_kwargs
            :class:`~holocell.train.TrainingConfig` fields overriding ``train_config`` for this run.
        strategy
            Lightning strategy: ``"auto"``, ``"ddp"`` (several devices or nodes; the trained
            weights end up in the process that called ``train``), ``"ddp_spawn"``, ``"ddp_notebook"``, ...
            With several processes each device gets its share of the mini-batches (also when streaming a backed
            file), and the epoch losses in ``history_`` are averaged over all processes. A backed file cannot be
            streamed with ``"ddp_spawn"`` (refused before any work; use ``"ddp"`` or ``"ddp_fork"``).
        precision
            Lightning precision: ``"bf16-mixed"`` (GPU, or CPU autocast), ``"16-mixed"``, or ``None`` / ``32``
            (32-bit). Precisions that cast the weights (``"64"``, ``"16-true"``, ``"bf16-true"``) are refused: the
            network's inputs stay 32-bit.
        num_nodes
            Machines for multi-node DDP (launched by ``torchrun`` or SLURM, see the scaling docs).
        checkpoint_dir
            Write a Lightning checkpoint (``last.ckpt``) there at the end of every epoch. A fresh run
            (``resume=False``) needs a folder without the checkpoints of an earlier run: it is refused
            rather than writing beside them (holocell never deletes them).
        resume
            Continue from ``checkpoint_dir/last.ckpt`` (weights, optimiser, schedule, epoch and
            step) when it exists; start afresh, with a warning, when it does not. The checkpoint must
            be one that ``train`` wrote for this model (the same sizes, features and cells). Lightning
            checkpoints are loaded with ``weights_only=True``; resume only from checkpoints you
            wrote yourself. ``history_`` holds the whole run: the epochs the checkpoint logged (its last
            epoch without the training losses, which Lightning logs after writing it), then the new ones.
            The resumed epochs see the cells in the order the uninterrupted run would (not epoch 0's again);
            their masking draws come from a stream seeded by ``seed`` and the epoch reached, so the result is
            not bit-identical to an uninterrupted run. Pass the run's own ``seed``, ``validation_size``,
            ``batch_size``, ``ema_decay`` and learning rate: the optimiser's state (its learning rate
            included) comes from the checkpoint, the split from ``seed`` and ``validation_size``. A
            ``HoloCellWarning`` names each one that differs from the run's (checkpoints written before the
            fourteenth round do not record them and are not compared). A larger ``max_epochs`` extends the
            run; its learning-rate schedule is then laid out over the new length.
        **trainer_kwargs
            Passed to :class:`lightning.pytorch.Trainer`: ``callbacks`` (one or a list; ``None``: none)
            are added to holocell's own; a ``logger`` (or a list) comes before holocell's own (which fills
            ``history_`` and writes nothing), so ``trainer.log_dir`` and a ``ModelCheckpoint`` without ``dirpath``
            write under your first logger's folder, as in plain Lightning; without a ``logger`` they use
            Lightning's default ``lightning_logs/version_<N>`` (a new ``N`` per run) under ``default_root_dir``
            (default: the working directory), never ``checkpoint_dir``.
            ``gradient_clip_val`` overrides ``train_config.gradient_clip_val`` for this run (as
            ``plan_kwargs={"gradient_clip_val": ...}``; 0 means no clipping). ``enable_model_summary`` and
            ``num_sanity_val_steps`` default to off. Checkpointing is on exactly when ``checkpoint_dir`` is given
            or ``callbacks`` hold a ``ModelCheckpoint``. With ``limit_val_batches=0`` (no validation) there is no
            early stopping; the ``validation_size`` cells are still held out.

        Raises
        ------
        FloatingPointError
            When the training loss becomes NaN or infinite (naming the step). A run that fails, this way or
            any other, leaves the model's weights as they were before the call (not the diverged ones), on
            the device and in the dtype they had.
        ValueError
            Before any work: an ``accelerator`` / ``devices`` this machine lacks (``accelerator="gpu"`` without a
            GPU; the message names the values that work); nothing trainable (:meth:`freeze` froze every
            parameter); a fresh run into a ``checkpoint_dir`` holding an earlier run's checkpoints (pass
            ``resume=True`` to continue it); a ``last.ckpt`` to resume that is not a holocell checkpoint, or one
            of another model (other sizes, features or cells); a ``validation_size`` that leaves no cell to train
            on; an ``enable_checkpointing`` that contradicts ``checkpoint_dir`` / ``callbacks``; a backed MuData
            with a strategy that spawns its processes (``"ddp_spawn"``); ``enable_progress_bar`` and
            ``progress_bar`` both given, with different values, or either not ``True``, ``False``, ``"auto"`` or
            ``None``.
        TypeError
            Before any work: a scvi-tools ``train()`` argument holocell does not take (``train_size``,
            ``early_stopping_monitor``, ``datasplitter_kwargs``, ...); the message names holocell's equivalent.
            DataLoader settings (``num_workers``, ``pin_memory``, ...): holocell's loaders run in the main process.
        NotADirectoryError
            ``checkpoint_dir`` is a file.
        KeyboardInterrupt
            When the run is interrupted (Ctrl+C, "Interrupt kernel"; Lightning turns it into ``SystemExit(1)``).
            The model keeps the weights the run reached; ``is_trained_`` and ``history_`` are not updated.

        Warns
        -----
        HoloCellWarning
            When the cell state diverged: its mean KL in the last epoch is above 100 nats per dimension of ``z``
            (its means far outside the prior). Early stopping counts epochs only after the KL warm-up.
        """
        max_epochs, batch_size, early_stopping_patience, seed = check_train_call(
            max_epochs, batch_size, validation_size, early_stopping_patience, lr, seed, ema_decay
        )
        enable_progress_bar = progress_switch(enable_progress_bar, progress_bar)
        settings.show_progress(enable_progress_bar)  # a value such as "no" refused here, not after the data are read
        check_devices(accelerator, devices)  # e.g. "gpu" on a machine without one: before any data work
        check_loader_arguments(trainer_kwargs)
        check_trainer_kwargs(trainer_kwargs)
        overrides = check_training(plan_kwargs, "train(plan_kwargs=...)", upper_bounds=False)
        config, extra = run_config(self.train_config, lr, clip_in_plan(overrides, trainer_kwargs))
        check_plan_extras(extra)
        self._check_trainable()
        check_checkpoint_dir(checkpoint_dir, resume)  # again in fit(); here before the data are read
        if precision is not None:
            trainer_kwargs["precision"] = check_precision(precision)
        callbacks = [*self._train_callbacks(), RunLengthWarning(self._cost_drivers(), settings.long_run_hours),
                     *as_callbacks(trainer_kwargs.pop("callbacks", None))]
        check_checkpointing(trainer_kwargs, callbacks, checkpoint_dir)
        _, arrays = self._arrays(None)
        with weights_kept_on_failure(self.module):
            result = self._fit(arrays, config, extra, callbacks, trainer_kwargs, max_epochs, batch_size,
                               validation_size, early_stopping, early_stopping_patience, ema_decay, seed, accelerator,
                               devices, strategy, num_nodes, enable_progress_bar, checkpoint_dir, resume)  # fmt: skip
        if result.device is not None:  # Lightning hands the module back on the CPU; inference stays where training ran
            self.module.to(result.device)
        self.is_trained_ = True
        self.train_indices_, self.validation_indices_ = result.train_indices, result.validation_indices
        self.history_ = result.history
        check_cell_state(self.history_, self.module.network.config.n_latent)  # no KL logged without a cell state

    def _cost_drivers(self) -> str:
        """The sizes a training step's cost grows with, for :class:`~holocell.train.RunLengthWarning`."""
        names = {"rna": "RNA features", "atac": "peaks", "protein": "proteins"}
        maps = self.feature_space.maps
        sizes = ", ".join(f"{len(maps[m].anchor):,} {names[m]}" for m in self.modalities_ if m in maps)
        return f"{self.feature_space.n_anchors:,} gene anchors ({sizes})"

    def _fit(self, arrays, config, extra, callbacks, trainer_kwargs, max_epochs, batch_size, validation_size,
             early_stopping, early_stopping_patience, ema_decay, seed, accelerator, devices, strategy, num_nodes,
             enable_progress_bar, checkpoint_dir, resume):  # fmt: skip
        return fit(
            self.module,
            arrays,
            config,
            max_epochs=max_epochs,
            batch_size=batch_size,
            validation_size=validation_size,
            early_stopping=early_stopping,
            early_stopping_patience=early_stopping_patience,
            ema_decay=extra.get("ema_decay", ema_decay),
            total_steps=extra.get("total_steps"),
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            enable_progress_bar=settings.show_progress(enable_progress_bar),
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callbacks=callbacks,
            run_identity=self._run_identity(),
            **trainer_kwargs,
        )


__all__ = ["TrainingMixin"]
