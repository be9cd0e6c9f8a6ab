"""No shipped file records a machine's absolute path: package data, the checkpoint archive's config.json and
the benchmark results."""

import json
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "holocell"
ABSOLUTE = re.compile(r"(?<![\w.:/])(/(?:root|home|work|tmp|Users|mnt|opt|var/folders)/[\w.-]+|[A-Z]:\\\\[\w.-]+)")
TEXT = {".json", ".md", ".txt", ".tsv", ".csv", ".yaml", ".yml", ".cfg"}


def _offenders(text: str) -> list[str]:
    return ABSOLUTE.findall(text)


def test_pattern_finds_absolute_paths():
    assert _offenders('{"file": "/root/out/pt/x.zip"}') == ["/root/out"]
    assert _offenders("see docs/pretrained.md and ../shared/data") == []


def test_no_absolute_path_in_package_data_or_results():
    files = [p for p in PACKAGE.rglob("*") if p.suffix in TEXT]
    files += [p for p in (ROOT / "benchmarks" / "results").glob("*") if p.suffix in TEXT]
    bad = {str(p.relative_to(ROOT)): _offenders(p.read_text(errors="ignore")) for p in files}
    assert not {k: v for k, v in bad.items() if v}


def test_no_absolute_path_in_checkpoint_archives():
    archives = list(PACKAGE.rglob("*.zip"))
    assert archives
    for archive in archives:
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                assert not name.startswith("/") and ".." not in name
                if name.endswith(".json"):
                    text = z.read(name).decode()
                    json.loads(text)
                    assert not _offenders(text), (archive.name, name, _offenders(text))
