//! `audit`: reads the filter's audit records from a log (Envoy's format, Kong's, bare JSON
//! lines, or JSON log wrappers such as container logs) and summarises them for a reviewer:
//! decisions by rule, reason, issuer and caller, the original token behind each minted
//! `jti`, the trust-boundary fields (shadow rules, chained hops, overdue reviews, identity
//! headers, scopes removed by ceilings), and the anomalies a reviewer looks for. The
//! gateway's published documents (`serve` records) and the filter's own lines about fetching
//! its issuers' keys are summarised apart: neither names a caller, and a refusal because an
//! issuer's keys are unavailable is the gateway's state, not the caller's doing.

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

/// Reasons that, repeated, suggest a service trying to stretch a delegation chain, or a
/// caller presenting tokens meant for another actor.
pub const CHAIN_REASONS: [&str; 3] = ["chain_cycle", "chain_too_deep", "actor_not_allowed"];

/// Reasons that mean a revoked token (or subject) was presented: each is flagged, once is
/// enough for incident response.
pub const REVOKED_REASONS: [&str; 3] = [
    "token_revoked",
    "subject_revoked",
    "issued_before_revocation",
];

/// Denials that are the gateway's own temporary state, not something the caller did: never
/// counted toward a caller's deny spike.
pub const SERVER_SIDE_REASONS: [&str; 2] = ["issuer_keys_unavailable", "internal_error"];

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
    /// The filter's warnings about the issuer allow list (an overdue review, an expired
    /// issuer), each once.
    pub lifecycle: Vec<LifecycleNotice>,
    /// The filter's lines about fetching its issuers' keys, in order.
    pub key_fetches: Vec<KeyFetchEvent>,
}

/// One of the filter's lines about an issuer's fetched keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetchEvent {
    /// 1-based line number.
    pub line: usize,
    /// The issuer it is about.
    pub issuer: String,
    /// `fetched`, `recovered`, `failing`, `unavailable`, `pending`, `version`, `skipped_key`
    /// or `import_failed`.
    pub kind: &'static str,
    /// The line's message, as logged.
    pub message: String,
}

/// The leading Rust-quoted string of `text` (`"https://idp" …`), unquoted, and what follows.
fn quoted(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('"')?;
    let mut escaped = false;
    let end = rest.char_indices().find_map(|(i, c)| {
        let close = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        close.then_some(i)
    })?;
    let raw = rest.get(..end)?;
    let after = rest.get(end + 1..)?;
    let unquoted = serde_json::from_str(&format!("\"{raw}\"")).unwrap_or_else(|_| raw.to_owned());
    Some((unquoted, after))
}

/// The filter's line about an issuer's fetched keys (see the core's
/// `HealthChange::message` and the glue's key set lines).
fn key_fetch_event(line: &str) -> Option<(String, &'static str, String)> {
    let (_, message) = line.split_once(FILTER_PREFIX)?;
    let message = message
        .split(", client: ")
        .next()
        .unwrap_or(message)
        .trim_end();
    let (issuer_at, kinds): (&str, &[(&str, &'static str)]) =
        if let Some(rest) = message.strip_prefix("keys of issuer ") {
            (
                rest,
                &[
                    (" fetched", "fetched"),
                    (" recovered: ", "recovered"),
                    (" unavailable (", "unavailable"),
                    (" not fetched yet", "pending"),
                ],
            )
        } else if let Some(rest) = message.strip_prefix("fetching keys of issuer ") {
            (rest, &[(" failed (", "failing")])
        } else if let Some(rest) = message.strip_prefix("issuer ") {
            (
                rest,
                &[
                    (": key set version ", "version"),
                    (": fetched keys[", "skipped_key"),
                ],
            )
        } else if let Some(rest) = message.strip_prefix("the shared key set of issuer ") {
            (rest, &[(" does not import here", "import_failed")])
        } else {
            return None;
        };
    let (issuer, after) = quoted(issuer_at)?;
    let kind = kinds
        .iter()
        .find(|(start, _)| after.starts_with(start))
        .map(|(_, k)| *k)?;
    Some((issuer, kind, message.to_owned()))
}

/// One of the filter's warnings about its issuer allow list, as first logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleNotice {
    /// 1-based line number of its first occurrence.
    pub line: usize,
    /// The warning, as first logged.
    pub message: String,
    /// How many lines repeat it (every worker logs it, and again every day).
    pub count: usize,
}

/// A warning without the time it was logged at (`now …` in an overdue review's), so that
/// the repeats of one warning are counted together.
fn notice_key(message: &str) -> &str {
    message.split(", now ").next().unwrap_or(message)
}

/// How the filter starts the warnings it logs about its own policy.
const FILTER_PREFIX: &str = "token-exchange-filter: ";

/// The filter's lifecycle warning in a log line (see the core's `lifecycle::notices`).
fn lifecycle_notice(line: &str) -> Option<String> {
    let (_, notice) = line.split_once(FILTER_PREFIX)?;
    let about_issuer = notice.starts_with("trusted issuer ")
        && (notice.contains(" is overdue for review ") || notice.contains(" expired after "));
    // Kong appends the request context after a comma; the notice itself has none there.
    let notice = notice
        .split(", client: ")
        .next()
        .unwrap_or(notice)
        .trim_end();
    about_issuer.then(|| notice.to_owned())
}

/// Reads every audit record in `text`.
pub fn read_log(text: &str) -> Log {
    let mut log = Log::default();
    for (i, line) in text.lines().enumerate() {
        log.lines += 1;
        if let Some((issuer, kind, message)) = key_fetch_event(line) {
            log.key_fetches.push(KeyFetchEvent {
                line: i + 1,
                issuer,
                kind,
                message,
            });
            continue;
        }
        if let Some(notice) = lifecycle_notice(line) {
            // Each worker logs its own copy, and the filter repeats it daily: keep one.
            match log
                .lifecycle
                .iter_mut()
                .find(|n| notice_key(&n.message) == notice_key(&notice))
            {
                Some(n) => n.count += 1,
                None => log.lifecycle.push(LifecycleNotice {
                    line: i + 1,
                    message: notice,
                    count: 1,
                }),
            }
            continue;
        }
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

/// A record's field as text.
fn text_of(r: &Map<String, Value>, name: &str) -> String {
    s(r, name).unwrap_or("(none)").to_owned()
}

/// The issuer a record's trust facts belong to: the original issuer of a chained hop, else
/// the token's own.
fn original_issuer(r: &Map<String, Value>) -> String {
    s(r, "origin_iss")
        .or_else(|| s(r, "iss"))
        .unwrap_or("(none)")
        .to_owned()
}

fn is_shadow(r: &Map<String, Value>) -> bool {
    s(r, "mode") == Some("shadow")
}

/// Shadow records of one rule: what enforcing it would have done.
#[derive(Default)]
struct ShadowCounts {
    allow: usize,
    deny: usize,
    reasons: BTreeMap<String, usize>,
    /// Callers enforcing would have denied, with how often.
    denied_callers: BTreeMap<String, usize>,
}

/// One identity header sent by clients: how its requests ended.
#[derive(Default)]
struct HeaderCounts {
    total: usize,
    /// Refused for carrying it (`identity_header_present`, enforced).
    refused: usize,
    /// Forwarded without it (allowed, passed, or a shadow rule's request).
    stripped: usize,
    /// Denied for another reason (nothing forwarded).
    denied: usize,
}

/// Presentations of one revoked token or subject.
#[derive(Default)]
struct RevokedUse {
    count: usize,
    callers: BTreeSet<String>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

/// What the records say about the trust boundaries (issue 11's audit fields).
#[derive(Default)]
struct TrustSummary {
    /// Shadow records by rule.
    shadow: BTreeMap<String, ShadowCounts>,
    /// Records flagged `issuer_review_overdue`, by original issuer.
    overdue: BTreeMap<String, usize>,
    /// Identity headers by name.
    headers: BTreeMap<String, HeaderCounts>,
    /// Scopes removed by ceilings, by original issuer.
    removed: BTreeMap<String, BTreeMap<String, usize>>,
    /// Records by `chain_depth`.
    by_depth: BTreeMap<u64, usize>,
    /// Records of gateway tokens presented (chained hops).
    hops: Counts,
}

impl TrustSummary {
    fn add(&mut self, r: &Map<String, Value>) {
        let reason = s(r, "reason").unwrap_or_default();
        let shadowed = is_shadow(r);
        if shadowed {
            let c = self.shadow.entry(text_of(r, "rule")).or_default();
            match s(r, "decision") {
                Some("allow") => c.allow += 1,
                Some("deny") => {
                    c.deny += 1;
                    *c.denied_callers.entry(text_of(r, "caller")).or_default() += 1;
                }
                _ => {}
            }
            *c.reasons.entry(reason.to_owned()).or_default() += 1;
        }
        if r.get("issuer_review_overdue").and_then(Value::as_bool) == Some(true) {
            *self.overdue.entry(original_issuer(r)).or_default() += 1;
        }
        if let Some(Value::Array(names)) = r.get("identity_headers") {
            for name in names.iter().filter_map(Value::as_str) {
                let h = self.headers.entry(name.to_owned()).or_default();
                h.total += 1;
                match (s(r, "decision"), shadowed) {
                    (_, true) | (Some("allow" | "pass"), _) => h.stripped += 1,
                    _ if reason == "identity_header_present" => h.refused += 1,
                    _ => h.denied += 1,
                }
            }
        }
        if let Some(scopes) = s(r, "ceiling_removed_scopes") {
            let per = self.removed.entry(original_issuer(r)).or_default();
            for scope in scopes.split(' ').filter(|x| !x.is_empty()) {
                *per.entry(scope.to_owned()).or_default() += 1;
            }
        }
        if let Some(depth) = r.get("chain_depth").and_then(Value::as_u64) {
            *self.by_depth.entry(depth).or_default() += 1;
        }
        if r.get("origin_token_id").is_some() {
            self.hops.add(r);
        }
    }

    fn shadow_records(&self) -> usize {
        self.shadow.values().map(|c| c.allow + c.deny).sum()
    }

    /// The JSON members of the summary about trust boundaries.
    fn json(&self, log: &Log) -> Map<String, Value> {
        let shadow: Map<String, Value> = self
            .shadow
            .iter()
            .map(|(rule, c)| {
                let v = json!({"allow": c.allow, "deny": c.deny, "reasons": c.reasons,
                               "denied_callers": c.denied_callers});
                (rule.clone(), v)
            })
            .collect();
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(name, h)| {
                let v = json!({"total": h.total, "refused": h.refused, "stripped": h.stripped,
                               "denied": h.denied});
                (name.clone(), v)
            })
            .collect();
        let depths: Map<String, Value> = self
            .by_depth
            .iter()
            .map(|(d, n)| (d.to_string(), json!(n)))
            .collect();
        let notices: Vec<Value> = log
            .lifecycle
            .iter()
            .map(|n| json!({"line": n.line, "message": n.message, "count": n.count}))
            .collect();
        let mut m = Map::new();
        m.insert(
            "shadow".into(),
            json!({"records": self.shadow_records(), "by_rule": shadow}),
        );
        m.insert(
            "chain".into(),
            json!({"hops": self.hops.json(), "by_depth": depths}),
        );
        m.insert("review_overdue".into(), json!(self.overdue));
        m.insert("lifecycle_notices".into(), json!(notices));
        m.insert("identity_headers".into(), json!(headers));
        m.insert("ceiling_removed_scopes".into(), json!(self.removed));
        m
    }

    /// The human sections about trust boundaries (only those with something to say).
    fn text(&self, t: &mut String, log: &Log) {
        if !self.shadow.is_empty() {
            let _ = writeln!(
                t,
                "\nshadow rules (what enforcing would have done; the requests went on unchanged)"
            );
            for (rule, c) in &self.shadow {
                let _ = writeln!(
                    t,
                    "  {rule:<40} would allow {:<5} would deny {:<5} ({})",
                    c.allow,
                    c.deny,
                    counted(&c.reasons)
                );
                if !c.denied_callers.is_empty() {
                    let _ = writeln!(
                        t,
                        "  {:<40} callers enforcing would deny: {}",
                        "",
                        counted(&c.denied_callers)
                    );
                }
            }
        }
        if !self.by_depth.is_empty() {
            let depths: Vec<String> = self
                .by_depth
                .iter()
                .map(|(d, n)| format!("{d}: {n}"))
                .collect();
            let _ = writeln!(t, "\nchained exchange");
            let _ = writeln!(t, "  gateway tokens presented  {}", self.hops.text());
            let _ = writeln!(t, "  chain depth (records)     {}", depths.join(", "));
        }
        if !self.overdue.is_empty() {
            let _ = writeln!(t, "\nissuers overdue for review (records flagged)");
            for (iss, n) in &self.overdue {
                let _ = writeln!(t, "  {iss:<40} {n}");
            }
        }
        if !log.lifecycle.is_empty() {
            let _ = writeln!(t, "\nthe filter's warnings about its issuer allow list");
            for n in &log.lifecycle {
                let _ = writeln!(t, "  line {} (×{}): {}", n.line, n.count, n.message);
            }
        }
        if !self.headers.is_empty() {
            let _ = writeln!(t, "\nidentity headers sent by clients");
            for (name, h) in &self.headers {
                let _ = writeln!(
                    t,
                    "  {name:<40} {} (refused {}, stripped {}, denied otherwise {})",
                    h.total, h.refused, h.stripped, h.denied
                );
            }
        }
        if !self.removed.is_empty() {
            let _ = writeln!(t, "\nscopes removed by issuer ceilings (max_scopes)");
            for (iss, scopes) in &self.removed {
                let _ = writeln!(t, "  {iss:<40} {}", counted(scopes));
            }
        }
    }
}

/// What the filter's key fetch lines and records say about one issuer's fetched keys.
#[derive(Default)]
struct FetchSummary {
    /// Health changes by kind (`fetched`, `failing`, `unavailable`, `recovered`, `pending`).
    changes: BTreeMap<&'static str, usize>,
    /// The last health change logged.
    last: Option<&'static str>,
    /// Key set versions announced (`version N, usable kids [...]`), in order.
    versions: Vec<String>,
    /// Keys skipped in fetched sets, each once.
    skipped: BTreeSet<String>,
    /// Shared sets that did not import in a worker.
    import_failed: usize,
    /// Requests refused because its keys were unavailable (`issuer_keys_unavailable`).
    refused: usize,
}

impl FetchSummary {
    fn json(&self) -> Value {
        json!({"changes": self.changes, "last": self.last, "versions": self.versions,
               "skipped_keys": self.skipped, "import_failed": self.import_failed,
               "refused_requests": self.refused})
    }
}

/// The key fetch lines of `log` and the `issuer_keys_unavailable` records, by issuer.
fn fetch_summaries(log: &Log) -> BTreeMap<String, FetchSummary> {
    let mut by: BTreeMap<String, FetchSummary> = BTreeMap::new();
    for e in &log.key_fetches {
        let f = by.entry(e.issuer.clone()).or_default();
        match e.kind {
            "version" => {
                let detail = e.message.split_once(": key set ").map_or("", |(_, d)| d);
                f.versions.push(detail.to_owned());
            }
            "skipped_key" => {
                let detail = e.message.split_once(": fetched ").map_or("", |(_, d)| d);
                f.skipped.insert(format!("fetched {detail}"));
            }
            "import_failed" => f.import_failed += 1,
            kind => {
                *f.changes.entry(kind).or_default() += 1;
                f.last = Some(kind);
            }
        }
    }
    for e in &log.entries {
        if s(&e.record, "reason") == Some("issuer_keys_unavailable") {
            by.entry(text_of(&e.record, "iss")).or_default().refused += 1;
        }
    }
    by
}

/// `a ×2, b ×1`.
fn counted(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    // probe or chain reason -> (caller -> n), (issuer -> n)
    let mut probes: BTreeMap<String, ProbeCounts> = BTreeMap::new();
    let mut trust = TrustSummary::default();
    // (reason, what was revoked) -> uses
    let mut revoked: BTreeMap<(String, String), RevokedUse> = BTreeMap::new();
    // what was served -> status -> n
    let mut served: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();

    const NONE: &str = "(none)";
    for e in &log.entries {
        let r = &e.record;
        *formats.entry(e.format.name()).or_default() += 1;
        if s(r, "decision") == Some("serve") {
            // A published document: no token, no caller, no rule.
            let status = r
                .get("status")
                .and_then(Value::as_u64)
                .map_or(NONE.to_owned(), |st| st.to_string());
            *served
                .entry(text_of(r, "reason"))
                .or_default()
                .entry(status)
                .or_default() += 1;
            continue;
        }
        decisions.add(r);
        by_rule.entry(text_of(r, "rule")).or_default().add(r);
        *by_reason.entry(text_of(r, "reason")).or_default() += 1;
        let iss = text_of(r, "iss");
        let caller = text_of(r, "caller");
        by_issuer.entry(iss.clone()).or_default().add(r);
        by_caller.entry(caller.clone()).or_default().add(r);
        let shadowed = is_shadow(r);
        let ts = r.get("ts_ms").and_then(Value::as_u64);
        if let Some(jti) = s(r, "minted_jti") {
            minted.push(json!({
                "minted_jti": jti,
                "token_id": s(r, "token_id"),
                "origin_token_id": s(r, "origin_token_id"),
                "iss": s(r, "iss"), "sub": s(r, "sub"), "caller": s(r, "caller"),
                "rule": s(r, "rule"), "minted_aud": s(r, "minted_aud"),
                "minted_scope": s(r, "minted_scope"), "chain_depth": r.get("chain_depth"),
                "shadow": shadowed, "ts_ms": r.get("ts_ms"),
                "line": e.line,
            }));
        }
        // A shadow rule's deny was not carried out: no spike, but the rollout review below.
        // Nor is a refusal for the gateway's own state (keys unavailable) the caller's doing.
        let server_side = SERVER_SIDE_REASONS.contains(&s(r, "reason").unwrap_or_default());
        if s(r, "decision") == Some("deny") && caller != NONE && !shadowed && !server_side {
            if let Some(ts) = ts {
                deny_times.entry(caller.clone()).or_default().push(ts);
            }
        }
        if let Some(id) = s(r, "token_id") {
            // A gateway token refused at the edge names the caller it was minted from (its
            // client_id), not its presenter: the replay is flagged on its own below.
            if caller != NONE && s(r, "reason") != Some("gateway_token_replay") {
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
        let reason = s(r, "reason").unwrap_or_default();
        if PROBE_REASONS.contains(&reason) || CHAIN_REASONS.contains(&reason) {
            let entry = probes.entry(reason.to_owned()).or_default();
            *entry.0.entry(caller.clone()).or_default() += 1;
            *entry.1.entry(iss.clone()).or_default() += 1;
        }
        if REVOKED_REASONS.contains(&reason) {
            let what = match reason {
                "subject_revoked" => format!("subject {}", text_of(r, "sub")),
                _ => format!(
                    "token {}",
                    s(r, "origin_token_id")
                        .or_else(|| s(r, "token_id"))
                        .unwrap_or(NONE)
                ),
            };
            let u = revoked.entry((reason.to_owned(), what)).or_default();
            u.count += 1;
            u.callers.insert(caller.clone());
            if let Some(ts) = ts {
                u.first_ms = Some(u.first_ms.map_or(ts, |f| f.min(ts)));
                u.last_ms = Some(u.last_ms.map_or(ts, |l| l.max(ts)));
            }
        }
        trust.add(r);
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
            anomalies.push(json!({
                "kind": "repeated_reason", "reason": reason, "count": n,
                "callers": callers, "issuers": issuers,
                "message": format!(
                    "{reason} {n} times (callers: {}; issuers: {})",
                    counted(callers),
                    counted(issuers)
                ),
            }));
        }
    }
    for ((reason, what), u) in &revoked {
        let callers: Vec<String> = u.callers.iter().cloned().collect();
        let when = match (u.first_ms, u.last_ms) {
            (Some(a), Some(b)) if a / 1000 != b / 1000 => {
                format!(", {} to {}", format_time(a / 1000), format_time(b / 1000))
            }
            (Some(a), _) => format!(", {}", format_time(a / 1000)),
            _ => String::new(),
        };
        anomalies.push(json!({
            "kind": "revoked_token_use", "reason": reason, "revoked": what, "count": u.count,
            "callers": callers, "first_ms": u.first_ms, "last_ms": u.last_ms,
            "message": format!(
                "{what} presented {} time(s) after its revocation ({reason}; callers: {}{when})",
                u.count,
                callers.join(", ")
            ),
        }));
    }

    let map_json = |m: &BTreeMap<String, Counts>| -> Value {
        Value::Object(m.iter().map(|(k, c)| (k.clone(), c.json())).collect())
    };
    let shadow_records = trust.shadow_records();
    let fetches = fetch_summaries(log);
    let served_total: usize = served.values().flat_map(BTreeMap::values).sum();
    let mut json = json!({
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
        "served": served,
        "key_fetches": {
            "issuers": fetches.iter().map(|(i, f)| (i.clone(), f.json())).collect::<Map<String, Value>>(),
            "events": log.key_fetches.iter().map(|e| json!({
                "line": e.line, "issuer": e.issuer, "kind": e.kind, "message": e.message,
            })).collect::<Vec<_>>(),
        },
        "anomalies": anomalies,
        "thresholds": {
            "window_seconds": th.window_seconds, "spike": th.spike,
            "repeat": th.repeat, "addresses": th.addresses,
        },
    });
    if let Some(o) = json.as_object_mut() {
        o.extend(trust.json(log));
    }

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
    if served_total > 0 {
        let what: Vec<String> = served
            .iter()
            .map(|(doc, by_status)| {
                let statuses: Vec<String> = by_status
                    .iter()
                    .map(|(st, n)| format!("{st} ×{n}"))
                    .collect();
                format!("{doc} ({})", statuses.join(", "))
            })
            .collect();
        let _ = writeln!(
            t,
            "served     {served_total} published document(s): {} (no token, no caller: not counted above)",
            what.join(", ")
        );
    }
    if shadow_records > 0 {
        let _ = writeln!(
            t,
            "           {shadow_records} of them by shadow rules: what enforcing would have decided, forwarded unchanged"
        );
    }
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
    trust.text(&mut t, log);
    if !fetches.is_empty() {
        let _ = writeln!(
            t,
            "\nissuer keys fetched by the filter (its own log lines; refusals while unavailable are the gateway's state, not the caller's)"
        );
        for (issuer, f) in &fetches {
            let changes: Vec<String> = f.changes.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            let _ = writeln!(
                t,
                "  {issuer}: {}; last {}; refused requests (issuer_keys_unavailable) {}",
                if changes.is_empty() {
                    "no health change logged".to_owned()
                } else {
                    changes.join(", ")
                },
                f.last.unwrap_or("-"),
                f.refused
            );
            for v in &f.versions {
                let _ = writeln!(t, "    key set {v}");
            }
            for k in &f.skipped {
                let _ = writeln!(t, "    {k}");
            }
            if f.import_failed > 0 {
                let _ = writeln!(
                    t,
                    "    a shared key set did not import in a worker ×{}",
                    f.import_failed
                );
            }
        }
        for e in log.key_fetches.iter().filter(|e| {
            matches!(
                e.kind,
                "failing" | "unavailable" | "recovered" | "import_failed"
            )
        }) {
            let _ = writeln!(t, "  line {}: {}", e.line, e.message);
        }
    }
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
        let origin = m
            .get("origin_token_id")
            .and_then(Value::as_str)
            .map_or(String::new(), |o| {
                format!(" (a hop; the chain started from {o})")
            });
        let discarded = if m.get("shadow").and_then(Value::as_bool) == Some(true) {
            " [shadow: discarded]"
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "  {} <- {}{origin}  (iss {}, sub {}, caller {}, rule {}, {when}){discarded}",
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
    fn summarises_the_trust_boundary_fields() {
        let base = |extra: Value| {
            let mut r = json!({"event":"token_exchange","ts_ms":1_000_000,"decision":"allow","reason":"exchanged",
                               "rule":"r","method":"GET","path":"/a","iss":"https://idp","caller":"app",
                               "token_id":"t","token_verified":true});
            if let (Some(o), Value::Object(e)) = (r.as_object_mut(), extra) {
                o.extend(e);
            }
            r.to_string()
        };
        let lines = [
            // Shadow: one would-be allow (minted and discarded), two would-be denies.
            base(json!({"mode":"shadow","rule":"tight","minted_jti":"s1","minted_aud":"x"})),
            base(
                json!({"mode":"shadow","rule":"tight","decision":"deny","reason":"insufficient_scope","status":403,"caller":"old-app","token_id":"o1"}),
            ),
            base(
                json!({"mode":"shadow","rule":"tight","decision":"deny","reason":"missing_token","status":401,"caller":"old-app","token_id":"o2","identity_headers":["x-user-id"]}),
            ),
            // A partner: overdue review, a scope removed by its ceiling, an identity header stripped.
            base(
                json!({"iss":"https://partner","issuer_review_overdue":true,"ceiling_removed_scopes":"a:write b:write","identity_headers":["x-forwarded-user"],"minted_jti":"m1","chain_depth":1}),
            ),
            // A chained hop from the partner's token, overdue too.
            base(
                json!({"iss":"https://gw","origin_iss":"https://partner","origin_token_id":"t","token_id":"m1","caller":"svc","issuer_review_overdue":true,"chain_depth":2,"minted_jti":"m2"}),
            ),
            // Refused for an identity header; refused otherwise with one.
            base(
                json!({"decision":"deny","reason":"identity_header_present","status":400,"identity_headers":["x-forwarded-user","x-user-id"],"token_verified":false}),
            ),
            base(
                json!({"decision":"deny","reason":"missing_token","status":401,"identity_headers":["x-forwarded-user"]}),
            ),
            // Chain limits twice each (below the default repeat of 3), then a third cycle.
            base(
                json!({"decision":"deny","reason":"chain_cycle","status":403,"caller":"svc","token_id":"c1","chain_depth":2}),
            ),
            base(
                json!({"decision":"deny","reason":"chain_cycle","status":403,"caller":"svc","token_id":"c2","chain_depth":2}),
            ),
            base(
                json!({"decision":"deny","reason":"chain_too_deep","status":403,"caller":"svc","token_id":"c3","chain_depth":3}),
            ),
            base(
                json!({"decision":"deny","reason":"chain_cycle","status":403,"caller":"svc2","token_id":"c4","chain_depth":2}),
            ),
            // Revoked: a token twice (once through a hop), a subject once.
            base(
                json!({"decision":"deny","reason":"token_revoked","status":401,"token_id":"leaked","ts_ms":2_000_000}),
            ),
            base(
                json!({"decision":"deny","reason":"token_revoked","status":401,"token_id":"m9","origin_token_id":"leaked","caller":"svc","ts_ms":3_000_000}),
            ),
            base(
                json!({"decision":"deny","reason":"subject_revoked","status":401,"sub":"mallory"}),
            ),
        ];
        let log = read_log(&lines.join("\n"));
        let (text, j, n) = summarise(&log, Thresholds::default());
        assert_eq!(j["shadow"]["records"], 3);
        assert_eq!(
            j["shadow"]["by_rule"]["tight"],
            json!({"allow": 1, "deny": 2, "reasons": {"exchanged": 1, "insufficient_scope": 1, "missing_token": 1},
                   "denied_callers": {"old-app": 2}})
        );
        assert_eq!(j["review_overdue"], json!({"https://partner": 2}));
        assert_eq!(
            j["ceiling_removed_scopes"],
            json!({"https://partner": {"a:write": 1, "b:write": 1}})
        );
        assert_eq!(
            j["identity_headers"],
            json!({"x-forwarded-user": {"total": 3, "refused": 1, "stripped": 1, "denied": 1},
                   "x-user-id": {"total": 2, "refused": 1, "stripped": 1, "denied": 0}})
        );
        assert_eq!(j["chain"]["by_depth"], json!({"1": 1, "2": 4, "3": 1}));
        assert_eq!(j["chain"]["hops"]["allow"], 1);
        assert_eq!(j["chain"]["hops"]["deny"], 1);
        assert_eq!(j["minted"][0]["shadow"], true);
        assert_eq!(j["minted"][2]["origin_token_id"], "t");
        let anomalies: Vec<String> = j["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["message"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            anomalies,
            [
                "chain_cycle 3 times (callers: svc ×2, svc2 ×1; issuers: https://idp ×3)",
                "subject mallory presented 1 time(s) after its revocation (subject_revoked; callers: app, 1970-01-01T00:16:40Z)",
                "token leaked presented 2 time(s) after its revocation (token_revoked; callers: app, svc, 1970-01-01T00:33:20Z to 1970-01-01T00:50:00Z)",
            ]
        );
        assert_eq!(n, 3);
        // Shadow denies are not denials: no spike from them, whatever the threshold.
        let strict = Thresholds {
            spike: 2,
            ..Thresholds::default()
        };
        let (_, j, _) = summarise(&log, strict);
        assert!(!j["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["caller"] == "old-app"));
        for want in [
            "3 of them by shadow rules",
            "tight                                    would allow 1     would deny 2     (exchanged ×1, insufficient_scope ×1, missing_token ×1)",
            "callers enforcing would deny: old-app ×2",
            "https://partner                          2",
            "x-forwarded-user                         3 (refused 1, stripped 1, denied otherwise 1)",
            "https://partner                          a:write ×1, b:write ×1",
            "m2 <- m1 (a hop; the chain started from t)",
            "s1 <- t  (iss https://idp, sub -, caller app, rule tight, 1970-01-01T00:16:40Z) [shadow: discarded]",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn keeps_each_lifecycle_warning_of_the_filter_once() {
        let overdue = r#"trusted issuer "https://p" is overdue for review (review_by 2026-06-30, now 2026-07-01T00:00:00Z): review the entry and set a new review_by"#;
        let text = [
            format!("[2026-07-01 00:00:00.000][1][warning][wasm] [context.cc:1154] wasm log a b: token-exchange-filter: {overdue}"),
            format!("[2026-07-01 00:00:00.000][2][warning][wasm] [context.cc:1154] wasm log a b: token-exchange-filter: {overdue}"),
            format!(r#"2026/07/01 00:00:00 [warn] 1#0: [proxy-wasm]["f" #1] token-exchange-filter: {overdue}, client: 10.0.0.1, server: kong"#),
            format!("... wasm log a b: token-exchange-filter: {}", overdue.replace("00:00:00Z", "00:00:01Z")),
            r#"... wasm log a b: token-exchange-filter: policy loaded: 2 trusted issuer(s)"#.to_owned(),
            ENVOY.to_owned(),
        ]
        .join("\n");
        let log = read_log(&text);
        assert_eq!(
            log.lifecycle,
            [LifecycleNotice {
                line: 1,
                message: overdue.to_owned(),
                count: 4
            }]
        );
        assert_eq!(log.entries.len(), 1);
        let (t, j, _) = summarise(&log, Thresholds::default());
        assert_eq!(j["lifecycle_notices"][0]["message"], overdue);
        assert_eq!(j["lifecycle_notices"][0]["count"], 4);
        assert!(t.contains(&format!("  line 1 (×4): {overdue}")), "{t}");
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
