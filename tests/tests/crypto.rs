//! The filter's own signature verification (`core::crypto`, `IssuerKey::verify`) held against
//! independent signers: the `rsa` crate (RS*/PS*, 2048, 2049, 3072 and 4096-bit TEST-ONLY
//! keys) and `ed25519-compact` (EdDSA). Valid signatures pass; bit flips, cross-algorithm
//! use, out-of-range values, wrong lengths and hand-made near-miss encodings all fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::BigUint;
use serde_json::json;
use sha2::{Sha256, Sha384, Sha512};
use token_exchange_filter::core::crypto::montgomery::Modulus;
use token_exchange_filter::core::crypto::rsa::{RsaKeyError, RsaPublicKey};
use token_exchange_filter::core::crypto::HashAlg;
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_tests::b64;

const MSG: &[u8] =
    b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0Iiwic3ViIjoiYWxpY2UifQ";

const KEYS: [(u32, &str); 4] = [
    (2048, include_str!("../fixtures/rsa/rsa-2048.TEST-ONLY.pem")),
    (2049, include_str!("../fixtures/rsa/rsa-2049.TEST-ONLY.pem")),
    (3072, include_str!("../fixtures/rsa/rsa-3072.TEST-ONLY.pem")),
    (4096, include_str!("../fixtures/rsa/rsa-4096.TEST-ONLY.pem")),
];

const ALGS: [&str; 6] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

struct TestKey {
    bits: u32,
    sk: rsa::RsaPrivateKey,
    ours: RsaPublicKey,
}

fn keys() -> Vec<TestKey> {
    KEYS.iter()
        .map(|(bits, pem)| {
            let sk = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
            assert_eq!(sk.n().bits(), *bits as usize, "fixture size");
            let ours = RsaPublicKey::new(&sk.n().to_bytes_be(), &sk.e().to_bytes_be()).unwrap();
            assert_eq!(ours.bits(), *bits);
            TestKey {
                bits: *bits,
                sk,
                ours,
            }
        })
        .collect()
}

/// Signs with the rsa crate (PSS with a random salt as long as the hash).
fn sign(sk: &rsa::RsaPrivateKey, alg: &str, msg: &[u8]) -> Vec<u8> {
    let sk = sk.clone();
    let mut rng = rsa::rand_core::OsRng;
    match alg {
        "RS256" => rsa::pkcs1v15::SigningKey::<Sha256>::new(sk)
            .sign(msg)
            .to_vec(),
        "RS384" => rsa::pkcs1v15::SigningKey::<Sha384>::new(sk)
            .sign(msg)
            .to_vec(),
        "RS512" => rsa::pkcs1v15::SigningKey::<Sha512>::new(sk)
            .sign(msg)
            .to_vec(),
        "PS256" => rsa::pss::SigningKey::<Sha256>::new(sk)
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        "PS384" => rsa::pss::SigningKey::<Sha384>::new(sk)
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        "PS512" => rsa::pss::SigningKey::<Sha512>::new(sk)
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        _ => unreachable!(),
    }
}

fn verify(key: &RsaPublicKey, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
    let hash = match &alg[2..] {
        "256" => HashAlg::Sha256,
        "384" => HashAlg::Sha384,
        _ => HashAlg::Sha512,
    };
    if alg.starts_with("RS") {
        key.verify_pkcs1v15(hash, msg, sig)
    } else {
        key.verify_pss(hash, msg, sig)
    }
}

/// k-byte big-endian encoding of `v`.
fn to_k_bytes(v: &BigUint, k: usize) -> Vec<u8> {
    let b = v.to_bytes_be();
    let mut out = vec![0u8; k - b.len()];
    out.extend_from_slice(&b);
    out
}

fn k_of(key: &TestKey) -> usize {
    key.sk.n().bits().div_ceil(8)
}

/// The raw private operation: a "signature" whose public operation yields exactly `em`.
fn raw_sign(key: &TestKey, em: &[u8]) -> Vec<u8> {
    let m = BigUint::from_bytes_be(em);
    assert!(&m < key.sk.n());
    to_k_bytes(&m.modpow(key.sk.d(), key.sk.n()), k_of(key))
}

/// The raw public operation: the encoded message inside a signature.
fn raw_open(key: &TestKey, sig: &[u8]) -> Vec<u8> {
    let s = BigUint::from_bytes_be(sig);
    to_k_bytes(&s.modpow(key.sk.e(), key.sk.n()), k_of(key))
}

#[test]
fn independent_signatures_verify_for_every_size_and_algorithm() {
    for key in keys() {
        for alg in ALGS {
            let sig = sign(&key.sk, alg, MSG);
            assert_eq!(sig.len(), k_of(&key));
            assert!(verify(&key.ours, alg, MSG, &sig), "{} {alg}", key.bits);
            // Another message, and every other algorithm, refuse the same signature.
            assert!(
                !verify(&key.ours, alg, b"another message", &sig),
                "{} {alg}",
                key.bits
            );
            for other in ALGS.iter().filter(|a| **a != alg) {
                assert!(
                    !verify(&key.ours, other, MSG, &sig),
                    "{} {alg} accepted as {other}",
                    key.bits
                );
            }
        }
    }
}

#[test]
fn bit_flips_in_signature_or_message_fail() {
    for key in keys() {
        for alg in ALGS {
            let sig = sign(&key.sk, alg, MSG);
            // Every bit of the first and last 8 bytes, and every 13th bit in between.
            let bits = sig.len() * 8;
            let positions = (0..64)
                .chain((64..bits - 64).step_by(13))
                .chain(bits - 64..bits);
            for bit in positions {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 0x80 >> (bit % 8);
                assert!(
                    !verify(&key.ours, alg, MSG, &bad),
                    "{} {alg} bit {bit}",
                    key.bits
                );
            }
            for bit in (0..MSG.len() * 8).step_by(7) {
                let mut msg = MSG.to_vec();
                msg[bit / 8] ^= 0x80 >> (bit % 8);
                assert!(
                    !verify(&key.ours, alg, &msg, &sig),
                    "{} {alg} msg bit {bit}",
                    key.bits
                );
            }
        }
    }
}

#[test]
fn out_of_range_and_degenerate_signatures_fail() {
    for key in keys() {
        let k = k_of(&key);
        let n = key.sk.n();
        let mut one = vec![0u8; k];
        one[k - 1] = 1;
        let n_minus_1 = to_k_bytes(&(n - BigUint::from(1u8)), k);
        let n_bytes = to_k_bytes(n, k);
        let n_plus_1 = to_k_bytes(&(n + BigUint::from(1u8)), k);
        let all_ff = vec![0xffu8; k];
        for alg in ALGS {
            let valid = sign(&key.sk, alg, MSG);
            let mut longer = vec![0u8];
            longer.extend_from_slice(&valid);
            let cases: Vec<(&str, Vec<u8>)> = vec![
                ("zero", vec![0u8; k]),
                ("one", one.clone()),
                ("n - 1", n_minus_1.clone()),
                ("n", n_bytes.clone()),
                ("n + 1", n_plus_1.clone()),
                ("all 0xff", all_ff.clone()),
                ("empty", Vec::new()),
                ("one byte", vec![1]),
                ("k - 1 bytes", valid[1..].to_vec()),
                ("k + 1 bytes (same integer)", longer),
                ("valid + s·n", {
                    let s = BigUint::from_bytes_be(&valid) + n;
                    s.to_bytes_be()
                }),
            ];
            for (what, sig) in cases {
                assert!(
                    !verify(&key.ours, alg, MSG, &sig),
                    "{} {alg} {what}",
                    key.bits
                );
            }
        }
    }
}

fn digest_info(alg: &str, msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let (mut prefix, hash): (Vec<u8>, Vec<u8>) = match alg {
        "RS256" => (
            hex("3031300d060960864801650304020105000420"),
            Sha256::digest(msg).to_vec(),
        ),
        "RS384" => (
            hex("3041300d060960864801650304020205000430"),
            Sha384::digest(msg).to_vec(),
        ),
        _ => (
            hex("3051300d060960864801650304020305000440"),
            Sha512::digest(msg).to_vec(),
        ),
    };
    prefix.extend_from_slice(&hash);
    prefix
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// 0x00 0x01 FF… 0x00 T, padded to k bytes.
fn pkcs1_em(k: usize, t: &[u8]) -> Vec<u8> {
    let mut em = vec![0x00, 0x01];
    em.extend(std::iter::repeat_n(0xff, k - t.len() - 3));
    em.push(0x00);
    em.extend_from_slice(t);
    em
}

#[test]
fn pkcs1_near_miss_encodings_fail() {
    for key in keys() {
        let k = k_of(&key);
        for alg in ["RS256", "RS384", "RS512"] {
            let t = digest_info(alg, MSG);
            // Positive control: the hand-made encoding is the rsa crate's signature.
            let exact = pkcs1_em(k, &t);
            assert_eq!(raw_sign(&key, &exact), sign(&key.sk, alg, MSG));
            assert!(verify(&key.ours, alg, MSG, &raw_sign(&key, &exact)));

            let mut near: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut e = exact.clone();
            e[0] = 0x01;
            near.push(("leading byte 1", e));
            let mut e = exact.clone();
            e[1] = 0x02;
            near.push(("block type 2", e));
            let mut e = exact.clone();
            e[5] = 0xfe;
            near.push(("padding byte not 0xff", e));
            let ps_end = k - t.len() - 1;
            let mut e = exact.clone();
            e[ps_end] = 0xff;
            near.push(("no zero separator", e));
            // Bleichenbacher 2006: shorter padding, the hash, then garbage filling the rest.
            let mut e = vec![0x00, 0x01];
            e.extend(std::iter::repeat_n(0xff, 8));
            e.push(0x00);
            e.extend_from_slice(&t);
            e.resize(k, 0x42);
            near.push(("garbage after the hash", e));
            // DigestInfo without the NULL parameters: refused (one accepted encoding).
            let mut no_null = t.clone();
            no_null.drain(15..17);
            no_null[1] -= 2;
            no_null[3] -= 2;
            near.push(("DigestInfo without NULL", pkcs1_em(k, &no_null)));
            // The right structure around another message's hash.
            near.push(("another hash", pkcs1_em(k, &digest_info(alg, b"other"))));
            // Fewer than 8 padding bytes: the hash of a shorter DigestInfo cannot fit that way,
            // so use a padding of 7 bytes and a T that fills the rest.
            let mut e = vec![0x00, 0x01];
            e.extend(std::iter::repeat_n(0xff, 7));
            e.push(0x00);
            e.extend(std::iter::repeat_n(0x00, k - t.len() - 10));
            e.extend_from_slice(&t);
            near.push(("zeros before DigestInfo", e));
            for (what, em) in near {
                assert_eq!(em.len(), k);
                if BigUint::from_bytes_be(&em) >= *key.sk.n() {
                    continue;
                }
                let sig = raw_sign(&key, &em);
                assert!(
                    !verify(&key.ours, alg, MSG, &sig),
                    "{} {alg} {what}",
                    key.bits
                );
            }
        }
    }
}

#[test]
fn pss_near_miss_encodings_fail() {
    for key in keys() {
        let k = k_of(&key);
        for alg in ["PS256", "PS384", "PS512"] {
            let sig = sign(&key.sk, alg, MSG);
            let em = raw_open(&key, &sig);
            // Positive control: re-signing the opened encoding gives back the signature.
            assert_eq!(raw_sign(&key, &em), sig);
            assert!(verify(&key.ours, alg, MSG, &raw_sign(&key, &em)));
            // The first byte that belongs to emLen (modulus bits 8x+1: emLen = k - 1).
            let first = if key.bits % 8 == 1 { 1 } else { 0 };
            let mut near: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut e = em.clone();
            e[k - 1] = 0xbb;
            near.push(("trailer not 0xbc", e));
            // Moduli of 8x bits: the leftmost bit of emLen must be zero; 8x+1 bits: it is
            // part of the masked DB. Either way flipping it must fail.
            let mut e = em.clone();
            e[first] ^= 0x80;
            near.push(("leftmost bit flipped", e));
            let mut e = em.clone();
            e[k - 2] ^= 1;
            near.push(("H changed", e));
            let mut e = em.clone();
            e[k / 2] ^= 1;
            near.push(("masked DB changed", e));
            if first == 1 {
                let mut e = em.clone();
                e[0] = 1;
                near.push(("byte above emLen set", e));
            }
            for (what, e) in near {
                if BigUint::from_bytes_be(&e) >= *key.sk.n() {
                    continue;
                }
                let s = raw_sign(&key, &e);
                assert!(
                    !verify(&key.ours, alg, MSG, &s),
                    "{} {alg} {what}",
                    key.bits
                );
            }
        }
    }
}

#[test]
fn rsa_keys_outside_policy_are_refused() {
    let key = &keys()[0];
    let n = key.sk.n().to_bytes_be();
    assert_eq!(
        RsaPublicKey::new(&n, &[3]).unwrap_err(),
        RsaKeyError::Exponent
    );
    assert_eq!(
        RsaPublicKey::new(&n, &[1, 0, 0, 1]).unwrap_err(),
        RsaKeyError::Exponent
    );
    assert!(RsaPublicKey::new(&n, &[0, 1, 0, 1]).is_ok());
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    assert_eq!(
        RsaPublicKey::new(&even, &[1, 0, 1]).unwrap_err(),
        RsaKeyError::EvenModulus
    );
    assert_eq!(
        RsaPublicKey::new(&n[1..], &[1, 0, 1]).unwrap_err(),
        RsaKeyError::ModulusSize
    );
    let mut huge = vec![0xff; 513];
    huge[512] = 0x01;
    assert_eq!(
        RsaPublicKey::new(&huge, &[1, 0, 1]).unwrap_err(),
        RsaKeyError::ModulusSize
    );
    assert_eq!(
        RsaPublicKey::new(&[], &[1, 0, 1]).unwrap_err(),
        RsaKeyError::ModulusSize
    );
}

#[test]
fn issuer_keys_verify_every_rsa_algorithm_through_the_jwk() {
    for key in keys() {
        let jwk = json!({
            "kty": "RSA", "kid": "k",
            "n": b64(&key.sk.n().to_bytes_be()), "e": b64(&key.sk.e().to_bytes_be()),
        });
        let algs: Vec<Alg> = ALGS
            .iter()
            .map(|a| Alg::from_verify_name(a).unwrap())
            .collect();
        let ik = IssuerKey::from_jwk(&jwk, &algs).unwrap();
        for (name, alg) in ALGS.iter().zip(&algs) {
            let sig = sign(&key.sk, name, MSG);
            assert!(ik.verify(*alg, MSG, &sig), "{} {name}", key.bits);
            assert!(!ik.verify(*alg, &MSG[1..], &sig), "{} {name}", key.bits);
            assert!(!ik.verify(Alg::ES256, MSG, &sig));
            assert!(!ik.verify(Alg::EdDSA, MSG, &sig));
        }
    }
}

#[test]
fn eddsa_verifies_independent_signatures_strictly() {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3u8; 32]));
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.pk.as_ref())});
    let ik = IssuerKey::from_jwk(&jwk, &[Alg::EdDSA]).unwrap();
    let sig = kp.sk.sign(MSG, None).to_vec();
    assert!(ik.verify(Alg::EdDSA, MSG, &sig));
    assert!(!ik.verify(Alg::EdDSA, &MSG[1..], &sig));
    for bit in 0..512 {
        let mut bad = sig.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(!ik.verify(Alg::EdDSA, MSG, &bad), "bit {bit}");
    }
    assert!(!ik.verify(Alg::EdDSA, MSG, &sig[..63]));
    assert!(!ik.verify(Alg::EdDSA, MSG, &[sig.as_slice(), &[0]].concat()));
    // S + L (non-canonical S, the same point equation): refused.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10,
    ];
    let mut s_plus_l = sig.clone();
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        s_plus_l[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert!(!ik.verify(Alg::EdDSA, MSG, &s_plus_l));
    // A small-order public key (the identity point) is refused for any signature.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&identity)});
    if let Ok(weak) = IssuerKey::from_jwk(&weak, &[Alg::EdDSA]) {
        let mut forged = vec![0u8; 64];
        forged[0] = 1; // R = identity, S = 0: valid under a lax cofactored check
        assert!(!weak.verify(Alg::EdDSA, b"anything", &forged));
    }
}

/// A fixed-seed generator (splitmix64): the differential tests are reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A random number of exactly `bits` bits; limbs biased towards 0, 0xffffffff and
    /// single bits now and then, which exercise the carries.
    fn number(&mut self, bits: usize) -> Vec<u8> {
        let len = bits.div_ceil(8);
        let mut v = self.bytes(len);
        match self.next() % 4 {
            0 => {
                for _ in 0..(self.next() % 16) {
                    let at = (self.next() as usize) % len.saturating_sub(4).max(1);
                    let fill = if self.next().is_multiple_of(2) {
                        0x00
                    } else {
                        0xff
                    };
                    v[at..at + 4].fill(fill);
                }
            }
            1 => v.fill(if self.next().is_multiple_of(2) {
                0x00
            } else {
                0xff
            }),
            _ => {}
        }
        let top_bits = bits - 8 * (len - 1);
        v[0] &= 0xffu8 >> (8 - top_bits);
        v[0] |= 1 << (top_bits - 1);
        v
    }
}

/// x^65537 mod n by the filter's Montgomery code, or None when it refuses x.
fn ours_pow(m: &Modulus, x: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; m.byte_len()];
    m.pow65537(x, &mut out).then_some(out)
}

/// The filter's x^65537 mod n against num-bigint-dig's (the `rsa` crate's bignums), for
/// `count` random odd moduli of `bits` bits with a few bases each: random below n, the edges
/// 0, 1, 2, n − 1, n − 2 (equal results), and n, n + 1, 2n − 1, all-0xff (refused).
fn differential_pow(bits: usize, count: usize, seed: u64) {
    let mut rng = SplitMix(seed);
    let e = BigUint::from(65537u32);
    let mut checked = 0;
    for round in 0..count {
        let mut n_be = rng.number(bits);
        *n_be.last_mut().unwrap() |= 1;
        let n = BigUint::from_bytes_be(&n_be);
        let m = Modulus::new(&n_be).unwrap();
        let k = n_be.len();
        assert_eq!(m.byte_len(), k);
        let mut bases: Vec<BigUint> = Vec::new();
        for _ in 0..3 {
            let x = BigUint::from_bytes_be(&rng.number(bits)) % &n;
            bases.push(x);
        }
        if round.is_multiple_of(16) {
            for small in [0u32, 1, 2] {
                bases.push(BigUint::from(small));
            }
            bases.push(&n - BigUint::from(1u8));
            bases.push(&n - BigUint::from(2u8));
        }
        for x in bases {
            let want = to_k_bytes(&x.modpow(&e, &n), k);
            let got = ours_pow(&m, &to_k_bytes(&x, k));
            assert_eq!(
                got.as_deref(),
                Some(&want[..]),
                "{bits} bits, round {round}"
            );
            checked += 1;
        }
        // At or above n: refused, whatever the encoding length.
        let above = [
            n.clone(),
            &n + BigUint::from(1u8),
            &n + &n - BigUint::from(1u8),
            &n + BigUint::from_bytes_be(&rng.number(bits.min(64))),
        ];
        for x in above {
            let bytes = x.to_bytes_be();
            if bytes.len() <= k {
                assert_eq!(ours_pow(&m, &to_k_bytes(&x, k)), None, "{bits} bits, x ≥ n");
            }
            assert_eq!(
                ours_pow(&m, &bytes),
                None,
                "{bits} bits, x ≥ n, minimal bytes"
            );
        }
        assert_eq!(ours_pow(&m, &vec![0xff; k]), None, "{bits} bits, all 0xff");
        // A wrong output length is refused too.
        assert!(!m.pow65537(&[1], &mut vec![0u8; k + 1]));
    }
    assert!(checked >= 3 * count);
}

#[test]
fn montgomery_pow_matches_num_bigint_2048() {
    differential_pow(2048, 1000, 1);
}

#[test]
fn montgomery_pow_matches_num_bigint_2049_and_odd_sizes() {
    differential_pow(2049, 400, 2);
    for (i, bits) in [2056, 2080, 2081, 2111, 2112, 2113, 2560, 3071, 4095]
        .iter()
        .enumerate()
    {
        differential_pow(*bits, 60, 10 + i as u64);
    }
}

#[test]
fn montgomery_pow_matches_num_bigint_3072() {
    differential_pow(3072, 400, 3);
}

#[test]
fn montgomery_pow_matches_num_bigint_4096() {
    differential_pow(4096, 300, 4);
}

#[test]
fn montgomery_modulus_refuses_even_zero_padded_and_oversized() {
    let mut n = vec![0xc5u8; 256];
    assert!(Modulus::new(&n).is_some());
    n[255] = 0xc4;
    assert!(Modulus::new(&n).is_none(), "even");
    n[255] = 0xc5;
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    assert!(Modulus::new(&padded).is_none(), "leading zero byte");
    assert!(Modulus::new(&[]).is_none(), "empty");
    assert!(Modulus::new(&[1]).is_none(), "one");
    assert!(Modulus::new(&vec![0xffu8; 512]).is_some(), "4096 bits");
    assert!(Modulus::new(&vec![0xffu8; 513]).is_none(), "4104 bits");
}
