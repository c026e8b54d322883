"""Turn results.jsonl from run.sh into the markdown table for docs/benchmarks.md."""

import json
import statistics
import sys

with open(sys.argv[1]) as lines:
    rows = [json.loads(line) for line in lines if line.strip().startswith("{")]
print("| check | result |\n| --- | --- |")
for r in rows:
    if r["check"] in ("torch_oom", "cupy_oom", "torch_hold"):
        print(
            f"| {r['check']} {r.get('alloc_conf', '')} | "
            + ", ".join(f"{k}={v}" for k, v in r.items() if k != "check")
            + " |"
        )
base = [r["matmuls_per_s"] for r in rows if r["check"] == "matmul_rate" and not r["sm_limit"]]
for r in rows:
    if r["check"] == "matmul_rate" and r["sm_limit"] and base:
        share = r["matmuls_per_s"] / base[0] * 100
        pair = f" (pair {r['pair']})" if "pair" in r else ""
        print(f"| SM limit {r['sm_limit']}%{pair} | {share:.1f}% of unlimited throughput |")
plain = [r["us_per_launch"] for r in rows if r["check"] == "launch" and not r["library"]]
hooked = [r["us_per_launch"] for r in rows if r["check"] == "launch" and r["library"]]
if plain and hooked:
    p, h = statistics.median(plain), statistics.median(hooked)
    print(
        f"| empty-kernel launch | {p:.3f} us plain, {h:.3f} us with library: "
        f"{100 * (h / p - 1):+.1f}% |"
    )
for r in rows:
    if r["check"] in (
        "gpa_identity",
        "vmm_release_while_mapped",
        "pool_retention",
        "jax_prealloc",
        "cupy_pool",
    ):
        print(
            f"| {r['check']} | "
            + ", ".join(f"{k}={v}" for k, v in r.items() if k != "check")
            + " |"
        )
for kind in ("torch_graph_capture", "torch_streams"):
    runs = [r for r in rows if r["check"] == kind and "matmuls_per_s" in r]
    free = [r["matmuls_per_s"] for r in runs if not r["sm_limit"]]
    for r in runs:
        if r["sm_limit"] and free:
            print(
                f"| {kind} at SM limit {r['sm_limit']}% | "
                f"{100 * r['matmuls_per_s'] / free[0]:.1f}% of unlimited throughput |"
            )
    for r in rows:
        if r["check"] == kind and "error" in r:
            print(f"| {kind} | {r['error']} |")
