//! A corpus of hostile (and a few deceptively valid) requests, as data every suite can
//! replay: natively through `Policy::decide`, through the Wasm filter under the harness, and
//! end to end. Each case names the Authorization header values to send and the audit reason
//! and HTTP status the filter must answer with.
//!
//! The expectations assume the standard policy of this crate: `policy(&gw, &[issuer],
//! json!([orders_rule()]))` (one trusted issuer with one key and its own algorithm, audience
//! `api`, 30 s clock skew, default limits: 8192 bytes, depth 16, 64 claims, 64 scopes), a
//! `GET /orders` request, and `now` as the decision time.
//!
//! Classes covered: RFC 8725 §2.1 / §3.1 (`alg: none`, algorithm confusion), §3.2/§3.10
//! (key-locating header parameters pointing at attacker keys: `jku`, `x5u`, `jwk`, `x5c`,
//! `kid` injection), §3.11/§3.12 (`typ`, nested tokens), `crit` (RFC 7515 §4.1.11), JWE,
//! compact-serialization edge cases, strict JSON (duplicates, depth, UTF-8), claim types and
//! limits, cut-and-paste of segments, and Authorization header smuggling.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{b64, unb64, Gateway, Issuer};

/// One request to replay and what the filter must answer.
#[derive(Debug, Clone)]
pub struct HostileCase {
    /// A short, unique, descriptive name.
    pub name: String,
    /// Authorization header values to send, in order (empty = no header).
    pub authorization: Vec<String>,
    /// The audit `reason` code (`DenyReason::code`), or `exchanged` for a valid request.
    pub expected_reason: &'static str,
    /// The HTTP status: the local response's, or 200 when the request is forwarded.
    pub expected_status: u16,
}

impl HostileCase {
    /// Whether the request must be forwarded (with a minted token).
    pub fn is_valid(&self) -> bool {
        self.expected_reason == "exchanged"
    }

    /// Whether every header value survives a real HTTP hop unchanged: no CR, LF or NUL (a
    /// proxy refuses those) and no leading or trailing space or tab (HTTP/1.1 and Envoy strip
    /// optional whitespace around field values, RFC 9110 §5.5, turning e.g. the "trailing
    /// space" case into a valid request). Suites that go through a real proxy should skip the
    /// cases where this is false; the native and harness suites can replay all of them.
    pub fn http_safe(&self) -> bool {
        self.authorization.iter().all(|v| {
            !v.contains(['\r', '\n', '\0'])
                && !v.starts_with([' ', '\t'])
                && !v.ends_with([' ', '\t'])
        })
    }
}

/// The corpus for `issuer` (trusted by the policy) and `other` (an attacker: not trusted,
/// its own key), at `now`; the gateway is the standard test [`Gateway`].
pub fn corpus(issuer: &Issuer, other: &Issuer, now: u64) -> Vec<HostileCase> {
    corpus_for(issuer, other, &Gateway::new().iss, now)
}

fn status_of(reason: &str) -> u16 {
    match reason {
        "exchanged" => 200,
        "duplicate_authorization" | "malformed_authorization" | "ambiguous_path" => 400,
        "insufficient_scope" | "acr_not_satisfied" | "amr_not_satisfied" | "caller_not_allowed"
        | "issuer_not_allowed" | "no_grantable_scope" | "no_matching_rule" => 403,
        "internal_error" => 500,
        _ => 401,
    }
}

/// HMAC-SHA256 (RFC 2104), for the HS256 confusion cases.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// `b64(header).b64(payload)` over raw bytes, signed by `by`.
fn sign_bytes(by: &Issuer, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = by.raw_signature(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn unsigned(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(payload.as_bytes()),
        b64(sig)
    )
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// Like [`corpus`], with the gateway's own `iss` given explicitly.
pub fn corpus_for(
    issuer: &Issuer,
    other: &Issuer,
    gateway_iss: &str,
    now: u64,
) -> Vec<HostileCase> {
    let mut cases: Vec<HostileCase> = Vec::new();
    let mut add = |name: String, authorization: Vec<String>, reason: &'static str| {
        cases.push(HostileCase {
            name,
            authorization,
            expected_reason: reason,
            expected_status: status_of(reason),
        });
    };
    let bearer = |t: &str| vec![format!("Bearer {t}")];

    let alg = issuer.alg();
    let kid = issuer.kid.as_str();
    let claims = issuer.claims(now, "orders:read");
    let claims_text = claims.to_string();
    let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" });
    let header_text = header.to_string();
    let valid = issuer.sign(&claims);
    let with_claims = |f: &dyn Fn(&mut Map<String, Value>)| -> Value {
        let mut c = claims.as_object().cloned().unwrap_or_default();
        f(&mut c);
        Value::Object(c)
    };
    // A header of the issuer's with extra/overridden members.
    let header_with = |extra: Value| -> String {
        let mut h = header.as_object().cloned().unwrap_or_default();
        if let Value::Object(e) = extra {
            h.extend(e);
        }
        Value::Object(h).to_string()
    };

    // --- baseline and deceptively valid requests -------------------------------------
    add("valid token".into(), bearer(&valid), "exchanged");
    add(
        "lowercase bearer scheme".into(),
        vec![format!("bearer {valid}")],
        "exchanged",
    );
    add(
        "uppercase BEARER scheme".into(),
        vec![format!("BEARER {valid}")],
        "exchanged",
    );
    add(
        "exp as a float (a valid NumericDate)".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replace(
                &format!("\"exp\":{}", now + 600),
                &format!("\"exp\":{}.5", now + 600),
            ),
        )),
        "exchanged",
    );
    add(
        "no kid with a single issuer key".into(),
        bearer(&issuer.sign_raw(&json!({ "alg": alg }).to_string(), &claims_text)),
        "exchanged",
    );
    add(
        "typ at+jwt (RFC 9068)".into(),
        bearer(&issuer.sign_raw(&header_with(json!({ "typ": "at+jwt" })), &claims_text)),
        "exchanged",
    );
    add(
        "unknown non-critical header parameter".into(),
        bearer(&issuer.sign_raw(&header_with(json!({ "x-custom": [1, 2] })), &claims_text)),
        "exchanged",
    );
    add(
        "aud as an array containing the audience".into(),
        bearer(&issuer.sign(&with_claims(&|c| {
            c.insert("aud".into(), json!(["other", "api"]));
        }))),
        "exchanged",
    );

    // --- alg: none, any case, with and without a signature ---------------------------
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = json!({ "alg": none, "kid": kid, "typ": "JWT" }).to_string();
        add(
            format!("alg {none} without signature"),
            bearer(&unsigned(&h, &claims_text, b"")),
            "algorithm_not_allowed",
        );
        add(
            format!("alg {none} with the issuer's signature"),
            bearer(&issuer.sign_raw(&h, &claims_text)),
            "algorithm_not_allowed",
        );
    }
    add(
        "alg missing".into(),
        bearer(&issuer.sign_raw(&json!({ "kid": kid }).to_string(), &claims_text)),
        "malformed_token",
    );
    add(
        "alg empty string".into(),
        bearer(&issuer.sign_raw(&json!({ "alg": "", "kid": kid }).to_string(), &claims_text)),
        "algorithm_not_allowed",
    );
    add(
        "alg not a string".into(),
        bearer(&issuer.sign_raw(
            &json!({ "alg": ["EdDSA"], "kid": kid }).to_string(),
            &claims_text,
        )),
        "malformed_token",
    );

    // --- algorithm confusion ----------------------------------------------------------
    // HS256 with the issuer's public key material as the HMAC secret (RFC 8725 §2.1).
    let jwk = issuer.public_jwk();
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![("public JWK text", jwk.to_string().into_bytes())];
    for member in ["x", "n"] {
        if let Some(s) = jwk.get(member).and_then(Value::as_str) {
            secrets.push(("raw public key bytes", unb64(s)));
            secrets.push(("base64url public key text", s.as_bytes().to_vec()));
        }
    }
    for hs in ["HS256", "HS384", "HS512"] {
        for (what, secret) in &secrets {
            let h = json!({ "alg": hs, "kid": kid, "typ": "JWT" }).to_string();
            let input = format!("{}.{}", b64(h.as_bytes()), b64(claims_text.as_bytes()));
            let mac = hmac_sha256(secret, input.as_bytes());
            add(
                format!("{hs} keyed with the issuer's {what}"),
                bearer(&format!("{input}.{}", b64(&mac))),
                "algorithm_not_allowed",
            );
        }
    }
    // Another family's algorithm naming the issuer's kid (e.g. ES256 on an RSA key).
    for wrong in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        if wrong != alg {
            let h = json!({ "alg": wrong, "kid": kid, "typ": "JWT" }).to_string();
            add(
                format!("{wrong} header on the issuer's {alg} key"),
                bearer(&issuer.sign_raw(&h, &claims_text)),
                "algorithm_not_allowed",
            );
        }
    }
    // The algorithm swapped within the key's family, signature still the real one.
    let swaps: &[&str] = match alg {
        "RS256" => &["PS256", "RS384", "RS512", "rs256"],
        "ES256" => &["ES384", "ES512", "ES256K", "es256"],
        _ => &["Ed448", "Ed25519", "ED25519", "eddsa"],
    };
    for swapped in swaps {
        let h = json!({ "alg": swapped, "kid": kid, "typ": "JWT" }).to_string();
        add(
            format!("{swapped} header with a genuine {alg} signature"),
            bearer(&issuer.sign_raw(&h, &claims_text)),
            "algorithm_not_allowed",
        );
    }

    // --- key-locating header parameters pointing at attacker keys ----------------------
    let attacker_claims = claims_text.clone();
    let attacker_jwk = other.public_jwk();
    for (param, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", attacker_jwk.clone()),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUattacker"])),
    ] {
        // The header names the issuer's algorithm and kid: only the signature is the attacker's.
        let h = json!({ "alg": alg, "kid": kid, "typ": "JWT", param: value }).to_string();
        add(
            format!("{param} header pointing at the attacker's key, signed by the attacker"),
            bearer(&other.sign_raw(&h, &attacker_claims)),
            "invalid_signature",
        );
    }
    add(
        "embedded jwk with the attacker's kid, signed by the attacker".into(),
        bearer(&other.sign_raw(
            &json!({ "alg": alg, "kid": other.kid, "jwk": attacker_jwk }).to_string(),
            &attacker_claims,
        )),
        "unknown_key",
    );
    add(
        "issuer's iss and kid, signed by the attacker".into(),
        bearer(&other.sign_raw(&json!({ "alg": alg, "kid": kid }).to_string(), &claims_text)),
        "invalid_signature",
    );

    // --- kid injection and traversal (signed by the real issuer) ----------------------
    // Long, but inside limits.max_header_bytes (2048 encoded bytes by default).
    let long_kid = "k".repeat(1000);
    for (what, bad_kid) in [
        ("path traversal", "../../../../etc/passwd"),
        ("absolute path", "/dev/null"),
        ("SQL injection", "x' UNION SELECT 'secret' --"),
        ("command injection", "k1; rm -rf /"),
        ("NUL byte", "\u{0}"),
        ("kid followed by NUL", &format!("{kid}\u{0}")),
        ("empty", ""),
        ("very long", &long_kid),
        ("URL", "https://attacker.example/key"),
    ] {
        let h = json!({ "alg": alg, "kid": bad_kid, "typ": "JWT" }).to_string();
        add(
            format!("kid: {what}"),
            bearer(&issuer.sign_raw(&h, &claims_text)),
            "unknown_key",
        );
    }
    add(
        "kid beyond the header size limit".into(),
        bearer(&issuer.sign_raw(
            &json!({ "alg": alg, "kid": "k".repeat(4000), "typ": "JWT" }).to_string(),
            &claims_text,
        )),
        "header_too_large",
    );
    add(
        "kid not a string".into(),
        bearer(&issuer.sign_raw(
            &json!({ "alg": alg, "kid": [kid] }).to_string(),
            &claims_text,
        )),
        "malformed_token",
    );
    add(
        "kid so long the token exceeds the limit".into(),
        bearer(&issuer.sign_raw(
            &json!({ "alg": alg, "kid": "k".repeat(9000) }).to_string(),
            &claims_text,
        )),
        "token_too_large",
    );

    // --- crit, typ, cty, JWE -----------------------------------------------------------
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!(["x-unknown"]),
        json!([]),
        json!("b64"),
    ] {
        add(
            format!("crit {crit}"),
            bearer(&issuer.sign_raw(
                &header_with(json!({ "crit": crit, "b64": false, "x-unknown": 1, "exp": 1 })),
                &claims_text,
            )),
            "unsupported_critical_header",
        );
    }
    for cty in ["JWT", "jwt"] {
        let inner = issuer.sign(&claims);
        add(
            format!("nested token (cty {cty})"),
            bearer(&issuer.sign_raw(
                &header_with(json!({ "cty": cty })),
                &json!({ "token": inner }).to_string(),
            )),
            "nested_token",
        );
    }
    add(
        "cty not a string".into(),
        bearer(&issuer.sign_raw(&header_with(json!({ "cty": 1 })), &claims_text)),
        "malformed_token",
    );
    for typ in [
        "JOSE",
        "JOSE+JSON",
        "application/jose",
        "+jwt",
        "secevent+jwt-not",
    ] {
        add(
            format!("typ {typ}"),
            bearer(&issuer.sign_raw(&header_with(json!({ "typ": typ })), &claims_text)),
            "unsupported_token_type",
        );
    }
    add(
        "JWE compact serialization (5 segments)".into(),
        bearer(&format!(
            "{}.{}.{}.{}.{}",
            b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
            b64(&[1; 32]),
            b64(&[2; 12]),
            b64(&[3; 40]),
            b64(&[4; 16])
        )),
        "encrypted_token",
    );
    add(
        "enc header on a 3-segment token".into(),
        bearer(&issuer.sign_raw(&header_with(json!({ "enc": "A256GCM" })), &claims_text)),
        "encrypted_token",
    );

    // --- compact serialization edge cases ------------------------------------------------
    let seg = segments(&valid);
    let (h64, p64, s64) = (seg[0].clone(), seg[1].clone(), seg[2].clone());
    for (what, token) in [
        ("one segment", h64.clone()),
        ("two segments", format!("{h64}.{p64}")),
        ("four segments", format!("{h64}.{p64}.{s64}.{s64}")),
        (
            "six segments",
            format!("{h64}.{p64}.{s64}.{s64}.{s64}.{s64}"),
        ),
        ("empty header segment", format!(".{p64}.{s64}")),
        ("empty payload segment", format!("{h64}..{s64}")),
        ("only dots", "..".into()),
        ("padded signature", format!("{h64}.{p64}.{s64}==")),
        (
            "standard base64 alphabet (+ and /)",
            format!(
                "{h64}.{p64}.{}",
                s64.replace('-', "+").replace('_', "/") + "+/"
            ),
        ),
        // "si" is `c2k`; `c2l` decodes to the same bytes with non-zero trailing bits.
        ("non-canonical trailing bits", format!("{h64}.{p64}.c2l")),
    ] {
        add(
            format!("token with {what}"),
            bearer(&token),
            "malformed_token",
        );
    }
    add(
        "token with a padded header segment".into(),
        bearer(&format!("{h64}=.{p64}.{s64}")),
        "malformed_authorization",
    );
    add(
        "token with characters outside base64url".into(),
        bearer(&format!("{h64}.{p64}.{s64}!*")),
        "malformed_authorization",
    );
    add(
        "token with percent-encoding".into(),
        bearer(&format!("{h64}.{p64}%2E{s64}")),
        "malformed_authorization",
    );
    add(
        "signature truncated".into(),
        bearer(&format!("{h64}.{p64}.{}", {
            let sig = unb64(&s64);
            b64(&sig[..sig.len() - 1])
        })),
        "invalid_signature",
    );
    add(
        "signature empty".into(),
        bearer(&format!("{h64}.{p64}.")),
        "invalid_signature",
    );
    add(
        "token longer than max_token_bytes".into(),
        bearer(&issuer.sign(&with_claims(&|c| {
            c.insert("padding".into(), json!("x".repeat(9000)));
        }))),
        "token_too_large",
    );

    // --- JSON: non-JSON, non-object, duplicates, depth, encoding --------------------------
    for (what, payload) in [
        ("not JSON", "this is not json"),
        ("a JSON array", "[1,2,3]"),
        ("a JSON string", "\"claims\""),
        ("a JSON number", "42"),
        ("JSON null", "null"),
        ("empty", ""),
        ("two JSON objects", "{}{}"),
        ("trailing comma", "{\"iss\":\"x\",}"),
        ("single-quoted JSON", "{'iss':'x'}"),
        ("with a byte order mark", "\u{feff}{}"),
        (
            "with a raw control character in a string",
            "{\"sub\":\"a\u{1}b\"}",
        ),
        ("with a NaN literal", "{\"exp\":NaN}"),
    ] {
        add(
            format!("payload {what}"),
            bearer(&issuer.sign_raw(&header_text, payload)),
            "malformed_token",
        );
    }
    add(
        "header not JSON".into(),
        bearer(&issuer.sign_raw("not json", &claims_text)),
        "malformed_token",
    );
    add(
        "header a JSON array".into(),
        bearer(&issuer.sign_raw(&format!("[{header_text}]"), &claims_text)),
        "malformed_token",
    );
    add(
        "payload not UTF-8".into(),
        bearer(&sign_bytes(
            issuer,
            header_text.as_bytes(),
            &[
                &claims_text.as_bytes()[..claims_text.len() - 1],
                b",\"x\":\"\xff\xfe\"}",
            ]
            .concat(),
        )),
        "malformed_token",
    );
    add(
        "payload with a lone UTF-16 surrogate escape".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', "{\"x\":\"\\ud800\",", 1),
        )),
        "malformed_token",
    );
    add(
        "header with a duplicate alg (alg then none)".into(),
        bearer(&issuer.sign_raw(
            &format!("{{\"alg\":\"{alg}\",\"kid\":\"{kid}\",\"alg\":\"none\"}}"),
            &claims_text,
        )),
        "duplicate_claim",
    );
    add(
        "header with a duplicate kid".into(),
        bearer(&issuer.sign_raw(
            &format!("{{\"alg\":\"{alg}\",\"kid\":\"{kid}\",\"kid\":\"../x\"}}"),
            &claims_text,
        )),
        "duplicate_claim",
    );
    add(
        "payload with a duplicate exp via \\u0065xp".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', &format!("{{\"\\u0065xp\":{},", now + 999_999), 1),
        )),
        "duplicate_claim",
    );
    add(
        "payload with a duplicate iss".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', &format!("{{\"iss\":\"{gateway_iss}\","), 1),
        )),
        "duplicate_claim",
    );
    add(
        "payload with a duplicate member in a nested object".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', "{\"cnf\":{\"jkt\":\"a\",\"jkt\":\"b\"},", 1),
        )),
        "duplicate_claim",
    );
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    add(
        "payload nested 17 deep (limit 16)".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', &format!("{{\"deep\":{},", deep(16)), 1),
        )),
        "json_too_deep",
    );
    add(
        "payload nested 16 deep (at the limit)".into(),
        bearer(&issuer.sign_raw(
            &header_text,
            &claims_text.replacen('{', &format!("{{\"deep\":{},", deep(15)), 1),
        )),
        "exchanged",
    );
    add(
        "payload nested 2000 deep".into(),
        bearer(&issuer.sign_raw(&header_text, &format!("{{\"deep\":{}}}", deep(2000)))),
        "json_too_deep",
    );
    add(
        "header nested too deep".into(),
        bearer(&issuer.sign_raw(
            &header_with(json!({ "x": json!([[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]) })),
            &claims_text,
        )),
        "json_too_deep",
    );

    // --- claim types and values (all genuinely signed by the issuer) ----------------------
    let set = |name: &'static str, value: Value| -> String {
        issuer.sign(&with_claims(&|c| {
            c.insert(name.into(), value.clone());
        }))
    };
    let remove = |name: &'static str| -> String {
        issuer.sign(&with_claims(&|c| {
            c.remove(name);
        }))
    };
    let claim_cases: Vec<(&str, String, &'static str)> = vec![
        (
            "exp as a string",
            set("exp", json!((now + 600).to_string())),
            "invalid_claim",
        ),
        ("exp huge (1e30)", set("exp", json!(1e30)), "invalid_claim"),
        (
            "exp beyond u64 (integer literal)",
            issuer.sign_raw(
                &header_text,
                &claims_text.replace(
                    &format!("\"exp\":{}", now + 600),
                    "\"exp\":99999999999999999999999",
                ),
            ),
            "invalid_claim",
        ),
        ("exp negative", set("exp", json!(-1)), "invalid_claim"),
        (
            "exp negative float",
            set("exp", json!(-0.5)),
            "invalid_claim",
        ),
        ("exp as a boolean", set("exp", json!(true)), "invalid_claim"),
        ("exp null", set("exp", Value::Null), "invalid_claim"),
        ("exp missing", remove("exp"), "missing_claim"),
        (
            "expired an hour ago",
            set("exp", json!(now - 3600)),
            "token_expired",
        ),
        (
            "expired 10 s ago (within skew, nothing left to grant)",
            set("exp", json!(now - 10)),
            "token_expired",
        ),
        (
            "exp equal to now minus skew",
            set("exp", json!(now - 30)),
            "token_expired",
        ),
        (
            "nbf in the future",
            set("nbf", json!(now + 3600)),
            "token_not_yet_valid",
        ),
        ("nbf as a string", set("nbf", json!("0")), "invalid_claim"),
        (
            "iat in the future",
            set("iat", json!(now + 3600)),
            "issued_in_future",
        ),
        ("iat as an array", set("iat", json!([now])), "invalid_claim"),
        ("aud as a number", set("aud", json!(42)), "invalid_claim"),
        ("aud empty string", set("aud", json!("")), "invalid_claim"),
        ("aud empty array", set("aud", json!([])), "invalid_claim"),
        (
            "aud array with a number",
            set("aud", json!(["api", 1])),
            "invalid_claim",
        ),
        (
            "aud another audience",
            set("aud", json!("orders-service")),
            "audience_mismatch",
        ),
        (
            "aud differing in case",
            set("aud", json!("API")),
            "audience_mismatch",
        ),
        ("aud missing", remove("aud"), "audience_mismatch"),
        (
            "scope as an object",
            set("scope", json!({ "orders:read": true })),
            "invalid_claim",
        ),
        (
            "scope as an array of scope tokens",
            set("scope", json!(["orders:read", "profile"])),
            "exchanged",
        ),
        (
            "scope as an array with a number",
            set("scope", json!(["orders:read", 1])),
            "invalid_claim",
        ),
        (
            "scope as an array with a space in an entry",
            set("scope", json!(["orders:read profile"])),
            "invalid_claim",
        ),
        (
            "scope with a control character",
            set("scope", json!("orders:read\u{7}")),
            "invalid_claim",
        ),
        (
            "scope with a tab separator",
            set("scope", json!("openid\torders:read")),
            "invalid_claim",
        ),
        (
            "scope with a quote",
            set("scope", json!("orders:read \"x")),
            "invalid_claim",
        ),
        (
            "scope lacking orders:read",
            set("scope", json!("orders:write")),
            "insufficient_scope",
        ),
        ("sub as a number", set("sub", json!(7)), "invalid_claim"),
        ("sub empty", set("sub", json!("")), "invalid_claim"),
        ("sub missing", remove("sub"), "missing_claim"),
        (
            "azp as an array",
            set("azp", json!(["web-app"])),
            "invalid_claim",
        ),
        (
            "azp another client",
            set("azp", json!("evil-app")),
            "caller_not_allowed",
        ),
        ("acr as a number", set("acr", json!(1)), "invalid_claim"),
        ("amr as a string", set("amr", json!("pwd")), "invalid_claim"),
        ("jti as a number", set("jti", json!(1)), "invalid_claim"),
        (
            "iss as an array",
            set("iss", json!([issuer.iss])),
            "invalid_claim",
        ),
        ("iss as a number", set("iss", json!(1)), "invalid_claim"),
        ("iss missing", remove("iss"), "untrusted_issuer"),
        (
            "iss with a trailing slash",
            set("iss", json!(format!("{}/", issuer.iss))),
            "untrusted_issuer",
        ),
        (
            "iss differing in case",
            set("iss", json!(issuer.iss.to_uppercase())),
            "untrusted_issuer",
        ),
        (
            "iss with a trailing NUL",
            set("iss", json!(format!("{}\u{0}", issuer.iss))),
            "untrusted_issuer",
        ),
        (
            "iss the gateway itself",
            set("iss", json!(gateway_iss)),
            "gateway_token_replay",
        ),
    ];
    for (what, token, reason) in claim_cases {
        add(format!("claims: {what}"), bearer(&token), reason);
    }
    let many_claims = with_claims(&|c| {
        while c.len() <= 64 {
            let n = c.len();
            c.insert(format!("extra{n}"), json!(n));
        }
    });
    add(
        "65 claims (limit 64)".into(),
        bearer(&issuer.sign(&many_claims)),
        "too_many_claims",
    );
    let at_limit = with_claims(&|c| {
        while c.len() < 64 {
            let n = c.len();
            c.insert(format!("extra{n}"), json!(n));
        }
    });
    add(
        "64 claims (at the limit)".into(),
        bearer(&issuer.sign(&at_limit)),
        "exchanged",
    );
    let scopes = |n: usize| {
        let mut s: Vec<String> = (1..n).map(|i| format!("s{i}")).collect();
        s.push("orders:read".into());
        s
    };
    add(
        "65 scopes (limit 64)".into(),
        bearer(&set("scope", json!(scopes(65).join(" ")))),
        "too_many_scopes",
    );
    add(
        "65 scp array entries (limit 64)".into(),
        bearer(&issuer.sign(&with_claims(&|c| {
            c.remove("scope");
            c.insert("scp".into(), json!(scopes(65)));
        }))),
        "too_many_scopes",
    );
    add(
        "64 scopes (at the limit)".into(),
        bearer(&set("scope", json!(scopes(64).join(" ")))),
        "exchanged",
    );
    add(
        "too many scopes from an untrusted issuer (trust is checked first)".into(),
        bearer(&other.sign(&json!({ "iss": other.iss, "scope": scopes(100).join(" ") }))),
        "untrusted_issuer",
    );
    add(
        "too many scopes with a forged signature (counted before verifying)".into(),
        bearer(
            &other.sign_raw(
                &json!({ "alg": alg, "kid": kid }).to_string(),
                &with_claims(&|c| {
                    c.insert("scope".into(), json!(scopes(100).join(" ")));
                })
                .to_string(),
            ),
        ),
        "too_many_scopes",
    );

    // --- issuers ------------------------------------------------------------------------
    add(
        "token from an untrusted issuer".into(),
        bearer(&other.sign(&other.claims(now, "orders:read"))),
        "untrusted_issuer",
    );
    add(
        "token claiming the gateway's own issuer".into(),
        bearer(&issuer.sign(&with_claims(&|c| {
            c.insert("iss".into(), json!(gateway_iss));
            c.insert("aud".into(), json!("orders-service"));
        }))),
        "gateway_token_replay",
    );

    // --- cut and paste across two valid tokens --------------------------------------------
    let broad = issuer.sign(&issuer.claims(now, "orders:read orders:write admin"));
    let broad_seg = segments(&broad);
    let attacker_token = other.sign(&with_claims(&|c| {
        c.insert("sub".into(), json!("mallory"));
    }));
    let attacker_seg = segments(&attacker_token);
    for (what, token, reason) in [
        (
            "header and signature of one token, payload of another",
            format!("{h64}.{}.{s64}", broad_seg[1]),
            "invalid_signature",
        ),
        (
            "signature of another token",
            format!("{h64}.{p64}.{}", broad_seg[2]),
            "invalid_signature",
        ),
        (
            "payload signed by the attacker, header and signature of the issuer",
            format!("{h64}.{}.{s64}", attacker_seg[1]),
            "invalid_signature",
        ),
        (
            "issuer's header and payload, attacker's signature",
            format!("{h64}.{p64}.{}", attacker_seg[2]),
            "invalid_signature",
        ),
        (
            "two tokens concatenated",
            format!("{valid}.{broad}"),
            "malformed_token",
        ),
    ] {
        add(format!("mix: {what}"), bearer(&token), reason);
    }

    // --- Authorization header smuggling -----------------------------------------------------
    let header_cases: Vec<(&str, Vec<String>, &'static str)> = vec![
        ("no Authorization header", vec![], "missing_token"),
        (
            "two Authorization headers, both valid",
            vec![format!("Bearer {valid}"), format!("Bearer {valid}")],
            "duplicate_authorization",
        ),
        (
            "two Authorization headers, Basic then Bearer",
            vec!["Basic dXNlcjpwYXNz".into(), format!("Bearer {valid}")],
            "duplicate_authorization",
        ),
        (
            "two Authorization headers, valid then empty",
            vec![format!("Bearer {valid}"), String::new()],
            "duplicate_authorization",
        ),
        (
            "comma-joined credentials (a proxy's fold of two headers)",
            vec![format!("Bearer {valid}, Bearer {valid}")],
            "duplicate_authorization",
        ),
        (
            "Basic scheme",
            vec!["Basic dXNlcjpwYXNz".into()],
            "missing_token",
        ),
        (
            "Digest scheme",
            vec!["Digest username=\"a\"".into()],
            "missing_token",
        ),
        (
            "DPoP scheme with a valid token",
            vec![format!("DPoP {valid}")],
            "missing_token",
        ),
        ("empty header value", vec![String::new()], "missing_token"),
        (
            "Bearer alone",
            vec!["Bearer".into()],
            "malformed_authorization",
        ),
        (
            "Bearer and a space",
            vec!["Bearer ".into()],
            "malformed_authorization",
        ),
        (
            "Bearer and spaces",
            vec!["Bearer    ".into()],
            "malformed_authorization",
        ),
        (
            "double space after Bearer",
            vec![format!("Bearer  {valid}")],
            "malformed_authorization",
        ),
        (
            "trailing space",
            vec![format!("Bearer {valid} ")],
            "malformed_authorization",
        ),
        (
            "trailing tab",
            vec![format!("Bearer {valid}\t")],
            "malformed_authorization",
        ),
        (
            "leading space",
            vec![format!(" Bearer {valid}")],
            "malformed_authorization",
        ),
        (
            "tab instead of a space",
            vec![format!("Bearer\t{valid}")],
            "malformed_authorization",
        ),
        (
            "token then a parameter",
            vec![format!("Bearer {valid} realm=\"x\"")],
            "malformed_authorization",
        ),
        (
            "token in quotes",
            vec![format!("Bearer \"{valid}\"")],
            "malformed_authorization",
        ),
        (
            "CRLF inside the value",
            vec![format!("Bearer {valid}\r\nX-Injected: 1")],
            "malformed_authorization",
        ),
        (
            "NUL inside the value",
            vec![format!("Bearer {valid}\u{0}")],
            "malformed_authorization",
        ),
        (
            "Bearer: with a colon",
            vec![format!("Bearer: {valid}")],
            "malformed_authorization",
        ),
        (
            "token without a scheme",
            vec![valid.clone()],
            "missing_token",
        ),
        (
            "scheme Bearerx",
            vec![format!("Bearerx {valid}")],
            "missing_token",
        ),
    ];
    for (what, values, reason) in header_cases {
        add(format!("header: {what}"), values, reason);
    }

    cases
}
