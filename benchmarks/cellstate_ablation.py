"""Ablation of the cell state (issue 15): each design choice switched off (or on), same seed, two datasets.

Run ``python benchmarks/cellstate_ablation.py [--arms a b ...] [--data pbmc snare] [--seed N]``. Every arm is
trained and scored on *validation* data only, never on the benchmarks' held-out cells:

- **PBMC** (bundled CITE-seq mosaic): the protein of batch p3 is hidden in training and generated from RNA
  (per-protein Pearson); embedding metrics over the cells with RNA (NMI, ARI, label ASW, iLISI over batches)
  and 5-fold kNN label accuracy of the RNA-only embedding.
- **SNARE-seq2** (mouse cortex, paired RNA + ATAC): a sample of the training libraries disjoint from the one
  ``chromatin.py`` scores (seed 1, cells the benchmark's seed-0 sample does not draw); joint embedding metrics
  over cell types and libraries, and RNA -> ATAC generation (per-peak AUROC) on 90 further cells.

Arms are measured one at a time and appended to ``results/cellstate_ablation.json`` (an arm already there is
skipped unless ``--redo``), so the run can be resumed; the page ``results/cellstate_ablation.md`` is rendered
from that JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mudata as md
import numpy as np
from _common import provenance, provenance_line

import holocell as hc
from holocell import evaluation as ev

OUT = Path(__file__).parent / "results" / "cellstate_ablation.json"
#: the schedule adopted as the default (lr 2e-3, KL warm-up over 10% of the run) with the alignment its rows ran
#: with (`distill_cross`, the default until `fast_align_hidden_c5` was adopted), pinned so its arms stay fixed
FAST_SCHEDULE = {"kl_warmup": 0.1, "train_config": {"lr": 2e-3}, "align_mode": "distill_cross"}
#: the schedule with the contrastive distillation (`align_mode="distill_cross_nce"`, contrast weight 1 as its rows
#: ran), the base of its arms
FAST_NCE = {**FAST_SCHEDULE, "align_mode": "distill_cross_nce", "align_contrast_weight": 1.0}
#: arm name -> (HoloCell keyword arguments, what it tests)
ARMS: dict[str, tuple[dict, str]] = {
    "defaults": ({}, "the defaults at the row's commit (before `fast_schedule` was adopted: the same model as "
                 "`old_schedule`, `align_distill_cross` and `peak_embeddings`; then as `fast_schedule`; since the "
                 "alignment default changed: as `fast_align_hidden_c5`)"),
    "default": ({"align_weight": 0.0}, "the cell state as first landed: latents + value path, ELBO x10, z in the "
                "denoiser, no alignment term (the default until `align_distill`, which is the default now)"),
    "no_cell_state": (
        {"cell_state_kwargs": {"cell_state": False, "batch_in_encoder": True, "library_in_encoder": True,
                               "z_in_denoiser": False}},
        "property 1-2: the model before the cell state (pooled latents, batch and library in the encoder)",
    ),
    "no_value_path": ({"cell_state_kwargs": {"value_path": False}}, "q(z|x) reads the pooled latents only"),
    "no_latents_in_posterior": (
        {"cell_state_kwargs": {"latents_in_posterior": False}}, "q(z|x) reads the value path only"),
    "batch_in_encoder": ({"cell_state_kwargs": {"batch_in_encoder": True}}, "property 4: batch also in the encoder"),
    "no_random_subsets": ({"p_drop_modality": 0.0}, "property 3: no cross-modal (single-subset) examples"),
    "align": ({"align_weight": 1.0, "align_mode": "contrastive"},
              "property 3: contrastive alignment of single-modality states"),
    "align_distill": ({"align_weight": 1.0, "align_mode": "distill"},
                      "property 3: single-modality states regress onto the (fixed) joint state"),
    "align_joint": ({"align_weight": 1.0, "align_mode": "joint_contrastive"},
                    "property 3: InfoNCE of each single-modality state against the (fixed) joint state"),
    "align_distill_cross": ({"align_weight": 1.0, "align_mode": "distill_cross"},
                            "property 3: the cross-modal examples' states regress onto the (fixed) joint state"),
    "batch_mmd_01": ({"batch_mmd_weight": 0.1}, "property 4: MMD between the batches' cell states, weight 0.1"),
    "batch_mmd": ({"batch_mmd_weight": 1.0}, "property 4: MMD between the batches' cell states, weight 1"),
    "batch_mmd_10": ({"batch_mmd_weight": 10.0}, "property 4: MMD between the batches' cell states, weight 10"),
    "no_peak_factors": ({"cell_state_kwargs": {"peak_factors": False}}, "property 6: no per-peak decoder factor"),
    "peak_embeddings": ({"align_weight": 1.0, "align_mode": "distill_cross", "cell_state_kwargs": {"peak_embeddings": True}},
                        "property 6: each peak's own input vector in the encoder (the default since it was added)"),
    "no_peak_embeddings": (
        {"align_weight": 1.0, "align_mode": "distill_cross", "cell_state_kwargs": {"peak_embeddings": False}},
        "property 6: peaks enter the encoder only pooled per (anchor, distance bucket)"),
    "no_z_in_denoiser": ({"cell_state_kwargs": {"z_in_denoiser": False}}, "property 5: denoiser not given z"),
    "z_detached": ({"cell_state_kwargs": {"z_grad_from_denoiser": False}},
                   "property 5: the denoiser reads z detached (only the ELBO and the alignment term train q(z|x))"),
    "batch_after_norm": ({"cell_state_kwargs": {"batch_after_norm": True}},
                         "property 4: the count decoders add the batch after normalising z's projection"),
    "short_warmup": ({"kl_warmup": 0.05, "train_config": {"lr": 1e-3}},
                     "schedule: lr 1e-3 and the KL warm-up over 5% of the run (the old schedule's lr)"),
    "elbo_weight_1": ({"elbo_weight": 1.0}, "ELBO weight 1 instead of 10"),
    "elbo_input_clean": ({"elbo_input": "clean"}, "the ELBO's z inferred from the clean subset view"),
    "vae_only": ({"diffusion_weight": 0.0}, "the cell state alone (no diffusion loss)"),
    "fast_schedule": (FAST_SCHEDULE,
                      "schedule: lr 2e-3 and the KL warm-up over 10% of the run (the defaults from its adoption until "
                      "`fast_align_hidden_c5`'s)"),
    "fast_z_detached": ({**FAST_SCHEDULE, "cell_state_kwargs": {"z_grad_from_denoiser": False}},
                        "property 5 on the new schedule: `fast_schedule` with the denoiser reading z detached"),
    "fast_kl_weight_2": ({**FAST_SCHEDULE, "kl_weight": 2.0},
                         "property 1 on the new schedule: the KL term at twice the ELBO's weight (a beta-VAE, beta 2)"),
    "fast_kl_weight_5": ({**FAST_SCHEDULE, "kl_weight": 5.0},
                         "property 1 on the new schedule: the KL term at five times the ELBO's weight (beta 5)"),
    "fast_adversary_01": ({**FAST_SCHEDULE, "batch_adversary_weight": 0.1, "batch_adversary_mode": "reverse"},
                          "property 4: a batch classifier on z behind a gradient reversal layer, weight 0.1"),
    "fast_adversary_1": ({**FAST_SCHEDULE, "batch_adversary_weight": 1.0, "batch_adversary_mode": "reverse"},
                         "property 4: a batch classifier on z behind a gradient reversal layer, weight 1"),
    "fast_confusion_01": ({**FAST_SCHEDULE, "batch_adversary_weight": 0.1, "batch_adversary_mode": "confusion"},
                          "property 4: the encoder makes a batch classifier on z predict uniformly, weight 0.1"),
    "fast_confusion_1": ({**FAST_SCHEDULE, "batch_adversary_weight": 1.0, "batch_adversary_mode": "confusion"},
                         "property 4: the encoder makes a batch classifier on z predict uniformly, weight 1"),
    "fast_align_10": ({**FAST_SCHEDULE, "align_weight": 10.0},
                      "property 3: the cross-modal states' regression onto the joint state at weight 10 (default 1)"),
    "fast_align_30": ({**FAST_SCHEDULE, "align_weight": 30.0},
                      "property 3: the cross-modal states' regression onto the joint state at weight 30 (default 1)"),
    "fast_align_scaled": ({**FAST_SCHEDULE, "align_mode": "distill_cross_scaled"},
                          "property 3: the cross-modal alignment weighed by a learnt noise scale per hidden modality"),
    "fast_align_symmetric": ({**FAST_SCHEDULE, "align_mode": "distill_cross_symmetric"},
                             "property 3: the alignment with gradient through the joint state as well (MultiVI-style "
                             "symmetric pull)"),
    "fast_align_symmetric_3": ({**FAST_SCHEDULE, "align_mode": "distill_cross_symmetric", "align_weight": 3.0},
                               "property 3: the symmetric alignment at weight 3"),
    "fast_cross_08": ({**FAST_SCHEDULE, "p_drop_modality": 0.8},
                      "property 3: 80% of the cells with several modalities are cross-modal examples (default 50%)"),
    "fast_whole_1": ({**FAST_SCHEDULE, "p_whole": 1.0},
                     "property 3: every cross-modal example hides its target modality entirely (default half of them)"),
    "fast_tie_peaks": ({**FAST_SCHEDULE, "cell_state_kwargs": {"tie_peaks_to_genes": True}},
                       "property 3 / 6: an open peak reaches q(z|x) through its gene's RNA weights plus its own"),
    "fast_tie_peaks_both": ({**FAST_SCHEDULE, "cell_state_kwargs": {"tie_peaks_to_genes": True,
                                                                     "tie_peak_decoder_to_genes": True}},
                            "property 3 / 6: peaks share their gene's RNA weights in q(z|x) and in the count decoder"),
    "fast_kl_weight_05": ({**FAST_SCHEDULE, "kl_weight": 0.5},
                          "property 1: KL weight 0.5 inside the ELBO (a looser bottleneck)"),
    "fast_n_latent_64": ({**FAST_SCHEDULE, "n_latent": 64}, "property 1: a cell state of 64 dimensions (default 32)"),
    "fast_n_latent_10": ({**FAST_SCHEDULE, "n_latent": 10},
                         "property 1: a cell state of 10 dimensions (default 32; scVI's default size)"),
    "fast_elbo_weight_30": ({**FAST_SCHEDULE, "elbo_weight": 30.0},
                            "the ELBO at weight 30 beside the diffusion loss (default 10; 1 -> 10 tripled SNARE NMI)"),
    "fast_align_nce": (FAST_NCE,
                       "property 3: the cross-modal states also pushed from the other cells' joint states (InfoNCE "
                       "over squared distances, temperature 0.1 x their median)"),
    "fast_align_nce_1": ({**FAST_NCE, "align_temperature": 1.0},
                         "property 3: as `fast_align_nce`, temperature 1 x the median squared distance"),
    "fast_align_nce_t005": ({**FAST_NCE, "align_temperature": 0.05},
                            "property 3: as `fast_align_nce`, temperature 0.05 x the median squared distance"),
    "fast_align_nce_cross_08": ({**FAST_NCE, "p_drop_modality": 0.8},
                                "property 3: `fast_align_nce` with more cross-modal examples (`fast_cross_08`)"),
    "fast_align_nce_c2": ({**FAST_NCE, "align_contrast_weight": 2.0},
                          "property 3: as `fast_align_nce`, the contrastive part at weight 2"),
    "fast_align_nce_c5": ({**FAST_NCE, "align_contrast_weight": 5.0},
                          "property 3: as `fast_align_nce`, the contrastive part at weight 5"),
    "fast_align_nce_c20": ({**FAST_NCE, "align_contrast_weight": 20.0},
                           "property 3: as `fast_align_nce`, the contrastive part at weight 20"),
    "fast_align_nce_hidden": ({**FAST_NCE, "align_mode": "distill_cross_nce_hidden_all"},
                              "property 3: as `fast_align_nce`, each cross-modal state picks out the state of its "
                              "cell's hidden modality alone (no input shared with the view) instead of the joint "
                              "state, every view and hidden modality; never on main (it ran at 01e6f6c, branch "
                              "exp-nce-hidden)"),
    "fast_align_nce_hidden_c5": ({**FAST_NCE, "align_mode": "distill_cross_nce_hidden_all",
                                  "align_contrast_weight": 5.0},
                                 "`fast_align_nce_hidden` at weight 5; never on main (01e6f6c, branch exp-nce-hidden)"),
    "fast_align_nce_hidden_rna_c5": (
        {**FAST_NCE, "align_mode": "distill_cross_nce_hidden_rna", "align_contrast_weight": 5.0},
        "`fast_align_nce_hidden_c5` for the views with RNA hidden only (SNARE-seq2: ATAC-only views, RNA-only "
        "targets); never on main (0d83896, branch exp-nce-hidden)"),
    "fast_align_nce_hidden_atac_c5": (
        {**FAST_NCE, "align_mode": "distill_cross_nce_hidden_atac", "align_contrast_weight": 5.0},
        "`fast_align_nce_hidden_c5` for the views with ATAC hidden only (RNA-only views, ATAC-only targets); never "
        "on main (0d83896, branch exp-nce-hidden)"),
    "fast_align_nce_slots_c10": (
        {**FAST_NCE, "align_mode": "distill_cross_nce_hidden_slots", "align_contrast_weight": 10.0},
        "the hidden-modality contrast at weight 10 for the views with RNA or protein hidden (ATAC-only views "
        "included); never on main (4a2c0ab, branch exp-nce-hidden)"),
    "fast_align_hidden_c10": ({**FAST_NCE, "align_mode": "distill_cross_nce_hidden", "align_contrast_weight": 10.0},
                              "property 3: `align_mode=\"distill_cross_nce_hidden\"` at weight 10: each RNA or "
                              "protein view picks out its cell's state from the other of the two alone (rows before "
                              "the final commit ran with views that show ATAC too allowed, which computes the same "
                              "on PBMC and SNARE-seq2)"),
    "fast_align_hidden_c5": ({**FAST_NCE, "align_mode": "distill_cross_nce_hidden", "align_contrast_weight": 5.0},
                             "`fast_align_hidden_c10` at weight 5 (the defaults since it was adopted)"),
    "fast_align_hidden_c20": ({**FAST_NCE, "align_mode": "distill_cross_nce_hidden", "align_contrast_weight": 20.0},
                              "`fast_align_hidden_c10` at weight 20"),
    "old_schedule": ({"kl_warmup": 0.33, "train_config": {"lr": 1e-3}},
                     "schedule: lr 1e-3 and the KL warm-up over 33% of the run (the defaults before `fast_schedule`)"),
}
#: arms whose option was removed after it lost its ablation (docs/design.md): described on the page, no longer run
RETIRED_ARMS: dict[str, tuple[dict, str]] = {
    "fast_value_mean": ({**FAST_SCHEDULE, "cell_state_kwargs": {"value_path_mode": "modality_mean"}},
                        "property 3: the value path normed per modality and averaged over the observed ones "
                        "(MultiVI-style); option removed after this ablation (it ran at b677573)"),
    "fast_value_scale": ({**FAST_SCHEDULE, "cell_state_kwargs": {"value_scale": True}},
                         "value path inputs divided by each feature's root mean square over the training entries, "
                         "clipped to +-10 (scanpy's scale without centring; an IDF for peaks); never on main (it "
                         "ran at 4ceebba, branch exp-value-scale)"),
    "fast_value_scale_slots": (
        {**FAST_SCHEDULE, "cell_state_kwargs": {"value_scale": True, "value_scale_peaks": False}},
        "`fast_value_scale` for RNA and protein only; never on main (it ran at 5db2dc1, branch exp-value-scale)"),
    "fast_value_scale_shrunk": (
        {**FAST_SCHEDULE, "cell_state_kwargs": {"value_scale": True, "value_scale_shrink": 1.0}},
        "`fast_value_scale` dividing by sqrt(mean square + the features' median mean square), so that a rare "
        "feature is not blown up; never on main (it ran at 7d5c117, branch exp-value-scale)"),
}
SIZE = {"d_model": 64, "n_latents": 16, "seed": 0}
EPOCHS = {"pbmc": 15, "snare": 40}  # about 700 and 500 optimiser steps
PBMC_HELD, SNARE_PER_LIB, SNARE_PEAKS, SNARE_HELD_PER_LIB = "p3_0", 50, 1500, 10


def _knn_cv(emb: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(15), emb, labels, cv=5).mean())


def _embedding_scores(emb, labels, batch) -> dict:
    m = ev.integration_metrics(emb, labels, batch, seed=0)
    return {k: m[k] for k in ("nmi", "ari", "asw_label", "ilisi")}


def run_pbmc(kwargs: dict, epochs: int, steps: list[int], seed: int = 0) -> dict:
    full = hc.data.pbmc_cite_mosaic()
    hide = (full["adt"].obs["batch"] == PBMC_HELD).to_numpy()
    held = full["adt"].obs_names[hide]
    mdata = md.MuData({"rna": full["rna"].copy(), "adt": full["adt"][~hide].copy()})
    mdata.obs = mdata.obs.join(full.obs[["batch", "celltype"]])
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, **{**SIZE, "seed": seed}, **kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, seed=seed, early_stopping=False)
    res = {"train_s": time.perf_counter() - t0}
    labels, batch = mdata.obs["celltype"].astype(str).to_numpy(), mdata.obs["batch"].astype(str).to_numpy()
    has_rna = np.isin(mdata.obs_names, full["rna"].obs_names)
    res.update(_embedding_scores(model.get_latent_representation(progress_bar=False)[has_rna], labels[has_rna],
                                 batch[has_rna]))
    res["knn_acc_rna"] = _knn_cv(model.get_latent_representation(modality="rna", progress_bar=False)[has_rna],
                                 labels[has_rna])
    truth = ev.clr(full["adt"][held].X)
    sub = mdata[held].copy()
    for n_steps in steps:
        if n_steps == 0 and not model.config.cell_state:
            continue
        for remasking in ("low_confidence", "random") if n_steps > 1 else ("low_confidence",):
            g = model.generate(sub, target="protein", n_steps=n_steps, remasking=remasking, key_added="g",
                               overwrite=True, progress_bar=False)
            key = f"rna_to_protein_r_{n_steps}" + ("_random" if remasking == "random" else "")
            res[key] = float(np.nanmean(ev.per_feature_pearson(truth, np.asarray(g.X))))
    return res


def _snare_samples() -> tuple[md.MuData, md.MuData]:
    import chromatin as ch

    snare = hc.data.snareseq2_mop()
    taken = ch.sample_cells(snare.obs, ch.TRAIN_LIBS, ch.SIZES["full"]["per_lib"], np.random.default_rng(0))
    obs = snare.obs.copy()
    obs["batch"] = obs["batch"].astype(str)
    obs.iloc[taken, obs.columns.get_loc("batch")] = "taken by the benchmark"
    cells = ch.sample_cells(obs, ch.TRAIN_LIBS, SNARE_PER_LIB, np.random.default_rng(1))
    obs.iloc[cells, obs.columns.get_loc("batch")] = "taken by the ablation"
    held = ch.sample_cells(obs, ch.TRAIN_LIBS, SNARE_HELD_PER_LIB, np.random.default_rng(2))
    freq = np.asarray((snare["atac"].X[cells] > 0).mean(axis=0)).ravel()
    peaks = np.sort(np.argsort(-freq, kind="stable")[:SNARE_PEAKS])  # the most frequently open peaks
    return ch._subset(snare, cells, peaks), ch._subset(snare, held, peaks)


def run_snare(kwargs: dict, epochs: int, steps: list[int], seed: int = 0) -> dict:
    train, held = _snare_samples()
    setup = {"modalities": {"rna": "rna", "atac": "atac"}, "batch_key": "batch", "species": "mouse",
             "genome": "mm10"}
    hc.HoloCell.setup_mudata(train, **setup)
    model = hc.HoloCell(train, **{**SIZE, "seed": seed}, **kwargs)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, seed=seed, early_stopping=False, batch_size=32)
    res = {"train_s": time.perf_counter() - t0}
    labels, batch = train.obs["cell_type"].astype(str).to_numpy(), train.obs["batch"].astype(str).to_numpy()
    res.update(_embedding_scores(model.get_latent_representation(progress_bar=False), labels, batch))
    res["knn_acc_joint"] = _knn_cv(model.get_latent_representation(progress_bar=False), labels)
    truth = (np.asarray(held["atac"].X.todense()) > 0).astype(float)
    for n_steps in steps:
        if n_steps == 0 and not model.config.cell_state:
            continue
        g = model.generate(held, target="atac", n_steps=n_steps, key_added="g", overwrite=True, progress_bar=False)
        res[f"rna_to_atac_auroc_{n_steps}"] = float(np.nanmean(ev.per_feature_auroc(truth, np.asarray(g.X))))
    return res


def baselines() -> dict:
    """The same scores for PCA (PBMC RNA; SNARE RNA PCA + ATAC LSI) on the same validation cells."""
    import chromatin as ch

    full = hc.data.pbmc_cite_mosaic()
    rna = full["rna"]
    z = ch.pca(rna.X, seed=0)
    labels = full.obs.loc[rna.obs_names, "celltype"].astype(str).to_numpy()
    batch = full.obs.loc[rna.obs_names, "batch"].astype(str).to_numpy()
    out = {"pbmc_pca": {**_embedding_scores(z, labels, batch), "knn_acc_rna": _knn_cv(z, labels)}}
    train, _ = _snare_samples()
    z = np.hstack([ch.pca(train["rna"].X, seed=0)[:, :30], ch.lsi(ch.binarize(train["atac"].X), seed=0)[:, :30]])
    labels, batch = train.obs["cell_type"].astype(str).to_numpy(), train.obs["batch"].astype(str).to_numpy()
    out["snare_pca_lsi"] = {**_embedding_scores(z, labels, batch), "knn_acc_joint": _knn_cv(z, labels)}
    return out


EMBEDDING = ["nmi", "ari", "asw_label", "ilisi"]


def render(results: dict) -> str:
    lines = ["# Cell-state ablation (validation data; generated by benchmarks/cellstate_ablation.py)", "",
             f"Sizes {SIZE}; epochs {results['epochs']}; last run {results['date']}. `git`: the commit each arm ran at",
             "(blank: recorded before the script stored it per arm).", ""]
    for data in ("pbmc", "snare"):
        knn = "knn_acc_rna" if data == "pbmc" else "knn_acc_joint"
        task = "rna_to_protein_r" if data == "pbmc" else "rna_to_atac_auroc"
        rows = [{"arm": a, **r[data]} for a, r in results["arms"].items() if data in r]
        base = results.get("baselines", {}).get("pbmc_pca" if data == "pbmc" else "snare_pca_lsi")
        if not rows:
            continue
        emb = rows + ([{"arm": "PCA" if data == "pbmc" else "PCA + LSI", **base}] if base else [])
        lines += [f"## {data}: embedding", "", ev.format_table(emb, ["arm", *EMBEDDING, knn, "train_s", "git"]), ""]
        steps = sorted({k for r in rows for k in r if k.startswith(task)}, key=lambda k: (k.endswith("random"),
                       int(k.removeprefix(task + "_").removesuffix("_random"))))  # fmt: skip
        names = {k: ("mean" if k == f"{task}_0" else k.removeprefix(task + "_").replace("_random", " random"))
                 for k in steps}  # fmt: skip
        gen = [{"arm": r["arm"], **{names[k]: r[k] for k in steps if k in r}} for r in rows]
        lines += [f"## {data}: {task} by number of steps (mean: one-shot likelihood mean)", "",
                  ev.format_table(gen, ["arm", *names.values()]), ""]
    lines += ["## Arms", "", "`<arm>@seed<n>`: the arm with model and training seed n (same cells).", ""]
    described = {**ARMS, **RETIRED_ARMS}
    lines += [f"- `{a}`: {described[a][1]} (`{described[a][0]}`)" for a in results["arms"] if a in described]
    if "meta" in results:
        lines += ["", "Latest run: " + provenance_line(results["meta"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="*", default=list(ARMS))
    p.add_argument("--data", nargs="*", default=["pbmc", "snare"])
    p.add_argument("--steps", type=int, nargs="*", default=[0, 1, 2, 4, 8, 16])
    p.add_argument("--redo", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="model and training seed (the cells stay the same)")
    p.add_argument("--render", action="store_true", help="only render the page from the JSON")
    args = p.parse_args()
    if args.render:
        OUT.with_suffix(".md").write_text(render(json.loads(OUT.read_text())))
        return
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    hc.settings.huge_pages = True
    results = json.loads(OUT.read_text()) if OUT.exists() else {"arms": {}}
    if results.get("epochs", EPOCHS) != EPOCHS:
        raise SystemExit(f"{OUT} holds runs of {results['epochs']} epochs, not {EPOCHS}; move it away first.")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    git += "+local changes" if dirty else ""
    results.update(epochs=EPOCHS, git=git, command=" ".join(sys.argv))
    if "baselines" not in results:
        results["baselines"] = baselines()
    for arm in args.arms:
        key = arm if args.seed == 0 else f"{arm}@seed{args.seed}"
        for data in args.data:
            if data in results["arms"].get(key, {}) and not args.redo:
                continue
            if arm in ("no_peak_factors", "peak_embeddings", "no_peak_embeddings", "fast_tie_peaks",
                       "fast_tie_peaks_both") and data == "pbmc":
                continue
            steps = args.steps if arm in ("default", "no_z_in_denoiser", "no_cell_state") else [0, 8]
            run = run_pbmc if data == "pbmc" else run_snare
            res = run(ARMS[arm][0], EPOCHS[data], steps, args.seed)
            res["git"] = git
            if OUT.exists():  # another run may have added arms meanwhile: add this one entry to the file's
                results["arms"] = json.loads(OUT.read_text())["arms"]
            results["arms"].setdefault(key, {})[data] = res
            results["meta"] = provenance({"size": SIZE, "epochs": EPOCHS, "arm": arm, "data": data, "seed": args.seed})
            results["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            OUT.write_text(json.dumps(results, indent=1))
            OUT.with_suffix(".md").write_text(render(results))
            print(key, data, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}), flush=True)


if __name__ == "__main__":
    main()
