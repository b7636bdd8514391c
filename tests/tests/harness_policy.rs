//! The built filter (release `.wasm`) driven through the ABI by wasm-test-harness: the same
//! policy suite under the Envoy, Kong and APISIX host profiles, time travel, several VMs,
//! configuration errors, the hostile corpus, and one audit line per decision.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_tests::hostile::corpus;
use token_exchange_tests::*;
use wasm_test_harness::{build, Host, HttpCallResponse, LogLevel, Profile, RequestSpec, Vm};

fn wasm() -> Vec<u8> {
    build::filter_wasm().expect("filter wasm builds")
}

struct Fixture {
    host: Host,
    vm: Vm,
    gw: Gateway,
    idp: Issuer,
}

fn fixture(host: Host, doc: Option<Value>) -> Fixture {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let doc = doc.unwrap_or_else(|| policy(&gw, &[&idp], json!([orders_rule()])));
    host.set_unix_time(NOW);
    let vm = host
        .load(&wasm(), doc.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{:?} refused the policy: {e}", host.profile()));
    host.clear_logs();
    Fixture { host, vm, gw, idp }
}

/// The audit records logged so far (JSON lines with `"event":"token_exchange"`).
fn audits(host: &Host) -> Vec<Value> {
    host.logs()
        .into_iter()
        .filter(|l| l.level == LogLevel::Info)
        .filter_map(|l| serde_json::from_str::<Value>(&l.message).ok())
        .filter(|v| v["event"] == "token_exchange")
        .collect()
}

fn get(vm: &Vm, path: &str, authorization: &[&str]) -> wasm_test_harness::Request {
    let mut spec = RequestSpec::new(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
        ("x-forwarded-user", "mallory"),
    ]);
    for a in authorization {
        spec = spec.header("Authorization", a);
    }
    vm.send(spec)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn policy_suite(host: Host) {
    let profile = host.profile();
    let f = fixture(host, None);
    let original = f.idp.sign(&f.idp.claims(NOW, "orders:read profile"));
    let bearer = format!("Bearer {original}");

    // Allowed: forwarded with a minted token in place of the original.
    let r = get(&f.vm, "/orders/7", &[&bearer]);
    let fwd = r
        .forwarded_headers()
        .unwrap_or_else(|| panic!("{profile:?}: {:?}", r.local_response()));
    let auth: Vec<&String> = fwd
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        auth.len(),
        1,
        "{profile:?}: exactly one Authorization forwarded: {fwd:?}"
    );
    let minted = auth[0].strip_prefix("Bearer ").unwrap();
    assert!(
        fwd.iter().all(|(_, v)| !v.contains(&original)),
        "{profile:?}: original forwarded"
    );
    assert!(
        header(&fwd, "x-forwarded-user").is_none(),
        "{profile:?}: strip_headers"
    );
    let (_, claims) = f.gw.verify(minted, NOW);
    assert_eq!(claims["aud"], "orders-service");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["exp"], NOW + 60);

    // Denials: never forwarded, RFC 6750 challenges.
    let expired = f.idp.sign(
        &json!({"exp": NOW - 100, "iat": NOW - 700})
            .as_object()
            .map(|o| {
                let mut c = f.idp.claims(NOW, "orders:read");
                for (k, v) in o {
                    c[k] = v.clone();
                }
                c
            })
            .unwrap(),
    );
    let lacking = f.idp.sign(&f.idp.claims(NOW, "profile"));
    type Case<'a> = (&'a str, Vec<String>, u32, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "/orders",
            vec![],
            401,
            "missing_token",
            Some(r#"Bearer realm="token-exchange""#),
        ),
        (
            "/orders",
            vec![format!("Bearer {expired}")],
            401,
            "token_expired",
            Some(r#"error="invalid_token""#),
        ),
        (
            "/orders",
            vec!["Bearer x.y.z".into()],
            401,
            "malformed_token",
            Some(r#"error="invalid_token""#),
        ),
        (
            "/orders",
            vec![format!("Bearer {lacking}")],
            403,
            "insufficient_scope",
            Some(
                r#"error="insufficient_scope", error_description="token lacks a required scope", scope="orders:read""#,
            ),
        ),
        (
            "/orders",
            vec![bearer.clone(), bearer.clone()],
            400,
            "duplicate_authorization",
            Some(r#"error="invalid_request""#),
        ),
        (
            "/inventory",
            vec![bearer.clone()],
            403,
            "no_matching_rule",
            None,
        ),
    ];
    for (path, auth, status, reason, challenge) in &cases {
        let refs: Vec<&str> = auth.iter().map(String::as_str).collect();
        let r = get(&f.vm, path, &refs);
        assert!(
            r.forwarded_headers().is_none(),
            "{profile:?} {reason}: forwarded"
        );
        let lr = r
            .local_response()
            .unwrap_or_else(|| panic!("{profile:?} {reason}: no local response"));
        assert_eq!(lr.status, *status, "{profile:?} {reason}");
        let www = header(&lr.headers, "www-authenticate").unwrap_or("");
        if let Some(c) = challenge {
            assert!(www.contains(c), "{profile:?} {reason}: {www}");
        }
        assert_eq!(
            header(&lr.headers, "content-type"),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(&lr.body).unwrap();
        assert!(body["error"].is_string());
    }

    // One audit line per decision, in order, never holding a token.
    let lines = audits(&f.host);
    assert_eq!(lines.len(), 1 + cases.len(), "{profile:?}: {lines:#?}");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["rule"], "orders-read");
    assert_eq!(lines[0]["token_id"], format!("orig-{NOW}"));
    assert_eq!(lines[0]["minted_jti"], claims["jti"]);
    assert_eq!(lines[0]["minted_kid"], "gw-1");
    assert_eq!(lines[0]["ts_ms"], NOW * 1000);
    for (line, (_, _, status, reason, _)) in lines[1..].iter().zip(&cases) {
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["reason"], *reason, "{profile:?}");
        assert_eq!(line["status"], *status);
    }
    for l in f.host.logs() {
        assert!(
            !l.message.contains(&original),
            "{profile:?}: token in a log line"
        );
        assert!(
            !l.message.contains(minted),
            "{profile:?}: minted token in a log line"
        );
    }
    if profile == Profile::Envoy {
        assert!(
            lines[0]["request_id"].is_string(),
            "Envoy adds x-request-id"
        );
    }
}

#[test]
fn policy_suite_under_envoy() {
    policy_suite(Host::envoy());
}

#[test]
fn policy_suite_under_kong() {
    policy_suite(Host::kong());
}

#[test]
fn policy_suite_under_apisix() {
    policy_suite(Host::apisix());
}

#[test]
fn hostile_corpus_is_refused_and_the_vm_survives() {
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let f = fixture(host, None);
        let other = Issuer::ed25519("https://attacker.example", "attacker-key-1", 66);
        let valid = format!("Bearer {}", f.idp.sign(&f.idp.claims(NOW, "orders:read")));
        let cases = corpus(&f.idp, &other, NOW);
        assert!(cases.len() > 40, "corpus too small: {}", cases.len());
        for case in &cases {
            f.host.clear_logs();
            let refs: Vec<&str> = case.authorization.iter().map(String::as_str).collect();
            let r = get(&f.vm, "/orders", &refs);
            let status = match r.local_response() {
                Some(lr) => lr.status as u16,
                None => 200,
            };
            assert_eq!(status, case.expected_status, "{profile:?} {}", case.name);
            if case.expected_status != 200 {
                assert!(
                    r.forwarded_headers().is_none(),
                    "{profile:?} {}: forwarded",
                    case.name
                );
            } else {
                // What the wasm minted: strict JSON, verified with the gateway key.
                let fwd = r.forwarded_headers().unwrap();
                let minted = header(&fwd, "authorization").unwrap();
                f.gw.verify(minted.strip_prefix("Bearer ").unwrap(), NOW);
            }
            let lines = audits(&f.host);
            assert_eq!(lines.len(), 1, "{profile:?} {}", case.name);
            assert_eq!(
                lines[0]["reason"], case.expected_reason,
                "{profile:?} {}",
                case.name
            );
            // The VM is alive and still exchanges a valid token.
            let ok = get(&f.vm, "/orders", &[&valid]);
            assert!(
                ok.is_forwarded(),
                "{profile:?} after {}: {:?}",
                case.name,
                ok.local_response()
            );
        }
    }
}

#[test]
fn time_travel_expires_a_token_mid_test() {
    let f = fixture(Host::envoy(), None);
    let mut claims = f.idp.claims(NOW, "orders:read");
    claims["exp"] = json!(NOW + 100);
    let t = format!("Bearer {}", f.idp.sign(&claims));
    assert!(get(&f.vm, "/orders", &[&t]).is_forwarded());
    f.host.advance(Duration::from_secs(99));
    let r = get(&f.vm, "/orders", &[&t]);
    let fwd = r.forwarded_headers().unwrap();
    let minted = header(&fwd, "authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let (_, c) = f.gw.verify(&minted, NOW + 99);
    assert_eq!(c["exp"], NOW + 100, "never outlives the original");
    // At exp: within skew, but nothing left to grant.
    f.host.advance(Duration::from_secs(1));
    assert_eq!(get(&f.vm, "/orders", &[&t]).status(), Some(401));
    // At exp + skew: refused by validation.
    f.host.advance(Duration::from_secs(30));
    assert_eq!(get(&f.vm, "/orders", &[&t]).status(), Some(401));
    let reasons: Vec<Value> = audits(&f.host)
        .iter()
        .map(|l| l["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec!["exchanged", "exchanged", "token_expired", "token_expired"]
    );

    // nbf exactly at the skew boundary.
    let mut claims = f.idp.claims(NOW, "orders:read");
    let now = NOW + 130;
    claims["nbf"] = json!(now + 30);
    claims["exp"] = json!(now + 600);
    let t = format!("Bearer {}", f.idp.sign(&claims));
    assert!(get(&f.vm, "/orders", &[&t]).is_forwarded());
    claims["nbf"] = json!(now + 31);
    let t = format!("Bearer {}", f.idp.sign(&claims));
    assert_eq!(get(&f.vm, "/orders", &[&t]).status(), Some(401));
}

/// With the cache off, every request of every VM mints its own token (one fresh `jti` per
/// request, across VMs too).
#[test]
fn several_vms_decide_alike_and_mint_distinct_ids() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let host = Host::envoy();
    host.set_unix_time(NOW);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["cache"] = json!({"enabled": false});
    let vms = host
        .load_workers(&wasm(), doc.to_string().as_bytes(), 2)
        .unwrap();
    host.clear_logs();
    let t = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    let mut jtis = Vec::new();
    for vm in &vms {
        for _ in 0..3 {
            assert!(get(vm, "/orders", &[&t]).is_forwarded());
            assert_eq!(get(vm, "/orders", &[]).status(), Some(401));
        }
    }
    let lines = audits(&host);
    assert_eq!(lines.len(), 12);
    for l in &lines {
        if l["decision"] == "allow" {
            jtis.push(l["minted_jti"].as_str().unwrap().to_owned());
        }
    }
    let before = jtis.len();
    assert_eq!(before, 6);
    jtis.sort();
    jtis.dedup();
    assert_eq!(jtis.len(), before, "every minted jti is unique across VMs");
    assert!(lines.iter().all(|l| l["cache"] == "miss"));
    let per_vm: Vec<usize> = (0..2)
        .map(|i| {
            host.logs()
                .iter()
                .filter(|l| {
                    l.vm == vms[i].index() && l.message.contains("\"event\":\"token_exchange\"")
                })
                .count()
        })
        .collect();
    assert_eq!(per_vm, vec![6, 6]);
}

#[test]
fn configuration_errors_are_refused_and_a_bad_update_keeps_the_old_policy() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let host = Host::envoy();
    let mut bad = policy(&gw, &[&idp], json!([orders_rule()]));
    bad["rules"][0]["mint"]["ttl_seconds"] = json!(0);
    bad["clock_skew_seconds"] = json!(1000);
    let err = host
        .load(&wasm(), bad.to_string().as_bytes())
        .err()
        .expect("refused");
    let text = format!("{err} {:?}", host.logs());
    assert!(
        text.contains("rules[0].mint.ttl_seconds: must be an integer between 1 and 86400"),
        "{text}"
    );
    assert!(
        text.contains("clock_skew_seconds: must be an integer between 0 and 300"),
        "{text}"
    );

    let f = fixture(Host::envoy(), None);
    let t = format!("Bearer {}", f.idp.sign(&f.idp.claims(NOW, "orders:read")));
    assert!(f.vm.reconfigure(bad.to_string().as_bytes()).is_err());
    assert!(f.vm.reconfigure(b"not json").is_err());
    assert!(f
        .host
        .logs()
        .iter()
        .any(|l| l.message.contains("previous policy stays in force")));
    assert!(
        get(&f.vm, "/orders", &[&t]).is_forwarded(),
        "old policy still in force"
    );

    // A good update takes effect.
    let mut narrower = policy(&f.gw, &[&f.idp], json!([orders_rule()]));
    narrower["rules"][0]["require"]["scopes"] = json!(["orders:admin"]);
    f.vm.reconfigure(narrower.to_string().as_bytes()).unwrap();
    assert_eq!(get(&f.vm, "/orders", &[&t]).status(), Some(403));
}

#[test]
fn rules_bind_to_envoy_route_names() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut rule = orders_rule();
    rule["match"] = json!({"route": "orders-route"});
    let doc = policy(&gw, &[&idp], json!([rule]));
    let t = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        let f = fixture(host, Some(doc.clone()));
        let spec = |route: &str| {
            RequestSpec::new(&[
                (":method", "GET"),
                (":path", "/anything"),
                (":authority", "a"),
            ])
            .header("authorization", &t)
            .property("xds.route_name", route.as_bytes().to_vec())
        };
        let r = f.vm.send(spec("orders-route"));
        if profile == Profile::Envoy {
            assert!(r.is_forwarded(), "{:?}", r.local_response());
        }
        assert_eq!(f.vm.send(spec("other")).status(), Some(403), "{profile:?}");
    }
}

#[test]
fn apisix_without_host_time_uses_the_wasi_clock() {
    // APISIX lacks proxy_get_current_time_nanoseconds; the filter falls back to WASI's clock,
    // which the harness keeps on the same test clock: expiry must still be enforced.
    let f = fixture(Host::apisix(), None);
    let mut claims = f.idp.claims(NOW, "orders:read");
    claims["exp"] = json!(NOW + 10);
    let t = format!("Bearer {}", f.idp.sign(&claims));
    assert!(get(&f.vm, "/orders", &[&t]).is_forwarded());
    f.host.advance(Duration::from_secs(60));
    assert_eq!(get(&f.vm, "/orders", &[&t]).status(), Some(401));
}

/// A host call failing on the request path turns the decision into a 500 deny: nothing is
/// forwarded, the VM does not trap, and the audit says internal_error.
#[test]
fn host_faults_fail_closed() {
    const INTERNAL_FAILURE: i32 = 10;
    const WASI_EIO: i32 = 29;
    let f = fixture(Host::envoy(), None);
    let t = format!("Bearer {}", f.idp.sign(&f.idp.claims(NOW, "orders:read")));
    // `t` is exchanged once, so it is cached; each fault is tried on a fresh token (a cache
    // miss: verify and mint) and on `t` (a hit).
    assert!(get(&f.vm, "/orders", &[&t]).is_forwarded());
    for (i, (function, status)) in [
        ("proxy_replace_header_map_value", INTERNAL_FAILURE),
        ("proxy_remove_header_map_value", INTERNAL_FAILURE),
        ("proxy_get_header_map_pairs", INTERNAL_FAILURE),
        ("random_get", WASI_EIO),
    ]
    .into_iter()
    .enumerate()
    {
        let mut claims = f.idp.claims(NOW, "orders:read");
        claims["jti"] = json!(format!("fresh-{i}"));
        let fresh = format!("Bearer {}", f.idp.sign(&claims));
        for (token, kind) in [(&fresh, "miss"), (&t, "hit")] {
            f.host.clear_logs();
            f.host.inject_fault(function, status);
            let r = get(&f.vm, "/orders", &[token]);
            f.host.clear_faults();
            if function == "random_get" && kind == "hit" {
                // A cached exchange needs no randomness: nothing failed.
                assert!(r.is_forwarded(), "{function} {kind}");
                assert_eq!(audits(&f.host)[0]["cache"], "hit");
                continue;
            }
            assert!(
                !r.is_forwarded(),
                "{function} {kind}: forwarded despite a host failure"
            );
            assert_eq!(r.status(), Some(500), "{function} {kind}");
            let lines = audits(&f.host);
            assert_eq!(lines.len(), 1, "{function} {kind}");
            assert_eq!(lines[0]["reason"], "internal_error", "{function} {kind}");
            assert!(
                lines[0].get("minted_jti").is_none(),
                "{function} {kind}: claims a minted token"
            );
            assert!(
                get(&f.vm, "/orders", &[token]).is_forwarded(),
                "{function} {kind}: VM survives"
            );
        }
    }

    // The local response itself failing: the request is held, never continued.
    f.host
        .inject_fault("proxy_send_local_response", INTERNAL_FAILURE);
    let r = get(&f.vm, "/orders", &[]);
    f.host.clear_faults();
    assert!(!r.is_forwarded());
    assert!(r.is_paused());

    // Properties and the host clock are optional: their failure is not a denial.
    f.host.inject_fault("proxy_get_property", INTERNAL_FAILURE);
    f.host
        .inject_fault("proxy_get_current_time_nanoseconds", INTERNAL_FAILURE);
    assert!(get(&f.vm, "/orders", &[&t]).is_forwarded());
    f.host.clear_faults();

    // The configuration buffer failing refuses the configuration.
    f.host
        .inject_fault("proxy_get_buffer_bytes", INTERNAL_FAILURE);
    let doc = policy(&f.gw, &[&f.idp], json!([orders_rule()]));
    assert!(f.vm.reconfigure(doc.to_string().as_bytes()).is_err());
    f.host.clear_faults();
    assert!(
        get(&f.vm, "/orders", &[&t]).is_forwarded(),
        "previous policy in force"
    );
}

/// Before any valid configuration, every request is refused.
#[test]
fn no_policy_means_no_forwarding() {
    let host = Host::envoy();
    let wasm = wasm();
    assert!(host.load(&wasm, b"{}").is_err());
    assert!(host.load(&wasm, b"").is_err());
}

/// Every deny reason the filter has is reachable through the built wasm: the hostile corpus
/// plus the policy-level cases it does not cover, and a host fault for internal_error.
#[test]
fn every_deny_reason_is_reachable_through_the_wasm() {
    use std::collections::BTreeSet;
    use token_exchange_filter::core::DenyReason;

    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let partner = Issuer::ed25519("https://partner.test", "p1", 12);
    let strict = strict_orders_rule();
    let mut grant_only = orders_rule();
    grant_only["name"] = json!("grant-only");
    grant_only["match"] = json!({"path_prefix": "/grant"});
    grant_only["require"] = json!({"issuers": ["https://idp.test"]});
    let doc = policy(&gw, &[&idp, &partner], json!([strict, grant_only]));
    let f = fixture(Host::envoy(), Some(doc));
    let attacker = Issuer::ed25519("https://attacker.example", "attacker-key-1", 66);

    let mut seen = BTreeSet::new();
    let mut send = |path: &str, auth: &[String]| {
        f.host.clear_logs();
        let refs: Vec<&str> = auth.iter().map(String::as_str).collect();
        let r = get(&f.vm, path, &refs);
        let lines = audits(&f.host);
        assert_eq!(lines.len(), 1);
        if !r.is_forwarded() {
            seen.insert(lines[0]["reason"].as_str().unwrap().to_owned());
        }
    };
    for case in corpus(&f.idp, &attacker, NOW) {
        send("/orders", &case.authorization);
    }
    let base = f.idp.claims(NOW, "orders:read");
    let signed = |issuer: &Issuer, edit: &dyn Fn(&mut Value)| {
        let mut c = if issuer.iss == f.idp.iss {
            base.clone()
        } else {
            issuer.claims(NOW, "orders:read")
        };
        edit(&mut c);
        vec![format!("Bearer {}", issuer.sign(&c))]
    };
    send("/orders", &signed(&f.idp, &|c| c["acr"] = json!("urn:pwd")));
    send("/orders", &signed(&f.idp, &|c| c["amr"] = json!(["pwd"])));
    send("/orders", &signed(&partner, &|_| {}));
    send(
        "/grant",
        &signed(&f.idp, &|c| c["scope"] = json!("profile")),
    );
    send("/orders/../admin", &signed(&f.idp, &|_| {}));
    send("/nowhere", &signed(&f.idp, &|_| {}));
    send("/orders?access_token=abc", &signed(&f.idp, &|_| {}));
    // A fresh token (not cached), so that minting needs randomness.
    f.host.inject_fault("random_get", 29);
    send(
        "/orders",
        &signed(&f.idp, &|c| c["jti"] = json!("never-seen")),
    );
    f.host.clear_faults();

    // The trust boundaries (issue 11), on their own policy.
    {
        use token_exchange_tests::trust::*;
        let t = Trust::new();
        let mut doc = t.policy(NOW);
        doc["strip_headers_action"] = json!("refuse");
        let tf = fixture(Host::envoy(), Some(doc));
        let mut send = |path: &str, token: &str, extra: &[(&str, &str)]| {
            let (r, a) = trust_send(&tf, path, Some(token), extra);
            if !r.is_forwarded() {
                seen.insert(a["reason"].as_str().unwrap().to_owned());
            }
            r
        };
        let claims = |issuer: &Issuer, scope: &str, jti: &str| t.claims(issuer, NOW, scope, jti);
        let idp = |c: &Value| t.idp.sign(c);
        let partner = |c: &Value| t.partner.sign(c);
        let ok = claims(&t.idp, "orders:read", "x1");
        send("/orders", &idp(&ok), &[("x-forwarded-user", "m")]);
        send(
            "/orders",
            &t.retired.sign(&claims(&t.retired, "orders:read", "x2")),
            &[],
        );
        send(
            "/orders",
            &idp(&claims(&t.idp, "orders:read", REVOKED_JTI)),
            &[],
        );
        send(
            "/orders",
            &idp(&with_claim(ok.clone(), "sub", json!(REVOKED_SUB))),
            &[],
        );
        send(
            "/orders",
            &idp(&with_claim(ok.clone(), "iat", json!(NOW - 7200))),
            &[],
        );
        send(
            "/orders",
            &idp(&with_claim(ok.clone(), "may_act", json!({"sub": "x"}))),
            &[],
        );
        let admin = claims(&t.idp, "admin", "x3");
        send(
            "/admin",
            &idp(&with_claim(admin, "auth_time", json!(NOW - 7200))),
            &[],
        );
        send(
            "/partner-write",
            &partner(&claims(&t.partner, "orders:write", "x4")),
            &[],
        );
        send(
            "/internal",
            &partner(&claims(&t.partner, "orders:read", "x5")),
            &[],
        );
        let r = send("/orders", &idp(&ok), &[]);
        let t1 = header(&r.forwarded_headers().unwrap(), "authorization").unwrap()[7..].to_owned();
        let r = send("/billing", &t1, &[]);
        let t2 = header(&r.forwarded_headers().unwrap(), "authorization").unwrap()[7..].to_owned();
        send("/ledger", &t2, &[]);
        send("/loop", &t2, &[]);
    }

    // An issuer whose keys are fetched, and the first fetch failed.
    let fetched = Issuer::ed25519("https://fetched.test", "f1", 13);
    let mut doc = policy(&gw, &[&fetched], json!([orders_rule()]));
    doc["trusted_issuers"][0] = json!({
        "issuer": fetched.iss, "jwks_uri": "https://fetched.test/keys", "jwks_upstream": "idp",
        "algorithms": ["EdDSA"], "audiences": ["api"]
    });
    let vm = f.host.load(&wasm(), doc.to_string().as_bytes()).unwrap();
    vm.tick().unwrap();
    let call = f.host.pending_http_calls().remove(0);
    f.host.fail_http_call(call.token).unwrap();
    let r = get(&vm, "/orders", &[&signed(&fetched, &|_| {})[0]]);
    seen.insert(
        audits(&f.host).last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    assert_eq!(r.status(), Some(503));

    // An issuer taking opaque tokens: one inactive, one whose introspection fails.
    let opaque = Issuer::ed25519("https://opaque.test", "o1", 14);
    let mut doc = policy(&gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([taking_opaque_tokens(
        opaque.trusted(&["api"]),
        "https://opaque.test/introspect",
        "idp"
    )]);
    let vm = f.host.load(&wasm(), doc.to_string().as_bytes()).unwrap();
    for (token, answer) in [
        (
            "revoked-opaque-token",
            HttpCallResponse::status(200)
                .header("content-type", "application/json")
                .body(r#"{"active":false}"#),
        ),
        ("failing-opaque-token", HttpCallResponse::status(502)),
    ] {
        let r = get(&vm, "/orders", &[&format!("Bearer {token}")]);
        let call = f.host.pending_http_calls().remove(0);
        f.host.answer_http_call(call.token, answer).unwrap();
        assert!(r.status().is_some());
        seen.insert(
            audits(&f.host).last().unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let all: BTreeSet<String> = DenyReason::ALL
        .iter()
        .map(|r| r.code().to_owned())
        .collect();
    let missing: Vec<&String> = all.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "never produced through the wasm: {missing:?}"
    );
}

/// Every signing algorithm, signed inside the wasm (RS256 blinded with the host's
/// randomness): the minted token is strict JSON with one `sub` although the rule lists
/// `sub` in `preserve_claims`, and verifies with the gateway key.
#[test]
fn every_signing_algorithm_mints_strict_tokens_in_the_wasm() {
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    for alg in ["EdDSA", "ES256", "RS256", "HS256"] {
        let gw = Gateway::with_alg(alg, &format!("gw-{alg}"));
        let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
        doc["allow_hs256_signing"] = json!(alg == "HS256");
        doc["rules"][0]["mint"]["preserve_claims"] = json!(["sub", "tenant"]);
        for host in [Host::envoy(), Host::kong()] {
            let profile = host.profile();
            let f = fixture(host, Some(doc.clone()));
            let t = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
            let r = get(&f.vm, "/orders", &[&t]);
            let fwd = r
                .forwarded_headers()
                .unwrap_or_else(|| panic!("{alg} {profile:?}: {:?}", r.local_response()));
            let minted = header(&fwd, "authorization").unwrap();
            let (h, c) = gw.verify(minted.strip_prefix("Bearer ").unwrap(), NOW);
            assert_eq!(h["alg"], alg);
            assert_eq!(c["sub"], "alice", "{alg} {profile:?}");
            assert_eq!(c["tenant"], "acme", "{alg} {profile:?}");
            assert_eq!(audits(&f.host)[0]["minted_kid"], gw.kid.as_str());
        }
    }
}

/// Real providers' key sets and tokens through the wasm: the policy loads with a warn-level
/// line naming each skipped key, and user and machine tokens are read through each issuer's
/// claim mapping.
#[test]
fn provider_key_sets_and_tokens_through_the_wasm() {
    use token_exchange_tests::providers;
    let gw = Gateway::new();
    let all = providers::all();
    let doc = providers::policy(&gw, &all);
    for host in [Host::envoy(), Host::kong()] {
        let profile = host.profile();
        host.set_unix_time(NOW);
        let vm = host
            .load(&wasm(), doc.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{profile:?} refused the providers' policy: {e}"));
        let warnings: Vec<String> = host
            .logs()
            .into_iter()
            .filter(|l| l.level == LogLevel::Warn)
            .map(|l| l.message)
            .collect();
        assert_eq!(warnings.len(), 1, "{profile:?}: {warnings:?}");
        assert!(
            warnings[0].contains("trusted_issuers[0].jwks.keys[0]")
                && warnings[0].contains("Zc1jd1uBbSwIN8vBf0HDVPbjPzPA4tKd7vVFf9DCRAc")
                && warnings[0].contains("use \"enc\""),
            "{profile:?}: {}",
            warnings[0]
        );
        host.clear_logs();
        for prov in &all {
            for (kind, claims, caller) in [
                ("user", prov.user_claims(NOW), prov.user),
                ("machine", prov.machine_claims(NOW), prov.machine),
            ] {
                let what = format!("{profile:?} {} {kind}", prov.name);
                host.clear_logs();
                let t = format!("Bearer {}", prov.sign(&claims));
                let r = get(&vm, &format!("/{}/orders", prov.name), &[&t]);
                let line = audits(&host).remove(0);
                assert_eq!(line["caller"], caller.client, "{what}");
                assert_eq!(line["token_verified"], true, "{what}");
                match caller.scope {
                    Some(scope) => {
                        let fwd = r
                            .forwarded_headers()
                            .unwrap_or_else(|| panic!("{what}: {line}"));
                        let minted = header(&fwd, "authorization").unwrap();
                        let (_, c) = gw.verify(minted.strip_prefix("Bearer ").unwrap(), NOW);
                        assert_eq!(c["client_id"], caller.client, "{what}");
                        assert_eq!(c["scope"], scope, "{what}");
                    }
                    None => {
                        assert_eq!(r.status(), Some(403), "{what}");
                        assert_eq!(line["reason"], "no_grantable_scope", "{what}");
                    }
                }
            }
        }
    }
}

// --- trust boundaries (issue 11) ------------------------------------------------------------

/// Sends a GET with an optional bearer token and extra headers (as the client writes them);
/// returns the request and its one audit record.
fn trust_send(
    f: &Fixture,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (wasm_test_harness::Request, Value) {
    f.host.clear_logs();
    let mut spec = RequestSpec::new(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
    ]);
    if let Some(t) = token {
        spec = spec.header("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in extra {
        spec = spec.header(k, v);
    }
    let r = f.vm.send(spec);
    let mut lines = audits(&f.host);
    assert_eq!(lines.len(), 1, "{path}: {lines:?}");
    (r, lines.remove(0))
}

/// The token the upstream received (panics with the audit if the request was not forwarded).
fn forwarded_bearer(r: &wasm_test_harness::Request, audit: &Value) -> String {
    let fwd = r
        .forwarded_headers()
        .unwrap_or_else(|| panic!("not forwarded: {audit}"));
    header(&fwd, "authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer forwarded: {fwd:?}"))
        .to_owned()
}

/// A refusal: not forwarded, this status, reason and challenge fragment.
fn assert_trust_denied(
    r: &wasm_test_harness::Request,
    audit: &Value,
    status: u32,
    reason: &str,
    challenge: &str,
) {
    assert!(r.forwarded_headers().is_none(), "{reason}: forwarded");
    let lr = r.local_response().unwrap();
    assert_eq!(lr.status, status, "{reason}: {audit}");
    assert_eq!(audit["reason"], reason, "{audit}");
    let www = header(&lr.headers, "www-authenticate").unwrap_or_default();
    assert!(www.contains(challenge), "{reason}: {www}");
}

/// Every trust-boundary feature through the built wasm under one host profile: ceilings,
/// `act`, a two-hop chain with depth and cycle limits, step-up, an expired issuer, an
/// overdue review, shadow mode, revocation and header hygiene.
fn trust_suite(host: Host) {
    use token_exchange_tests::trust::*;
    let profile = host.profile();
    let t = Trust::new();
    let f = fixture(host, Some(t.policy(NOW)));

    // Partner ceiling: orders:write is held and granted, but not the partner's to give.
    let pc = t.claims(&t.partner, NOW, "orders:read orders:write", "p1");
    let (r, a) = trust_send(&f, "/orders/1", Some(&t.partner.sign(&pc)), &[]);
    let (_, c) = t.gw.verify(&forwarded_bearer(&r, &a), NOW);
    assert_eq!(c["scope"], "orders:read", "{profile:?}");
    assert_eq!(a["ceiling_removed_scopes"], "orders:write", "{profile:?}");
    assert_eq!(a["issuer_review_overdue"], true, "{profile:?}");
    let (r, a) = trust_send(&f, "/internal", Some(&t.partner.sign(&pc)), &[]);
    assert_trust_denied(
        &r,
        &a,
        403,
        "issuer_audience_not_allowed",
        r#"error="insufficient_scope""#,
    );

    // A two-hop chain: edge, then the minted token presented by orders-service.
    let ic = t.claims(&t.idp, NOW, "orders:read orders:write", "edge-h1");
    let (r, a) = trust_send(&f, "/orders/1", Some(&t.idp.sign(&ic)), &[]);
    let t1 = forwarded_bearer(&r, &a);
    assert_eq!(a["chain_depth"], 1);
    let (r, a) = trust_send(&f, "/billing/7", Some(&t1), &[]);
    let t2 = forwarded_bearer(&r, &a);
    let (_, c2) = t.gw.verify(&t2, NOW);
    assert_eq!(c2["aud"], "billing-service");
    assert_eq!(c2["client_id"], "orders-service");
    assert_eq!(c2["act"]["sub"], "orders-service");
    assert_eq!(c2["act"]["act"]["sub"], "web-app");
    assert_eq!(c2["exchanged_from"]["token_id"], "edge-h1");
    assert_eq!(
        (&a["origin_iss"], &a["origin_token_id"], &a["chain_depth"]),
        (&json!(IDP), &json!("edge-h1"), &json!(2)),
        "{profile:?}: {a}"
    );
    let (r, a) = trust_send(&f, "/ledger", Some(&t2), &[]);
    assert_trust_denied(
        &r,
        &a,
        403,
        "chain_too_deep",
        r#"error="insufficient_scope""#,
    );
    let (r, a) = trust_send(&f, "/loop", Some(&t2), &[]);
    assert_trust_denied(&r, &a, 403, "chain_cycle", r#"error="insufficient_scope""#);
    let (r, a) = trust_send(&f, "/orders/1", Some(&t1), &[]);
    assert_trust_denied(
        &r,
        &a,
        401,
        "gateway_token_replay",
        r#"error="invalid_token""#,
    );
    let (r, a) = trust_send(&f, "/deep-ledger", Some(&t2), &[]);
    forwarded_bearer(&r, &a);

    // Step-up: the challenge a client reads.
    let weak = with_claim(
        t.claims(&t.idp, NOW, "admin", "i-admin"),
        "acr",
        json!("urn:pwd"),
    );
    let (r, a) = trust_send(&f, "/admin", Some(&t.idp.sign(&weak)), &[]);
    assert_trust_denied(
        &r,
        &a,
        401,
        "acr_not_satisfied",
        r#"error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="urn:mfa urn:hwk", max_age="300""#,
    );
    let stale = with_claim(
        t.claims(&t.idp, NOW, "admin", "i-admin2"),
        "auth_time",
        json!(NOW - 3600),
    );
    let (r, a) = trust_send(&f, "/admin", Some(&t.idp.sign(&stale)), &[]);
    assert_trust_denied(&r, &a, 401, "authentication_too_old", r#"max_age="300""#);

    // The issuer's lifecycle.
    let rc = t.claims(&t.retired, NOW, "orders:read", "r1");
    let (r, a) = trust_send(&f, "/orders/1", Some(&t.retired.sign(&rc)), &[]);
    assert_trust_denied(&r, &a, 401, "issuer_expired", r#"error="invalid_token""#);

    // Shadow: forwarded as it came (the original token, no minted one), audited as enforced.
    let (r, a) = trust_send(&f, "/reports/q1", None, &[("x-forwarded-user", "mallory")]);
    let fwd = r
        .forwarded_headers()
        .unwrap_or_else(|| panic!("{profile:?}: shadow denied: {a}"));
    assert!(header(&fwd, "authorization").is_none());
    assert!(
        header(&fwd, "x-forwarded-user").is_none(),
        "identity headers still stripped"
    );
    assert_eq!(
        (&a["decision"], &a["reason"], &a["status"], &a["mode"]),
        (
            &json!("deny"),
            &json!("missing_token"),
            &json!(401),
            &json!("shadow")
        ),
        "{profile:?}"
    );
    let good = t.idp.sign(&t.claims(&t.idp, NOW, "reports:read", "i-rep"));
    let (r, a) = trust_send(&f, "/reports/q1", Some(&good), &[]);
    assert_eq!(
        forwarded_bearer(&r, &a),
        good,
        "{profile:?}: shadow forwards the original"
    );
    assert_eq!(
        (&a["decision"], &a["mode"]),
        (&json!("allow"), &json!("shadow"))
    );
    assert!(
        a["minted_jti"].is_string(),
        "minted as enforcing would: {a}"
    );

    // Revocation.
    let revoked = t
        .idp
        .sign(&t.claims(&t.idp, NOW, "orders:read", REVOKED_JTI));
    let (r, a) = trust_send(&f, "/orders/1", Some(&revoked), &[]);
    assert_trust_denied(&r, &a, 401, "token_revoked", r#"error="invalid_token""#);
    let mallory = with_claim(
        t.claims(&t.idp, NOW, "orders:read", "i-m"),
        "sub",
        json!(REVOKED_SUB),
    );
    let (r, a) = trust_send(&f, "/orders/1", Some(&t.idp.sign(&mallory)), &[]);
    assert_trust_denied(&r, &a, 401, "subject_revoked", r#"error="invalid_token""#);

    // Header hygiene, in the client's casing (Kong keeps it).
    let ok = t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "i-h"));
    let extra = [
        ("X-Auth-Request-Email", "a@b.c"),
        ("X-Forwarded-User", "m"),
        ("X-Other", "kept"),
    ];
    let (r, a) = trust_send(&f, "/orders/1", Some(&ok), &extra);
    forwarded_bearer(&r, &a);
    let fwd = r.forwarded_headers().unwrap();
    assert!(
        header(&fwd, "x-auth-request-email").is_none(),
        "{profile:?}: {fwd:?}"
    );
    assert!(
        header(&fwd, "x-forwarded-user").is_none(),
        "{profile:?}: {fwd:?}"
    );
    assert_eq!(header(&fwd, "x-other"), Some("kept"));
    assert_eq!(
        a["identity_headers"],
        json!(["x-auth-request-email", "x-forwarded-user"])
    );
}

#[test]
fn trust_boundaries_under_envoy() {
    trust_suite(Host::envoy());
}

#[test]
fn trust_boundaries_under_kong() {
    trust_suite(Host::kong());
}

#[test]
fn trust_boundaries_under_apisix() {
    trust_suite(Host::apisix());
}

/// Revocation and header refusal applied with a configuration update on a live VM: tokens
/// and chains it has already exchanged are refused from the next request on.
#[test]
fn revocation_and_refusal_apply_with_a_configuration_update() {
    use token_exchange_tests::trust::*;
    let t = Trust::new();
    let f = fixture(Host::envoy(), Some(t.policy(NOW)));
    let original = t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "edge-u1"));
    let (r, a) = trust_send(&f, "/orders/1", Some(&original), &[]);
    let t1 = forwarded_bearer(&r, &a);
    let (r, a) = trust_send(&f, "/billing", Some(&t1), &[]);
    forwarded_bearer(&r, &a);
    // Both exchanges are cached before the update...
    for (path, token) in [("/orders/2", &original), ("/billing", &t1)] {
        let (r, a) = trust_send(&f, path, Some(token), &[]);
        forwarded_bearer(&r, &a);
        assert_eq!(a["cache"], "hit", "{path}");
    }

    // ...and refused after it: the new policy comes with a new cache.
    let mut doc = t.policy(NOW);
    doc["revoked"]["jti"] = json!([REVOKED_JTI, "edge-u1"]);
    doc["strip_headers_action"] = json!("refuse");
    f.vm.reconfigure(doc.to_string().as_bytes()).unwrap();
    let (r, a) = trust_send(&f, "/orders/1", Some(&original), &[]);
    assert_trust_denied(&r, &a, 401, "token_revoked", r#"error="invalid_token""#);
    assert_eq!(a["cache"], "miss");
    let (r, a) = trust_send(&f, "/billing", Some(&t1), &[]);
    assert_trust_denied(&r, &a, 401, "token_revoked", r#"error="invalid_token""#);
    assert_eq!(a["origin_token_id"], "edge-u1");
    let fresh = t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "edge-u2"));
    let (r, a) = trust_send(&f, "/orders/1", Some(&fresh), &[]);
    forwarded_bearer(&r, &a);
    let (r, a) = trust_send(
        &f,
        "/orders/1",
        Some(&fresh),
        &[("x-auth-request-user", "7")],
    );
    assert_trust_denied(
        &r,
        &a,
        400,
        "identity_header_present",
        r#"error="invalid_request""#,
    );
    assert_eq!(a["identity_headers"], json!(["x-auth-request-user"]));
}

/// Overdue reviews and expired issuers are logged at warn level when the policy loads and
/// then once per UTC day from on_tick, not on every tick.
#[test]
fn lifecycle_reminders_at_load_and_once_a_day() {
    use token_exchange_tests::trust::*;
    let t = Trust::new();
    let doc = t.policy(NOW);
    for host in [Host::envoy(), Host::kong(), Host::apisix()] {
        let profile = host.profile();
        host.set_unix_time(NOW);
        let vm = host.load(&wasm(), doc.to_string().as_bytes()).unwrap();
        let warnings = || -> Vec<String> {
            host.logs()
                .into_iter()
                .filter(|l| l.level == LogLevel::Warn)
                .map(|l| l.message)
                .collect()
        };
        let at_load = warnings();
        assert_eq!(at_load.len(), 2, "{profile:?}: {at_load:?}");
        assert!(at_load[0].contains(PARTNER) && at_load[0].contains("overdue for review"));
        assert!(at_load[1].contains(RETIRED) && at_load[1].contains("expired after"));
        if profile == Profile::Apisix {
            // No tick period on this host: reminders only at load (and on each update).
            assert_eq!(vm.tick_period(), None);
            continue;
        }
        assert_eq!(
            vm.tick_period(),
            Some(Duration::from_secs(60)),
            "{profile:?}"
        );
        host.clear_logs();
        for _ in 0..5 {
            host.advance(Duration::from_secs(60));
            host.tick().unwrap();
        }
        assert!(
            warnings().is_empty(),
            "{profile:?}: once per day, not per tick"
        );
        host.advance(Duration::from_secs(86_400));
        host.tick().unwrap();
        host.tick().unwrap();
        assert_eq!(warnings().len(), 2, "{profile:?}: the next day, once");
    }
    // A policy without dates asks for no ticks.
    let host = Host::envoy();
    let plain = policy(&t.gw, &[&t.idp], json!([orders_rule()]));
    let vm = host.load(&wasm(), plain.to_string().as_bytes()).unwrap();
    assert_eq!(vm.tick_period(), None);
}

/// The minted token forwarded for `authorization` on `/orders` (panics if refused).
fn forwarded_token(vm: &Vm, authorization: &str) -> String {
    let r = get(vm, "/orders", &[authorization]);
    let fwd = r
        .forwarded_headers()
        .unwrap_or_else(|| panic!("refused: {:?}", r.local_response()));
    header(&fwd, "authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

/// The verified-and-minted cache in the built module, under every host profile: the audit
/// says miss then hit, the same minted token is forwarded again, a new one once half its
/// lifetime has passed, each VM has its own cache, and the VM's counters show the hit.
#[test]
fn the_cache_reuses_minted_tokens_in_the_wasm() {
    for host in [Host::envoy(), Host::kong(), Host::apisix()] {
        let profile = host.profile();
        let f = fixture(host, None);
        let t = format!("Bearer {}", f.idp.sign(&f.idp.claims(NOW, "orders:read")));
        let first = forwarded_token(&f.vm, &t);
        let second = forwarded_token(&f.vm, &t);
        assert_eq!(
            first, second,
            "{profile:?}: the cached token is forwarded again"
        );
        let (_, c) = f.gw.verify(&second, NOW);
        assert_eq!(
            (c["iat"].as_u64(), c["exp"].as_u64()),
            (Some(NOW), Some(NOW + 60))
        );
        // A denial in between is decided afresh and does not disturb the entry.
        assert_eq!(get(&f.vm, "/orders", &[]).status(), Some(401));
        // ttl 60 s, reused for half of it.
        f.host.advance(Duration::from_secs(29));
        assert_eq!(forwarded_token(&f.vm, &t), first, "{profile:?} at +29 s");
        f.host.advance(Duration::from_secs(1));
        let renewed = forwarded_token(&f.vm, &t);
        assert_ne!(
            renewed, first,
            "{profile:?}: a new token after half its lifetime"
        );
        let (_, c) = f.gw.verify(&renewed, NOW + 30);
        assert_eq!(c["iat"], NOW + 30);
        assert_eq!(forwarded_token(&f.vm, &t), renewed);

        let lines = audits(&f.host);
        let caches: Vec<&str> = lines.iter().map(|l| l["cache"].as_str().unwrap()).collect();
        assert_eq!(
            caches,
            ["miss", "hit", "miss", "hit", "miss", "hit"],
            "{profile:?}"
        );
        let jtis: Vec<&Value> = lines
            .iter()
            .filter(|l| l["decision"] == "allow")
            .map(|l| &l["minted_jti"])
            .collect();
        assert_eq!(jtis[0], jtis[1]);
        assert_eq!(jtis[1], jtis[2]);
        assert_ne!(jtis[2], jtis[3]);
        for l in lines.iter().filter(|l| l["decision"] == "allow") {
            assert_eq!(l["token_id"], format!("orig-{NOW}"), "{profile:?}");
            assert_eq!(l["token_verified"], true, "{profile:?}");
        }
        if profile != Profile::Apisix {
            assert_eq!(
                f.host.metric("token_exchange.cache.hit"),
                Some(3),
                "{profile:?}"
            );
            assert_eq!(
                f.host.metric("token_exchange.minted"),
                Some(2),
                "{profile:?}"
            );
        }
    }
}

/// A reconfigure with a new signing key ends every cached exchange: the next request for the
/// same token mints with the new key; a cache turned off stops reuse at once.
#[test]
fn a_reconfigure_with_a_new_signing_key_ends_cached_exchanges() {
    let f = fixture(Host::envoy(), None);
    let t = format!("Bearer {}", f.idp.sign(&f.idp.claims(NOW, "orders:read")));
    let old = forwarded_token(&f.vm, &t);
    assert_eq!(forwarded_token(&f.vm, &t), old);

    let gw2 = Gateway::with_alg("EdDSA", "gw-rotated");
    let doc = policy(&gw2, &[&f.idp], json!([orders_rule()]));
    f.vm.reconfigure(doc.to_string().as_bytes()).unwrap();
    let renewed = forwarded_token(&f.vm, &t);
    assert_ne!(renewed, old);
    let (h, _) = gw2.verify(&renewed, NOW);
    assert_eq!(h["kid"], "gw-rotated");
    assert_eq!(
        forwarded_token(&f.vm, &t),
        renewed,
        "the new policy caches anew"
    );

    let mut off = doc.clone();
    off["cache"] = json!({"enabled": false});
    f.vm.reconfigure(off.to_string().as_bytes()).unwrap();
    let a = forwarded_token(&f.vm, &t);
    let b = forwarded_token(&f.vm, &t);
    assert_ne!(a, renewed);
    assert_ne!(a, b, "cache off: a fresh token per request");
    let caches: Vec<Value> = audits(&f.host).iter().map(|l| l["cache"].clone()).collect();
    assert_eq!(caches, ["miss", "hit", "miss", "hit", "miss", "miss"]);
}

/// Each VM (Envoy worker) has its own cache; the bounds hold inside the module under many
/// distinct tokens, and the VM keeps exchanging.
#[test]
fn each_vm_has_its_own_bounded_cache() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let host = Host::envoy();
    host.set_unix_time(NOW);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["cache"] = json!({"max_entries": 8});
    let vms = host
        .load_workers(&wasm(), doc.to_string().as_bytes(), 2)
        .unwrap();
    host.clear_logs();
    let t = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    let a = forwarded_token(&vms[0], &t);
    let b = forwarded_token(&vms[1], &t);
    assert_ne!(a, b, "no cache shared between VMs");
    assert_eq!(forwarded_token(&vms[0], &t), a);
    assert_eq!(forwarded_token(&vms[1], &t), b);
    // 40 distinct tokens, once each, through a cache of 8: the token clients reuse stays (it
    // is in the protected segment), the tokens seen once are evicted, and the VM still works.
    let mut flood = Vec::new();
    for i in 0..40 {
        let mut claims = idp.claims(NOW, "orders:read");
        claims["jti"] = json!(format!("other-{i}"));
        let other = format!("Bearer {}", idp.sign(&claims));
        forwarded_token(&vms[0], &other);
        flood.push(other);
    }
    assert_eq!(
        forwarded_token(&vms[0], &t),
        a,
        "a reused token survives the flood"
    );
    host.clear_logs();
    forwarded_token(&vms[0], &flood[0]);
    forwarded_token(&vms[0], &flood[39]);
    let caches: Vec<Value> = audits(&host).iter().map(|l| l["cache"].clone()).collect();
    assert_eq!(
        caches,
        ["miss", "hit"],
        "the oldest one-time token was evicted"
    );
}

/// Through the built module under every profile: a shadow rule's repeated token is a cache
/// hit audited as enforcing decided (with `mode`), forwarded unchanged (its own token, the
/// identity headers stripped); an expired step-up authentication is challenged on what was
/// a hit.
#[test]
fn trust_decisions_through_the_cache() {
    use token_exchange_tests::trust::*;
    let t = Trust::new();
    for host in [Host::envoy(), Host::kong(), Host::apisix()] {
        let profile = host.profile();
        let f = fixture(host, Some(t.policy(NOW)));
        let reports = t.idp.sign(&t.claims(&t.idp, NOW, "reports:read", "rep-1"));
        let mut lines = Vec::new();
        for _ in 0..2 {
            let (r, a) = trust_send(&f, "/reports", Some(&reports), &[("x-forwarded-user", "x")]);
            let fwd = r.forwarded_headers().unwrap();
            assert_eq!(
                header(&fwd, "authorization"),
                Some(format!("Bearer {reports}").as_str()),
                "{profile:?}: forwarded unchanged"
            );
            assert!(header(&fwd, "x-forwarded-user").is_none(), "{profile:?}");
            lines.push(a);
        }
        assert_eq!(lines[0]["cache"], "miss", "{profile:?}");
        assert_eq!(lines[1]["cache"], "hit", "{profile:?}");
        for a in &lines {
            assert_eq!(a["mode"], "shadow", "{profile:?}");
            assert_eq!(a["decision"], "allow", "{profile:?}");
            assert_eq!(a["identity_headers"], json!(["x-forwarded-user"]));
        }
        assert_eq!(
            lines[0]["minted_jti"], lines[1]["minted_jti"],
            "{profile:?}"
        );

        // Step-up (`max_age_seconds` 300): authenticated 290 s before NOW, exchanged and
        // cached (reused for 60 s), then refused 11 s later, inside the reuse window.
        let late = {
            let mut c = t.claims(&t.idp, NOW, "admin", "adm-1");
            c["auth_time"] = json!(NOW - 290);
            t.idp.sign(&c)
        };
        let (r, a) = trust_send(&f, "/admin", Some(&late), &[]);
        forwarded_bearer(&r, &a);
        f.host.advance(Duration::from_secs(5));
        let (r, a) = trust_send(&f, "/admin", Some(&late), &[]);
        forwarded_bearer(&r, &a);
        assert_eq!(a["cache"], "hit", "{profile:?}");
        f.host.advance(Duration::from_secs(6));
        let (r, a) = trust_send(&f, "/admin", Some(&late), &[]);
        assert_trust_denied(
            &r,
            &a,
            401,
            "authentication_too_old",
            r#"error="insufficient_user_authentication""#,
        );
        assert_eq!(a["cache"], "miss", "{profile:?}");
    }
}
