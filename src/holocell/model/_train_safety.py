"""What :meth:`holocell.HoloCell.train` checks and keeps around a run: the precisions it can run, and the weights of
a run that fails.

Lightning trains the module in place: a run that fails at step 3 (a NaN loss from a too high learning rate, a
precision that casts the weights to float64 and then meets 32-bit inputs) would leave a trained model with diverged
or cast weights, still marked trained, whose every later call fails or returns NaN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

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


#: torch DataLoader settings that users of scvi-tools (``datasplitter_kwargs``) or of plain Lightning pass
LOADER_ARGUMENTS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "multiprocessing_context")


def check_loader_arguments(trainer_kwargs: Mapping) -> None:
    """Refuse DataLoader settings given to ``train()`` (directly or in scvi-tools' ``datasplitter_kwargs``), before
    any work: they reached Lightning's ``Trainer``, whose "unexpected keyword argument" did not say that holocell's
    loaders take none."""
    given = [k for k in LOADER_ARGUMENTS if k in trainer_kwargs]
    nested = trainer_kwargs.get("datasplitter_kwargs")
    if isinstance(nested, Mapping):
        given += [f"datasplitter_kwargs[{k!r}]" for k in LOADER_ARGUMENTS if k in nested]
    if not given:
        return
    raise TypeError(
        f"train() got {', '.join(given)}: holocell's data loaders take no DataLoader settings. They read the "
        "mini-batches in the main process, without worker processes (a backed .h5mu is streamed chunk by chunk, "
        "docs/streaming.md), so leave these out. The loading settings train() takes are batch_size= (cells per "
        "mini-batch and device) and validation_size= (fraction of cells held out); they replace scvi-tools' "
        "datasplitter_kwargs."
    )


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


__all__ = [
    "LOADER_ARGUMENTS",
    "SUPPORTED_PRECISIONS",
    "check_loader_arguments",
    "check_precision",
    "weights_kept_on_failure",
]
