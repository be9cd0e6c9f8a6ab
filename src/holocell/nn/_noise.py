"""Random numbers for the sampler, one stream per cell.

One generator running through a call's mini-batches gives a cell draws that depend on the cells before it and on
the batch size. :class:`RowNoise` gives every cell a generator of its own, seeded by the call's seed and the cell's
row in the data, so that its draws depend on neither (on one device: CPU and CUDA streams differ).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def row_seed(seed: int, row: int) -> int:
    """A 63-bit seed for ``row`` of a call seeded with ``seed`` (a hash, so that neighbouring seeds and rows give
    unrelated streams)."""
    digest = hashlib.blake2b(f"holocell:{int(seed)}:{int(row)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class RowNoise:
    """Uniform noise for a mini-batch of cells, each cell from its own seeded generator.

    Parameters
    ----------
    seed
        The call's seed.
    rows
        Each cell's row in the data (the same cell gets the same stream whatever the mini-batch it is in).
    device
        Where the noise is made.
    """

    def __init__(self, seed: int, rows: Iterable[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(row_seed(seed, r)) for r in rows]

    def rand(self, shape: tuple[int, ...]) -> torch.Tensor:
        """``shape`` uniform numbers in ``[0, 1)``; row ``b`` (``shape[0]`` = the number of cells) from cell ``b``'s
        stream."""
        if shape[0] != len(self.generators):
            raise ValueError(f"RowNoise holds {len(self.generators)} cells, asked for {shape[0]} rows.")
        if not self.generators:
            return torch.empty(shape, device=self.device)
        return torch.stack([torch.rand(shape[1:], generator=g, device=self.device) for g in self.generators])


def uniform(source: torch.Generator | RowNoise | None, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``shape`` uniform numbers from a generator (one stream for the batch), a :class:`RowNoise` (one per cell) or
    torch's global stream (``None``)."""
    if isinstance(source, RowNoise):
        return source.rand(tuple(shape))
    return torch.rand(shape, generator=source, device=device)


__all__ = ["RowNoise", "row_seed", "uniform"]
