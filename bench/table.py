"""Turns scripts/bench.sh's per-round wrk results into the Markdown table it prints.

    python bench/table.py STATE_DIR ROUNDS CASE...

Per case: the median over rounds of req/s and of wrk's p50 and p99 latency, the ratio of the
median req/s to passthrough's, the time the case adds per request (1/req/s minus
passthrough's: Envoy, on one core, is the bottleneck), Envoy's CPU time per request (all its
threads, from /proc schedstat; steadier than req/s on a shared machine) and what the case adds
to passthrough's, and the ratio to the jwt_authn case it is compared with (the filter warm
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

def cpu_per_request(case, runs):
    try:
        per = []
        for r, d in enumerate(runs, 1):
            with open(f"{state}/round{r}-{case}.json.cpu") as f:
                per.append(int(f.read()) / 1000 / d["requests"])
        return statistics.median(per)
    except (OSError, ValueError, ZeroDivisionError):
        return None

rows = {}
for c in cases:
    runs = load(c)
    failed = sum(d["status_errors"] + d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"] for d in runs)
    rows[c] = {
        "rps": statistics.median(d["requests"] * 1e6 / d["duration_us"] for d in runs),
        "p50": statistics.median(d["latency_p50_us"] for d in runs) / 1000,
        "p99": statistics.median(d["latency_p99_us"] for d in runs) / 1000,
        "failed": failed,
        # Envoy's CPU time (all threads) per request, µs; None for results without it.
        "cpu": cpu_per_request(c, runs),
    }

def reference(case):
    if case.startswith("filter-scale-"):
        return "filter-eddsa-" + case.rsplit("-", 1)[1]
    if case.startswith("compare-"):
        # The other module against this build's filter on the same tokens.
        return "filter-" + case[len("compare-"):]
    if case.startswith("filter-"):
        alg, kind = case[len("filter-"):].rsplit("-", 1)
        return f"authn-cache-{alg}-warm" if kind == "warm" else f"authn-{alg}-cold"
    if case.startswith("noop") or case.startswith("probe-"):
        # The host-cost probe runs on the warm RS256 tokens: compared with jwt_authn cached.
        return "authn-cache-rs256-warm"
    return None

print()
print("| case | req/s | p50 ms | p99 ms | × passthrough | µs added | Envoy CPU µs/req | CPU µs added | × reference | reference |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
base = rows.get("passthrough", {}).get("rps")
for c in cases:
    r = rows[c]
    ref = reference(c)
    x_pass = f"{r['rps'] / base:.2f}" if base else "–"
    x_ref = f"{r['rps'] / rows[ref]['rps']:.2f}" if ref in rows else "–"
    # Envoy runs on one pinned core and is the bottleneck: 1/rate is its time per request,
    # so the difference to passthrough is what the case adds to each request.
    added = f"{1e6 / r['rps'] - 1e6 / base:.1f}" if base else "–"
    base_cpu = rows.get("passthrough", {}).get("cpu")
    cpu = f"{r['cpu']:.1f}" if r["cpu"] is not None else "–"
    cpu_added = f"{r['cpu'] - base_cpu:.1f}" if r["cpu"] is not None and base_cpu is not None else "–"
    note = f" (**{r['failed']} failed requests**)" if r["failed"] else ""
    print(f"| {c}{note} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {x_pass} | {added} | {cpu} | {cpu_added} | {x_ref} | {ref if ref in rows else ''} |")
if any(r["failed"] for r in rows.values()):
    sys.exit("bench: some requests failed (see the table)")
