//! `IssuerKey::from_jwk` (and `SigningKey::from_jwk`) on arbitrary JSON: never panics; an
//! imported key accepts only algorithms it was allowed, and never verifies garbage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::keys::{Alg, IssuerKey, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(jwk) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for allowed in [
        &Alg::VERIFY[..],
        &[Alg::EdDSA][..],
        &[Alg::RS256, Alg::PS512][..],
    ] {
        if let Ok(key) = IssuerKey::from_jwk(&jwk, allowed) {
            for alg in Alg::VERIFY {
                if key.accepts(alg) {
                    assert!(allowed.contains(&alg));
                    assert!(!key.verify(alg, b"e30.e30", b"not a signature"));
                    assert!(!key.verify(alg, b"e30.e30", &[0u8; 64]));
                }
            }
            assert!(!key.verify(Alg::HS256, b"e30.e30", &[0u8; 32]));
        }
    }
    for allow_hs256 in [false, true] {
        if let Ok(key) = SigningKey::from_jwk(&jwk, allow_hs256) {
            assert!(!key.kid().is_empty());
            assert!(allow_hs256 || key.alg() != Alg::HS256);
            let _ = key.public_jwk();
        }
    }
});
