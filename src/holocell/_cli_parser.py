"""The ``holocell`` argument parser: one argument per API parameter, with the API's defaults.

Every default here equals the default of the Python function it is passed to (``tests/test_cli_parity.py``
compares them with :func:`inspect.signature`), and ``--help`` shows it. The commands' bodies are in
:mod:`holocell.cli`.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version

DEFAULT_MODEL = "holocell-small"


def _version() -> str:
    try:
        return version("holocell")
    except PackageNotFoundError:  # a source tree on the path, not installed
        from . import __version__

        return __version__


def _parse_modalities(text: str) -> dict[str, str]:
    """``"rna=rna,protein=adt"`` -> ``{"rna": "rna", "protein": "adt"}``."""
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(
                f"Bad --modalities entry {part!r}; use e.g. --modalities rna=rna,protein=adt"
            )
        if key.strip() in out:  # a dict would keep the last one silently
            raise argparse.ArgumentTypeError(
                f"modality {key.strip()!r} is named twice in {text!r}; give each modality once, "
                "e.g. --modalities rna=rna,protein=adt"
            )
        out[key.strip()] = value.strip()
    return out


def _path(text: str) -> str:
    """A path argument with ``~`` expanded: the shell leaves ``--out=~/x`` as it is, and a folder named ``~`` would
    be created (which ``rm -rf ~`` then deletes the home folder with). Names that are no path (``holocell-small``,
    ``hg38``, a URL) are unchanged."""
    return os.path.expanduser(text)


def _names(text: str) -> list[str]:
    """``"GATA1,SPI1"`` -> ``["GATA1", "SPI1"]``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, twice))} given twice in {text!r}; give each name once")
    return names


def _sources(text: str) -> list[str]:
    """``"rna,atac"`` -> ``["rna", "atac"]``; ``"none"`` -> ``[]`` (condition on the edited genes alone)."""
    return [] if text.strip().lower() == "none" else _names(text)


def _cells_or_all(text: str) -> int | None:
    """``"500"`` -> ``500``; ``"all"`` -> ``None`` (every cell)."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of cells or 'all', got {text!r}") from None


def _devices(text: str) -> int | str | list[int]:
    """``auto``, a count (``2``) or device indices (``0,1``), as Lightning's ``devices``."""
    if text == "auto":
        return text
    try:
        devices = [int(p) for p in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--devices takes 'auto', a count or indices like 0,1; got {text!r}"
        ) from None
    if isinstance(devices, list) and len(set(devices)) < len(devices):
        raise argparse.ArgumentTypeError(f"--devices {text} names a device twice; give each index once, e.g. 0,1")
    return devices


def _device(text: str) -> str | None:
    return None if text == "auto" else text


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (``(default: ...)``) after its help text; not for required options and flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.nargs == 0:  # nothing to default / on-off switches
            return action.help
        return super()._get_help_string(action)


class _Given(argparse.Action):
    """Store the value and note the option as given (``args.given``): a saved model's set-up is compared only with
    the set-up options the user gave, not with their defaults."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = frozenset(getattr(namespace, "given", frozenset())) | {self.dest}


#: How the set-up options act with a model folder saved by ``holocell train`` (``holocell embed --help`` ...).
SAVED_MODEL_SETUP = (
    "How the input is set up. For a pretrained checkpoint (and with --transfer) these options set it up. A model "
    "folder saved by `holocell train` replays its saved set-up: --batch-key and the --*-layer options describe the "
    "input and replace the saved batch column and count layers (batches are matched to the training batches by "
    "name); --modalities, --species and --genome describe the model and must equal the saved values (leave them "
    "out, or the command stops and names the saved value)."
)


def _data_arguments(
    parser: argparse.ArgumentParser, *, required_modalities: bool = False, description: str | None = None
) -> None:
    """Set-up arguments (HoloCell.setup_mudata), in a group with ``description``."""
    group = parser.add_argument_group("set-up of the input", description)
    group.add_argument(
        "--modalities",
        type=_parse_modalities,
        action=_Given,
        required=required_modalities,
        default=None,
        help="which mdata.mod holds which modality, e.g. rna=rna,protein=adt"
        + ("" if required_modalities else " (None: guessed from the names)"),
    )
    group.add_argument(
        "--batch-key", action=_Given, default=None, help="column of mdata.obs with the batch of each cell"
    )
    group.add_argument(
        "--species", action=_Given, default="human", choices=["human", "mouse"], help="species of the cells"
    )
    group.add_argument(
        "--genome", type=_path, action=_Given, default=None, help="hg38, hg19, mm10 or a BED/GTF of TSSs (for ATAC)"
    )
    for modality in ("rna", "atac", "protein"):
        group.add_argument(
            f"--{modality}-layer",
            action=_Given,
            default=None,
            help=f"layer of the {modality} modality with raw counts, e.g. counts (None: .X)",
        )


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=_path,
        default=DEFAULT_MODEL,
        help="a folder saved by `holocell train`, or a pretrained checkpoint (registry name, .zip, URL) "
        "transferred onto the input (the default is shipped and works offline)",
    )
    parser.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 of --model: required for a URL, checked for a .zip or folder",
    )
    parser.add_argument(
        "--transfer", action="store_true",
        help="transfer a model folder onto the input, set up with the options below (not the folder's set-up)",
    )  # fmt: skip
    _data_arguments(parser, description=SAVED_MODEL_SETUP)


def _inference_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    parser.add_argument(
        "--batch-size", type=int, default=None, help="cells per forward pass (None: from the model size)"
    )
    parser.add_argument(
        "--device", type=_device, default=None, help="cpu, cuda, cuda:1, mps (None: the model's device)"
    )
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=_path, help=".h5mu file with raw counts")
    parser.add_argument("--out", type=_path, required=True, help="output .h5mu (written atomically)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (never the input)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``holocell`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="holocell",
        description="holocell multi-omics foundation model",
        epilog="A refused input ends with one line 'holocell: error: ...' and exit code 2; set HOLOCELL_TRACEBACK=1 "
        "to see its traceback too (for a bug report).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        # no abbreviations: `--device` must not be read as `train --devices` (which then named an option not given)
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter, allow_abbrev=False)

    demo = command("demo", "train on the bundled PBMC data, generate held-out protein, print scores")
    demo.add_argument("--out", type=_path, default="demo_output", help="output folder")
    demo.add_argument("--max-epochs", type=int, default=40, help="training epochs")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    train = command("train", "set up and train a model on an .h5mu file, then save it")
    train.add_argument("input", type=_path, help=".h5mu file with raw counts")
    train.add_argument("--model", type=_path, required=True, help="folder to save the model to")
    _data_arguments(train, required_modalities=True)
    train.add_argument(
        "--max-epochs", type=int, default=None, help="epochs (None: about 1,500 steps, 20-400 epochs)"
    )
    train.add_argument("--batch-size", type=int, default=32, help="cells per training step")
    train.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto (Lightning)")
    train.add_argument("--devices", type=_devices, default="auto", help="auto, a count, or indices like 0,1")
    train.add_argument("--d-model", type=int, default=128, help="width of the network")
    train.add_argument("--n-layers", type=int, default=2, help="transformer layers")
    train.add_argument("--n-heads", type=int, default=4, help="attention heads")
    train.add_argument("--n-latents", type=int, default=32, help="latent vectors the tokens are read into")
    train.add_argument("--n-latent", type=int, default=32, help="size of the cell state (the embedding)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing model folder saved by holocell"
    )
    train.add_argument(
        "--checkpoint-dir", type=_path, default=None, help="write a training checkpoint (last.ckpt) there every epoch"
    )
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.ckpt")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")

    pre = command("pretrain", "pretrain one model over several .h5mu files (a JSON config)")
    pre.add_argument("inputs", nargs="+", type=_path, help=".h5mu files with raw counts")
    pre.add_argument("--config", type=_path, required=True, help="JSON: model, train, datasets (per-file modalities...)")
    pre.add_argument("--out", type=_path, required=True, help="output: a .zip archive or a folder")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing output saved by holocell")
    pre.add_argument("--no-progress", action="store_true", help="hide progress bars")

    embed = command("embed", "write cell embeddings of an .h5mu file")
    _output_arguments(embed)
    embed.add_argument(
        "--modality", default=None, help="embed from this modality only (None: all the cell has)"
    )
    embed.add_argument("--key-added", default="X_holocell", help="key of .obsm")
    _inference_arguments(embed, seed=False)
    _model_arguments(embed)

    gen = command("generate", "generate a modality for every cell of an .h5mu file")
    _output_arguments(gen)
    gen.add_argument(
        "--target", required=True, choices=["rna", "atac", "protein"], help="modality to generate"
    )
    gen.add_argument(
        "--n-steps", type=int, default=None,
        help="denoising steps; 0: the likelihood mean in one shot (default with a cell state: 0 for rna and "
        "protein, 1 for atac; else 8)",
    )
    gen.add_argument(
        "--key-added", default=None, help="name of the new modality (None: <modality>_generated)"
    )
    gen.add_argument(
        "--var-suffix", default="_generated", help="appended to the generated features' names ('' keeps them)"
    )
    _inference_arguments(gen)
    _model_arguments(gen)

    pert = command("perturb", "in-silico knockout / overexpression of genes or peaks (hc.tl.perturb)")
    _output_arguments(pert)
    pert.add_argument("--genes", type=_names, default=None, help="genes to edit, comma-separated")
    pert.add_argument(
        "--cres", type=_names, default=None,
        help="peaks to close (knockout) or open (overexpress), comma-separated, named as in the data"
    )
    pert.add_argument("--mode", default="knockout", choices=["knockout", "overexpress"], help="the edit")
    pert.add_argument(
        "--regenerate", type=_names, default=None,
        help="modalities to regenerate, of rna / protein (None: those the model has, the edited RNA included)"
    )
    pert.add_argument(
        "--sources", type=_sources, default=None,
        help="modalities kept visible as conditioning, of rna / atac / protein, or 'none' (the edited genes alone; "
             "default: every modality of the model that is not regenerated)",
    )  # fmt: skip
    pert.add_argument("--overexpress-quantile", type=float, default=0.99, help="value set by overexpression")
    pert.add_argument(
        "--flow", default="staged", choices=["staged", "joint"], help="chromatin -> RNA -> protein, or all at once"
    )
    pert.add_argument("--n-top", type=int, default=20, help="responders kept in the summary")
    pert.add_argument("--n-steps", type=int, default=8, help="denoising steps")
    pert.add_argument(
        "--key-added",
        default="holocell_perturb",
        help="prefix of the keys written: .mod[<key>_<modality>], .obsm[X_<key>_shift], .obs[<key>_applied], "
        ".uns[<key>]",
    )
    pert.add_argument(
        "--var-suffix", default=None,
        help="appended to the shift modalities' feature names ('auto': _<key-added>; default: the measured names)",
    )  # fmt: skip
    _inference_arguments(pert)
    _model_arguments(pert)

    grn = command("grn", "rank TF -> target edges from the model (hc.tl.grn)")
    _output_arguments(grn)
    grn.add_argument(
        "--tfs", type=_names, default=None,
        help="regulators, comma-separated (default: the RNA var['is_tf'] genes if that column exists, else every "
             "gene that regulates another in Pathway Commons' controls-expression-of edges, TFs or not; else all genes)",
    )  # fmt: skip
    grn.add_argument(
        "--targets", type=_names, default=None, help="targets, comma-separated (None: all genes)"
    )
    grn.add_argument(
        "--method", default="both", choices=["embedding", "knockout", "both"], help="how edges are scored"
    )
    grn.add_argument(
        "--sources", type=_sources, default=None,
        help="modalities kept visible while the knockouts regenerate RNA, of atac / protein, or 'none' (the edited "
             "genes alone; default: every modality of the model but RNA)",
    )  # fmt: skip
    grn.add_argument("--n-cells", type=_cells_or_all, default=500, help="cells used for knockouts, or 'all'")
    grn.add_argument("--n-steps", type=int, default=4, help="denoising steps")
    grn.add_argument("--key-added", default="holocell_grn", help="key of .uns")
    grn.add_argument(
        "--table", type=_path, default=None,
        help="also write the edge table to this file: .tsv or .txt tab-separated, .csv comma-separated (add .gz, .bz2 "
             "or .xz to compress; atomic, replaced only with --overwrite)",
    )  # fmt: skip
    _inference_arguments(grn)
    _model_arguments(grn)
    return parser


def command_options(parser: argparse.ArgumentParser, command: str) -> dict[str, tuple[str, bool]]:
    """The options of subcommand ``command`` by API keyword: ``{"key_added": ("--key-added", False), "overwrite":
    ("--overwrite", True), ...}`` (``True``: an on-off switch), to word the Python API's messages with them."""
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {
        a.dest: (max(a.option_strings, key=len), a.nargs == 0)
        for a in sub._actions
        if a.option_strings and a.dest not in ("help", "version")
    }


__all__ = ["DEFAULT_MODEL", "SAVED_MODEL_SETUP", "build_parser", "command_options"]
