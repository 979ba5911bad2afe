"""Write the generated pages of the docs site into ``docs/generated/`` (not kept in git).

- ``results/<name>.md``: one page per ``benchmarks/results/*.json`` (and the shipped model's
  ``evaluation-*.json``), every figure of the file
  in a table, with the script that writes it and the machine and date it records, so no
  figure is typed by hand twice; one per ``*.txt`` (a script's printed figures) and one per
  ``sonicsort bench ann`` folder (``runs.json``, ``pareto.md``, ``recall_qps.png``), with
  each backend's fastest run at recall 0.95 and 0.99 and its best recall;
- ``capacity.md``: the capacity model's worked examples (``docs/scaling.md``), multiplied
  out of ``unit-costs.json`` and the 1M run of ``bench ann``;
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


def text_page(path: Path) -> str:
    producer = _producer(path.name)
    return "\n".join([f"# {path.stem}", "", f"What `{path.relative_to(ROOT).as_posix()}` holds"
                      + (f", written by `{producer}`" if producer else "") + ":", "", "```text",
                      path.read_text(encoding="utf-8").rstrip(), "```", ""])


def _fastest(runs: list[dict], at: float) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in runs:
        if r["recall"] >= at and r["qps_single"] > best.get(r["backend"], {}).get("qps_single", -1):
            best[r["backend"]] = r
    return best


def ann_page(folder: Path) -> str:
    """A ``sonicsort bench ann`` results folder: the backends side by side, then its Pareto table."""
    data = json.loads((folder / "runs.json").read_text(encoding="utf-8"))
    runs = data["runs"]
    rel = folder.relative_to(ROOT).as_posix()
    first = runs[0] if runs else {}
    lines = [f"# {folder.name}", "",
             f"`sonicsort bench ann` on `{data.get('dataset', '?')}` ({first.get('n_train', '?')} vectors of "
             f"{first.get('dim', '?')} dimensions, {first.get('n_queries', '?')} queries, {first.get('metric', '?')}, "
             f"recall@{first.get('k', '?')}); every run is in `{rel}/runs.json` and `runs.csv`; the command that "
             "writes it is in `benchmarks/run_index_figures.sh`.", "",
             f"- machine: {data.get('machine', 'not recorded in the file')}",
             f"- date: {data.get('date', 'not recorded in the file (see its git history)')}", ""]
    if (folder / "recall_qps.png").exists():
        lines += [f"![recall against queries/s]({folder.name}-recall_qps.png)", ""]
    head = ("| backend | parameters | recall | recall (ids) | queries/s (1 thread) | queries/s (batch) | p99 ms "
            "| build s | index MB | bytes/vector | memory MB |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

    def row(r: dict) -> str:
        params = ", ".join(f"{k}={v}" for k, v in {**r.get("build_args", {}), **r.get("query_args", {})}.items()
                           if k != "num_threads") or "-"
        return (f"| {r['backend']} | {params} | {r['recall']:.3f} | {r.get('recall_ids', float('nan')):.3f} "
                f"| {r['qps_single']:,.0f} | {r.get('qps_batch', 0):,.0f} | {r.get('p99_ms', float('nan')):.3f} "
                f"| {r['build_s']:.1f} | {r['index_bytes'] / 1e6:.1f} | {r.get('bytes_per_vector', 0):,.0f} "
                f"| {r['memory_bytes'] / 1e6:.0f} |")

    for at in (0.95, 0.99):
        best = _fastest(runs, at)
        lines += [f"## Each backend's fastest run at recall ≥ {at}", ""]
        if best:
            lines += [head, rule, *(row(r) for r in sorted(best.values(), key=lambda r: -r["qps_single"]))]
        missing = sorted({r["backend"] for r in runs} - set(best))
        if missing:
            lines += ["", f"Not reaching {at}: " + ", ".join(missing) + "."]
        lines.append("")
    top: dict[str, dict] = {}
    for r in runs:
        if r["recall"] > top.get(r["backend"], {}).get("recall", -1):
            top[r["backend"]] = r
    lines += ["## Each backend's highest recall", "", head, rule,
              *(row(r) for r in sorted(top.values(), key=lambda r: -r["recall"])), ""]
    if (folder / "pareto.md").exists():
        lines += ["## The Pareto frontier", "", (folder / "pareto.md").read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)


EXAMPLES = [(1_000_000, 200), (10_000_000, 2_000), (100_000_000, 20_000)]  # (tracks, /similar requests a second)
NEW_A_DAY, UTILISATION = 10_000, 0.5


def capacity_page(costs: dict, search_runs: list[dict]) -> str:
    """The worked examples of the capacity model: ``EXAMPLES`` through the measured unit costs."""
    import math

    c_ingest = costs["ingest"]["core_s_per_track"]
    c_similar = costs["similar"]["worker_cpu_ms_per_request"] / 1000
    hnsw = [r for r in search_runs if r["backend"] == "hnsw" and r["recall"] >= 0.95]
    search = max(hnsw, key=lambda r: r["qps_single"]) if hnsw else None
    c_search = 1.0 / search["qps_single"] if search else 0.0
    st, build = costs["storage"], costs["build"]
    cols = [f"{t / 1e6:,.0f}M tracks, {q:,} req/s" for t, q in EXAMPLES]
    rows = {"backfill ingest": [], f"{NEW_A_DAY:,} new tracks a day": [],
            f"`/similar` CPU at {UTILISATION:.0%} utilisation": [], "catalog in PostgreSQL": [],
            "vectors, hnswlib in each worker": [], "vectors in Milvus": []}
    for t, q in EXAMPLES:
        hours = t * c_ingest / 3600
        rows["backfill ingest"].append(f"{hours:,.0f} core-hours (a day on {math.ceil(hours / 24):,} cores)")
        rows[f"{NEW_A_DAY:,} new tracks a day"].append(f"{NEW_A_DAY * c_ingest / 3600:.1f} core-hours a day")
        rows[f"`/similar` CPU at {UTILISATION:.0%} utilisation"].append(
            f"{q * (c_similar + c_search) / UTILISATION:,.1f} cores")
        rows["catalog in PostgreSQL"].append(f"{t * st['postgresql_bytes_per_track'] / 1e9:,.1f} GB")
        rows["vectors, hnswlib in each worker"].append(
            f"{t * st['hnsw_bytes_per_track'] / 1e9:,.1f} GB per worker, built in "
            f"{t / 1e6 * build['hnsw_per_million_2_threads_s'] / 60:,.0f} min on 2 threads")
        rows["vectors in Milvus"].append(f"{t * st['milvus_lite_bytes_per_track'] / 1e9:,.1f} GB, one copy for all nodes")
    lines = ["# Capacity: worked examples", "",
             "The capacity model of [scaling](../scaling.md), multiplied out by `scripts/docs_pages.py` from the "
             "unit costs of [unit-costs](results/unit-costs.md) and the HNSW search cost at 1M "
             "([ann-1m](results/ann-1m.md)). Nothing here is measured on a cluster.", "",
             f"- `c_ingest` = {c_ingest} core-s a track; `c_similar` = {c_similar * 1000:.2f} ms a request; "
             + (f"`c_search` = {c_search * 1000:.3f} ms (hnsw {search['query_args']}, recall {search['recall']:.3f} "
                "at 1M)" if search else "`c_search`: no 1M run at recall 0.95 (left out)"),
             f"- bytes a track: PostgreSQL {st['postgresql_bytes_per_track']:,}, hnswlib {st['hnsw_bytes_per_track']:,}, "
             f"milvus-lite {st['milvus_lite_bytes_per_track']:,}; hnswlib build {build['hnsw_per_million_2_threads_s']} s "
             "a million on 2 threads (linear: a lower bound)", "",
             "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows.items()]
    lines += ["", "Past a few GB a worker, hnswlib in every worker stops being sensible: the vectors belong in "
              "Milvus, sharded over its query nodes.", ""]
    return "\n".join(lines)


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
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.txt")):
        (OUT / "results" / f"{path.stem}.md").write_text(text_page(path), encoding="utf-8")
        pages.append(path.stem)
    for folder in sorted(p.parent for p in (ROOT / "benchmarks" / "results").glob("*/runs.json")):
        (OUT / "results" / f"{folder.name}.md").write_text(ann_page(folder), encoding="utf-8")
        if (folder / "recall_qps.png").exists():
            shutil.copy(folder / "recall_qps.png", OUT / "results" / f"{folder.name}-recall_qps.png")
        pages.append(folder.name)
    index = ["# Benchmark results", "",
             "One page per results file or `sonicsort bench ann` folder of `benchmarks/results/`, generated from "
             "it by `scripts/docs_pages.py`.", ""]
    index += [f"- [{name}]({name}.md)" for name in sorted(pages)]
    (OUT / "results" / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    costs, one_m = ROOT / "benchmarks" / "results" / "unit-costs.json", ROOT / "benchmarks" / "results" / "ann-1m" / "runs.json"
    if costs.exists():
        runs = json.loads(one_m.read_text(encoding="utf-8"))["runs"] if one_m.exists() else []
        (OUT / "capacity.md").write_text(capacity_page(json.loads(costs.read_text(encoding="utf-8")), runs), encoding="utf-8")
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
