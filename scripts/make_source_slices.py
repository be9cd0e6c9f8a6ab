"""Write small slices of the real data sets' original files, in their original formats, to tests/data/sources.

The tests serve these from 127.0.0.1 so that the loaders' download -> check -> convert path runs on every
test run (tests/test_data_sources.py). Each slice keeps its source's format exactly:

- scMoMaT ``MOp_5batches``: 60 cells (5 per library), 40 genes and 300 peaks; ``RxC1.npz`` / ``GxC1.npz``
  written with ``scipy.sparse.save_npz`` (features x cells CSR, int64 counts, as the originals),
  ``meta_c1.csv``, ``genes.txt`` and ``regions.txt`` as the original lines.
- epiCHAOS ``hemato.rda``: 40 cells (20 per donor) and the first 200 peaks, written by editing the
  parsed R object tree (dgCMatrix, S4Vectors DataFrame, GRanges with Rle seqnames) and serialising it
  again with ``rdata``'s unparser (XDR, gzip), to which S4 objects are added here (they carry only
  attributes).
- muon ``test_rna_atac.h5mu``: 50 cells, all features, written with mudata.

Run: ``python scripts/make_source_slices.py /path/to/shared/data/originals``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import mudata as md
import numpy as np
import rdata
import scipy.sparse as sp
from rdata.parser import RObjectType
from rdata.unparser import _unparser

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "sources"


def scmomat(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = (src / "meta_c1.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    batches = np.array([row.split(",")[1] for row in rows])
    rng = np.random.default_rng(0)
    cells = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(batches == b), 5, replace=False) for b in np.unique(batches)]
        )
    )
    genes = np.sort(rng.choice(len((src / "genes.txt").read_text().splitlines()), 40, replace=False))
    peaks = np.sort(rng.choice(len((src / "regions.txt").read_text().splitlines()), 300, replace=False))
    (out / "meta_c1.csv").write_text(header + "".join(rows[i] for i in cells))
    for name, keep in (("genes.txt", genes), ("regions.txt", peaks)):
        text = (src / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(text[i] for i in keep))
    for name, keep in (("GxC1.npz", genes), ("RxC1.npz", peaks)):
        matrix = sp.load_npz(src / name).tocsr()
        sp.save_npz(out / name, matrix[keep][:, cells].tocsr(), compressed=True)


def _pairs(obj):
    """(tag name, value object) of an R pairlist (attributes, S4 slots)."""
    node = obj
    while node is not None and node.info.type == RObjectType.LIST:
        tag = node.tag.referenced_object if node.tag.info.type == RObjectType.REF else node.tag
        yield tag.value.value.decode(), node.value[0]
        node = node.value[1]


def _slot(obj, name):
    return dict(_pairs(obj.attributes))[name]


def _cut(obj, keep) -> None:
    """Keep the elements ``keep`` of an R vector (and of its ``names`` attribute)."""
    obj.value = obj.value[keep] if isinstance(obj.value, np.ndarray) else [obj.value[i] for i in keep]
    if obj.attributes is not None:
        for name, value in _pairs(obj.attributes):
            if name == "names":
                _cut(value, keep)


def epichaos(src: Path, out: Path, n_peaks: int = 200) -> None:
    out.mkdir(parents=True, exist_ok=True)
    parsed = rdata.parser.parse_file(src / "hemato.rda")
    hemato = parsed.object.value[0]
    counts, meta, ranges = hemato.value
    x = sp.csc_matrix(
        (_slot(counts, "x").value, _slot(counts, "i").value, _slot(counts, "p").value),
        shape=tuple(_slot(counts, "Dim").value),
    )
    groups = np.array([c.value.decode() for c in _slot(meta, "listData").value[2].value])
    rng = np.random.default_rng(0)
    cells = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(groups == g), 20, replace=False) for g in np.unique(groups)]
        )
    )
    small = x[:n_peaks][:, cells].tocsc()
    _slot(counts, "i").value = small.indices.astype(np.int32)
    _slot(counts, "p").value = small.indptr.astype(np.int32)
    _slot(counts, "x").value = small.data.astype(np.float64)
    _slot(counts, "Dim").value = np.array(small.shape, dtype=np.int32)
    _cut(_slot(counts, "Dimnames").value[1], cells)
    _cut(_slot(meta, "rownames"), cells)
    _slot(meta, "nrows").value = np.array([len(cells)], dtype=np.int32)
    for column in _slot(meta, "listData").value:
        _cut(column, cells)
    seqnames = _slot(ranges, "seqnames")
    values, lengths = _slot(seqnames, "values"), _slot(seqnames, "lengths")
    runs = np.searchsorted(np.cumsum(lengths.value), n_peaks) + 1
    _cut(values, np.arange(runs))
    lengths.value = lengths.value[:runs].copy()
    lengths.value[-1] -= int(lengths.value.sum()) - n_peaks
    _slot(_slot(ranges, "strand"), "lengths").value = np.array([n_peaks], dtype=np.int32)
    iranges = _slot(ranges, "ranges")
    for name in ("start", "width", "NAMES"):
        _cut(_slot(iranges, name), np.arange(n_peaks))
    mcols = _slot(ranges, "elementMetadata")
    _slot(mcols, "nrows").value = np.array([n_peaks], dtype=np.int32)
    for column in _slot(mcols, "listData").value:
        _cut(column, np.arange(n_peaks))

    plain = _unparser.Unparser.unparse_r_object

    def with_s4(self, obj) -> None:  # an S4 object is its info word and its attributes (slots)
        if obj.info.type != RObjectType.S4:
            return plain(self, obj)
        self.unparse_int(_unparser.pack_r_object_info(obj.info))
        self.unparse_r_object(obj.attributes)
        return None

    _unparser.Unparser.unparse_r_object = with_s4
    try:
        rdata.unparser.unparse_file(
            out / "hemato.rda", parsed, file_format="xdr", file_type="rda", compression="gzip"
        )
    finally:
        _unparser.Unparser.unparse_r_object = plain


def muon(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.read_h5mu(src / "test_rna_atac.h5mu")
        small = mdata[np.sort(np.random.default_rng(0).choice(mdata.n_obs, 50, replace=False))].copy()
        small.write_h5mu(out / "test_rna_atac.h5mu")


if __name__ == "__main__":
    originals = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/originals")
    scmomat(originals / "scmomat_mop", OUT / "scmomat_mop")
    epichaos(originals / "epichaos", OUT / "epichaos")
    muon(originals / "muon", OUT / "muon")
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(OUT)}  {path.stat().st_size:,} bytes")
