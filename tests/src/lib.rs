//! Test support shared by every suite: issuers that sign tokens (through jwt-simple, and raw
//! for hostile shapes), the gateway's key, and policy documents.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod hostile;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

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

/// The gateway's signing key (Ed25519, deterministic) and helpers to check minted tokens.
pub struct Gateway {
    /// The gateway's `iss`.
    pub iss: String,
    /// Its `kid`.
    pub kid: String,
    kp: Ed25519KeyPair,
}

impl Gateway {
    /// The standard test gateway.
    pub fn new() -> Gateway {
        let kp = Ed25519KeyPair::from_bytes(
            &ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([42; 32])).to_vec(),
        )
        .unwrap()
        .with_key_id("gw-1");
        Gateway {
            iss: "https://gateway.test".into(),
            kid: "gw-1".into(),
            kp,
        }
    }

    /// Its private JWK for the policy.
    pub fn private_jwk(&self) -> Value {
        serde_json::from_str(&self.kp.to_jwk()).unwrap()
    }

    /// Verifies a minted token with the gateway's public key (independently of the filter's
    /// own code: jwt-simple's verifier) and returns its header and claims.
    pub fn verify(&self, token: &str, now: u64) -> (Value, Map<String, Value>) {
        let opts = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            required_signature_type: Some("at+jwt".into()),
            ..Default::default()
        };
        let claims = self
            .kp
            .public_key()
            .verify_token::<Map<String, Value>>(token, Some(opts))
            .expect("minted token verifies with the gateway key");
        let header: Value =
            serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap();
        let mut all: Map<String, Value> =
            serde_json::from_value(serde_json::to_value(&claims).unwrap()).unwrap();
        all.extend(claims.custom);
        (header, all)
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
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
    };
    policy.decide(
        &req,
        std::time::Duration::from_secs(now),
        &mut CountingEntropy(0),
    )
}
