"""Markdown table of bench/results/image_latest.json (the image-engine benchmarks).

python bench/image_report.py [JSON] → bench/results/image_latest.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from report import floor_rates


def render(data: dict) -> str:
    mi = data.get("machine_info", {})
    rates = floor_rates(data["benchmarks"])
    lines = [
        "# Image-side engine: batched vs one-candidate reference",
        "",
        f"- machine: {mi.get('cpu_model')} ({mi.get('cpu_count')} cores, torch {mi.get('torch_version')}, "
        f"{mi.get('torch_threads')} threads); date {mi.get('date')}; commit {data.get('commit_info', {}).get('id', '?')[:10]}",
        f"- load average (1 min) at start / end: {mi.get('loadavg_start', ['?'])[0]} / {mi.get('loadavg_end', ['?'])[0]}",
        f"- sustained fp32 matmul rate (floor): {rates.get('fp32', 0) / 1e9:.0f} GFLOP/s",
        "",
        "| group | case | K | B | engine | median s/step | queries/s | measured/floor | batched speed-up |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    ref = {}
    rows = []
    for b in data["benchmarks"]:
        ei = b["extra_info"]
        if ei.get("kind") == "floor":
            continue
        key = (b["group"], ei.get("prompt"), ei.get("K"))
        med = b["stats"]["median"]
        if "reference" in ei.get("engine", ""):
            ref[key] = med
        rows.append((key, ei, med))
    for key, ei, med in rows:
        speed = f"{ref[key] / med:.2f}×" if key in ref and "batched" in ei["engine"] else ""
        mof = ei.get("measured_over_floor")
        lines.append(f"| {key[0]} | {ei.get('prompt')} | {ei.get('K')} | {ei.get('B')} | {ei['engine']} | {med:.2f} | "
                     f"{ei['K'] / med:.2f} | {mof:.2f}× | {speed} |" if mof else
                     f"| {key[0]} | {ei.get('prompt')} | {ei.get('K')} | {ei.get('B')} | {ei['engine']} | {med:.2f} | "
                     f"{ei['K'] / med:.2f} | – | {speed} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "image_latest.json")
    text = render(json.loads(src.read_text()))
    src.with_suffix(".md").write_text(text)
    print(text)
