//! Trust boundaries (issue 11) in the policy core, natively, with a fixed clock: partner
//! ceilings, `act` chains and `may_act`, chained exchange with depth and cycle limits,
//! step-up, the issuer lifecycle, shadow mode, revocation and header hygiene.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::time::Duration;

use serde_json::{json, Map, Value};
use token_exchange_filter::core::lifecycle::{notices, ReviewReminder};
use token_exchange_filter::core::{
    Decision, Denial, HttpRequest, KeySnapshot, Outcome, Policy, Verdict,
};
use token_exchange_tests::trust::*;
use token_exchange_tests::*;

fn decide_at(p: &Policy, path: &str, token: &str, now: u64) -> Decision {
    decide_get(p, path, &[&format!("Bearer {token}")], now)
}

/// The minted token of an exchange (panics with the audit otherwise).
fn minted(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Forward { authorization, .. } => {
            authorization.strip_prefix("Bearer ").unwrap().to_owned()
        }
        other => panic!("expected an exchange, got {other:?}: {:?}", d.audit),
    }
}

fn denial(d: &Decision) -> &Denial {
    match &d.verdict {
        Verdict::Deny(denial) => denial,
        other => panic!("expected a deny, got {other:?}: {:?}", d.audit),
    }
}

/// A deny with this reason, status and RFC 6750 error; returns the challenge.
fn assert_denied(d: &Decision, reason: &str, status: u16, error: &str) -> String {
    assert_eq!(d.audit.reason, reason, "{:?}", d.audit);
    let den = denial(d);
    assert_eq!(den.status, status, "{reason}");
    assert_eq!(d.audit.status, Some(status));
    let challenge = den.www_authenticate.as_deref().unwrap().to_owned();
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{reason}: {challenge}"
    );
    let body: Value = serde_json::from_str(&den.body).unwrap();
    assert_eq!(body["error"], error);
    challenge
}

fn setup() -> (Trust, Policy) {
    let t = Trust::new();
    let p = load(&t.policy(NOW));
    (t, p)
}

use token_exchange_tests::{with_claim as with, without_claim as without};

// --- 1. partner ceilings ----------------------------------------------------------------

#[test]
fn partner_scopes_are_capped_by_the_issuers_ceiling() {
    let (t, p) = setup();
    let scope = "orders:read orders:write";
    // The internal issuer has no ceiling: the rule's whole grant.
    let d = decide_at(
        &p,
        "/orders",
        &t.idp.sign(&t.claims(&t.idp, NOW, scope, "i1")),
        NOW,
    );
    let (_, c) = t.gw.verify(&minted(&d), NOW);
    assert_eq!(c["scope"], scope);
    assert!(d.audit.ceiling_removed_scopes.is_none());
    // The partner's token carries orders:write, the rule grants it, the ceiling does not.
    let d = decide_at(
        &p,
        "/orders",
        &t.partner.sign(&t.claims(&t.partner, NOW, scope, "p1")),
        NOW,
    );
    let (_, c) = t.gw.verify(&minted(&d), NOW);
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(d.audit.minted_scope.as_deref(), Some("orders:read"));
    assert_eq!(
        d.audit.ceiling_removed_scopes.as_deref(),
        Some("orders:write")
    );

    // Only the ceiling stands between the grant and the token: its own reason.
    let token = t
        .partner
        .sign(&t.claims(&t.partner, NOW, "orders:write", "p2"));
    let d = decide_at(&p, "/partner-write", &token, NOW);
    let challenge = assert_denied(&d, "issuer_scope_ceiling", 403, "insufficient_scope");
    assert!(!challenge.contains("scope=\""), "{challenge}");
    assert_eq!(
        d.audit.ceiling_removed_scopes.as_deref(),
        Some("orders:write")
    );
    // Nothing in common with the grant at all is still no_grantable_scope.
    let token = t.partner.sign(&t.claims(&t.partner, NOW, "profile", "p3"));
    let d = decide_at(&p, "/partner-write", &token, NOW);
    assert_denied(&d, "no_grantable_scope", 403, "insufficient_scope");

    // A requirement cannot be met with a scope the partner may not grant.
    let both = "shipments:read shipments:write";
    let token = t.partner.sign(&t.claims(&t.partner, NOW, both, "p4"));
    let d = decide_at(&p, "/shipments", &token, NOW);
    assert_denied(&d, "issuer_scope_ceiling", 403, "insufficient_scope");
    let token = t.idp.sign(&t.claims(&t.idp, NOW, both, "i2"));
    assert_eq!(
        decide_at(&p, "/shipments", &token, NOW).audit.reason,
        "exchanged"
    );
}

#[test]
fn partner_tokens_are_exchanged_only_for_allowed_audiences() {
    let (t, p) = setup();
    let token = t
        .partner
        .sign(&t.claims(&t.partner, NOW, "orders:read", "p1"));
    let d = decide_at(&p, "/internal", &token, NOW);
    assert_denied(&d, "issuer_audience_not_allowed", 403, "insufficient_scope");
    assert!(d.audit.token_verified);
    let token = t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "i1"));
    assert_eq!(
        decide_at(&p, "/internal", &token, NOW).audit.reason,
        "exchanged"
    );
}

#[test]
fn ceilings_follow_a_partner_token_through_the_chain() {
    let (t, p) = setup();
    let token = t
        .partner
        .sign(&t.claims(&t.partner, NOW, "orders:read orders:write", "p1"));
    let t1 = minted(&decide_at(&p, "/orders", &token, NOW));
    let d = decide_at(&p, "/billing", &t1, NOW + 1);
    let t2 = minted(&d);
    let (_, c) = t.gw.verify(&t2, NOW + 1);
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(d.audit.origin_iss.as_deref(), Some(PARTNER));
    // ledger-service is not among the partner's audiences, two hops later either.
    let d = decide_at(&p, "/deep-ledger", &t2, NOW + 2);
    assert_denied(&d, "issuer_audience_not_allowed", 403, "insufficient_scope");
}

// --- 2. act and may_act -----------------------------------------------------------------

#[test]
fn minted_tokens_record_the_exchange_in_act() {
    let (t, p) = setup();
    let base = t.claims(&t.idp, NOW, "orders:read", "i1");
    let d = decide_at(&p, "/orders", &t.idp.sign(&base), NOW);
    let (_, c) = t.gw.verify(&minted(&d), NOW);
    assert_eq!(
        c["act"],
        json!({"sub": "web-app", "iss": IDP, "rule": "orders", "audience": "orders-service"})
    );
    assert_eq!(d.audit.chain_depth, Some(1));

    // No caller claim: the exchange is recorded, no actor is named.
    let d = decide_at(
        &p,
        "/orders",
        &t.idp.sign(&without(base.clone(), "azp")),
        NOW,
    );
    let (_, c) = t.gw.verify(&minted(&d), NOW);
    assert_eq!(
        c["act"],
        json!({"rule": "orders", "audience": "orders-service"})
    );
    assert!(c.get("client_id").is_none());

    // A token that already records a delegation keeps it as the prior actor.
    let prior = json!({"sub": "batch-scheduler"});
    let d = decide_at(
        &p,
        "/orders",
        &t.idp.sign(&with(base.clone(), "act", prior.clone())),
        NOW,
    );
    let (_, c) = t.gw.verify(&minted(&d), NOW);
    assert_eq!(c["act"]["act"], prior);
    assert_eq!(c["act"]["sub"], "web-app");
    assert_eq!(d.audit.chain_depth, Some(2));
    // Two prior exchanges and this one exceed the default depth of 2.
    let deep = json!({"sub": "b", "act": {"sub": "a"}});
    let d = decide_at(
        &p,
        "/orders",
        &t.idp.sign(&with(base.clone(), "act", deep)),
        NOW,
    );
    assert_denied(&d, "chain_too_deep", 403, "insufficient_scope");
    assert_eq!(d.audit.chain_depth, Some(3));
    for bad in [
        json!("svc"),
        json!({"sub": "b", "act": "a"}),
        json!([{"sub": "a"}]),
    ] {
        let d = decide_at(
            &p,
            "/orders",
            &t.idp.sign(&with(base.clone(), "act", bad.clone())),
            NOW,
        );
        assert_eq!(d.audit.reason, "invalid_claim", "act {bad}");
    }
}

#[test]
fn may_act_names_the_only_caller_that_may_exchange() {
    let (t, p) = setup();
    let base = t.claims(&t.idp, NOW, "orders:read", "i1");
    let reason = |may_act: Value, claims: &Value| {
        let c = with(claims.clone(), "may_act", may_act);
        decide_at(&p, "/orders", &t.idp.sign(&c), NOW).audit.reason
    };
    assert_eq!(reason(json!({"sub": "web-app"}), &base), "exchanged");
    assert_eq!(
        reason(json!({"sub": "web-app", "iss": IDP}), &base),
        "exchanged"
    );
    assert_eq!(reason(json!({"sub": "batch"}), &base), "actor_not_allowed");
    assert_eq!(
        reason(
            json!({"sub": "web-app", "iss": "https://elsewhere.test"}),
            &base
        ),
        "actor_not_allowed"
    );
    // No caller at all cannot be the named actor.
    assert_eq!(
        reason(json!({"sub": "web-app"}), &without(base.clone(), "azp")),
        "actor_not_allowed"
    );
    for bad in [
        json!("web-app"),
        json!({}),
        json!({"sub": 1}),
        json!({"sub": "web-app", "iss": 2}),
    ] {
        assert_eq!(reason(bad.clone(), &base), "invalid_claim", "may_act {bad}");
    }
    let d = decide_at(
        &p,
        "/orders",
        &t.idp.sign(&with(base, "may_act", json!({"sub": "batch"}))),
        NOW,
    );
    assert_denied(&d, "actor_not_allowed", 403, "insufficient_scope");
}

// --- 3. chained exchange ----------------------------------------------------------------

/// An edge exchange at /orders of a fresh internal token; returns (original claims, T1).
fn edge(t: &Trust, p: &Policy, jti: &str) -> (Value, String) {
    let c = t.claims(&t.idp, NOW, "orders:read orders:write", jti);
    let t1 = minted(&decide_at(p, "/orders", &t.idp.sign(&c), NOW));
    (c, t1)
}

#[test]
fn a_two_hop_chain_narrows_and_keeps_its_history() {
    let (t, p) = setup();
    let (orig, t1) = edge(&t, &p, "edge-1");
    let (_, c1) = t.gw.verify(&t1, NOW);
    let d = decide_at(&p, "/billing", &t1, NOW + 10);
    let t2 = minted(&d);
    let (_, c2) = t.gw.verify(&t2, NOW + 10);
    assert_eq!(c2["aud"], "billing-service");
    assert_eq!(c2["sub"], "alice");
    // billing:read is granted by the rule but was never in the presented token.
    assert_eq!(c2["scope"], "orders:read");
    // ttl 120 from NOW+10 would be later than T1's exp: never later than the presented one.
    assert_eq!(c2["exp"], c1["exp"]);
    assert_eq!(c2["client_id"], "orders-service");
    // Provenance still names the edge token; act adds this hop outermost.
    assert_eq!(c2["exchanged_from"], c1["exchanged_from"]);
    assert_eq!(c2["exchanged_from"]["token_id"], orig["jti"]);
    assert_eq!(
        c2["act"],
        json!({
            "sub": "orders-service", "iss": t.gw.iss, "rule": "billing", "audience": "billing-service",
            "act": {"sub": "web-app", "iss": IDP, "rule": "orders", "audience": "orders-service"}
        })
    );
    let a = &d.audit;
    assert_eq!(a.iss.as_deref(), Some(t.gw.iss.as_str()));
    assert_eq!(a.caller.as_deref(), Some("orders-service"));
    assert_eq!(a.token_id.as_deref(), c1["jti"].as_str());
    assert_eq!(a.origin_iss.as_deref(), Some(IDP));
    assert_eq!(a.origin_token_id.as_deref(), Some("edge-1"));
    assert_eq!(a.chain_depth, Some(2));
    assert!(a.token_verified);

    // A third exchange: refused at the default depth, allowed where the rule says 3.
    let d = decide_at(&p, "/ledger", &t2, NOW + 20);
    assert_denied(&d, "chain_too_deep", 403, "insufficient_scope");
    assert_eq!(d.audit.chain_depth, Some(3));
    let d = decide_at(&p, "/deep-ledger", &t2, NOW + 20);
    let (_, c3) = t.gw.verify(&minted(&d), NOW + 20);
    assert_eq!(c3["act"]["act"]["act"]["audience"], "orders-service");
    assert_eq!(d.audit.chain_depth, Some(3));
    // Back into an audience the chain already holds: a cycle.
    let d = decide_at(&p, "/loop", &t2, NOW + 20);
    assert_denied(&d, "chain_cycle", 403, "insufficient_scope");
}

#[test]
fn gateway_tokens_are_taken_only_where_a_rule_says_so() {
    let (t, p) = setup();
    let (_, t1) = edge(&t, &p, "edge-1");
    // No accept_gateway_tokens: refused as before, even before the signature.
    let d = decide_at(&p, "/orders", &t1, NOW);
    assert_denied(&d, "gateway_token_replay", 401, "invalid_token");
    assert!(!d.audit.token_verified);
    // A rule that takes tokens for other audiences.
    let d = decide_at(&p, "/ledger", &t1, NOW);
    assert_denied(&d, "audience_mismatch", 401, "invalid_token");
    assert!(d.audit.token_verified);
    // Each hop is bound by the presented token's lifetime (T1: exp NOW+120, skew 30).
    let d = decide_at(&p, "/billing", &t1, NOW + 150);
    assert_denied(&d, "token_expired", 401, "invalid_token");
}

#[test]
fn gateway_tokens_are_verified_with_the_gateways_keys_only() {
    let (t, p) = setup();
    let (_, t1) = edge(&t, &p, "edge-1");
    let parts: Vec<&str> = t1.split('.').collect();
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    let payload: Map<String, Value> = serde_json::from_slice(&unb64(parts[1])).unwrap();
    let resign = |header: &Value, payload: &Map<String, Value>| {
        t.gw.sign_raw(
            &header.to_string(),
            &Value::Object(payload.clone()).to_string(),
        )
    };
    let reason = |token: &str| decide_at(&p, "/billing", token, NOW).audit.reason;
    assert_eq!(reason(&resign(&header, &payload)), "exchanged");

    // The same claims under a key that only claims to be the gateway's.
    let forger = Issuer::ed25519(&t.gw.iss, "gw-1", 99);
    let forged = forger.sign_raw(
        &header.to_string(),
        &Value::Object(payload.clone()).to_string(),
    );
    assert_eq!(reason(&forged), "invalid_signature");
    // Not an at+jwt, an unknown or missing kid, another algorithm.
    for (h, want) in [
        (
            with(header.clone(), "typ", json!("JWT")),
            "unsupported_token_type",
        ),
        (without(header.clone(), "typ"), "unsupported_token_type"),
        (with(header.clone(), "kid", json!("gw-2")), "unknown_key"),
        (without(header.clone(), "kid"), "unknown_key"),
        (
            with(header.clone(), "alg", json!("ES256")),
            "algorithm_not_allowed",
        ),
    ] {
        assert_eq!(reason(&resign(&h, &payload)), want, "header {h}");
    }
    // Signed by the gateway, but not shaped like what it mints.
    let edit = |name: &str, v: Option<Value>| {
        let mut c = payload.clone();
        match v {
            Some(v) => c.insert(name.into(), v),
            None => c.remove(name),
        };
        reason(&resign(&header, &c))
    };
    assert_eq!(edit("exchanged_from", None), "invalid_claim");
    assert_eq!(
        edit("exchanged_from", Some(json!({"iss": IDP}))),
        "invalid_claim"
    );
    assert_eq!(edit("act", None), "invalid_claim");
    assert_eq!(
        edit("aud", Some(json!(["orders-service"]))),
        "invalid_claim"
    );
    assert_eq!(edit("scope", Some(json!(7))), "invalid_claim");
    // The original's issuer must still be trusted.
    assert_eq!(
        edit(
            "exchanged_from",
            Some(json!({"iss": "https://nobody.test", "token_id": "x"}))
        ),
        "untrusted_issuer"
    );
    // The gateway's own keys only: an issuer's key cannot vouch for a gateway token.
    let as_idp = Issuer::ed25519(&t.gw.iss, "k1", 7);
    let header_idp = with(header.clone(), "kid", json!("k1"));
    let t_idp = as_idp.sign_raw(&header_idp.to_string(), &Value::Object(payload).to_string());
    assert_eq!(reason(&t_idp), "unknown_key");
}

// --- 4. step-up -------------------------------------------------------------------------

#[test]
fn step_up_answers_401_with_acr_values_and_max_age() {
    let (t, p) = setup();
    let base = t.claims(&t.idp, NOW, "admin", "i1");
    let run = |c: &Value| decide_at(&p, "/admin", &t.idp.sign(c), NOW);
    let expect = r#"error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="urn:mfa urn:hwk", max_age="300""#;
    for c in [
        with(base.clone(), "acr", json!("urn:pwd")),
        without(base.clone(), "acr"),
    ] {
        let d = run(&c);
        let challenge = assert_denied(
            &d,
            "acr_not_satisfied",
            401,
            "insufficient_user_authentication",
        );
        assert_eq!(
            challenge,
            format!(r#"Bearer realm="token-exchange", {expect}"#)
        );
    }
    let d = run(&with(base.clone(), "acr", json!("urn:pwd")));
    assert_eq!(d.audit.acr.as_deref(), Some("urn:pwd"));
    // Strong enough, but too long ago, or not known when.
    for c in [
        with(base.clone(), "auth_time", json!(NOW - STEP_UP_MAX_AGE - 1)),
        without(base.clone(), "auth_time"),
    ] {
        let d = run(&c);
        let challenge = assert_denied(
            &d,
            "authentication_too_old",
            401,
            "insufficient_user_authentication",
        );
        assert!(
            challenge.contains("more recent authentication is required"),
            "{challenge}"
        );
        assert!(
            challenge.ends_with(r#"acr_values="urn:mfa urn:hwk", max_age="300""#),
            "{challenge}"
        );
    }
    assert_eq!(
        run(&with(
            base.clone(),
            "auth_time",
            json!(NOW - STEP_UP_MAX_AGE)
        ))
        .audit
        .reason,
        "exchanged"
    );
    let d = run(&with(base.clone(), "acr", json!("urn:hwk")));
    assert_eq!(d.audit.reason, "exchanged");
    assert_eq!(d.audit.auth_time, Some(NOW - 60));
    // auth_time is a NumericDate in the past.
    assert_eq!(
        run(&with(base.clone(), "auth_time", json!("yesterday")))
            .audit
            .reason,
        "invalid_claim"
    );
    assert_eq!(
        run(&with(base.clone(), "auth_time", json!(NOW + 31)))
            .audit
            .reason,
        "invalid_claim"
    );
    assert_eq!(
        run(&with(base, "auth_time", json!(NOW + 30))).audit.reason,
        "exchanged"
    );
}

#[test]
fn a_step_up_challenge_names_only_what_the_rule_asks() {
    let t = Trust::new();
    let mut only_age = rule("age", "/age", &[IDP], "a", &["admin"]);
    only_age["require"]["max_age_seconds"] = json!(0);
    let mut only_acr = rule("acr", "/acr", &[IDP], "a", &["admin"]);
    only_acr["require"]["acr"] = json!(["urn:hwk"]);
    let p = load(&policy(&t.gw, &[&t.idp], json!([only_age, only_acr])));
    let c = t.claims(&t.idp, NOW, "admin", "i1");
    let d = decide_at(&p, "/age", &t.idp.sign(&c), NOW);
    let challenge = assert_denied(
        &d,
        "authentication_too_old",
        401,
        "insufficient_user_authentication",
    );
    assert!(
        challenge.ends_with(r#"required", max_age="0""#),
        "{challenge}"
    );
    // max_age 0: only an authentication at this very second.
    let d = decide_at(
        &p,
        "/age",
        &t.idp.sign(&with(c.clone(), "auth_time", json!(NOW))),
        NOW,
    );
    assert_eq!(d.audit.reason, "exchanged");
    let d = decide_at(&p, "/acr", &t.idp.sign(&c), NOW);
    let challenge = assert_denied(
        &d,
        "acr_not_satisfied",
        401,
        "insufficient_user_authentication",
    );
    assert!(
        challenge.ends_with(r#"required", acr_values="urn:hwk""#),
        "{challenge}"
    );
}

// --- 5. issuer lifecycle ----------------------------------------------------------------

#[test]
fn an_expired_issuer_is_no_longer_trusted() {
    let (t, p) = setup();
    let token = t
        .retired
        .sign(&t.claims(&t.retired, NOW, "orders:read", "r1"));
    let d = decide_at(&p, "/orders", &token, NOW);
    assert_denied(&d, "issuer_expired", 401, "invalid_token");
    assert!(
        d.audit.token_verified,
        "refused after the signature: the audit is trustworthy"
    );
    // The day of `expires` is still trusted; the next one is not.
    let mut doc = t.policy(NOW);
    doc["trusted_issuers"][2]["expires"] = json!("2026-01-01");
    let p = load(&doc);
    let token = t
        .retired
        .sign(&t.claims(&t.retired, NOW + 86_399, "orders:read", "r2"));
    assert_eq!(
        decide_at(&p, "/orders", &token, NOW + 86_399).audit.reason,
        "exchanged"
    );
    let token = t
        .retired
        .sign(&t.claims(&t.retired, NOW + 86_400, "orders:read", "r3"));
    assert_eq!(
        decide_at(&p, "/orders", &token, NOW + 86_400).audit.reason,
        "issuer_expired"
    );
}

#[test]
fn overdue_reviews_are_flagged_in_every_audit_record_and_reminded_daily() {
    let (t, p) = setup();
    let token = t
        .partner
        .sign(&t.claims(&t.partner, NOW, "orders:read", "p1"));
    let allowed = decide_at(&p, "/orders", &token, NOW);
    assert_eq!(allowed.audit.reason, "exchanged");
    assert!(allowed.audit.issuer_review_overdue);
    assert!(allowed
        .audit
        .to_json_line()
        .contains(r#""issuer_review_overdue":true"#));
    let denied = decide_at(&p, "/internal", &token, NOW);
    assert!(denied.audit.issuer_review_overdue);
    let internal = t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "i1"));
    let d = decide_at(&p, "/orders", &internal, NOW);
    assert!(!d.audit.issuer_review_overdue);
    assert!(!d.audit.to_json_line().contains("review"));
    // A chained hop from a partner token is still the partner's.
    let d = decide_at(&p, "/billing", &minted(&allowed), NOW);
    assert!(d.audit.issuer_review_overdue);

    let lines = notices(&p, NOW);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(PARTNER) && lines[0].contains("overdue for review (review_by 2025-12-31"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(RETIRED) && lines[1].contains("expired after 2025-12-31"),
        "{lines:?}"
    );
    let mut reminder = ReviewReminder::default();
    assert_eq!(reminder.due(&p, NOW), lines);
    assert!(
        reminder.due(&p, NOW + 60).is_empty(),
        "once per day, not per tick"
    );
    assert!(reminder.due(&p, NOW + 86_399).is_empty());
    assert_eq!(reminder.due(&p, NOW + 86_400).len(), 2);

    // The review_by day itself is not overdue yet.
    let mut doc = t.policy(NOW);
    doc["trusted_issuers"][1]["review_by"] = json!("2026-01-01");
    let p = load(&doc);
    assert!(notices(&p, NOW + 86_399)
        .iter()
        .all(|l| !l.contains(PARTNER)));
    assert!(notices(&p, NOW + 86_400)
        .iter()
        .any(|l| l.contains(PARTNER)));
}

// --- 6. shadow mode ---------------------------------------------------------------------

#[test]
fn shadow_rules_decide_mint_and_audit_but_forward_unchanged() {
    let (t, p) = setup();
    let headers = ["x-forwarded-user", "accept"];
    let shadow = |auth: &[&str]| {
        let req = HttpRequest {
            method: "GET",
            path: "/reports/q1",
            authorization: auth.to_vec(),
            header_names: headers.to_vec(),
            ..Default::default()
        };
        p.decide(
            &req,
            &KeySnapshot::default(),
            Duration::from_secs(NOW),
            &mut CountingEntropy(0),
        )
    };
    // No token: enforcing would answer 401; shadow forwards, and says so.
    let d = shadow(&[]);
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(
        d.strip_headers,
        ["x-forwarded-user"],
        "identity headers still go"
    );
    let a = &d.audit;
    assert_eq!(
        (a.decision, a.reason, a.status),
        (Outcome::Deny, "missing_token", Some(401))
    );
    assert_eq!(a.mode, Some("shadow"));
    assert_eq!(a.rule.as_deref(), Some("reports"));
    assert!(a
        .to_json_line()
        .contains(r#""decision":"deny","reason":"missing_token","status":401,"mode":"shadow""#));
    // A token lacking the scope: 403 would have been sent.
    let lacking = format!(
        "Bearer {}",
        t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "i1"))
    );
    let d = shadow(&[&lacking]);
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(
        (d.audit.reason, d.audit.status),
        ("insufficient_scope", Some(403))
    );
    // A good token: minted and audited exactly as enforcing would, but not forwarded.
    let good = format!(
        "Bearer {}",
        t.idp.sign(&t.claims(&t.idp, NOW, "reports:read", "i2"))
    );
    let d = shadow(&[&good]);
    assert_eq!(d.verdict, Verdict::Pass);
    let a = &d.audit;
    assert_eq!(
        (a.decision, a.reason, a.status),
        (Outcome::Allow, "exchanged", None)
    );
    assert_eq!(a.minted_aud.as_deref(), Some("reports-service"));
    assert!(a.minted_jti.is_some() && a.token_verified);

    // The same rule enforcing: the answers the shadow audit predicted.
    let mut doc = t.policy(NOW);
    doc["rules"][9]["mode"] = json!("enforce");
    let p = load(&doc);
    let enforce = |auth: &[&str]| {
        let req = HttpRequest {
            method: "GET",
            path: "/reports/q1",
            authorization: auth.to_vec(),
            ..Default::default()
        };
        p.decide(
            &req,
            &KeySnapshot::default(),
            Duration::from_secs(NOW),
            &mut CountingEntropy(0),
        )
    };
    assert_eq!(denial(&enforce(&[])).status, 401);
    assert_eq!(denial(&enforce(&[&lacking])).status, 403);
    assert!(matches!(enforce(&[&good]).verdict, Verdict::Forward { .. }));
    assert!(enforce(&[&good]).audit.mode.is_none());
}

#[test]
fn a_host_failure_in_shadow_mode_is_audited_as_what_happened() {
    let (_, p) = setup();
    let req = HttpRequest {
        method: "GET",
        path: "/reports",
        ..Default::default()
    };
    let mut d = p.decide(
        &req,
        &KeySnapshot::default(),
        Duration::from_secs(NOW),
        &mut CountingEntropy(0),
    );
    assert_eq!(d.audit.mode, Some("shadow"));
    d.fail_internal(&p);
    assert_eq!(denial(&d).status, 500);
    assert_eq!((d.audit.reason, d.audit.mode), ("internal_error", None));
}

// --- 7. revocation ----------------------------------------------------------------------

#[test]
fn revoked_ids_subjects_and_old_tokens_are_refused() {
    let (t, p) = setup();
    let c = |jti: &str| t.claims(&t.idp, NOW, "orders:read", jti);
    let reason = |claims: &Value| {
        decide_at(&p, "/orders", &t.idp.sign(claims), NOW)
            .audit
            .reason
    };
    let d = decide_at(&p, "/orders", &t.idp.sign(&c(REVOKED_JTI)), NOW);
    assert_denied(&d, "token_revoked", 401, "invalid_token");
    assert!(d.audit.token_verified);
    assert_eq!(
        reason(&with(c("i1"), "sub", json!(REVOKED_SUB))),
        "subject_revoked"
    );
    let before = NOW - REVOKED_BEFORE_AGO;
    assert_eq!(
        reason(&with(c("i2"), "iat", json!(before - 1))),
        "issued_before_revocation"
    );
    assert_eq!(reason(&with(c("i3"), "iat", json!(before))), "exchanged");
    assert_eq!(reason(&without(c("i4"), "iat")), "issued_before_revocation");
    // The partner has no revoked_before: no iat is fine there.
    let pc = without(t.claims(&t.partner, NOW, "orders:read", "p1"), "iat");
    assert_eq!(
        decide_at(&p, "/orders", &t.partner.sign(&pc), NOW)
            .audit
            .reason,
        "exchanged"
    );
    // A revoked jti of another issuer is revoked too (jti values are global).
    let pc = t.claims(&t.partner, NOW, "orders:read", REVOKED_JTI);
    assert_eq!(
        decide_at(&p, "/orders", &t.partner.sign(&pc), NOW)
            .audit
            .reason,
        "token_revoked"
    );
}

#[test]
fn revoking_an_original_stops_every_later_hop() {
    let t = Trust::new();
    let p = load(&t.policy(NOW));
    let (_, t1) = edge(&t, &p, "edge-7");
    let (_, c1) = t.gw.verify(&t1, NOW);
    assert_eq!(
        decide_at(&p, "/billing", &t1, NOW + 1).audit.reason,
        "exchanged"
    );
    let updated = |edit: &dyn Fn(&mut Value)| {
        let mut doc = t.policy(NOW);
        edit(&mut doc);
        load(&doc)
    };
    let cases: Vec<(Policy, &str)> = vec![
        (
            updated(&|d| d["revoked"]["jti"] = json!(["edge-7"])),
            "token_revoked",
        ),
        (
            updated(&|d| d["revoked"]["jti"] = json!([c1["jti"]])),
            "token_revoked",
        ),
        (
            updated(&|d| d["revoked"]["sub"] = json!(["alice"])),
            "subject_revoked",
        ),
        (
            updated(&|d| d["trusted_issuers"][0]["revoked_before"] = json!(NOW + 1)),
            "issued_before_revocation",
        ),
        (
            updated(&|d| d["trusted_issuers"][0]["expires"] = json!("2025-12-31")),
            "issuer_expired",
        ),
    ];
    for (p, want) in cases {
        let d = decide_at(&p, "/billing", &t1, NOW + 1);
        assert_denied(&d, want, 401, "invalid_token");
        assert_eq!(d.audit.origin_token_id.as_deref(), Some("edge-7"));
    }
}

// --- 8. header hygiene ------------------------------------------------------------------

fn with_headers<'a>(token: &'a str, names: &[&'a str]) -> HttpRequest<'a> {
    HttpRequest {
        method: "GET",
        path: "/orders/1",
        authorization: vec![token],
        header_names: names.to_vec(),
        ..Default::default()
    }
}

#[test]
fn identity_headers_are_stripped_by_default() {
    let t = Trust::new();
    let mut doc = policy(&t.gw, &[&t.idp], json!([orders_rule()]));
    doc.as_object_mut().unwrap().remove("strip_headers");
    let p = load(&doc);
    let auth = format!("Bearer {}", t.idp.sign(&t.idp.claims(NOW, "orders:read")));
    let names = [
        "accept",
        "X-Forwarded-User",
        "x-auth-request-email",
        "x-amzn-oidc-identity",
        "x-consumer-id",
        "x-request-id",
        "cookie",
    ];
    let d = p.decide(
        &with_headers(&auth, &names),
        &KeySnapshot::default(),
        Duration::from_secs(NOW),
        &mut CountingEntropy(0),
    );
    assert!(
        matches!(d.verdict, Verdict::Forward { .. }),
        "{:?}",
        d.audit
    );
    let want = [
        "x-forwarded-user",
        "x-auth-request-email",
        "x-amzn-oidc-identity",
        "x-consumer-id",
    ];
    assert_eq!(d.strip_headers, want);
    assert_eq!(d.audit.identity_headers, want);
    // An explicit list replaces the default; an empty one strips nothing.
    doc["strip_headers"] = json!([]);
    let p = load(&doc);
    let d = p.decide(
        &with_headers(&auth, &names),
        &KeySnapshot::default(),
        Duration::from_secs(NOW),
        &mut CountingEntropy(0),
    );
    assert!(d.strip_headers.is_empty() && d.audit.identity_headers.is_empty());
    assert!(!d.audit.to_json_line().contains("identity_headers"));
}

#[test]
fn identity_headers_can_refuse_the_request_instead() {
    let t = Trust::new();
    let mut doc = t.policy(NOW);
    doc["strip_headers_action"] = json!("refuse");
    doc["unmatched"] = json!("pass");
    let p = load(&doc);
    let auth = format!(
        "Bearer {}",
        t.idp.sign(&t.claims(&t.idp, NOW, "orders:read", "i1"))
    );
    let decide = |path: &'static str, names: &[&'static str]| {
        let mut r = with_headers(&auth, names);
        r.path = path;
        p.decide(
            &r,
            &KeySnapshot::default(),
            Duration::from_secs(NOW),
            &mut CountingEntropy(0),
        )
    };
    let d = decide("/orders", &["x-auth-request-user", "accept"]);
    assert_denied(&d, "identity_header_present", 400, "invalid_request");
    assert_eq!(d.audit.identity_headers, ["x-auth-request-user"]);
    assert!(
        !d.audit.token_verified,
        "refused before the token is looked at"
    );
    assert_eq!(decide("/orders", &["accept"]).audit.reason, "exchanged");
    // Unmatched requests passed through are held to the same rule.
    assert_eq!(
        decide("/elsewhere", &["x-forwarded-user"]).audit.reason,
        "identity_header_present"
    );
    assert_eq!(decide("/elsewhere", &["accept"]).verdict, Verdict::Pass);
}
