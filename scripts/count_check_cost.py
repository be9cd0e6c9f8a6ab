"""Cost of holocell's full count check (every stored value, in chunks) on 1e8 values.

Times :func:`holocell.model._counts.check_counts` on a dense float32 array, the ``.data`` of a CSR
matrix (float32 and int32) and, with ``--backed``, the same CSR matrix stored in an ``.h5ad`` file
and read back backed (chunks read from disk). Peak extra memory of the check is measured with
``tracemalloc`` (numpy reports its buffers to it). Writes a JSON result file.

Usage::

    OMP_NUM_THREADS=1 python scripts/count_check_cost.py --out scripts/count_check_cost.json [--backed]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from holocell.model._counts import CHUNK_VALUES, check_counts


def _measure(label: str, x, n_values: int, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        check_counts(x, "rna", "rna")
        seconds.append(time.perf_counter() - t0)
    tracemalloc.start()
    check_counts(x, "rna", "rna")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row = {
        "case": label,
        "n_values": n_values,
        "seconds_best": round(min(seconds), 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "values_per_second": round(n_values / min(seconds)),
        "peak_extra_mb": round(peak / 2**20, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-values", type=int, default=10**8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backed", action="store_true", help="also time a backed (on-disk) CSR matrix")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    n = args.n_values
    rng = np.random.default_rng(0)
    n_cols = 20_000
    n_rows = n // n_cols
    rows = []
    dense = rng.integers(0, 50, (n_rows, n_cols), dtype=np.int32).astype(np.float32)
    rows.append(_measure("dense float32 (in memory)", dense, dense.size, args.repeats))
    del dense
    # CSR with exactly n stored values: the check reads only .data
    indptr = np.arange(0, n + 1, n_cols, dtype=np.int64)
    indices = np.tile(np.arange(n_cols, dtype=np.int32), n_rows)
    data = rng.integers(1, 50, n, dtype=np.int32).astype(np.float32)
    csr = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
    rows.append(_measure("CSR float32 .data (in memory)", csr, csr.nnz, args.repeats))
    csr_int = sp.csr_matrix((data.astype(np.int32), indices, indptr), shape=(n_rows, n_cols))
    rows.append(_measure("CSR int32 .data (in memory)", csr_int, csr_int.nnz, args.repeats))
    del csr_int
    if args.backed:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "counts.h5ad"
            ad.AnnData(csr).write_h5ad(path)
            del csr, data, indices
            backed = ad.read_h5ad(path, backed="r")
            rows.append(_measure("CSR float32 .data (backed .h5ad, from disk)", backed.X, n, args.repeats))
            backed.file.close()
    result = {
        "what": "holocell.model._counts.check_counts: every stored value, in chunks",
        "chunk_values": CHUNK_VALUES,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "threads": "OMP_NUM_THREADS as set by the caller (numpy elementwise work is single-threaded)",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
