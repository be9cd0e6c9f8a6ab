"""Reliability of checkpoints (issue 20): save never deletes user files, untrusted configs are validated
before use, sha256 values are checked first and verified for folders, archive problems are named.

Real models, real files; every test compares file trees (paths and sha256 of every file) before and after.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import pytest

import holocell as hc
from holocell.model import _checkpoint

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
MODS = {"rna": "rna", "protein": "protein"}
FIX = "save the model again or fetch a fresh copy"
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up (or loading a model onto it, which
#: replays the setup) reports that few RNA features are vocabulary genes (issue 20). The tests expect it.
SIM_GENES = r"RNA features of modality .* map to a known"


def _sim_genes():
    return pytest.warns(hc.HoloCellWarning, match=SIM_GENES)


def _sim():
    return hc.data.simulate_multiome(
        64, n_genes=20, n_tfs=4, n_proteins=5, n_distal_peaks=3, peaks_per_gene=2, seed=0
    )[0]


def _setup(mdata):
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


@pytest.fixture(scope="module")
def model():
    return hc.HoloCell(_setup(_sim()), **TINY)


@pytest.fixture
def saved(model, tmp_path):
    model.save(tmp_path / "model")
    return tmp_path / "model"


# ----------------------------------------------------------------------------- 1. save never deletes user files
def _user_folder(path):
    (path / "sub").mkdir(parents=True)
    (path / "results.csv").write_text("a,b\n1,2\n")
    (path / "sub" / "figure.png").write_bytes(b"\x89PNG not really")
    return path


def test_save_refuses_a_folder_that_is_not_a_checkpoint(model, tmp_path, snapshot):
    target = _user_folder(tmp_path / "results")
    before = snapshot(tmp_path)
    for overwrite, words in ((False, "pass overwrite=True"), (True, "not a holocell checkpoint directory")):
        with pytest.raises(FileExistsError, match=words) as err:
            model.save(target, overwrite=overwrite)
        assert str(target) in str(err.value)
    assert "Choose a path that does not exist yet, or move or remove" in str(err.value)
    assert snapshot(tmp_path) == before  # nothing deleted, nothing left behind


def test_save_refuses_a_plain_file_and_a_checkpoint_with_extra_files(model, saved, tmp_path, snapshot):
    plain = tmp_path / "notes.txt"
    plain.write_text("my notes")
    (saved / "README.md").write_text("my own description of this model")
    before = snapshot(tmp_path)
    for path in (plain, saved):
        with pytest.raises(FileExistsError) as err:
            model.save(path, overwrite=True)
        assert str(path) in str(err.value) and "Choose a path that does not exist" in str(err.value)
    assert snapshot(tmp_path) == before


def test_save_through_a_symlink_replaces_the_checkpoint_and_keeps_the_link(model, saved, tmp_path, snapshot):
    link = tmp_path / "latest"
    link.symlink_to(saved, target_is_directory=True)
    other = hc.HoloCell(_setup(_sim()), **TINY, seed=1)  # other weights, same vocabulary
    other.save(link, overwrite=True)
    assert link.is_symlink() and link.resolve() == saved.resolve()
    config = json.loads((saved / "config.json").read_text())
    assert config["weights_sha256"] == _checkpoint.file_sha256(saved / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "model"]  # no aside copy left
    with _sim_genes():
        hc.HoloCell.load(link, _setup(_sim()))
    # a link to something else, and a dangling link, are refused and left as they are
    folder = _user_folder(tmp_path / "results")
    (tmp_path / "to_results").symlink_to(folder, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    for name, words in (("to_results", "not a holocell checkpoint"), ("dangling", "does not exist")):
        with pytest.raises(FileExistsError, match=words) as err:
            model.save(tmp_path / name, overwrite=True)
        assert str(tmp_path / name) in str(err.value)
    assert snapshot(tmp_path) == before


def test_save_keeps_a_user_folder_named_like_the_aside_copy(model, saved, tmp_path, snapshot):
    _user_folder(tmp_path / ".model.old")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"Move .*\.model\.old away"):
        model.save(saved, overwrite=True)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_checkpoint_fsynced_and_cleaned_up(model, saved, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):  # records what is flushed, then flushes it
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(os, "fsync", spy)
    (saved / "model.safetensors").write_bytes(b"stale")  # the old checkpoint is replaced as a whole
    model.save(saved, overwrite=True)
    names = [os.path.basename(p) for p in synced]
    assert {"config.json", "model.safetensors"} <= set(names)
    assert str(tmp_path) in synced  # the directory holding the renamed checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # old copy removed before returning
    with _sim_genes():
        hc.HoloCell.load(saved, _setup(_sim()))


def test_save_pretrained_replaces_only_an_archive(model, tmp_path, snapshot):
    archive = model.save_pretrained(tmp_path / "m.zip")
    model.save_pretrained(archive, overwrite=True)  # an archive of ours: replaced
    link = tmp_path / "latest.zip"
    link.symlink_to(archive)
    model.save_pretrained(link, overwrite=True)  # through a link: the archive is replaced, the link kept
    assert link.is_symlink() and hc.model.checkpoint_sha256(link) == hc.model.checkpoint_sha256(archive)
    other_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("holiday.jpg", b"jpeg bytes")
    (tmp_path / "folder.zip").mkdir()
    before = snapshot(tmp_path)
    for path in (other_zip, tmp_path / "folder.zip"):
        with pytest.raises(FileExistsError, match="not a holocell checkpoint archive") as err:
            model.save_pretrained(path, overwrite=True)
        assert str(path) in str(err.value)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 3. untrusted configs validated
def _edit(config: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        config = config[key]
    if value is KeyError:
        del config[last]
    else:
        config[last] = value


CASES = [  # (edit, value, words that must be in the message)
    ("init_params", KeyError, "'init_params' is missing"),
    ("init_params.d_model", "64", "'init_params.d_model' must be an integer"),
    ("init_params.d_model", 10**9, "'init_params.d_model' must lie in [1, 65536]"),
    ("init_params.n_latents", -4, "'init_params.n_latents' must lie in"),
    ("init_params.dropout", math.nan, "'init_params.dropout' must be a finite number"),
    ("init_params.n_heads", 3, "'init_params.n_heads' must divide d_model=32"),
    ("setup_args.modalities", ["rna"], "'setup_args.modalities' must be an object"),
    (
        "feature_space.maps.rna.anchor",
        [0, 1],
        "'feature_space.maps.rna.anchor' has 2 entries for 20 features",
    ),
    ("batch_categories", "batch0", "'batch_categories' must be an array"),
    ("surprise", 1, "'surprise' is not a key holocell knows"),
]


@pytest.mark.parametrize(("key", "value", "words"), CASES, ids=[c[0] + ":" + repr(c[1])[:12] for c in CASES])
def test_bad_config_values_are_named(saved, tmp_path, snapshot, key, value, words):
    config = json.loads((saved / "config.json").read_text())
    _edit(config, key, value)
    (saved / "config.json").write_text(json.dumps(config))  # NaN is written as the JSON literal NaN
    before = snapshot(tmp_path)
    for load in (lambda: hc.HoloCell.load(saved, _setup(_sim())), lambda: hc.HoloCell.load_pretrained(saved)):
        with pytest.raises(ValueError) as err:
            load()
        assert type(err.value).__name__ == "ConfigError" and words in str(err.value), str(err.value)
        assert FIX in str(err.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("payload", [[1, 2, 3], "holocell", 7])
def test_config_that_is_not_an_object(saved, tmp_path, payload):
    (saved / "config.json").write_text(json.dumps(payload))
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(saved / "config.json", "config.json")
        zf.write(saved / "model.safetensors", "model.safetensors")
    for source in (saved, archive):
        with pytest.raises(ValueError, match=f"holds a JSON {type(payload).__name__}, not an object") as err:
            hc.HoloCell.load_pretrained(source)
        assert str(source) in str(err.value)


def test_sizes_that_disagree_with_the_weights_header(saved):
    # (issue 17 dropped the "network" entry from new configs; old ones with it: test_old_config_layout_...)
    config = json.loads((saved / "config.json").read_text())
    config["init_params"]["n_latents"] = 16  # the weights hold 8 latents
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'network\.latents' has shape \(8, 32\)") as err:
        hc.HoloCell.load(saved, _setup(_sim()))
    assert "'init_params.n_latents'" in str(err.value) and "save the model again" in str(err.value)
    config["init_params"]["n_latents"] = 8
    config["batch_categories"] = [*config["batch_categories"], "extra"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'network\.batch\.weight'.*'batch_categories'"):
        hc.HoloCell.load_pretrained(saved)


def test_oversized_config_is_not_read(saved, monkeypatch):
    monkeypatch.setattr(_checkpoint, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(ValueError, match=r"more than the 1,000 a holocell config\.json may have"):
        hc.HoloCell.load(saved, _setup(_sim()))


# ----------------------------------------------------------------------------- 4. sha256 checked and verified
def test_sha256_of_a_folder_and_an_archive_is_verified(model, saved, tmp_path, snapshot):
    archive = model.save_pretrained(tmp_path / "m.zip")
    good_dir, good_zip = hc.model.checkpoint_sha256(saved), hc.model.checkpoint_sha256(archive)
    assert good_dir != good_zip and len(good_dir) == 64
    hc.HoloCell.load_pretrained(saved, sha256=good_dir)
    hc.HoloCell.load_pretrained(archive, sha256="SHA256:" + good_zip.upper())
    before = snapshot(tmp_path)
    for source, wrong in ((saved, good_zip), (archive, good_dir)):
        with pytest.raises(ValueError, match="Refusing to load it") as err:
            hc.HoloCell.load_pretrained(source, sha256=wrong)
        assert str(source) in str(err.value) and good_dir in str(err.value)
    with pytest.raises(ValueError, match="registered with sha256"):
        hc.HoloCell.load_pretrained("holocell-small", sha256=good_dir)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("bad", ["../../escaped", "abc", "g" * 64, "0" * 63 + "/"])
def test_malformed_sha256_creates_nothing(server, tmp_path, snapshot, monkeypatch, bad):
    url, _, requests = server
    monkeypatch.setenv("HOLOCELL_CACHE_DIR", str(tmp_path / "cache"))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="64 hex characters") as err:
        hc.HoloCell.load_pretrained(url + "model.zip", sha256=bad)
    assert "nothing was fetched or created" in str(err.value)
    assert snapshot(tmp_path) == before and requests == []


# ----------------------------------------------------------------------------- 5. archives: causes named
def _archive(tmp_path, saved, name="a.zip", compress=zipfile.ZIP_DEFLATED, prefix=("", "")):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.write(saved / "config.json", prefix[0] + "config.json")
        zf.write(saved / "model.safetensors", prefix[1] + "model.safetensors")
    return path


def _patch_headers(path, offset_local: int, offset_central: int, value: bytes) -> None:
    """Write ``value`` at an offset of every local (PK\\3\\4) and central (PK\\1\\2) header."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        start = data.find(signature)
        while start >= 0:
            data[start + offset : start + offset + len(value)] = value
            start = data.find(signature, start + 1)
    path.write_bytes(bytes(data))


def test_corrupted_encrypted_and_unsupported_members_are_named(saved, tmp_path):
    stored = _archive(tmp_path, saved, "crc.zip", zipfile.ZIP_STORED)
    data = bytearray(stored.read_bytes())
    data[data.find(b'"format"') + 2] ^= 0x01  # one changed byte inside the stored config.json
    stored.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"member 'config.json' is corrupted \(bad CRC-32") as err:
        hc.HoloCell.load_pretrained(stored)
    assert str(stored) in str(err.value)
    encrypted = _archive(tmp_path, saved, "enc.zip")
    _patch_headers(encrypted, 6, 8, b"\x01\x00")  # general purpose flag: bit 0, encrypted
    with pytest.raises(ValueError, match=r"member 'config.json' is encrypted"):
        hc.HoloCell.load_pretrained(encrypted)
    method = _archive(tmp_path, saved, "method.zip")
    _patch_headers(method, 8, 10, b"\x63\x00")  # compression method 99 (AES), which zipfile cannot read
    with pytest.raises(ValueError, match=r"compression method 99, which holocell does not read"):
        hc.HoloCell.load_pretrained(method)


def test_zip_bomb_oversized_config_and_two_folders_are_refused_before_unpacking(saved, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(saved / "config.json", "config.json")
        zf.writestr("model.safetensors", bytes(64 << 20))  # 64 MiB of zeros deflate ~1000:1
    with pytest.raises(ValueError, match=r"more than 100:1, the mark of a zip bomb"):
        hc.HoloCell.load_pretrained(bomb)
    two = _archive(tmp_path, saved, "two.zip", prefix=("a/", "b/"))
    with pytest.raises(ValueError, match=r"more than one folder \(\['a/', 'b/'\]\)"):
        hc.HoloCell.load_pretrained(two)
    one = _archive(tmp_path, saved, "one.zip", prefix=("m/", "m/"))
    hc.HoloCell.load_pretrained(one)  # one folder is fine
    monkeypatch.setattr(_checkpoint, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(
        ValueError, match=r"member 'm/config.json' would unpack to [\d,]+ bytes \(limit 1,000\)"
    ):
        hc.HoloCell.load_pretrained(one)
