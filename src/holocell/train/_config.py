"""Typed settings of a training run: optimiser, learning-rate schedule, clipping, default run length."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainingConfig:
    """Optimiser and schedule settings of :meth:`holocell.HoloCell.train`; saved in checkpoints (``"training"``).

    A model carries one (``model.train_config``, set with ``HoloCell(..., train_config=...)``); a run can
    override fields with ``train(lr=..., plan_kwargs={...})``.

    Attributes
    ----------
    lr
        Peak learning rate (AdamW). 2e-3 (with the cell state's KL warm-up over the first 10% of the run) led
        1e-3 (with a 33% warm-up) on embedding and prediction at three seeds on PBMC and SNARE-seq2
        (``docs/design.md``, "The schedule becomes the default").
    weight_decay
        AdamW weight decay, applied to matrices only (not to biases, norms or gates).
    betas
        AdamW betas. ``0.98`` rather than ``0.999``: the second-moment estimate adapts faster, the
        usual choice for transformers trained in a few thousand steps.
    warmup_steps
        Linear warm-up length in optimiser steps.
    lr_floor
        The cosine decay ends at ``lr_floor * lr`` (and stays there if training runs longer).
    gradient_clip_val
        Clip the global gradient norm to this value (``None``: no clipping).
    validation_seed
        Seed of the diffusion masks of the validation loss: the same masks every epoch, so the
        validation curve is comparable across epochs.
    target_steps
        Without ``max_epochs``, train for about this many optimiser steps...
    min_epochs, max_epochs
        ...but for at least ``min_epochs`` and at most ``max_epochs`` epochs.
    """

    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 50
    lr_floor: float = 0.05
    gradient_clip_val: float | None = 1.0
    validation_seed: int = 1234
    target_steps: int = 1500
    min_epochs: int = 20
    max_epochs: int = 400

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # a JSON list becomes a tuple again
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 1:
            raise ValueError("lr must be > 0, weight_decay >= 0 and warmup_steps >= 1.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        if not 0.0 <= self.lr_floor <= 1.0:
            raise ValueError(f"lr_floor must be in [0, 1], got {self.lr_floor!r}.")
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise ValueError("gradient_clip_val must be > 0 or None.")
        if not 1 <= self.min_epochs <= self.max_epochs or self.target_steps < 1:
            raise ValueError("Need 1 <= min_epochs <= max_epochs and target_steps >= 1.")

    def default_epochs(self, steps_per_epoch: int) -> int:
        """Epochs of a run without ``max_epochs``: about :attr:`target_steps` steps, within the epoch bounds."""
        epochs = -(-self.target_steps // max(1, steps_per_epoch))  # ceil
        return int(min(self.max_epochs, max(self.min_epochs, epochs)))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainingConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


def run_settings(seed: int, validation_size: float, batch_size: int, ema_decay, config) -> dict:
    """The settings of a run that a resumed run should repeat (plain numbers: ``weights_only`` loading reads them);
    ``config`` is the run's :class:`~holocell.train.TrainingConfig`. Not ``max_epochs``: a resumed run with more
    epochs is how a run is extended."""
    optimiser = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    return {"seed": int(seed), "validation_size": float(validation_size), "batch_size": int(batch_size),
            "ema_decay": None if ema_decay is None else float(ema_decay),
            **{f"train_config.{k}": v for k, v in optimiser.items()}}  # fmt: skip


__all__ = ["TrainingConfig", "run_settings"]
