"""Check an installed holocell (from the wheel, outside the source tree) the way a new user meets it.

With ``HOLOCELL_DATA_DIR`` unset and an empty cache, a local HTTP server on 127.0.0.1 stands in for the
public hosts of the real data sets' original files; every loader downloads, checks and converts them. Then
every CLI command runs on a small ``.h5mu`` file, and with ``--tutorials`` every notebook runs on a kernel of
this Python (the notebooks read the real data sets from the cache the loaders just filled). Run it with the
Python of a fresh virtual environment where the wheel is installed, from a folder that is not the repository::

    python -m venv /tmp/fresh && /tmp/fresh/bin/pip install "dist/holocell-<version>-py3-none-any.whl[tutorials]" nbclient
    cd "$(mktemp -d)" && /tmp/fresh/bin/python /path/to/scripts/smoke_installed.py ../shared/data/originals \\
        --tutorials /path/to/tutorials

``originals`` is a folder with ``scmomat_mop/``, ``epichaos/`` and ``muon/``: the real originals (e.g.
``../shared/data/originals``), or the slices in ``tests/data/sources``, whose own hashes are then registered
(the tutorials need the real originals: a conversion of slices is not the data set they expect).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: data set -> folder of its originals (as in tests/data/sources and ../shared/data/originals)
FOLDERS = {"snareseq2_mop": "scmomat_mop", "granja2019_bmmc": "epichaos", "pbmc_multiome_1k": "muon"}


def check_installed() -> None:
    """holocell is imported from an installed wheel (site-packages) that ships ``py.typed``."""
    import holocell as hc

    installed = Path(hc.__file__).resolve()
    if "site-packages" not in str(installed):
        raise SystemExit(f"holocell is imported from {installed}, not from an installed wheel")
    if not (installed.parent / "py.typed").is_file():
        raise SystemExit("py.typed is missing from the installed package")
    print(f"holocell {hc.__version__} from {installed.parent}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


def serve_originals(originals: Path) -> tuple[http.server.ThreadingHTTPServer, bool]:
    """Serve ``originals`` on 127.0.0.1 and point every source entry there; whether all are the real files."""
    import holocell as hc
    from holocell.data import REGISTRY

    handler = functools.partial(_QuietHandler, directory=str(originals))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    real = True
    for source in hc.data.available("source"):
        dataset, original = source.split(":", 1)
        folder = FOLDERS[dataset]
        sha = hashlib.sha256((originals / folder / original).read_bytes()).hexdigest()
        real &= sha == REGISTRY[source].sha256
        hc.data.register(source, REGISTRY[source].filename, sha, url=f"{base}{folder}/{original}", kind="source")
    print(f"originals served from {base} ({'the real files' if real else 'not the registered files'})")
    return httpd, real


def check_loaders() -> None:
    import holocell as hc

    for name in FOLDERS:
        start = time.time()
        data = getattr(hc.data, name)(progressbar=False)
        print(f"hc.data.{name}(): {data.shape}, downloaded and converted in {time.time() - start:.0f} s")


def check_cli(work: Path) -> None:
    """Every ``holocell`` command on a small simulated ``.h5mu`` file (the entry point of this Python)."""
    import holocell as hc

    mdata, _ = hc.data.simulate_multiome(200, n_genes=40, n_tfs=6, n_proteins=8, seed=0)
    data = work / "sim.h5mu"
    mdata.write(data)
    model = work / "model"
    tiny = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--n-latents", "8", "--max-epochs", "1"]
    tfs = ",".join(mdata["rna"].var_names[mdata["rna"].var["is_tf"].to_numpy()][:2])
    commands = [
        ["--version"],
        ["train", str(data), "--model", str(model), "--modalities", "rna=rna,atac=atac,protein=protein",
         "--batch-key", "batch", "--batch-size", "32", "--no-progress", *tiny],
        ["embed", str(data), "--model", str(model), "--out", str(work / "embed.h5mu")],
        ["generate", str(data), "--model", str(model), "--target", "protein", "--n-steps", "2",
         "--out", str(work / "gen.h5mu")],
        ["perturb", str(data), "--model", str(model), "--genes", tfs.split(",")[0], "--n-steps", "2",
         "--out", str(work / "perturb.h5mu")],
        ["grn", str(data), "--model", str(model), "--tfs", tfs, "--method", "embedding",
         "--out", str(work / "grn.h5mu"), "--table", str(work / "edges.tsv")],
        ["embed", str(data), "--out", str(work / "embed_pretrained.h5mu")],  # the shipped checkpoint
    ]  # fmt: skip
    executable = Path(sys.executable).parent / "holocell"
    for args in commands:
        result = subprocess.run([str(executable), *args], capture_output=True, text=True, cwd=work)
        if result.returncode != 0:
            raise SystemExit(f"holocell {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        print(f"holocell {args[0]}: ok" + (f" ({result.stdout.strip()})" if args == ["--version"] else ""))


def check_tutorials(folder: Path, work: Path) -> None:
    """Run every notebook of ``folder`` on a kernel of this Python; any cell error fails."""
    import nbclient
    import nbformat

    os.environ.pop("MPLBACKEND", None)
    for path in sorted(folder.glob("*.ipynb")):
        run_dir = work / "tutorials" / path.stem
        run_dir.mkdir(parents=True)
        shutil.copy(path, run_dir / path.name)
        nb = nbformat.read(run_dir / path.name, as_version=4)
        start = time.time()
        client = nbclient.NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(run_dir)}}
        )
        client.execute()  # raises CellExecutionError on the first failing cell
        print(f"tutorial {path.stem}: ok ({time.time() - start:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("originals", type=Path, help="folder with scmomat_mop/, epichaos/ and muon/")
    parser.add_argument("--tutorials", type=Path, help="folder of the notebooks to run (the repository's tutorials/)")
    args = parser.parse_args(argv)
    os.environ.pop("HOLOCELL_DATA_DIR", None)
    work = Path(tempfile.mkdtemp(prefix="holocell-smoke-"))
    os.environ["HOLOCELL_CACHE_DIR"] = str(work / "cache")  # empty: everything is downloaded
    check_installed()
    httpd, real = serve_originals(args.originals.resolve())
    try:
        check_loaders()
    finally:
        httpd.shutdown()
    check_cli(work)
    if args.tutorials is not None:
        if not real:
            raise SystemExit("--tutorials needs the real originals (their hashes are the registered ones)")
        check_tutorials(args.tutorials.resolve(), work)
    print(f"installed holocell: loaders, CLI{' and tutorials' if args.tutorials else ''} work (files in {work})")


if __name__ == "__main__":
    main()
