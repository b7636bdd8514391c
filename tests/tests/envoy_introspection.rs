//! Opaque tokens under a real Envoy 1.40 with the release wasm: the phantom-token pattern
//! end to end. The introspection endpoint is our own (tests/tests/envoy/introspection_server.py,
//! Python standard library) on 127.0.0.1 behind an Envoy cluster; it checks the Basic
//! credentials and the form body, and answers active, inactive, errors, garbage or slowly.
//! The minted token is verified by jwt-simple and by PyJWT; a token revoked at the server is
//! refused once its cache entry ends; the client secret and the token are in no log line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
mod envoy;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use token_exchange_filter::core::introspect::TokenDigest;
use token_exchange_tests::*;

use envoy::{free_port, http, unix_now, Envoy, Upstream};

const IDP: &str = "https://idp.test";

/// The introspection server, stopped when dropped.
struct IntrospectionServer {
    child: Child,
    port: u16,
    state: std::path::PathBuf,
    record: std::path::PathBuf,
}

impl IntrospectionServer {
    fn start(dir: &Path) -> IntrospectionServer {
        let port = free_port();
        let state = dir.join("introspection-state.json");
        let record = dir.join("introspection-requests.jsonl");
        std::fs::write(&state, "{}").unwrap();
        let _ = std::fs::remove_file(&record);
        let mut child = Command::new(envoy::venv_python())
            .arg(envoy::root().join("tests/tests/envoy/introspection_server.py"))
            .arg(port.to_string())
            .args(["gateway", INTROSPECTION_SECRET])
            .arg(&state)
            .arg(&record)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        IntrospectionServer {
            child,
            port,
            state,
            record,
        }
    }

    /// What to answer, by token (see the server's doc).
    fn answer(&self, state: &Value) {
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, state.to_string()).unwrap();
        std::fs::rename(&tmp, &self.state).unwrap();
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn hits(&self, token: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["token"] == token)
            .count()
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_policy(gw: &Gateway, idp: &Issuer) -> Value {
    let mut trusted = taking_opaque_tokens(
        idp.trusted(&["api"]),
        "http://idp.test/introspect",
        "idp_introspection",
    );
    trusted["introspection"]["cache_seconds"] = json!(2);
    trusted["introspection"]["negative_cache_seconds"] = json!(1);
    trusted["introspection"]["timeout_ms"] = json!(1000);
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([trusted]);
    doc
}

fn get(port: u16, token: &str) -> envoy::Response {
    let auth = format!("Bearer {token}");
    http(
        port,
        "GET",
        "/orders/1",
        &[("authorization", auth.as_str())],
        b"",
    )
}

fn active(scope: &str) -> Value {
    json!({ "answer": active_answer(IDP, unix_now(), scope) })
}

/// The minted token the upstream got last.
fn last_minted(upstream: &Upstream) -> String {
    let records = upstream.records();
    let auth = records.last().unwrap().header_all("authorization")[0].to_owned();
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

/// PyJWT, an independent verifier, on one minted token.
fn pyjwt_verifies(gw: &Gateway, token: &str) {
    let case = json!([{
        "token": token, "jwk": gw.verifier_jwk(), "alg": gw.alg(),
        "audience": "orders-service", "issuer": gw.iss
    }]);
    let mut child = Command::new(envoy::venv_python())
        .arg(envoy::root().join("tests/tests/envoy/verify_pyjwt.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(case.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results[0]["ok"], true,
        "PyJWT refused the minted token: {}",
        results[0]
    );
}

fn audit_for(envoy: &Envoy, token: &str) -> Vec<Value> {
    let id = TokenDigest::of(token).token_id();
    envoy
        .audit_records()
        .into_iter()
        .filter(|a| a["token_id"] == id.as_str())
        .collect()
}

#[test]
fn opaque_tokens_are_introspected_and_exchanged_through_envoy() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let wasm = envoy::build_wasm();
    let dir = envoy::scratch_dir("introspection");
    let server = IntrospectionServer::start(&dir);
    let upstream = Upstream::start();
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let port = free_port();
    let admin = free_port();
    let mut config = envoy::envoy_config(
        &wasm,
        &gateway_policy(&gw, &idp),
        port,
        admin,
        upstream.port,
    );
    config["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(envoy::cluster("idp_introspection", server.port));
    let envoy = Envoy::start_config(&bin, &dir, &config, port, admin, 2)
        .unwrap_or_else(|e| panic!("Envoy did not start: {:?}\n{}", e.exit, e.log));

    // Active: exchanged; the server saw the right credentials and form; the minted token
    // verifies with two independent libraries and carries only what the rule grants.
    let (good, inactive, failing, garbage, slow, revoked) = (
        "opaque-good-0123456789",
        "opaque-inactive-0123456789",
        "opaque-failing-0123456789",
        "opaque-garbage-0123456789",
        "opaque-slow-0123456789",
        "opaque-revoked-0123456789",
    );
    let mut state = serde_json::Map::new();
    state.insert(good.into(), active("orders:read profile"));
    state.insert(revoked.into(), active("orders:read"));
    state.insert(failing.into(), json!({ "status": 500, "body": "boom" }));
    state.insert(
        garbage.into(),
        json!({ "raw": "{\"active\":\"true\",\"sub\":\"alice\"}" }),
    );
    state.insert(
        slow.into(),
        json!({ "sleep": 3, "answer": active_answer(IDP, unix_now(), "orders:read") }),
    );
    let mut state = Value::Object(state);
    server.answer(&state);
    let r = get(port, good);
    assert_eq!(r.status, 200, "{}\n{}", r.body, envoy.log());
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["basic_ok"], true, "{requests:?}");
    assert_eq!(requests[0]["form_ok"], true, "{requests:?}");
    assert_eq!(requests[0]["token"], good);
    assert_eq!(requests[0]["host"], "idp.test");
    let minted = last_minted(&upstream);
    let (_, claims) = gw.verify(&minted, unix_now());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "web-app");
    assert!(claims.get("username").is_none());
    pyjwt_verifies(&gw, &minted);
    let records = upstream.records();
    assert!(
        !String::from_utf8_lossy(&records.last().unwrap().raw).contains(good),
        "the opaque token reached the upstream"
    );
    let audit = audit_for(&envoy, good);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["decision"], "allow");

    // Cached (2 s) on the worker that asked; with two workers at most one more call.
    for _ in 0..4 {
        assert_eq!(get(port, good).status, 200);
    }
    assert!(server.hits(good) <= 2, "{}", server.hits(good));

    // Inactive: 401 invalid_token.
    let r = get(port, inactive);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
    assert_eq!(audit_for(&envoy, inactive)[0]["reason"], "token_inactive");

    // Errors and garbage: 503 with Retry-After, never forwarded.
    let before = upstream.count();
    for t in [failing, garbage] {
        let r = get(port, t);
        assert_eq!(r.status, 503, "{t}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.body.contains("temporarily_unavailable"));
        assert_eq!(
            audit_for(&envoy, t)[0]["reason"],
            "introspection_unavailable"
        );
    }
    // Slowly: past timeout_ms (1 s) the request is refused, well before the answer (3 s).
    let started = Instant::now();
    let r = get(port, slow);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.count(), before, "a failure was forwarded");

    // Revoked at the server: refused once the cache entry (2 s) ends.
    assert_eq!(get(port, revoked).status, 200);
    state.as_object_mut().unwrap().remove(revoked);
    server.answer(&state);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(port, revoked);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "still accepted 10 s after revocation"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        audit_for(&envoy, revoked).last().unwrap()["reason"],
        "token_inactive"
    );

    // Every request the server saw had the right credentials and form.
    for r in server.requests() {
        assert_eq!(
            (r["basic_ok"].as_bool(), r["form_ok"].as_bool()),
            (Some(true), Some(true)),
            "{r}"
        );
    }
    // The failure was logged (once per change of failure and worker), and no line holds
    // the secret or a token.
    let log = envoy.log();
    let failing_lines = log
        .lines()
        .filter(|l| l.contains("introspection endpoint of issuer") && l.contains("failing:"))
        .count();
    assert!((1..=6).contains(&failing_lines), "{failing_lines}\n{log}");
    for secret in [INTROSPECTION_SECRET, good, inactive, revoked, failing] {
        assert!(!log.contains(secret), "{secret:?} in Envoy's log");
    }
}
