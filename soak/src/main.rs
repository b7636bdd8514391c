//! Helpers for scripts/soak.sh.
//!
//! `soak gen --out DIR --valid-for SECONDS`
//!     Writes DIR/policy.json (the test-support crate's standard policy: one trusted ES256
//!     issuer, audience `api`, the `orders-read` rule), DIR/cases.json (every request shape
//!     with its expected audit reason and status), DIR/requests.bin (the shuffled, weighted
//!     sequence of raw HTTP/1.1 requests wrk replays) and DIR/originals.txt (every
//!     Authorization value and token the client sends, for the upstream's leak check).
//!     Every expectation is cross-checked natively with the filter's own `Policy::decide` at
//!     the start and at the end of the validity window; generation fails on any disagreement.
//!
//! `soak upstream --originals FILE --port-file FILE --stats-port-file FILE`
//!     A std-only, thread-per-connection, keep-alive HTTP/1.1 server on 127.0.0.1 that
//!     answers 200 `ok`, counts requests (total and per x-request-id) and counts every request
//!     carrying an original token in any header value. A second listener serves the counters
//!     as JSON (`GET /stats`) so they are never reachable through Envoy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use token_exchange_filter::core::{HttpRequest, KeySnapshot, Policy, Verdict};
use token_exchange_tests::{hostile, orders_rule, policy, CountingEntropy, Gateway, Issuer};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("gen") => gen(&args[1..]),
        Some("upstream") => upstream(&args[1..]),
        _ => Err("usage: soak gen|upstream ...".into()),
    };
    if let Err(e) = r {
        eprintln!("soak: ERROR: {e}");
        std::process::exit(1);
    }
}

fn opt(args: &[String], name: &str) -> Res<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// gen

struct Case {
    name: String,
    method: &'static str,
    path: String,
    authorization: Vec<String>,
    reason: String,
    status: u16,
    weight: usize,
    kind: &'static str,
}

/// The Authorization values the filter sees behind Envoy: Envoy's HTTP/1 codec folds
/// repeated Authorization headers (an inline header) into one value joined by `,`, and
/// appending an empty value adds nothing.
fn as_envoy_passes(values: &[String]) -> Vec<String> {
    if values.len() <= 1 {
        return values.to_vec();
    }
    let joined: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    if joined.is_empty() {
        return vec![String::new()];
    }
    vec![joined.join(",")]
}

fn decide(policy: &Policy, c: &Case, now: u64) -> (String, u16) {
    let seen = as_envoy_passes(&c.authorization);
    let req = HttpRequest {
        method: c.method,
        path: &c.path,
        host: Some("soak.test"),
        route_name: None,
        authorization: seen.iter().map(String::as_str).collect(),
        request_id: Some("soak"),
        header_names: vec![],
    };
    let d = policy.decide(&req, &KeySnapshot::default(), Duration::from_secs(now), &mut CountingEntropy(0));
    let status = match &d.verdict {
        Verdict::Forward { .. } | Verdict::Pass => 200,
        Verdict::Deny(denial) => denial.status,
    };
    (d.audit.reason.to_owned(), status)
}

fn gen(args: &[String]) -> Res<()> {
    let out = PathBuf::from(opt(args, "--out")?);
    let valid_for: u64 = opt(args, "--valid-for")?
        .parse()
        .map_err(|e| format!("--valid-for: {e}"))?;
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let now = unix_now();
    let end = now + valid_for;

    let gw = Gateway::new();
    let issuer = Issuer::es256("https://idp.soak.test", "soak-es256-1", 7);
    let attacker = Issuer::es256("https://attacker.soak.test", "evil-1", 9);
    let pol = policy(&gw, &[&issuer], json!([orders_rule()]));
    let native = Policy::from_json(pol.to_string().as_bytes()).map_err(|e| e.to_string())?;

    // Long-lived claims so the valid tokens stay valid for the whole soak.
    let long_claims = |jti: String, scope: &str| {
        let mut c = issuer.claims(now, scope);
        c["exp"] = json!(end + 600);
        c["jti"] = json!(jti);
        c
    };
    let bearer = |t: &str| vec![format!("Bearer {t}")];
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |kind: &'static str,
                   name: String,
                   method: &'static str,
                   path: String,
                   authorization: Vec<String>,
                   reason: &str,
                   status: u16,
                   weight: usize| {
        cases.push(Case {
            name,
            method,
            path,
            authorization,
            reason: reason.into(),
            status,
            weight,
            kind,
        });
    };

    // Valid traffic: 64 distinct tokens (distinct jti), spread over /orders paths.
    for i in 0..64 {
        let t = issuer.sign(&long_claims(
            format!("soak-valid-{i}"),
            "orders:read profile",
        ));
        let path = match i % 4 {
            0 => "/orders".to_owned(),
            1 => format!("/orders/{i}"),
            2 => format!("/orders/{i}/items?page=2"),
            _ => format!("/orders?customer={i}"),
        };
        add(
            "valid",
            format!("valid token {i}"),
            "GET",
            path,
            bearer(&t),
            "exchanged",
            200,
            12,
        );
    }
    // Ordinary invalid traffic.
    let mut expired = issuer.claims(now, "orders:read");
    expired["iat"] = json!(now - 7200);
    expired["nbf"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    expired["jti"] = json!("soak-expired");
    let mut wrong_aud = long_claims("soak-wrong-aud".into(), "orders:read");
    wrong_aud["aud"] = json!("other-api");
    let mut wrong_caller = long_claims("soak-wrong-caller".into(), "orders:read");
    wrong_caller["azp"] = json!("someone-else");
    let good = issuer.sign(&long_claims("soak-good-elsewhere".into(), "orders:read"));
    // (name, method, path, Authorization values, reason, status, weight)
    type Plain<'a> = (
        &'a str,
        &'static str,
        String,
        Vec<String>,
        &'a str,
        u16,
        usize,
    );
    let plain: Vec<Plain> = vec![
        (
            "expired",
            "GET",
            "/orders/1".into(),
            bearer(&issuer.sign(&expired)),
            "token_expired",
            401,
            40,
        ),
        (
            "wrong audience",
            "GET",
            "/orders/2".into(),
            bearer(&issuer.sign(&wrong_aud)),
            "audience_mismatch",
            401,
            40,
        ),
        (
            "insufficient scope",
            "GET",
            "/orders/3".into(),
            bearer(&issuer.sign(&long_claims("soak-scope".into(), "profile"))),
            "insufficient_scope",
            403,
            40,
        ),
        (
            "caller not allowed",
            "GET",
            "/orders/4".into(),
            bearer(&issuer.sign(&wrong_caller)),
            "caller_not_allowed",
            403,
            20,
        ),
        (
            "no token",
            "GET",
            "/orders/5".into(),
            vec![],
            "missing_token",
            401,
            60,
        ),
        (
            "basic scheme",
            "GET",
            "/orders/6".into(),
            vec!["Basic YWxpY2U6c2VjcmV0".into()],
            "missing_token",
            401,
            10,
        ),
        (
            "unmatched path",
            "GET",
            "/admin".into(),
            bearer(&good),
            "no_matching_rule",
            403,
            40,
        ),
        (
            "unmatched path, no token",
            "GET",
            "/health".into(),
            vec![],
            "no_matching_rule",
            403,
            20,
        ),
        (
            "unmatched method",
            "POST",
            "/orders".into(),
            bearer(&good),
            "no_matching_rule",
            403,
            20,
        ),
        (
            "garbage token",
            "GET",
            "/orders/7".into(),
            bearer("not-a-jwt"),
            "malformed_token",
            401,
            20,
        ),
    ];
    for (name, method, path, auth, reason, status, weight) in plain {
        add(
            "invalid",
            name.into(),
            method,
            path,
            auth,
            reason,
            status,
            weight,
        );
    }
    // The hostile corpus (cases that survive a real HTTP hop), each once per cycle.
    for h in hostile::corpus(&issuer, &attacker, now) {
        if !h.http_safe() {
            continue;
        }
        add(
            "hostile",
            h.name.clone(),
            "GET",
            "/orders".into(),
            h.authorization.clone(),
            h.expected_reason,
            h.expected_status,
            1,
        );
    }

    // Cross-check every expectation with the filter's own engine, now and at the end. The
    // engine is built from the same tree as the wasm Envoy runs, so its answer is what the
    // soak expects; a hostile-corpus expectation it disagrees with is reported (the corpus
    // suites own that), any other disagreement, or one between now and the end, is fatal.
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for c in &mut cases {
        let (reason, status) = decide(&native, c, now);
        let (reason_end, status_end) = decide(&native, c, end);
        if (reason.as_str(), status) != (reason_end.as_str(), status_end) {
            problems.push(format!(
                "{:?}: {reason} {status} at now but {reason_end} {status_end} at now+{valid_for}s",
                c.name
            ));
        }
        if reason != c.reason || status != c.status {
            let msg = format!(
                "{:?}: expected {} {}, Policy::decide says {reason} {status}",
                c.name, c.reason, c.status
            );
            if c.kind == "hostile" {
                if c.authorization.len() > 1 {
                    eprintln!(
                        "soak gen: note: {:?} sends {} Authorization headers; Envoy folds them \
                         into one, so the filter answers {reason} {status} (corpus: {} {})",
                        c.name,
                        c.authorization.len(),
                        c.reason,
                        c.status
                    );
                } else {
                    warnings.push(msg);
                }
                c.reason = reason;
                c.status = status;
            } else {
                problems.push(msg);
            }
        }
    }
    for w in &warnings {
        eprintln!("soak gen: WARNING: hostile corpus expectation out of date: {w}");
    }
    if !problems.is_empty() {
        return Err(format!(
            "expectations disagree with Policy::decide:\n  {}",
            problems.join("\n  ")
        ));
    }

    // Files.
    let write = |name: &str, bytes: &[u8]| -> Res<()> {
        std::fs::write(out.join(name), bytes).map_err(|e| format!("{name}: {e}"))
    };
    write("policy.json", pol.to_string().as_bytes())?;
    let cases_json: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "id": i, "name": c.name, "kind": c.kind, "method": c.method, "path": c.path,
                "reason": c.reason, "status": c.status, "weight": c.weight,
                "headers": c.authorization.len(),
            })
        })
        .collect();
    write(
        "cases.json",
        serde_json::to_string_pretty(&cases_json)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )?;

    let mut originals: HashSet<String> = HashSet::new();
    for c in &cases {
        for a in &c.authorization {
            originals.insert(a.clone());
            originals.insert(a.trim().to_owned());
            if let Some((_, t)) = a.split_once(' ') {
                if !t.trim().is_empty() {
                    originals.insert(t.trim().to_owned());
                }
            }
        }
    }
    let mut o: Vec<String> = originals.into_iter().filter(|s| !s.is_empty()).collect();
    o.sort();
    write("originals.txt", (o.join("\n") + "\n").as_bytes())?;

    // The weighted sequence, shuffled with a fixed LCG (reproducible).
    let mut seq: Vec<usize> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        seq.extend(std::iter::repeat_n(i, c.weight));
    }
    let mut state: u64 = 0x5eed_5eed;
    for i in (1..seq.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        seq.swap(i, j);
    }
    let mut bin: Vec<u8> = Vec::new();
    for &i in &seq {
        let c = &cases[i];
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: soak.test\r\nx-request-id: soak-{i}\r\n",
            c.method, c.path
        );
        for a in &c.authorization {
            r.push_str(&format!("Authorization: {a}\r\n"));
        }
        if c.method == "POST" {
            r.push_str("content-length: 0\r\n");
        }
        r.push_str("\r\n");
        bin.extend_from_slice(format!("{} {} {}\n", r.len(), i, c.status).as_bytes());
        bin.extend_from_slice(r.as_bytes());
    }
    write("requests.bin", &bin)?;

    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &seq {
        *by_kind.entry(cases[i].kind).or_default() += 1;
    }
    eprintln!(
        "soak gen: {} cases, a cycle of {} requests {:?}, {} original values; expectations \
         agree with Policy::decide at now and now+{valid_for}s",
        cases.len(),
        seq.len(),
        by_kind,
        o.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// upstream

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    leaks: AtomicU64,
    no_authorization: AtomicU64,
    multiple_authorization: AtomicU64,
    connections: AtomicU64,
    by_request_id: Mutex<HashMap<String, u64>>,
    leak_examples: Mutex<Vec<String>>,
}

fn upstream(args: &[String]) -> Res<()> {
    let originals_text =
        std::fs::read_to_string(opt(args, "--originals")?).map_err(|e| e.to_string())?;
    let originals: Arc<HashSet<String>> = Arc::new(
        originals_text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let stats = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let stats_port = stats.local_addr().map_err(|e| e.to_string())?.port();
    let counters = Arc::new(Counters::default());

    let c = counters.clone();
    thread::spawn(move || {
        for conn in stats.incoming().flatten() {
            let _ = serve_stats(conn, &c);
        }
    });
    let write_port = |file: String, port: u16| -> Res<()> {
        let tmp = format!("{file}.tmp");
        std::fs::write(&tmp, port.to_string()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &file).map_err(|e| e.to_string())
    };
    write_port(opt(args, "--stats-port-file")?, stats_port)?;
    write_port(opt(args, "--port-file")?, port)?;
    eprintln!("soak upstream: 127.0.0.1:{port}, stats on 127.0.0.1:{stats_port}");
    for conn in listener.incoming().flatten() {
        let (c, o) = (counters.clone(), originals.clone());
        c.connections.fetch_add(1, Ordering::Relaxed);
        thread::spawn(move || {
            let _ = serve(conn, &c, &o);
        });
    }
    Ok(())
}

/// Shorter originals ("Bearer", "a.b.c") are only matched as a whole Authorization value:
/// as pieces of other header values they would match innocent text.
const MIN_PIECE: usize = 20;

fn contains_original(name: &str, value: &str, originals: &HashSet<String>) -> bool {
    if name == "authorization" && (originals.contains(value) || originals.contains(value.trim())) {
        return true;
    }
    value
        .split(|ch: char| ch.is_whitespace() || ch == ',')
        .any(|piece| piece.len() >= MIN_PIECE && originals.contains(piece))
        || (value.len() >= MIN_PIECE && originals.contains(value))
}

fn serve(conn: TcpStream, c: &Counters, originals: &HashSet<String>) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::with_capacity(16 * 1024, conn);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut content_length = 0usize;
        let mut authorizations = 0;
        let mut request_id = String::new();
        let mut leak: Option<String> = None;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "authorization" => authorizations += 1,
                "x-request-id" => request_id = value.to_owned(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
            if leak.is_none() && contains_original(&name, value, originals) {
                leak = Some(format!(
                    "{name}: {}",
                    value.chars().take(80).collect::<String>()
                ));
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            reader.read_exact(&mut body)?;
        }
        c.total.fetch_add(1, Ordering::Relaxed);
        match authorizations {
            0 => {
                c.no_authorization.fetch_add(1, Ordering::Relaxed);
            }
            1 => {}
            _ => {
                c.multiple_authorization.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(l) = leak {
            c.leaks.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut ex) = c.leak_examples.lock() {
                if ex.len() < 10 {
                    ex.push(format!("{request_id}: {l}"));
                }
            }
        }
        if let Ok(mut m) = c.by_request_id.lock() {
            *m.entry(request_id).or_default() += 1;
        }
        writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
        )?;
        if close {
            return Ok(());
        }
    }
}

fn serve_stats(mut conn: TcpStream, c: &Counters) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf)?;
    if buf.get(..n).is_some_and(|b| b.starts_with(b"GET /reset ")) {
        for a in [
            &c.total,
            &c.leaks,
            &c.no_authorization,
            &c.multiple_authorization,
            &c.connections,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        if let Ok(mut m) = c.by_request_id.lock() {
            m.clear();
        }
        if let Ok(mut v) = c.leak_examples.lock() {
            v.clear();
        }
    }
    let by_id: BTreeMap<String, u64> = c
        .by_request_id
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    let body = json!({
        "total": c.total.load(Ordering::Relaxed),
        "leaks": c.leaks.load(Ordering::Relaxed),
        "leak_examples": c.leak_examples.lock().map(|v| v.clone()).unwrap_or_default(),
        "no_authorization": c.no_authorization.load(Ordering::Relaxed),
        "multiple_authorization": c.multiple_authorization.load(Ordering::Relaxed),
        "connections": c.connections.load(Ordering::Relaxed),
        "by_request_id": by_id,
    })
    .to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
