//! Test support shared by every suite: issuers that sign tokens (through jwt-simple, and raw
//! for hostile shapes), the gateway's keys, policy documents, provider-shaped key sets and
//! tokens, and the strict check every minted token goes through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod hostile;
pub mod providers;
pub mod trust;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use token_exchange_filter::core::syntax::is_scope_token;
use token_exchange_filter::core::token::{parse, Limits};

/// A fixed "now" for deterministic tests: 2026-01-01T00:00:00Z.
pub const NOW: u64 = 1_767_225_600;

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

enum IssuerKey {
    Ed25519(ed25519_compact::KeyPair),
    Es256(p256::ecdsa::SigningKey),
    Rs256(Box<rsa::RsaPrivateKey>),
}

/// A token issuer under test control.
pub struct Issuer {
    /// `iss`.
    pub iss: String,
    /// `kid` of its key.
    pub kid: String,
    key: IssuerKey,
}

impl Issuer {
    /// An EdDSA issuer with a key derived from `seed_byte` (deterministic).
    pub fn ed25519(iss: &str, kid: &str, seed_byte: u8) -> Issuer {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed_byte; 32]));
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            key: IssuerKey::Ed25519(kp),
        }
    }

    /// An ES256 issuer with a key derived from `seed_byte`.
    pub fn es256(iss: &str, kid: &str, seed_byte: u8) -> Issuer {
        let mut d = [seed_byte; 32];
        d[0] = 0x01; // keep the scalar below the curve order
        let sk = p256::ecdsa::SigningKey::from_slice(&d).unwrap();
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            key: IssuerKey::Es256(sk),
        }
    }

    /// An RS256 issuer with a fresh 2048-bit key.
    pub fn rs256(iss: &str, kid: &str) -> Issuer {
        let kp = RS256KeyPair::generate(2048).unwrap();
        let der = kp.to_der().unwrap();
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let sk = rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_der(&der))
            .unwrap();
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            key: IssuerKey::Rs256(Box::new(sk)),
        }
    }

    /// An RS256 issuer with a deterministic 2048-bit key (`seed` picks it; cached per process).
    pub fn rs256_seeded(iss: &str, kid: &str, seed: u64) -> Issuer {
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            key: IssuerKey::Rs256(Box::new(rsa_key(seed))),
        }
    }

    /// The JOSE `alg` of this issuer's key.
    pub fn alg(&self) -> &'static str {
        match self.key {
            IssuerKey::Ed25519(_) => "EdDSA",
            IssuerKey::Es256(_) => "ES256",
            IssuerKey::Rs256(_) => "RS256",
        }
    }

    /// The public JWK (with `kid` and `alg`).
    pub fn public_jwk(&self) -> Value {
        match &self.key {
            IssuerKey::Ed25519(kp) => json!({
                "kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA",
                "x": b64(kp.pk.as_ref()),
            }),
            IssuerKey::Es256(sk) => {
                let point = sk.verifying_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                json!({
                    "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                    "x": b64(&bytes[1..33]), "y": b64(&bytes[33..65]),
                })
            }
            IssuerKey::Rs256(sk) => {
                use rsa::traits::PublicKeyParts;
                json!({
                    "kty": "RSA", "kid": self.kid, "alg": "RS256",
                    "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be()),
                })
            }
        }
    }

    /// The trusted-issuer entry for a policy.
    pub fn trusted(&self, audiences: &[&str]) -> Value {
        json!({
            "issuer": self.iss,
            "jwks": { "keys": [self.public_jwk()] },
            "algorithms": [self.alg()],
            "audiences": audiences,
        })
    }

    /// Signs `signing_input` with this issuer's key.
    pub fn raw_signature(&self, signing_input: &[u8]) -> Vec<u8> {
        match &self.key {
            IssuerKey::Ed25519(kp) => kp.sk.sign(signing_input, None).to_vec(),
            IssuerKey::Es256(sk) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = sk.sign(signing_input);
                sig.to_bytes().to_vec()
            }
            IssuerKey::Rs256(sk) => {
                use rsa::signature::{SignatureEncoding, Signer};
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**sk).clone());
                signer.sign(signing_input).to_vec()
            }
        }
    }

    /// A token signed with an explicit RSA algorithm (`RS256`..`RS512`, `PS256`..`PS512`) by
    /// the `rsa` crate's signing keys; the issuer must be an RSA issuer.
    pub fn sign_rsa(&self, alg: &str, claims: &Value) -> String {
        self.sign_rsa_as(alg, alg, claims)
    }

    /// Like [`Issuer::sign_rsa`], but the header names `header_alg` (algorithm confusion).
    pub fn sign_rsa_as(&self, alg: &str, header_alg: &str, claims: &Value) -> String {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        use sha2::{Sha256, Sha384, Sha512};
        let IssuerKey::Rs256(sk) = &self.key else {
            panic!("sign_rsa needs an RSA issuer")
        };
        let sk = (**sk).clone();
        let header = json!({ "alg": header_alg, "kid": self.kid, "typ": "JWT" });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let msg = input.as_bytes();
        let mut rng = rsa::rand_core::OsRng;
        let sig: Vec<u8> = match alg {
            "RS256" => rsa::pkcs1v15::SigningKey::<Sha256>::new(sk)
                .sign(msg)
                .to_vec(),
            "RS384" => rsa::pkcs1v15::SigningKey::<Sha384>::new(sk)
                .sign(msg)
                .to_vec(),
            "RS512" => rsa::pkcs1v15::SigningKey::<Sha512>::new(sk)
                .sign(msg)
                .to_vec(),
            "PS256" => rsa::pss::BlindedSigningKey::<Sha256>::new(sk)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
            "PS384" => rsa::pss::BlindedSigningKey::<Sha384>::new(sk)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
            "PS512" => rsa::pss::BlindedSigningKey::<Sha512>::new(sk)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
            other => panic!("not an RSA algorithm: {other}"),
        };
        format!("{input}.{}", b64(&sig))
    }

    /// A compact JWS over exactly these header and payload bytes (for hostile shapes).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let sig = self.raw_signature(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`) and these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": self.alg(), "kid": self.kid, "typ": "JWT" });
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Typical valid claims at `now`: 10 minutes of life, audience `api`, scopes given.
    pub fn claims(&self, now: u64, scope: &str) -> Value {
        json!({
            "iss": self.iss,
            "sub": "alice",
            "aud": "api",
            "azp": "web-app",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": format!("orig-{now}"),
            "scope": scope,
            "acr": "urn:mfa",
            "amr": ["pwd", "otp"],
            "tenant": "acme",
            "email": "alice@example.com",
        })
    }
}

enum GatewayKey {
    Ed25519(Ed25519KeyPair),
    Es256(ES256KeyPair),
    Rs256(Box<RS256KeyPair>),
    Hs256(HS256Key, Vec<u8>),
}

/// The gateway's signing key (deterministic) and helpers to check minted tokens.
pub struct Gateway {
    /// The gateway's `iss`.
    pub iss: String,
    /// Its `kid`.
    pub kid: String,
    key: GatewayKey,
}

impl Gateway {
    /// The standard test gateway: Ed25519, kid `gw-1`.
    pub fn new() -> Gateway {
        Gateway::with_alg("EdDSA", "gw-1")
    }

    /// A gateway signing with `alg` (`EdDSA`, `ES256`, `RS256` or `HS256`), deterministic keys.
    pub fn with_alg(alg: &str, kid: &str) -> Gateway {
        let key = match alg {
            "EdDSA" => GatewayKey::Ed25519(
                Ed25519KeyPair::from_bytes(
                    &ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([42; 32]))
                        .to_vec(),
                )
                .unwrap(),
            ),
            "ES256" => GatewayKey::Es256(ES256KeyPair::from_bytes(&[0x2a; 32]).unwrap()),
            "RS256" => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let der = rsa_key(0x6777).to_pkcs1_der().unwrap();
                GatewayKey::Rs256(Box::new(RS256KeyPair::from_der(der.as_bytes()).unwrap()))
            }
            "HS256" => {
                let secret = b"test-only hs256 secret of the gateway (32+ bytes)".to_vec();
                GatewayKey::Hs256(HS256Key::from_bytes(&secret), secret)
            }
            other => panic!("no gateway key for {other}"),
        };
        Gateway {
            iss: "https://gateway.test".into(),
            kid: kid.into(),
            key,
        }
    }

    /// The JOSE `alg` it signs with.
    pub fn alg(&self) -> &'static str {
        match self.key {
            GatewayKey::Ed25519(_) => "EdDSA",
            GatewayKey::Es256(_) => "ES256",
            GatewayKey::Rs256(_) => "RS256",
            GatewayKey::Hs256(..) => "HS256",
        }
    }

    /// Its private JWK for the policy.
    pub fn private_jwk(&self) -> Value {
        let mut jwk: Value = match &self.key {
            GatewayKey::Ed25519(k) => serde_json::from_str(&k.to_jwk()).unwrap(),
            GatewayKey::Es256(k) => serde_json::from_str(&k.to_jwk()).unwrap(),
            GatewayKey::Rs256(k) => serde_json::from_str(&k.to_jwk()).unwrap(),
            GatewayKey::Hs256(_, secret) => json!({"kty": "oct", "alg": "HS256", "k": b64(secret)}),
        };
        jwk["kid"] = json!(self.kid);
        jwk
    }

    /// What a downstream verifier is given: the public JWK, or for HS256 the shared secret.
    pub fn verifier_jwk(&self) -> Value {
        let mut jwk: Value = match &self.key {
            GatewayKey::Ed25519(k) => serde_json::from_str(&k.public_key().to_jwk()).unwrap(),
            GatewayKey::Es256(k) => serde_json::from_str(&k.public_key().to_jwk()).unwrap(),
            GatewayKey::Rs256(k) => serde_json::from_str(&k.public_key().to_jwk()).unwrap(),
            GatewayKey::Hs256(..) => return self.private_jwk(),
        };
        jwk["kid"] = json!(self.kid);
        jwk
    }

    /// A compact JWS over exactly these header and payload bytes, signed with this gateway's
    /// key (EdDSA gateways only): for showing what a verifier does with a token the filter
    /// would never mint.
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let GatewayKey::Ed25519(_) = &self.key else {
            panic!("sign_raw needs the EdDSA gateway")
        };
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([42; 32]));
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let sig = kp.sk.sign(input.as_bytes(), None);
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// Checks a minted token: first strictly, with the filter's own parser
    /// ([`minted_token_parts`]), then its signature with the gateway's key through
    /// jwt-simple (an independent verifier). Returns its header and claims.
    pub fn verify(&self, token: &str, now: u64) -> (Value, Map<String, Value>) {
        let (header, claims) = minted_token_parts(token);
        assert_eq!(header["alg"], self.alg(), "{header:?}");
        assert_eq!(header["kid"], self.kid.as_str(), "{header:?}");
        assert_eq!(claims["iss"], self.iss.as_str());
        let opts = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            required_signature_type: Some("at+jwt".into()),
            ..Default::default()
        };
        let verified = match &self.key {
            GatewayKey::Ed25519(k) => k
                .public_key()
                .verify_token::<Map<String, Value>>(token, Some(opts)),
            GatewayKey::Es256(k) => k
                .public_key()
                .verify_token::<Map<String, Value>>(token, Some(opts)),
            GatewayKey::Rs256(k) => k
                .public_key()
                .verify_token::<Map<String, Value>>(token, Some(opts)),
            GatewayKey::Hs256(k, _) => k.verify_token::<Map<String, Value>>(token, Some(opts)),
        };
        if let Err(e) = verified {
            panic!(
                "minted token does not verify with the gateway key ({}): {e}",
                self.alg()
            );
        }
        (Value::Object(header), claims)
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

/// Claims the filter sets on every minted token, and their JSON types.
const MINTED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "exchanged_from",
    "act",
];

/// Re-parses a minted token with the filter's own strict parser (`core::token::parse` with
/// the default limits but 64 KiB: no duplicate member in header or payload, depth) and checks
/// the type of every claim the gateway sets: the header is exactly `alg`, `kid` and
/// `typ: at+jwt`; `iss`, `sub`, `aud`, `jti` are non-empty strings; `exp`, `nbf`, `iat`
/// integers with `iat = nbf < exp`; `scope` distinct scope-tokens joined by single spaces;
/// `client_id` (when present) a string; `exchanged_from` is `{iss, token_id}` strings and an
/// optional integer `iat`; `act` is the actor chain whose outermost entry records this
/// exchange (`rule`, `audience` = the minted `aud`, and `sub` = `client_id` with the `iss`
/// that named it, when there is a caller); and no claim the gateway never sets (`scp`,
/// `azp`, `may_act`, `cnf`). Every suite calls this on every minted token it looks at.
/// Panics with the reason on any violation.
pub fn minted_token_parts(token: &str) -> (Map<String, Value>, Map<String, Value>) {
    // The default limits, except size: preserved claims may make a minted token longer than
    // the 8 KiB an incoming one may have.
    let limits = Limits {
        max_token_bytes: 65536,
        ..Limits::default()
    };
    let parsed = parse(token, &limits)
        .unwrap_or_else(|reason| panic!("minted token refused by the strict parser: {reason}"));
    let header = parsed.header;
    let mut names: Vec<&str> = header.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["alg", "kid", "typ"],
        "minted header members: {header:?}"
    );
    assert_eq!(header["typ"], "at+jwt");
    assert!(
        header["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "{header:?}"
    );
    let c = parsed.claims;
    for name in MINTED_CLAIMS {
        assert!(c.contains_key(*name), "minted token lacks {name}: {c:?}");
    }
    for name in ["iss", "sub", "aud", "jti"] {
        assert!(
            c[name].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: {:?}",
            c[name]
        );
    }
    let int = |name: &str| {
        c[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} is not an integer: {:?}", c[name]))
    };
    assert_eq!(int("iat"), int("nbf"));
    assert!(
        int("exp") > int("iat"),
        "exp {} <= iat {}",
        int("exp"),
        int("iat")
    );
    assert_eq!(
        unb64(c["jti"].as_str().unwrap()).len(),
        16,
        "jti: 128 random bits"
    );
    let scope = c["scope"].as_str().expect("scope is a string");
    let scopes: Vec<&str> = scope.split(' ').collect();
    assert!(scopes.iter().all(|s| is_scope_token(s)), "scope {scope:?}");
    let mut unique = scopes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), scopes.len(), "repeated scope in {scope:?}");
    if let Some(cid) = c.get("client_id") {
        assert!(
            cid.as_str().is_some_and(|s| !s.is_empty()),
            "client_id {cid:?}"
        );
    }
    let from = c["exchanged_from"]
        .as_object()
        .expect("exchanged_from is an object");
    let mut from_names: Vec<&str> = from.keys().map(String::as_str).collect();
    from_names.sort_unstable();
    assert!(
        from_names == ["iss", "token_id"] || from_names == ["iat", "iss", "token_id"],
        "{from:?}"
    );
    assert!(
        from["iss"].is_string() && from["token_id"].is_string(),
        "{from:?}"
    );
    if let Some(iat) = from.get("iat") {
        assert!(iat.is_u64(), "{from:?}");
    }
    let act = c["act"].as_object().expect("act is an object");
    assert!(
        act["rule"].as_str().is_some_and(|r| !r.is_empty()),
        "{act:?}"
    );
    assert_eq!(
        act["audience"], c["aud"],
        "act records the audience minted for"
    );
    assert_eq!(
        act.get("sub"),
        c.get("client_id"),
        "act names the caller that acted"
    );
    assert_eq!(act.contains_key("iss"), act.contains_key("sub"), "{act:?}");
    let mut entry = act.get("act");
    while let Some(e) = entry {
        assert!(e.is_object(), "every act entry is an object: {act:?}");
        entry = e.get("act");
    }
    for never in ["scp", "azp", "may_act", "cnf"] {
        assert!(
            !c.contains_key(never),
            "minted token carries {never}: {c:?}"
        );
    }
    (header, c)
}

/// A deterministic RNG for key generation in tests (xorshift64*; never for anything else).
pub struct FixedRng(pub u64);

impl rsa::rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for FixedRng {}

/// A deterministic 2048-bit RSA key for `seed` (non-zero), generated once per process.
pub fn rsa_key(seed: u64) -> rsa::RsaPrivateKey {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<u64, rsa::RsaPrivateKey>>> = OnceLock::new();
    // Generated under the lock: parallel tests wait for a key instead of each making it.
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    keys.entry(seed)
        .or_insert_with(|| rsa::RsaPrivateKey::new(&mut FixedRng(seed | 1), 2048).unwrap())
        .clone()
}

/// The standard test rule: `/orders` GET, requires `orders:read`, mints for `orders-service`.
pub fn orders_rule() -> Value {
    json!({
        "name": "orders-read",
        "match": { "path_prefix": "/orders", "methods": ["GET"] },
        "require": { "scopes": ["orders:read"], "callers": ["web-app"] },
        "mint": {
            "audience": "orders-service",
            "scopes": ["orders:read", "orders:write"],
            "ttl_seconds": 60,
            "preserve_claims": ["tenant"],
            "add_claims": { "env": "test" }
        }
    })
}

/// The standard rule with every requirement: scope, `acr`, `amr`, caller and issuer
/// (`https://idp.test` only).
pub fn strict_orders_rule() -> Value {
    let mut rule = orders_rule();
    rule["require"] = json!({
        "scopes": ["orders:read"], "acr": ["urn:mfa"], "amr": ["otp"],
        "callers": ["web-app"], "issuers": ["https://idp.test"]
    });
    rule
}

/// `rule` accepting only these issuers (`require.issuers`, required with several).
pub fn accepting(mut rule: Value, issuers: &[&str]) -> Value {
    if rule.get("require").is_none() {
        rule["require"] = json!({});
    }
    rule["require"]["issuers"] = json!(issuers);
    rule
}

/// `claims` with `key` set to `v`.
pub fn with_claim(mut claims: Value, key: &str, v: Value) -> Value {
    claims[key] = v;
    claims
}

/// `claims` without `key`.
pub fn without_claim(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A policy document with these issuers and rules.
pub fn policy(gw: &Gateway, issuers: &[&Issuer], rules: Value) -> Value {
    json!({
        "issuer": gw.iss,
        "signing_keys": [gw.private_jwk()],
        "trusted_issuers": issuers.iter().map(|i| i.trusted(&["api"])).collect::<Vec<_>>(),
        "clock_skew_seconds": 30,
        "rules": rules,
        "strip_headers": ["x-forwarded-user"],
    })
}

/// Deterministic randomness: a counter, so every minted `jti` differs.
pub struct CountingEntropy(pub u8);

impl token_exchange_filter::core::Entropy for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), token_exchange_filter::core::EntropyError> {
        self.0 = self.0.wrapping_add(1);
        buf.fill(self.0);
        Ok(())
    }
}

/// A random source that always fails.
pub struct FailingEntropy;

impl token_exchange_filter::core::Entropy for FailingEntropy {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), token_exchange_filter::core::EntropyError> {
        Err(token_exchange_filter::core::EntropyError)
    }
}

/// Every configuration error of a policy document as `path: message` (empty if it loads).
pub fn config_errors(doc: &Value) -> Vec<String> {
    match token_exchange_filter::core::Policy::from_json(doc.to_string().as_bytes()) {
        Ok(_) => vec![],
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        }
    }
}

/// Whether `errs` (from [`config_errors`]) has an error at exactly `path` containing `needle`.
pub fn has_error(errs: &[String], path: &str, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle))
}

/// Loads a policy document, panicking with every configuration error.
pub fn load(policy: &Value) -> token_exchange_filter::core::Policy {
    token_exchange_filter::core::Policy::from_json(policy.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Decides a GET with these Authorization values at `now` seconds.
pub fn decide_get(
    policy: &token_exchange_filter::core::Policy,
    path: &str,
    authorization: &[&str],
    now: u64,
) -> token_exchange_filter::core::Decision {
    let req = token_exchange_filter::core::HttpRequest {
        method: "GET",
        path,
        host: Some("api.example.com"),
        route_name: None,
        authorization: authorization.to_vec(),
        request_id: Some("req-1"),
        header_names: vec![],
    };
    policy.decide(
        &req,
        &token_exchange_filter::core::KeySnapshot::default(),
        std::time::Duration::from_secs(now),
        &mut CountingEntropy(0),
    )
}

/// The client secret test policies give their introspection endpoints (a test value).
pub const INTROSPECTION_SECRET: &str = "TEST-ONLY introspection secret +/:%";

/// `trusted` (a trusted-issuer entry) taking opaque tokens, introspected at `endpoint`
/// through `upstream` as client `gateway` with [`INTROSPECTION_SECRET`].
pub fn taking_opaque_tokens(mut trusted: Value, endpoint: &str, upstream: &str) -> Value {
    trusted["opaque_tokens"] = json!(true);
    trusted["introspection"] = json!({
        "endpoint": endpoint,
        "upstream": upstream,
        "client_id": "gateway",
        "client_secret": INTROSPECTION_SECRET,
        "timeout_ms": 1000,
        "max_bytes": 4096,
        "cache_seconds": 60,
        "negative_cache_seconds": 10,
        "cache_max_entries": 100
    });
    trusted
}

/// An active introspection answer for `sub` with these scopes, caller `web-app`, audience
/// `api`, ten minutes of life from `now`.
pub fn active_answer(iss: &str, now: u64, scope: &str) -> Value {
    json!({
        "active": true,
        "iss": iss,
        "sub": "alice",
        "aud": "api",
        "client_id": "web-app",
        "scope": scope,
        "iat": now,
        "exp": now + 600,
        "jti": format!("opaque-{now}"),
        "acr": "urn:mfa",
        "amr": ["pwd", "otp"],
        "auth_time": now,
        "tenant": "acme",
        "token_type": "Bearer",
        "username": "alice@example.com"
    })
}
