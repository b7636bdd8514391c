//! `audit`: reads the filter's audit records from a log (Envoy's format, Kong's, bare JSON
//! lines, or JSON log wrappers such as container logs) and summarises them for a reviewer:
//! decisions by rule, reason, issuer and caller, the original token behind each minted
//! `jti`, and the anomalies a reviewer looks for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::input::format_time;

/// Reasons that, repeated, suggest forgery or replay attempts.
pub const PROBE_REASONS: [&str; 4] = [
    "gateway_token_replay",
    "invalid_signature",
    "unknown_key",
    "algorithm_not_allowed",
];

/// Where a record was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LineFormat {
    /// `[..][info][wasm] [..] wasm log <name> <root_id> <vm_id>: {…}`.
    Envoy,
    /// `… [info] …: *N [proxy-wasm]["<name>" #1] {…}, client: …, server: …`.
    Kong,
    /// The record alone, or inside a JSON wrapper's `log`/`message`/`msg` string.
    Json,
}

impl LineFormat {
    fn name(self) -> &'static str {
        match self {
            LineFormat::Envoy => "envoy",
            LineFormat::Kong => "kong",
            LineFormat::Json => "json",
        }
    }
}

/// One audit record found in the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The record.
    pub record: Map<String, Value>,
    /// The line's format.
    pub format: LineFormat,
    /// The client address, when the log line has one (Kong's `client:`).
    pub client: Option<String>,
}

/// A whole log, read.
#[derive(Debug, Default)]
pub struct Log {
    /// Lines read.
    pub lines: usize,
    /// Records found, in order.
    pub entries: Vec<Entry>,
    /// Lines that mention the audit event but hold no readable record (e.g. truncated).
    pub malformed: Vec<usize>,
}

/// Reads every audit record in `text`.
pub fn read_log(text: &str) -> Log {
    let mut log = Log::default();
    for (i, line) in text.lines().enumerate() {
        log.lines += 1;
        if !(line.contains("token_exchange") && line.contains("event")) {
            continue;
        }
        match find_record(line, 0) {
            Some((record, end)) => {
                let format = if line.contains(" wasm log ") {
                    LineFormat::Envoy
                } else if line.contains("[proxy-wasm]") {
                    LineFormat::Kong
                } else {
                    LineFormat::Json
                };
                let client = match format {
                    LineFormat::Kong => line.get(end..).and_then(kong_client),
                    _ => None,
                };
                log.entries.push(Entry {
                    line: i + 1,
                    record,
                    format,
                    client,
                });
            }
            None => log.malformed.push(i + 1),
        }
    }
    log
}

/// The first JSON object in `text` that is an audit record (or wraps one), and where the
/// object ends in `text`.
fn find_record(text: &str, depth: u8) -> Option<(Map<String, Value>, usize)> {
    for (start, _) in text.match_indices('{').take(16) {
        let rest = text.get(start..)?;
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let Some(Ok(Value::Object(obj))) = stream.next() else {
            continue;
        };
        let end = start + stream.byte_offset();
        if obj.get("event").and_then(Value::as_str) == Some("token_exchange") {
            return Some((obj, end));
        }
        if depth == 0 {
            for wrapper in ["log", "message", "msg"] {
                if let Some(inner) = obj.get(wrapper).and_then(Value::as_str) {
                    if let Some((record, _)) = find_record(inner, 1) {
                        return Some((record, end));
                    }
                }
            }
        }
    }
    None
}

/// Kong's (nginx's) `, client: <address>,` context after the message.
fn kong_client(after: &str) -> Option<String> {
    let rest = after.split_once(", client: ")?.1;
    let addr = rest.split(',').next()?.trim();
    (!addr.is_empty()).then(|| addr.to_owned())
}

/// Thresholds for the anomalies.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Window for deny spikes, in seconds.
    pub window_seconds: u64,
    /// Denies of one caller within the window that make a spike.
    pub spike: usize,
    /// Occurrences of a probe reason that make it an anomaly.
    pub repeat: usize,
    /// Distinct client addresses presenting one token that make it an anomaly.
    pub addresses: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window_seconds: 60,
            spike: 10,
            repeat: 3,
            addresses: 3,
        }
    }
}

fn s<'r>(r: &'r Map<String, Value>, name: &str) -> Option<&'r str> {
    r.get(name).and_then(Value::as_str)
}

/// For one probe reason: occurrences by caller, and by issuer.
type ProbeCounts = (BTreeMap<String, usize>, BTreeMap<String, usize>);

#[derive(Default)]
struct Counts {
    allow: usize,
    deny: usize,
    pass: usize,
    verified: usize,
    unverified: usize,
}

impl Counts {
    fn add(&mut self, r: &Map<String, Value>) {
        match s(r, "decision") {
            Some("allow") => self.allow += 1,
            Some("deny") => self.deny += 1,
            Some("pass") => self.pass += 1,
            _ => {}
        }
        if r.get("token_verified").and_then(Value::as_bool) == Some(true) {
            self.verified += 1;
        } else {
            self.unverified += 1;
        }
    }
    fn json(&self) -> Value {
        json!({"allow": self.allow, "deny": self.deny, "pass": self.pass,
               "token_verified": self.verified, "token_unverified": self.unverified})
    }
    fn text(&self) -> String {
        format!(
            "allow {:<5} deny {:<5} pass {:<5} (token verified {}, not {})",
            self.allow, self.deny, self.pass, self.verified, self.unverified
        )
    }
}

/// The summary: (human text, JSON, number of anomalies).
pub fn summarise(log: &Log, th: Thresholds) -> (String, Value, usize) {
    let mut decisions = Counts::default();
    let mut by_rule: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_issuer: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_caller: BTreeMap<String, Counts> = BTreeMap::new();
    let mut formats: BTreeMap<&str, usize> = BTreeMap::new();
    let mut minted = Vec::new();
    // caller -> deny times (ms)
    let mut deny_times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    // token id -> callers, client addresses
    let mut token_callers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut token_clients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // probe reason -> (caller -> n), (issuer -> n)
    let mut probes: BTreeMap<String, ProbeCounts> = BTreeMap::new();

    const NONE: &str = "(none)";
    for e in &log.entries {
        let r = &e.record;
        *formats.entry(e.format.name()).or_default() += 1;
        decisions.add(r);
        by_rule
            .entry(s(r, "rule").unwrap_or(NONE).to_owned())
            .or_default()
            .add(r);
        *by_reason
            .entry(s(r, "reason").unwrap_or(NONE).to_owned())
            .or_default() += 1;
        let iss = s(r, "iss").unwrap_or(NONE).to_owned();
        let caller = s(r, "caller").unwrap_or(NONE).to_owned();
        by_issuer.entry(iss.clone()).or_default().add(r);
        by_caller.entry(caller.clone()).or_default().add(r);
        if let Some(jti) = s(r, "minted_jti") {
            minted.push(json!({
                "minted_jti": jti,
                "token_id": s(r, "token_id"),
                "iss": s(r, "iss"), "sub": s(r, "sub"), "caller": s(r, "caller"),
                "rule": s(r, "rule"), "minted_aud": s(r, "minted_aud"),
                "minted_scope": s(r, "minted_scope"), "ts_ms": r.get("ts_ms"),
                "line": e.line,
            }));
        }
        if s(r, "decision") == Some("deny") && caller != NONE {
            if let Some(ts) = r.get("ts_ms").and_then(Value::as_u64) {
                deny_times.entry(caller.clone()).or_default().push(ts);
            }
        }
        if let Some(id) = s(r, "token_id") {
            if caller != NONE {
                token_callers
                    .entry(id.to_owned())
                    .or_default()
                    .insert(caller.clone());
            }
            if let Some(c) = &e.client {
                token_clients
                    .entry(id.to_owned())
                    .or_default()
                    .insert(c.clone());
            }
        }
        if let Some(reason) = s(r, "reason").filter(|x| PROBE_REASONS.contains(x)) {
            let entry = probes.entry(reason.to_owned()).or_default();
            *entry.0.entry(caller.clone()).or_default() += 1;
            *entry.1.entry(iss.clone()).or_default() += 1;
        }
    }

    let mut anomalies: Vec<Value> = Vec::new();
    let window_ms = th.window_seconds.saturating_mul(1000);
    for (caller, times) in &mut deny_times {
        times.sort_unstable();
        // The densest window: for each deny, how many follow within the window.
        let mut best = (0usize, 0u64);
        let mut lo = 0usize;
        for (hi, &t) in times.iter().enumerate() {
            while times
                .get(lo)
                .is_some_and(|&first| t.saturating_sub(first) >= window_ms)
            {
                lo += 1;
            }
            let n = hi + 1 - lo;
            if n > best.0 {
                best = (n, times.get(lo).copied().unwrap_or(t));
            }
        }
        if th.spike > 0 && best.0 >= th.spike {
            anomalies.push(json!({
                "kind": "deny_spike", "caller": caller, "denies": best.0,
                "window_seconds": th.window_seconds, "from_ms": best.1,
                "message": format!(
                    "caller {caller:?}: {} denies within {} s from {}",
                    best.0, th.window_seconds, format_time(best.1 / 1000)
                ),
            }));
        }
    }
    for (id, callers) in &token_callers {
        if callers.len() > 1 {
            anomalies.push(json!({
                "kind": "token_from_many_callers", "token_id": id, "callers": callers,
                "message": format!(
                    "token {id:?} presented with {} callers: {}",
                    callers.len(),
                    callers.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            }));
        }
    }
    for (id, clients) in &token_clients {
        if th.addresses > 0 && clients.len() >= th.addresses {
            anomalies.push(json!({
                "kind": "token_from_many_addresses", "token_id": id, "clients": clients,
                "message": format!(
                    "token {id:?} presented from {} client addresses: {}",
                    clients.len(),
                    clients.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            }));
        }
    }
    for (reason, (callers, issuers)) in &probes {
        let n: usize = callers.values().sum();
        if th.repeat > 0 && n >= th.repeat {
            let list = |m: &BTreeMap<String, usize>| {
                m.iter()
                    .map(|(k, v)| format!("{k} ×{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            anomalies.push(json!({
                "kind": "repeated_reason", "reason": reason, "count": n,
                "callers": callers, "issuers": issuers,
                "message": format!(
                    "{reason} {n} times (callers: {}; issuers: {})",
                    list(callers),
                    list(issuers)
                ),
            }));
        }
    }

    let map_json = |m: &BTreeMap<String, Counts>| -> Value {
        Value::Object(m.iter().map(|(k, c)| (k.clone(), c.json())).collect())
    };
    let json = json!({
        "lines": log.lines,
        "records": log.entries.len(),
        "formats": formats,
        "malformed_lines": log.malformed,
        "decisions": decisions.json(),
        "by_rule": map_json(&by_rule),
        "by_reason": by_reason,
        "by_issuer": map_json(&by_issuer),
        "by_caller": map_json(&by_caller),
        "minted": minted,
        "anomalies": anomalies,
        "thresholds": {
            "window_seconds": th.window_seconds, "spike": th.spike,
            "repeat": th.repeat, "addresses": th.addresses,
        },
    });

    let mut t = String::new();
    let fmts: Vec<String> = formats.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        t,
        "{} audit record(s) in {} line(s) ({}); {} malformed",
        log.entries.len(),
        log.lines,
        if fmts.is_empty() {
            "none".to_owned()
        } else {
            fmts.join(", ")
        },
        log.malformed.len()
    );
    if !log.malformed.is_empty() {
        let lines: Vec<String> = log
            .malformed
            .iter()
            .take(20)
            .map(usize::to_string)
            .collect();
        let _ = writeln!(t, "  malformed lines: {}", lines.join(", "));
    }
    let _ = writeln!(t, "decisions  {}", decisions.text());
    let section = |t: &mut String, title: &str, m: &BTreeMap<String, Counts>| {
        let _ = writeln!(t, "\nby {title}");
        for (k, c) in m {
            let _ = writeln!(t, "  {k:<40} {}", c.text());
        }
    };
    section(&mut t, "rule", &by_rule);
    let _ = writeln!(t, "\nby reason");
    for (k, n) in &by_reason {
        let _ = writeln!(t, "  {k:<40} {n}");
    }
    section(
        &mut t,
        "issuer (unverified ones are what the token claimed)",
        &by_issuer,
    );
    section(
        &mut t,
        "caller (unverified ones are what the token claimed)",
        &by_caller,
    );
    let _ = writeln!(
        t,
        "\nminted tokens ({}): minted jti <- original token id",
        minted.len()
    );
    for m in &minted {
        let g = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
        let when = m
            .get("ts_ms")
            .and_then(Value::as_u64)
            .map_or("-".to_owned(), |ms| format_time(ms / 1000));
        let _ = writeln!(
            t,
            "  {} <- {}  (iss {}, sub {}, caller {}, rule {}, {when})",
            g("minted_jti"),
            g("token_id"),
            g("iss"),
            g("sub"),
            g("caller"),
            g("rule")
        );
    }
    let _ = writeln!(t, "\nanomalies ({})", anomalies.len());
    for a in &anomalies {
        let _ = writeln!(
            t,
            "  {}",
            a.get("message").and_then(Value::as_str).unwrap_or_default()
        );
    }
    let n = anomalies.len();
    (t, json, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVOY: &str = r#"[2026-01-01 00:00:00.000][12][info][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log token_exchange token_exchange token_exchange: {"event":"token_exchange","ts_ms":1767225600000,"decision":"allow","reason":"exchanged","rule":"r","method":"GET","path":"/a","iss":"https://idp","sub":"alice","caller":"app","token_id":"t1","token_verified":true,"minted_jti":"m1","minted_aud":"svc","minted_scope":"a","minted_exp":1767225660,"minted_kid":"gw"}"#;

    fn kong(record: &str, client: &str) -> String {
        format!(
            r#"2026/01/01 00:00:01 [info] 4242#0: *7 [proxy-wasm]["token_exchange_filter" #1] {record}, client: {client}, server: kong, request: "GET /a HTTP/1.1", host: "localhost:8000""#
        )
    }

    #[test]
    fn reads_envoy_kong_json_and_wrapped_lines() {
        let bare = r#"{"event":"token_exchange","ts_ms":1,"decision":"deny","reason":"missing_token","status":401,"method":"GET","path":"/a","token_verified":false}"#;
        let wrapped =
            json!({"log": format!("[info][wasm] x: {bare}\n"), "stream": "stderr"}).to_string();
        let text = [
            "[2026-01-01 00:00:00.000][1][info][main] starting",
            ENVOY,
            &kong(bare, "10.0.0.1"),
            bare,
            &wrapped,
            r#"... wasm log a b c: {"event":"token_exchange","ts_ms":1,"decis"#,
        ]
        .join("\n");
        let log = read_log(&text);
        assert_eq!(log.lines, 6);
        let formats: Vec<LineFormat> = log.entries.iter().map(|e| e.format).collect();
        assert_eq!(
            formats,
            [
                LineFormat::Envoy,
                LineFormat::Kong,
                LineFormat::Json,
                LineFormat::Json
            ]
        );
        assert_eq!(log.entries[1].client.as_deref(), Some("10.0.0.1"));
        assert_eq!(log.entries[3].line, 5);
        assert_eq!(log.malformed, [6]);
    }

    #[test]
    fn flags_spikes_shared_tokens_and_probes() {
        let rec = |ts: u64, decision: &str, reason: &str, caller: &str, token: &str| {
            json!({"event":"token_exchange","ts_ms":ts,"decision":decision,"reason":reason,
                   "caller":caller,"token_id":token,"token_verified":false,"iss":"https://idp"})
            .to_string()
        };
        let mut lines = Vec::new();
        // 10 denies of "bad" within 9 s; "slow" has 10 denies spread over 10 minutes.
        for i in 0..10 {
            lines.push(rec(
                1_000_000 + i * 1000,
                "deny",
                "insufficient_scope",
                "bad",
                "x",
            ));
            lines.push(rec(
                1_000_000 + i * 60_000,
                "deny",
                "insufficient_scope",
                "slow",
                "y",
            ));
        }
        // One token id with two callers; one token from three Kong clients.
        lines.push(rec(5, "allow", "exchanged", "other", "x"));
        for c in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            lines.push(kong(&rec(6, "allow", "exchanged", "z", "k"), c));
        }
        // invalid_signature three times, gateway_token_replay twice.
        for _ in 0..3 {
            lines.push(rec(7, "deny", "invalid_signature", "m", "s"));
        }
        for _ in 0..2 {
            lines.push(rec(8, "deny", "gateway_token_replay", "m", "g"));
        }
        let log = read_log(&lines.join("\n"));
        let (_, j, n) = summarise(&log, Thresholds::default());
        let kinds: Vec<String> = j["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["kind"],
                    a["caller"]
                        .as_str()
                        .or(a["reason"].as_str())
                        .or(a["token_id"].as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "\"deny_spike\" bad",
                "\"token_from_many_callers\" x",
                "\"token_from_many_addresses\" k",
                "\"repeated_reason\" invalid_signature",
            ],
        );
        assert_eq!(n, 4);
        assert_eq!(j["anomalies"][0]["denies"], 10);
        assert_eq!(j["by_reason"]["invalid_signature"], 3);
        assert_eq!(j["by_caller"]["bad"]["deny"], 10);
    }

    #[test]
    fn lists_the_original_token_behind_each_minted_jti() {
        let (text, j, n) = summarise(&read_log(ENVOY), Thresholds::default());
        assert_eq!(n, 0);
        assert_eq!(j["minted"][0]["minted_jti"], "m1");
        assert_eq!(j["minted"][0]["token_id"], "t1");
        assert!(text.contains("m1 <- t1"), "{text}");
        assert_eq!(j["by_rule"]["r"]["allow"], 1);
    }
}
