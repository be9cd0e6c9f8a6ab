"""Terminal entry point: ``holocell demo | train | pretrain | embed | generate`` on ``.h5mu`` files.

Outputs are never overwritten without ``--overwrite``, the input file never at all, and ``.h5mu``
outputs are written to a temporary file beside the target and renamed into place. Problems with
the arguments or a config file end with a one-line ``holocell: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


class UsageError(SystemExit):
    """A bad argument or config file: printed as one line, exit code 2, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def _check_out(out: str, inputs: Sequence[str], overwrite: bool) -> Path:
    """Refuse an ``--out`` that is an input file, or exists without ``--overwrite``, before any work."""
    path = Path(out)
    for given in inputs:
        if _same_file(path, Path(given)):
            raise UsageError(
                f"--out {out} is the input file {given}; holocell never overwrites its input. Write to a new file."
            )
    if path.is_dir():
        raise UsageError(f"--out {out} is a directory; give the path of an .h5mu file to write.")
    if os.path.lexists(path) and not overwrite:
        raise UsageError(
            f"--out {out} already exists; pass --overwrite to replace it, or choose another path."
        )
    return path


def _write_h5mu(mdata, out: Path) -> None:
    """Write atomically: a temporary file in the same directory, fsynced, then renamed onto ``out``."""
    from .model._safe_write import atomic_file

    out.parent.mkdir(parents=True, exist_ok=True)
    target = out.resolve() if out.is_symlink() else out  # keep a link, replace what it points to
    with atomic_file(target, suffix=".h5mu") as tmp:
        mdata.write(str(tmp))


def _parse_modalities(text: str) -> dict[str, str]:
    """``"rna=rna,protein=adt"`` -> ``{"rna": "rna", "protein": "adt"}``."""
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(
                f"Bad --modalities entry {part!r}; use e.g. --modalities rna=rna,protein=adt"
            )
        out[key.strip()] = value.strip()
    return out


#: mdata.mod names recognised when --modalities is not given
_MODALITY_ALIASES = {
    "rna": ("rna", "gex", "expression", "genes"),
    "atac": ("atac", "peaks", "chromatin"),
    "protein": ("protein", "prot", "adt", "cite"),
}
DEFAULT_MODEL = "holocell-small"


def _guess_modalities(mdata, given: dict[str, str] | None) -> dict[str, str]:
    if given:
        return given
    found = {}
    for m, aliases in _MODALITY_ALIASES.items():
        for name in mdata.mod:
            if name.lower() in aliases:
                found[m] = name
                break
    if not found:
        raise SystemExit(
            f"holocell: cannot tell which of the modalities {list(mdata.mod)} is RNA, ATAC or protein; "
            "pass e.g. --modalities rna=rna,protein=adt"
        )
    return found


def _read(path: str):
    import mudata as md

    if not Path(path).exists():
        raise SystemExit(f"holocell: input file {path} does not exist.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.read_h5mu(path)


def _cmd_demo(args: argparse.Namespace) -> None:
    from ._demo import run_demo

    run_demo(args.out, max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=not args.no_progress)


def _check_model_out(path: str, overwrite: bool) -> None:
    """Refuse a model output path that would lose data before training starts (see HoloCell.save)."""
    from .model._checkpoint import check_save_path
    from .model._pretrained import ARCHIVE_SUFFIX, is_checkpoint_archive
    from .model._safe_write import replaceable_target

    try:
        if path.endswith(ARCHIVE_SUFFIX):
            replaceable_target(Path(path), overwrite, is_checkpoint_archive, "holocell checkpoint archive")
        else:
            check_save_path(Path(path), overwrite)
    except FileExistsError as err:
        raise UsageError(str(err).replace("overwrite=True", "--overwrite")) from None


def _cmd_train(args: argparse.Namespace) -> None:
    from .model import HoloCell

    if args.resume and args.checkpoint_dir is None:
        raise UsageError(
            "--resume needs --checkpoint-dir, the folder an earlier `holocell train` wrote checkpoints to."
        )
    _check_model_out(args.model, args.overwrite)
    mdata = _read(args.input)
    HoloCell.setup_mudata(
        mdata, modalities=args.modalities, batch_key=args.batch_key, species=args.species, genome=args.genome
    )
    model = HoloCell(mdata, d_model=args.d_model, n_layers=args.n_layers)
    model.train(
        max_epochs=args.max_epochs,
        seed=args.seed,
        enable_progress_bar=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    model.save(args.model, overwrite=args.overwrite)
    print(f"Saved model to {args.model}")


def _load(args: argparse.Namespace):
    """The MuData and the model: a saved directory as is, or a pretrained model transferred onto the data."""
    from .data._registry import check_sha256
    from .model import HoloCell

    if args.sha256 is not None:
        try:
            check_sha256(args.sha256, "--sha256")
        except ValueError as err:
            raise UsageError(str(err)) from None
    mdata = _read(args.input)
    if Path(args.model).is_dir() and not args.transfer:
        if args.sha256 is not None:  # verified like any checkpoint (holocell.model.checkpoint_sha256)
            from .model._pretrained import resolve

            try:
                resolve(args.model, args.sha256)
            except ValueError as err:
                raise UsageError(str(err)) from None
        return mdata, HoloCell.load(args.model, mdata)
    modalities = _guess_modalities(mdata, args.modalities)
    HoloCell.setup_mudata(
        mdata, modalities=modalities, batch_key=args.batch_key, species=args.species, genome=args.genome
    )
    model = HoloCell.load_pretrained(args.model, mdata, sha256=args.sha256)
    print(f"Model {args.model} transferred onto {args.input} ({modalities}); shared with the pretrained model:")
    print(model.transfer_report_.to_string(float_format=lambda x: f"{x:.2f}"))
    return mdata, model


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from .data._merge import MergeInput, merge_for_pretraining
    from .model import HoloCell

    config = _read_config(args.config)
    _check_model_out(args.out, args.overwrite)
    per_file = config.get("datasets", {})
    inputs = []
    for path in args.inputs:
        mdata = _read(path)
        spec = dict(per_file.get(path, per_file.get(Path(path).name, {})))
        name = spec.get("name", Path(path).stem)
        modalities = _guess_modalities(mdata, spec.get("modalities", config.get("modalities")))
        batch_key = spec.get("batch_key", config.get("batch_key"))
        inputs.append(MergeInput(name, mdata, modalities, batch_key=batch_key, layers=spec.get("layers")))
        print(f"{path}: {name}, modalities {modalities}, batch_key {batch_key}")
    merged = merge_for_pretraining(inputs)
    HoloCell.setup_mudata(
        merged,
        modalities={m: m for m in merged.mod},
        batch_key="batch",
        species=config.get("species", "human"),
        genome=config.get("genome"),
    )
    model = HoloCell(merged, **config.get("model", {}))
    print(model)
    model.train(**{"enable_progress_bar": not args.no_progress, **config.get("train", {})})
    if args.out.endswith(".zip"):
        model.save_pretrained(args.out, overwrite=args.overwrite)
    else:
        model.save(args.out, overwrite=args.overwrite)
    print(f"Saved pretrained model ({merged.n_obs} cells, {model.feature_space.n_anchors} anchors) to {args.out}")


_CONFIG_KEYS = {"model", "train", "datasets", "modalities", "batch_key", "species", "genome"}


def _read_config(path: str) -> dict:
    """The pretraining config, checked key by key (types and ranges) before any data is read."""
    if not Path(path).exists():
        raise SystemExit(f"holocell: config file {path} does not exist.")
    try:
        config = json.loads(Path(path).read_text())
    except (ValueError, RecursionError) as err:
        raise UsageError(f"config file {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise UsageError(
            f"config file {path} holds a JSON {type(config).__name__}; it must be an object with keys "
            f"{sorted(_CONFIG_KEYS)} (see docs/pretrained.md)."
        )
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"config file {path} has unknown keys {unknown}; allowed: {sorted(_CONFIG_KEYS)} (see docs/pretrained.md)."
        )
    from ._cli_config import check_pretrain_config
    from .model._config_check import ConfigError

    try:
        check_pretrain_config(config, path)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    return config


def _cmd_embed(args: argparse.Namespace) -> None:
    out = _check_out(args.out, [args.input], args.overwrite)
    mdata, model = _load(args)
    mdata.obsm[args.key_added] = model.get_latent_representation(mdata, modality=args.modality)
    _write_h5mu(mdata, out)
    print(f"Wrote {args.out} with .obsm[{args.key_added!r}]")


def _cmd_generate(args: argparse.Namespace) -> None:
    out = _check_out(args.out, [args.input], args.overwrite)
    mdata, model = _load(args)
    new = model.generate(
        mdata, target=args.target, n_steps=args.n_steps, key_added=args.key_added, seed=args.seed
    )
    key = args.key_added or next(k for k, v in mdata.mod.items() if v is new)
    _write_h5mu(mdata, out)
    print(f"Wrote {args.out} with new modality {key!r}")


def build_parser() -> argparse.ArgumentParser:
    """The ``holocell`` argument parser."""
    parser = argparse.ArgumentParser(prog="holocell", description="holocell multi-omics foundation model")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="train on the bundled PBMC data, generate held-out protein, print scores"
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--max-epochs", type=int, default=40)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="set up and train a model on an .h5mu file, then save it")
    train.add_argument("input", help=".h5mu file with raw counts")
    train.add_argument("--model", required=True, help="folder to save the model to")
    train.add_argument("--modalities", type=_parse_modalities, required=True, help="e.g. rna=rna,protein=adt")
    train.add_argument("--batch-key", default=None)
    train.add_argument("--species", default="human", choices=["human", "mouse"])
    train.add_argument("--genome", default=None, help="hg38, hg19, mm10 or a BED/GTF of TSSs (for ATAC)")
    train.add_argument("--max-epochs", type=int, default=None)
    train.add_argument("--d-model", type=int, default=128)
    train.add_argument("--n-layers", type=int, default=4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing model folder saved by holocell"
    )
    train.add_argument(
        "--checkpoint-dir",
        default=None,
        help="write a training checkpoint (last.ckpt) there after every epoch",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint-dir/last.ckpt (e.g. after a crash)"
    )
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    pre = sub.add_parser("pretrain", help="pretrain one model over several .h5mu files (a JSON config)")
    pre.add_argument("inputs", nargs="+", help=".h5mu files with raw counts")
    pre.add_argument("--config", required=True, help="JSON: model, train, datasets (per-file modalities...)")
    pre.add_argument("--out", required=True, help="output: a .zip archive or a folder")
    pre.add_argument("--overwrite", action="store_true")
    pre.add_argument("--no-progress", action="store_true")
    pre.set_defaults(func=_cmd_pretrain)

    embed = sub.add_parser("embed", help="write cell embeddings of an .h5mu file")
    embed.add_argument("input")
    embed.add_argument("--out", required=True, help="output .h5mu")
    embed.add_argument("--modality", default=None, help="embed from this modality only")
    embed.add_argument("--key-added", default="X_holocell")
    embed.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (never the input)"
    )
    _model_arguments(embed)
    embed.set_defaults(func=_cmd_embed)

    gen = sub.add_parser("generate", help="generate a modality for every cell of an .h5mu file")
    gen.add_argument("input")
    gen.add_argument("--out", required=True, help="output .h5mu")
    gen.add_argument("--target", required=True, choices=["rna", "atac", "protein"])
    gen.add_argument("--n-steps", type=int, default=None, help="denoising steps; 0: the likelihood mean in one shot (default: 0 for a model with a cell state, else 8)")
    gen.add_argument("--key-added", default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (never the input)"
    )
    _model_arguments(gen)
    gen.set_defaults(func=_cmd_generate)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a folder saved by `holocell train`, or a pretrained checkpoint (registry name, .zip, URL) "
        f"transferred onto the input (default: {DEFAULT_MODEL}, shipped, works offline)",
    )
    parser.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 of --model: required for a URL, checked for an archive or folder too",
    )
    parser.add_argument("--transfer", action="store_true", help="transfer a model folder onto the input")
    parser.add_argument(
        "--modalities", type=_parse_modalities, default=None, help="e.g. rna=rna,protein=adt (default: by name)"
    )
    parser.add_argument("--batch-key", default=None)
    parser.add_argument("--species", default="human", choices=["human", "mouse"])
    parser.add_argument("--genome", default=None, help="hg38, hg19, mm10 or a BED/GTF of TSSs (for ATAC)")


def _quiet() -> None:
    """Keep the terminal readable: library deprecation notes and Lightning's start-up banner off."""
    import logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec.*")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    from ._settings import settings

    # a process of its own: back large CPU tensors with huge pages (before torch's first large allocation)
    settings.huge_pages = True
    args = build_parser().parse_args(argv)
    _quiet()
    try:
        args.func(args)
    except UsageError as err:
        print(f"holocell: error: {err}", file=sys.stderr)
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
