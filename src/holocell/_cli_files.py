"""Files of the command line: the input ``.h5mu`` read with one-line errors, output paths checked before any
work (never the input, never an existing file without ``--overwrite``, of the right kind, in a folder that can
be created), and outputs written atomically (:func:`holocell.model._safe_write.atomic_file`)."""

from __future__ import annotations

import os
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
    folder = (path.resolve() if path.is_symlink() else path.absolute()).parent
    while not folder.exists():  # created when the output is written
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {out} cannot be created: {folder} is a file, not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out} cannot be created: no permission to write in {folder}.")
    return path


def write_h5mu(mdata, out: Path) -> None:
    """Write atomically: a temporary file in the same directory, fsynced, then renamed onto ``out``."""
    from .model._safe_write import atomic_file

    target = out.resolve() if out.is_symlink() else out  # keep a link, replace what it points to
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, suffix=".h5mu") as tmp:
        mdata.write(str(tmp))


def write_table(table, path: Path) -> None:
    """Write a DataFrame as tab-separated text, atomically; compressed as the name says (``edges.tsv.gz``)."""
    from .model._safe_write import atomic_file

    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, suffix=target.suffix or ".tsv") as tmp:  # pandas infers compression from the suffix
        table.to_csv(tmp, sep="\t", index=False)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str) -> bool:
    """Whether ``path`` holds the HDF5 signature (at byte 0, or after a user block of 512, 1024, ... bytes)."""
    with open(path, "rb") as f:
        offset = 0
        while True:
            f.seek(offset)
            head = f.read(len(_HDF5_SIGNATURE))
            if head == _HDF5_SIGNATURE:
                return True
            if len(head) < len(_HDF5_SIGNATURE):
                return False
            offset = 512 if offset == 0 else 2 * offset


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
        raise UsageError(f"input {path} is a directory, not an .h5mu file. {fix}")
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


__all__ = ["UsageError", "check_out", "is_hdf5", "read", "same_file", "write_h5mu", "write_table"]
