"""HoloCell methods for in-silico perturbation and gene embeddings (mixed into :class:`HoloCell`)."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .._settings import settings as holocell_settings
from .._warnings import HoloCellWarning, user_stacklevel
from ..data.arrays import BackedMosaicArrays
from ..nn import SlotEdit, perturb_staged, perturb_tokens
from ..vocab import MODALITIES
from ._args import as_names, cell_indices, check_count, check_quantile, check_seed
from ._feature_names import feature_index
from ._overexpression import overexpression_levels

if TYPE_CHECKING:
    from mudata import MuData

_REGENERABLE = ("rna", "protein")
_LEVEL_BLOCK_VALUES = 1 << 24
"""Backed data: :meth:`HoloCell.iter_perturbations` reads the overexpression levels of as many genes per pass over
the file as keep ``(cells with RNA, genes)`` float64 values under this (128 MB)."""


@dataclass
class PerturbationResult:
    """Output of :meth:`HoloCell.predict_perturbation`.

    Attributes
    ----------
    features
        Modality -> feature names (columns of the matrices below).
    control, perturbed
        Modality -> ``(n_cells, n_features)`` regenerated values without / with the edit (log1p
        CP10k for RNA, CLR for protein); rows of cells the edit does not apply to are NaN.
    embedding_control, embedding_perturbed
        ``(n_cells, n_latent)`` embeddings (cell states) of the regenerated cells (NaN rows as above).
    applied
        ``(n_cells,)`` bool: the cell has the edited modality, so the edit applies.
    edited
        Modality -> edited feature names.
    params
        The settings used.
    """

    features: dict[str, np.ndarray]
    control: dict[str, np.ndarray]
    perturbed: dict[str, np.ndarray]
    embedding_control: np.ndarray
    embedding_perturbed: np.ndarray
    applied: np.ndarray
    edited: dict[str, list[str]]
    params: dict = field(default_factory=dict)

    def shift(self, modality: str) -> np.ndarray:
        """``perturbed - control`` of ``modality``."""
        return self.perturbed[modality] - self.control[modality]

    @property
    def changed_nothing(self) -> bool:
        """Whether the edit moved no value and no embedding of any cell it applies to (e.g. a knockout of a gene none
        of them expresses): its shifts are exactly 0."""
        rows = self.applied
        moved = [np.abs(self.embedding_perturbed[rows] - self.embedding_control[rows])]
        moved += [np.abs(self.shift(m)[rows]) for m in self.control]
        return not any(np.nan_to_num(x).any() for x in moved)


class PerturbMixin:
    """In-silico perturbation (:meth:`predict_perturbation`, :meth:`iter_perturbations`) and
    :meth:`get_gene_embeddings`."""

    def _feature_index(self, modality: str, names: Sequence[str], what: str) -> np.ndarray:
        return feature_index(self, modality, names, what)

    def _perturb_settings(self, genes, cres, mode, regenerate, sources, overexpress_quantile, flow, n_steps,
                          batch_size, seed=0) -> dict:  # fmt: skip
        """The checked, normalised settings of a perturbation (before any data is read)."""
        seed = check_seed(seed)  # was refused by torch.manual_seed only at the first mini-batch
        genes, cres = as_names(genes, "genes"), as_names(cres, "cres")
        if not genes and not cres:
            raise ValueError("Give `genes` and/or `cres` to perturb.")
        if mode not in ("knockout", "overexpress"):
            raise ValueError(f"mode must be 'knockout' or 'overexpress', got {mode!r}.")
        if flow not in ("staged", "joint"):
            raise ValueError(f"flow must be 'staged' (chromatin -> RNA -> protein) or 'joint', got {flow!r}.")
        if regenerate is None and not any(m in self.modalities_ for m in _REGENERABLE):
            raise ValueError(
                f"A perturbation is read on RNA or protein, and this model has only {list(self.modalities_)}; train "
                "a model with RNA (or protein) to see a CRE's or gene's effect."
            )
        regenerate = [m for m in _REGENERABLE if m in self.modalities_] if regenerate is None else regenerate
        regenerate = [regenerate] if isinstance(regenerate, str) else list(regenerate)
        bad = [m for m in regenerate if m not in _REGENERABLE or m not in self.modalities_]
        if bad or not regenerate:
            raise ValueError(
                f"regenerate must be a non-empty subset of the model's RNA/protein modalities, got {regenerate}."
            )
        if sources is None:
            sources = [m for m in self.modalities_ if m not in regenerate]
        sources = [sources] if isinstance(sources, str) else list(sources)  # [] is allowed: no source
        sources = self._check_modalities(sources) if sources else []
        if both := [m for m in sources if m in regenerate]:
            raise ValueError(
                f"{both} would be both regenerated and kept as a source: a regenerated modality is hidden and "
                f"generated again, so its measured values are not read (the edited genes' RNA is always shown). "
                f"Pass sources without {both}, or leave {both} out of regenerate."
            )
        if genes:
            self._feature_index("rna", genes, "genes")
        if cres:  # first: a model without ATAC says so, rather than asking for an 'atac' source it cannot take
            self._feature_index("atac", cres, "CREs")
        if cres and ("atac" not in sources or (flow == "staged" and "rna" not in regenerate)):
            raise ValueError(
                f"A CRE edit reaches {regenerate} only through the chromatin: pass 'atac' among sources"
                + (" and regenerate RNA (regenerate=['rna', 'protein']; the staged flow reads protein from the RNA)"
                   if flow == "staged" else "")
                + f". With sources={sources} and regenerate={regenerate} every shift would be 0."
            )  # fmt: skip
        return {
            "genes": genes,
            "cres": cres,
            "mode": mode,
            "regenerate": regenerate,
            "sources": sources,
            "overexpress_quantile": check_quantile(overexpress_quantile),
            "flow": flow,
            "n_steps": check_count(n_steps, "n_steps"),
            "batch_size": check_count(batch_size, "batch_size", none_ok=True),
            "seed": seed,
        }

    def predict_perturbation(
        self,
        mdata: MuData | None = None,
        genes: str | Sequence[str] | None = None,
        cres: str | Sequence[str] | None = None,
        mode: Literal["knockout", "overexpress"] = "knockout",
        *,
        regenerate: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
        overexpress_quantile: float = 0.99,
        flow: Literal["staged", "joint"] = "staged",
        n_steps: int = 8,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        progress_bar: bool | None = None,
    ) -> PerturbationResult:
        """Predict the effect of setting genes' RNA and/or CREs' accessibility, cell by cell.

        The edited values are set, the ``regenerate`` modalities are generated again around them (the
        edited genes' own RNA slots stay clamped), and the result is compared with the same regeneration
        from the unedited cell (same hidden slots, same seed), so the shift is the causal difference under
        the model, not reconstruction error.

        With ``flow="staged"`` (default) the regeneration follows the information flow CRE accessibility ->
        RNA -> protein: RNA is denoised from the (edited) chromatin and the edited genes, then protein from
        that RNA alone. With a cell state, each stage adds the shift of the likelihood mean decoded from the
        edited cell's state (trans effects) to the denoiser's (cis effects, through the gene-anchored
        tokens); see :func:`holocell.nn.perturb_staged`. ``flow="joint"`` denoises every regenerated
        modality jointly from the sources (the behaviour of 0.1.0).

        Parameters
        ----------
        mdata
            MuData (default: the registered one).
        genes
            RNA feature names to set.
        cres
            ATAC peak names to set.
        mode
            ``"knockout"``: RNA 0 (bin 0) / peak closed. ``"overexpress"``: RNA at the
            ``overexpress_quantile`` of the gene's log1p CP10k over the cells with RNA (top value
            bin) / peak open. A gene too rare for that quantile to reach its lowest expressed value (it
            would fall among the zeros: a knockdown) is set to the same quantile over the cells that express
            it; a gene no cell expresses is left as it is.
        regenerate
            Modalities generated again (default: RNA and protein, those the model has).
        sources
            Modalities kept visible as conditioning (default: every modality not regenerated, e.g.
            ATAC). Edited RNA of a regenerated RNA modality is always visible. With ``flow="staged"`` and
            RNA not regenerated, the protein stage reads the cell's RNA with the edits when ``"rna"`` is a
            source, else the edited genes alone; other sources do not reach it.
        indices
            Cells to perturb: integer positions or a boolean mask over the cells (default: all).
        overexpress_quantile
            Quantile of the gene's expression used by ``mode="overexpress"``.
        flow
            ``"staged"`` (chromatin -> RNA -> protein) or ``"joint"``.
        n_steps, batch_size, device, seed, progress_bar
            Denoising steps, cells per pass, device, random seed (an integer in ``[0, 2**63)``; anything else is
            refused before the data are read, as by :meth:`generate`), progress display.

        Returns
        -------
        :class:`PerturbationResult`. The edit applies to cells that have the edited modality (RNA for
        ``genes``, ATAC for ``cres``); other cells get NaN rows.
        """
        settings = self._perturb_settings(
            genes, cres, mode, regenerate, sources, overexpress_quantile, flow, n_steps, batch_size, seed
        )
        mdata, arrays = self._arrays(mdata)
        result = self._perturb_arrays(arrays, indices=indices, device=device, progress_bar=progress_bar, **settings)
        if result.changed_nothing:
            edited = [name for names in result.edited.values() for name in names]
            warnings.warn(
                f"The {mode} of {edited[:5]} changed nothing in the {int(result.applied.sum())} cells it applies to: "
                "every shift is exactly 0 (a knockout of a gene none of them expresses, an overexpression of a gene "
                "no cell expresses, or a CRE already in the edited state). Perturb cells that express it "
                "(`indices`), or another gene.",
                HoloCellWarning,
                stacklevel=user_stacklevel(),
            )
        return result

    def iter_perturbations(
        self,
        mdata: MuData | None = None,
        genes: str | Sequence[str] | None = None,
        mode: Literal["knockout", "overexpress"] = "knockout",
        **kwargs,
    ) -> Iterator[tuple[str, PerturbationResult]]:
        """Perturb each of ``genes`` on its own, reading and checking ``mdata`` once for all of them.

        Parameters
        ----------
        mdata
            MuData (default: the registered one).
        genes
            RNA feature names, one perturbation each (default: every RNA gene of the model).
        mode
            ``"knockout"`` or ``"overexpress"``.
        **kwargs
            Further arguments of :meth:`predict_perturbation` (``regenerate``, ``sources``, ``indices``,
            ``n_steps``, ...). With several genes, ``progress_bar`` shows one bar over the genes.

        Yields
        ------
        ``(gene, result)`` for each gene, in order; ``result`` as from :meth:`predict_perturbation`.
        """
        if "rna" not in self.modalities_:
            raise ValueError("iter_perturbations perturbs genes' RNA: the model has no RNA modality.")
        all_genes = list(self.feature_space.maps["rna"].features.astype(str))
        genes = all_genes if genes is None else as_names(genes, "genes")
        if not genes:
            raise ValueError("`genes` is empty: give the genes to perturb one by one (None: every RNA gene of the model).")
        _check_iter_kwargs(kwargs)
        self._feature_index("rna", genes, "genes")  # every name checked before the first regeneration
        settings = self._perturb_settings(  # every setting checked before the data are read
            genes[:1], None, mode, kwargs.get("regenerate"), kwargs.get("sources"),
            kwargs.get("overexpress_quantile", 0.99), kwargs.get("flow", "staged"), kwargs.get("n_steps", 8),
            kwargs.get("batch_size"), kwargs.get("seed", 0),
        )  # fmt: skip
        # the checked values go on to every gene: a one-shot iterable (a generator) was read up by the check
        kwargs |= {k: settings[k] for k in _ITER_KWARGS if k in settings}
        mdata, arrays = self._arrays(mdata)
        totals = {}  # RNA library sizes (in memory) and overexpression levels, computed once for all genes
        block = 0
        if mode == "overexpress" and isinstance(arrays, BackedMosaicArrays):  # levels: one pass over the file per block
            gidx = self._feature_index("rna", genes, "genes")
            quantile = kwargs["overexpress_quantile"]
            n_rna = int(arrays.present[:, MODALITIES.index("rna")].sum())
            block = max(1, _LEVEL_BLOCK_VALUES // max(n_rna, 1))
        if len(genes) > 1:  # one bar over the genes, not one bar over the cells per gene
            shown = holocell_settings.show_progress(kwargs.get("progress_bar"))
            genes, kwargs["progress_bar"] = tqdm(genes, desc="perturbing genes", disable=not shown), False
        for i, gene in enumerate(genes):
            if block and i % block == 0:
                overexpression_levels(arrays, gidx[i : i + block], quantile, totals)
            yield gene, self._perturb_arrays(arrays, [gene], None, mode, _totals=totals, **kwargs)

    def _perturb_arrays(
        self,
        arrays,
        genes,
        cres,
        mode,
        *,
        regenerate=None,
        sources=None,
        indices=None,
        overexpress_quantile=0.99,
        flow="staged",
        n_steps=8,
        batch_size=None,
        device=None,
        seed=0,
        progress_bar=None,
        _totals: dict | None = None,
    ) -> PerturbationResult:
        """:meth:`predict_perturbation` on checked count arrays."""
        s = self._perturb_settings(genes, cres, mode, regenerate, sources, overexpress_quantile, flow, n_steps, batch_size,
                                   seed)  # fmt: skip
        genes, cres, regenerate, sources, seed = s["genes"], s["cres"], s["regenerate"], s["sources"], s["seed"]
        overexpress_quantile, n_steps, batch_size = s["overexpress_quantile"], s["n_steps"], s["batch_size"]
        idx = cell_indices(indices, arrays.n_cells)

        edits, needs = [], []
        if genes:
            gidx = self._feature_index("rna", genes, "genes")
            anchors = self.feature_space.maps["rna"].anchor[gidx]
            needs.append(MODALITIES.index("rna"))
            if mode == "knockout":
                values, bins = np.zeros(len(gidx)), np.zeros(len(gidx), dtype=np.int64)
            else:
                values = overexpression_levels(arrays, gidx, overexpress_quantile, {} if _totals is None else _totals)
                bins = np.where(values > 0, self.config.n_bins - 1, 0).astype(np.int64)  # never seen: a no-op edit
            edits.append(("rna", anchors, values, bins))
        if cres:
            pidx = self._feature_index("atac", cres, "CREs")
            needs.append(MODALITIES.index("atac"))
            edits.append(("atac", pidx, np.full(len(pidx), 0.0 if mode == "knockout" else 1.0), None))
        applied = np.zeros(arrays.n_cells, dtype=bool)
        applied[idx] = arrays.present[idx][:, needs].all(axis=1)
        run = idx[applied[idx]]
        if not len(run):
            need = " and ".join(MODALITIES[i].upper() for i in needs)
            raise ValueError(
                f"None of the {len(idx)} cells to perturb has {need}, which the edit needs, so nothing can be "
                "predicted; perturb cells that have it (`indices`) or edit another modality."
            )

        device = self._device(device)
        self.module.eval()
        network = self.module.network
        slot_edits = [
            SlotEdit(
                m,
                torch.as_tensor(i, dtype=torch.long, device=device),
                torch.as_tensor(v, dtype=torch.float32, device=device),
                None if b is None else torch.as_tensor(b, device=device),
            )
            for m, i, v, b in edits
        ]
        features = {m: self.feature_space.maps[m].features.astype(str) for m in regenerate}
        control = {m: np.full((arrays.n_cells, len(features[m])), np.nan, np.float32) for m in regenerate}
        perturbed = {m: c.copy() for m, c in control.items()}
        z_c = np.full((arrays.n_cells, self.config.embedding_dim), np.nan, np.float32)
        z_p = z_c.copy()
        batches = self._batches(arrays, run, self._inference_batch_size(batch_size), device, "perturbing", progress_bar)
        start = 0
        with torch.inference_mode():
            for batch in batches:
                rows = run[start : start + len(batch["present"])]
                start += len(rows)
                run_flow = perturb_staged if flow == "staged" else perturb_tokens
                res = run_flow(
                    network, self.module.tokenize(batch), slot_edits, regenerate, sources, n_steps=n_steps, seed=seed
                )
                for m in regenerate:
                    control[m][rows] = self.module.to_features(m, res.control[m]).float().cpu().numpy()
                    perturbed[m][rows] = self.module.to_features(m, res.perturbed[m]).float().cpu().numpy()
                z_c[rows] = res.embedding_control.float().cpu().numpy()
                z_p[rows] = res.embedding_perturbed.float().cpu().numpy()
        params = {
            "genes": genes,
            "cres": cres,
            "mode": mode,
            "regenerate": regenerate,
            "sources": list(sources),
            "overexpress_quantile": overexpress_quantile,
            "flow": flow,
            "n_steps": n_steps,
            "seed": seed,
        }
        edited = {"rna": genes, "atac": cres}
        return PerturbationResult(features, control, perturbed, z_c, z_p, applied, edited, params)

    @torch.inference_mode()
    def get_gene_embeddings(self, modality: Literal["rna", "protein"] = "rna") -> pd.DataFrame:
        """Learned embeddings of the genes (one row per feature of ``modality``).

        A gene's embedding concatenates its anchor embedding as the network reads it (the identity
        embedding plus, with ``priors=``, the gated projections of the gene's prior rows) and the
        direction along which the model embeds its ``modality`` value (shared + anchor-specific part),
        so genes the model treats alike are close.

        Parameters
        ----------
        modality
            ``"rna"`` (genes) or ``"protein"`` (antibodies, on their coding gene's anchor).

        Returns
        -------
        DataFrame ``(n_features, 2 * d_model)`` indexed by feature name.
        """
        if modality not in self.modalities_ or modality not in _REGENERABLE:
            raise ValueError(f"modality must be one of the model's RNA/protein modalities, got {modality!r}.")
        network = self.module.network
        anchors = torch.as_tensor(self.feature_space.maps[modality].anchor, dtype=torch.long)
        slot = network.slots[modality]
        with torch.no_grad():  # the priors' gated projections included, as the encoder reads the anchors
            ident = network.anchor_embedding().detach().cpu()[anchors]
        value = (slot.value + slot.anchor_value).detach().cpu()[anchors]
        emb = torch.cat([ident, value], dim=1).float().numpy()
        return pd.DataFrame(emb, index=pd.Index(self.feature_space.maps[modality].features.astype(str)))


_ITER_KWARGS = ("regenerate", "sources", "indices", "overexpress_quantile", "flow", "n_steps", "batch_size", "device",
                "seed", "progress_bar")  # fmt: skip
"""The arguments of :meth:`~PerturbMixin.predict_perturbation` that :meth:`~PerturbMixin.iter_perturbations` passes on."""


def _check_iter_kwargs(kwargs: dict) -> None:
    """Refuse an argument :meth:`~PerturbMixin.iter_perturbations` cannot pass on, naming the closest one."""
    for key in kwargs:
        if key == "cres":
            raise TypeError(
                "iter_perturbations perturbs genes one at a time and takes no `cres`: call predict_perturbation(mdata, "
                "cres=[...]) for CREs (or genes and CREs together)."
            )
        if key not in _ITER_KWARGS:
            close = difflib.get_close_matches(key, _ITER_KWARGS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"iter_perturbations got an unexpected argument {key!r}; it takes {list(_ITER_KWARGS)}.{hint}")


__all__ = ["PerturbMixin", "PerturbationResult"]
