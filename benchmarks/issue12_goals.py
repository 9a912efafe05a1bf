"""The speed goals of issue 12 (mixed precision and 8-bit states), checked on a ``pyopt bench --json`` report.

    OMP_WAIT_POLICY=passive pyopt bench --optimizers adamw --cases 1x1048576,1x16M,1x64M --threads 2 \\
        --dtypes bf16,bf16+bf16,bf16+master+int8,bf16+int8,int8 \\
        --peers torch-fused,torch-fused-f32,bnb-8bit,torchao-8bit,probe --json i12.json
    python benchmarks/issue12_goals.py i12.json [more.json ...]     # the rows of all reports together

Prints one markdown row per goal and case: the measured ratio, the target, met or not.
"""
from __future__ import annotations

import json
import sys
from typing import Any

# (dtype spec, what is compared, target); "ref" = torch fused AdamW on float32 params
SPEED_GOALS = [
    ("bf16", "ref", 1.2),
    ("bf16+bf16", "ref", 1.7),
    ("bf16+bf16", "torch-fused", 1.0),   # torch fused AdamW on the same bf16 params (bf16 states)
    ("bf16+master+int8", "ref", 1.3),
    ("bf16+int8", "ref", 2.2),
]
INT8_GOALS = [("f32+int8", "torchao-8bit", 3.0), ("f32+int8", "bnb-8bit", 30.0)]
PROBE_GOAL = 0.85
LARGE = 64_000_000   # the speed goals are at 64M elements; the 8-bit peer goals at 1M and 16M


def _ratio(rows: dict[str, dict[str, Any]], against: str) -> tuple[float | None, str]:
    ours = rows.get("pyopt")
    if ours is None or ours["status"] != "ok":
        return None, ours["status"] if ours else "no pyopt row"
    if against == "ref":
        return ours.get("vs_torch_fused_f32"), "torch fused f32"
    peer = rows.get(against)
    if peer is None or peer["status"] != "ok":
        return None, f"{against}: {peer['status'] if peer else 'not run'}"
    return peer["median_s"] / ours["median_s"], against


def goal_rows(report: dict[str, Any], optimizer: str = "adamw") -> list[list[str]]:
    cases: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    sizes: dict[str, int] = {}
    for r in report["results"]:
        if r["optimizer"] == optimizer:
            cases.setdefault((r["case"], r["dtype"]), {})[r["impl"]] = r
            sizes[r["case"]] = r["tensors"] * r["size"]

    def check(case: str, dtype: str, against: str, target: float, what: str) -> list[str]:
        rows = cases.get((case, dtype))
        if rows is None:
            return [dtype, case, what, "not measured", f">= {target}x", "?"]
        value, label = _ratio(rows, against)
        if value is None:
            return [dtype, case, what, label, f">= {target}x", "?"]
        return [dtype, case, what, f"{value:.2f}x", f">= {target}x", "met" if value >= target else "NOT met"]

    out = []
    large = [c for c, n in sizes.items() if n >= LARGE] or ["1x64M"]
    for dtype, against, target in SPEED_GOALS:
        for case in large:
            out.append(check(case, dtype, against, target, "vs " + ("torch fused f32" if against == "ref" else
                                                                     "torch fused bf16")))
    for dtype, peer, target in INT8_GOALS:
        for case in [c for c, n in sizes.items() if n < LARGE] or ["1x1048576", "1x16M"]:
            out.append(check(case, dtype, peer, target, "vs " + peer))
    for (case, dtype), rows in cases.items():
        ours = rows.get("pyopt", {})
        fraction = ours.get("probe_fraction")
        if dtype in {g[0] for g in SPEED_GOALS + INT8_GOALS}:
            out.append([dtype, case, "probe / pyopt", f"{fraction:.2f}" if fraction else "-", f">= {PROBE_GOAL}",
                        "?" if not fraction else "met" if fraction >= PROBE_GOAL else "NOT met"])
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    report: dict[str, Any] = {"results": []}
    for path in argv:
        with open(path) as fh:
            part = json.load(fh)
        m = part["machine"]
        print(f"{path}: {m['date']}  {m['cpu']} ({m['cores']} cores)  isa {m['isa']}  threads {m['pyopt_threads']}  "
              f"torch {m.get('torch')}  bitsandbytes {m.get('bitsandbytes')}  torchao {m.get('torchao')}  "
              f"OMP_WAIT_POLICY={m.get('omp_wait_policy')}  loadavg {m.get('loadavg')}")
        report["results"] += part["results"]
    print("| dtype | case | goal | measured | target | |")
    print("|---|---|---|---|---|---|")
    for row in goal_rows(report):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
