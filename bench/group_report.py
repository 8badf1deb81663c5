"""The markdown table of a run-group benchmark JSON (bench/test_group.py, bench/test_gpu_group.py).

    python bench/group_report.py bench/results/group-<date>.json

Per workload: median per round, and the ratios: image and features: group(R) / one run's round
alone and group(R) / (R × alone); planted: group(R) / the measured sum of the R runs' rounds alone.
"""

from __future__ import annotations

import json
import sys


def render(data: dict) -> str:
    mi, ci = data.get("machine_info", {}), data.get("commit_info", {})
    rows = [b for b in data["benchmarks"] if b["extra_info"].get("kind")]
    out = [f"- machine: `{mi.get('node', '?')}`, {mi.get('cpu_model', '?')}, {mi.get('cpu_count', '?')} cores, "
           f"torch {mi.get('torch_version', '?')} ({mi.get('torch_threads', '?')} threads)",
           f"- date: {mi.get('date', data.get('datetime', '?'))}; commit {ci.get('id', '?')[:10]}"
           f"{' (dirty)' if ci.get('dirty') else ''}; load average at start/end: {mi.get('loadavg_start')} / "
           f"{mi.get('loadavg_end')}", ""]
    for kind, title in (("image", "real step (image pass + text)"), ("features", "text only, ViT-B/16 text tower"),
                        ("planted", "text only, planted tower"),
                        ("planted-fused", "text only, planted tower, fused CUDA-graph steps")):
        got = [b for b in rows if b["extra_info"]["kind"] == kind]
        if not got:
            continue
        med = {(b["extra_info"]["mode"], b["extra_info"]["R"]): b["stats"]["median"] for b in got}
        rounds = {(b["extra_info"]["mode"], b["extra_info"]["R"]): b["stats"]["rounds"] for b in got}
        eng = {b["extra_info"]["R"]: b["extra_info"].get("text_engines") for b in got if "text_engines" in b["extra_info"]}
        out += [f"### {title}", ""]
        if kind.startswith("planted"):
            out += ["| R | group round (s) | sum of R rounds alone (s) | group / sum | text engines | rounds |",
                    "|---:|---:|---:|---:|---:|---:|"]
            for R in sorted({r for _, r in med}):
                g, s = med.get(("group", R)), med.get(("alone-sum", R))
                out.append(f"| {R} | {g:.4f} | {s:.4f} | {g / s:.2f} | {eng.get(R)} | {rounds.get(('group', R))} |"
                           if g and s else f"| {R} | {g} | {s} | | | |")
        else:
            a = med.get(("alone", 1))
            out += [f"one run's round alone: {a:.3f} s (median of {rounds.get(('alone', 1))})" if a else "", "",
                    "| R | group round (s) | group / one alone | group / (R × alone) | text engines | rounds |",
                    "|---:|---:|---:|---:|---:|---:|"]
            for R in sorted(r for m, r in med if m == "group"):
                g = med[("group", R)]
                out.append(f"| {R} | {g:.3f} | {g / a:.2f} | {g / (R * a):.2f} | {eng.get(R)} | "
                           f"{rounds.get(('group', R))} |" if a else f"| {R} | {g:.3f} | | | | |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(json.load(open(sys.argv[1]))))
