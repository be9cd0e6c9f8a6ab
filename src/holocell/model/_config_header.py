"""Agreement of a validated checkpoint config with the tensor shapes of its safetensors header.

Runs after :func:`holocell.model._config_check.validate_config`, on the header only (no weights
are read): a config whose sizes do not fit its weights is refused naming the config keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..nn import NetworkConfig
from ..priors import PRIOR_INPUT_DIMS
from ._config_check import ConfigError

_ANCHORS_D = "'feature_space.anchors', 'init_params.d_model'"
_MLP_RATIO = NetworkConfig.__dataclass_fields__["mlp_ratio"].default  # not a constructor argument
_BINS_D = "'init_params.n_bins', 'init_params.d_model'"
_CELL_DEFAULTS = {
    k: NetworkConfig.__dataclass_fields__[k].default for k in ("cell_state", "n_hidden", "peak_embeddings")
}
_N_LATENT = NetworkConfig.__dataclass_fields__["n_latent"].default


def expected_shapes(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape the config implies, the config keys that set it), for the tensors that
    carry the config's sizes. Parameter names follow :class:`holocell.nn.HoloCellModule` (a test checks
    them against a real model's state dict)."""
    init, net = config["init_params"], config.get("network", {})
    mlp_ratio = net.get("mlp_ratio", _MLP_RATIO)
    mlp_keys = (
        "'network.mlp_ratio', 'init_params.d_model'" if "network" in config else "'init_params.d_model'"
    )
    d, n_bins = init["d_model"], init["n_bins"]
    n_anchors = len(config["feature_space"]["anchors"])
    shapes = {
        "network.anchor.weight": ((n_anchors, d), _ANCHORS_D),
        "network.batch.weight": (
            (len(config["batch_categories"]) + 1, d),
            "'batch_categories', 'init_params.d_model'",
        ),
        "network.latents": ((init["n_latents"], d), "'init_params.n_latents', 'init_params.d_model'"),
        "network.read_in.mlp.fc.weight": ((mlp_ratio * d, d), mlp_keys),
    }
    cell = {**_CELL_DEFAULTS, **(init.get("cell_state_kwargs") or {}), "n_latent": init.get("n_latent", _N_LATENT)}
    for m, fmap in config["feature_space"]["maps"].items():
        features = f"'feature_space.maps.{m}.features'"
        shapes[f"tokenizer.{m}_anchor"] = ((len(fmap["features"]),), features)
        shapes[f"network.{m}_exists"] = ((n_anchors,), "'feature_space.anchors'")
        if m == "atac":
            shapes["network.peak_anchor"] = ((len(fmap["features"]),), features)
            if cell["peak_embeddings"]:
                keys = f"{features}, 'init_params.d_model', 'init_params.cell_state_kwargs'"
                shapes["network.peak_embedding.weight"] = ((len(fmap["features"]), d), keys)
        else:
            shapes[f"network.slots.{m}.anchor_value"] = ((n_anchors, d), _ANCHORS_D)
            shapes[f"network.slots.{m}.bin.weight"] = ((n_bins + 2, d), _BINS_D)
            shapes[f"network.heads.{m}.weight"] = ((n_bins + 1, d), _BINS_D)
    if cell["cell_state"]:
        keys = "'init_params.n_latent', 'init_params.cell_state_kwargs', 'init_params.d_model'"
        n_latent, n_hidden = cell["n_latent"], cell["n_hidden"]
        shapes["network.cell.out.weight"] = ((2 * n_latent, d), keys)
        shapes["network.counts.hidden.weight"] = ((n_hidden, n_latent), keys)
        shapes["network.counts.batch.weight"] = ((len(config["batch_categories"]) + 1, n_hidden), keys)
        for m, fmap in config["feature_space"]["maps"].items():
            if m == "atac":
                shapes["network.counts.peak_bias"] = ((len(fmap["features"]),), f"'feature_space.maps.{m}.features'")
            else:
                shapes[f"network.counts.weight.{m}"] = ((n_anchors, n_hidden), keys)
    for p in _prior_names(init.get("priors")):
        shapes[f"network.prior_{p}"] = ((n_anchors, PRIOR_INPUT_DIMS[p]), "'init_params.priors'")
    return shapes


def _prior_names(priors) -> list[str]:
    if priors is None:
        return []
    if isinstance(priors, str):
        return list(PRIOR_INPUT_DIMS) if priors == "all" else [priors]
    return list(dict.fromkeys(priors))


def check_header(config: dict, header: Mapping[str, Sequence[int]], where: str) -> None:
    """Check that the tensor shapes of the safetensors header agree with the config.

    Parameters
    ----------
    config
        A config that passed :func:`validate_config`.
    header
        Tensor name -> shape, read from the safetensors header only.
    where
        The checkpoint, for the messages.
    """
    n_anchors = len(config["feature_space"]["anchors"])
    lead = f"Weights in {where} do not fit the vocabulary and network sizes in its config.json ({n_anchors} anchors)"
    tail = "The checkpoint mixes files from different models; save the model again."
    for name, (shape, keys) in expected_shapes(config).items():
        if name not in header:
            raise ConfigError(
                f"{lead}: the weights lack tensor {name!r}, which the config (keys {keys}) needs. {tail}"
            )
        if tuple(header[name]) != shape:
            raise ConfigError(
                f"{lead}: tensor {name!r} has shape {tuple(header[name])}, the config (keys {keys}) implies "
                f"{shape}. {tail}"
            )
    blocks = {k.split(".")[2] for k in header if k.startswith("network.blocks.")}
    n_layers = config["init_params"]["n_layers"]
    if blocks != {str(i) for i in range(n_layers)}:
        raise ConfigError(
            f"{lead}: the weights hold {len(blocks)} transformer blocks, the config (key 'init_params.n_layers') "
            f"says {n_layers}. {tail}"
        )


__all__ = ["check_header", "expected_shapes"]
