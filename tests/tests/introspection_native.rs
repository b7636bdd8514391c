//! Token introspection (RFC 7662) in the core, natively with a fixed clock: the
//! configuration (every error with its path), which tokens are opaque, decisions on
//! introspection answers (active, inactive, unavailable, not yet asked) with the same
//! checks, rule matching, narrowing, minting and audit as a JWT, hostile answers through the
//! whole path, and `introspect_jwts`. Parsing, the cache and the request are also tested
//! beside their code (`src/core/introspect/`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use token_exchange_filter::core::fetch::CallResponse;
use token_exchange_filter::core::introspect::{
    parse_introspection, IntrospectionCache, IntrospectionLookup, IntrospectionResult, TokenDigest,
};
use token_exchange_filter::core::{
    CacheUse, Decision, DenyReason, ExchangeCache, HttpRequest, KeySnapshot, Outcome, Policy,
    Verdict,
};
use token_exchange_tests::*;

const IDP: &str = "https://idp.test";
const OPAQUE: &str = "2YotnFZFEjr1zCsicMWpAA";

/// Answers by token, as the glue's cache and waiting requests give them.
#[derive(Default)]
struct Answers(HashMap<TokenDigest, IntrospectionResult>);

impl Answers {
    fn with(mut self, token: &str, r: IntrospectionResult) -> Self {
        self.0.insert(TokenDigest::of(token), r);
        self
    }
    fn active(self, token: &str, answer: &Value) -> Self {
        let mut m = answer.as_object().unwrap().clone();
        m.remove("active");
        self.with(token, IntrospectionResult::Active(Arc::new(m)))
    }
}

impl IntrospectionLookup for Answers {
    fn introspected(&self, issuer: &str, digest: &TokenDigest) -> Option<IntrospectionResult> {
        assert_eq!(issuer, IDP, "asked about another issuer");
        self.0.get(digest).cloned()
    }
}

fn opaque_doc(gw: &Gateway, idp: &Issuer) -> Value {
    let trusted = taking_opaque_tokens(idp.trusted(&["api"]), "https://idp.test/introspect", "idp");
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([trusted]);
    doc
}

fn decide(p: &Policy, answers: &Answers, authorization: &str, now: u64) -> Decision {
    decide_through(p, answers, authorization, now, None)
}

/// A GET of `/orders/1` with this Authorization, decided at `now` (through `cache` if given).
fn decide_through(
    p: &Policy,
    answers: &Answers,
    authorization: &str,
    now: u64,
    cache: Option<&mut ExchangeCache>,
) -> Decision {
    let req = HttpRequest {
        method: "GET",
        path: "/orders/1",
        host: Some("api.example.com"),
        authorization: vec![authorization],
        request_id: Some("req-1"),
        ..Default::default()
    };
    p.decide_with(
        &req,
        &KeySnapshot::default(),
        answers,
        Duration::from_secs(now),
        &mut CountingEntropy(0),
        cache,
    )
}

fn denied(d: &Decision) -> (u16, DenyReason) {
    match &d.verdict {
        Verdict::Deny(x) => (x.status, x.reason),
        other => panic!("not denied: {other:?} {:?}", d.audit),
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn configuration_of_introspection() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let doc = opaque_doc(&gw, &idp);
    let p = load(&doc);
    let (t, endpoint) = p.opaque_issuer().unwrap();
    assert_eq!(t.issuer, IDP);
    assert_eq!(endpoint.endpoint.to_string(), "https://idp.test/introspect");
    assert_eq!(
        (
            endpoint.timeout_ms,
            endpoint.max_bytes,
            endpoint.cache_max_entries
        ),
        (1000, 4096, 100)
    );
    // The secret never shows in the policy's Debug.
    assert!(!format!("{p:?}").contains(INTROSPECTION_SECRET));

    // Defaults.
    let mut d = doc.clone();
    let intro = d["trusted_issuers"][0]["introspection"]
        .as_object_mut()
        .unwrap();
    for k in [
        "timeout_ms",
        "max_bytes",
        "cache_seconds",
        "negative_cache_seconds",
        "cache_max_entries",
    ] {
        intro.remove(k);
    }
    let p = load(&d);
    let e = p.opaque_issuer().unwrap().1;
    assert_eq!(
        (
            e.timeout_ms,
            e.max_bytes,
            e.cache_seconds,
            e.negative_cache_seconds,
            e.cache_max_entries
        ),
        (2000, 16384, 60, 10, 10_000)
    );

    let at = "trusted_issuers[0].introspection";
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"endpoint": "ftp://x/i"}), "endpoint", "http"),
        (json!({"endpoint": "https://u:p@x/i"}), "endpoint", "user"),
        (json!({"upstream": ""}), "upstream", "empty"),
        (json!({"client_id": 5}), "client_id", "string"),
        (
            json!({"client_secret": "a\u{7}b"}),
            "client_secret",
            "control",
        ),
        (json!({"timeout_ms": 50}), "timeout_ms", "between 100"),
        (json!({"max_bytes": 2_000_000}), "max_bytes", "between"),
        (json!({"cache_seconds": -1}), "cache_seconds", "between 0"),
        (
            json!({"negative_cache_seconds": 4000}),
            "negative_cache_seconds",
            "between",
        ),
        (
            json!({"cache_max_entries": 2}),
            "cache_max_entries",
            "between 4",
        ),
        (json!({"cache": 1}), "cache", "unknown field"),
    ];
    for (patch, member, needle) in cases {
        let mut d = doc.clone();
        for (k, v) in patch.as_object().unwrap() {
            d["trusted_issuers"][0]["introspection"][k] = v.clone();
        }
        let errs = config_errors(&d);
        assert!(
            has_error(&errs, &format!("{at}.{member}"), needle),
            "{patch}: {errs:?}"
        );
        // A bad secret is reported by path, never by value.
        assert!(errs.iter().all(|e| !e.contains("a\u{7}b")), "{errs:?}");
    }
    for member in ["endpoint", "upstream", "client_id", "client_secret"] {
        let mut d = doc.clone();
        d["trusted_issuers"][0]["introspection"]
            .as_object_mut()
            .unwrap()
            .remove(member);
        let errs = config_errors(&d);
        assert!(
            has_error(&errs, &format!("{at}.{member}"), "required"),
            "{errs:?}"
        );
    }

    // Flags without an endpoint, an endpoint without a use, two opaque issuers, wrong types.
    let mut d = doc.clone();
    d["trusted_issuers"][0]
        .as_object_mut()
        .unwrap()
        .remove("introspection");
    d["trusted_issuers"][0]["introspect_jwts"] = json!(true);
    let errs = config_errors(&d);
    assert!(has_error(
        &errs,
        "trusted_issuers[0].opaque_tokens",
        "needs introspection"
    ));
    assert!(has_error(
        &errs,
        "trusted_issuers[0].introspect_jwts",
        "needs introspection"
    ));
    let mut d = doc.clone();
    d["trusted_issuers"][0]["opaque_tokens"] = json!(false);
    assert!(has_error(&config_errors(&d), at, "never used"));
    let mut d = doc.clone();
    d["trusted_issuers"][0]["opaque_tokens"] = json!("yes");
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].opaque_tokens",
        "true or false"
    ));
    let other = Issuer::ed25519("https://other.test", "k2", 8);
    let mut d = doc.clone();
    let second = taking_opaque_tokens(other.trusted(&["api"]), "https://other.test/i", "other");
    d["trusted_issuers"].as_array_mut().unwrap().push(second);
    d["rules"][0] = accepting(orders_rule(), &[IDP, "https://other.test"]);
    let errs = config_errors(&d);
    assert!(
        has_error(&errs, "trusted_issuers[1].opaque_tokens", "only one"),
        "{errs:?}"
    );
    // The second may introspect its JWTs.
    d["trusted_issuers"][1]["opaque_tokens"] = json!(false);
    d["trusted_issuers"][1]["introspect_jwts"] = json!(true);
    assert_eq!(config_errors(&d), Vec::<String>::new());
}

#[test]
fn an_active_opaque_token_is_exchanged_like_a_jwt() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));
    let answers =
        Answers::default().active(OPAQUE, &active_answer(IDP, NOW, "orders:read profile"));
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW + 5);
    let Verdict::Forward { authorization, .. } = &d.verdict else {
        panic!("{:?}", d.verdict);
    };
    assert!(d.introspection.is_none());
    let (_, claims) = gw.verify(authorization.strip_prefix("Bearer ").unwrap(), NOW + 5);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders-service");
    // Narrowed: what the rule grants and the token holds.
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "web-app");
    assert_eq!(claims["tenant"], "acme", "preserve_claims");
    assert_eq!(claims["env"], "test", "add_claims");
    // Only policy-listed claims travel: not the answer's other members.
    for absent in ["username", "token_type", "active", "acr", "amr"] {
        assert!(claims.get(absent).is_none(), "{absent} copied");
    }
    assert_eq!(claims["exp"], NOW + 5 + 60);
    let digest = TokenDigest::of(OPAQUE);
    assert_eq!(claims["exchanged_from"]["token_id"], digest.token_id());
    assert_eq!(claims["exchanged_from"]["iss"], IDP);
    // The audit: sha256 of the token, never the token.
    let a = &d.audit;
    assert_eq!(a.decision, Outcome::Allow);
    assert_eq!(a.token_id.as_deref(), Some(digest.token_id().as_str()));
    assert!(a.token_verified);
    assert_eq!(a.iss.as_deref(), Some(IDP));
    assert_eq!(a.sub.as_deref(), Some("alice"));
    assert_eq!(a.caller.as_deref(), Some("web-app"));
    assert!(!a.to_json_line().contains(OPAQUE));

    // Never outlives the token: 20 s left of it.
    let short = with_claim(
        active_answer(IDP, NOW, "orders:read"),
        "exp",
        json!(NOW + 20),
    );
    let answers = Answers::default().active(OPAQUE, &short);
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
    assert_eq!(d.audit.minted_exp, Some(NOW + 20));
}

#[test]
fn inactive_unavailable_and_unknown_answers() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));

    let answers = Answers::default().with(OPAQUE, IntrospectionResult::Inactive);
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d), (401, DenyReason::TokenInactive));
    let Verdict::Deny(x) = &d.verdict else {
        unreachable!()
    };
    assert!(x
        .www_authenticate
        .as_deref()
        .unwrap()
        .contains("error=\"invalid_token\""));
    assert!(!d.audit.token_verified);

    let answers = Answers::default().with(OPAQUE, IntrospectionResult::Unavailable);
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d), (503, DenyReason::IntrospectionUnavailable));
    let Verdict::Deny(x) = &d.verdict else {
        unreachable!()
    };
    assert_eq!(
        x.www_authenticate, None,
        "the gateway's failure: no challenge"
    );
    assert_eq!(x.retry_after, Some(1));
    assert!(x.body.contains("temporarily_unavailable"));
    assert!(d.introspection.is_none(), "answered: nothing to ask");

    // Not asked yet: refused as unavailable, and the need says what to ask.
    let d = decide(&p, &Answers::default(), &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d), (503, DenyReason::IntrospectionUnavailable));
    let need = d.introspection.as_ref().unwrap();
    assert_eq!(need.issuer, IDP);
    assert_eq!(need.token, OPAQUE);
    assert_eq!(need.digest, TokenDigest::of(OPAQUE));
    assert!(!format!("{d:?}").contains(OPAQUE), "Debug names no token");
    // The plain `decide` (the CLI) never has answers.
    let d = decide_get(&p, "/orders/1", &[&bearer(OPAQUE)], NOW);
    assert_eq!(denied(&d), (503, DenyReason::IntrospectionUnavailable));

    // JWTs of the issuer still validate locally, never asked about.
    let jwt = idp.sign(&idp.claims(NOW, "orders:read"));
    let d = decide(&p, &Answers::default(), &bearer(&jwt), NOW);
    assert!(
        matches!(d.verdict, Verdict::Forward { .. }),
        "{:?}",
        d.verdict
    );
    assert!(d.introspection.is_none());
    // Malformed JOSE stays a local refusal, never sent to the provider.
    let d = decide(&p, &Answers::default(), "Bearer eyJhIjox.e30.c2ln", NOW);
    assert_eq!(denied(&d).1, DenyReason::MalformedToken);
    assert!(d.introspection.is_none());
}

#[test]
fn without_an_opaque_issuer_opaque_tokens_are_malformed() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&policy(&gw, &[&idp], json!([orders_rule()])));
    let d = decide(&p, &Answers::default(), &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d), (401, DenyReason::MalformedToken));
    assert!(d.introspection.is_none());
}

#[test]
fn an_active_answer_gets_the_checks_of_jwt_claims() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));
    let good = active_answer(IDP, NOW, "orders:read");
    let cases: Vec<(Value, DenyReason)> = vec![
        (without_claim(good.clone(), "exp"), DenyReason::MissingClaim),
        (
            with_claim(good.clone(), "exp", json!("9999999999")),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "exp", json!(1e30)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "exp", json!(-1)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "exp", json!(NOW - 60)),
            DenyReason::TokenExpired,
        ),
        (
            with_claim(good.clone(), "nbf", json!(NOW + 600)),
            DenyReason::TokenNotYetValid,
        ),
        (
            with_claim(good.clone(), "iat", json!(NOW + 600)),
            DenyReason::IssuedInFuture,
        ),
        (
            with_claim(good.clone(), "iss", json!("https://evil.test")),
            DenyReason::UntrustedIssuer,
        ),
        (
            with_claim(good.clone(), "iss", json!(7)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "aud", json!("other")),
            DenyReason::AudienceMismatch,
        ),
        (
            without_claim(good.clone(), "aud"),
            DenyReason::AudienceMismatch,
        ),
        (
            with_claim(good.clone(), "aud", json!([1])),
            DenyReason::InvalidClaim,
        ),
        (without_claim(good.clone(), "sub"), DenyReason::MissingClaim),
        (
            with_claim(good.clone(), "sub", json!(["alice"])),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "sub", json!("al\nice")),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "scope", json!(5)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "scope", json!("orders:read\tx")),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "client_id", json!({})),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "acr", json!(1)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "amr", json!("otp")),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "auth_time", json!("now")),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "auth_time", json!(NOW + 3600)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "jti", json!(12)),
            DenyReason::InvalidClaim,
        ),
        (
            with_claim(good.clone(), "act", json!("bob")),
            DenyReason::InvalidClaim,
        ),
        // The rule's requirements, as for a JWT.
        (
            with_claim(good.clone(), "scope", json!("profile")),
            DenyReason::InsufficientScope,
        ),
        (
            with_claim(good.clone(), "client_id", json!("other-app")),
            DenyReason::CallerNotAllowed,
        ),
    ];
    for (answer, reason) in cases {
        let answers = Answers::default().active(OPAQUE, &answer);
        let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
        assert_eq!(denied(&d).1, reason, "{answer}");
        assert_eq!(d.audit.reason, reason.code());
        assert!(!d.audit.to_json_line().contains(OPAQUE));
    }
    // Too many members, as for a JWT's claims.
    let mut many = good.as_object().unwrap().clone();
    for i in 0..80 {
        many.insert(format!("x{i}"), json!(i));
    }
    let answers = Answers::default().active(OPAQUE, &Value::Object(many));
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d).1, DenyReason::TooManyClaims);
    // `iss` is optional in an answer.
    let answers = Answers::default().active(OPAQUE, &without_claim(good.clone(), "iss"));
    let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
    assert!(
        matches!(d.verdict, Verdict::Forward { .. }),
        "{:?}",
        d.verdict
    );
}

#[test]
fn revocation_lists_and_rule_issuers_apply_to_opaque_tokens() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let answer = active_answer(IDP, NOW, "orders:read");
    let answers = Answers::default().active(OPAQUE, &answer);
    let mut doc = opaque_doc(&gw, &idp);
    doc["revoked"] = json!({ "jti": [answer["jti"]] });
    let d = decide(&load(&doc), &answers, &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d).1, DenyReason::TokenRevoked);
    let mut doc = opaque_doc(&gw, &idp);
    doc["revoked"] = json!({ "jti": [TokenDigest::of(OPAQUE).token_id()] });
    let d = decide(&load(&doc), &answers, &bearer(OPAQUE), NOW);
    assert_eq!(
        denied(&d).1,
        DenyReason::TokenRevoked,
        "by its audit id too"
    );

    // A rule that does not take the opaque issuer never has the token introspected.
    let other = Issuer::ed25519("https://other.test", "k2", 8);
    let mut doc = opaque_doc(&gw, &idp);
    doc["trusted_issuers"]
        .as_array_mut()
        .unwrap()
        .push(other.trusted(&["api"]));
    doc["rules"] = json!([accepting(orders_rule(), &["https://other.test"])]);
    let d = decide(&load(&doc), &Answers::default(), &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d), (403, DenyReason::IssuerNotAllowed));
    assert!(d.introspection.is_none());
}

#[test]
fn introspected_jwts_are_refused_once_revoked_at_the_provider() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let mut trusted = idp.trusted(&["api"]);
    trusted["introspect_jwts"] = json!(true);
    trusted["introspection"] = json!({
        "endpoint": "https://idp.test/introspect", "upstream": "idp",
        "client_id": "gateway", "client_secret": INTROSPECTION_SECRET
    });
    let mut doc = policy(&gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([trusted]);
    let p = load(&doc);
    assert!(p.opaque_issuer().is_none());
    let jwt = idp.sign(&idp.claims(NOW, "orders:read"));

    // Locally valid, not asked yet: the need names the JWT.
    let d = decide(&p, &Answers::default(), &bearer(&jwt), NOW);
    assert_eq!(denied(&d).1, DenyReason::IntrospectionUnavailable);
    assert_eq!(d.introspection.as_ref().unwrap().token, jwt);
    // Active: exchanged with the JWT's own claims.
    let answers = Answers::default().active(&jwt, &json!({"active": true}));
    let d = decide(&p, &answers, &bearer(&jwt), NOW);
    assert!(
        matches!(d.verdict, Verdict::Forward { .. }),
        "{:?}",
        d.verdict
    );
    assert_eq!(
        d.audit.token_id.as_deref(),
        Some(format!("orig-{NOW}").as_str())
    );
    // Revoked at the provider.
    let answers = Answers::default().with(&jwt, IntrospectionResult::Inactive);
    assert_eq!(
        denied(&decide(&p, &answers, &bearer(&jwt), NOW)).1,
        DenyReason::TokenInactive
    );
    // Another issuer's answer about it.
    let answers = Answers::default().active(&jwt, &json!({"active": true, "iss": "https://x"}));
    assert_eq!(
        denied(&decide(&p, &answers, &bearer(&jwt), NOW)).1,
        DenyReason::UntrustedIssuer
    );
    // A JWT that fails locally is never asked about.
    let bad = idp.sign(&with_claim(
        idp.claims(NOW, "orders:read"),
        "aud",
        json!("x"),
    ));
    let d = decide(&p, &Answers::default(), &bearer(&bad), NOW);
    assert_eq!(denied(&d).1, DenyReason::AudienceMismatch);
    assert!(d.introspection.is_none());
    // Opaque tokens are not this issuer's: malformed.
    let d = decide(&p, &Answers::default(), &bearer(OPAQUE), NOW);
    assert_eq!(denied(&d).1, DenyReason::MalformedToken);
}

/// Hostile answers from the endpoint, through the parser, the cache and the decision: no
/// panic, and never a forwarded request unless the answer is a well-formed active one.
#[test]
fn hostile_answers_through_the_whole_path() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));
    let (_, settings) = p.opaque_issuer().unwrap();
    let long = "9".repeat(400);
    let bodies: Vec<String> = vec![
        r#"{"active":"true","sub":"alice"}"#.into(),
        r#"{"active":1}"#.into(),
        r#"{"sub":"alice","exp":9999999999}"#.into(),
        r#"{"active":false,"active":true}"#.into(),
        r#"{"active":true,"active":true}"#.into(),
        format!(r#"{{"active":true,"exp":{long}}}"#),
        r#"{"active":true,"exp":1e400}"#.into(),
        r#"{"active":true,"sub":"alice","aud":"api","exp":1.5e300}"#.into(),
        r#"{"active":true,"sub":"alice","aud":"api","exp":-5}"#.into(),
        r#"{"active":true,"sub":"alice","aud":"api","exp":99999999999999999999999}"#.into(),
        r#"{"active":true,"scope":{"a":1}}"#.into(),
        r#"{"active":true,"aud":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}"#.into(),
        "\u{feff}{\"active\":true}".into(),
        r#"{"active":true}"#.into(),
        "null".into(),
        "[]".into(),
        "\"\\ud800\"".into(),
    ];
    let headers = vec![
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    for body in &bodies {
        let r = CallResponse {
            headers: &headers,
            body: body.as_bytes(),
            body_size: body.len(),
        };
        let result = match parse_introspection(&r, settings.max_bytes) {
            Ok(answer) => {
                let mut cache = IntrospectionCache::new(settings);
                cache.insert(TokenDigest::of(OPAQUE), answer, NOW * 1000)
            }
            Err(_) => IntrospectionResult::Unavailable,
        };
        let answers = Answers::default().with(OPAQUE, result.clone());
        let d = decide(&p, &answers, &bearer(OPAQUE), NOW);
        assert!(
            matches!(d.verdict, Verdict::Deny(_)),
            "{body}: {:?}",
            d.verdict
        );
        let reason = denied(&d).1;
        if matches!(result, IntrospectionResult::Unavailable) {
            assert_eq!(reason, DenyReason::IntrospectionUnavailable, "{body}");
        } else {
            assert_ne!(reason, DenyReason::IntrospectionUnavailable, "{body}");
        }
    }
}

#[test]
fn a_cached_answer_decides_until_it_ends() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));
    let (_, settings) = p.opaque_issuer().unwrap();
    let mut cache = IntrospectionCache::new(settings);
    let mut m: Map<String, Value> = active_answer(IDP, NOW, "orders:read")
        .as_object()
        .unwrap()
        .clone();
    m.insert("active".into(), json!(true));
    cache.insert(
        TokenDigest::of(OPAQUE),
        token_exchange_filter::core::introspect::Introspected::Active(m),
        NOW * 1000,
    );
    struct Cached<'a>(&'a IntrospectionCache, u64);
    impl IntrospectionLookup for Cached<'_> {
        fn introspected(&self, _: &str, d: &TokenDigest) -> Option<IntrospectionResult> {
            self.0.get(d, self.1 * 1000)
        }
    }
    let d = p.decide_introspected(
        &HttpRequest {
            method: "GET",
            path: "/orders/1",
            authorization: vec![&bearer(OPAQUE)],
            ..Default::default()
        },
        &KeySnapshot::default(),
        &Cached(&cache, NOW + 59),
        Duration::from_secs(NOW + 59),
        &mut CountingEntropy(0),
    );
    assert!(
        matches!(d.verdict, Verdict::Forward { .. }),
        "{:?}",
        d.verdict
    );
    // cache_seconds (60) is over: asked again.
    let d = p.decide_introspected(
        &HttpRequest {
            method: "GET",
            path: "/orders/1",
            authorization: vec![&bearer(OPAQUE)],
            ..Default::default()
        },
        &KeySnapshot::default(),
        &Cached(&cache, NOW + 60),
        Duration::from_secs(NOW + 60),
        &mut CountingEntropy(0),
    );
    assert!(d.introspection.is_some());
}

/// The verified-and-minted cache never outlives an introspection answer: a cached exchange
/// of an opaque token (or of a JWT of an issuer with `introspect_jwts`) is reused only while
/// the answer is still known active; once it is inactive or no longer known, the request is
/// decided afresh (refused, or asked about again), never served from the cache.
#[test]
fn the_exchange_cache_ends_with_the_introspection_answer() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let p = load(&opaque_doc(&gw, &idp));
    let mut cache = p.new_cache();
    let decide_cached = |answers: &Answers, token: &str, now: u64, cache: &mut ExchangeCache| {
        decide_through(&p, answers, &bearer(token), now, Some(cache))
    };
    let minted = |d: &Decision| match &d.verdict {
        Verdict::Forward { minted, .. } => minted.token.clone(),
        other => panic!("not forwarded: {other:?} {:?}", d.audit),
    };
    let active = Answers::default().active(OPAQUE, &active_answer(IDP, NOW, "orders:read"));
    let first = decide_cached(&active, OPAQUE, NOW, &mut cache);
    assert_eq!(first.audit.cache, CacheUse::Miss);
    let again = decide_cached(&active, OPAQUE, NOW + 1, &mut cache);
    assert_eq!(again.audit.cache, CacheUse::Hit);
    assert_eq!(minted(&again), minted(&first));

    // Revoked at the provider (its answer now inactive): refused, not served from the cache.
    let inactive = Answers::default().with(OPAQUE, IntrospectionResult::Inactive);
    let d = decide_cached(&inactive, OPAQUE, NOW + 2, &mut cache);
    assert_eq!(denied(&d), (401, DenyReason::TokenInactive));
    assert_eq!(d.audit.cache, CacheUse::Miss);
    // The answer no longer known (its cache entry ended): asked about again.
    let d = decide_cached(&Answers::default(), OPAQUE, NOW + 3, &mut cache);
    assert_eq!(denied(&d).1, DenyReason::IntrospectionUnavailable);
    assert!(d.introspection.is_some());
    // Active again: a new exchange, then reused.
    let fresh = decide_cached(&active, OPAQUE, NOW + 4, &mut cache);
    assert_eq!(fresh.audit.cache, CacheUse::Miss);
    assert_ne!(minted(&fresh), minted(&first));
    let d = decide_cached(&active, OPAQUE, NOW + 5, &mut cache);
    assert_eq!(d.audit.cache, CacheUse::Hit);

    // A JWT of an issuer with introspect_jwts: the same.
    let mut trusted = idp.trusted(&["api"]);
    trusted["introspect_jwts"] = json!(true);
    trusted["introspection"] = json!({
        "endpoint": "https://idp.test/introspect", "upstream": "idp",
        "client_id": "gateway", "client_secret": INTROSPECTION_SECRET
    });
    let mut doc = policy(&gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([trusted]);
    let p = load(&doc);
    let mut cache = p.new_cache();
    let jwt = idp.sign(&idp.claims(NOW, "orders:read"));
    let decide_jwt = |answers: &Answers, now: u64, cache: &mut ExchangeCache| {
        decide_through(&p, answers, &bearer(&jwt), now, Some(cache))
    };
    let active = Answers::default().active(&jwt, &json!({"active": true}));
    assert_eq!(
        decide_jwt(&active, NOW, &mut cache).audit.cache,
        CacheUse::Miss
    );
    assert_eq!(
        decide_jwt(&active, NOW + 1, &mut cache).audit.cache,
        CacheUse::Hit
    );
    let revoked = Answers::default().with(&jwt, IntrospectionResult::Inactive);
    let d = decide_jwt(&revoked, NOW + 2, &mut cache);
    assert_eq!(denied(&d).1, DenyReason::TokenInactive);
    let d = decide_jwt(&Answers::default(), NOW + 3, &mut cache);
    assert_eq!(denied(&d).1, DenyReason::IntrospectionUnavailable);
}
