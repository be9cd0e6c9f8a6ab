"""Terminal entry point: ``holocell demo | train | embed | generate`` on ``.h5mu`` files."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


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


def _cmd_train(args: argparse.Namespace) -> None:
    from .model import HoloCell

    mdata = _read(args.input)
    HoloCell.setup_mudata(
        mdata, modalities=args.modalities, batch_key=args.batch_key, species=args.species, genome=args.genome
    )
    model = HoloCell(mdata, d_model=args.d_model, n_layers=args.n_layers)
    model.train(max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=not args.no_progress)
    model.save(args.model, overwrite=args.overwrite)
    print(f"Saved model to {args.model}")


def _load(args: argparse.Namespace):
    from .model import HoloCell

    mdata = _read(args.input)
    return mdata, HoloCell.load(args.model, mdata)


def _cmd_embed(args: argparse.Namespace) -> None:
    mdata, model = _load(args)
    mdata.obsm[args.key_added] = model.get_latent_representation(mdata, modality=args.modality)
    mdata.write(args.out)
    print(f"Wrote {args.out} with .obsm[{args.key_added!r}]")


def _cmd_generate(args: argparse.Namespace) -> None:
    mdata, model = _load(args)
    new = model.generate(
        mdata, target=args.target, n_steps=args.n_steps, key_added=args.key_added, seed=args.seed
    )
    key = args.key_added or next(k for k, v in mdata.mod.items() if v is new)
    mdata.write(args.out)
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
    train.add_argument("--overwrite", action="store_true")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    embed = sub.add_parser("embed", help="write cell embeddings of an .h5mu file")
    embed.add_argument("input")
    embed.add_argument("--model", required=True)
    embed.add_argument("--out", required=True, help="output .h5mu")
    embed.add_argument("--modality", default=None, help="embed from this modality only")
    embed.add_argument("--key-added", default="X_holocell")
    embed.set_defaults(func=_cmd_embed)

    gen = sub.add_parser("generate", help="generate a modality for every cell of an .h5mu file")
    gen.add_argument("input")
    gen.add_argument("--model", required=True)
    gen.add_argument("--out", required=True, help="output .h5mu")
    gen.add_argument("--target", required=True, choices=["rna", "atac", "protein"])
    gen.add_argument("--n-steps", type=int, default=8)
    gen.add_argument("--key-added", default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=_cmd_generate)
    return parser


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
    args = build_parser().parse_args(argv)
    _quiet()
    args.func(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
