//! Token introspection through the built wasm (wasm-test-harness), on Envoy's and Kong's
//! profiles: the call (POST, form body, Basic credentials), the request paused and resumed
//! from `on_http_call_response`, the answer cached (active until min(`exp`,
//! `cache_seconds`), inactive for `negative_cache_seconds`), concurrent requests with one
//! token coalesced onto one call, every kind of failure refused 503 and logged once per
//! change, the filter's own deadline, revocation at the provider, and the secret and the
//! token in no log line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use token_exchange_tests::*;
use wasm_test_harness::{build, Host, HttpCall, HttpCallResponse, Request, RequestSpec, Vm};

const IDP: &str = "https://idp.test";
const UPSTREAM: &str = "idp_introspection";
const OPAQUE: &str = "2YotnFZFEjr1zCsicMWpAA";

fn wasm() -> Vec<u8> {
    build::filter_wasm().expect("filter wasm builds")
}

fn doc(gw: &Gateway, idp: &Issuer) -> Value {
    let trusted = taking_opaque_tokens(
        idp.trusted(&["api"]),
        "https://idp.test/oauth2/introspect",
        UPSTREAM,
    );
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([trusted]);
    doc
}

fn loaded(host: &Host, doc: &Value) -> Vm {
    host.set_unix_time(NOW);
    host.load(&wasm(), doc.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{:?}: {e}", host.profile()))
}

fn now(host: &Host) -> u64 {
    host.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn get(vm: &Vm, token: &str) -> Request {
    vm.send(
        RequestSpec::new(&[
            (":method", "GET"),
            (":path", "/orders/1"),
            (":authority", "api.example.com"),
        ])
        .header("authorization", &format!("Bearer {token}")),
    )
}

fn json_answer(v: &Value) -> HttpCallResponse {
    HttpCallResponse::status(200)
        .header("content-type", "application/json")
        .body(v.to_string())
}

fn active(host: &Host) -> HttpCallResponse {
    json_answer(&active_answer(IDP, now(host), "orders:read"))
}

fn audits(host: &Host) -> Vec<Value> {
    host.logs()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l.message).ok())
        .filter(|v| v["event"] == "token_exchange")
        .collect()
}

fn calls(host: &Host) -> Vec<HttpCall> {
    host.pending_http_calls()
}

fn one_call(host: &Host) -> HttpCall {
    let pending = calls(host);
    assert_eq!(pending.len(), 1, "{:?}", host.profile());
    pending.into_iter().next().unwrap()
}

fn denied(r: &Request) -> (u32, String, Option<String>) {
    let l = r
        .local_response()
        .unwrap_or_else(|| panic!("not answered locally (forwarded: {})", r.is_forwarded()));
    let header = |n: &str| {
        l.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    (l.status, l.body_str(), header("retry-after"))
}

/// Nothing secret in any log line: the token, the client secret, the Basic credentials.
fn assert_no_secret_logged(host: &Host) {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("gateway:{}", form_encoded(INTROSPECTION_SECRET)));
    for l in host.logs() {
        for secret in [OPAQUE, INTROSPECTION_SECRET, basic.as_str(), "secret"] {
            assert!(
                !l.message.contains(secret),
                "{secret:?} logged: {}",
                l.message
            );
        }
    }
}

fn form_encoded(s: &str) -> String {
    token_exchange_filter::core::introspect::form_urlencode(s)
}

#[test]
fn an_opaque_token_is_introspected_then_exchanged_and_cached() {
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let gw = Gateway::new();
        let idp = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &doc(&gw, &idp));
        assert!(
            calls(&host).is_empty(),
            "{profile:?}: no call while configuring"
        );

        let r = get(&vm, OPAQUE);
        assert!(r.is_paused() && !r.is_forwarded(), "{profile:?}");
        assert!(audits(&host).is_empty(), "decided once, after the answer");
        let c = one_call(&host);
        assert_eq!(c.upstream, UPSTREAM);
        assert_eq!(
            c.context_id,
            r.context_id(),
            "from the paused request's context"
        );
        assert_eq!(c.header(":method"), Some("POST"));
        assert_eq!(c.header(":path"), Some("/oauth2/introspect"));
        assert_eq!(c.header(":authority"), Some("idp.test"));
        assert_eq!(c.header(":scheme"), Some("https"));
        assert_eq!(
            c.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(c.timeout, Duration::from_millis(1000));
        let basic = c
            .header("authorization")
            .unwrap()
            .strip_prefix("Basic ")
            .unwrap();
        let creds = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap();
        assert_eq!(
            String::from_utf8(creds).unwrap(),
            format!("gateway:{}", form_encoded(INTROSPECTION_SECRET))
        );
        assert_eq!(
            String::from_utf8(c.body.clone()).unwrap(),
            format!("token={OPAQUE}&token_type_hint=access_token")
        );
        assert_eq!(
            c.header("content-length"),
            Some(c.body.len().to_string().as_str())
        );

        host.answer_http_call(c.token, active(&host)).unwrap();
        let fwd = r
            .forwarded_header("authorization")
            .unwrap_or_else(|| panic!("{profile:?}: {:?}", r.local_response()));
        let (_, claims) = gw.verify(fwd.strip_prefix("Bearer ").unwrap(), now(&host));
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], "orders:read");
        assert_eq!(claims["aud"], "orders-service");
        let a = audits(&host);
        assert_eq!(a.len(), 1, "{profile:?}: one audit line");
        assert_eq!(a[0]["decision"], "allow");
        let digest = token_exchange_filter::core::introspect::TokenDigest::of(OPAQUE);
        assert_eq!(a[0]["token_id"], digest.token_id());

        // Cached: the next request is decided at once, without a call.
        host.advance(Duration::from_secs(30));
        let r = get(&vm, OPAQUE);
        assert!(r.is_forwarded(), "{profile:?}");
        assert!(calls(&host).is_empty());
        // After cache_seconds (60): asked again.
        host.advance(Duration::from_secs(31));
        let r = get(&vm, OPAQUE);
        assert!(r.is_paused());
        let c = one_call(&host);
        host.answer_http_call(c.token, active(&host)).unwrap();
        assert!(r.is_forwarded());
        assert_no_secret_logged(&host);
    }
}

#[test]
fn concurrent_requests_with_one_token_share_one_call() {
    for host in [Host::envoy(), Host::kong()] {
        let gw = Gateway::new();
        let idp = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &doc(&gw, &idp));
        let waiting: Vec<Request> = (0..3).map(|_| get(&vm, OPAQUE)).collect();
        let other = get(&vm, "another-opaque-token");
        assert_eq!(calls(&host).len(), 2, "one per token, not per request");
        let c = calls(&host)
            .into_iter()
            .find(|c| c.body.starts_with(format!("token={OPAQUE}&").as_bytes()))
            .unwrap();
        host.answer_http_call(c.token, active(&host)).unwrap();
        for r in &waiting {
            assert!(r.is_forwarded(), "{:?}", r.local_response());
        }
        assert!(other.is_paused() && !other.is_forwarded());
        assert_eq!(audits(&host).len(), 3);
        let c = one_call(&host);
        host.answer_http_call(c.token, json_answer(&json!({"active": false})))
            .unwrap();
        let (status, body, _) = denied(&other);
        assert_eq!(status, 401);
        assert!(body.contains("invalid_token"), "{body}");
    }
}

#[test]
fn inactive_tokens_are_refused_and_remembered_for_negative_cache_seconds() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let vm = loaded(&host, &doc(&gw, &idp));
    let r = get(&vm, OPAQUE);
    host.answer_http_call(
        one_call(&host).token,
        json_answer(&json!({"active": false})),
    )
    .unwrap();
    let (status, _, _) = denied(&r);
    assert_eq!(status, 401);
    let l = r.local_response().unwrap();
    let challenge = l
        .headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .unwrap();
    assert!(challenge.1.contains("error=\"invalid_token\""));
    assert_eq!(audits(&host)[0]["reason"], "token_inactive");
    // Remembered for 10 s.
    host.advance(Duration::from_secs(9));
    assert_eq!(denied(&get(&vm, OPAQUE)).0, 401);
    assert!(calls(&host).is_empty());
    host.advance(Duration::from_secs(1));
    let r = get(&vm, OPAQUE);
    assert!(r.is_paused());
    host.answer_http_call(one_call(&host).token, active(&host))
        .unwrap();
    assert!(r.is_forwarded());
}

#[test]
fn a_token_revoked_at_the_provider_is_refused_once_its_entry_ends() {
    let host = Host::kong();
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let vm = loaded(&host, &doc(&gw, &idp));
    let r = get(&vm, OPAQUE);
    host.answer_http_call(one_call(&host).token, active(&host))
        .unwrap();
    assert!(r.is_forwarded());
    // Revoked now; the cached answer stands until cache_seconds end.
    host.advance(Duration::from_secs(59));
    assert!(get(&vm, OPAQUE).is_forwarded());
    host.advance(Duration::from_secs(1));
    let r = get(&vm, OPAQUE);
    host.answer_http_call(
        one_call(&host).token,
        json_answer(&json!({"active": false})),
    )
    .unwrap();
    assert_eq!(denied(&r).0, 401);
}

#[test]
fn every_failure_is_a_503_logged_once_per_change() {
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let gw = Gateway::new();
        let idp = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &doc(&gw, &idp));
        let big = json!({"active": true, "pad": "x".repeat(5000)});
        type Answer = Box<dyn Fn(&Host, u32)>;
        let cases: Vec<(&str, Answer)> = vec![
            (
                "http_503",
                Box::new(|h, t| {
                    h.answer_http_call(
                        t,
                        HttpCallResponse::status(503)
                            .header("content-type", "text/plain")
                            .body("upstream connect error"),
                    )
                    .unwrap()
                }),
            ),
            (
                "http_503 again (not logged again)",
                Box::new(|h, t| {
                    h.answer_http_call(t, HttpCallResponse::status(503))
                        .unwrap()
                }),
            ),
            ("no_response", Box::new(|h, t| h.fail_http_call(t).unwrap())),
            (
                "a timeout: no response again (not logged again)",
                Box::new(|h, t| h.time_out_http_call(t).unwrap()),
            ),
            (
                "not_json",
                Box::new(|h, t| {
                    h.answer_http_call(
                        t,
                        HttpCallResponse::status(200)
                            .header("content-type", "text/html")
                            .body("<html>"),
                    )
                    .unwrap()
                }),
            ),
            (
                "too_large",
                Box::new(move |h, t| h.answer_http_call(t, json_answer(&big)).unwrap()),
            ),
            (
                "active missing",
                Box::new(|h, t| {
                    h.answer_http_call(t, json_answer(&json!({"sub": "alice"})))
                        .unwrap()
                }),
            ),
            (
                "active as a string",
                Box::new(|h, t| {
                    h.answer_http_call(t, json_answer(&json!({"active": "true"})))
                        .unwrap()
                }),
            ),
        ];
        for (what, answer) in &cases {
            host.clear_logs();
            let r = get(&vm, OPAQUE);
            answer(&host, one_call(&host).token);
            let (status, body, retry_after) = denied(&r);
            assert_eq!(status, 503, "{profile:?} {what}");
            assert!(body.contains("temporarily_unavailable"), "{what}: {body}");
            assert_eq!(retry_after.as_deref(), Some("1"), "{what}");
            assert!(!r.is_forwarded());
            let a = audits(&host);
            assert_eq!(a.len(), 1);
            assert_eq!(a[0]["reason"], "introspection_unavailable", "{what}");
            let failing: Vec<_> = host
                .logs()
                .into_iter()
                .filter(|l| l.message.contains("introspection endpoint"))
                .collect();
            let expect = usize::from(!what.contains("not logged again"));
            // The last two are both "invalid": one line for both.
            let expect = if *what == "active as a string" {
                0
            } else {
                expect
            };
            assert_eq!(failing.len(), expect, "{profile:?} {what}: {failing:?}");
            assert_no_secret_logged(&host);
        }
        // Failures are not cached: the next request asks, and the recovery is logged once.
        host.clear_logs();
        let r = get(&vm, OPAQUE);
        host.answer_http_call(one_call(&host).token, active(&host))
            .unwrap();
        assert!(r.is_forwarded(), "{profile:?}");
        assert!(host
            .logs()
            .iter()
            .any(|l| l.message.contains("answers again")));
    }
}

#[test]
fn the_filter_gives_up_at_its_own_deadline() {
    for host in [Host::envoy(), Host::kong()] {
        let gw = Gateway::new();
        let idp = Issuer::ed25519(IDP, "k1", 7);
        let vm = loaded(&host, &doc(&gw, &idp));
        assert_eq!(vm.tick_period(), Some(Duration::from_millis(500)));
        let r = get(&vm, OPAQUE);
        let c = one_call(&host);
        // Kong's host may never call back in time: the filter's own deadline (timeout + 0.5 s).
        host.advance(Duration::from_millis(1400));
        host.tick().unwrap();
        assert!(r.is_paused() && r.local_response().is_none());
        host.advance(Duration::from_millis(200));
        host.tick().unwrap();
        assert_eq!(denied(&r).0, 503);
        assert!(host
            .logs()
            .iter()
            .any(|l| l.message.contains("introspection.timeout_ms")));
        // A late answer to the abandoned call is ignored, never a panic.
        host.answer_http_call(c.token, active(&host)).unwrap();
        assert_eq!(audits(&host).len(), 1);
    }
}

#[test]
fn a_refused_dispatch_is_a_503_at_once() {
    let host = Host::envoy();
    host.set_known_upstreams(&["some_other_cluster"]);
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let vm = loaded(&host, &doc(&gw, &idp));
    let r = get(&vm, OPAQUE);
    assert_eq!(denied(&r).0, 503);
    assert!(calls(&host).is_empty());
    assert!(host
        .logs()
        .iter()
        .any(|l| l.message.contains("check introspection.upstream")));
}

#[test]
fn introspected_jwts_wait_for_the_answer_too() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let mut d = doc(&gw, &idp);
    d["trusted_issuers"][0]["opaque_tokens"] = json!(false);
    d["trusted_issuers"][0]["introspect_jwts"] = json!(true);
    let vm = loaded(&host, &d);
    let jwt = idp.sign(&idp.claims(now(&host), "orders:read"));
    let r = get(&vm, &jwt);
    assert!(r.is_paused());
    let c = one_call(&host);
    assert_eq!(
        String::from_utf8(c.body.clone()).unwrap(),
        format!("token={jwt}&token_type_hint=access_token")
    );
    host.answer_http_call(c.token, json_answer(&json!({"active": false})))
        .unwrap();
    assert_eq!(denied(&r).0, 401);
    assert_eq!(audits(&host)[0]["reason"], "token_inactive");
    // Opaque tokens are not this policy's.
    assert_eq!(denied(&get(&vm, OPAQUE)).0, 401);
    assert!(calls(&host).is_empty());
}
