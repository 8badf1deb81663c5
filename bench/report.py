"""Turn a pytest-benchmark JSON of bench/ into a short markdown report.

    python bench/report.py [bench/results/latest.json] [bench/results/latest.md]

Per case: median time per step, queries/s (K / median), speed-up vs the text-only and the
full reference (workload W only), and measured/floor, the floor being the cost-model FLOPs per
step divided by the best sustained matmul rate of the same precision measured in the same
run (the `floor` group; fp32 floor for fp32 cases, bf16 floor for bf16 cases).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
DEFAULT_MD = HERE / "results" / "latest.md"
W_ORDER = ["reference (full, images per query)", "reference (text only)", "batched", "+truncation",
           "+shared_prefix", "+bf16"]


def floor_rates(benchmarks) -> dict:
    """precision → best sustained matmul rate (FLOP/s) over the `floor` results (median-based)."""
    rates = {}
    for b in benchmarks:
        ei = b["extra_info"]
        if ei.get("kind") == "floor":
            rate = ei["flops_per_round"] / b["stats"]["median"]
            rates[ei["precision"]] = max(rates.get(ei["precision"], 0.0), rate)
    return rates


def _config(ei) -> str:
    c = ei.get("config", {})
    if c.get("engine") == "torch-reference":
        return f"reference, T=77, {c.get('precision', 'fp32')}"
    parts = [f"T={c.get('T')}", "shared prefix" if c.get("shared_prefix") else "no shared prefix",
             c.get("precision", "fp32")]
    return "batched, " + ", ".join(parts)


def render(data: dict) -> str:
    benches = data["benchmarks"]
    rates = floor_rates(benches)
    mi = data.get("machine_info", {})
    by_case = {}
    for b in benches:
        ei = b["extra_info"]
        med = b["stats"]["median"]
        floor_s = ei["flops_per_step"] / rates[ei["precision"]] if "flops_per_step" in ei and \
            ei.get("precision") in rates else None
        by_case[b["name"]] = dict(b=b, ei=ei, med=med, floor=floor_s, rounds=b["stats"]["rounds"])

    lines = ["# zipfast throughput (`make bench`)", ""]
    cpu = mi.get("cpu_model", mi.get("cpu", {}).get("brand_raw", "?"))
    lines += [
        f"- machine: `{mi.get('node', '?')}`, {cpu} ({mi.get('cpu_family_model', '')}; {mi.get('cpu_simd', '')}), "
        f"{mi.get('cpu_count', '?')} cores, torch {mi.get('torch_version', '?')} with "
        f"{mi.get('torch_threads', '?')} threads, open_clip {mi.get('open_clip_version', '?')}",
        f"- date: {mi.get('date', data.get('datetime', '?'))}; load average (1 min) at start/end: "
        f"{_load(mi, 'loadavg_start')} / {_load(mi, 'loadavg_end')} (the machine is shared: expect noise)",
    ]
    floors = [c for c in by_case.values() if c["ei"].get("kind") == "floor"]
    if floors:
        detail = ", ".join(f"{c['ei']['precision']} N={c['ei']['n_tokens']} {c['ei']['stage']}: "
                           f"{c['ei']['flops_per_round'] / c['med'] / 1e9:.0f}" for c in floors)
        lines.append("- sustained matmul rate (one text layer's 4 matmuls, median; best used as the floor): "
                     + ", ".join(f"**{p} {r / 1e9:.0f} GFLOP/s**" for p, r in sorted(rates.items(), reverse=True))
                     + f" ({detail})")
    lines.append("")

    # ---------------------------------------------------------------- workload W
    w = {c["ei"]["case"]: c for c in by_case.values() if c["b"].get("group") == "W"}
    if w:
        any_w = next(iter(w.values()))["ei"]
        ref_text = w.get("reference (text only)")
        ref_full = w.get("reference (full, images per query)")
        lines += [
            f"## Workload W: ViT-B/16 text tower (random init), EuroSAT {any_w['n_cls']} classes, m={any_w['m']}, "
            f"K={any_w['K']}, 128 cached image features",
            "",
            f"One step = `engine.losses(ctx, feats, labels)` for all K candidates. Cost-model work per step: "
            f"{any_w['tokens_per_step']} tokens (T={any_w['T']}, s={any_w['s']}) × 2·P_layers "
            f"(P_layers = 12·{any_w['layers']}·{any_w['width']}² = {any_w['P_layers'] / 1e6:.1f} M) = "
            f"{any_w['flops_per_step'] / 1e9:.1f} GFLOP.",
            "",
            "| case | engine | tokens computed/step | median ms/step | queries/s | × vs text ref | × vs full ref "
            "| measured/floor | rounds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in W_ORDER + [k for k in w if k not in W_ORDER]:
            if name not in w:
                continue
            c = w[name]
            ei = c["ei"]
            label = name + (f" [image tower on {ei['image_batch']} imgs/query]" if "image_batch" in ei else "")
            vs_text = ref_text["med"] / c["med"] if ref_text else None
            vs_full = ref_full["med"] / c["med"] if ref_full else None
            lines.append(
                f"| {label} | {_config(ei)} | {ei.get('tokens_computed', '–'):,} | {c['med'] * 1e3:,.1f} "
                f"| {ei['K'] / c['med']:.2f} | {_x(vs_text)} | {_x(vs_full)} "
                f"| {_x(c['med'] / c['floor'] if c['floor'] else None)} | {c['rounds']} |")
        lines += [
            "",
            "Speed-ups are ratios of medians on this run. The full reference re-runs the image tower for every "
            "query (official structure) on a deliberately small minibatch; its measured/floor counts text FLOPs only. "
            "The fast engines use cached image features (one image pass per minibatch, not per query). "
            "measured/floor < 1 can happen on this shared machine when the floor was measured under more load.",
            "",
        ]

    # ---------------------------------------------------------------- scaling
    sc = [c for c in by_case.values() if c["b"].get("group") == "scaling"]
    if sc:
        sc.sort(key=lambda c: (c["ei"]["precision"] != "fp32", c["ei"]["n_cls"], c["ei"]["K"]))
        lines += [
            "## Scaling: default fast engine (truncation + shared prefix), n_cls × K",
            "",
            "| n_cls | names | K | precision | T | cost-model tokens/step | GFLOP/step | median ms/step | queries/s "
            "| GFLOP/s | measured/floor | rounds |",
            "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in sc:
            ei = c["ei"]
            lines.append(
                f"| {ei['n_cls']} | {ei.get('names', '')} | {ei['K']} | {ei['precision']} | {ei['T']} "
                f"| {ei['tokens_per_step']:,} | {ei['flops_per_step'] / 1e9:,.1f} | {c['med'] * 1e3:,.1f} "
                f"| {ei['K'] / c['med']:.2f} | {ei['flops_per_step'] / c['med'] / 1e9:.0f} "
                f"| {_x(c['med'] / c['floor'] if c['floor'] else None)} | {c['rounds']} |")
        lines += ["", "n_cls = 1000 uses synthetic names (10 adjectives × CIFAR-100, e.g. \"small apple\").", ""]

    # ---------------------------------------------------------------- prefix attention A/B
    ab = [c for c in by_case.values() if c["b"].get("group") == "prefix_attention"]
    if ab:
        ab.sort(key=lambda c: (c["ei"]["n_cls"], c["ei"]["K"], c["ei"]["config"].get("prefix_attention") != "reference"))
        base = {(c["ei"]["n_cls"], c["ei"]["K"]): c["med"] for c in ab
                if c["ei"]["config"].get("prefix_attention") == "reference"}
        lines += [
            "## Shared-prefix attention: per-class copies (reference) vs batched matmuls + LSE merge (torch)",
            "",
            "| n_cls | K | prefix_attention | median ms/step | queries/s | speed-up vs reference | measured/floor | rounds |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for c in ab:
            ei = c["ei"]
            ref_med = base.get((ei["n_cls"], ei["K"]))
            lines.append(
                f"| {ei['n_cls']} | {ei['K']} | {ei['config'].get('prefix_attention')} | {c['med'] * 1e3:,.1f} "
                f"| {ei['K'] / c['med']:.2f} | {_x(ref_med / c['med'] if ref_med else None)} "
                f"| {_x(c['med'] / c['floor'] if c['floor'] else None)} | {c['rounds']} |")
        lines.append("")
    lines += _data_step([c for c in by_case.values() if c["b"].get("group") == "data_step"])
    lines += _pixel_step([c for c in by_case.values() if c["b"].get("group") == "pixel_step"])
    return "\n".join(lines)


def _data_step(cases) -> list:
    """The real-data step (bench/test_data_step.py): each data path's share of data + image tower."""
    tower = next((c for c in cases if c["ei"].get("kind") == "tower"), None)
    if not cases:
        return []
    ei = (tower or cases[0])["ei"]
    model = ei.get("model", "tower not run")
    out = [f"## Real-data step: data vs image tower ({model}, {ei['batch']} images of {ei['size']} px)", "",
           "| part | median s | share of data + tower | rounds |", "|---|---:|---:|---:|"]
    for c in sorted(cases, key=lambda c: c["med"]):
        share = "–" if c is tower or tower is None else f"{100 * c['med'] / (c['med'] + tower['med']):.1f} %"
        label = "image tower" if c is tower else f"data, --augment {c['ei']['path']}"
        out.append(f"| {label} | {c['med']:.3f} | {share} | {c['rounds']} |")
    return out + [""]


def _pixel_step(cases) -> list:
    """The image-side methods' pixel minibatch (bench/test_data_step.py, group pixel_step): PIL vs tensor."""
    if not cases:
        return []
    pil = next((c for c in cases if c["ei"]["path"] == "pil"), None)
    ei = cases[0]["ei"]
    out = [f"## Image-side methods: one pixel minibatch ({ei['batch']} views of {ei['size']} px, "
           f"images decoded once)", "", "| path | median ms | speed-up vs pil | rounds |", "|---|---:|---:|---:|"]
    for c in sorted(cases, key=lambda c: c["ei"]["path"]):
        path = c["ei"]["path"]
        label = "--augment tensor, batched gathers (its GPU implementation)" if path == "gathers" else f"--augment {path}"
        out.append(f"| {label} | {c['med'] * 1e3:.1f} "
                   f"| {_x(pil['med'] / c['med'] if pil else None)} | {c['rounds']} |")
    return out + [""]


def _x(v):
    return "–" if v is None else (f"{v:.1f}×" if v >= 10 else f"{v:.2f}×")


def _load(mi, key):
    v = mi.get(key)
    return f"{v[0]:.2f}" if v else "?"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else DEFAULT_JSON
    dst = Path(argv[1]) if len(argv) > 1 else (DEFAULT_MD if not argv else src.with_suffix(".md"))
    data = json.loads(src.read_text())
    md = render(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(md + "\n")
    print(md)
    print(f"\n(written to {dst})", file=sys.stderr)


if __name__ == "__main__":
    main()
