//! Key import on arbitrary JSON: `IssuerKey::from_jwk` and `SigningKey::from_jwk` on the
//! input as one JWK, and the JWK Set importer (`jwks::import_jwks_json`) on the input bytes
//! and on the input wrapped as a one-key set. Never panics; an imported key accepts only
//! algorithms it was allowed and never verifies garbage; a set either imports with at least
//! one usable key (every key either usable or skipped, usable `kid`s unique) or reports
//! errors with paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::jwks::{import_jwks, import_jwks_json, KeySet};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::signing::SigningKey;

const PINNED: [&[Alg]; 3] = [&Alg::VERIFY, &[Alg::EdDSA], &[Alg::RS256, Alg::PS512]];

fn check_key(key: &IssuerKey, allowed: &[Alg]) {
    for alg in Alg::VERIFY {
        if key.accepts(alg) {
            assert!(allowed.contains(&alg));
            assert!(!key.verify(alg, b"e30.e30", b"not a signature"));
            assert!(!key.verify(alg, b"e30.e30", &[0u8; 64]));
        }
    }
    assert!(!key.verify(Alg::HS256, b"e30.e30", &[0u8; 32]));
}

fn check_set(result: Result<KeySet, Vec<token_exchange_filter::core::jwks::KeySetError>>, total: Option<usize>, allowed: &[Alg]) {
    match result {
        Ok(set) => {
            assert!(!set.keys.is_empty(), "a set without usable keys must be an error");
            if let Some(total) = total {
                assert_eq!(set.keys.len() + set.skipped.len(), total);
            }
            for key in &set.keys {
                check_key(key, allowed);
            }
            let mut kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid()).collect();
            let n = kids.len();
            kids.sort_unstable();
            kids.dedup();
            assert_eq!(kids.len(), n, "duplicate kid among usable keys");
            if set.keys.len() > 1 {
                assert_eq!(n, set.keys.len(), "several usable keys without kids");
            }
            for s in &set.skipped {
                assert!(!s.to_string().is_empty());
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for allowed in PINNED {
        check_set(import_jwks_json(data, allowed), None, allowed);
    }
    let Ok(jwk) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for allowed in PINNED {
        if let Ok(key) = IssuerKey::from_jwk(&jwk, allowed) {
            check_key(&key, allowed);
        }
        let total = jwk.get("keys").and_then(|k| k.as_array()).map(Vec::len);
        check_set(import_jwks(&jwk, allowed), total, allowed);
        let wrapped = serde_json::json!({ "keys": [jwk.clone()] });
        check_set(import_jwks(&wrapped, allowed), Some(1), allowed);
    }
    for allow_hs256 in [false, true] {
        if let Ok(key) = SigningKey::from_jwk(&jwk, allow_hs256) {
            assert!(!key.kid().is_empty());
            assert!(allow_hs256 || key.alg() != Alg::HS256);
            let _ = key.public_jwk();
            assert!(!key.header_b64().is_empty());
        }
    }
});
