//! Keys for the CLI: generating private JWKs (`keygen`), reading a key argument, signing
//! test tokens (`mint`, test issuers). Every key goes through the core's own strict importer
//! (`SigningKey::from_jwk`), and signatures come from the core's primitives.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::signing::SigningKey;
use token_exchange_filter::core::{Entropy, KeySnapshot, Policy};

use crate::input::{inline_or_file, parse_json, InputError};
use crate::random::EntropyRng;

/// An algorithm `keygen` generates keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlg {
    /// Ed25519 (OKP): the recommended default.
    #[value(name = "EdDSA")]
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256")]
    ES256,
    /// RSA 2048 bits, PKCS#1 v1.5 with SHA-256.
    #[value(name = "RS256")]
    RS256,
}

impl KeyAlg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 => "RS256",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh private JWK (with `kid`, `alg`, `use: sig`), checked by the core's importer.
pub fn generate(alg: KeyAlg, kid: &str, entropy: &mut dyn Entropy) -> Result<Value, InputError> {
    let failed = || InputError::new("the random source failed: no key generated");
    let jwk = match alg {
        KeyAlg::EdDSA => {
            let mut seed = [0u8; 32];
            entropy.fill(&mut seed).map_err(|_| failed())?;
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
            json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                "x": b64(kp.pk.as_ref()), "d": b64(&seed),
            })
        }
        KeyAlg::ES256 => {
            // A uniformly random scalar: redraw the rare values outside [1, n).
            let sk = (0..64)
                .find_map(|_| {
                    let mut d = [0u8; 32];
                    entropy.fill(&mut d).ok()?;
                    p256::ecdsa::SigningKey::from_slice(&d).ok()
                })
                .ok_or_else(failed)?;
            let point = sk.verifying_key().to_sec1_point(false);
            let xy = point.as_bytes().get(1..65).ok_or_else(failed)?;
            let (x, y) = xy.split_at(32);
            json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": b64(x), "y": b64(y), "d": b64(&sk.to_bytes()),
            })
        }
        KeyAlg::RS256 => {
            use rsa::traits::{PrivateKeyParts, PublicKeyParts};
            let mut rng = EntropyRng::new(entropy);
            let sk = rsa::RsaPrivateKey::new(&mut rng, 2048)
                .map_err(|e| InputError(format!("RSA key generation failed: {e}")))?;
            if rng.failed {
                return Err(failed());
            }
            let (p, q) = match sk.primes() {
                [p, q] => (p, q),
                _ => {
                    return Err(InputError::new(
                        "RSA key generation gave more than two primes",
                    ))
                }
            };
            let crt =
                |v: Option<&rsa::BigUint>| v.map(|n| b64(&n.to_bytes_be())).ok_or_else(failed);
            let qi = sk
                .qinv()
                .and_then(|n| n.to_biguint())
                .map(|n| b64(&n.to_bytes_be()))
                .ok_or_else(failed)?;
            json!({
                "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be()),
                "d": b64(&sk.d().to_bytes_be()),
                "p": b64(&p.to_bytes_be()), "q": b64(&q.to_bytes_be()),
                "dp": crt(sk.dp())?, "dq": crt(sk.dq())?, "qi": qi,
            })
        }
    };
    // The filter's own importer must accept what we hand out.
    signing_key(&jwk, "generated key")?;
    Ok(jwk)
}

/// Imports a private JWK with the core's importer (HS256 allowed: test tokens may need it).
pub fn signing_key(jwk: &Value, what: &str) -> Result<SigningKey, InputError> {
    SigningKey::from_jwk(jwk, true).map_err(|e| InputError(format!("{what}: {e}")))
}

/// A private JWK argument: inline JSON or `@file`.
pub fn private_key_arg(arg: &str, what: &str) -> Result<(Value, SigningKey), InputError> {
    let jwk = parse_json(&inline_or_file(arg, what)?, what)?;
    let key = signing_key(&jwk, what)?;
    Ok((jwk, key))
}

/// The public JWK of a private or public JWK (as a trusted issuer's key set needs it). A
/// private key's public half comes from the core's importer; a public one is checked by it.
pub fn public_jwk(jwk: &Value, what: &str) -> Result<Value, InputError> {
    if jwk.get("d").is_some() || jwk.get("k").is_some() {
        let key = signing_key(jwk, what)?;
        return key
            .public_jwk()
            .map(|mut p| {
                if let Some(obj) = p.as_object_mut() {
                    obj.insert("alg".into(), Value::String(key.alg().name().to_owned()));
                }
                p
            })
            .ok_or_else(|| InputError(format!("{what}: an HS256 key has no public half")));
    }
    IssuerKey::from_jwk(jwk, &Alg::VERIFY).map_err(|e| InputError(format!("{what}: {e}")))?;
    Ok(jwk.clone())
}

/// The default header of a token signed by `key`: `alg`, `kid`, `typ: JWT`.
pub fn default_header(key: &SigningKey) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("alg".into(), Value::String(key.alg().name().to_owned()));
    h.insert("kid".into(), Value::String(key.kid().to_owned()));
    h.insert("typ".into(), Value::String("JWT".into()));
    h
}

/// Overlays `changes` on `base`: each member replaces the base's, `null` removes it.
pub fn overlay(base: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (k, v) in changes {
        if v.is_null() {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// A compact JWS of `claims` under `header`, signed with `key`'s own algorithm whatever the
/// header says (so a test can present a token whose `alg` lies).
pub fn sign_token(
    key: &SigningKey,
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    entropy: &mut dyn Entropy,
) -> Result<String, InputError> {
    let input = format!(
        "{}.{}",
        b64(Value::Object(header.clone()).to_string().as_bytes()),
        b64(Value::Object(claims.clone()).to_string().as_bytes())
    );
    let sig = key
        .sign(input.as_bytes(), entropy)
        .map_err(|_| InputError::new("signing failed (the random source failed)"))?;
    Ok(format!("{input}.{}", b64(&sig)))
}

/// The keys a policy's `{"generate": ...}` signing keys stand for in this process: generated
/// here from `entropy` (the filter's workers share theirs through the host instead).
pub fn generated_keys(
    policy: &Policy,
    entropy: &mut dyn Entropy,
) -> Result<KeySnapshot, InputError> {
    let mut keys = KeySnapshot::new();
    keys.generate_missing(policy, entropy)
        .map_err(|_| InputError::new("cannot generate the policy's generated signing keys"))?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededEntropy;
    use token_exchange_filter::core::token::{parse, Limits};

    #[test]
    fn generated_keys_sign_tokens_their_public_half_verifies() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
            let mut e = SeededEntropy::new(7);
            let jwk = generate(alg, "k1", &mut e).unwrap();
            assert_eq!(jwk["alg"], alg.name());
            let key = signing_key(&jwk, "k").unwrap();
            let public = public_jwk(&jwk, "k").unwrap();
            assert!(public.get("d").is_none(), "{public}");
            let issuer_key = IssuerKey::from_jwk(&public, &Alg::VERIFY).unwrap();
            let mut claims = Map::new();
            claims.insert("sub".into(), json!("alice"));
            let token = sign_token(&key, &default_header(&key), &claims, &mut e).unwrap();
            let parsed = parse(&token, &Limits::default()).unwrap();
            let a = Alg::from_verify_name(&parsed.alg).unwrap();
            assert!(issuer_key.verify(a, parsed.signing_input.as_bytes(), &parsed.signature));
        }
    }

    #[test]
    fn seeded_generation_repeats() {
        let a = generate(KeyAlg::EdDSA, "k", &mut SeededEntropy::new(1)).unwrap();
        let b = generate(KeyAlg::EdDSA, "k", &mut SeededEntropy::new(1)).unwrap();
        let c = generate(KeyAlg::EdDSA, "k", &mut SeededEntropy::new(2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn overlay_replaces_and_removes() {
        let mut base = Map::new();
        base.insert("a".into(), json!(1));
        base.insert("b".into(), json!(2));
        let changes = json!({"a": 3, "b": null, "c": 4});
        overlay(&mut base, changes.as_object().unwrap());
        assert_eq!(Value::Object(base), json!({"a": 3, "c": 4}));
    }
}
