//! The gateway's signing keys.
//!
//! Private JWKs are read strictly (`super::jwk`: canonical base64url, exact sizes, the
//! private key consistent with its public part, RSA 2048..=4096 bits with every CRT value
//! checked), then only the raw primitive is kept (`ed25519-dalek`, `p256`, `rsa` 0.10 on the
//! same `crypto-bigint` as verification, `hmac-sha256`): the minter builds the exact bytes to sign itself (see `mint`), so no
//! library's claims model (and its notion of extra members) stands between the policy and the
//! token. Each key's protected header is encoded once, at load.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::crypto::rsa::RsaPublicKey;
use super::entropy::Entropy;
use super::jwk::{self, KeyKind};
use super::keys::{fingerprint, Alg, IssuerKey, KeyError};

use super::token::{b64url_decode, b64url_encode};

/// The longest signature a signing key makes (RSA 4096): only sizes a buffer.
const MAX_SIGNATURE: usize = 512;

/// The length of unpadded base64url for `n` bytes.
const fn b64url_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// DER of SHA-256's `DigestInfo` up to the hash (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The `typ` of every minted token (RFC 9068 §2.1).
pub const MINTED_TOKEN_TYPE: &str = "at+jwt";

/// A signing key's place in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// It signs every minted token (exactly one key is active).
    Active,
    /// Announced in the published key set before it signs, so verifiers have it first.
    Published,
    /// No longer signs; published until every token it signed has expired.
    Retired {
        /// When it stopped signing (seconds since the Unix epoch).
        at: u64,
    },
}

/// Where a gateway key's private half comes from.
#[derive(Debug)]
pub enum KeyMaterial {
    /// A private JWK in the policy.
    Configured(SigningKey),
    /// Generated at start with this algorithm and shared by every worker (never persisted).
    Generated(Alg),
}

/// One entry of the policy's `signing_keys`.
#[derive(Debug)]
pub struct GatewayKey {
    /// Its `kid`.
    pub kid: String,
    /// Active, published or retired.
    pub state: KeyState,
    /// The key itself, or how it is generated.
    pub material: KeyMaterial,
}

impl GatewayKey {
    /// Whether it is still in the published key set at `now` (seconds): retired keys stay
    /// until `retired_at + longest_ttl`, when the last token they signed has expired.
    pub fn published_at(&self, now: u64, longest_ttl: u64) -> bool {
        match self.state {
            KeyState::Active | KeyState::Published => true,
            KeyState::Retired { at } => now < at.saturating_add(longest_ttl),
        }
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> Alg {
        match &self.material {
            KeyMaterial::Configured(key) => key.alg(),
            KeyMaterial::Generated(alg) => *alg,
        }
    }
}

enum SigningMaterial {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Es256(Box<p256::ecdsa::SigningKey>),
    Rs256(Box<rsa::PrivateKey>),
    Hs256(Box<[u8]>),
}

/// The gateway's private key for minting.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    /// `BASE64URL(UTF8(JWS Protected Header))`, computed once.
    header_b64: String,
    public_jwk: Option<Value>,
    /// The public key's fingerprint (that of its verification key); None for HS256.
    fingerprint: Option<[u8; 32]>,
    material: SigningMaterial,
}

impl fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Signing failed (randomness or the primitive): the request is refused, nothing minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignError;

fn invalid_pair() -> KeyError {
    KeyError("invalid key: invalid key pair".into())
}

/// Secret bytes wiped when dropped.
struct Zeroizing<const N: usize>([u8; N]);

impl<const N: usize> Drop for Zeroizing<N> {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// An Ed25519 key from its 32-byte seed (RFC 8032 §5.1.5); the all-zero seed is refused,
/// as jwt-simple (ed25519-compact) refused it.
fn ed25519_signing_key(seed: &[u8; 32]) -> Option<ed25519_dalek::SigningKey> {
    if seed.iter().all(|b| *b == 0) {
        return None;
    }
    Some(ed25519_dalek::SigningKey::from_bytes(seed))
}

fn ed25519_public_jwk(x: &[u8; 32], kid: &str) -> Option<Value> {
    Some(jwk::public_jwk(
        KeyKind::Ed25519,
        &[("x", b64url_encode(x))],
        "EdDSA",
        kid,
    ))
}

/// A P-256 scalar: exactly 32 bytes, in 1..n.
fn p256_signing_key(d: &[u8; 32]) -> Option<p256::ecdsa::SigningKey> {
    let bytes = p256::FieldBytes::try_from(d.as_slice()).ok()?;
    p256::ecdsa::SigningKey::from_bytes(&bytes).ok()
}

/// The affine coordinates of the key's public point, 32 bytes each.
fn p256_coordinates(sk: &p256::ecdsa::SigningKey) -> Option<([u8; 32], [u8; 32])> {
    let point = sk.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    let x = bytes.get(1..33)?.try_into().ok()?;
    let y = bytes.get(33..65)?.try_into().ok()?;
    Some((x, y))
}

fn p256_public_jwk(x: &[u8; 32], y: &[u8; 32], kid: &str) -> Option<Value> {
    Some(jwk::public_jwk(
        KeyKind::P256,
        &[("x", b64url_encode(x)), ("y", b64url_encode(y))],
        "ES256",
        kid,
    ))
}

/// The RSA key's modulus, big-endian without leading zeros.
fn rsa_modulus(sk: &rsa::PrivateKey) -> Vec<u8> {
    use rsa::traits::PublicKeyParts;
    let n = sk.n().as_ref().to_be_bytes();
    let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    n.get(start..).unwrap_or_default().to_vec()
}

/// Big-endian bytes without leading zeros, for comparing integers of any precision.
fn trimmed(x: &rsa::BoxedUint) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default().to_vec()
}

/// An RS256 private key from a checked JWK: 2048..=4096-bit odd modulus, e = 65537, and
/// every component consistent (`rsa`'s own validation: n = p·q, d < n, d·e ≡ 1 mod p−1 and
/// q−1; then the given CRT values must equal the ones it derives).
fn rsa_private_key(k: &jwk::CheckedJwk<'_>) -> Result<rsa::PrivateKey, KeyError> {
    use rsa::traits::PrivateKeyParts;
    let n = k.rsa_modulus(true)?;
    RsaPublicKey::new(&n, &[0x01, 0x00, 0x01])
        .map_err(|e| KeyError(format!("invalid key: {e}")))?;
    let [d, p, q, dp, dq, qi] =
        ["d", "p", "q", "dp", "dq", "qi"].map(|name| k.rsa_private_integer(name));
    let (d, p, q, dp, dq, qi) = (d?, p?, q?, dp?, dq?, qi?);
    let int = |b: &[u8]| rsa::BoxedUint::from_be_slice_vartime(b);
    let sk = rsa::PrivateKey::from_components(
        int(&n),
        rsa::BoxedUint::from(65_537u32),
        int(&d),
        vec![int(&p), int(&q)],
    )
    .map_err(|_| invalid_pair())?;
    let consistent = sk.dp().map(trimmed).as_deref() == Some(dp.as_slice())
        && sk.dq().map(trimmed).as_deref() == Some(dq.as_slice())
        && sk.crt_coefficient().map(|c| trimmed(&c)).as_deref() == Some(qi.as_slice());
    if !consistent {
        return Err(invalid_pair());
    }
    Ok(sk)
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

impl SigningKey {
    /// Imports a private JWK (`kid` required). HS256 (`kty: oct`) only when `allow_hs256`.
    pub fn from_jwk(jwk: &Value, allow_hs256: bool) -> Result<SigningKey, KeyError> {
        let kid = str_field(jwk, "kid")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| KeyError("signing keys need a non-empty kid".into()))?
            .to_owned();
        let kty = str_field(jwk, "kty").unwrap_or("");
        let crv = str_field(jwk, "crv").unwrap_or("");
        let (alg, material, public) = match (kty, crv) {
            ("OKP", "Ed25519") => {
                let k = jwk::check(jwk, KeyKind::Ed25519, true, &["EdDSA", "Ed25519"])?;
                let seed = Zeroizing(k.fixed::<32>("d", true)?);
                let sk = ed25519_signing_key(&seed.0).ok_or_else(invalid_pair)?;
                let x = sk.verifying_key().to_bytes();
                if !k.is_encoding_of("x", &x) {
                    return Err(invalid_pair());
                }
                let public = ed25519_public_jwk(&x, &kid);
                (Alg::EdDSA, SigningMaterial::Ed25519(Box::new(sk)), public)
            }
            ("EC", "P-256") => {
                let k = jwk::check(jwk, KeyKind::P256, true, &["ES256"])?;
                let d = Zeroizing(k.fixed::<32>("d", true)?);
                let sk = p256_signing_key(&d.0).ok_or_else(invalid_pair)?;
                let (x, y) = p256_coordinates(&sk).ok_or_else(invalid_pair)?;
                if !(k.is_encoding_of("x", &x) && k.is_encoding_of("y", &y)) {
                    return Err(invalid_pair());
                }
                let public = p256_public_jwk(&x, &y, &kid);
                (Alg::ES256, SigningMaterial::Es256(Box::new(sk)), public)
            }
            ("RSA", _) => {
                let k = jwk::check(jwk, KeyKind::Rsa, true, &["RS256"])?;
                let sk = rsa_private_key(&k)?;
                let public = jwk::public_jwk(
                    KeyKind::Rsa,
                    &[
                        ("n", b64url_encode(&rsa_modulus(&sk))),
                        ("e", "AQAB".into()),
                    ],
                    "RS256",
                    &kid,
                );
                (
                    Alg::RS256,
                    SigningMaterial::Rs256(Box::new(sk)),
                    Some(public),
                )
            }
            ("oct", _) => {
                if !allow_hs256 {
                    return Err(KeyError(
                        "HS256 signing needs allow_hs256_signing: true (every service holding the secret could mint tokens)".into(),
                    ));
                }
                if let Some(a) = str_field(jwk, "alg") {
                    if a != "HS256" {
                        return Err(KeyError(format!("alg {a:?} is not HS256")));
                    }
                }
                let k = str_field(jwk, "k")
                    .ok_or_else(|| KeyError("oct key needs k".into()))
                    .and_then(|k| {
                        b64url_decode(k)
                            .ok_or_else(|| KeyError("k is not canonical base64url".into()))
                    })?;
                if k.len() < 32 {
                    return Err(KeyError("HS256 keys need at least 32 bytes".into()));
                }
                // Never published: whoever can verify an HS256 token can also mint one.
                (
                    Alg::HS256,
                    SigningMaterial::Hs256(k.into_boxed_slice()),
                    None,
                )
            }
            _ => {
                return Err(KeyError(format!(
                "unsupported signing key kty={kty:?} crv={crv:?} (OKP Ed25519, EC P-256, RSA, oct)"
            )))
            }
        };
        if let Some(a) = str_field(jwk, "alg") {
            if a != alg.name() {
                return Err(KeyError(format!(
                    "alg {a:?} does not match the key type ({})",
                    alg.name()
                )));
            }
        }
        let mut header = Map::new();
        header.insert("alg".into(), Value::String(alg.name().to_owned()));
        header.insert("kid".into(), Value::String(kid.clone()));
        header.insert("typ".into(), Value::String(MINTED_TOKEN_TYPE.to_owned()));
        let header_b64 = b64url_encode(Value::Object(header).to_string().as_bytes());
        let fingerprint = public.as_ref().map(|jwk| fingerprint(&jwk.to_string()));
        Ok(SigningKey {
            kid,
            alg,
            header_b64,
            public_jwk: public,
            fingerprint,
            material,
        })
    }

    /// The key id written into minted headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The encoded protected header of every token this key signs:
    /// `{"alg":…,"kid":…,"typ":"at+jwt"}`, base64url.
    pub fn header_b64(&self) -> &str {
        &self.header_b64
    }

    /// The fingerprint of its public half (equal to its verification key's
    /// `IssuerKey::fingerprint`): which key signed, for caches of minted tokens. None for
    /// HS256.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.fingerprint
    }

    /// The public JWK (for a JWKS endpoint, demos and tests); None for HS256.
    pub fn public_jwk(&self) -> Option<Value> {
        self.public_jwk.clone()
    }

    /// The public half as a verification key (for the gateway's own tokens in a chained
    /// exchange); None for HS256, which has no public half.
    pub fn verification_key(&self) -> Option<IssuerKey> {
        IssuerKey::from_jwk(self.public_jwk.as_ref()?, &[self.alg]).ok()
    }

    /// A new key for `alg` (EdDSA or ES256) from `entropy`, and its private JWK (what the
    /// workers share, so that each imports the same key through [`SigningKey::from_jwk`]).
    pub fn generate(
        alg: Alg,
        kid: &str,
        entropy: &mut dyn Entropy,
    ) -> Result<(SigningKey, Value), SignError> {
        let mut secret = Zeroizing([0u8; 32]);
        // The private JWK, members in the order jwt-simple exported them.
        let private_jwk = |public: Option<Value>, d: &[u8]| -> Result<Value, SignError> {
            let Some(Value::Object(mut m)) = public else {
                return Err(SignError);
            };
            let mut out = Map::new();
            for name in ["kty", "crv", "x", "y"] {
                if let Some(v) = m.remove(name) {
                    out.insert(name.into(), v);
                }
            }
            out.insert("d".into(), Value::String(b64url_encode(d)));
            out.extend(m);
            Ok(Value::Object(out))
        };
        let jwk = match alg {
            Alg::EdDSA => {
                entropy.fill(&mut secret.0).map_err(|_| SignError)?;
                let sk = ed25519_signing_key(&secret.0).ok_or(SignError)?;
                let public = ed25519_public_jwk(&sk.verifying_key().to_bytes(), kid);
                private_jwk(public, &secret.0)?
            }
            Alg::ES256 => {
                // A random 256-bit string is a valid scalar except with probability ~2^-32;
                // draw again rather than bias it.
                let mut key = None;
                for _ in 0..8 {
                    entropy.fill(&mut secret.0).map_err(|_| SignError)?;
                    if let Some(k) = p256_signing_key(&secret.0) {
                        key = Some(k);
                        break;
                    }
                }
                let sk = key.ok_or(SignError)?;
                let (x, y) = p256_coordinates(&sk).ok_or(SignError)?;
                private_jwk(p256_public_jwk(&x, &y, kid), &secret.0)?
            }
            _ => return Err(SignError),
        };
        let key = SigningKey::from_jwk(&jwk, false).map_err(|_| SignError)?;
        Ok((key, jwk))
    }

    /// A compact JWS of `payload` (the UTF-8 JSON of the claims) under this key's header.
    pub fn sign_compact(
        &self,
        payload: &[u8],
        entropy: &mut dyn Entropy,
    ) -> Result<String, SignError> {
        // One buffer, sized once, base64 written into it in place: no intermediate strings.
        let mut out = String::with_capacity(
            self.header_b64.len() + 2 + b64url_len(payload.len()) + b64url_len(MAX_SIGNATURE),
        );
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let signature = self.sign(out.as_bytes(), entropy)?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }

    /// The JWS signature of `signing_input` (RFC 7515 §5.1 step 5) with this key's algorithm.
    pub fn sign(
        &self,
        signing_input: &[u8],
        entropy: &mut dyn Entropy,
    ) -> Result<Vec<u8>, SignError> {
        match &self.material {
            // Deterministic Ed25519 (RFC 8032).
            SigningMaterial::Ed25519(sk) => {
                use ed25519_dalek::Signer;
                Ok(sk.sign(signing_input).to_bytes().to_vec())
            }
            // Deterministic ECDSA (RFC 6979); `try_sign`, because `sign` panics on failure.
            SigningMaterial::Es256(sk) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature =
                    sk.try_sign(signing_input).map_err(|_| SignError)?;
                Ok(sig.to_bytes().to_vec())
            }
            // RSASSA-PKCS1-v1_5 with SHA-256, always blinded with host randomness (defence in
            // depth: RUSTSEC-2023-0071 was a timing leak in the `rsa` crate's private-key
            // operation); the crate also checks the result against the public key.
            SigningMaterial::Rs256(sk) => {
                use sha2::{Digest, Sha256};
                let digest = Sha256::digest(signing_input);
                let mut rng = BlindingRng::new(entropy);
                // EMSA-PKCS1-v1_5 with SHA-256's DigestInfo prefix (RFC 8017 §9.2, note 1).
                let scheme = rsa::Pkcs1v15Sign {
                    hash_len: Some(32),
                    prefix: SHA256_DIGEST_INFO_PREFIX.into(),
                };
                sk.sign_with_rng(&mut rng, scheme, &digest)
                    .map_err(|_| SignError)
            }
            SigningMaterial::Hs256(k) => Ok(hmac_sha256::HMAC::mac(signing_input, k).to_vec()),
        }
    }
}

/// Feeds the `rsa` crate's blinding from [`Entropy`]: a failed or exhausted source is an
/// error the crate passes back, and nothing is signed.
struct BlindingRng<'e> {
    source: &'e mut dyn Entropy,
    fills_left: u8,
}

impl<'e> BlindingRng<'e> {
    /// The crate draws two 16-byte blinding factors per signature; a cap keeps a broken
    /// source from being asked forever.
    const MAX_FILLS: u8 = 64;

    fn new(source: &'e mut dyn Entropy) -> Self {
        BlindingRng {
            source,
            fills_left: Self::MAX_FILLS,
        }
    }
}

/// The host's randomness failed while blinding.
#[derive(Debug)]
struct BlindingError;

impl fmt::Display for BlindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no randomness for RSA blinding")
    }
}

impl std::error::Error for BlindingError {}

impl rsa::rand_core::TryRng for BlindingRng<'_> {
    type Error = BlindingError;

    fn try_next_u32(&mut self) -> Result<u32, BlindingError> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, BlindingError> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), BlindingError> {
        self.fills_left = self.fills_left.checked_sub(1).ok_or(BlindingError)?;
        self.source.fill(dest).map_err(|_| BlindingError)
    }
}

impl rsa::rand_core::TryCryptoRng for BlindingRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entropy::EntropyError;

    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
            self.0 = self.0.wrapping_add(1);
            buf.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn generated_keys_round_trip_through_their_jwk() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let (key, jwk) = SigningKey::generate(alg, "gen-1", &mut Counter(0)).unwrap();
            assert_eq!((key.alg(), key.kid()), (alg, "gen-1"));
            assert!(jwk.get("d").is_some(), "the shared JWK is the private key");
            let again = SigningKey::from_jwk(&jwk, false).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
            assert!(key.public_jwk().unwrap().get("d").is_none());
            let other = SigningKey::generate(alg, "gen-1", &mut Counter(9))
                .unwrap()
                .0;
            assert_ne!(
                other.public_jwk(),
                key.public_jwk(),
                "{alg}: randomness is used"
            );
        }
        assert!(SigningKey::generate(Alg::RS256, "r", &mut Counter(0)).is_err());
        struct Broken;
        impl Entropy for Broken {
            fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
                Err(EntropyError)
            }
        }
        assert!(SigningKey::generate(Alg::EdDSA, "g", &mut Broken).is_err());
    }

    #[test]
    fn retired_keys_stay_published_for_the_longest_ttl() {
        let key = |state| GatewayKey {
            kid: "k".into(),
            state,
            material: KeyMaterial::Generated(Alg::EdDSA),
        };
        assert!(key(KeyState::Active).published_at(u64::MAX, 300));
        assert!(key(KeyState::Published).published_at(0, 0));
        let retired = key(KeyState::Retired { at: 1000 });
        assert!(retired.published_at(1299, 300));
        assert!(!retired.published_at(1300, 300));
    }
}
