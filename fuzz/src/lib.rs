//! Shared fixtures for the fuzz targets: a fixed, valid policy and the decoding of the
//! `validate` target's input.
//!
//! The policy trusts two Ed25519 issuers:
//! - `https://idp.example` (kid `idp-key-1`): its private key is never used anywhere, so no
//!   input can carry a valid signature for it; tokens the test suites sign for this `iss`
//!   and `kid` (with a different key) reach signature verification and must fail there.
//! - `https://signed.fuzz` (kid `fuzz-signed-1`): in "signed" mode the `validate` target
//!   itself signs the fuzzer's header and payload bytes with this key, so the claim checks
//!   after the signature are fuzzed too. Its signatures are never part of any input.
//!
//! In "gateway" mode the target signs with the gateway's own key instead, so the chained
//! exchange (`chain::verify_gateway_token`, the `billing` rule) is fuzzed past its signature.
//! The policy also has a step-up rule, a shadow rule, revocation lists, lifecycle dates and
//! a scope ceiling on the signed issuer (see [`policy_json`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use token_exchange_filter::core::Policy;

/// 2026-01-01T00:00:00Z, as in the test suites.
pub const NOW: u64 = 1_767_225_600;
/// The gateway's own `iss`.
pub const GATEWAY_ISS: &str = "https://gateway.test";
/// The issuer whose private key no input can know.
pub const SECRET_ISS: &str = "https://idp.example";
/// Its key id.
pub const SECRET_KID: &str = "idp-key-1";
/// The issuer the `validate` target signs for in signed mode.
pub const SIGNED_ISS: &str = "https://signed.fuzz";
/// Its key id.
pub const SIGNED_KID: &str = "fuzz-signed-1";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn keypair(seed: u8) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
}

fn signed_issuer_key() -> &'static ed25519_compact::KeyPair {
    static KEY: OnceLock<ed25519_compact::KeyPair> = OnceLock::new();
    KEY.get_or_init(|| keypair(0x5b))
}

fn trusted(iss: &str, kid: &str, pk: &[u8]) -> Value {
    json!({
        "issuer": iss,
        "jwks": { "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(pk) }] },
        "algorithms": ["EdDSA"],
        "audiences": ["api"],
    })
}

/// The gateway's key id.
pub const GATEWAY_KID: &str = "gw-1";

fn gateway_key() -> &'static ed25519_compact::KeyPair {
    static KEY: OnceLock<ed25519_compact::KeyPair> = OnceLock::new();
    KEY.get_or_init(|| keypair(42))
}

/// What each rule of [`policy_json`] mints: (rule, audience, grantable scopes, ttl).
pub const MINTS: &[(&str, &str, &[&str], u64)] = &[
    ("orders-read", "orders-service", &["orders:read", "orders:write"], 60),
    ("billing", "billing-service", &["orders:read"], 60),
    ("admin", "admin-service", &["admin"], 30),
    ("reports", "reports-service", &["reports:read"], 30),
];

/// The policy document (JSON) the `validate` target decides with: the suites' orders rule,
/// `billing` (`/billing`, takes gateway tokens for `orders-service`), `admin` (`/admin`,
/// step-up: `acr` and `max_age_seconds`), `reports` (`/reports`, shadow mode); the signed
/// issuer with a scope ceiling, review and expiry dates far off and a `revoked_before` in
/// the past; `revoked` lists.
pub fn policy_json() -> String {
    let gw = Ed25519KeyPair::from_bytes(&gateway_key().to_vec())
        .unwrap()
        .with_key_id(GATEWAY_KID);
    let gw_jwk: Value = serde_json::from_str(&gw.to_jwk()).unwrap();
    // The secret issuer's key pair is generated here and its private half dropped at once.
    let secret = keypair(0xa5);
    use token_exchange_tests::accepting;
    let both = &[SECRET_ISS, SIGNED_ISS];
    let mut signed = trusted(SIGNED_ISS, SIGNED_KID, signed_issuer_key().pk.as_ref());
    signed["max_scopes"] = json!(["orders:read", "orders:write", "admin", "reports:read"]);
    signed["review_by"] = json!("2099-12-31");
    signed["expires"] = json!("2099-12-31");
    signed["revoked_before"] = json!("2025-01-01T00:00:00Z");
    let mint = |rule: &str| {
        let (_, audience, scopes, ttl) = MINTS.iter().find(|m| m.0 == rule).unwrap();
        json!({ "audience": audience, "scopes": scopes, "ttl_seconds": ttl })
    };
    let billing = json!({
        "name": "billing", "match": { "path_prefix": "/billing" },
        "accept_gateway_tokens": { "audiences": ["orders-service"] },
        "mint": mint("billing"),
    });
    let admin = json!({
        "name": "admin", "match": { "path_prefix": "/admin" },
        "require": { "acr": ["urn:mfa"], "max_age_seconds": 300 },
        "mint": mint("admin"),
    });
    let reports = json!({
        "name": "reports", "match": { "path_prefix": "/reports" }, "mode": "shadow",
        "require": { "scopes": ["reports:read"] },
        "mint": mint("reports"),
    });
    json!({
        "issuer": GATEWAY_ISS,
        "signing_keys": [gw_jwk],
        "trusted_issuers": [trusted(SECRET_ISS, SECRET_KID, secret.pk.as_ref()), signed],
        "clock_skew_seconds": 30,
        // The same rule as every other suite, for both issuers (with two, it must name them).
        "rules": [
            accepting(token_exchange_tests::orders_rule(), both),
            accepting(billing, both),
            accepting(admin, both),
            accepting(reports, both),
        ],
        "revoked": { "jti": ["revoked-jti"], "sub": ["mallory"] },
        "strip_headers": ["x-forwarded-user"],
    })
    .to_string()
}

/// The policy, built once.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY
        .get_or_init(|| Policy::from_json(policy_json().as_bytes()).expect("fuzz policy is valid"))
}

/// A request decoded from fuzzer bytes.
#[derive(Debug)]
pub struct FuzzRequest {
    /// Whether the token was signed by the target itself (the trusted `SIGNED_ISS` key, or
    /// the gateway's).
    pub signed: bool,
    /// Whether it was signed with the gateway's own key (gateway mode).
    pub as_gateway: bool,
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// Authorization header values.
    pub authorization: Vec<String>,
}

/// Decodes the `validate` input format:
///
/// `mode byte` then lines separated by `\n`: `method`, `path`, then
/// - mode even (raw): every further line is one Authorization header value;
/// - mode odd (signed): `header JSON`, `payload JSON` (any bytes) and an optional scheme
///   line (default `Bearer`); the target signs `b64(header).b64(payload)` itself, with the
///   gateway's key when bit 1 of the mode is set (gateway mode), else as `SIGNED_ISS`.
pub fn decode(data: &[u8]) -> Option<FuzzRequest> {
    let (&mode, rest) = data.split_first()?;
    let mut lines = rest.split(|&b| b == b'\n');
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let method = text(lines.next().unwrap_or_default());
    let path = text(lines.next().unwrap_or_default());
    if mode & 1 == 0 {
        return Some(FuzzRequest {
            signed: false,
            as_gateway: false,
            method,
            path,
            authorization: lines.map(text).collect(),
        });
    }
    let header = lines.next().unwrap_or_default();
    let payload = lines.next().unwrap_or_default();
    let scheme = lines.next().map(text).unwrap_or_else(|| "Bearer".into());
    let as_gateway = mode & 2 != 0;
    let token = if as_gateway {
        sign_as_gateway(header, payload)
    } else {
        sign(header, payload)
    };
    Some(FuzzRequest {
        signed: true,
        as_gateway,
        method,
        path,
        authorization: vec![format!("{scheme} {token}")],
    })
}

/// A compact JWS over exactly these bytes, signed with the `SIGNED_ISS` key.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = signed_issuer_key().sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64(sig.as_ref()))
}

/// A compact JWS over exactly these bytes, signed with the gateway's key.
pub fn sign_as_gateway(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = gateway_key().sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64(sig.as_ref()))
}

/// The `validate` seed encoding of a raw request (inverse of [`decode`] for mode 0).
pub fn encode_raw(method: &str, path: &str, authorization: &[String]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(path.as_bytes());
    for a in authorization {
        out.push(b'\n');
        out.extend_from_slice(a.as_bytes());
    }
    out
}

/// The `validate` seed encoding of a signed-mode request (gateway mode: `as_gateway`).
pub fn encode_signed(
    method: &str,
    path: &str,
    header: &[u8],
    payload: &[u8],
    as_gateway: bool,
) -> Vec<u8> {
    let mut out = vec![if as_gateway { 3u8 } else { 1u8 }];
    for part in [method.as_bytes(), path.as_bytes(), header] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out.extend_from_slice(payload);
    out
}
