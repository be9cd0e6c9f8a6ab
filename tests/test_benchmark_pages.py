"""The benchmark pages are generated: summary.py reproduces them from the committed JSON files, and every
result page has a JSON file that says which command, commit and date made it."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
import summary  # noqa: E402


def test_summary_reproduces_the_committed_pages(tmp_path):
    summary.main(["--results", str(RESULTS), "--docs", str(tmp_path), "--no-figure"])
    for page in ("benchmarks.md", "pretrained_card.md"):
        committed = (ROOT / "docs" / page).read_text()
        assert (tmp_path / page).read_text() == committed, f"docs/{page} is stale: run python benchmarks/summary.py"


@pytest.mark.parametrize("page", sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_every_result_page_has_json_with_provenance(page):
    data = json.loads(page.with_suffix(".json").read_text())
    meta = data["meta"]
    for key in ("date", "commit", "command", "machine", "settings"):
        assert meta.get(key) not in (None, "", "unknown"), f"{page.with_suffix('.json').name}: no {key}"
    assert meta["command"].startswith("python "), meta["command"]
    for key in ("cpu", "cores", "torch", "device"):
        assert key in meta["machine"]


def test_every_verdict_compares_holocell_with_a_peer_on_the_same_task():
    found = 0
    for path in RESULTS.glob("*.json"):
        for v in json.loads(path.read_text()).get("verdicts", []):
            found += 1
            assert v["holocell_method"].startswith("holocell")
            assert not v["best_peer"].startswith("holocell") and v["best_peer"] in v["peers"]
            assert v["verdict"] in {"better", "level", "worse", "n/a"}
    assert found > 0


def test_the_verdict_rule_takes_the_best_of_all_peers_on_the_same_cells():
    from _verdict import verdicts

    rows = [
        {"method": "holocell", "cells": 100, "nmi": 0.50},
        {"method": "MULTIVI", "cells": 100, "nmi": 0.40},
        {"method": "holocell (RNA cells)", "cells": 60, "nmi": 0.45},
        {"method": "SCVI", "cells": 60, "nmi": 0.30},
        {"method": "PCA(50) of RNA", "cells": 60, "nmi": 0.60},
        {"method": "holocell", "cells": None, "rmse": 0.5},
        {"method": "kNN", "cells": None, "rmse": 0.4},
    ]
    out = {(v["metric"], v["cells"]): v for v in verdicts("t", rows, ["nmi", "rmse"])}
    assert out[("nmi", 100)]["best_peer"] == "MULTIVI" and out[("nmi", 100)]["verdict"] == "better"
    rna = out[("nmi", 60)]
    assert rna["best_peer"] == "PCA(50) of RNA" and rna["ratio"] == pytest.approx(0.75) and rna["verdict"] == "worse"
    assert out[("rmse", None)]["ratio"] == pytest.approx(0.8) and out[("rmse", None)]["verdict"] == "worse"
