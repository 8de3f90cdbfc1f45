"""Collect every benchmark's headline rows into results/benchmarks/README.md (one table).

    .venv/bin/python benchmarks/summary.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks"
ORDER = ["stage_memory", "label_scoring.transformers", "label_scoring.vllm", "stage_costs",
         "vllm_prefix_caching", "replicas", "generate_backends", "lc_winrate_alpaca_eval",
         "bt_bootstrap"]


def main() -> None:
    lines = ["# Benchmarks", "",
             "Ratios are measured within one run on this 2-core machine against the named "
             "reference; absolute times are noise. `make bench` reruns everything "
             "(`make bench-analysis` only the analysis rows). Details and commands: the linked "
             "files.", "",
             "| measurement | compared against | ratio | figures | file |", "|---|---|---|---|---|"]
    names = ORDER + sorted(p.name.removesuffix(".rows.json") for p in OUT.glob("*.rows.json")
                           if p.name.removesuffix(".rows.json") not in ORDER)
    for name in names:
        path = OUT / f"{name}.rows.json"
        if not path.is_file():
            continue
        for row in json.loads(path.read_text()):
            lines.append(f"| {row['measurement']} | {row['reference']} | **{row['ratio']}** | "
                         f"{row['figures']} | [{name}.md]({name}.md) |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
