//! Introspection answers (RFC 7662 §2.2) through the whole path: parsed strictly
//! (`parse_introspection`), then, as the glue would, an opaque token decided on that answer
//! with the policy's claim checks, rule, narrowing and minting.
//!
//! The first byte picks the response head (status and content type: 200 JSON most of the
//! time, sometimes another status or type); the rest is the body.
//!
//! Never panics. A head other than 200 JSON is a failure of the endpoint. A failure is
//! refused 503 `introspection_unavailable`; `active: false` 401 `token_inactive`; an
//! exchanged token was `active: true`, is minted for the rule's one audience with scopes
//! inside both the answer's and the rule's grant, never outlives the answer's `exp`, and the
//! audit names the token by digest only.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use token_exchange_filter::core::fetch::CallResponse;
use token_exchange_filter::core::introspect::{
    parse_introspection, Introspected, IntrospectionLookup, IntrospectionResult, TokenDigest,
};
use token_exchange_filter::core::{DenyReason, HttpRequest, KeySnapshot, Outcome, Policy, Verdict};
use token_exchange_tests::{
    load, orders_rule, policy, taking_opaque_tokens, CountingEntropy, Gateway, Issuer,
};

const IDP: &str = "https://idp.test";
const OPAQUE: &str = "2YotnFZFEjr1zCsicMWpAA";
/// 2026-01-01T00:00:00Z, as in the test suites.
const NOW: u64 = 1_767_225_600;
const MAX_BYTES: usize = 4096;

fn opaque_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let gw = Gateway::new();
        let idp = Issuer::ed25519(IDP, "k1", 7);
        let trusted =
            taking_opaque_tokens(idp.trusted(&["api"]), "https://idp.test/introspect", "idp");
        let mut doc = policy(&gw, &[], json!([orders_rule()]));
        doc["trusted_issuers"] = json!([trusted]);
        load(&doc)
    })
}

/// The one answer the fuzzer gave, for the one token.
struct Answer(IntrospectionResult);

impl IntrospectionLookup for Answer {
    fn introspected(&self, issuer: &str, digest: &TokenDigest) -> Option<IntrospectionResult> {
        assert_eq!(issuer, IDP);
        assert_eq!(*digest, TokenDigest::of(OPAQUE));
        Some(self.0.clone())
    }
}

fn head(selector: u8) -> Vec<(String, String)> {
    let (status, content_type) = match selector % 8 {
        0..=4 => ("200", "application/json"),
        5 => ("200", "application/json; charset=utf-8"),
        6 => ("200", "text/html"),
        _ => ("503", "application/json"),
    };
    vec![
        (":status".into(), status.into()),
        ("content-type".into(), content_type.into()),
    ]
}

fn scopes(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split(' ').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let headers = head(selector);
    let response = CallResponse {
        headers: &headers,
        body,
        body_size: body.len(),
    };
    let parsed = parse_introspection(&response, MAX_BYTES);
    if selector % 8 >= 6 || body.len() > MAX_BYTES {
        assert!(
            parsed.is_err(),
            "accepted a non-200 or non-JSON or oversized answer"
        );
    }
    let (result, answer): (IntrospectionResult, Option<Map<String, Value>>) = match parsed {
        Ok(Introspected::Active(members)) => {
            assert_eq!(members.get("active"), Some(&Value::Bool(true)));
            let mut claims = members.clone();
            claims.remove("active");
            (IntrospectionResult::Active(Arc::new(claims)), Some(members))
        }
        Ok(Introspected::Inactive) => (IntrospectionResult::Inactive, None),
        Err(_) => (IntrospectionResult::Unavailable, None),
    };
    let authorization = format!("Bearer {OPAQUE}");
    let req = HttpRequest {
        method: "GET",
        path: "/orders/1",
        host: Some("api.example.com"),
        authorization: vec![&authorization],
        request_id: Some("req-1"),
        ..Default::default()
    };
    let d = opaque_policy().decide_introspected(
        &req,
        &KeySnapshot::default(),
        &Answer(result.clone()),
        Duration::from_secs(NOW),
        &mut CountingEntropy(0),
    );
    let token_id = d.audit.token_id.clone().unwrap_or_default();
    assert!(token_id.starts_with("sha256:"), "{token_id}");
    assert!(!token_id.contains(OPAQUE));
    match (&result, &d.verdict) {
        (IntrospectionResult::Unavailable, Verdict::Deny(denial)) => {
            assert_eq!(denial.reason, DenyReason::IntrospectionUnavailable);
            assert_eq!(denial.status, 503);
        }
        (IntrospectionResult::Inactive, Verdict::Deny(denial)) => {
            assert_eq!(denial.reason, DenyReason::TokenInactive);
            assert_eq!(denial.status, 401);
        }
        (IntrospectionResult::Active(_), Verdict::Deny(denial)) => {
            assert!(denial.status == 401 || denial.status == 403, "{denial:?}");
        }
        (IntrospectionResult::Active(_), Verdict::Forward { minted, .. }) => {
            let answer = answer.unwrap_or_default();
            assert_eq!(d.audit.decision, Outcome::Allow);
            assert_eq!(minted.audience, "orders-service");
            // A NumericDate may be a non-integer JSON number (RFC 7519 §2): the filter
            // truncates it, so the bound is read the same way.
            let exp = answer
                .get("exp")
                .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
                .unwrap_or(0);
            assert!(minted.expires_at > NOW && minted.expires_at <= exp.min(NOW + 60));
            let held = scopes(answer.get("scope"));
            for s in minted.scope.split(' ') {
                assert!(held.iter().any(|h| h == s), "minted {s} not held");
                assert!(
                    s == "orders:read" || s == "orders:write",
                    "minted {s} not granted"
                );
            }
            let (_, claims) = token_exchange_tests::minted_token_parts(&minted.token);
            assert_eq!(claims.get("aud"), Some(&json!("orders-service")));
        }
        (result, verdict) => panic!("{result:?} decided {verdict:?}"),
    }
});
