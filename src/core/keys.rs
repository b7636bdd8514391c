//! Issuers' public keys (verification). The gateway's private keys are in `signing`.
//!
//! The key's type decides which algorithms it can verify, and an issuer's pinned list
//! narrows that further: `none` has no key type, and an HMAC algorithm has no public key
//! type, so neither can ever verify (RFC 8725 §2.1, §3.1).
//!
//! JWKs are read strictly (`super::jwk`: canonical base64url, exact sizes, points on the
//! curve and not of small order, RSA 2048..=4096 bits with e = 65537, no private members);
//! which keys of a provider's set are imported at all is decided in `jwks`. Verification then runs on
//! the primitives in `super::crypto`, chosen by measurement inside Envoy's V8, over the exact
//! signing input of the token.

use std::fmt;

use serde_json::Value;

use super::crypto::rsa::RsaPublicKey;
use super::crypto::HashAlg;
pub use super::jwk::KeyError;
use super::jwk::{self, CheckedJwk, KeyKind};

/// The `alg` values an RSA verification key may carry.
const RSA_ALG_NAMES: [&str; 6] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

/// A JWS algorithm the filter can verify or sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// Only for minting, and only with `allow_hs256_signing`.
    HS256,
}

impl Alg {
    /// Algorithms accepted on incoming tokens.
    pub const VERIFY: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }

    /// Parses an exact (case-sensitive, RFC 7518) JOSE name of a verification algorithm.
    pub fn from_verify_name(name: &str) -> Option<Alg> {
        Alg::VERIFY.into_iter().find(|a| a.name() == name)
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
        )
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

enum PublicMaterial {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// One trusted issuer key, with the algorithms it may verify.
pub struct IssuerKey {
    kid: Option<String>,
    algs: Vec<Alg>,
    material: PublicMaterial,
    fingerprint: [u8; 32],
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("algs", &self.algs)
            .finish()
    }
}

/// A key's [`IssuerKey::fingerprint`] from its JWK text.
pub(crate) fn fingerprint(jwk_text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(jwk_text.as_bytes()).into()
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn imported<T, E: fmt::Display>(r: Result<T, E>) -> Result<T, KeyError> {
    r.map_err(|e| KeyError(format!("invalid key: {e}")))
}

fn invalid() -> KeyError {
    KeyError("invalid key: invalid public key".into())
}

/// An uncompressed SEC1 point from `x` and `y`, each exactly `N` bytes.
fn ec_point<const N: usize>(k: &CheckedJwk<'_>) -> Result<Vec<u8>, KeyError> {
    let x = k.fixed::<N>("x", false)?;
    let y = k.fixed::<N>("y", false)?;
    let mut point = Vec::with_capacity(1 + 2 * N);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

/// An Ed25519 public key as jwt-simple accepted it: the canonical encoding of a point on the
/// curve (y below p), not of small order.
pub(crate) fn ed25519_public_key(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
    // y < p = 2^255 - 19, with the sign bit cleared.
    let mut y = *bytes;
    if let Some(top) = y.last_mut() {
        *top &= 0x7f;
    }
    let p_minus_one_prefix = y.get(1..31).is_some_and(|m| m.iter().all(|b| *b == 0xff));
    let noncanonical =
        p_minus_one_prefix && y.last() == Some(&0x7f) && y.first().is_some_and(|low| *low >= 0xed);
    if noncanonical {
        return None;
    }
    let pk = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
    (!pk.is_weak()).then_some(pk)
}

impl IssuerKey {
    /// Imports a public JWK. `allowed` is the issuer's pinned list; the key keeps the
    /// algorithms of its type that are on that list (and equal to its own `alg`, if any).
    pub fn from_jwk(jwk: &Value, allowed: &[Alg]) -> Result<IssuerKey, KeyError> {
        let text = jwk.to_string();
        let kty = str_field(jwk, "kty").unwrap_or("");
        let crv = str_field(jwk, "crv").unwrap_or("");
        let jwk_alg = match str_field(jwk, "alg") {
            None => None,
            Some(name) => Some(Alg::from_verify_name(name).ok_or_else(|| {
                KeyError(format!(
                    "alg {name:?} is not a supported verification algorithm"
                ))
            })?),
        };
        let (family, material): (Vec<Alg>, PublicMaterial) = match (kty, crv) {
            ("OKP", "Ed25519") => {
                let k = jwk::check(jwk, KeyKind::Ed25519, false, &["EdDSA", "Ed25519"])?;
                let pk = ed25519_public_key(&k.fixed::<32>("x", false)?).ok_or_else(invalid)?;
                (vec![Alg::EdDSA], PublicMaterial::Ed25519(pk))
            }
            ("EC", "P-256") => {
                let k = jwk::check(jwk, KeyKind::P256, false, &["ES256"])?;
                let point = ec_point::<32>(&k)?;
                let vk =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| invalid())?;
                (vec![Alg::ES256], PublicMaterial::P256(vk))
            }
            ("EC", "P-384") => {
                let k = jwk::check(jwk, KeyKind::P384, false, &["ES384"])?;
                let point = ec_point::<48>(&k)?;
                let vk =
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| invalid())?;
                (vec![Alg::ES384], PublicMaterial::P384(vk))
            }
            ("RSA", _) => {
                let k = jwk::check(jwk, KeyKind::Rsa, false, &RSA_ALG_NAMES)?;
                let n = k.rsa_modulus(false)?;
                let pk = imported(RsaPublicKey::new(&n, &[0x01, 0x00, 0x01]))?;
                let family = Alg::VERIFY.into_iter().filter(|a| a.is_rsa()).collect();
                (family, PublicMaterial::Rsa(pk))
            }
            ("oct", _) => {
                return Err(KeyError(
                    "symmetric (oct) keys cannot be trusted issuer keys".into(),
                ))
            }
            _ => {
                return Err(KeyError(format!(
                "unsupported key type kty={kty:?} crv={crv:?} (RSA, EC P-256/P-384, OKP Ed25519)"
            )))
            }
        };
        if let Some(a) = jwk_alg {
            if !family.contains(&a) {
                return Err(KeyError(format!("alg {a} does not match key type {kty}")));
            }
        }
        let algs: Vec<Alg> = family
            .into_iter()
            .filter(|a| allowed.contains(a) && jwk_alg.is_none_or(|j| j == *a))
            .collect();
        if algs.is_empty() {
            return Err(KeyError(
                "key cannot verify any of the issuer's algorithms".into(),
            ));
        }
        Ok(IssuerKey {
            kid: str_field(jwk, "kid").map(str::to_owned),
            algs,
            material,
            fingerprint: fingerprint(&text),
        })
    }

    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// SHA-256 of the JWK it was imported from (public data): the same `kid` re-published
    /// with other material is another key, for caches of what this key verified.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Whether this key may verify `alg`.
    pub fn accepts(&self, alg: Alg) -> bool {
        self.algs.contains(&alg)
    }

    /// Verifies `signature` over `signing_input` with `alg`. False on any mismatch.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match (&self.material, alg) {
            (PublicMaterial::Ed25519(pk), Alg::EdDSA) => {
                // Strict: canonical S, and no small-order key or R (RFC 8032 §5.1.7 plus
                // the malleability checks).
                match ed25519_dalek::Signature::from_slice(signature) {
                    Ok(sig) => pk.verify_strict(signing_input, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            (PublicMaterial::P256(vk), Alg::ES256) => {
                use p256::ecdsa::signature::Verifier;
                match p256::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => vk.verify(signing_input, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            (PublicMaterial::P384(vk), Alg::ES384) => {
                use p384::ecdsa::signature::Verifier;
                match p384::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => vk.verify(signing_input, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            (PublicMaterial::Rsa(pk), alg) => match alg {
                Alg::RS256 => pk.verify_pkcs1v15(HashAlg::Sha256, signing_input, signature),
                Alg::RS384 => pk.verify_pkcs1v15(HashAlg::Sha384, signing_input, signature),
                Alg::RS512 => pk.verify_pkcs1v15(HashAlg::Sha512, signing_input, signature),
                Alg::PS256 => pk.verify_pss(HashAlg::Sha256, signing_input, signature),
                Alg::PS384 => pk.verify_pss(HashAlg::Sha384, signing_input, signature),
                Alg::PS512 => pk.verify_pss(HashAlg::Sha512, signing_input, signature),
                _ => false,
            },
            _ => false,
        }
    }
}
