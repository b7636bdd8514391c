//! Living keys through the built wasm (wasm-test-harness): issuer key sets fetched at start
//! and refreshed, rotation at the provider, `kid` spraying, every kind of outage and the
//! recovery, one fetch shared by several VMs, APISIX (no shared data, no timer), OIDC
//! discovery, generated signing keys shared across VMs, signing-key rotation by
//! configuration update, the published JWKS and OpenID configuration, and answers to calls
//! the filter does not know.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::time::{Duration, UNIX_EPOCH};

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use token_exchange_tests::*;
use wasm_test_harness::{
    build, Host, HttpCall, HttpCallResponse, LogLevel, Request, RequestSpec, Vm,
};

const IDP: &str = "https://idp.test";
const UPSTREAM: &str = "idp_jwks";
const JWKS_PATH: &str = "/.well-known/jwks.json";

fn wasm() -> Vec<u8> {
    build::filter_wasm().expect("filter wasm builds")
}

/// A trusted issuer whose keys are fetched from `https://idp.test/keys`: refresh 60 s, stale
/// after 180 s, timeout 2 s, at most one unknown-kid refetch per 30 s.
fn fetched_issuer() -> Value {
    json!({
        "issuer": IDP,
        "jwks_uri": format!("{IDP}/keys"),
        "jwks_upstream": UPSTREAM,
        "algorithms": ["EdDSA"],
        "audiences": ["api"],
        "jwks_refresh_seconds": 60,
        "jwks_max_stale_seconds": 180,
        "jwks_timeout_ms": 2000,
        "jwks_max_bytes": 4096,
        "jwks_min_refetch_seconds": 30
    })
}

fn fetched_policy(gw: &Gateway) -> Value {
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([fetched_issuer()]);
    doc
}

fn keys_doc(keys: &[&Issuer]) -> String {
    json!({ "keys": keys.iter().map(|i| i.public_jwk()).collect::<Vec<_>>() }).to_string()
}

fn json_answer(body: &str) -> HttpCallResponse {
    HttpCallResponse::status(200)
        .header("content-type", "application/json")
        .body(body)
}

fn now(host: &Host) -> u64 {
    host.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(host: &Host, issuer: &Issuer) -> String {
    format!(
        "Bearer {}",
        issuer.sign(&issuer.claims(now(host), "orders:read"))
    )
}

fn get(vm: &Vm, path: &str, authorization: Option<&str>) -> Request {
    let mut spec = RequestSpec::new(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
    ]);
    if let Some(a) = authorization {
        spec = spec.header("authorization", a);
    }
    vm.send(spec)
}

fn audits(host: &Host) -> Vec<Value> {
    host.logs()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l.message).ok())
        .filter(|v| v["event"] == "token_exchange")
        .collect()
}

fn warnings(host: &Host) -> Vec<String> {
    host.logs_at_least(LogLevel::Warn)
        .into_iter()
        .map(|l| l.message)
        .collect()
}

fn calls(host: &Host) -> Vec<HttpCall> {
    host.pending_http_calls()
}

/// Answers every pending call with `response`; how many there were.
fn answer_all(host: &Host, response: &HttpCallResponse) -> usize {
    let pending = calls(host);
    for c in &pending {
        host.answer_http_call(c.token, response.clone()).unwrap();
    }
    pending.len()
}

fn minted_kid(gw: &Gateway, r: &Request, at: u64) -> String {
    let fwd = r
        .forwarded_header("authorization")
        .unwrap_or_else(|| panic!("not forwarded: {:?}", r.local_response()));
    let (header, _) = gw.verify(fwd.strip_prefix("Bearer ").unwrap(), at);
    header["kid"].as_str().unwrap().to_owned()
}

/// One VM with `doc`, the clock at `NOW`, nothing fetched yet.
fn loaded(host: &Host, doc: &Value) -> Vm {
    host.set_unix_time(NOW);
    host.load(&wasm(), doc.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{:?}: {e}", host.profile()))
}

/// A VM (or several) with the fetched issuer, its first fetch answered with `keys`.
fn started(host: &Host, doc: &Value, workers: usize, keys: &[&Issuer]) -> Vec<Vm> {
    host.set_unix_time(NOW);
    let vms = host
        .load_workers(&wasm(), doc.to_string().as_bytes(), workers)
        .unwrap_or_else(|e| panic!("{:?}: {e}", host.profile()));
    assert!(calls(host).is_empty(), "no call while configuring");
    host.tick().unwrap();
    assert_eq!(answer_all(host, &json_answer(&keys_doc(keys))), 1);
    host.tick().unwrap();
    host.clear_logs();
    vms
}

#[test]
fn fetches_at_start_then_refreshes() {
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let gw = Gateway::new();
        let k1 = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &fetched_policy(&gw));
        assert!(
            calls(&host).is_empty(),
            "{profile:?}: never calls out while configuring"
        );
        assert_eq!(vm.tick_period(), Some(Duration::from_millis(500)));
        host.tick().unwrap();
        let pending = calls(&host);
        assert_eq!(pending.len(), 1, "{profile:?}");
        let c = &pending[0];
        assert_eq!(c.upstream, UPSTREAM);
        assert_eq!(c.context_id, 1, "from the root's tick");
        assert_eq!(c.header(":method"), Some("GET"));
        assert_eq!(c.header(":path"), Some("/keys"));
        assert_eq!(c.header(":authority"), Some("idp.test"));
        assert_eq!(c.header(":scheme"), Some("https"));
        assert_eq!(c.timeout, Duration::from_secs(2));

        // A request before the keys arrive waits for them, then is exchanged.
        let r = get(&vm, "/orders/1", Some(&token(&host, &k1)));
        assert!(r.is_paused() && !r.is_forwarded(), "{profile:?}");
        assert!(audits(&host).is_empty(), "decided once, after the wait");
        host.answer_http_call(c.token, json_answer(&keys_doc(&[&k1])))
            .unwrap();
        assert_eq!(minted_kid(&gw, &r, NOW), "gw-1", "{profile:?}");
        assert_eq!(audits(&host).len(), 1);
        assert!(
            host.logs()
                .iter()
                .any(|l| l.message.contains("key set version 1")),
            "{profile:?}"
        );

        // Nothing until the refresh is due; then one call.
        host.advance(Duration::from_secs(59));
        host.tick().unwrap();
        assert!(calls(&host).is_empty(), "{profile:?}");
        host.advance(Duration::from_secs(2));
        host.tick().unwrap();
        assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k1]))), 1);
        assert!(get(&vm, "/orders/1", Some(&token(&host, &k1))).is_forwarded());
        assert!(warnings(&host).is_empty(), "{:?}", warnings(&host));
    }
}

#[test]
fn rotation_at_the_provider() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let k2 = Issuer::ed25519(IDP, "k2", 8);
    let vm = started(&host, &fetched_policy(&gw), 1, &[&k1])[0].clone();

    // The provider starts signing with a key announced after the last fetch: the request
    // waits for a refetch and is exchanged.
    host.advance(Duration::from_secs(31));
    let r = get(&vm, "/orders", Some(&token(&host, &k2)));
    assert!(r.is_paused());
    let pending = calls(&host);
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].context_id,
        r.context_id(),
        "from the paused request"
    );
    host.answer_http_call(pending[0].token, json_answer(&keys_doc(&[&k1, &k2])))
        .unwrap();
    assert!(r.is_forwarded(), "{:?}", r.local_response());
    // Tokens of the old key still verify: it is still published.
    assert!(get(&vm, "/orders", Some(&token(&host, &k1))).is_forwarded());

    // The provider drops k1 at the next refresh: its tokens stop verifying.
    host.advance(Duration::from_secs(60));
    host.tick().unwrap();
    assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k2]))), 1);
    host.clear_logs();
    let r = get(&vm, "/orders", Some(&token(&host, &k1)));
    // The refresh was an attempt: no refetch within 30 s, refused at once.
    assert!(calls(&host).is_empty());
    assert_eq!(r.status(), Some(401));
    assert_eq!(audits(&host)[0]["reason"], "unknown_key");
    assert!(get(&vm, "/orders", Some(&token(&host, &k2))).is_forwarded());
    // Later, an unknown kid may cause one refetch; still unknown after it.
    host.advance(Duration::from_secs(31));
    let r = get(&vm, "/orders", Some(&token(&host, &k1)));
    assert!(r.is_paused());
    assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k2]))), 1);
    assert_eq!(r.status(), Some(401));
    assert!(r
        .local_response()
        .unwrap()
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

/// A token exchanged (and cached) while its key is published is refused once a refresh
/// drops the key, although its cached exchange was still within its reuse window; a token
/// of a key the refresh kept is still served from the cache.
#[test]
fn a_rotation_ends_the_cached_exchanges_of_the_dropped_key() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let k2 = Issuer::ed25519(IDP, "k2", 8);
    let vm = started(&host, &fetched_policy(&gw), 1, &[&k1, &k2])[0].clone();
    let old = token(&host, &k1);
    let kept = token(&host, &k2);
    for t in [&old, &kept] {
        assert!(get(&vm, "/orders", Some(t)).is_forwarded());
    }
    host.clear_logs();
    for t in [&old, &kept] {
        assert!(get(&vm, "/orders", Some(t)).is_forwarded());
    }
    let caches: Vec<Value> = audits(&host).iter().map(|a| a["cache"].clone()).collect();
    assert_eq!(caches, [json!("hit"), json!("hit")]);

    // The refresh (60 s) drops k1; the orders rule mints for 60 s, reused for 30 s: move
    // to just before the refresh, exchange both again, then let the refresh happen.
    host.advance(Duration::from_secs(59));
    for t in [&old, &kept] {
        assert!(get(&vm, "/orders", Some(t)).is_forwarded());
    }
    host.advance(Duration::from_secs(1));
    host.tick().unwrap();
    assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k2]))), 1);
    host.tick().unwrap();
    host.clear_logs();
    let r = get(&vm, "/orders", Some(&old));
    assert_eq!(r.status(), Some(401));
    let r = get(&vm, "/orders", Some(&kept));
    assert!(r.is_forwarded());
    let lines = audits(&host);
    assert_eq!(lines[0]["reason"], "unknown_key");
    assert_eq!(lines[0]["cache"], "miss");
    assert_eq!(lines[1]["reason"], "exchanged");
    assert_eq!(lines[1]["cache"], "hit");
}

#[test]
fn kid_spraying_causes_a_bounded_number_of_fetches() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let vm = started(&host, &fetched_policy(&gw), 1, &[&k1])[0].clone();
    let mut fetches = 0;
    let mut refused_at_once = 0;
    // 1,000 requests over 100 s, each naming a new kid.
    for i in 0..1000u32 {
        host.advance(Duration::from_millis(100));
        let sprayer = Issuer::ed25519(IDP, &format!("spray-{i}"), 99);
        let r = get(&vm, "/orders", Some(&token(&host, &sprayer)));
        if r.is_paused() {
            fetches += answer_all(&host, &json_answer(&keys_doc(&[&k1])));
        } else {
            refused_at_once += 1;
        }
        assert_eq!(r.status(), Some(401), "request {i}");
        if i % 5 == 0 {
            host.tick().unwrap();
            fetches += answer_all(&host, &json_answer(&keys_doc(&[&k1])));
        }
    }
    // One refetch per 30 s at most (a scheduled refresh counts as an attempt too).
    assert!(fetches <= 4, "{fetches} fetches");
    assert!(refused_at_once >= 996, "{refused_at_once}");
    let reasons: Vec<Value> = audits(&host).iter().map(|a| a["reason"].clone()).collect();
    assert!(reasons.iter().all(|r| r == "unknown_key"), "{reasons:?}");
    assert!(get(&vm, "/orders", Some(&token(&host, &k1))).is_forwarded());
}

/// Kinds of outage, as each host reports them.
fn outages() -> Vec<(&'static str, Option<HttpCallResponse>)> {
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let oversized = format!("{}{}", keys_doc(&[&k1]), " ".repeat(5000));
    vec![
        // The call fails: connection refused (no headers at all).
        ("connection", Some(HttpCallResponse::default())),
        // Kong's timeout: no :status, a dispatch status.
        (
            "kong timeout",
            Some(HttpCallResponse::default().header(":dispatch_status", "timeout")),
        ),
        // Envoy's timeout and connection failures: made-up 504/503 with a text body.
        (
            "5xx",
            Some(
                HttpCallResponse::status(503)
                    .header("content-type", "text/plain")
                    .body("upstream connect error"),
            ),
        ),
        (
            "redirect",
            Some(HttpCallResponse::status(302).header("location", "https://evil.test/keys")),
        ),
        (
            "not json",
            Some(
                HttpCallResponse::status(200)
                    .header("content-type", "text/html")
                    .body("<html>maintenance</html>"),
            ),
        ),
        ("oversized", Some(json_answer(&oversized))),
        (
            "no usable key",
            Some(json_answer(
                r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#,
            )),
        ),
        ("truncated", Some(json_answer(&keys_doc(&[&k1])[..40]))),
        // Hanging: never answered; the filter's own deadline ends it.
        ("hanging", None),
    ]
}

#[test]
fn every_outage_keeps_the_last_keys_until_stale_then_recovers() {
    for (kind, outage) in outages() {
        for host in [Host::envoy(), Host::kong()] {
            let profile = host.profile();
            let gw = Gateway::new();
            let k1 = Issuer::ed25519(IDP, "k1", 7);
            let vm = started(&host, &fetched_policy(&gw), 1, &[&k1])[0].clone();
            let mut attempts = std::collections::BTreeSet::new();
            let mut unavailable = None;
            let mut requests: Vec<(u64, Request)> = Vec::new();
            let answer = |host: &Host, attempts: &mut std::collections::BTreeSet<u32>| {
                for c in calls(host) {
                    // A hanging call stays pending at the host: count it once.
                    attempts.insert(c.token);
                    if let Some(response) = &outage {
                        host.answer_http_call(c.token, response.clone()).unwrap();
                    }
                }
            };
            // 1 s steps through the outage, with a request each time (a request may wait
            // for an attempt it started, or one in flight).
            for step in 1..=200u64 {
                host.advance(Duration::from_secs(1));
                host.tick().unwrap();
                answer(&host, &mut attempts);
                requests.push((step, get(&vm, "/orders", Some(&token(&host, &k1)))));
                answer(&host, &mut attempts);
                requests.retain(|(sent, r)| {
                    if r.is_paused() {
                        return true;
                    }
                    match r.status() {
                        Some(200) => assert!(*sent < 180, "{kind} {profile:?}: sent at {sent}"),
                        Some(503) => {
                            assert!(*sent >= 180, "{kind} {profile:?}: 503 for {sent}");
                            unavailable.get_or_insert(*sent);
                            let local = r.local_response().unwrap();
                            assert_eq!(local.header("retry-after"), Some("30"));
                            assert!(local.header("www-authenticate").is_none());
                            assert!(local.body_str().contains("temporarily_unavailable"));
                        }
                        other => panic!("{kind} {profile:?}: {other:?} {:?}", r.local_response()),
                    }
                    false
                });
            }
            // Only hanging calls leave requests waiting, and never forwarded.
            assert!(requests.iter().all(|(_, r)| !r.is_forwarded()));
            // The last success was at NOW: usable until NOW + 180.
            assert_eq!(unavailable, Some(180), "{kind} {profile:?}");
            // Back-off: far fewer attempts than seconds (refresh at 60, then 1, 2, 4, ... s).
            let attempts = attempts.len();
            assert!(
                (4..=14).contains(&attempts),
                "{kind} {profile:?}: {attempts}"
            );
            let w = warnings(&host);
            // One line when fetching starts failing, one when the keys become unavailable;
            // never one per request or per attempt.
            assert_eq!(w.len(), 2, "{kind} {profile:?}: {w:#?}");
            assert!(w[0].contains(IDP) && w[0].contains("failed"), "{w:?}");
            assert!(
                w[1].contains("unavailable") && w[1].contains("issuer_keys_unavailable"),
                "{w:?}"
            );
            let a = audits(&host);
            assert_eq!(a.last().unwrap()["reason"], "issuer_keys_unavailable");
            assert_eq!(a.last().unwrap()["status"], 503);

            // Recovery: the next attempt succeeds, requests are exchanged again (answers to
            // calls given up long ago change nothing).
            let given_up = calls(&host);
            for c in &given_up {
                host.answer_http_call(c.token, json_answer(&keys_doc(&[&k1])))
                    .unwrap();
            }
            assert_eq!(
                get(&vm, "/orders", Some(&token(&host, &k1))).status(),
                Some(503)
            );
            host.clear_logs();
            let mut recovered = false;
            for _ in 0..120 {
                host.advance(Duration::from_secs(1));
                host.tick().unwrap();
                if answer_all(&host, &json_answer(&keys_doc(&[&k1]))) > 0 {
                    recovered = true;
                    break;
                }
            }
            assert!(
                recovered,
                "{kind} {profile:?}: no retry within the back-off cap"
            );
            assert!(get(&vm, "/orders", Some(&token(&host, &k1))).is_forwarded());
            assert!(
                host.logs()
                    .iter()
                    .any(|l| l.level == LogLevel::Info && l.message.contains("recovered")),
                "{kind} {profile:?}"
            );
            assert!(warnings(&host).is_empty());
        }
    }
}

#[test]
fn the_failing_cause_is_named_once_per_change() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let _vm = started(&host, &fetched_policy(&gw), 1, &[&k1]);
    host.advance(Duration::from_secs(61));
    host.tick().unwrap();
    let status = |s: u16| HttpCallResponse::status(s).header("content-type", "text/plain");
    assert_eq!(answer_all(&host, &status(500)), 1);
    for s in [500, 500, 404] {
        host.advance(Duration::from_secs(20));
        host.tick().unwrap();
        assert_eq!(answer_all(&host, &status(s)), 1);
    }
    let w = warnings(&host);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains("HTTP 500"), "{w:?}");
    assert!(w[1].contains("HTTP 404"), "{w:?}");
}

#[test]
fn until_the_first_success_the_issuer_is_refused() {
    for host in [Host::envoy(), Host::kong()] {
        let gw = Gateway::new();
        let k1 = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &fetched_policy(&gw));
        host.tick().unwrap();
        let c = calls(&host).remove(0);
        host.fail_http_call(c.token).unwrap();
        let w = warnings(&host);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("unavailable") && w[0].contains("connection failed"),
            "{w:?}"
        );
        // Refused at once (the retry is not due), not waited for.
        let r = get(&vm, "/orders", Some(&token(&host, &k1)));
        assert_eq!(r.status(), Some(503));
        assert!(calls(&host).is_empty());
    }
}

#[test]
fn inline_and_fetched_keys_together() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let inline = Issuer::ed25519(IDP, "pinned", 5);
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let mut doc = fetched_policy(&gw);
    doc["trusted_issuers"][0]["jwks"] = json!({ "keys": [inline.public_jwk()] });
    let vm = loaded(&host, &doc);
    // The inline key works before anything is fetched, and while nothing can be.
    assert!(get(&vm, "/orders", Some(&token(&host, &inline))).is_forwarded());
    host.tick().unwrap();
    host.fail_http_call(calls(&host)[0].token).unwrap();
    assert!(get(&vm, "/orders", Some(&token(&host, &inline))).is_forwarded());
    assert_eq!(
        get(&vm, "/orders", Some(&token(&host, &k1))).status(),
        Some(503)
    );
}

#[test]
fn several_vms_share_one_fetch() {
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let gw = Gateway::new();
        let k1 = Issuer::ed25519(IDP, "k1", 7);
        let k2 = Issuer::ed25519(IDP, "k2", 8);
        host.set_unix_time(NOW);
        let vms = host
            .load_workers(&wasm(), fetched_policy(&gw).to_string().as_bytes(), 3)
            .unwrap();
        host.tick().unwrap();
        let pending = calls(&host);
        assert_eq!(pending.len(), 1, "{profile:?}: one fetch for three VMs");
        host.answer_http_call(pending[0].token, json_answer(&keys_doc(&[&k1])))
            .unwrap();
        // The other VMs take the shared set: at their next tick, or at once when a request
        // needs it.
        for vm in &vms {
            let r = get(vm, "/orders", Some(&token(&host, &k1)));
            assert!(
                r.is_forwarded(),
                "{profile:?} vm {}: {:?}",
                vm.index(),
                r.local_response()
            );
        }
        assert!(calls(&host).is_empty());
        // One refresh for all, too; and a rotation seen by one VM serves the others.
        host.advance(Duration::from_secs(61));
        host.tick().unwrap();
        assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k1, &k2]))), 1);
        host.tick().unwrap();
        for vm in &vms {
            assert!(
                get(vm, "/orders", Some(&token(&host, &k2))).is_forwarded(),
                "{profile:?}"
            );
        }
        assert!(calls(&host).is_empty(), "{profile:?}: nobody refetched");
        // One VM's refetch for an unknown kid serves the VM that waits for it.
        host.advance(Duration::from_secs(31));
        let k3 = Issuer::ed25519(IDP, "k3", 9);
        let first = get(&vms[0], "/orders", Some(&token(&host, &k3)));
        let second = get(&vms[1], "/orders", Some(&token(&host, &k3)));
        assert!(first.is_paused() && second.is_paused(), "{profile:?}");
        assert_eq!(
            answer_all(&host, &json_answer(&keys_doc(&[&k2, &k3]))),
            1,
            "{profile:?}"
        );
        assert!(first.is_forwarded(), "{profile:?}");
        host.tick().unwrap();
        assert!(
            second.is_forwarded(),
            "{profile:?}: {:?}",
            second.local_response()
        );
    }
}

#[test]
fn apisix_each_vm_fetches_for_itself_from_requests() {
    let host = Host::apisix();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    host.set_unix_time(NOW);
    let vms = host
        .load_workers(&wasm(), fetched_policy(&gw).to_string().as_bytes(), 2)
        .unwrap();
    assert_eq!(vms[0].tick_period(), None, "no timer on APISIX");
    host.tick().unwrap();
    assert!(calls(&host).is_empty());
    for vm in &vms {
        let r = get(vm, "/orders", Some(&token(&host, &k1)));
        assert!(r.is_paused());
        let pending = calls(&host);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].vm, vm.index());
        assert_eq!(pending[0].context_id, r.context_id());
        host.answer_http_call(pending[0].token, json_answer(&keys_doc(&[&k1])))
            .unwrap();
        assert!(r.is_forwarded());
    }
    assert!(warnings(&host).iter().any(|w| w.contains("no shared data")));
    // Refreshes come from requests too: the first one after the interval waits for it.
    host.advance(Duration::from_secs(61));
    let r = get(&vms[0], "/orders", Some(&token(&host, &k1)));
    assert!(r.is_paused());
    assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k1]))), 1);
    assert!(r.is_forwarded());
    assert!(get(&vms[0], "/orders", Some(&token(&host, &k1))).is_forwarded());
    assert!(calls(&host).is_empty());
    // A failed refresh does not refuse the request: the keys are still fresh.
    host.advance(Duration::from_secs(61));
    let r = get(&vms[0], "/orders", Some(&token(&host, &k1)));
    host.fail_http_call(calls(&host)[0].token).unwrap();
    assert!(r.is_forwarded());
}

#[test]
fn a_hanging_endpoint_is_given_up_at_the_deadline() {
    let host = Host::kong();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let vm = loaded(&host, &fetched_policy(&gw));
    host.tick().unwrap();
    let hanging = calls(&host).remove(0);
    let r = get(&vm, "/orders", Some(&token(&host, &k1)));
    assert!(r.is_paused());
    // Kong's timeout is per socket operation: the filter keeps its own.
    host.advance(Duration::from_millis(2400));
    host.tick().unwrap();
    assert!(r.is_paused());
    host.advance(Duration::from_millis(200));
    host.tick().unwrap();
    assert_eq!(r.status(), Some(503));
    assert!(warnings(&host)
        .iter()
        .any(|w| w.contains("jwks_timeout_ms")));
    // The late answer is ignored (its token is forgotten): no trap, no effect.
    host.answer_http_call(hanging.token, json_answer(&keys_doc(&[&k1])))
        .unwrap();
    assert_eq!(
        get(&vm, "/orders", Some(&token(&host, &k1))).status(),
        Some(503)
    );
}

#[test]
fn a_resumed_request_the_host_will_not_continue_is_refused() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let vm = loaded(&host, &fetched_policy(&gw));
    host.tick().unwrap();
    let r = get(&vm, "/orders", Some(&token(&host, &k1)));
    assert!(r.is_paused());
    host.inject_fault("proxy_continue_stream", 10);
    assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k1]))), 1);
    host.clear_faults();
    assert_eq!(r.status(), Some(500));
    assert!(!r.is_forwarded());
    let a = audits(&host);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["reason"], "internal_error");
    assert!(a[0].get("minted_jti").is_none());
}

#[test]
fn answers_to_unknown_calls_never_let_a_request_through() {
    for host in [Host::envoy(), Host::kong()] {
        let gw = Gateway::new();
        let k1 = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &fetched_policy(&gw));
        host.tick().unwrap();
        let r = get(&vm, "/orders", Some(&token(&host, &k1)));
        assert!(r.is_paused());
        // To the root: ignored.
        host.deliver_unknown_http_call_response(&vm, 1, 9999, json_answer("{}"))
            .unwrap();
        assert!(r.is_paused());
        // To the waiting request, for a call it never made: refused.
        host.deliver_unknown_http_call_response(&vm, r.context_id(), 9998, json_answer("{}"))
            .unwrap();
        assert_eq!(r.status(), Some(500));
        assert!(!r.is_forwarded());
        assert_eq!(audits(&host).last().unwrap()["reason"], "internal_error");
        // The real answer still lands; the VM is fine.
        assert_eq!(answer_all(&host, &json_answer(&keys_doc(&[&k1]))), 1);
        assert!(get(&vm, "/orders", Some(&token(&host, &k1))).is_forwarded());
    }
}

#[test]
fn discovery_finds_the_key_set() {
    let host = Host::kong();
    let gw = Gateway::new();
    let k1 = Issuer::ed25519("https://idp.test/realms/demo", "k1", 7);
    let mut issuer = fetched_issuer();
    issuer["issuer"] = json!(k1.iss);
    issuer.as_object_mut().unwrap().remove("jwks_uri");
    issuer["discovery"] = json!(true);
    let mut doc = fetched_policy(&gw);
    doc["trusted_issuers"] = json!([issuer]);
    let vm = loaded(&host, &doc);
    host.tick().unwrap();
    let c = calls(&host).remove(0);
    assert_eq!(
        c.header(":path"),
        Some("/realms/demo/.well-known/openid-configuration")
    );
    // Another issuer in the document: refused (OIDC Discovery 4.3).
    host.answer_http_call(
        c.token,
        json_answer(
            r#"{"issuer":"https://idp.test/realms/other","jwks_uri":"https://idp.test/certs"}"#,
        ),
    )
    .unwrap();
    assert!(calls(&host).is_empty());
    assert!(
        warnings(&host)[0].contains("another issuer"),
        "{:?}",
        warnings(&host)
    );
    host.advance(Duration::from_secs(2));
    host.tick().unwrap();
    let c = calls(&host).remove(0);
    let found = json!({"issuer": k1.iss, "jwks_uri": "https://keys.idp.test/realms/demo/certs"});
    host.answer_http_call(c.token, json_answer(&found.to_string()))
        .unwrap();
    let c = calls(&host).remove(0);
    assert_eq!(c.header(":authority"), Some("keys.idp.test"));
    assert_eq!(c.header(":path"), Some("/realms/demo/certs"));
    host.answer_http_call(c.token, json_answer(&keys_doc(&[&k1])))
        .unwrap();
    let t = format!("Bearer {}", k1.sign(&k1.claims(now(&host), "orders:read")));
    assert!(get(&vm, "/orders", Some(&t)).is_forwarded());
}

fn jwks_get(vm: &Vm, path: &str) -> wasm_test_harness::LocalResponse {
    get(vm, path, None)
        .local_response()
        .expect("answered by the filter")
}

fn published_policy(gw_keys: Value) -> Value {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["signing_keys"] = gw_keys;
    doc["jwks_path"] = json!(JWKS_PATH);
    doc["discovery_path"] = json!("/.well-known/openid-configuration");
    doc["jwks_max_age_seconds"] = json!(120);
    doc
}

/// Verifies a minted token against a published key set (jwt-simple: an independent
/// verifier), returning its `kid`.
fn verify_with_jwks(token: &str, jwks: &Value, at: u64) -> String {
    let (header, _) = minted_token_parts(token);
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not published in {jwks}"));
    let opts = VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(at)),
        ..Default::default()
    };
    let ok = match jwk["kty"].as_str().unwrap() {
        "OKP" => Ed25519PublicKey::from_jwk(&jwk.to_string())
            .unwrap()
            .verify_token::<Value>(token, Some(opts))
            .is_ok(),
        "EC" => ES256PublicKey::from_jwk(&jwk.to_string())
            .unwrap()
            .verify_token::<Value>(token, Some(opts))
            .is_ok(),
        other => panic!("{other}"),
    };
    assert!(ok, "{kid} does not verify");
    kid.to_owned()
}

fn exchanged_token(host: &Host, vm: &Vm) -> String {
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let r = get(vm, "/orders", Some(&token(host, &idp)));
    let auth = r
        .forwarded_header("authorization")
        .unwrap_or_else(|| panic!("{:?}", r.local_response()));
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

#[test]
fn the_published_jwks_and_openid_configuration() {
    let host = Host::envoy();
    host.set_unix_time(NOW);
    let gw = Gateway::new();
    let hs = Gateway::with_alg("HS256", "shared-secret");
    let mut doc = published_policy(json!([gw.private_jwk(), hs.private_jwk()]));
    doc["allow_hs256_signing"] = json!(true);
    let vm = host.load(&wasm(), doc.to_string().as_bytes()).unwrap();
    // Inline keys only: no timer is asked for (nothing to fetch).
    assert_eq!(vm.tick_period(), None);
    host.clear_logs();
    let r = jwks_get(&vm, JWKS_PATH);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=120"));
    let jwks: Value = serde_json::from_slice(&r.body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "the HS256 key is never published: {jwks}");
    assert_eq!(keys[0]["kid"], "gw-1");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(keys[0].get(private).is_none(), "{private}");
    }
    let a = audits(&host);
    assert_eq!(a[0]["decision"], "serve");
    assert_eq!(a[0]["reason"], "jwks");
    assert_eq!(a[0]["status"], 200);
    // The query string does not change the path; other methods: 405.
    assert_eq!(jwks_get(&vm, "/.well-known/jwks.json?x=1").status, 200);
    for method in ["POST", "HEAD", "DELETE"] {
        let r = vm.send(RequestSpec::new(&[
            (":method", method),
            (":path", JWKS_PATH),
        ]));
        let l = r.local_response().unwrap();
        assert_eq!(l.status, 405, "{method}");
        assert_eq!(l.header("allow"), Some("GET"));
    }
    let d = jwks_get(&vm, "/.well-known/openid-configuration");
    assert_eq!(d.status, 200);
    let conf: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        conf,
        json!({"issuer": "https://gateway.test", "jwks_uri": "https://gateway.test/.well-known/jwks.json"})
    );
    // A Host header changes nothing.
    let spoofed = vm.send(RequestSpec::new(&[
        (":method", "GET"),
        (":path", "/.well-known/openid-configuration"),
        ("host", "evil.example"),
    ]));
    assert_eq!(spoofed.local_response().unwrap().body, d.body);
    // Other paths are not served.
    assert_eq!(
        get(&vm, "/.well-known/jwks.jsonx", None).status(),
        Some(403)
    );
}

#[test]
fn generated_keys_are_shared_by_every_vm() {
    for host in [Host::envoy(), Host::kong()] {
        for alg in ["EdDSA", "ES256"] {
            let profile = host.profile();
            host.set_unix_time(NOW);
            let doc = published_policy(json!([{ "generate": alg, "kid": format!("gen-{alg}") }]));
            let vms = host
                .load_workers(&wasm(), doc.to_string().as_bytes(), 3)
                .unwrap();
            let bodies: Vec<Vec<u8>> = vms.iter().map(|vm| jwks_get(vm, JWKS_PATH).body).collect();
            assert!(
                bodies.iter().all(|b| *b == bodies[0]),
                "{profile:?} {alg}: one key set"
            );
            let jwks: Value = serde_json::from_slice(&bodies[0]).unwrap();
            assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
            assert!(jwks["keys"][0].get("d").is_none());
            assert_eq!(jwks["keys"][0]["alg"], alg);
            // Every VM signs with that key.
            for vm in &vms {
                let t = exchanged_token(&host, vm);
                assert_eq!(verify_with_jwks(&t, &jwks, NOW), format!("gen-{alg}"));
            }
            // A VM loaded later, and a configuration update, adopt the same key.
            let late = host.load(&wasm(), doc.to_string().as_bytes()).unwrap();
            assert_eq!(jwks_get(&late, JWKS_PATH).body, bodies[0]);
            vms[0].reconfigure(doc.to_string().as_bytes()).unwrap();
            assert_eq!(jwks_get(&vms[0], JWKS_PATH).body, bodies[0]);
            assert!(
                host.logs()
                    .iter()
                    .filter(|l| l.message.contains("generated and shared"))
                    .count()
                    == 1,
                "{profile:?} {alg}: generated once"
            );
            host.clear_logs();
        }
    }
    // APISIX has no shared data: each worker has its own key (documented).
    let host = Host::apisix();
    let doc = published_policy(json!([{ "generate": "EdDSA", "kid": "gen" }]));
    let vms = host
        .load_workers(&wasm(), doc.to_string().as_bytes(), 2)
        .unwrap();
    assert_ne!(
        jwks_get(&vms[0], JWKS_PATH).body,
        jwks_get(&vms[1], JWKS_PATH).body
    );
    assert!(host
        .logs()
        .iter()
        .any(|l| l.message.contains("for this worker only")));
}

#[test]
fn signing_keys_rotate_by_configuration_update() {
    let host = Host::envoy();
    host.set_unix_time(NOW);
    let k1 = Gateway::with_alg("EdDSA", "gw-1");
    let k2 = Gateway::with_alg("ES256", "gw-2");
    let with_state = |g: &Gateway, state: &str| {
        let mut jwk = g.private_jwk();
        jwk["state"] = json!(state);
        jwk
    };
    let vms = host
        .load_workers(
            &wasm(),
            published_policy(json!([k1.private_jwk()]))
                .to_string()
                .as_bytes(),
            2,
        )
        .unwrap();
    let before = exchanged_token(&host, &vms[0]);
    // Announce k2 before it signs.
    let announce = published_policy(json!([
        with_state(&k1, "active"),
        with_state(&k2, "published")
    ]));
    for vm in &vms {
        vm.reconfigure(announce.to_string().as_bytes()).unwrap();
    }
    let jwks: Value = serde_json::from_slice(&jwks_get(&vms[1], JWKS_PATH).body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        verify_with_jwks(&exchanged_token(&host, &vms[1]), &jwks, NOW),
        "gw-1"
    );
    // Switch: k2 signs, k1 retired now; tokens k1 signed still verify.
    host.advance(Duration::from_secs(10));
    let mut retired = with_state(&k1, "retired");
    retired["retired_at"] = json!(NOW + 10);
    let switch = published_policy(json!([retired, with_state(&k2, "active")]));
    for vm in &vms {
        vm.reconfigure(switch.to_string().as_bytes()).unwrap();
    }
    let jwks: Value = serde_json::from_slice(&jwks_get(&vms[0], JWKS_PATH).body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let after = exchanged_token(&host, &vms[0]);
    assert_eq!(verify_with_jwks(&after, &jwks, NOW + 10), "gw-2");
    assert_eq!(verify_with_jwks(&before, &jwks, NOW + 10), "gw-1");
    // The longest ttl_seconds of the policy (60) after retirement, k1 is no longer published.
    host.advance(Duration::from_secs(59));
    let jwks: Value = serde_json::from_slice(&jwks_get(&vms[1], JWKS_PATH).body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    host.advance(Duration::from_secs(1));
    let jwks: Value = serde_json::from_slice(&jwks_get(&vms[1], JWKS_PATH).body).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["gw-2"]);
    // A rotation that leaves no active key is refused whole; the previous policy stays.
    let broken = published_policy(json!([
        with_state(&k1, "published"),
        with_state(&k2, "published")
    ]));
    let e = vms[0]
        .reconfigure(broken.to_string().as_bytes())
        .unwrap_err();
    assert!(
        e.logs
            .iter()
            .any(|l| l.message.contains("exactly one key must have state")),
        "{e}"
    );
    assert_eq!(
        verify_with_jwks(&exchanged_token(&host, &vms[0]), &jwks, NOW + 70),
        "gw-2"
    );
}
