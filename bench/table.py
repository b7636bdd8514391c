"""Turns scripts/bench.sh's per-round wrk results into the Markdown table it prints.

    python bench/table.py STATE_DIR ROUNDS CASE...

Per case: the median over rounds of req/s and of wrk's p50 and p99 latency, the ratio of the
median req/s to passthrough's, and to the jwt_authn case it is compared with (the filter warm
against jwt_authn with its cache on the same warm tokens, the filter cold against jwt_authn
without cache on the same cold tokens; the scale case against the filter's EdDSA case). A
case whose requests failed (non-2xx, socket errors) is marked, never silently averaged.
"""
import json
import statistics
import sys

state, rounds, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def load(case):
    out = []
    for r in range(1, rounds + 1):
        with open(f"{state}/round{r}-{case}.json") as f:
            out.append(json.load(f))
    return out

rows = {}
for c in cases:
    runs = load(c)
    failed = sum(d["status_errors"] + d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"] for d in runs)
    rows[c] = {
        "rps": statistics.median(d["requests"] * 1e6 / d["duration_us"] for d in runs),
        "p50": statistics.median(d["latency_p50_us"] for d in runs) / 1000,
        "p99": statistics.median(d["latency_p99_us"] for d in runs) / 1000,
        "failed": failed,
    }

def reference(case):
    if case.startswith("filter-scale-"):
        return "filter-eddsa-" + case.rsplit("-", 1)[1]
    if case.startswith("filter-"):
        alg, kind = case[len("filter-"):].rsplit("-", 1)
        return f"authn-cache-{alg}-warm" if kind == "warm" else f"authn-{alg}-cold"
    return None

print()
print("| case | req/s | p50 ms | p99 ms | × passthrough | × reference | reference |")
print("|---|---:|---:|---:|---:|---:|---|")
base = rows.get("passthrough", {}).get("rps")
for c in cases:
    r = rows[c]
    ref = reference(c)
    x_pass = f"{r['rps'] / base:.2f}" if base else "–"
    x_ref = f"{r['rps'] / rows[ref]['rps']:.2f}" if ref in rows else "–"
    note = f" (**{r['failed']} failed requests**)" if r["failed"] else ""
    print(f"| {c}{note} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {x_pass} | {x_ref} | {ref if ref in rows else ''} |")
if any(r["failed"] for r in rows.values()):
    sys.exit("bench: some requests failed (see the table)")
