"""HoloCell methods that run the trained network over cells: embeddings and generation (mixed into :class:`HoloCell`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .._settings import settings
from .._warnings import HoloCellWarning, user_stacklevel
from ..data.arrays import closes_backed_path, make_loader
from ..nn import RowNoise
from ._args import cell_indices, check_count, check_device, check_key_added, check_seed, check_temperature
from ._latent import (  # noqa: F401  (tl imports modality_names from here)
    all_sources_missing_message,
    check_has_source,
    check_posterior,
    draw_posterior,
    modality_names,
    no_data_message,
    no_source_message,
    scvi_data_alias,
    without_modalities,
)
from ._outputs import (
    add_output_modalities,
    check_generated_key,
    generated_var,
    one_feature_message,
    repeated_names_message,
)
from ._validate_obs import check_not_view_output

if TYPE_CHECKING:
    from mudata import MuData

ACTIVATION_BUDGET = 2**24
"""Default inference batches keep one ``(cells, anchors, d_model)`` float32 tensor near this many values (64 MB)."""
OUTPUT_BUDGET = 2**22
"""... and a ``(cells, n_outputs)`` one (e.g. every peak, when generating ATAC) near this many (16 MB)."""
MIN_BATCH, MAX_BATCH = 8, 256
"""Bounds of the default inference batch size, in cells."""

GENERATED_TRANSFORM = {
    "rna": "log1p(counts / library * 1e4)",
    "protein": "CLR: log1p(counts) - mean over antibodies of log1p(counts)",
    "atac": "probability that the peak is accessible",
}
"""What ``X`` of a generated modality holds, per modality (recorded in its ``uns["holocell"]["X"]``)."""

GENERATED_SUFFIX = "_generated"
"""Default suffix of a generated modality's feature names (``generate(..., var_suffix=...)``)."""


def default_steps(target: str, cell_state: bool) -> int:
    """``generate``'s default ``n_steps``: the likelihood mean (0) for RNA / protein and one denoising step for
    ATAC with a cell state; 8 steps without one."""
    if not cell_state:
        return 8
    return 1 if target == "atac" else 0


def check_sampling(n_steps: int, temperature: float, remasking, seed) -> int:
    """Refuse sampling settings that would be ignored or fail deep in torch; return ``seed`` as an ``int``."""
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}.")
    if temperature > 0 and n_steps == 0:
        raise ValueError(
            f"temperature={temperature} samples during iterative denoising, but n_steps=0 decodes the likelihood "
            "mean in one shot (the default for RNA and protein), so nothing would be sampled; pass n_steps >= 1."
        )
    return check_seed(seed)


class InferenceMixin:
    """:meth:`get_latent_representation` and :meth:`generate`, and the batching they share."""

    def _inference_batch_size(self, batch_size: int | None, n_outputs: int = 0) -> int:
        """``batch_size``, or one that keeps the activations within :data:`ACTIVATION_BUDGET` and the outputs
        within :data:`OUTPUT_BUDGET`."""
        if batch_size is not None:
            return check_count(batch_size, "batch_size")
        size = min(MAX_BATCH, ACTIVATION_BUDGET // (self.config.n_anchors * self.config.d_model))
        if n_outputs:
            size = min(size, OUTPUT_BUDGET // n_outputs)
        return int(max(MIN_BATCH, size))

    def _device(self, device: str | torch.device | None) -> torch.device:
        if device is not None:
            self.module.to(check_device(device))
        return next(self.module.parameters()).device

    def _batches(
        self, arrays, indices, batch_size: int, device: torch.device, desc: str, progress_bar: bool | None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Mini-batches of ``arrays`` (cells ``indices``, in order) on ``device``, with a progress bar."""
        loader = make_loader(arrays, indices, batch_size=batch_size, keep_global_stream=False)
        for batch in tqdm(loader, desc=desc, disable=not settings.show_progress(progress_bar)):
            yield {k: v.to(device) for k, v in batch.items()}

    @scvi_data_alias
    @closes_backed_path
    def get_latent_representation(
        self,
        mdata: MuData | str | Path | None = None,
        indices: Sequence[int] | None = None,
        modality: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress_bar: bool | None = None,
        *,
        give_mean: bool = True,
        return_dist: bool = False,
        seed: int = 0,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Cell embeddings: the posterior mean of the cell state ``z`` (the pooled latent states for a model
        saved before the cell state).

        Parameters
        ----------
        mdata
            MuData to embed (default: the registered one); needs the registered modalities' names.
            A backed MuData (``mudata.read_h5mu(path, backed=True)``) or the path of an ``.h5mu``
            file is streamed from disk in mini-batches, so memory does not grow with the cells; a
            file opened from a path is closed again before this returns (also on error). ``adata=`` is
            scvi-tools' name of the same argument (both given: ``ValueError``).
        indices
            Cells to embed, in this order: integer positions or a boolean mask over the cells (default: all).
        modality
            Embed from this modality (or list) only; default: every modality each cell has.
        batch_size
            Cells per forward pass; default: as many as keep one activation tensor near 64 MB
            (256 for a few hundred anchors, fewer for large ATAC feature sets).
        device
            Device to run on (default: where the model is; the model moves there and stays).
        progress_bar
            Show a progress bar (``None``: follow :data:`holocell.settings` ``.progress_bar``).
        give_mean
            ``True``: the posterior mean. ``False``: one draw per cell from the posterior
            ``N(mean, exp(logvar))``, from a generator seeded with ``seed`` (the draw of a cell depends on its row
            in the output, not on ``batch_size`` or the device). Needs a cell state (``ValueError`` otherwise).
        return_dist
            Return ``(mean, variance)`` of the posterior instead (scvi-tools' ``return_dist``; ``give_mean`` is then
            not used). Needs a cell state (``ValueError`` otherwise).
        seed
            Random seed of ``give_mean=False``'s draw (an integer >= 0).

        Returns
        -------
        ``(n_cells, n_latent)`` float32 array (``(n_cells, d_model)`` for a model without a cell state; a draw with
        ``give_mean=False``), or with ``return_dist=True`` two of them, the posterior mean and variance. Cells measured in none of the modalities
        read (``modality``; default: every registered one) get a row of NaN and a :class:`~holocell.HoloCellWarning`
        with their count: the model has no data to place them.
        """
        dist = check_posterior(self, give_mean, return_dist, seed)
        z, empty, read = self._latent(mdata, indices, modality, batch_size, device, progress_bar, dist)
        if empty.any():
            message = no_data_message(self, empty, read, modality, "embedded", "a position in the embedding", "embed from")
            warnings.warn(message, HoloCellWarning, stacklevel=user_stacklevel())
        if not dist:
            return z
        return (z[0], z[1]) if return_dist else draw_posterior(z[0], z[1], seed)

    @torch.inference_mode()
    def _latent(
        self, mdata, indices, modality, batch_size, device, progress_bar, variance: bool = False
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`get_latent_representation` without its warning: the embeddings (NaN rows for the cells measured
        in none of the modalities read; with ``variance``, stacked on the posterior variances: ``(2, n, n_latent)``),
        the mask of those cells, and the modalities read."""
        keep = self._check_modalities(modality)
        mdata, arrays = self._arrays(mdata, decodes=self.config.batch_in_encoder)
        device = self._device(device)
        self.module.eval()
        idx = cell_indices(indices, arrays.n_cells)
        out = np.zeros((1 + variance, len(idx), self.config.embedding_dim), dtype=np.float32)
        start = 0
        for batch in self._batches(arrays, idx, self._inference_batch_size(batch_size), device, "embedding", progress_bar):
            z = torch.stack(self.module.posterior(batch, keep)) if variance else self.module.embed(batch, keep)[None]
            out[:, start : start + z.shape[1]] = z.float().cpu().numpy()
            start += z.shape[1]
        if variance:
            out[1] = np.exp(out[1])  # log-variance -> variance
        read = keep or list(self.modalities_)
        empty = without_modalities(arrays.present[idx], read)
        out[:, empty] = np.nan  # the model's prior, the same for every such cell: no data, so no embedding
        return (out if variance else out[0]), empty, read

    @closes_backed_path
    @torch.inference_mode()
    def generate(
        self,
        mdata: MuData | str | Path | None = None,
        target: Literal["rna", "atac", "protein"] = "protein",
        n_steps: int | None = None,
        key_added: str | None = None,
        *,
        sources: Sequence[str] | None = None,
        remasking: Literal["low_confidence", "random"] = "low_confidence",
        temperature: float = 0.0,
        transform_batch: str | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        overwrite: bool = False,
        progress_bar: bool | None = None,
        var_suffix: str | None = GENERATED_SUFFIX,
    ) -> ad.AnnData:
        """Generate ``target`` for every cell from its other modalities and add it to ``mdata``.

        Observed cells are generated too (from their other modalities, their own target values
        hidden), so generated and measured values can be compared. Cells measured in none of the source
        modalities have nothing to generate from: their rows of ``X`` are NaN and of ``layers["bins"]`` -1. For
        cells measured in the target only (e.g. protein-only cells of a mosaic when generating protein) that is
        all; cells measured in neither, or no cell with a source, raise a :class:`~holocell.HoloCellWarning`, and a
        model whose only modality is ``target`` a ``ValueError``.

        Parameters
        ----------
        mdata
            MuData (default: the registered one), not a view (``mdata[mask]``: ``ValueError``, copy it first). It
            gets a new modality ``key_added`` (in memory, also for a backed MuData, whose inputs are streamed from
            disk; a path is opened backed and closed again before this returns).
        target
            Modality to generate.
        n_steps
            Denoising steps of iterative masked-diffusion generation with remasking; ``0`` decodes the cell
            state's count likelihood mean in one shot. Default (``None``), for a model with a cell state: ``0``
            for RNA and protein, ``1`` for ATAC, the better point prediction of each on validation data at the
            default training length (protein: mean 0.38 vs 0.34 Pearson on PBMC; ATAC: one step 0.57 vs 0.52
            AUROC on SNARE-seq2; more steps add nothing, see ``docs/design.md``); ``8`` for a model without one.
        key_added
            Name of the new modality; default ``"<modality name>_generated"``. A non-empty string without ``"/"``,
            and no ``mdata.obsm`` key of other data (e.g. ``"X_umap"``: mudata keeps each modality's mask of cells
            in ``mdata.obsm[<modality name>]``, so it would be replaced; ``ValueError``).
        sources
            Modalities to condition on; default: all others.
        remasking
            ``"low_confidence"`` (commit the most confident predictions first) or ``"random"``.
        temperature
            0 for the most likely values; > 0 samples the tokens during iterative denoising (``n_steps >= 1``):
            the bins (``layers["bins"]``) and the peaks' open / closed state. ``X`` is not a draw but the value
            head's estimate (the open probability for ATAC) given the committed tokens: it moves little.
        transform_batch
            Generate every cell as if it came from this training batch (e.g. one where the target
            modality was measured); default: each cell's own batch.
        batch_size, device, seed
            Batching, device (the model moves there and stays), random seed. With ``temperature > 0`` (or
            ``remasking="random"``) each cell draws from a stream of its own, seeded by ``seed`` and its row in
            ``mdata``, so its sample does not depend on ``batch_size`` or on the other cells in its batch; the same
            ``seed`` gives the same samples on one device. The default settings draw nothing.
        progress_bar
            Show a progress bar (``None``: follow :data:`holocell.settings` ``.progress_bar``).
        overwrite
            Replace an existing modality named ``key_added`` that an earlier ``generate`` wrote. A modality the
            model reads, or any other modality holocell did not generate, is never replaced (``ValueError``).
        var_suffix
            Appended to each feature name of the new modality (``cd14`` -> ``cd14_generated``), so that its names
            differ from the measured ones; ``var["measured_name"]`` keeps the measured feature's name. The default
            does not depend on ``key_added``: a second ``generate`` of the same target under another ``key_added``
            repeats the first one's names, so ``mdata.var_names`` are no longer unique, and a
            :class:`~holocell.HoloCellWarning` says so; pass ``var_suffix=f"_{key_added}"`` to keep them unique.
            ``None`` keeps the measured names (``mdata.var_names`` are then not unique; no warning).

        Returns
        -------
        The new AnnData (also stored in ``mdata.mod[key_added]``): ``X`` holds the continuous
        values (log1p CP10k for RNA, CLR for protein, accessibility probability for ATAC; NaN for cells
        without a source modality), ``layers["bins"]`` the committed value bins (RNA/protein; ``int16``,
        -1 for cells without a source modality), ``uns["holocell"]`` the settings. With a single RNA or
        protein feature, ``X`` and the bins are the same for every cell (a ``HoloCellWarning`` says so).
        Its ``var`` holds ``measured_name`` and the measured modality's own ``var`` columns (gene ids, feature
        types, peak ``chrom`` / ``start`` / ``end``); its ``obs`` is empty, as mudata keeps shared cell annotations
        in ``mdata.obs``: ``mdata.push_obs(columns=["celltype"], mods=[key_added])`` copies them to it, e.g. for
        ``sc.pl.violin(mdata[key_added], ..., groupby="celltype")`` (a plain ``push_obs()`` refuses a column that is
        also in a modality's ``.obs``, as in the bundled data). scanpy reads the NaN rows as data (t-test scores of
        0, ``"Input X contains NaN"``), so drop them before ``sc.tl.rank_genes_groups`` or ``sc.pp.pca``:
        ``g = mdata[key_added][~np.isnan(mdata[key_added].X).any(axis=1)].copy()``.
        """
        if var_suffix is not None and (not isinstance(var_suffix, str) or not var_suffix):
            raise ValueError(f"var_suffix must be a non-empty string or None, got {var_suffix!r}.")
        if target not in self.modalities_:
            raise ValueError(f"Unknown target {target!r}; this model has {list(self.modalities_)}.")
        temperature = check_temperature(temperature)
        sources = self._check_modalities(sources)
        if sources is not None and target in sources:
            raise ValueError("The target modality cannot also be a source.")
        check_has_source(self, target, sources)
        n_steps = check_count(n_steps, "n_steps", minimum=0, none_ok=True)
        if n_steps is None:
            n_steps = default_steps(target, self.config.cell_state)
        seed = check_sampling(n_steps, temperature, remasking, seed)
        key_added = f"{self.modalities_[target]}_generated" if key_added is None else check_key_added(key_added)
        check_not_view_output(mdata, "model.generate")  # before the run: mudata cannot add its output to a view
        mdata, arrays = self._arrays(mdata, transform_batch)
        check_generated_key(mdata, key_added, overwrite, set(self.modalities_.values()))
        n_features = len(self.feature_space.maps[target].features)
        if n_features == 1 and target != "atac":
            warnings.warn(one_feature_message(self, target), HoloCellWarning, stacklevel=4)
        device = self._device(device)
        self.module.eval()
        # outputs are filled in place, batch by batch: no second copy of a (cells, features) matrix
        values = np.zeros((arrays.n_cells, n_features), dtype=np.float32)
        bins = np.zeros((arrays.n_cells, n_features), dtype=np.int16) if target != "atac" else None
        size = self._inference_batch_size(batch_size, n_features if target == "atac" else 0)
        start = 0
        for batch in self._batches(arrays, None, size, device, f"generating {target}", progress_bar):
            stop = start + len(batch["present"])
            noise = RowNoise(seed, range(start, stop), device)  # a stream per cell: its row, not its batch
            res = self.module.generate(
                batch, target, sources, n_steps=int(n_steps), remasking=remasking, temperature=temperature, generator=noise
            )
            if target == "atac":
                values[start:stop] = res.values.float().cpu().numpy()
            else:
                values[start:stop] = self.module.to_features(target, res.values).float().cpu().numpy()
                bins[start:stop] = self.module.to_features(target, res.bins).cpu().numpy()
            start = stop
        read = list(sources) if sources else [m for m in self.modalities_ if m != target]
        empty = without_modalities(arrays.present, read)
        if empty.any():  # the model's prior, the same for every such cell: nothing to generate from
            values[empty] = np.nan
            if bins is not None:
                bins[empty] = -1
            # cells measured in the target only (ordinary mosaic data) get NaN rows without a word; cells the
            # call has no data of at all get a warning
            unmeasured = empty & without_modalities(arrays.present, [target])
            if unmeasured.any():
                warnings.warn(no_source_message(self, target, read, unmeasured), HoloCellWarning, stacklevel=4)
            elif empty.all():
                warnings.warn(all_sources_missing_message(self, target, read, len(empty)), HoloCellWarning, stacklevel=4)
        # issue 19: generated features get their own names (measured name + var_suffix)
        measured = pd.Index(self.feature_space.maps[target].features.astype(str))
        var = generated_var(mdata, self.modalities_[target], measured, var_suffix or "")
        generated = ad.AnnData(X=values, obs=pd.DataFrame(index=mdata.obs_names), var=var)
        if bins is not None:
            generated.layers["bins"] = bins
        params = {"target": target, "sources": read, "n_steps": n_steps, "remasking": remasking}
        params |= {"temperature": temperature, "transform_batch": transform_batch, "seed": seed, "var_suffix": var_suffix}
        generated.uns["holocell"] = {"params": params, "X": GENERATED_TRANSFORM[target]}
        if var_suffix and (repeated := repeated_names_message(mdata, key_added, var.index, var_suffix)):
            warnings.warn(repeated, HoloCellWarning, stacklevel=4)  # e.g. a second key_added of the same target
        add_output_modalities(mdata, {key_added: generated})  # replaces holocell's own earlier output only
        return generated


__all__ = ["GENERATED_SUFFIX", "GENERATED_TRANSFORM", "InferenceMixin"]
