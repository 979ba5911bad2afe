"""Write the generated pages of the docs site into ``docs/generated/`` (not kept in git).

- ``results/<name>.md``: one page per ``benchmarks/results/*.json`` (and the shipped model's
  ``evaluation-*.json``), every figure of the file
  in a table, with the script that writes it and the machine and date it records, so no
  figure is typed by hand twice;
- ``model-card.md``: the shipped model's card (``embedding/default_model/MODEL_CARD.md``,
  which stays in the package beside the weights);
- ``openapi.md`` and ``openapi.yaml``: every operation of ``api/openapi.yaml`` and the
  document itself;
- ``contributing.md``: ``CONTRIBUTING.md``, which stays at the top of the repository.

    python scripts/docs_pages.py        # then: mkdocs build --strict  (make docs does both)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "generated"
MAX_ROWS = 400


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        rows = []
        for i, v in enumerate(value):
            rows += _flatten(v, f"{prefix}[{i}]")
        return rows
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    else:
        text = str(value)
    return [(prefix, text.replace("|", "\\|").replace("\n", " "))]


def _producer(name: str) -> str | None:
    """The benchmark script that writes ``name`` (its default ``--out`` or its docstring say so)."""
    for script in sorted((ROOT / "benchmarks").rglob("*.py")):
        if name in script.read_text(encoding="utf-8"):
            module = script.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            return f"python -m {module}"
    return None


def results_page(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    producer = _producer(path.name)
    machine = data.get("machine") if isinstance(data, dict) else None
    date = data.get("date") if isinstance(data, dict) else None
    lines = [f"# {path.stem}", "",
             f"Figures of `{path.relative_to(ROOT).as_posix()}`"
             + (f", written by `{producer}`" if producer else "") + ".", ""]
    lines.append(f"- machine: {machine if machine else 'not recorded in the file'}")
    lines.append(f"- date: {date if date else 'not recorded in the file (see its git history)'}")
    lines += ["", "| figure | value |", "|---|---|"]
    rows = _flatten(data)
    for key, text in rows[:MAX_ROWS]:
        lines.append(f"| `{key}` | {text} |")
    if len(rows) > MAX_ROWS:
        lines += ["", f"{len(rows) - MAX_ROWS} more figures are in the file itself."]
    return "\n".join(lines) + "\n"


def openapi_page(doc: dict) -> str:
    lines = ["# The OpenAPI document", "",
             "Every operation of [the OpenAPI document](openapi.yaml) (`api/openapi.yaml`; a running server serves "
             "it at `/openapi.json`, with the loaded model's genres and tags and the usable backends filled in, "
             "and browsable at `/docs`).", ""]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            codes = ", ".join(str(c) for c in op.get("responses", {}))
            lines += [f"## `{method.upper()} {path}`", "", op.get("summary", ""), ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            lines += [f"Answers: {codes}.", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    import yaml

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "results").mkdir(parents=True)
    pages = []
    evaluations = sorted((ROOT / "embedding" / "default_model").glob("evaluation-*.json"))
    for path in [*sorted((ROOT / "benchmarks" / "results").glob("*.json")), *evaluations]:
        (OUT / "results" / f"{path.stem}.md").write_text(results_page(path), encoding="utf-8")
        pages.append(path.stem)
    index = ["# Benchmark results", "",
             "One page per results file of `benchmarks/results/`, generated from it by `scripts/docs_pages.py`.", ""]
    index += [f"- [{name}]({name}.md)" for name in pages]
    (OUT / "results" / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    png = ROOT / "benchmarks" / "results" / "ann-100k" / "recall_qps.png"
    if png.exists():
        shutil.copy(png, OUT / "results" / "ann-100k-recall_qps.png")
    card = (ROOT / "embedding" / "default_model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    (OUT / "model-card.md").write_text(card, encoding="utf-8")
    for asset in (ROOT / "embedding" / "default_model").glob("*.png"):
        shutil.copy(asset, OUT / asset.name)
    shutil.copy(ROOT / "CONTRIBUTING.md", OUT / "contributing.md")
    spec = ROOT / "api" / "openapi.yaml"
    shutil.copy(spec, OUT / "openapi.yaml")
    (OUT / "openapi.md").write_text(openapi_page(yaml.safe_load(spec.read_text(encoding="utf-8"))), encoding="utf-8")
    print(f"wrote {len(pages)} results pages, the model card and the OpenAPI page under {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
