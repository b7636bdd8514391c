//! Strict JWK reading shared by issuer keys (`keys`) and the gateway's keys (`signing`).
//!
//! The rules are those the filter applied through jwt-simple's importer before it read JWKs
//! itself (kept identical, and checked against jwt-simple by a differential test): at most
//! 8 KiB of JSON; `kty` (and `crv`, absent for RSA) exactly the key's type; no key material
//! of another type, no private member in a public key and every private member in a private
//! one; `use`, if present, `sig`; `key_ops`, if present, distinct operations the role allows
//! (a private key's must include `sign`); every value canonical unpadded base64url, fixed
//! sizes exact, RSA integers without leading zeros (but Java's sign byte on `n`) and `e`
//! exactly `AQAB`.

use std::fmt;

use serde_json::{Map, Value};

use super::token::{b64url_decode, b64url_encode};

/// Why a key could not be imported (config-time only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest JWK accepted, in bytes of JSON (a 4096-bit RSA private key is about 3.2 KB).
pub const MAX_JWK_BYTES: usize = 8192;

/// Largest RSA modulus or private integer, in bytes (4096 bits).
const MAX_RSA_INTEGER_BYTES: usize = 512;

/// Every member that carries key material, of any type.
const MATERIAL_MEMBERS: [&str; 15] = [
    "crv", "x", "y", "d", "n", "e", "p", "q", "dp", "dq", "qi", "oth", "k", "pub", "priv",
];

/// The asymmetric key types the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `OKP` / `Ed25519`.
    Ed25519,
    /// `EC` / `P-256`.
    P256,
    /// `EC` / `P-384`.
    P384,
    /// `RSA` (no `crv`).
    Rsa,
}

impl KeyKind {
    fn kty(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "OKP",
            KeyKind::P256 | KeyKind::P384 => "EC",
            KeyKind::Rsa => "RSA",
        }
    }

    fn crv(self) -> Option<&'static str> {
        match self {
            KeyKind::Ed25519 => Some("Ed25519"),
            KeyKind::P256 => Some("P-256"),
            KeyKind::P384 => Some("P-384"),
            KeyKind::Rsa => None,
        }
    }

    fn public_members(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["crv", "x"],
            KeyKind::P256 | KeyKind::P384 => &["crv", "x", "y"],
            KeyKind::Rsa => &["n", "e"],
        }
    }

    fn private_members(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 | KeyKind::P256 | KeyKind::P384 => &["d"],
            KeyKind::Rsa => &["d", "p", "q", "dp", "dq", "qi"],
        }
    }
}

/// A JWK object whose members passed the checks every key type shares.
pub struct CheckedJwk<'a> {
    members: &'a Map<String, Value>,
}

fn invalid(private: bool) -> KeyError {
    KeyError(
        if private {
            "invalid key: invalid key pair"
        } else {
            "invalid key: invalid public key"
        }
        .into(),
    )
}

fn optional_str<'a>(
    m: &'a Map<String, Value>,
    name: &str,
    private: bool,
) -> Result<Option<&'a str>, KeyError> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(private)),
    }
}

/// Checks `jwk` as a `kind` key (`private`: with its private members). `algs` are the `alg`
/// values accepted (the first is the one exported).
pub fn check<'a>(
    jwk: &'a Value,
    kind: KeyKind,
    private: bool,
    algs: &[&str],
) -> Result<CheckedJwk<'a>, KeyError> {
    let err = || invalid(private);
    let Value::Object(m) = jwk else {
        return Err(err());
    };
    if jwk.to_string().len() > MAX_JWK_BYTES {
        return Err(err());
    }
    // Material members must be strings (kid, alg, use too); other members are ignored.
    for name in ["kty", "crv", "alg", "use", "kid"]
        .into_iter()
        .chain(MATERIAL_MEMBERS)
    {
        optional_str(m, name, private)?;
    }
    if optional_str(m, "kty", private)? != Some(kind.kty())
        || optional_str(m, "crv", private)? != kind.crv()
    {
        return Err(err());
    }
    for name in m.keys() {
        let name = name.as_str();
        if !MATERIAL_MEMBERS.contains(&name) {
            continue;
        }
        let own_public = kind.public_members().contains(&name);
        let own_private = kind.private_members().contains(&name);
        if !(own_public || (private && own_private)) {
            return Err(err());
        }
    }
    if !kind.public_members().iter().all(|n| m.contains_key(*n)) {
        return Err(err());
    }
    if private && !kind.private_members().iter().all(|n| m.contains_key(*n)) {
        return Err(err());
    }
    if let Some(alg) = optional_str(m, "alg", private)? {
        if !algs.contains(&alg) {
            return Err(err());
        }
    }
    if let Some(u) = optional_str(m, "use", private)? {
        if u != "sig" {
            return Err(err());
        }
    }
    match m.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) => {
            let allowed: &[&str] = if private {
                &["sign", "verify"]
            } else {
                &["verify"]
            };
            let mut seen: Vec<&str> = Vec::new();
            for op in ops {
                let op = op.as_str().ok_or_else(err)?;
                if !allowed.contains(&op) || seen.contains(&op) {
                    return Err(err());
                }
                seen.push(op);
            }
            if private && !seen.contains(&"sign") {
                return Err(err());
            }
        }
        Some(_) => return Err(err()),
    }
    Ok(CheckedJwk { members: m })
}

impl CheckedJwk<'_> {
    fn member(&self, name: &str) -> &str {
        self.members
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The raw text of a string member (empty when absent).
    pub fn text(&self, name: &str) -> &str {
        self.member(name)
    }

    /// A fixed-size value: exactly `N` bytes, canonically encoded.
    pub fn fixed<const N: usize>(&self, name: &str, private: bool) -> Result<[u8; N], KeyError> {
        let bytes = b64url_decode(self.member(name)).ok_or_else(|| invalid(private))?;
        <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| invalid(private))
    }

    /// The RSA modulus without its sign byte: at most 4096 bits, no other leading zero.
    pub fn rsa_modulus(&self, private: bool) -> Result<Vec<u8>, KeyError> {
        let n = bounded(self.member("n"), MAX_RSA_INTEGER_BYTES + 1, private)?;
        let n = match n.as_slice() {
            [0, top, ..] if top & 0x80 != 0 => n.get(1..).unwrap_or_default().to_vec(),
            _ => n,
        };
        if n.first().is_none_or(|top| *top == 0) {
            return Err(invalid(private));
        }
        if self.member("e") != "AQAB" {
            return Err(invalid(private));
        }
        Ok(n)
    }

    /// An RSA private integer: at most 4096 bits, no leading zero.
    pub fn rsa_private_integer(&self, name: &str) -> Result<Vec<u8>, KeyError> {
        let x = bounded(self.member(name), MAX_RSA_INTEGER_BYTES, true)?;
        if x.first().is_none_or(|top| *top == 0) {
            return Err(invalid(true));
        }
        Ok(x)
    }

    /// Whether member `name` is exactly the encoding of `bytes` (rejects other spellings).
    pub fn is_encoding_of(&self, name: &str, bytes: &[u8]) -> bool {
        self.member(name) == b64url_encode(bytes)
    }
}

fn bounded(b64: &str, max_len: usize, private: bool) -> Result<Vec<u8>, KeyError> {
    // Refused before decoding: the length alone bounds the work.
    if b64.len() > max_len.div_ceil(3).saturating_mul(4) {
        return Err(invalid(private));
    }
    let bytes = b64url_decode(b64).ok_or_else(|| invalid(private))?;
    if bytes.len() > max_len {
        return Err(invalid(private));
    }
    Ok(bytes)
}

/// A public JWK as the filter publishes it: the members jwt-simple exported, in its order
/// (`kty`, `crv`, coordinates or `n`/`e`, `alg`, `use`, `kid`).
pub fn public_jwk(kind: KeyKind, material: &[(&str, String)], alg: &str, kid: &str) -> Value {
    let mut m = Map::new();
    m.insert("kty".into(), Value::String(kind.kty().into()));
    if let Some(crv) = kind.crv() {
        m.insert("crv".into(), Value::String(crv.into()));
    }
    for (name, value) in material {
        m.insert((*name).into(), Value::String(value.clone()));
    }
    m.insert("alg".into(), Value::String(alg.into()));
    m.insert("use".into(), Value::String("sig".into()));
    m.insert("kid".into(), Value::String(kid.into()));
    Value::Object(m)
}
