"""Files of the command line: the input ``.h5mu`` read with one-line errors, output paths checked before any
work (never the input, never an existing file without ``--overwrite``, of the right kind, in a folder that can
be created: no folder above it is a file or a symlink to nothing), and outputs written atomically (:func:`holocell.model._safe_write.atomic_file`).

A model output (``train --model``, ``pretrain --out``) is never a folder that is or holds an input, nor one that
training writes its checkpoints into, nor a saved model whose ``mdata.h5mu`` the save would delete
(:func:`check_model_out`); the Python API's refusals are worded with the options (``--overwrite``).
"""

from __future__ import annotations

import os
import re
import shlex
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path


class UsageError(SystemExit):
    """A bad argument or config file: printed as one line, exit code 2, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links and other spellings)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def check_out(
    out: str,
    inputs: Sequence[str],
    overwrite: bool,
    *,
    option: str = "--out",
    other_outputs: dict[str, str] | None = None,
) -> Path:
    """Refuse an output that is an input file, another output, exists without ``--overwrite``, is of the wrong
    kind (``--out`` writes a MuData: ``.h5mu``; ``--table`` a text table), or cannot be created, before any work."""
    path = Path(out)
    for given in inputs:
        if same_file(path, Path(given)):
            raise UsageError(
                f"{option} {out} is the input file {given}; holocell never overwrites its input. Write to a new file."
            )
    for name, given in (other_outputs or {}).items():
        if same_file(path, Path(given)):
            raise UsageError(f"{option} {out} is also {name}; give the two outputs different paths.")
    if option == "--out" and path.suffix.lower() != ".h5mu":
        raise UsageError(
            f"--out {out} does not end in .h5mu; holocell writes a MuData there, e.g. --out {path.with_suffix('.h5mu')}."
        )
    if option != "--out" and path.suffix.lower() in (".h5mu", ".h5ad", ".h5"):
        raise UsageError(f"{option} {out} is an HDF5 name; {option} writes a tab-separated text table, e.g. edges.tsv.")
    if option != "--out" and table_separator(path) is None:
        raise UsageError(
            f"{option} {out} does not say how to write the table: name it .tsv or .txt (tab-separated) or .csv "
            f"(comma-separated), optionally compressed ({', '.join(TABLE_COMPRESSION)}), e.g. edges.tsv."
        )
    if path.is_dir():
        raise UsageError(f"{option} {out} is a directory; give the path of a file to write.")
    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"{option} {out} is a symlink to {os.readlink(path)}, which does not exist; choose another path."
        )
    if os.path.lexists(path) and not overwrite:
        raise UsageError(
            f"{option} {out} already exists; pass --overwrite to replace it, or choose another path."
        )
    folder = _existing_folder(path.resolve() if path.is_symlink() else path, f"{option} {out}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out} cannot be created: no permission to write in {folder}.")
    return path


def cli_words(text: str, options: Mapping[str, tuple[str, bool]] | None = None) -> str:
    """A Python API message with the command line's option names (``overwrite=True`` -> ``--overwrite``).

    ``options`` (:func:`holocell._cli_parser.command_options`) words the command's own keywords too:
    ``key_added='x'`` -> ``--key-added x``, a bare ``key_added=`` -> ``--key-added``, and ``flag=True`` ->
    ``--flag`` for a switch. Numbers (``n_heads=2``) and keywords inside Python code (``model.save(d, overwrite=True)``)
    are left as they are.
    """
    for api, option in (
        ("so overwrite=True does not replace it", "so holocell generate does not replace it"),
        ("overwrite=True", "--overwrite"),
        ("train(checkpoint_dir=...)", "holocell train --checkpoint-dir"),
        ("resume=True", "--resume"),
    ):
        text = text.replace(api, option)
    if not options:
        return text
    if "key_added" in options:  # "pass another key_added" (no "=")
        text = re.sub(r"\banother key_added\b", "another --key-added", text)
    names = "|".join(re.escape(n) for n in sorted(options, key=len, reverse=True))
    # "batch_size must be an integer >= 1": the refusal of a value names the option it came from
    text = re.sub(rf"(?<![\w.\-'\"])({names}) must\b", lambda m: f"{options[m.group(1)][0]} must", text)
    pattern = re.compile(rf"(?<![\w.\-])({names})=('[^']*'|\"[^\"]*\"|True\b)?(?=[\s.,;:)]|$)")
    code = _call_spans(text)

    def option(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        flag, is_switch = options[name]
        if any(start <= match.start() < end for start, end in code) or (value is not None and (value == "True") != is_switch):
            return match.group(0)  # Python code, or a value the option does not take as written
        return flag if value is None or is_switch else f"{flag} {shlex.quote(value[1:-1])}"

    return pattern.sub(option, text)


def _call_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the text inside each call's parentheses (``save(...)``: ``(`` right after a name)."""
    spans, stack = [], []
    for i, char in enumerate(text):
        if char == "(":
            stack.append((i, i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_]")))
        elif char == ")" and stack:
            start, is_call = stack.pop()
            if is_call:
                spans.append((start, i))
    return spans


def _existing_folder(path: Path, what: str) -> Path:
    """The nearest existing folder above ``path`` (the output's folders are created below it when it is written);
    a folder on the way that is a file or a symlink to nothing is a :class:`UsageError`, before any work."""
    from ._folders import existing_folder

    try:
        return existing_folder(path, what)
    except NotADirectoryError as err:
        raise UsageError(str(err)) from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_model_out(
    out: str,
    overwrite: bool,
    inputs: Sequence[str],
    *,
    option: str,
    command: str,
    archives: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_option: str = "--checkpoint-dir",
) -> None:
    """Refuse a model output path (a folder, or a ``.zip`` archive) that would lose data, before any work.

    Parameters
    ----------
    out
        ``--model`` of ``train`` / ``--out`` of ``pretrain``, as given (``~`` expanded and made absolute as
        ``HoloCell.save`` does: ``.`` is the current folder; an empty path is refused).
    overwrite
        ``--overwrite``.
    inputs
        The files the command reads: ``out`` may be none of them nor a folder holding one (resolved paths, and
        hard links in the folder).
    option, command
        The option and the subcommand, for messages.
    archives
        Whether a name ending in ``.zip`` is saved as an archive (``pretrain``; :func:`save_model_out`).
    checkpoint_dir, checkpoint_option
        Where training writes its checkpoints, and the option or config key that says so: not ``out`` nor inside it.
    """
    from .model._checkpoint import MUDATA, check_save_path
    from .model._paths import output_path
    from .model._pretrained import ARCHIVE_SUFFIX, is_checkpoint_archive
    from .model._safe_write import replaceable_target

    try:
        path = output_path(out, option)  # absolute: "--model ." is the current folder
    except ValueError as err:
        raise UsageError(str(err)) from None
    _existing_folder(path, f"{option} {out}")
    real = path.resolve()
    members = list(path.iterdir()) if path.is_dir() else []
    for given in inputs:
        source = Path(given).expanduser()
        if _inside(source.resolve(), real) or any(same_file(m, source) for m in members if source.exists()):
            what = "is" if source.resolve() == real else "holds"
            raise UsageError(
                f"{option} {out} {what} the input file {given}, which saving the model there would delete; holocell "
                f"never overwrites or deletes its input. Choose another {option}, or move the input out of {out} first."
            )
    checkpoints = None if checkpoint_dir is None else Path(checkpoint_dir).expanduser().resolve()
    if checkpoints is not None and _inside(checkpoints, real):
        raise UsageError(
            f"{checkpoint_option} {checkpoint_dir} is {'' if checkpoints == real else 'inside '}{option} {out}: "
            "training would write its checkpoints there, and the model could not be saved there afterwards. "
            f"Give {checkpoint_option} a folder of its own, e.g. {str(out).rstrip('/')}_checkpoints."
        )
    try:
        if archives and str(out).endswith(ARCHIVE_SUFFIX):
            replaceable_target(path, overwrite, is_checkpoint_archive, "holocell checkpoint archive")
            return
        target = check_save_path(path, overwrite)  # the saved MuData is checked below, in the command's words
    except FileExistsError as err:
        raise UsageError(cli_words(str(err))) from None
    if os.path.lexists(target / MUDATA):
        raise UsageError(
            f"{option} {out} holds {MUDATA}, a MuData saved with that model (maybe the only copy of those data); "
            f"holocell {command} saves only the model, so --overwrite would delete it. Move {target / MUDATA} out of "
            f"{out} first, or choose another {option}."
        )


def save_model_out(model, out: str, overwrite: bool, archives: bool = False) -> bool:
    """``model.save`` (``save_pretrained`` for a ``.zip`` if ``archives``) with its refusals in the command line's
    words. Only global rank 0 of a multi-process run (``--devices 2``: Lightning re-runs the command for each other
    rank) writes; the others return ``False`` without writing, and the caller prints nothing."""
    from .model._pretrained import ARCHIVE_SUFFIX
    from .model._save_mixin import other_rank

    if other_rank() is not None:
        return False
    try:
        if archives and str(out).endswith(ARCHIVE_SUFFIX):
            model.save_pretrained(out, overwrite=overwrite)
        else:
            model.save(out, overwrite=overwrite)
    except FileExistsError as err:
        raise UsageError(cli_words(str(err))) from None
    return True


def write_h5mu(mdata, out: Path) -> None:
    """Write atomically: a temporary file in the same directory, fsynced, then renamed onto ``out``."""
    from .model._safe_write import atomic_file

    target = out.resolve() if out.is_symlink() else out  # keep a link, replace what it points to
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, suffix=".h5mu") as tmp:
        mdata.write(str(tmp))


#: ``--table`` names and the separator of each (before an optional compression suffix, ``edges.csv.gz``)
TABLE_SEPARATORS = {".tsv": "\t", ".txt": "\t", ".csv": ","}
#: compression suffixes of ``--table`` (pandas compresses as the name says)
TABLE_COMPRESSION = (".gz", ".bz2", ".xz")


def table_separator(path: Path) -> str | None:
    """The separator of a text table named ``path`` (``edges.csv`` -> ``,``; ``edges.tsv.gz`` -> tab), or ``None``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in TABLE_COMPRESSION:
        suffixes.pop()
    return TABLE_SEPARATORS.get(suffixes[-1]) if suffixes else None


def write_table(table, path: Path) -> None:
    """Write a DataFrame as text, atomically: comma-separated for ``.csv``, else tab-separated (``.tsv``, ``.txt``);
    compressed as the name says (``edges.tsv.gz``)."""
    from .model._safe_write import atomic_file

    sep = table_separator(path) or "\t"
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, suffix=target.suffix or ".tsv") as tmp:  # pandas infers compression from the suffix
        table.to_csv(tmp, sep=sep, index=False)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str) -> bool:
    """Whether ``path`` holds the HDF5 signature (at byte 0, or after a user block of 512, 1024, ... bytes)."""
    with open(path, "rb") as f:
        offset, size = 0, os.fstat(f.fileno()).st_size
        while offset < max(size, 1):
            f.seek(offset)
            head = f.read(len(_HDF5_SIGNATURE))
            if head == _HDF5_SIGNATURE:
                return True
            if len(head) < len(_HDF5_SIGNATURE):
                return False
            offset = 512 if offset == 0 else 2 * offset
    return False


def _folder_fix(path: Path, fix: str) -> str:
    """How to turn the folder ``path`` into an ``.h5mu`` file: a zarr store of a MuData (``mod/``) or of an AnnData
    is converted with the read call of :func:`holocell.data._stores.zarr_store` (the Python API's advice too) into
    an ``.h5mu`` name that does not exist yet; any other folder gets ``fix``."""
    from .data._stores import free_h5mu_name, zarr_store

    store = zarr_store(path)
    if store is None:
        return fix
    kind, call = store
    reads = "holocell reads .h5mu files" if kind.startswith("a MuData") else "holocell reads MuData .h5mu files"
    return f"It is {kind}; {reads}: {call}.write({str(free_h5mu_name(path))!r})."


def read(path: str):
    """The MuData in ``path``; a missing file, a folder or a file that is no ``.h5mu`` is a :class:`UsageError`."""
    import mudata as md

    if not Path(path).exists():
        raise UsageError(f"input file {path} does not exist; check the path.")
    fix = (
        "holocell reads MuData .h5mu files; wrap an AnnData first: "
        "mudata.MuData({'rna': anndata.read_h5ad(path)}).write('data.h5mu')."
    )
    if Path(path).is_dir():
        raise UsageError(f"input {path} is a directory, not an .h5mu file. {_folder_fix(Path(path), fix)}")
    if not Path(path).is_file():  # a FIFO or a device: never read without end
        raise UsageError(f"input {path} is not a regular file (a pipe, a socket or a device); give an .h5mu file.")
    if not is_hdf5(path):
        raise UsageError(f"input {path} is not an HDF5 file, so not an .h5mu file. {fix}")
    with warnings.catch_warnings(record=True) as caught:  # shown only when the file is read
        warnings.simplefilter("always")
        try:
            mdata = md.read_h5mu(path)
        except (TypeError, KeyError, ValueError) as err:  # e.g. an AnnData .h5ad: no modalities to read
            raise UsageError(f"input {path} cannot be read as a MuData ({type(err).__name__}: {err}). {fix}") from None
    for w in caught:
        if not issubclass(w.category, FutureWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return mdata


__all__ = [
    "UsageError",
    "check_model_out",
    "check_out",
    "cli_words",
    "is_hdf5",
    "read",
    "same_file",
    "save_model_out",
    "table_separator",
    "write_h5mu",
    "write_table",
]
