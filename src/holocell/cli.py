"""Terminal entry point: ``holocell demo | train | pretrain | embed | generate | perturb | grn`` on ``.h5mu`` files.

Each option is a parameter of the Python API with the same default (:mod:`holocell._cli_parser`).

Outputs are never overwritten without ``--overwrite``, the input file never at all, and ``.h5mu``
outputs are written to a temporary file beside the target and renamed into place. Output paths are
checked before any work (kind, folder, existing file), so a bad one costs nothing. With several devices
(``train --devices 2``, ``pretrain``'s ``train.devices``) Lightning runs the command once per process; only global
rank 0 saves the model and says so. Problems with
the arguments or a config file end with a one-line ``holocell: error: ...`` and exit code 2, and so
do the Python API's refusals of the user's input (:data:`USER_ERRORS`: a modality, gene, batch key or
model that is not there, a value out of range); any other exception is a bug and keeps its traceback.
``HOLOCELL_TRACEBACK=1`` prints the traceback above the one-line error too (for a bug report).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from ._cli_files import UsageError, cli_words
from ._cli_files import check_out as _check_out
from ._cli_files import read as _read
from ._cli_files import save_model_out as _save_model_out
from ._cli_files import write_h5mu as _write_h5mu
from ._cli_files import write_table as _write_table
from ._cli_parser import DEFAULT_MODEL, build_parser, command_options

__all__ = ["DEFAULT_MODEL", "TRACEBACK_ENV", "USER_ERRORS", "UsageError", "build_parser", "main"]

#: Exceptions by which the Python API refuses the user's input (holocell's ``ConfigError`` is a ``ValueError``):
#: printed as one line with exit code 2. ``RuntimeError``, ``AssertionError`` and the rest are bugs: traceback.
USER_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

#: Set to 1 to print the traceback above the one-line error of a refused input (for a bug report).
TRACEBACK_ENV = "HOLOCELL_TRACEBACK"


def _guess_modalities(mdata, given: dict[str, str] | None) -> dict[str, str]:
    """``given``, or the modalities recognised by name (the table merge_datasets uses too)."""
    from .data._modality_names import recognised_modalities

    if given:
        return given
    found = recognised_modalities(mdata.mod)
    if not found:
        raise UsageError(
            f"cannot tell which of the modalities {list(mdata.mod)} is RNA, ATAC or protein; "
            "pass e.g. --modalities rna=rna,protein=adt"
        )
    return found


def _cmd_demo(args: argparse.Namespace) -> None:
    from ._demo import run_demo

    # run_demo checks --max-epochs and --seed before creating the output folder; main() reports its refusals
    progress = False if args.no_progress else None  # None: a bar on a terminal or in Jupyter only
    run_demo(args.out, max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=progress)


def _check_model_out(
    path: str,
    overwrite: bool,
    inputs: Sequence[str] = (),
    *,
    option: str = "--model",
    command: str = "train",
    archives: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_option: str = "--checkpoint-dir",
) -> None:
    """Refuse a model output path that would lose data before training starts (see HoloCell.save): one that is or
    holds an input, holds the training checkpoints, or a saved MuData (:func:`._cli_files.check_model_out`)."""
    from ._cli_files import check_model_out

    check_model_out(
        path, overwrite, inputs, option=option, command=command, archives=archives, checkpoint_dir=checkpoint_dir,
        checkpoint_option=checkpoint_option,
    )  # fmt: skip


def _cmd_train(args: argparse.Namespace) -> None:
    from .model import HoloCell

    if args.resume and args.checkpoint_dir is None:
        raise UsageError(
            "--resume needs --checkpoint-dir, the folder an earlier `holocell train` wrote checkpoints to."
        )
    _check_model_out(args.model, args.overwrite, [args.input], checkpoint_dir=args.checkpoint_dir)
    _check_accelerator(args.accelerator, args.devices)
    mdata = _read(args.input)
    HoloCell.setup_mudata(mdata, modalities=args.modalities, **_setup_kwargs(args))
    model = HoloCell(
        mdata, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, n_latents=args.n_latents,
        n_latent=args.n_latent, seed=args.seed,  # --seed starts the weights as well as the run
    )
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=args.devices,
        seed=args.seed,
        enable_progress_bar=False if args.no_progress else None,  # None: a bar on a terminal or in Jupyter only
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    if _save_model_out(model, args.model, args.overwrite):  # FileExistsError worded with --overwrite
        print(f"Saved model to {args.model}")  # by global rank 0 only: --devices 2 runs this command twice


def _check_accelerator(accelerator: str, devices) -> None:
    """Refuse an ``--accelerator`` / ``--devices`` pair that Lightning cannot use here, before the data are read."""
    from .train._devices import trainer_problem

    problem = trainer_problem({"accelerator": accelerator, "devices": devices})
    if problem:
        raise UsageError(
            f"--accelerator {accelerator} --devices {devices} cannot run here ({problem}); "
            "use --accelerator cpu, gpu, mps or auto and devices this machine has."
        )


def _check_key_added(key_added: str | None) -> None:
    """Refuse an output key that an ``.h5mu`` file cannot hold (empty, or with HDF5's ``/``), before any work."""
    from .model._args import check_key_added

    if key_added is not None:  # None: generate's <modality>_generated
        try:
            check_key_added(key_added, "--key-added")
        except (TypeError, ValueError) as err:
            raise UsageError(str(err)) from None


def _setup_kwargs(args: argparse.Namespace) -> dict:
    """The set-up options of ``HoloCell.setup_mudata`` given on the command line."""
    return {
        "batch_key": args.batch_key,
        "species": args.species,
        "genome": args.genome,
        "rna_layer": args.rna_layer,
        "atac_layer": args.atac_layer,
        "protein_layer": args.protein_layer,
    }


#: set-up options that describe the input: they replace a saved model folder's (HoloCell.load(setup_overrides=))
_INPUT_SETUP = ("batch_key", "rna_layer", "atac_layer", "protein_layer")
#: set-up options that describe the model: a saved model folder's must not differ
_MODEL_SETUP = ("modalities", "species", "genome")


def _saved_setup_overrides(args: argparse.Namespace, saved: dict) -> dict:
    """The set-up options given with a saved model folder that replace its set-up (batch column, count layers);
    one that describes the model (modalities, species, genome) and differs from the saved value is a
    :class:`UsageError` naming that value."""
    given = getattr(args, "given", frozenset())
    for name in _MODEL_SETUP:
        value, kept = getattr(args, name), saved.get(name, "human" if name == "species" else None)
        if name in given and value != kept and not (  # --genome=~/x.bed is the saved "~/x.bed" (parser: expanded)
            isinstance(kept, str) and os.path.expanduser(kept) == value
        ) and not (name == "genome" and _same_build(value, kept)):
            also = " (and give the file's modalities the saved names)" if name == "modalities" else ""
            raise UsageError(
                f"--{name} {_shown(value)} differs from the set-up saved with the model in {args.model} "
                f"({f'--{name} {_shown(kept)}' if kept is not None else f'no --{name}'}); a saved model reads its data as it was trained. Leave --{name} out{also}, or pass "
                "--transfer to transfer the model onto the input set up with your options."
            )
    overrides = {name: getattr(args, name) for name in _INPUT_SETUP if name in given}
    unread = [n for n in overrides if n != "batch_key" and n.removesuffix("_layer") not in saved["modalities"]]
    if unread:
        raise UsageError(
            f"--{unread[0].replace('_', '-')} {overrides[unread[0]]}: the model in {args.model} reads no "
            f"{unread[0].removesuffix('_layer')} modality (it reads {list(saved['modalities'])}); leave it out."
        )
    if "batch_key" in overrides and saved.get("batch_key") is None:
        raise UsageError(
            f"--batch-key {overrides['batch_key']}: the model in {args.model} was trained without batches, so it "
            "has no batch to match the file's batches to; leave --batch-key out (or pass --transfer)."
        )
    return overrides


def _check_saved_batch_key(args: argparse.Namespace, mdata, saved: str | None, overrides: dict) -> None:
    """A saved model's batch column that the input lacks (and no ``--batch-key`` given): ask for ``--batch-key``."""
    if saved is None or "batch_key" in overrides or saved in mdata.obs:
        return
    holders = [name for name, adata in mdata.mod.items() if saved in adata.obs]
    where = f" (only mdata.mod[{holders[0]!r}].obs has it: copy it to the global obs first)" if holders else ""
    raise UsageError(
        f"the model in {args.model} was set up with --batch-key {saved}, which is not a column of mdata.obs in "
        f"{args.input}{where}; pass --batch-key with the column that holds the batches (columns: "
        f"{list(mdata.obs.columns)[:20]})."
    )


def _same_build(value, kept) -> bool:
    """Whether two ``--genome`` values name one shipped build (``GRCm38`` and ``mm10``)."""
    from .vocab._tables import normalise_genome

    try:
        return normalise_genome(value) == normalise_genome(kept)
    except (ValueError, FileNotFoundError, TypeError):
        return False


def _shown(value) -> str:
    return ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _load(args: argparse.Namespace):
    """The MuData and the model: a saved directory with its set-up (the input's batch column and count layers
    given replace the saved ones), or a pretrained model transferred onto the data."""
    from .data._registry import REGISTRY, check_sha256
    from .model import HoloCell
    from .model._pretrained import check_not_shadowed

    try:
        if args.sha256 is not None:
            check_sha256(args.sha256, "--sha256")
        if args.model in REGISTRY:  # the API and the command read a name that is also a path alike: refused
            check_not_shadowed(args.model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    mdata = _read(args.input)
    if Path(args.model).expanduser().is_dir() and not args.transfer:
        if args.sha256 is not None:  # verified like any checkpoint (holocell.model.checkpoint_sha256)
            from .model._pretrained import resolve

            try:
                resolve(args.model, args.sha256)
            except ValueError as err:
                raise UsageError(str(err)) from None
        saved = HoloCell.load_registry(args.model)["setup_args"]
        overrides = _saved_setup_overrides(args, saved)
        _check_saved_batch_key(args, mdata, saved.get("batch_key"), overrides)
        return mdata, HoloCell.load(args.model, mdata, device=args.device, setup_overrides=overrides)
    modalities = _guess_modalities(mdata, args.modalities)
    HoloCell.setup_mudata(mdata, modalities=modalities, **_setup_kwargs(args))
    model = HoloCell.load_pretrained(args.model, mdata, sha256=args.sha256, device=args.device)
    print(
        f"Model {args.model} transferred onto {args.input} ({modalities}); shared with the pretrained model:"
    )
    print(model.transfer_report_.to_string(float_format=lambda x: f"{x:.2f}"))
    return mdata, model


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from ._cli_pretrain import run_pretrain

    run_pretrain(args)


def _progress(args: argparse.Namespace) -> bool | None:
    """``progress_bar`` of a command that runs the model: ``False`` with ``--no-progress``, else ``None`` (the
    setting, hc.settings.progress_bar: by default shown on a terminal only)."""
    return False if args.no_progress else None


def _cmd_embed(args: argparse.Namespace) -> None:
    out = _check_out(args.out, [args.input], args.overwrite)
    mdata, model = _load(args)
    from . import tl

    tl.embed(mdata, model, modality=args.modality, key_added=args.key_added, batch_size=args.batch_size,
             device=args.device, progress_bar=_progress(args))  # never replaces an embedding holocell did not write  # fmt: skip
    _write_h5mu(mdata, out)
    print(f"Wrote {args.out} with .obsm[{args.key_added!r}]")


def _cmd_generate(args: argparse.Namespace) -> None:
    out = _check_out(args.out, [args.input], args.overwrite)
    mdata, model = _load(args)
    new = model.generate(
        mdata,
        target=args.target,
        n_steps=args.n_steps,
        key_added=args.key_added,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        var_suffix=args.var_suffix or None,
        progress_bar=_progress(args),
        overwrite=True,  # replaces only a modality an earlier generate wrote, never the user's (check_generated_key)
    )
    key = args.key_added or next(k for k, v in mdata.mod.items() if v is new)
    _write_h5mu(mdata, out)
    print(f"Wrote {args.out} with new modality {key!r}")


def _cmd_perturb(args: argparse.Namespace) -> None:
    from .tl import perturb

    if not args.genes and not args.cres:
        raise UsageError("perturb needs --genes and/or --cres, e.g. --genes MS4A1,CD79A")
    out = _check_out(args.out, [args.input], args.overwrite)
    mdata, model = _load(args)
    perturb(
        mdata,
        model,
        genes=args.genes,
        cres=args.cres,
        mode=args.mode,
        regenerate=args.regenerate,
        sources=args.sources,
        overexpress_quantile=args.overexpress_quantile,
        flow=args.flow,
        n_top=args.n_top,
        n_steps=args.n_steps,
        key_added=args.key_added,
        var_suffix=args.var_suffix or None,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    _write_h5mu(mdata, out)
    print(f"Wrote {args.out} with .uns[{args.key_added!r}] (top responders) and the shifted values")
    print(mdata.uns[args.key_added]["summary"].head(10).to_string(index=False))


def _cmd_grn(args: argparse.Namespace) -> None:
    from .tl import grn

    out = _check_out(args.out, [args.input], args.overwrite)
    table = None
    if args.table:
        table = _check_out(args.table, [args.input], args.overwrite, option="--table", other_outputs={"--out": args.out})
    mdata, model = _load(args)
    grn(
        mdata,
        model,
        tfs=args.tfs,
        targets=args.targets,
        method=args.method,
        sources=args.sources,
        n_cells=args.n_cells,
        n_steps=args.n_steps,
        key_added=args.key_added,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        progress_bar=_progress(args),
    )
    _write_h5mu(mdata, out)
    edges = mdata.uns[args.key_added]
    if table is not None:
        _write_table(edges, table)
    print(
        f"Wrote {args.out} with .uns[{args.key_added!r}] ({len(edges)} edges)"
        + (f" and {args.table}" if table else "")
    )


_COMMANDS = {
    "demo": _cmd_demo,
    "train": _cmd_train,
    "pretrain": _cmd_pretrain,
    "embed": _cmd_embed,
    "generate": _cmd_generate,
    "perturb": _cmd_perturb,
    "grn": _cmd_grn,
}


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
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet()
    try:
        _check_key_added(getattr(args, "key_added", None))
        _COMMANDS[args.command](args)
    except UsageError as err:
        print(f"holocell: error: {err}", file=sys.stderr)
        raise
    except KeyboardInterrupt:  # Ctrl-C: one line, not the Python object's story; outputs are written atomically
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        folder = getattr(args, "checkpoint_dir", None)
        resume = f"; its checkpoints are in {folder}: run it again with --resume to go on" if folder else ""
        print(f"holocell: interrupted: {args.command} stopped; no output is left half-written{resume}.", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):  # a bug report needs the whole story
            traceback.print_exc()
        message = cli_words(_one_line(err), command_options(parser, args.command))
        print(f"holocell: error: {message}", file=sys.stderr)
        raise UsageError(message) from None
    return 0


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a ``KeyError``'s without the quotes of its repr)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) else str(err)
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
