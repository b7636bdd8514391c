#!/usr/bin/env python3
"""The soak's assertions (called by scripts/soak.sh with its state directory).

Reads cases.json (expected reason/status per request id), wrk-warmup.json and wrk.json (the
Lua script's counts), envoy-stats.json (admin /stats?format=json), upstream-stats.json (the
counting upstream), envoy.log (the audit lines) and rss.txt (VmRSS samples, KiB, one per
second during the measured run). Prints a summary; exits 1 if any assertion fails.
"""

import argparse
import json
import os
import statistics
import sys

# RSS: the median of the last third may exceed the first third's by at most this much.
RSS_RATIO = 1.10
RSS_SLACK_KIB = 4096

AUDIT_MARK = '{"event":"token_exchange"'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    st = a.state

    def load(name):
        with open(os.path.join(st, name), encoding="utf-8") as f:
            return json.load(f)

    cases = {f"soak-{c['id']}": c for c in load("cases.json")}
    warm, main_run = load("wrk-warmup.json"), load("wrk.json")
    up = load("upstream-stats.json")
    stats = {}
    for s in load("envoy-stats.json")["stats"]:
        if "name" in s and "value" in s:
            stats[s["name"]] = s["value"]

    failures = []

    def check(ok, what):
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    # --- audit log ----------------------------------------------------------------------
    audit = 0
    by_decision, by_reason = {}, {}
    allow_by_id = {}
    wrong_reason, no_id, unknown_id, bad_json = 0, 0, 0, 0
    wrong_examples = []
    errors, criticals = [], []
    with open(os.path.join(st, "envoy.log"), encoding="utf-8", errors="replace") as f:
        for line in f:
            i = line.find(AUDIT_MARK)
            if i < 0:
                if "][critical][" in line or "panicked" in line:
                    criticals.append(line.strip()[:300])
                elif "][error][" in line:
                    errors.append(line.strip()[:300])
                continue
            audit += 1
            try:
                rec = json.loads(line[i:])
            except ValueError:
                bad_json += 1
                continue
            d, r = rec.get("decision"), rec.get("reason")
            by_decision[d] = by_decision.get(d, 0) + 1
            by_reason[r] = by_reason.get(r, 0) + 1
            rid = rec.get("request_id")
            if rid is None:
                no_id += 1
                continue
            case = cases.get(rid)
            if case is None:
                unknown_id += 1
                continue
            if r != case["reason"] or (d == "deny") != (case["status"] != 200):
                wrong_reason += 1
                if len(wrong_examples) < 5:
                    wrong_examples.append(f"{case['name']!r}: audit {d}/{r}, expected {case['reason']}")
            if d == "allow":
                allow_by_id[rid] = allow_by_id.get(rid, 0) + 1

    # --- numbers --------------------------------------------------------------------------
    keys = ["requests", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_other",
            "mismatched", "unidentified", "connect_errors", "read_errors", "write_errors",
            "timeouts"]
    wrk = {k: warm[k] + main_run[k] for k in keys}
    codes = {}
    for run in (warm, main_run):
        for k, v in run["codes"].items():
            codes[k] = codes.get(k, 0) + v
    rq_total = stats.get("http.gateway.downstream_rq_total", -1)
    rq_5xx = stats.get("http.gateway.downstream_rq_5xx", -1)
    cluster_rq = stats.get("cluster.soak_upstream.upstream_rq_total", -1)
    rate = main_run["requests"] / (main_run["duration_us"] / 1e6)

    rss = []
    with open(os.path.join(st, "rss.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                rss.append(int(parts[1]))
    third = len(rss) // 3
    first, last = rss[:third], rss[len(rss) - third:]
    rss_first = statistics.median(first) if first else 0
    rss_last = statistics.median(last) if last else 0
    rss_limit = rss_first * RSS_RATIO + RSS_SLACK_KIB

    print()
    print("==================== soak summary ====================")
    print(f"run: {a.warmup}s warm-up + {a.duration}s measured, {a.connections} connections, "
          f"{a.threads} wrk threads, Envoy --concurrency 2")
    print(f"requests (wrk, completed): {wrk['requests']} total; measured run "
          f"{main_run['requests']} in {main_run['duration_us'] / 1e6:.1f}s = {rate:.0f} req/s; "
          f"latency p50 {main_run['latency_p50_us'] / 1000:.2f} ms, "
          f"p99 {main_run['latency_p99_us'] / 1000:.2f} ms, "
          f"max {main_run['latency_max_us'] / 1000:.1f} ms")
    print(f"statuses: 2xx {wrk['status_2xx']}, 3xx {wrk['status_3xx']}, 4xx {wrk['status_4xx']}, "
          f"5xx {wrk['status_5xx']}, other {wrk['status_other']}; by code "
          + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print(f"wrk socket errors: connect {wrk['connect_errors']}, read {wrk['read_errors']}, "
          f"write {wrk['write_errors']}, timeout {wrk['timeouts']}")
    print(f"envoy: downstream_rq_total {rq_total}, downstream_rq_5xx {rq_5xx}, "
          f"upstream_rq_total {cluster_rq}")
    print(f"audit lines: {audit}; decisions "
          + ", ".join(f"{k}: {v}" for k, v in sorted(by_decision.items(), key=str)))
    print("audit reasons: " + ", ".join(f"{k}: {v}" for k, v in
                                        sorted(by_reason.items(), key=lambda kv: -kv[1])))
    print(f"upstream: received {up['total']}, original-token leaks {up['leaks']}, "
          f"without Authorization {up['no_authorization']}, with several "
          f"{up['multiple_authorization']}, connections {up['connections']}")
    print(f"envoy VmRSS ({len(rss)} samples, KiB): first third median {rss_first:.0f}, "
          f"last third median {rss_last:.0f} (limit {rss_limit:.0f} = x{RSS_RATIO} + "
          f"{RSS_SLACK_KIB}), min {min(rss, default=0)}, max {max(rss, default=0)}")
    if errors:
        print(f"envoy [error] lines: {len(errors)}, e.g. {errors[0]}")
    print()

    # --- assertions -----------------------------------------------------------------------
    check(wrk["requests"] > 0 and main_run["requests"] > 0, "wrk completed requests")
    check(wrk["status_5xx"] == 0 and wrk["status_other"] == 0, "zero 5xx responses (wrk)")
    check(rq_5xx == 0, "zero 5xx in Envoy's downstream_rq_5xx")
    check(wrk["mismatched"] == 0 and wrk["unidentified"] == 0,
          f"every response has its request's expected status ({wrk['mismatched']} differ, "
          f"{wrk['unidentified']} without a known x-request-id)"
          + (f": {main_run['mismatch_examples']}{warm['mismatch_examples']}"
             if wrk["mismatched"] else ""))
    check(wrk["connect_errors"] == 0 and wrk["timeouts"] == 0, "no connect errors or timeouts")
    check(up["leaks"] == 0, f"zero upstream requests carrying an original token ({up['leaks']}"
          + (f": {up['leak_examples']}" if up["leaks"] else "") + ")")
    check(up["no_authorization"] == 0 and up["multiple_authorization"] == 0,
          "every forwarded request carries exactly one Authorization (the minted one)")
    check(audit == rq_total, f"one audit line per request Envoy handled ({audit} == {rq_total})")
    check(bad_json == 0 and no_id == 0 and unknown_id == 0,
          f"every audit line is JSON with a known request id ({bad_json} bad, {no_id} without "
          f"an id, {unknown_id} unknown)")
    check(wrong_reason == 0, f"every audit line has its request's expected decision and reason "
          f"({wrong_reason} differ" + (f": {wrong_examples}" if wrong_examples else "") + ")")
    allowed = by_decision.get("allow", 0)
    check(allowed == up["total"] == cluster_rq,
          f"allowed decisions == requests the upstream received == Envoy's upstream_rq_total "
          f"({allowed}, {up['total']}, {cluster_rq})")
    check(allow_by_id == up["by_request_id"],
          "per request id, the upstream received exactly the allowed requests")
    check(rq_total >= wrk["requests"] and rq_total <= wrk["requests"] + 2 * a.connections,
          f"Envoy handled what wrk sent (completed {wrk['requests']} <= {rq_total} <= completed + "
          f"in flight at the stops)")
    check(not criticals, f"no critical lines or panics in Envoy's log ({len(criticals)}"
          + (f": {criticals[0]}" if criticals else "") + ")")
    check(len(rss) >= 6, f"at least 6 RSS samples ({len(rss)})")
    check(rss_last <= rss_limit, f"Envoy memory flat: last-third median {rss_last:.0f} KiB <= "
          f"{rss_limit:.0f} KiB")
    print()
    if failures:
        print(f"SOAK FAILED: {len(failures)} assertion(s) failed", file=sys.stderr)
        sys.exit(1)
    print("SOAK PASSED")


if __name__ == "__main__":
    main()
