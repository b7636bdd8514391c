//! The hostile-token corpus (`token_exchange_tests::hostile`) replayed natively through
//! `Policy::decide`, for an EdDSA, an ES256 and an RS256 issuer.
//!
//! `cargo test -p token-exchange-tests --test hostile_native`
//!
//! The ignored `write_fuzz_seeds` test regenerates the fuzz seed corpora from the same cases:
//! `cargo test -p token-exchange-tests --test hostile_native -- --ignored write_fuzz_seeds`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_filter::core::{
    Entropy, EntropyError, HttpRequest, KeySnapshot, Outcome, Policy, Verdict,
};
use token_exchange_tests::hostile::{corpus, HostileCase};
use token_exchange_tests::{b64, orders_rule, policy, unb64, Gateway, Issuer, NOW};

const ISS: &str = "https://idp.example";
const KID: &str = "idp-key-1";

/// Deterministic randomness: a counter, so minted `jti`s differ.
struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.0 = self.0.wrapping_add(1);
        buf.fill(self.0);
        Ok(())
    }
}

fn attacker() -> Issuer {
    Issuer::ed25519("https://attacker.example", "attacker-key-1", 66)
}

fn decide(
    p: &Policy,
    authorization: &[String],
    entropy: &mut Counter,
) -> token_exchange_filter::core::Decision {
    let req = HttpRequest {
        method: "GET",
        path: "/orders",
        host: Some("api.example.com"),
        route_name: None,
        authorization: authorization.iter().map(String::as_str).collect(),
        request_id: Some("hostile"),
        header_names: vec![],
    };
    p.decide(
        &req,
        &KeySnapshot::default(),
        Duration::from_secs(NOW),
        entropy,
    )
}

/// Checks one case; returns a description of the mismatch, if any.
fn check(p: &Policy, case: &HostileCase, entropy: &mut Counter) -> Option<String> {
    let d = decide(p, &case.authorization, entropy);
    let (reason, status) = match &d.verdict {
        Verdict::Forward { minted, .. } => {
            // Every token the filter mints is strict JSON with well-typed claims.
            token_exchange_tests::minted_token_parts(&minted.token);
            ("exchanged", 200)
        }
        Verdict::Pass => ("unmatched_pass", 200),
        Verdict::Deny(denial) => (denial.reason.code(), denial.status),
    };
    assert_eq!(
        d.audit.reason, reason,
        "{}: audit disagrees with verdict",
        case.name
    );
    if !case.is_valid() {
        assert!(
            !matches!(d.verdict, Verdict::Forward { .. } | Verdict::Pass),
            "{}: a hostile request was forwarded",
            case.name
        );
        assert_eq!(d.audit.decision, Outcome::Deny, "{}", case.name);
        assert_eq!(d.audit.status, Some(status), "{}", case.name);
    }
    if reason != case.expected_reason || status != case.expected_status {
        return Some(format!(
            "{}: expected {} {}, got {} {}",
            case.name, case.expected_status, case.expected_reason, status, reason
        ));
    }
    None
}

fn replay(issuer: &Issuer) {
    let gw = Gateway::new();
    let other = attacker();
    let p = Policy::from_json(
        policy(&gw, &[issuer], json!([orders_rule()]))
            .to_string()
            .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cases = corpus(issuer, &other, NOW);
    assert!(cases.len() >= 100, "corpus shrank: {}", cases.len());
    let names: HashSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");

    let valid = vec![format!(
        "Bearer {}",
        issuer.sign(&issuer.claims(NOW, "orders:read"))
    )];
    let mut entropy = Counter(0);
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(f) = check(&p, case, &mut entropy) {
            failures.push(f);
        }
        // The filter keeps no state a hostile request could poison: a valid token still passes.
        let d = decide(&p, &valid, &mut entropy);
        assert!(
            matches!(d.verdict, Verdict::Forward { .. }),
            "after {:?}: a valid token was refused: {}",
            case.name,
            d.audit.reason
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed for {}:\n{}",
        failures.len(),
        cases.len(),
        issuer.alg(),
        failures.join("\n")
    );
    // Minted tokens are genuine: verify one independently.
    if let Verdict::Forward { minted, .. } = decide(&p, &valid, &mut entropy).verdict {
        let (_, claims) = gw.verify(&minted.token, NOW);
        assert_eq!(claims["sub"], "alice");
    }
}

#[test]
fn hostile_corpus_eddsa_issuer() {
    replay(&Issuer::ed25519(ISS, KID, 1));
}

#[test]
fn hostile_corpus_es256_issuer() {
    replay(&Issuer::es256(ISS, KID, 2));
}

#[test]
fn hostile_corpus_rs256_issuer() {
    replay(&Issuer::rs256(ISS, KID));
}

#[test]
fn corpus_covers_every_class() {
    let issuer = Issuer::ed25519(ISS, KID, 1);
    let cases = corpus(&issuer, &attacker(), NOW);
    let reasons: HashSet<&str> = cases.iter().map(|c| c.expected_reason).collect();
    for r in [
        "exchanged",
        "algorithm_not_allowed",
        "invalid_signature",
        "unknown_key",
        "unsupported_critical_header",
        "nested_token",
        "encrypted_token",
        "malformed_token",
        "duplicate_claim",
        "invalid_claim",
        "json_too_deep",
        "too_many_claims",
        "too_many_scopes",
        "token_too_large",
        "token_expired",
        "untrusted_issuer",
        "gateway_token_replay",
        "duplicate_authorization",
        "malformed_authorization",
        "missing_token",
    ] {
        assert!(reasons.contains(r), "no case expects {r}");
    }
    let unsafe_for_http: Vec<&str> = cases
        .iter()
        .filter(|c| !c.http_safe())
        .map(|c| c.name.as_str())
        .collect();
    assert!(unsafe_for_http.contains(&"header: trailing space"));
    assert!(unsafe_for_http.contains(&"header: CRLF inside the value"));
    assert!(!unsafe_for_http.contains(&"valid token"));
}

// --- fuzz seeds ---------------------------------------------------------------------------

fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file_name(name)), bytes).unwrap();
}

/// Seeds larger than this are left out (the fuzzer finds the size limits itself).
const MAX_SEED: usize = 6000;

/// Regenerates `fuzz/seeds/*` from the corpus and the test fixtures.
#[test]
#[ignore = "writes files; run on demand"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let issuer = Issuer::ed25519(ISS, KID, 1);
    let gw = Gateway::new();
    let cases = corpus(&issuer, &attacker(), NOW);
    for case in &cases {
        // validate, raw mode: 0x00, method, path, Authorization values, one per line.
        let mut raw = vec![0u8];
        raw.extend_from_slice(b"GET\n/orders");
        for a in &case.authorization {
            raw.push(b'\n');
            raw.extend_from_slice(a.as_bytes());
        }
        if raw.len() <= MAX_SEED && !case.authorization.iter().any(|a| a.contains('\n')) {
            write(&root.join("validate"), &case.name, &raw);
        }
        let Some(token) = case.authorization.first().and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) else {
            continue;
        };
        if token.len() <= MAX_SEED {
            write(&root.join("token_parse"), &case.name, token.as_bytes());
        }
        let parts: Vec<&str> = token.split('.').collect();
        if let [h, p, _] = parts.as_slice() {
            let (Ok(h), Ok(p)) = (base64_decode(h), base64_decode(p)) else {
                continue;
            };
            if h.len() + p.len() > MAX_SEED {
                continue;
            }
            write(&root.join("json"), &format!("{} header", case.name), &h);
            write(&root.join("json"), &format!("{} payload", case.name), &p);
            // validate, signed mode: 0x01, method, path, header, payload; the target signs
            // them as the `https://signed.fuzz` issuer, so the claim checks are reached.
            let swap = |b: &[u8]| {
                String::from_utf8_lossy(b)
                    .replace(ISS, "https://signed.fuzz")
                    .replace(KID, "fuzz-signed-1")
                    .into_bytes()
            };
            let (h, p) = (swap(&h), swap(&p));
            if h.contains(&b'\n') || p.contains(&b'\n') {
                continue;
            }
            let mut signed = vec![1u8];
            for part in [&b"GET"[..], b"/orders", &h] {
                signed.extend_from_slice(part);
                signed.push(b'\n');
            }
            signed.extend_from_slice(&p);
            write(
                &root.join("validate"),
                &format!("signed {}", case.name),
                &signed,
            );
        }
    }

    // validate, trust boundaries: a gateway-signed token (mode 3: the target signs it with the
    // gateway's key) shaped like a minted one, for the chained rule and its near misses; and
    // signed-mode tokens for the step-up and shadow rules.
    let minted = json!({
        "iss": "https://gateway.test", "sub": "alice", "aud": "orders-service",
        "iat": NOW, "nbf": NOW, "exp": NOW + 60, "jti": "AQEBAQEBAQEBAQEBAQEBAQ",
        "scope": "orders:read orders:write", "client_id": "web-app",
        "exchanged_from": { "iss": "https://signed.fuzz", "token_id": "orig-1", "iat": NOW },
        "act": { "sub": "web-app", "iss": "https://signed.fuzz", "rule": "orders-read", "audience": "orders-service" },
    });
    let gw_header = json!({ "alg": "EdDSA", "kid": "gw-1", "typ": "at+jwt" });
    let mut deeper = minted.clone();
    deeper["act"] =
        json!({ "sub": "orders-service", "audience": "billing-service", "act": minted["act"] });
    let mut untyped = gw_header.clone();
    untyped["typ"] = json!("JWT");
    let mut stranger = minted.clone();
    stranger["exchanged_from"]["iss"] = json!("https://nobody.example");
    let admin = {
        let mut c = signed_claims();
        c["auth_time"] = json!(NOW - 60);
        c["scope"] = json!("admin");
        c
    };
    let mut stale = admin.clone();
    stale["auth_time"] = json!(NOW - 3600);
    let mut reports = signed_claims();
    reports["scope"] = json!("reports:read");
    let signed_header = json!({ "alg": "EdDSA", "kid": "fuzz-signed-1", "typ": "JWT" });
    for (name, mode, path, header, payload) in [
        (
            "gateway token chained",
            3u8,
            "/billing",
            &gw_header,
            &minted,
        ),
        (
            "gateway token deeper chain",
            3,
            "/billing",
            &gw_header,
            &deeper,
        ),
        ("gateway token typ jwt", 3, "/billing", &untyped, &minted),
        (
            "gateway token unknown origin",
            3,
            "/billing",
            &gw_header,
            &stranger,
        ),
        (
            "gateway token at the edge rule",
            3,
            "/orders",
            &gw_header,
            &minted,
        ),
        ("step up satisfied", 1, "/admin", &signed_header, &admin),
        ("step up too old", 1, "/admin", &signed_header, &stale),
        ("shadow rule", 1, "/reports", &signed_header, &reports),
    ] {
        let mut seed = vec![mode];
        for part in [&b"GET"[..], path.as_bytes(), header.to_string().as_bytes()] {
            seed.extend_from_slice(part);
            seed.push(b'\n');
        }
        seed.extend_from_slice(payload.to_string().as_bytes());
        write(&root.join("validate"), name, &seed);
    }

    // config: the test policy documents (the committed examples are copied by hand).
    let rs = Issuer::rs256(ISS, KID);
    let es = Issuer::es256(ISS, KID, 2);
    for (name, doc) in [
        (
            "test policy eddsa",
            policy(&gw, &[&issuer], json!([orders_rule()])),
        ),
        ("test policy three issuers", {
            let rule = token_exchange_tests::accepting(
                orders_rule(),
                &[ISS, "https://es.example", "https://rs.example"],
            );
            let mut d = policy(&gw, &[&issuer, &es, &rs], json!([rule]));
            d["trusted_issuers"][1]["issuer"] = json!("https://es.example");
            d["trusted_issuers"][2]["issuer"] = json!("https://rs.example");
            d["unmatched"] = json!("pass");
            d["limits"] = json!({ "max_json_depth": 8, "max_claims": 32, "max_scopes": 8 });
            d
        }),
    ] {
        write(&root.join("config"), name, doc.to_string().as_bytes());
    }

    // jwks: public keys of every type, the gateway's private key, and near misses.
    let mut jwks: Vec<(&str, Value)> = vec![
        ("ed25519 public", issuer.public_jwk()),
        ("es256 public", es.public_jwk()),
        ("rs256 public", rs.public_jwk()),
        ("ed25519 private", gw.private_jwk()),
        (
            "oct",
            json!({ "kty": "oct", "kid": "h", "alg": "HS256", "k": b64(&[7; 32]) }),
        ),
    ];
    let mut no_alg = rs.public_jwk();
    no_alg.as_object_mut().unwrap().remove("alg");
    jwks.push(("rsa without alg", no_alg));
    let mut ps = rs.public_jwk();
    ps["alg"] = json!("PS256");
    jwks.push(("rsa ps256", ps));
    let mut bad_point = es.public_jwk();
    let mut y = unb64(bad_point["y"].as_str().unwrap());
    y[31] ^= 1;
    bad_point["y"] = json!(b64(&y));
    jwks.push(("ec point off curve", bad_point));
    let mut wrong_alg = issuer.public_jwk();
    wrong_alg["alg"] = json!("ES256");
    jwks.push(("ed25519 with es256 alg", wrong_alg));
    for (name, jwk) in jwks {
        write(&root.join("jwks"), name, jwk.to_string().as_bytes());
    }
    // jwks, whole key sets: each provider's document as it publishes it.
    for prov in token_exchange_tests::providers::all() {
        write(
            &root.join("jwks"),
            &format!("key set {}", prov.name),
            prov.jwks.to_string().as_bytes(),
        );
    }
}

/// Valid claims of the fuzz target's signed issuer at NOW.
fn signed_claims() -> Value {
    json!({
        "iss": "https://signed.fuzz", "sub": "alice", "aud": "api", "azp": "web-app",
        "iat": NOW, "nbf": NOW, "exp": NOW + 600, "jti": "orig-1",
        "scope": "orders:read", "acr": "urn:mfa",
    })
}

fn base64_decode(s: &str) -> Result<Vec<u8>, ()> {
    token_exchange_filter::core::token::b64url_decode(s).ok_or(())
}

/// Prints the corpus (for reports): `cargo test -p token-exchange-tests --test
/// hostile_native -- --ignored --nocapture list_cases`.
#[test]
#[ignore = "prints the corpus"]
fn list_cases() {
    let cases = corpus(&Issuer::ed25519(ISS, KID, 1), &attacker(), NOW);
    for c in &cases {
        println!(
            "{:>3} {:<28} {}",
            c.expected_status, c.expected_reason, c.name
        );
    }
    println!("{} cases", cases.len());
}
