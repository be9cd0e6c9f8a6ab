"""The process-wide random state around a training run: :func:`global_random_state_kept`.

A run seeds Python's :mod:`random`, NumPy's global generator and torch's generators with
:func:`lightning.pytorch.seed_everything` (so that it is reproducible), which also sets two environment
variables. The user's own random streams must not depend on whether a model was trained in between, so the
run saves all of them first and puts them back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

SEED_ENVIRONMENT = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")
"""The environment variables that :func:`lightning.pytorch.seed_everything` sets."""


@contextlib.contextmanager
def global_random_state_kept() -> Iterator[None]:
    """Run the block, then put the process-wide random state back as it was before it (also on an error).

    Saved and restored: Python's :mod:`random`, NumPy's global generator (``np.random``), torch's CPU
    generator, the CUDA (and Apple MPS) generators, and the environment variables ``PL_GLOBAL_SEED`` and
    ``PL_SEED_WORKERS``.
    Inside the block they are the block's to seed and draw from (a training run seeds them for reproducibility).
    CUDA is not started here; when it starts inside the block, its generators keep the block's seeding.

    Yields
    ------
    None
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what the user draws from)
    torch_state = torch.get_rng_state()
    environment = {key: os.environ.get(key) for key in SEED_ENVIRONMENT}
    cuda_states = _cuda_state()
    mps_state = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.set_rng_state(torch_state)
        _restore_cuda(cuda_states)
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cuda_state() -> list[torch.Tensor] | None:
    """The CUDA generators' states when CUDA runs (``None`` otherwise)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _restore_cuda(states: list[torch.Tensor] | None) -> None:
    """Put back what :func:`_cuda_state` saved. CUDA started inside the block keeps the block's seeding: before it
    started there was no CUDA stream of the user's to put back (only private torch records of queued seeds)."""
    if states is not None:
        torch.cuda.set_rng_state_all(states)


__all__ = ["global_random_state_kept"]
