"""What :meth:`holocell.HoloCell.train` checks and keeps around a run: the precisions it can run, and the weights of
a run that fails.

Lightning trains the module in place: a run that fails at step 3 (a NaN loss from a too high learning rate, a
precision that casts the weights to float64 and then meets 32-bit inputs) would leave a trained model with diverged
or cast weights, still marked trained, whose every later call fails or returns NaN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: Lightning precisions holocell runs: 32-bit weights, optionally with mixed-precision autocast
SUPPORTED_PRECISIONS = (32, "32", "32-true", "bf16-mixed", "16-mixed", "bf16", 16, "16")


def check_precision(precision):
    """``precision`` if holocell can train with it, else ``ValueError`` naming the supported values."""
    if isinstance(precision, bool) or precision not in SUPPORTED_PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not one holocell trains with: pass None (32-bit), 'bf16-mixed' or "
            f"'16-mixed' (mixed precision: 32-bit weights, autocast). Precisions that cast the weights ('64', "
            "'16-true', 'bf16-true') meet the network's 32-bit inputs and fail at the first step."
        )
    return precision


@contextlib.contextmanager
def weights_kept_on_failure(module: torch.nn.Module) -> Iterator[None]:
    """Run the block; if it raises an ``Exception``, put ``module``'s parameters and buffers back as they were (values,
    dtype, device) and re-raise. A ``KeyboardInterrupt`` keeps what the run reached, as an interrupted run should.

    The copy is kept on the CPU for the length of the block (the model's size in host memory).
    """
    state = module.state_dict(keep_vars=True)
    saved = {name: t.detach().to("cpu", copy=True) for name, t in state.items()}
    where = {name: (t.device, t.dtype) for name, t in state.items()}
    try:
        yield
    except Exception:
        current = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in current.items():
                device, dtype = where[name]
                tensor.data = saved[name].to(device=device, dtype=dtype)
        raise


__all__ = ["SUPPORTED_PRECISIONS", "check_precision", "weights_kept_on_failure"]
