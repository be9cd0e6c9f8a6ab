"""holocell replaces only files it wrote and that are unchanged since: the download cache, ``hc.pl`` figures, the demo.

Probe defects 2 (the cache replaced the user's files at cache names, and edits to a cached conversion), 3 (the
conversion's temporary files had guessable names and followed planted symlinks), 4 (``save=`` replaced any file
that mentioned ``holocell.pl``, and replaced a symlink by a file) and 9 (the demo checked its folder only before
training). Downloads come from a real HTTP server on 127.0.0.1 (fixture ``server``), never the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mudata as md
import pytest

from holocell import HoloCellWarning, _demo
from holocell.data import _registry
from holocell.data._registry import CACHE_DIR_ENV, fetch, register
from holocell.model._safe_write import write_beside
from holocell.pl._utils import FIGURES_MANIFEST, save_figure

SLICES = Path(__file__).parent / "data" / "sources"
PAYLOAD = b"holocell cache test payload\n" * 100
MINE = b"the user's own annotated copy - weeks of work\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def pbmc_source(server, cache):
    """``pbmc_multiome_1k``'s original (the slice in tests/data/sources) served from 127.0.0.1; yields the
    converted file's cache path and the request log."""
    url, root, requests = server
    (root / "muon").symlink_to(SLICES / "muon", target_is_directory=True)
    (source,) = _registry.REGISTRY["pbmc_multiome_1k"].sources
    entry = _registry.REGISTRY[source]
    sha = _sha((SLICES / "muon" / "test_rna_atac.h5mu").read_bytes())
    register(source, entry.filename, sha, url=f"{url}muon/test_rna_atac.h5mu", kind="source")
    return cache / _registry.REGISTRY["pbmc_multiome_1k"].filename, requests


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name or ".tmp" in p.name)


# ------------------------------------------------------------------------------------ converted data sets
def test_a_users_file_at_the_converted_name_is_never_replaced(pbmc_source, cache):
    converted, requests = pbmc_source
    cache.mkdir()
    converted.write_bytes(MINE)
    with pytest.raises(FileExistsError) as err:
        fetch("pbmc_multiome_1k", progressbar=False)
    message = str(err.value)
    assert str(converted) in message and "holocell did not write it" in message
    assert CACHE_DIR_ENV in message and "Move or rename" in message
    assert converted.read_bytes() == MINE and requests == []  # refused before any download
    assert sorted(p.name for p in cache.iterdir()) == [converted.name]


def test_edits_to_a_cached_conversion_are_kept_and_refused(pbmc_source, cache):
    converted, requests = pbmc_source
    assert fetch("pbmc_multiome_1k", progressbar=False) == converted
    stamp = json.loads(converted.with_name(converted.name + ".json").read_text())
    assert stamp["written_by"] == "holocell" and stamp["sha256"] == _sha(converted.read_bytes())
    mdata = md.read_h5mu(converted)
    mdata.uns["my_annotation"] = "curated"
    mdata.write(converted)  # the user edits the cached copy in place
    edited = converted.read_bytes()
    with pytest.raises(FileExistsError, match="changed since holocell converted it"):
        fetch("pbmc_multiome_1k", progressbar=False)
    assert converted.read_bytes() == edited
    # an unchanged conversion from an older converter is still redone, without a download
    converted.unlink()
    fetch("pbmc_multiome_1k", progressbar=False)
    stamp_path = converted.with_name(converted.name + ".json")
    stamp_path.write_text(json.dumps({**json.loads(stamp_path.read_text()), "converter_version": -1}))
    fetch("pbmc_multiome_1k", progressbar=False)
    assert json.loads(stamp_path.read_text())["converter_version"] != -1
    assert len(requests) == 1 and _leftovers(cache) == []


def test_a_users_file_at_the_stamp_name_is_never_replaced(pbmc_source, cache):
    converted, requests = pbmc_source
    cache.mkdir()
    stamp = converted.with_name(converted.name + ".json")
    stamp.write_text('{"my": "settings"}')
    with pytest.raises(FileExistsError, match="not a stamp holocell wrote"):
        fetch("pbmc_multiome_1k", progressbar=False)
    assert stamp.read_text() == '{"my": "settings"}' and not converted.exists() and requests == []


def test_planted_symlinks_at_the_old_temporary_names_are_not_followed(pbmc_source, cache, tmp_path):
    converted, _ = pbmc_source
    cache.mkdir()
    victims = [tmp_path / "thesis.tex", tmp_path / "refs.bib"]
    for victim, name in zip(victims, (converted.name, converted.name + ".json"), strict=True):
        victim.write_text("years of work\n")
        (cache / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    assert fetch("pbmc_multiome_1k", progressbar=False) == converted
    assert all(v.read_text() == "years of work\n" for v in victims)
    assert not converted.is_symlink() and converted.is_file()
    assert [p.name for p in cache.iterdir() if p.name.startswith(".") and not p.is_symlink()] == []


# ---------------------------------------------------------------------------------------------- downloads
def test_a_users_file_at_a_download_name_is_never_replaced(server, cache):
    url, root, requests = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register("test-file", "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    cache.mkdir()
    (cache / "good.bin").write_bytes(MINE)
    with pytest.raises(FileExistsError) as err:
        fetch("test-file", progressbar=False)
    assert "holocell did not download it" in str(err.value) and CACHE_DIR_ENV in str(err.value)
    assert (cache / "good.bin").read_bytes() == MINE and requests == []
    (cache / "good.bin").write_bytes(PAYLOAD)  # the same bytes: used as they are, nothing recorded or sent
    assert fetch("test-file", progressbar=False).read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == ["good.bin"] and requests == []


def test_a_damaged_download_that_holocell_recorded_is_downloaded_again(server, cache):
    url, root, requests = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register("test-file", "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    path = fetch("test-file", progressbar=False)
    record = json.loads((cache / "good.bin.json").read_text())
    assert record["kind"] == "download" and record["sha256"] == _sha(PAYLOAD)
    path.write_bytes(b"truncated")
    assert fetch("test-file", progressbar=False).read_bytes() == PAYLOAD
    assert len(requests) == 2 and _leftovers(cache) == []


def test_a_users_file_at_the_record_name_is_kept_and_the_download_still_works(server, cache):
    url, root, _ = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register("test-file", "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    cache.mkdir()
    (cache / "good.bin.json").write_text('{"sha256": "mine"}')
    with pytest.warns(HoloCellWarning, match="not a record holocell wrote"):
        assert fetch("test-file", progressbar=False).read_bytes() == PAYLOAD
    assert (cache / "good.bin.json").read_text() == '{"sha256": "mine"}' and _leftovers(cache) == []


# ------------------------------------------------------------------------------------------- write_beside
def test_write_beside_links_a_new_file_and_refuses_one_that_appeared_meanwhile(tmp_path):
    def refusal(p):
        return FileExistsError(f"{p} is not ours")

    target = tmp_path / "out.txt"
    with write_beside(target, lambda p: False, refusal) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    target.unlink()
    with (
        pytest.raises(FileExistsError, match="is not ours"),
        write_beside(target, lambda p: False, refusal) as tmp,
    ):
        tmp.write_text("holocell's")
        target.write_text("the user's, created while holocell wrote")
    assert target.read_text() == "the user's, created while holocell wrote"
    target.chmod(0o600)
    with write_beside(target, lambda p: True, refusal) as tmp:  # holocell's own: replaced, mode kept
        tmp.write_text("replaced")
    assert target.read_text() == "replaced" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# ------------------------------------------------------------------------------------------------ figures
def _figure():
    _, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return ax.figure


def test_a_figure_is_replaced_only_while_unchanged(tmp_path):
    fig = tmp_path / "fig.svg"
    save_figure(_figure(), fig)
    save_figure(_figure(), fig)  # a re-run replaces holocell's unchanged figure
    recorded = json.loads((tmp_path / FIGURES_MANIFEST).read_text())
    assert recorded == {"fig.svg": _sha(fig.read_bytes())}
    edited = fig.read_text().replace("</svg>", "<text>my annotation</text></svg>")
    fig.write_text(edited)
    with pytest.raises(FileExistsError, match="changed since"):
        save_figure(_figure(), fig)
    assert fig.read_text() == edited
    poster = tmp_path / "poster.svg"  # mentions holocell, but holocell did not write it
    poster.write_text("<svg><text>Figure 2 made with holocell.pl.grn_scores</text></svg>")
    with pytest.raises(FileExistsError, match="holocell did not write"):
        save_figure(_figure(), poster)
    assert "made with holocell.pl" in poster.read_text()
    plt.close("all")


def test_a_symlinked_figure_is_written_through_the_link(tmp_path):
    real = tmp_path / "figures" / "grn.png"
    save_figure(_figure(), real)
    link = tmp_path / "latest.png"
    link.symlink_to(real)
    before = real.read_bytes()
    ax = plt.subplots()[1]
    ax.plot([0, 1, 2], [0, 2, 1])
    save_figure(ax.figure, link)
    assert link.is_symlink() and real.read_bytes() != before
    assert json.loads((real.parent / FIGURES_MANIFEST).read_text()) == {"grn.png": _sha(real.read_bytes())}
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FileExistsError, match="which does not exist"):
        save_figure(_figure(), dangling)
    assert not (tmp_path / "nowhere.png").exists()
    plt.close("all")


def test_a_manifest_holocell_did_not_write_is_refused_before_saving(tmp_path):
    (tmp_path / FIGURES_MANIFEST).write_text("my notes")
    with pytest.raises(FileExistsError, match="not the record of figures"):
        save_figure(_figure(), tmp_path / "new.png")
    assert not (tmp_path / "new.png").exists() and (tmp_path / FIGURES_MANIFEST).read_text() == "my notes"
    plt.close("all")


# --------------------------------------------------------------------------------------------------- demo
def test_the_demo_checks_each_output_again_right_before_writing_it(tmp_path):
    out = tmp_path / "demo_output"
    out.mkdir()
    with _demo._demo_file(out, "results.md") as tmp:
        tmp.write_text("demo table")
    with _demo._demo_file(out, "results.md") as tmp:  # its own unchanged output: replaced
        tmp.write_text("demo table, second run")
    assert (out / "results.md").read_text() == "demo table, second run"
    (out / "results.md").write_text("the user's notes, written while the demo trained")
    with pytest.raises(FileExistsError, match="not an unchanged output"), _demo._demo_file(out, "results.md"):
        pass
    (out / "results.md").unlink()
    with (
        pytest.raises(FileExistsError, match="not an unchanged output"),
        _demo._demo_file(out, "results.md") as tmp,
    ):
        tmp.write_text("demo table")
        (out / "results.md").write_text("appeared between the check and the rename")
    assert (out / "results.md").read_text() == "appeared between the check and the rename"
    assert _leftovers(out) == []
