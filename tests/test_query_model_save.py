"""A query model (``load_query_data``) saved and loaded again is the same query model: its frozen reference rows,
its ``freeze()`` and its ``transfer_report_`` come back (checkpoint format 6, the ``transfer`` section of
``config.json``), a tampered section is refused naming the key, and older checkpoints load as plain models."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
FIT = {"max_epochs": 1, "batch_size": 64, "enable_progress_bar": False, "accelerator": "cpu"}
SETUP = {"modalities": {"rna": "rna", "protein": "adt"}, "batch_key": "batch", "species": "human"}


def _cells(mdata, batches, n):
    """``n`` cells of each batch."""
    keep = [name for b in batches for name in mdata.obs.index[mdata.obs["batch"] == b][:n]]
    out = mdata[keep].copy()
    out.obs["batch"] = out.obs["batch"].astype(str)
    return out


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A reference trained on 300 PBMC cells without the last 40 genes, a query (200 other cells, every gene, a new
    batch) mapped onto it, frozen and trained one epoch, and that query model saved (all read-only)."""
    pbmc = hc.data.pbmc_cite_mosaic()
    ref_data = _cells(pbmc, ["p1_0", "p2_0", "p3_0"], 100)  # RNA only, protein only, both
    ref_data.mod["rna"] = ref_data["rna"][:, :-40].copy()
    ref_data.update()
    hc.HoloCell.setup_mudata(ref_data, **SETUP)
    ref = hc.HoloCell(ref_data, **TINY)
    ref.train(**FIT, seed=0)
    query_data = _cells(pbmc, ["p4_0"], 200)
    query_data.obs["batch"] = "query_donor"

    def query():
        """The query's cells, set up afresh (each model keeps the MuData it was set up on)."""
        mdata = query_data.copy()
        hc.HoloCell.setup_mudata(mdata, **SETUP)
        return mdata

    model = hc.HoloCell.load_query_data(query(), ref)  # frozen: only new genes' rows and the new batch train
    model.train(**FIT, seed=0)
    path = tmp_path_factory.mktemp("query") / "mapped"
    model.save(path)
    return ref, query, model, path


def _n_trainable(model) -> int:
    return sum(p.numel() for p in model.module.parameters() if p.requires_grad)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.module.named_parameters()}


def test_a_saved_query_model_loads_frozen_and_trains_as_the_in_session_model(mapped):
    ref, query, model, path = mapped
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 6 and config["transfer"]["freeze"] == {"except_new": True}
    loaded = hc.HoloCell.load(path, query())
    pd.testing.assert_frame_equal(loaded.transfer_report_, model.transfer_report_)
    assert loaded.transfer_report_.loc["rna", "n_shared"] == 460  # the reference lacked 40 of the 500 genes
    assert _n_trainable(loaded) == _n_trainable(model) < sum(p.numel() for p in loaded.module.parameters())
    # one more epoch (as a user continues the mapping): the loaded model changes what the in-session one does
    # a copy of the in-session model, so that the fixture stays as it is
    session = hc.HoloCell.load_query_data(query(), ref)
    session.module.load_state_dict(model.module.state_dict())
    session.freeze()
    before = _params(loaded)
    session.train(**FIT, seed=1)
    loaded.train(**FIT, seed=1)
    known = [i for i, a in enumerate(loaded.feature_space.anchors) if a in set(ref.feature_space.anchors)]
    after = _params(loaded)
    assert torch.equal(after["network.anchor.weight"][known], before["network.anchor.weight"][known])
    assert not torch.equal(after["network.anchor.weight"], before["network.anchor.weight"])  # new genes train
    summary = loaded.freeze()
    assert 0 < summary["n_trainable"].sum() < summary["n_params"].sum() / 10  # new genes' rows, the new batch
    for key, n_trainable in summary["n_trainable"].items():
        if n_trainable == 0:  # wholly frozen: every row came from the reference
            assert torch.equal(after[key], before[key]), key
    for key, value in session.module.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[key], value, rtol=0, atol=0, msg=key)
    pd.testing.assert_frame_equal(summary, session.freeze())


@pytest.mark.parametrize("how", ["unfrozen", "except_new=False"])
def test_the_freeze_a_query_model_had_is_the_one_it_loads_with(mapped, tmp_path, how):
    ref, query, model, _ = mapped
    copy = hc.HoloCell.load_query_data(query(), ref, freeze=False)
    copy.module.load_state_dict(model.module.state_dict())
    if how == "except_new=False":
        expected = copy.freeze(except_new=False)
    copy.save(tmp_path / "m")
    loaded = hc.HoloCell.load(tmp_path / "m", query())
    assert _n_trainable(loaded) == _n_trainable(copy)
    if how == "unfrozen":
        assert all(p.requires_grad for p in loaded.module.parameters())
        # freeze() still works
        pd.testing.assert_frame_equal(loaded.freeze(), copy.freeze())
    else:
        trained = set(expected.index[expected["n_trainable"] > 0])  # only the new batch's rows
        assert trained == {"network.batch.weight", "network.counts.batch.weight"}
        pd.testing.assert_frame_equal(loaded.freeze(except_new=False), expected)


def _edit(path, change) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


ANCHOR = "network.anchor.weight"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda t: t["new_rows"][ANCHOR].__setitem__("n_rows", 3),
            f"'transfer.new_rows.{ANCHOR}.new[0]' must lie",
        ),
        (
            lambda t: t["new_rows"][ANCHOR].__setitem__("n_rows", 1000),
            f"'transfer.new_rows.{ANCHOR}.n_rows' is 1000",
        ),
        (lambda t: t["new_rows"][ANCHOR]["new"].append(-1), f"'transfer.new_rows.{ANCHOR}.new["),
        (lambda t: t["new_rows"].__setitem__("network.gone", {"n_rows": 1, "new": []}), "names no parameter"),
        (
            lambda t: t["fresh"].append("network.gone"),
            "'transfer.fresh' names 'network.gone', not in the weights",
        ),
        (
            lambda t: t.__setitem__("freeze", {"except_new": "yes"}),
            "'transfer.freeze.except_new' must be true or",
        ),
        (
            lambda t: t["report"]["n_shared"].__setitem__(0, 10**6),
            "'transfer.report.n_shared' exceeds n_query",
        ),
        (lambda t: t["report"]["n_query"].pop(), "'transfer.report.n_query' has 3 entries for 4 rows"),
        (lambda t: t.__setitem__("rows", {}), "'transfer.rows' is not a key holocell knows"),
        (lambda t: t.pop("fresh"), "'transfer.fresh' is missing"),
    ],
)
def test_a_tampered_transfer_section_is_refused_naming_the_key(mapped, tmp_path, change, words):
    _, query, _, path = mapped
    shutil.copytree(path, tmp_path / "m")
    _edit(tmp_path / "m", lambda c: change(c["transfer"]))
    with pytest.raises(ValueError, match="save the model again") as err:
        hc.HoloCell.load(tmp_path / "m", query())
    assert words in str(err.value), err.value


def test_an_older_checkpoint_of_a_query_model_loads_as_a_plain_model(mapped, tmp_path):
    _, query, model, path = mapped
    shutil.copytree(path, tmp_path / "m")
    _edit(tmp_path / "m", lambda c: (c.pop("transfer"), c.__setitem__("format_version", 5)))
    loaded = hc.HoloCell.load(tmp_path / "m", query())
    assert loaded.transfer_report_ is None and all(p.requires_grad for p in loaded.module.parameters())
    with pytest.raises(ValueError, match="has no pretrained reference"):
        loaded.freeze()
    torch.testing.assert_close(
        torch.from_numpy(loaded.get_latent_representation()),
        torch.from_numpy(model.get_latent_representation()),
    )
    plain = hc.HoloCell(query(), **TINY)  # a model of its own data: no transfer section
    plain.save(tmp_path / "plain")
    assert "transfer" not in json.loads((tmp_path / "plain" / "config.json").read_text())
