//! The policy core, natively, with a fixed clock: every reason code, every claim check, the
//! clock-skew boundaries, and the properties of minted tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use serde_json::{json, Value};
use token_exchange_filter::core::{KeySnapshot, Outcome, Policy, Verdict};
use token_exchange_tests::*;

fn setup() -> (Gateway, Issuer, Policy) {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let p = load(&policy(&gw, &[&idp], json!([orders_rule()])));
    (gw, idp, p)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The deny reason code of a decision (or "exchanged"/"unmatched_pass").
fn reason_for(p: &Policy, token: &str, now: u64) -> &'static str {
    decide_get(p, "/orders", &[&bearer(token)], now)
        .audit
        .reason
}

use token_exchange_tests::{with_claim as with, without_claim as without};

#[test]
fn exchanges_a_valid_token_for_a_narrower_one() {
    let (gw, idp, p) = setup();
    let claims = idp.claims(NOW, "orders:read profile admin");
    let original = idp.sign(&claims);
    let d = decide_get(&p, "/orders/42?x=1", &[&bearer(&original)], NOW);
    let Verdict::Forward {
        authorization,
        minted,
    } = &d.verdict
    else {
        panic!("expected forward, got {:?}", d.verdict);
    };
    let token = authorization.strip_prefix("Bearer ").unwrap();
    assert_ne!(token, original);
    let (header, c) = gw.verify(token, NOW);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "gw-1");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(c["iss"], "https://gateway.test");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-service");
    // original ∩ grant: admin and profile are dropped, orders:write was never held.
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(c["iat"], NOW);
    assert_eq!(c["nbf"], NOW);
    assert_eq!(c["exp"], NOW + 60);
    assert_eq!(c["client_id"], "web-app");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["env"], "test");
    assert!(
        c.get("email").is_none(),
        "claims not preserved must not survive"
    );
    assert!(c.get("acr").is_none());
    assert_eq!(
        c["exchanged_from"],
        json!({"iss": "https://idp.test", "token_id": format!("orig-{NOW}"), "iat": NOW})
    );
    // One exchange so far: the caller acted through this rule, for this audience.
    assert_eq!(
        c["act"],
        json!({"sub": "web-app", "iss": "https://idp.test", "rule": "orders-read", "audience": "orders-service"})
    );
    let jti = c["jti"].as_str().unwrap();
    assert_eq!(unb64(jti).len(), 16);
    assert_eq!(minted.jti, jti);

    let a = &d.audit;
    assert_eq!(a.decision, Outcome::Allow);
    assert_eq!(a.reason, "exchanged");
    assert_eq!(a.rule.as_deref(), Some("orders-read"));
    assert_eq!(a.request_id.as_deref(), Some("req-1"));
    assert_eq!(a.path, "/orders/42", "query strings are not logged");
    assert_eq!(a.iss.as_deref(), Some("https://idp.test"));
    assert_eq!(a.sub.as_deref(), Some("alice"));
    assert_eq!(a.caller.as_deref(), Some("web-app"));
    assert_eq!(a.token_id.as_deref(), Some(&*format!("orig-{NOW}")));
    assert!(a.token_verified);
    assert_eq!(a.minted_jti.as_deref(), Some(jti));
    assert_eq!(a.minted_aud.as_deref(), Some("orders-service"));
    assert_eq!(a.minted_scope.as_deref(), Some("orders:read"));
    assert_eq!(a.minted_exp, Some(NOW + 60));
    assert_eq!(a.minted_kid.as_deref(), Some("gw-1"));
    assert_eq!(a.chain_depth, Some(1));
    assert_eq!(a.acr.as_deref(), Some("urn:mfa"));
    assert!(a.mode.is_none() && a.origin_iss.is_none() && !a.issuer_review_overdue);
    let line = a.to_json_line();
    assert!(
        !line.contains(&original),
        "the audit line never holds the token"
    );
    assert!(!line.contains(token));
}

#[test]
fn minted_lifetime_never_outlives_the_original() {
    let (gw, idp, p) = setup();
    let claims = with(idp.claims(NOW, "orders:read"), "exp", json!(NOW + 10));
    let d = decide_get(&p, "/orders", &[&bearer(&idp.sign(&claims))], NOW);
    let Verdict::Forward { authorization, .. } = &d.verdict else {
        panic!("{:?}", d.audit)
    };
    let (_, c) = gw.verify(authorization.strip_prefix("Bearer ").unwrap(), NOW);
    assert_eq!(c["exp"], NOW + 10);
}

#[test]
fn every_minted_jti_is_fresh() {
    let (_, idp, p) = setup();
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let req = token_exchange_filter::core::HttpRequest {
        method: "GET",
        path: "/orders",
        authorization: vec![&t],
        ..Default::default()
    };
    let mut rng = CountingEntropy(0);
    let now = std::time::Duration::from_secs(NOW);
    let a = p
        .decide(&req, &KeySnapshot::default(), now, &mut rng)
        .audit
        .minted_jti
        .unwrap();
    let b = p
        .decide(&req, &KeySnapshot::default(), now, &mut rng)
        .audit
        .minted_jti
        .unwrap();
    assert_ne!(a, b);
}

#[test]
fn expiry_boundaries_with_skew() {
    let (_, idp, p) = setup();
    let exp = NOW + 100;
    let t = idp.sign(&with(idp.claims(NOW, "orders:read"), "exp", json!(exp)));
    assert_eq!(reason_for(&p, &t, exp - 1), "exchanged");
    // At exp the token is still within skew, but nothing is left to mint: never outlive it.
    assert_eq!(reason_for(&p, &t, exp), "token_expired");
    assert_eq!(reason_for(&p, &t, exp + 29), "token_expired");
    assert_eq!(reason_for(&p, &t, exp + 30), "token_expired");
    // The two refusals differ in where they happen: validation vs minting.
    let at_skew = decide_get(&p, "/orders", &[&bearer(&t)], exp + 30);
    assert_eq!(at_skew.audit.status, Some(401));
}

#[test]
fn not_before_and_issued_at_boundaries() {
    let (_, idp, p) = setup();
    let nbf = |n: u64| idp.sign(&with(idp.claims(NOW, "orders:read"), "nbf", json!(n)));
    assert_eq!(reason_for(&p, &nbf(NOW + 30), NOW), "exchanged");
    assert_eq!(reason_for(&p, &nbf(NOW + 31), NOW), "token_not_yet_valid");
    let iat = |n: u64| idp.sign(&with(idp.claims(NOW, "orders:read"), "iat", json!(n)));
    assert_eq!(reason_for(&p, &iat(NOW + 30), NOW), "exchanged");
    assert_eq!(reason_for(&p, &iat(NOW + 31), NOW), "issued_in_future");
}

#[test]
fn claim_types_and_presence() {
    let (_, idp, p) = setup();
    let base = idp.claims(NOW, "orders:read");
    let cases: Vec<(Value, &str)> = vec![
        (without(base.clone(), "exp"), "missing_claim"),
        (without(base.clone(), "sub"), "missing_claim"),
        (
            with(base.clone(), "exp", json!("tomorrow")),
            "invalid_claim",
        ),
        (with(base.clone(), "exp", json!(-5)), "invalid_claim"),
        (
            with(base.clone(), "exp", json!((NOW + 600) as f64 + 0.5)),
            "exchanged",
        ),
        (with(base.clone(), "exp", json!(1e300)), "invalid_claim"),
        (with(base.clone(), "nbf", json!(null)), "invalid_claim"),
        (with(base.clone(), "aud", json!(5)), "invalid_claim"),
        (with(base.clone(), "aud", json!([])), "invalid_claim"),
        (with(base.clone(), "aud", json!("")), "invalid_claim"),
        (
            with(base.clone(), "aud", json!(["other", "api"])),
            "exchanged",
        ),
        (
            with(base.clone(), "aud", json!("other")),
            "audience_mismatch",
        ),
        (without(base.clone(), "aud"), "audience_mismatch"),
        (with(base.clone(), "sub", json!(1)), "invalid_claim"),
        (
            with(base.clone(), "sub", json!("alice\nadmin")),
            "invalid_claim",
        ),
        (
            with(base.clone(), "azp", json!("web-app\u{1b}[31m")),
            "invalid_claim",
        ),
        (
            with(base.clone(), "amr", json!(["otp\u{0}"])),
            "invalid_claim",
        ),
        (
            with(base.clone(), "scope", json!({"a": 1})),
            "invalid_claim",
        ),
        (
            with(base.clone(), "scope", json!("orders:read bad\"scope")),
            "invalid_claim",
        ),
        (with(base.clone(), "amr", json!("otp")), "invalid_claim"),
        (with(base.clone(), "acr", json!(2)), "invalid_claim"),
        (
            with(base.clone(), "azp", json!(["web-app"])),
            "invalid_claim",
        ),
        (with(base.clone(), "jti", json!(7)), "invalid_claim"),
        (
            with(base.clone(), "iss", json!(["https://idp.test"])),
            "invalid_claim",
        ),
        (without(base.clone(), "iss"), "untrusted_issuer"),
        (
            with(base.clone(), "iss", json!("https://evil.test")),
            "untrusted_issuer",
        ),
        (
            with(base.clone(), "iss", json!("https://gateway.test")),
            "gateway_token_replay",
        ),
    ];
    for (claims, want) in cases {
        assert_eq!(
            reason_for(&p, &idp.sign(&claims), NOW),
            want,
            "claims: {claims}"
        );
    }
}

#[test]
fn scopes_from_scp_arrays_and_strings() {
    let (_, idp, p) = setup();
    let base = without(idp.claims(NOW, ""), "scope");
    let arr = with(base.clone(), "scp", json!(["orders:read"]));
    assert_eq!(reason_for(&p, &idp.sign(&arr), NOW), "exchanged");
    let s = with(base.clone(), "scp", json!("profile orders:read"));
    assert_eq!(reason_for(&p, &idp.sign(&s), NOW), "exchanged");
    let none = base.clone();
    assert_eq!(reason_for(&p, &idp.sign(&none), NOW), "insufficient_scope");
}

#[test]
fn signature_and_key_selection() {
    let (_, idp, p) = setup();
    let claims = idp.claims(NOW, "orders:read");
    // A different key under the same kid.
    let forger = Issuer::ed25519("https://idp.test", "k1", 8);
    assert_eq!(
        reason_for(&p, &forger.sign(&claims), NOW),
        "invalid_signature"
    );
    // Tampered payload.
    let good = idp.sign(&claims);
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64(with(claims.clone(), "scope", json!("orders:read admin"))
        .to_string()
        .as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
    assert_eq!(reason_for(&p, &tampered, NOW), "invalid_signature");
    // Unknown kid.
    let other_kid = Issuer::ed25519("https://idp.test", "k2", 7);
    assert_eq!(reason_for(&p, &other_kid.sign(&claims), NOW), "unknown_key");
    // No kid is fine when the issuer has exactly one key.
    let no_kid = idp.sign_raw(r#"{"alg":"EdDSA"}"#, &claims.to_string());
    assert_eq!(reason_for(&p, &no_kid, NOW), "exchanged");
    // alg not pinned for the issuer, and `none`.
    let rs = idp.sign_raw(r#"{"alg":"RS256","kid":"k1"}"#, &claims.to_string());
    assert_eq!(reason_for(&p, &rs, NOW), "algorithm_not_allowed");
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = format!(r#"{{"alg":"{none}","kid":"k1"}}"#);
        let unsigned = format!(
            "{}.{}.",
            b64(h.as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(
            reason_for(&p, &unsigned, NOW),
            "algorithm_not_allowed",
            "{none}"
        );
    }
}

#[test]
fn no_kid_is_refused_when_the_issuer_has_several_keys() {
    let gw = Gateway::new();
    let a = Issuer::ed25519("https://idp.test", "k1", 7);
    let b = Issuer::ed25519("https://idp.test", "k2", 9);
    let mut doc = policy(&gw, &[&a], json!([orders_rule()]));
    doc["trusted_issuers"][0]["jwks"]["keys"] = json!([a.public_jwk(), b.public_jwk()]);
    let p = load(&doc);
    let claims = a.claims(NOW, "orders:read");
    assert_eq!(reason_for(&p, &a.sign(&claims), NOW), "exchanged");
    assert_eq!(reason_for(&p, &b.sign(&claims), NOW), "exchanged");
    let no_kid = a.sign_raw(r#"{"alg":"EdDSA"}"#, &claims.to_string());
    assert_eq!(reason_for(&p, &no_kid, NOW), "unknown_key");
}

#[test]
fn rsa_and_ec_issuers() {
    let gw = Gateway::new();
    let rs = Issuer::rs256("https://rsa.test", "r1");
    let es = Issuer::es256("https://ec.test", "e1", 3);
    let rule = accepting(orders_rule(), &["https://rsa.test", "https://ec.test"]);
    let p = load(&policy(&gw, &[&rs, &es], json!([rule])));
    for idp in [&rs, &es] {
        let t = idp.sign(&idp.claims(NOW, "orders:read"));
        assert_eq!(reason_for(&p, &t, NOW), "exchanged", "{}", idp.alg());
    }
    // An ES256 token naming the RSA issuer's kid: algorithm confusion.
    let confused = es.sign_raw(
        r#"{"alg":"ES256","kid":"r1"}"#,
        &rs.claims(NOW, "orders:read").to_string(),
    );
    assert_eq!(reason_for(&p, &confused, NOW), "algorithm_not_allowed");
}

#[test]
fn every_rsa_algorithm_verifies_when_pinned() {
    let gw = Gateway::new();
    let rs = Issuer::rs256("https://rsa.test", "r1");
    let algs = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    let mut doc = policy(&gw, &[&rs], json!([orders_rule()]));
    let mut jwk = rs.public_jwk();
    jwk.as_object_mut().unwrap().remove("alg"); // an RSA key without alg serves every RSA alg
    doc["trusted_issuers"][0]["jwks"]["keys"] = json!([jwk]);
    doc["trusted_issuers"][0]["algorithms"] = json!(algs);
    let p = load(&doc);
    let claims = rs.claims(NOW, "orders:read");
    for alg in algs {
        let t = rs.sign_rsa(alg, &claims);
        assert_eq!(reason_for(&p, &t, NOW), "exchanged", "{alg}");
        // A signature made with another RSA algorithm than the header names never verifies.
        let other = if alg.starts_with("RS") {
            alg.replace("RS", "PS")
        } else {
            alg.replace("PS", "RS")
        };
        let confused = rs.sign_rsa_as(&other, alg, &claims);
        assert_eq!(
            reason_for(&p, &confused, NOW),
            "invalid_signature",
            "{other} signed as {alg}"
        );
    }
    // Pinned to RS256 only: PS256 is refused before any cryptography.
    doc["trusted_issuers"][0]["algorithms"] = json!(["RS256"]);
    let p = load(&doc);
    assert_eq!(
        reason_for(&p, &rs.sign_rsa("PS256", &claims), NOW),
        "algorithm_not_allowed"
    );
}

#[test]
fn rule_requirements_answer_403_insufficient_scope() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let other = Issuer::ed25519("https://other.test", "o1", 11);
    let rule = strict_orders_rule();
    let p = load(&policy(&gw, &[&idp, &other], json!([rule])));
    let base = idp.claims(NOW, "orders:read");
    let cases = [
        (
            idp.sign(&with(base.clone(), "scope", json!("profile"))),
            "insufficient_scope",
        ),
        (
            idp.sign(&with(base.clone(), "amr", json!(["pwd"]))),
            "amr_not_satisfied",
        ),
        (
            idp.sign(&with(base.clone(), "azp", json!("batch"))),
            "caller_not_allowed",
        ),
        (
            idp.sign(&without(base.clone(), "azp")),
            "caller_not_allowed",
        ),
        (
            other.sign(&other.claims(NOW, "orders:read")),
            "issuer_not_allowed",
        ),
    ];
    for (t, want) in cases {
        let d = decide_get(&p, "/orders", &[&bearer(&t)], NOW);
        assert_eq!(d.audit.reason, want);
        let Verdict::Deny(denial) = d.verdict else {
            panic!()
        };
        assert_eq!(denial.status, 403);
        let challenge = denial.www_authenticate.unwrap();
        assert!(
            challenge.contains(r#"error="insufficient_scope""#),
            "{challenge}"
        );
    }
    // client_id stands in for azp.
    let via_client_id = with(without(base.clone(), "azp"), "client_id", json!("web-app"));
    assert_eq!(reason_for(&p, &idp.sign(&via_client_id), NOW), "exchanged");
    // The challenge names the scope the route needs.
    let d = decide_get(
        &p,
        "/orders",
        &[&bearer(&idp.sign(&with(base, "scope", json!("x"))))],
        NOW,
    );
    let Verdict::Deny(denial) = d.verdict else {
        panic!()
    };
    assert!(denial
        .www_authenticate
        .unwrap()
        .ends_with(r#", scope="orders:read""#));
    assert!(denial.body.contains("insufficient_scope"));
}

#[test]
fn no_grantable_scope_is_403() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut rule = orders_rule();
    rule["require"] = json!({});
    let p = load(&policy(&gw, &[&idp], json!([rule])));
    let t = idp.sign(&idp.claims(NOW, "profile"));
    let d = decide_get(&p, "/orders", &[&bearer(&t)], NOW);
    assert_eq!(d.audit.reason, "no_grantable_scope");
    let Verdict::Deny(denial) = d.verdict else {
        panic!()
    };
    assert_eq!(denial.status, 403);
    assert!(denial
        .www_authenticate
        .unwrap()
        .contains(r#"scope="orders:read orders:write""#));
}

#[test]
fn authorization_header_forms() {
    let (_, idp, p) = setup();
    let t = idp.sign(&idp.claims(NOW, "orders:read"));
    let d = decide_get(&p, "/orders", &[], NOW);
    assert_eq!(d.audit.reason, "missing_token");
    let Verdict::Deny(denial) = d.verdict else {
        panic!()
    };
    assert_eq!(denial.status, 401);
    // RFC 6750 §3.1: no error attribute when no credentials were sent.
    assert_eq!(
        denial.www_authenticate.as_deref(),
        Some(r#"Bearer realm="token-exchange""#)
    );

    let two = bearer(&t);
    assert_eq!(
        decide_get(&p, "/orders", &[&two, &two], NOW).audit.reason,
        "duplicate_authorization"
    );
    assert_eq!(
        decide_get(&p, "/orders", &["Basic YTpi"], NOW).audit.reason,
        "missing_token"
    );
    assert_eq!(
        decide_get(&p, "/orders", &["Bearer "], NOW).audit.reason,
        "malformed_authorization"
    );
    let lower = format!("bearer {t}");
    assert_eq!(
        decide_get(&p, "/orders", &[&lower], NOW).audit.reason,
        "exchanged"
    );

    let d = decide_get(&p, "/orders", &["Bearer abc"], NOW);
    let Verdict::Deny(denial) = d.verdict else {
        panic!()
    };
    assert_eq!(denial.status, 401);
    assert_eq!(
        denial.www_authenticate.as_deref(),
        Some(
            r#"Bearer realm="token-exchange", error="invalid_token", error_description="malformed token""#
        )
    );
    assert_eq!(
        serde_json::from_str::<Value>(&denial.body).unwrap(),
        json!({"error": "invalid_token", "error_description": "malformed token"})
    );
}

#[test]
fn unmatched_requests_deny_by_default_or_pass_when_told() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    let p = load(&doc);
    let d = decide_get(&p, "/inventory", &[], NOW);
    assert_eq!(d.audit.reason, "no_matching_rule");
    assert_eq!(d.audit.status, Some(403));
    // Segment-aware prefix: /orders-admin is not under /orders.
    assert_eq!(
        decide_get(&p, "/orders-admin", &[], NOW).audit.reason,
        "no_matching_rule"
    );
    assert_eq!(
        decide_get(&p, "/orders/../admin", &[], NOW).audit.reason,
        "ambiguous_path"
    );
    // A second credential in the URL would reach the upstream untouched.
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let d = decide_get(&p, "/orders?x=1&access_token=abc", &[&t], NOW);
    assert_eq!(d.audit.reason, "token_in_query");
    assert_eq!(d.audit.status, Some(400));
    assert_eq!(
        decide_get(&p, "/orders?x=1", &[&t], NOW).audit.reason,
        "exchanged"
    );

    doc["unmatched"] = json!("pass");
    let p = load(&doc);
    let d = decide_get(&p, "/inventory", &["Bearer whatever"], NOW);
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(d.audit.decision, Outcome::Pass);
    assert_eq!(d.audit.reason, "unmatched_pass");
    // A matched route still requires a valid token.
    assert_eq!(
        decide_get(&p, "/orders", &[], NOW).audit.reason,
        "missing_token"
    );
}

#[test]
fn rules_match_on_method_host_and_route_name() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut rule = orders_rule();
    rule["match"] = json!({"path": "/orders", "methods": ["GET"], "host": "api.example.com", "route": "orders"});
    let p = load(&policy(&gw, &[&idp], json!([rule])));
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let req = |method, host, route| token_exchange_filter::core::HttpRequest {
        method,
        path: "/orders",
        host,
        route_name: route,
        authorization: vec![t.as_str()],
        ..Default::default()
    };
    let now = std::time::Duration::from_secs(NOW);
    let reason = |r| {
        p.decide(&r, &KeySnapshot::default(), now, &mut CountingEntropy(0))
            .audit
            .reason
    };
    assert_eq!(
        reason(req("GET", Some("api.example.com:443"), Some("orders"))),
        "exchanged"
    );
    assert_eq!(
        reason(req("GET", Some("api.example.com"), None)),
        "no_matching_rule"
    );
    assert_eq!(
        reason(req("GET", Some("api.example.com"), Some("other"))),
        "no_matching_rule"
    );
    assert_eq!(
        reason(req("POST", Some("api.example.com"), Some("orders"))),
        "no_matching_rule"
    );
    assert_eq!(
        reason(req("GET", Some("evil.example.com"), Some("orders"))),
        "no_matching_rule"
    );
}

#[test]
fn first_matching_rule_wins() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut admin = orders_rule();
    admin["name"] = json!("orders-admin");
    admin["match"] = json!({"path_prefix": "/orders/admin"});
    admin["require"] = json!({"scopes": ["orders:admin"]});
    let p = load(&policy(&gw, &[&idp], json!([admin, orders_rule()])));
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let d = decide_get(&p, "/orders/admin/x", &[&t], NOW);
    assert_eq!(d.audit.rule.as_deref(), Some("orders-admin"));
    assert_eq!(d.audit.reason, "insufficient_scope");
    let d = decide_get(&p, "/orders/1", &[&t], NOW);
    assert_eq!(d.audit.rule.as_deref(), Some("orders-read"));
    assert_eq!(d.audit.reason, "exchanged");
}

#[test]
fn internal_failures_deny() {
    let (_, idp, p) = setup();
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let req = token_exchange_filter::core::HttpRequest {
        method: "GET",
        path: "/orders",
        authorization: vec![&t],
        ..Default::default()
    };
    let d = p.decide(
        &req,
        &KeySnapshot::default(),
        std::time::Duration::from_secs(NOW),
        &mut FailingEntropy,
    );
    assert_eq!(d.audit.reason, "internal_error");
    let Verdict::Deny(denial) = &d.verdict else {
        panic!()
    };
    assert_eq!(denial.status, 500);
    assert!(denial.www_authenticate.is_none());

    // A decision the host failed to carry out becomes a 500 deny with no minted token.
    let mut ok = decide_get(&p, "/orders", &[&t], NOW);
    assert!(matches!(ok.verdict, Verdict::Forward { .. }));
    ok.fail_internal(&p);
    assert!(matches!(ok.verdict, Verdict::Deny(_)));
    assert_eq!(ok.audit.reason, "internal_error");
    assert!(ok.audit.minted_jti.is_none());
}

#[test]
fn limits_have_their_own_reasons() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["max_token_bytes"] = json!(1024);
    doc["limits"] =
        json!({"max_header_bytes": 128, "max_json_depth": 4, "max_claims": 20, "max_scopes": 3});
    let p = load(&doc);
    let base = idp.claims(NOW, "orders:read");
    let big = with(base.clone(), "pad", json!("x".repeat(1000)));
    assert_eq!(reason_for(&p, &idp.sign(&big), NOW), "token_too_large");
    let deep = with(base.clone(), "d", json!([[[[1]]]]));
    assert_eq!(reason_for(&p, &idp.sign(&deep), NOW), "json_too_deep");
    let mut many = base.clone();
    for i in 0..10 {
        many[format!("c{i}")] = json!(i);
    }
    assert_eq!(reason_for(&p, &idp.sign(&many), NOW), "too_many_claims");
    let scopes = with(base.clone(), "scope", json!("orders:read a b c"));
    assert_eq!(reason_for(&p, &idp.sign(&scopes), NOW), "too_many_scopes");
    let long_kid = format!(r#"{{"alg":"EdDSA","kid":"k1","x":"{}"}}"#, "y".repeat(100));
    assert_eq!(
        reason_for(&p, &idp.sign_raw(&long_kid, &base.to_string()), NOW),
        "header_too_large"
    );
    assert_eq!(reason_for(&p, &idp.sign(&base), NOW), "exchanged");
}

#[test]
fn gateway_public_jwks_has_no_private_material() {
    let (_, _, p) = setup();
    let jwks = p.public_jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], "gw-1");
    assert!(key.get("d").is_none());
    assert!(key.get("x").is_some());
}
