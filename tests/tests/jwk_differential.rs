//! The filter reads JWKs itself (`src/core/jwk.rs`); jwt-simple, which it used before, is
//! kept here as an independent importer. The same JWKs, valid and hostile (missing or foreign
//! members, non-canonical base64url, wrong lengths, off-curve and small-order points,
//! mismatched public and private halves, weak or malformed RSA keys, bad metadata), go through
//! both and must get the same accept or refuse decision. Accepted private keys must publish
//! exactly the public JWK jwt-simple exports, and what they sign must verify with jwt-simple
//! and equal the independent signers' output for the deterministic algorithms.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use token_exchange_filter::core::entropy::{Entropy, EntropyError};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::signing::SigningKey;
use token_exchange_tests::*;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ed25519,
    P256,
    P384,
    Rsa,
}

/// jwt-simple's decision on a public JWK, with the importer of `kind`.
fn theirs_public(kind: Kind, jwk: &Value) -> bool {
    let text = jwk.to_string();
    match kind {
        Kind::Ed25519 => Ed25519PublicKey::from_jwk(&text).is_ok(),
        Kind::P256 => ES256PublicKey::from_jwk(&text).is_ok(),
        Kind::P384 => ES384PublicKey::from_jwk(&text).is_ok(),
        // As the filter used it: imported as the key's own algorithm when it names one.
        Kind::Rsa => match jwk.get("alg").and_then(Value::as_str) {
            Some("RS384") => RS384PublicKey::from_jwk(&text).is_ok(),
            Some("RS512") => RS512PublicKey::from_jwk(&text).is_ok(),
            Some("PS256") => PS256PublicKey::from_jwk(&text).is_ok(),
            Some("PS384") => PS384PublicKey::from_jwk(&text).is_ok(),
            Some("PS512") => PS512PublicKey::from_jwk(&text).is_ok(),
            _ => RS256PublicKey::from_jwk(&text).is_ok(),
        },
    }
}

/// jwt-simple's decision on a private JWK, plus the filter's own rule on top of it: a
/// signing key needs a non-empty `kid`.
fn theirs_private(kind: Kind, jwk: &Value) -> bool {
    let text = jwk.to_string();
    let kid = jwk
        .get("kid")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    kid && match kind {
        Kind::Ed25519 => Ed25519KeyPair::from_jwk(&text).is_ok(),
        Kind::P256 => ES256KeyPair::from_jwk(&text).is_ok(),
        Kind::P384 => ES384KeyPair::from_jwk(&text).is_ok(),
        Kind::Rsa => RS256KeyPair::from_jwk(&text).is_ok(),
    }
}

fn ours_public(jwk: &Value) -> bool {
    IssuerKey::from_jwk(jwk, &Alg::VERIFY).is_ok()
}

fn ours_private(jwk: &Value) -> bool {
    SigningKey::from_jwk(jwk, false).is_ok()
}

fn set(jwk: &Value, name: &str, v: Value) -> Value {
    let mut j = jwk.clone();
    j[name] = v;
    j
}

fn without(jwk: &Value, name: &str) -> Value {
    let mut j = jwk.clone();
    j.as_object_mut().unwrap().remove(name);
    j
}

/// The same bytes spelled with non-zero unused trailing bits (non-canonical base64url).
fn non_canonical(b64: &str) -> Option<String> {
    let bits = (b64.len() * 6) % 8;
    if bits == 0 {
        return None;
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *b64.as_bytes().last()?;
    let i = ALPHABET.iter().position(|c| *c == last)?;
    let mut s = b64[..b64.len() - 1].to_string();
    s.push(ALPHABET[i ^ 1] as char);
    Some(s)
}

fn with_bytes(jwk: &Value, name: &str, f: impl Fn(&mut Vec<u8>)) -> Value {
    let mut bytes = unb64(jwk[name].as_str().unwrap());
    f(&mut bytes);
    set(jwk, name, json!(b64(&bytes)))
}

/// Mutations every key type gets: members removed, foreign members, spellings of each
/// material member, metadata.
fn common_mutations(jwk: &Value, private: bool) -> Vec<(String, Value)> {
    let mut out = vec![("as given".to_string(), jwk.clone())];
    let members: Vec<String> = jwk.as_object().unwrap().keys().cloned().collect();
    for m in &members {
        out.push((format!("without {m}"), without(jwk, m)));
        let v = jwk[m].as_str().unwrap_or_default().to_string();
        if ["kty", "crv", "alg", "kid", "use"].contains(&m.as_str()) {
            out.push((format!("{m} as a number"), set(jwk, m, json!(1))));
            continue;
        }
        out.push((format!("{m} padded"), set(jwk, m, json!(format!("{v}=")))));
        out.push((
            format!("{m} in standard base64"),
            set(jwk, m, json!(v.replace('-', "+").replace('_', "/"))),
        ));
        out.push((
            format!("{m} one char short"),
            set(jwk, m, json!(v[..v.len() - 1])),
        ));
        out.push((
            format!("{m} one char long"),
            set(jwk, m, json!(format!("{v}A"))),
        ));
        out.push((format!("{m} empty"), set(jwk, m, json!(""))));
        out.push((format!("{m} as a number"), set(jwk, m, json!(7))));
        out.push((
            format!("{m} with a leading zero byte"),
            with_bytes(jwk, m, |b| b.insert(0, 0)),
        ));
        out.push((
            format!("{m} one byte short"),
            with_bytes(jwk, m, |b| {
                b.pop();
            }),
        ));
        if let Some(nc) = non_canonical(&v) {
            out.push((format!("{m} non-canonical"), set(jwk, m, json!(nc))));
        }
    }
    for foreign in [
        "k", "oth", "y", "n", "e", "x", "crv", "pub", "priv", "p", "d", "dp", "qi",
    ] {
        if !members.iter().any(|m| m == foreign) {
            out.push((
                format!("with foreign {foreign}"),
                set(jwk, foreign, json!("AQAB")),
            ));
        }
    }
    for (what, kty) in [
        ("kty OKP", "OKP"),
        ("kty EC", "EC"),
        ("kty RSA", "RSA"),
        ("kty oct", "oct"),
        ("kty lower", "rsa"),
    ] {
        out.push((what.into(), set(jwk, "kty", json!(kty))));
    }
    for crv in ["P-256", "P-384", "P-521", "Ed25519", "X25519", "secp256k1"] {
        out.push((format!("crv {crv}"), set(jwk, "crv", json!(crv))));
    }
    for alg in [
        "RS256", "ES256", "ES384", "EdDSA", "PS256", "HS256", "none", "rs256",
    ] {
        out.push((format!("alg {alg}"), set(jwk, "alg", json!(alg))));
    }
    out.push(("use sig".into(), set(jwk, "use", json!("sig"))));
    out.push(("use enc".into(), set(jwk, "use", json!("enc"))));
    out.push(("use number".into(), set(jwk, "use", json!(5))));
    for ops in [
        json!([]),
        json!(["verify"]),
        json!(["sign"]),
        json!(["sign", "verify"]),
        json!(["verify", "verify"]),
        json!(["sign", "sign"]),
        json!(["encrypt"]),
        json!([1]),
        json!("verify"),
    ] {
        out.push((format!("key_ops {ops}"), set(jwk, "key_ops", ops)));
    }
    out.push(("kid number".into(), set(jwk, "kid", json!(3))));
    out.push((
        "unknown members".into(),
        set(jwk, "x5t", json!({"nested": [1, null]})),
    ));
    out.push((
        "over 8 KiB".into(),
        set(jwk, "x5c", json!(["A".repeat(9000)])),
    ));
    if private {
        out.push(("public half only".into(), without(jwk, "d")));
    }
    out
}

fn assert_same(kind: Kind, private: bool, cases: &[(String, Value)]) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for (what, jwk) in cases {
        let (ours, theirs) = if private {
            (ours_private(jwk), theirs_private(kind, jwk))
        } else {
            (ours_public(jwk), theirs_public(kind, jwk))
        };
        assert_eq!(
            ours,
            theirs,
            "{kind:?} {} key, {what}: ours {} and jwt-simple {} ({jwk})",
            if private { "private" } else { "public" },
            if ours { "accepts" } else { "refuses" },
            if theirs { "accepts" } else { "refuses" },
        );
        if ours {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    (accepted, refused)
}

fn ed25519_private(seed: u8) -> Value {
    let kp = Ed25519KeyPair::from_bytes(
        &ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32])).to_vec(),
    )
    .unwrap();
    set(
        &serde_json::from_str(&kp.to_jwk()).unwrap(),
        "kid",
        json!("k"),
    )
}

fn p256_private(byte: u8) -> Value {
    let kp = ES256KeyPair::from_bytes(&[byte; 32]).unwrap();
    set(
        &serde_json::from_str(&kp.to_jwk()).unwrap(),
        "kid",
        json!("k"),
    )
}

fn rsa_private(seed: u64) -> Value {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let der = rsa_key(seed).to_pkcs1_der().unwrap();
    let kp = RS256KeyPair::from_der(der.as_bytes()).unwrap();
    set(
        &serde_json::from_str(&kp.to_jwk()).unwrap(),
        "kid",
        json!("k"),
    )
}

fn public_of(private: &Value) -> Value {
    let mut j = private.clone();
    for m in ["d", "p", "q", "dp", "dq", "qi"] {
        j.as_object_mut().unwrap().remove(m);
    }
    j
}

/// p = 2^255 - 19, little-endian.
fn ed25519_p_plus(k: u8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xed + k;
    b[31] = 0x7f;
    b
}

#[test]
fn ed25519_keys_get_the_same_decision_as_jwt_simple() {
    let private = ed25519_private(7);
    let public = public_of(&private);
    let other = ed25519_private(8);
    let mut cases = common_mutations(&public, false);
    // Small-order points (identity, order 2, order 4, order 8), an encoding of y >= p, a
    // y with no x (off the curve), the identity with its sign bit set.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order2 = [0xff; 32];
    order2[0] = 0xec;
    order2[31] = 0x7f;
    let mut order4 = [0u8; 32];
    order4[31] = 0x80; // x = sqrt(-1)·..., y = 0 with the sign bit
    let mut order8 = [0u8; 32];
    order8[..4].copy_from_slice(&[0x26, 0xe8, 0x95, 0x8f]);
    order8[4..].copy_from_slice(&hex32_tail(
        "c2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    ));
    let mut neg_identity = identity;
    neg_identity[31] |= 0x80;
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    for (what, x) in [
        ("identity", identity),
        ("order 2", order2),
        ("y = 0", order4),
        ("order 8", order8),
        ("identity with sign bit", neg_identity),
        ("y = p", ed25519_p_plus(0)),
        ("y = p + 1", ed25519_p_plus(1)),
        ("y = p + 2", ed25519_p_plus(2)),
        ("y = 2 (off the curve)", off_curve),
    ] {
        cases.push((what.into(), set(&public, "x", json!(b64(&x)))));
    }
    // Every byte pattern of a run of candidates, so that decompression failures and
    // successes both occur.
    for i in 0..64u8 {
        let mut x = [i; 32];
        x[31] &= 0x7f;
        cases.push((format!("pattern {i}"), set(&public, "x", json!(b64(&x)))));
    }
    let (accepted, refused) = assert_same(Kind::Ed25519, false, &cases);
    assert!(
        accepted > 5 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );

    let mut cases = common_mutations(&private, true);
    cases.push((
        "x of another key".into(),
        set(&private, "x", other["x"].clone()),
    ));
    cases.push((
        "d of another key".into(),
        set(&private, "d", other["d"].clone()),
    ));
    cases.push(("zero seed".into(), set(&private, "d", json!(b64(&[0; 32])))));
    let (accepted, refused) = assert_same(Kind::Ed25519, true, &cases);
    assert!(
        accepted > 3 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
}

fn hex32_tail(s: &str) -> [u8; 28] {
    let mut out = [0u8; 28];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn ec_keys_get_the_same_decision_as_jwt_simple() {
    let private = p256_private(0x2a);
    let public = public_of(&private);
    let other = p256_private(0x2b);
    let mut cases = common_mutations(&public, false);
    cases.push((
        "y flipped (off the curve)".into(),
        with_bytes(&public, "y", |b| b[31] ^= 1),
    ));
    cases.push((
        "x of another key".into(),
        set(&public, "x", other["x"].clone()),
    ));
    cases.push((
        "zero point".into(),
        set(
            &set(&public, "x", json!(b64(&[0; 32]))),
            "y",
            json!(b64(&[0; 32])),
        ),
    ));
    let (accepted, refused) = assert_same(Kind::P256, false, &cases);
    assert!(
        accepted > 5 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );

    let mut cases = common_mutations(&private, true);
    cases.push((
        "x of another key".into(),
        set(&private, "x", other["x"].clone()),
    ));
    cases.push((
        "y of another key".into(),
        set(&private, "y", other["y"].clone()),
    ));
    cases.push((
        "d of another key".into(),
        set(&private, "d", other["d"].clone()),
    ));
    cases.push((
        "zero scalar".into(),
        set(&private, "d", json!(b64(&[0; 32]))),
    ));
    cases.push((
        "scalar 2^256 - 1".into(),
        set(&private, "d", json!(b64(&[0xff; 32]))),
    ));
    let order = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    cases.push(("scalar = n".into(), set(&private, "d", json!(b64(&order)))));
    let (accepted, refused) = assert_same(Kind::P256, true, &cases);
    assert!(
        accepted > 3 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );

    // P-384 public keys (the filter verifies ES384 but never signs with it).
    let kp = ES384KeyPair::from_bytes(&[0x2a; 48]).unwrap();
    let p384: Value = serde_json::from_str(&kp.public_key().with_key_id("k").to_jwk()).unwrap();
    let mut cases = common_mutations(&p384, false);
    cases.push((
        "y flipped (off the curve)".into(),
        with_bytes(&p384, "y", |b| b[47] ^= 1),
    ));
    cases.push(("P-256 sized".into(), set(&p384, "x", public["x"].clone())));
    let (accepted, refused) = assert_same(Kind::P384, false, &cases);
    assert!(
        accepted > 5 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn rsa_keys_get_the_same_decision_as_jwt_simple() {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let private = rsa_private(0x6777);
    let public = public_of(&private);
    let other = rsa_private(0x5151);
    let mut cases = common_mutations(&public, false);
    cases.push((
        "n even".into(),
        with_bytes(&public, "n", |b| *b.last_mut().unwrap() &= 0xfe),
    ));
    cases.push(("e = 3".into(), set(&public, "e", json!("Aw"))));
    cases.push((
        "e = 65537 with a leading zero".into(),
        set(&public, "e", json!("AAEAAQ")),
    ));
    cases.push((
        "n of 2047 bits".into(),
        with_bytes(&public, "n", |b| b[0] = 0x7f),
    ));
    cases.push((
        "n of 4104 bits".into(),
        with_bytes(&public, "n", |b| {
            b.splice(0..0, vec![0xc5; 257]);
        }),
    ));
    let small = rsa::RsaPrivateKey::new(&mut FixedRng(99), 1024).unwrap();
    let small_public =
        json!({"kty": "RSA", "n": b64(&small.n().to_bytes_be()), "e": "AQAB", "kid": "k"});
    cases.push(("1024-bit".into(), small_public.clone()));
    let (accepted, refused) = assert_same(Kind::Rsa, false, &cases);
    assert!(
        accepted > 5 && refused > 40,
        "{accepted} accepted, {refused} refused"
    );

    let mut cases = common_mutations(&private, true);
    for m in ["n", "d", "p", "q", "dp", "dq", "qi"] {
        cases.push((
            format!("{m} of another key"),
            set(&private, m, other[m].clone()),
        ));
        cases.push((
            format!("{m} plus two"),
            with_bytes(&private, m, |b| {
                let last = b.len() - 1;
                b[last] = b[last].wrapping_add(2);
            }),
        ));
    }
    let swapped = set(
        &set(&private, "p", private["q"].clone()),
        "q",
        private["p"].clone(),
    );
    cases.push(("p and q swapped".into(), swapped.clone()));
    cases.push((
        "p and q swapped with their CRT values".into(),
        set(
            &set(&swapped, "dp", private["dq"].clone()),
            "dq",
            private["dp"].clone(),
        ),
    ));
    // d + φ(n): still an inverse of e modulo p − 1 and q − 1, but not below n.
    let sk = rsa_key(0x6777);
    let one = rsa::BigUint::from(1u8);
    let phi = (&sk.primes()[0] - &one) * (&sk.primes()[1] - &one);
    let big_d = sk.d() + &phi;
    cases.push((
        "d + phi(n)".into(),
        set(&private, "d", json!(b64(&big_d.to_bytes_be()))),
    ));
    let small_private = {
        let c = |x: &rsa::BigUint| json!(b64(&x.to_bytes_be()));
        json!({
            "kty": "RSA", "kid": "k", "n": c(small.n()), "e": "AQAB", "d": c(small.d()),
            "p": c(&small.primes()[0]), "q": c(&small.primes()[1]),
            "dp": c(small.dp().unwrap()), "dq": c(small.dq().unwrap()),
            "qi": json!(b64(&small.qinv().unwrap().to_bytes_be().1)),
        })
    };
    cases.push(("1024-bit".into(), small_private));
    let (accepted, refused) = assert_same(Kind::Rsa, true, &cases);
    assert!(
        accepted > 3 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
}

struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf.iter_mut() {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

/// An accepted private key publishes jwt-simple's public JWK (so the same `kid`, the same
/// fingerprint, the same published key set) and signs what jwt-simple verifies; the
/// deterministic algorithms sign exactly what the independent signers sign.
#[test]
fn imported_keys_publish_and_sign_like_the_independent_implementations() {
    use sha2::Digest;
    let payload = json!({"iss": "https://gateway.test", "sub": "s", "iat": 1_000, "exp": 2_000});
    let opts = || VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(1_500)),
        required_signature_type: Some("at+jwt".into()),
        ..Default::default()
    };
    for (kind, jwk) in [
        (Kind::Ed25519, ed25519_private(7)),
        (Kind::P256, p256_private(0x2a)),
        (Kind::Rsa, rsa_private(0x6777)),
    ] {
        let text = jwk.to_string();
        let key = SigningKey::from_jwk(&jwk, false).unwrap();
        let (expected_public, verified) = {
            let token = key
                .sign_compact(payload.to_string().as_bytes(), &mut Counter(0))
                .unwrap();
            match kind {
                Kind::Ed25519 => {
                    let pk = Ed25519KeyPair::from_jwk(&text).unwrap().public_key();
                    let ok = pk
                        .verify_token::<NoCustomClaims>(&token, Some(opts()))
                        .is_ok();
                    (pk.with_key_id("k").to_jwk(), ok)
                }
                Kind::P256 => {
                    let pk = ES256KeyPair::from_jwk(&text).unwrap().public_key();
                    let ok = pk
                        .verify_token::<NoCustomClaims>(&token, Some(opts()))
                        .is_ok();
                    (pk.with_key_id("k").to_jwk(), ok)
                }
                Kind::Rsa => {
                    let pk = RS256KeyPair::from_jwk(&text).unwrap().public_key();
                    let ok = pk
                        .verify_token::<NoCustomClaims>(&token, Some(opts()))
                        .is_ok();
                    (pk.with_key_id("k").to_jwk(), ok)
                }
                Kind::P384 => unreachable!(),
            }
        };
        assert!(verified, "{kind:?}: jwt-simple refuses the token we signed");
        let expected: Value = serde_json::from_str(&expected_public).unwrap();
        assert_eq!(key.public_jwk().unwrap(), expected, "{kind:?} public JWK");
        assert_eq!(
            key.public_jwk().unwrap().to_string(),
            expected.to_string(),
            "{kind:?} public JWK text"
        );
        let verification = key.verification_key().unwrap();
        assert_eq!(key.fingerprint(), Some(verification.fingerprint()));
        let fp: [u8; 32] = sha2::Sha256::digest(expected.to_string().as_bytes()).into();
        assert_eq!(key.fingerprint(), Some(fp), "{kind:?} fingerprint");

        // Signatures of the deterministic algorithms, byte for byte.
        let input = b"header.payload";
        let ours = key.sign(input, &mut Counter(0)).unwrap();
        let theirs = match kind {
            Kind::Ed25519 => {
                ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]))
                    .sk
                    .sign(input, None)
                    .to_vec()
            }
            Kind::P256 => {
                use p256::ecdsa::signature::Signer;
                let sk = p256::ecdsa::SigningKey::from_slice(&[0x2a; 32]).unwrap();
                let sig: p256::ecdsa::Signature = sk.sign(input);
                sig.to_bytes().to_vec()
            }
            Kind::Rsa => {
                let digest = sha2::Sha256::digest(input);
                rsa_key(0x6777)
                    .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                    .unwrap()
            }
            Kind::P384 => unreachable!(),
        };
        assert_eq!(ours, theirs, "{kind:?} signature");
        // The blinding randomness never changes a deterministic signature.
        assert_eq!(key.sign(input, &mut Counter(200)).unwrap(), theirs);
    }
}

/// RSA blinding draws the host's randomness; when it fails, nothing is signed.
#[test]
fn rsa_signing_fails_closed_without_randomness() {
    struct Broken;
    impl Entropy for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
            Err(EntropyError)
        }
    }
    let key = SigningKey::from_jwk(&rsa_private(0x6777), false).unwrap();
    assert!(key.sign(b"input", &mut Broken).is_err());
    assert!(key.sign(b"input", &mut Counter(1)).is_ok());
}

/// Keys generated at start (EdDSA, ES256) are shared between workers as private JWKs: for the
/// same randomness they are exactly the JWKs jwt-simple makes from that secret.
#[test]
fn generated_keys_are_the_jwks_jwt_simple_makes_from_the_same_secret() {
    let secret: Vec<u8> = (1..=32).collect();
    let (key, jwk) = SigningKey::generate(Alg::EdDSA, "gen", &mut Counter(0)).unwrap();
    let seed: [u8; 32] = secret.clone().try_into().unwrap();
    let theirs = Ed25519KeyPair::from_bytes(
        &ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)).to_vec(),
    )
    .unwrap()
    .with_key_id("gen");
    let expected: Value = serde_json::from_str(&theirs.to_jwk()).unwrap();
    assert_eq!(jwk, expected);
    let public: Value =
        serde_json::from_str(&theirs.public_key().with_key_id("gen").to_jwk()).unwrap();
    assert_eq!(key.public_jwk().unwrap(), public);

    let (key, jwk) = SigningKey::generate(Alg::ES256, "gen", &mut Counter(0)).unwrap();
    let theirs = ES256KeyPair::from_bytes(&secret)
        .unwrap()
        .with_key_id("gen");
    let expected: Value = serde_json::from_str(&theirs.to_jwk()).unwrap();
    assert_eq!(jwk, expected);
    let public: Value =
        serde_json::from_str(&theirs.public_key().with_key_id("gen").to_jwk()).unwrap();
    assert_eq!(key.public_jwk().unwrap(), public);
}
