//! The gateway's signing keys.
//!
//! Private JWKs are imported strictly with jwt-simple (canonical base64url, exact sizes, the
//! private key consistent with its public part, RSA 2048..=4096 bits), then only the raw
//! primitive is kept: the minter builds the exact bytes to sign itself (see `mint`), so no
//! library's claims model (and its notion of extra members) stands between the policy and the
//! token. Each key's protected header is encoded once, at load.

use std::fmt;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use super::entropy::Entropy;
use super::keys::{fingerprint, Alg, IssuerKey, KeyError};
use super::token::{b64url_decode, b64url_encode};

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
    Ed25519(Box<ed25519_compact::KeyPair>),
    Es256(Box<p256::ecdsa::SigningKey>),
    Rs256(Box<rsa::RsaPrivateKey>),
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

fn imported<T, E: fmt::Display>(r: Result<T, E>) -> Result<T, KeyError> {
    r.map_err(|e| KeyError(format!("invalid key: {e}")))
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn public_jwk(text: String) -> Option<Value> {
    serde_json::from_str(&text).ok()
}

impl SigningKey {
    /// Imports a private JWK (`kid` required). HS256 (`kty: oct`) only when `allow_hs256`.
    pub fn from_jwk(jwk: &Value, allow_hs256: bool) -> Result<SigningKey, KeyError> {
        let text = jwk.to_string();
        let kid = str_field(jwk, "kid")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| KeyError("signing keys need a non-empty kid".into()))?
            .to_owned();
        let kty = str_field(jwk, "kty").unwrap_or("");
        let crv = str_field(jwk, "crv").unwrap_or("");
        let (alg, material, public) = match (kty, crv) {
            ("OKP", "Ed25519") => {
                let k = imported(Ed25519KeyPair::from_jwk(&text))?;
                let kp = imported(ed25519_compact::KeyPair::from_slice(&k.to_bytes()))?;
                let public = public_jwk(k.public_key().with_key_id(&kid).to_jwk());
                (Alg::EdDSA, SigningMaterial::Ed25519(Box::new(kp)), public)
            }
            ("EC", "P-256") => {
                let k = imported(ES256KeyPair::from_jwk(&text))?;
                let sk = imported(p256::ecdsa::SigningKey::from_slice(&k.to_bytes()))?;
                let public = public_jwk(k.public_key().with_key_id(&kid).to_jwk());
                (Alg::ES256, SigningMaterial::Es256(Box::new(sk)), public)
            }
            ("RSA", _) => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::pkcs8::DecodePrivateKey;
                let k = imported(RS256KeyPair::from_jwk(&text))?;
                let der = imported(k.to_der())?;
                // jwt-simple's DER is PKCS#8 (PKCS#1 in some of its backends).
                let sk = imported(
                    rsa::RsaPrivateKey::from_pkcs8_der(&der)
                        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(&der)),
                )?;
                let public = public_jwk(k.public_key().with_key_id(&kid).to_jwk());
                (Alg::RS256, SigningMaterial::Rs256(Box::new(sk)), public)
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
        let mut secret = [0u8; 32];
        let jwk = match alg {
            Alg::EdDSA => {
                entropy.fill(&mut secret).map_err(|_| SignError)?;
                let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(secret));
                Ed25519KeyPair::from_bytes(&kp.to_vec())
                    .map_err(|_| SignError)?
                    .with_key_id(kid)
                    .to_jwk()
            }
            Alg::ES256 => {
                // A random 256-bit string is a valid scalar except with probability ~2^-32;
                // draw again rather than bias it.
                let mut pair = None;
                for _ in 0..8 {
                    entropy.fill(&mut secret).map_err(|_| SignError)?;
                    if let Ok(k) = ES256KeyPair::from_bytes(&secret) {
                        pair = Some(k);
                        break;
                    }
                }
                pair.ok_or(SignError)?.with_key_id(kid).to_jwk()
            }
            _ => return Err(SignError),
        };
        secret.fill(0);
        let jwk: Value = serde_json::from_str(&jwk).map_err(|_| SignError)?;
        let key = SigningKey::from_jwk(&jwk, false).map_err(|_| SignError)?;
        Ok((key, jwk))
    }

    /// A compact JWS of `payload` (the UTF-8 JSON of the claims) under this key's header.
    pub fn sign_compact(
        &self,
        payload: &[u8],
        entropy: &mut dyn Entropy,
    ) -> Result<String, SignError> {
        let input = format!("{}.{}", self.header_b64, b64url_encode(payload));
        let signature = self.sign(input.as_bytes(), entropy)?;
        Ok(format!("{input}.{}", b64url_encode(&signature)))
    }

    /// The JWS signature of `signing_input` (RFC 7515 §5.1 step 5) with this key's algorithm.
    pub fn sign(
        &self,
        signing_input: &[u8],
        entropy: &mut dyn Entropy,
    ) -> Result<Vec<u8>, SignError> {
        match &self.material {
            // Deterministic Ed25519 (RFC 8032).
            SigningMaterial::Ed25519(kp) => Ok(kp.sk.sign(signing_input, None).to_vec()),
            // Deterministic ECDSA (RFC 6979); `try_sign`, because `sign` panics on failure.
            SigningMaterial::Es256(sk) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature =
                    sk.try_sign(signing_input).map_err(|_| SignError)?;
                Ok(sig.to_bytes().to_vec())
            }
            // RSASSA-PKCS1-v1_5 with SHA-256, blinded with host randomness (the `rsa` crate's
            // private-key operation is not constant time, RUSTSEC-2023-0071).
            SigningMaterial::Rs256(sk) => {
                use sha2::{Digest, Sha256};
                let digest = Sha256::digest(signing_input);
                let mut rng = BlindingRng::new(entropy);
                // EMSA-PKCS1-v1_5 with SHA-256's DigestInfo prefix (RFC 8017 §9.2, note 1),
                // spelled out because the `rsa` crate's `new::<D>()` wants the older sha2.
                let scheme = rsa::Pkcs1v15Sign {
                    hash_len: Some(32),
                    prefix: SHA256_DIGEST_INFO_PREFIX.into(),
                };
                let sig = sk
                    .sign_with_rng(&mut rng, scheme, &digest)
                    .map_err(|_| SignError)?;
                if rng.failed {
                    return Err(SignError);
                }
                Ok(sig)
            }
            SigningMaterial::Hs256(k) => Ok(hmac_sha256::HMAC::mac(signing_input, k).to_vec()),
        }
    }
}

/// Feeds the `rsa` crate's blinding from [`Entropy`]. It never reports an error to the crate
/// (rand's `fill` panics on one): a failed or exhausted source is recorded and the signature
/// is then thrown away by the caller.
struct BlindingRng<'e> {
    source: &'e mut dyn Entropy,
    fills_left: u8,
    failed: bool,
}

impl<'e> BlindingRng<'e> {
    /// Blinding draws a number below the modulus by rejection; a source that never yields
    /// one (a constant 0xFF host) must not loop forever, so draws are capped.
    const MAX_FILLS: u8 = 64;

    fn new(source: &'e mut dyn Entropy) -> Self {
        BlindingRng {
            source,
            fills_left: Self::MAX_FILLS,
            failed: false,
        }
    }
}

impl rsa::rand_core::RngCore for BlindingRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // Zeros after a failure: a zero blinding factor becomes 1, which ends the draw.
        dest.fill(0);
        if self.failed {
            return;
        }
        match self.fills_left.checked_sub(1) {
            Some(left) if self.source.fill(dest).is_ok() => self.fills_left = left,
            _ => {
                dest.fill(0);
                self.failed = true;
            }
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for BlindingRng<'_> {}

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
