"""The manual: the docs site builds strictly (no broken link, no page missing from it), the
README stays a short entry point whose first lines are the two commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_site_builds_strictly(tmp_path):
    gen = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_pages.py")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert gen.returncode == 0, gen.stderr
    res = ROOT / "benchmarks" / "results"
    results = sorted([p.stem for p in res.glob("*.json")] + [p.stem for p in res.glob("*.txt")]
                     + [p.parent.name for p in res.glob("*/runs.json")]
                     + [p.stem for p in (ROOT / "embedding" / "default_model").glob("evaluation-*.json")])
    assert sorted(p.stem for p in (ROOT / "docs" / "generated" / "results").glob("*.md") if p.stem != "index") == results
    mkdocs = Path(sys.executable).with_name("mkdocs")
    site = tmp_path / "site"
    build = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(site)], capture_output=True, text=True,
                           cwd=ROOT, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    reference = (site / "reference" / "index.html").read_text()
    assert "add_track" in reference and "VectorIndex" in reference  # mkdocstrings rendered the API
    hostile = (site / "generated" / "results" / "hostile" / "index.html").read_text()
    assert "plain_p99_ms" in hostile and "machine" in hostile
    ann = (site / "generated" / "results" / "ann-100k" / "index.html").read_text()
    assert "fastest run at recall" in ann and "hnsw" in ann and "recall_qps.png" in ann
    capacity = (site / "generated" / "capacity" / "index.html").read_text()
    assert "core-hours" in capacity and "GB per worker" in capacity


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    first = "\n".join(lines[:6])
    assert "make demo" in first and "make test" in first


def test_no_lab_notebook_in_the_docs_and_the_code():
    """Docs and docstrings say what the code does: no sessions, hosts or issue numbers."""
    import re

    # a diary names when or where something happened: "<this|previous|...> <session|host>",
    # "<session|issue> 12", "the same session"; the words are kept apart so this test is not one
    when = "|".join(("this", "that", "the previous", "a previous", "the last", "the next", "the same", "an earlier",
                     "the earlier", "one"))
    where = "|".join(("session", "sessions", "session's", "host", "host's"))
    diary = re.compile(rf"\b({when}) ({where})\b|\b(sessions?|issue) \d+|\(issue|\bsession's\b", re.IGNORECASE)
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md")),
             ROOT / "embedding" / "default_model" / "MODEL_CARD.md"]
    for room in ("api", "recommender", "embedding", "index", "benchmarks", "scripts", "tests"):
        files += sorted((ROOT / room).rglob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files if "generated" not in p.parts
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if diary.search(line) and p.name != "test_docs.py"]
    assert not found, found
