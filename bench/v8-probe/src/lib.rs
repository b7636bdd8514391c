//! Candidates for signature verification (and the signing the filter mints with), each an
//! operation over fixed vectors, checked once (a valid signature passes, a tampered one
//! fails) before it is timed. `v8` times them inside a Proxy-Wasm host; `bin/native.rs`
//! natively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../../../src/core/crypto/mod.rs"]
#[allow(dead_code)]
pub mod crypto;

#[cfg(target_arch = "wasm32")]
mod v8;

use crypto::HashAlg;

/// One timed operation.
pub struct Case {
    /// What is measured, and with which implementation.
    pub name: &'static str,
    /// Operations per timed batch.
    pub batch: u32,
    op: Box<dyn Fn() -> bool>,
}

impl Case {
    /// Runs the operation once; true when it gave the expected answer.
    pub fn run(&self) -> bool {
        (self.op)()
    }
}

/// A 651-byte signing input, the size of a typical IdP access token's header and payload.
pub fn message() -> Vec<u8> {
    let mut m = b"eyJhbGciOiJSUzI1NiIsImtpZCI6InByb2JlIiwidHlwIjoiSldUIn0.".to_vec();
    while m.len() < 651 {
        m.push(b'A' + (m.len() % 26) as u8);
    }
    m
}

const RSA_2048: &str = include_str!("../../../tests/fixtures/rsa/rsa-2048.TEST-ONLY.pem");
const RSA_4096: &str = include_str!("../../../tests/fixtures/rsa/rsa-4096.TEST-ONLY.pem");

/// A fixed-seed generator for the PSS salt (rand_core 0.6, as rsa 0.9 wants).
struct FixedRng(u64);
impl rsa::rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = (self.next_u64() >> 33) as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rsa::rand_core::CryptoRng for FixedRng {}

/// A fixed-seed generator for rsa 0.10's blinding (rand_core 0.10).
struct Rng010(u64);
impl rsa_010::rand_core::TryRng for Rng010 {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        for b in dest {
            *b = (self.try_next_u64()? >> 33) as u8;
        }
        Ok(())
    }
}
impl rsa_010::rand_core::TryCryptoRng for Rng010 {}

fn tampered(sig: &[u8]) -> Vec<u8> {
    let mut t = sig.to_vec();
    let last = t.len() - 1;
    t[last] ^= 1;
    t
}

fn checked(name: &'static str, batch: u32, f: impl Fn(&[u8]) -> bool + 'static, sig: Vec<u8>) -> Case {
    assert!(f(&sig), "{name}: valid signature refused");
    assert!(!f(&tampered(&sig)), "{name}: tampered signature accepted");
    Case {
        name,
        batch,
        op: Box::new(move || f(&sig)),
    }
}

/// Every candidate, checked. `batch_rsa` operations per batch for RSA and ECDSA, twice that
/// for Ed25519.
pub fn cases(batch: u32) -> Vec<Case> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    let msg: &'static [u8] = Box::leak(message().into_boxed_slice());
    let mut out = Vec::new();

    for (bits, pem, new_name, old_name) in [
        (
            2048,
            RSA_2048,
            "RS256-2048 montgomery.rs u32 vartime (new)",
            "RS256-2048 rsa 0.9 (before)",
        ),
        (
            4096,
            RSA_4096,
            "RS256-4096 montgomery.rs u32 vartime (new)",
            "RS256-4096 rsa 0.9 (before)",
        ),
    ] {
        let sk = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
        let pk = sk.to_public_key();
        use rsa::traits::PublicKeyParts;
        let (n, e) = (pk.n().to_bytes_be(), pk.e().to_bytes_be());
        let sig = rsa::pkcs1v15::SigningKey::<sha2_010::Sha256>::new(sk.clone())
            .sign(msg)
            .to_vec();
        let k = crypto::rsa::RsaPublicKey::new(&n, &e).unwrap();
        out.push(checked(new_name, batch, move |s| k.verify_pkcs1v15(HashAlg::Sha256, msg, s), sig.clone()));
        let cb = BoxedRsa::new(&n);
        out.push(checked(
            if bits == 2048 { "RS256-2048 crypto-bigint BoxedUint (filter until issue 8 cold)" } else { "RS256-4096 crypto-bigint BoxedUint (filter until issue 8 cold)" },
            batch,
            move |s| cb.verify_pkcs1v15_sha256(msg, s),
            sig.clone(),
        ));
        let old = pk.clone();
        out.push(checked(
            old_name,
            batch,
            move |s| {
                use sha2_010::Digest;
                let h = sha2_010::Sha256::digest(msg);
                old.verify(rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(), &h, s).is_ok()
            },
            sig,
        ));
        if bits == 2048 {
            let pss = rsa::pss::SigningKey::<sha2_010::Sha256>::new(sk)
                .sign_with_rng(&mut FixedRng(7), msg)
                .to_vec();
            let k = crypto::rsa::RsaPublicKey::new(&n, &e).unwrap();
            out.push(checked("PS256-2048 montgomery.rs u32 vartime (new)", batch, move |s| k.verify_pss(HashAlg::Sha256, msg, s), pss.clone()));
            out.push(checked(
                "PS256-2048 rsa 0.9 (before)",
                batch,
                move |s| {
                    use sha2_010::Digest;
                    let h = sha2_010::Sha256::digest(msg);
                    pk.verify(rsa::Pss::new::<sha2_010::Sha256>(), &h, s).is_ok()
                },
                pss,
            ));
        }
    }

    {
        use p256::ecdsa::signature::{Signer, Verifier};
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let vk = *sk.verifying_key();
        let sig: p256::ecdsa::Signature = sk.sign(msg);
        out.push(checked(
            "ES256 p256 0.14",
            batch,
            move |s| match p256::ecdsa::Signature::from_slice(s) {
                Ok(sig) => vk.verify(msg, &sig).is_ok(),
                Err(_) => false,
            },
            sig.to_bytes().to_vec(),
        ));
        out.push(Case {
            name: if cfg!(feature = "tables") {
                "sign ES256 p256 0.14 (precomputed tables)"
            } else {
                "sign ES256 p256 0.14 (no tables)"
            },
            batch,
            op: Box::new(move || {
                let s: p256::ecdsa::Signature = sk.sign(msg);
                s.to_bytes()[0] != 0 || s.to_bytes()[1] != 0
            }),
        });
    }
    {
        use p384::ecdsa::signature::{Signer, Verifier};
        let sk = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        let vk = *sk.verifying_key();
        let sig: p384::ecdsa::Signature = sk.sign(msg);
        out.push(checked(
            "ES384 p384 0.14",
            batch,
            move |s| match p384::ecdsa::Signature::from_slice(s) {
                Ok(sig) => vk.verify(msg, &sig).is_ok(),
                Err(_) => false,
            },
            sig.to_bytes().to_vec(),
        ));
    }
    {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([5u8; 32]));
        let sig = kp.sk.sign(msg, None).to_vec();
        let pk = kp.pk;
        out.push(checked(
            "EdDSA ed25519-compact 2.6 (before)",
            batch * 2,
            move |s| match ed25519_compact::Signature::from_slice(s) {
                Ok(sig) => pk.verify(msg, &sig).is_ok(),
                Err(_) => false,
            },
            sig.clone(),
        ));
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&kp.pk).unwrap();
        out.push(checked(
            "EdDSA ed25519-dalek 3 verify_strict",
            batch * 2,
            move |s| match ed25519_dalek::Signature::from_slice(s) {
                Ok(sig) => vk.verify_strict(msg, &sig).is_ok(),
                Err(_) => false,
            },
            sig,
        ));
        let compact_sig = kp.sk.sign(msg, None);
        let sk = kp.sk;
        out.push(Case {
            name: "sign EdDSA ed25519-compact 2.6",
            batch: batch * 2,
            op: Box::new(move || sk.sign(msg, None)[0] != 0 || true),
        });
        let dalek = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
        assert_eq!(
            ed25519_dalek::Signer::sign(&dalek, msg).to_bytes().as_slice(),
            compact_sig.as_ref(),
            "ed25519-dalek and ed25519-compact sign alike"
        );
        out.push(Case {
            name: "sign EdDSA ed25519-dalek 3 (the filter's minting)",
            batch: batch * 2,
            op: Box::new(move || ed25519_dalek::Signer::sign(&dalek, msg).to_bytes()[0] != 0 || true),
        });
    }
    {
        // RS256 minting, blinded, as the filter does it (rsa 0.10) and as it did (rsa 0.9).
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        use sha2::Digest;
        let old = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_2048).unwrap();
        let int = |x: &rsa::BigUint| rsa_010::BoxedUint::from_be_slice_vartime(&x.to_bytes_be());
        let new = rsa_010::PrivateKey::from_components(
            int(old.n()),
            int(old.e()),
            int(old.d()),
            vec![int(&old.primes()[0]), int(&old.primes()[1])],
        )
        .unwrap();
        let digest = sha2::Sha256::digest(msg).to_vec();
        let prefix: Box<[u8]> = Box::new([
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ]);
        let scheme = move || rsa_010::Pkcs1v15Sign { hash_len: Some(32), prefix: prefix.clone() };
        let sig = new.sign_with_rng(&mut Rng010(3), scheme(), &digest).unwrap();
        let expected = old
            .sign(rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(), &digest)
            .unwrap();
        assert_eq!(sig, expected, "rsa 0.10 and 0.9 sign alike");
        let d = digest.clone();
        out.push(Case {
            name: "sign RS256-2048 rsa 0.10, blinded (the filter's minting)",
            batch,
            op: Box::new(move || new.sign_with_rng(&mut Rng010(3), scheme(), &d).is_ok()),
        });
        out.push(Case {
            name: "sign RS256-2048 rsa 0.9, blinded (before)",
            batch,
            op: Box::new(move || {
                old.sign_with_rng(&mut FixedRng(3), rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(), &digest)
                    .is_ok()
            }),
        });
    }
    out.push(Case {
        name: "SHA-256 of 651 bytes (sha2 0.11)",
        batch: batch * 10,
        op: Box::new(move || HashAlg::Sha256.digest(&[msg]).as_ref()[0] != 0 || true),
    });
    out
}

/// The filter's RSA verification before the cold-path work (kept here as the baseline):
/// crypto-bigint 0.7 `BoxedUint` Montgomery exponentiation, parameters computed once per key,
/// then the same exact PKCS#1 v1.5 encoded-message comparison.
struct BoxedRsa {
    params: crypto_bigint::modular::BoxedMontyParams,
    len: usize,
}

impl BoxedRsa {
    fn new(n: &[u8]) -> BoxedRsa {
        use crypto_bigint::{BoxedUint, Odd};
        let odd = Odd::new(BoxedUint::from_be_slice_vartime(n)).unwrap();
        BoxedRsa { params: crypto_bigint::modular::BoxedMontyParams::new_vartime(odd), len: n.len() }
    }

    fn verify_pkcs1v15_sha256(&self, msg: &[u8], sig: &[u8]) -> bool {
        use crypto_bigint::modular::BoxedMontyForm;
        use crypto_bigint::BoxedUint;
        if sig.len() != self.len {
            return false;
        }
        let Ok(s) = BoxedUint::from_be_slice(sig, self.params.bits_precision()) else {
            return false;
        };
        if s.cmp_vartime(self.params.modulus().as_ref()) != std::cmp::Ordering::Less {
            return false;
        }
        let x = BoxedMontyForm::new(s, &self.params);
        let mut y = x.square();
        for _ in 1..16 {
            y = y.square();
        }
        let bytes = y.mul(&x).retrieve().to_be_bytes();
        let em = &bytes[bytes.len() - self.len..];
        let digest = HashAlg::Sha256.digest(&[msg]);
        const PREFIX: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let ps_len = self.len - 3 - PREFIX.len() - 32;
        em[0] == 0
            && em[1] == 1
            && em[2..2 + ps_len].iter().all(|b| *b == 0xff)
            && em[2 + ps_len] == 0
            && em[3 + ps_len..3 + ps_len + 19] == PREFIX
            && &em[3 + ps_len + 19..] == digest.as_ref()
    }
}

/// Keeps the cases whose name contains one of the comma-separated `filter` words (all when
/// `filter` is empty).
pub fn select(cases: Vec<Case>, filter: &str) -> Vec<Case> {
    let words: Vec<&str> = filter.split(',').filter(|w| !w.is_empty()).collect();
    cases
        .into_iter()
        .filter(|c| words.is_empty() || words.iter().any(|w| c.name.contains(w)))
        .collect()
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
