//! Importing a provider's JWK Set (RFC 7517 §5) for one issuer.
//!
//! Providers publish more than signature keys: Keycloak lists an `RSA-OAEP` key with
//! `use: enc` beside its `RS256` key, Entra ID adds `x5c`, `x5t` and `issuer` members. A set
//! copied verbatim must load, so keys the issuer's tokens can never be verified with are
//! skipped (and reported), while a malformed key of a type and algorithm that would be used
//! stays an error: a broken signing key is a configuration mistake, not something to skip.
//!
//! A key is *usable* when it is for signatures (`use` absent or `sig`; `key_ops` absent or
//! holding `verify`), its `alg` (if any) is a JWS algorithm this filter verifies, its type is
//! one it verifies (RSA, EC P-256/P-384, OKP Ed25519), and one of its algorithms is pinned for
//! the issuer. Otherwise it is *skipped*. Usable keys are imported strictly (see `keys`).
//! `x5c`, `x5u`, `x5t` and other members are ignored: a certificate is never parsed, trusted
//! or fetched. Unknown members of the set itself are ignored (RFC 7517 §5).
//!
//! Errors and skips carry paths relative to the document (`keys[1]`), so the configuration
//! reader and a fetched-set loader can each prefix their own location.
//!
//! A set *fetched* from a provider's `jwks_uri` ([`import_fetched_jwks`]) is judged by the
//! same rules, with one difference: a broken key there is the provider's doing, not a
//! configuration mistake, so it is skipped (with its reason) instead of refusing the set, and
//! so are keys whose `kid` is ambiguous. Only a set with no usable key at all, or one too
//! large to be a real key set, is refused.

use std::fmt;

use serde_json::{Map, Value};

use super::json::parse_strict;
use super::keys::{Alg, IssuerKey};

/// Deepest nesting a key set document needs (`{"keys":[{"x5c":[…]}]}` is 3).
pub const MAX_JWKS_DEPTH: usize = 8;

/// Most entries a fetched set may list (real providers publish a handful); a longer one is
/// refused before any key is imported, so a hostile endpoint cannot make every worker parse
/// thousands of keys.
pub const MAX_FETCHED_KEYS: usize = 100;

/// The usable keys of a set, and the keys that were skipped.
#[derive(Debug)]
pub struct KeySet {
    /// Keys that verify tokens, in document order.
    pub keys: Vec<IssuerKey>,
    /// Keys left out, in document order.
    pub skipped: Vec<SkippedKey>,
}

/// A key of the set that will never verify a token of this issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its position in `keys`.
    pub index: usize,
    /// Its `kid`, when it has a string one.
    pub kid: Option<String>,
    /// Why it is not used.
    pub reason: SkipReason,
    /// Whether a usable key has the same `kid` (only the usable one can ever be selected).
    pub kid_shared_with_usable_key: bool,
}

/// Why a key is not used.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `use` is not `sig` (e.g. `enc`).
    NotForSignatures(String),
    /// `key_ops` does not allow `verify`.
    NoVerifyOperation,
    /// `alg` is not a JWS signature algorithm this filter verifies (e.g. `RSA-OAEP`, `HS256`).
    UnsupportedAlgorithm(String),
    /// A key type (or curve) this filter never verifies with (e.g. `oct`, EC `P-521`).
    UnsupportedKeyType(String),
    /// None of the key's algorithms is pinned for the issuer.
    AlgorithmNotPinned(Vec<Alg>),
    /// A fetched key that does not import (private members, a wrong size, bad base64, …).
    Invalid(String),
    /// A fetched key whose `kid` another usable key also has: neither can be selected.
    DuplicateKid,
    /// A fetched key without a `kid` in a set with several usable keys: never selected.
    MissingKid,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotForSignatures(u) => write!(f, "use {u:?} is not for signatures"),
            SkipReason::NoVerifyOperation => f.write_str("key_ops does not allow verify"),
            SkipReason::UnsupportedAlgorithm(a) => write!(
                f,
                "alg {a:?} is not a signature algorithm this filter verifies"
            ),
            SkipReason::UnsupportedKeyType(t) => {
                write!(f, "key type {t} is never used to verify tokens")
            }
            SkipReason::AlgorithmNotPinned(algs) => {
                let names: Vec<&str> = algs.iter().map(|a| a.name()).collect();
                write!(
                    f,
                    "its algorithms ({}) are not pinned in the issuer's algorithms",
                    names.join(" ")
                )
            }
            SkipReason::Invalid(why) => write!(f, "{why}"),
            SkipReason::DuplicateKid => {
                f.write_str("another usable key has the same kid (ambiguous: neither is used)")
            }
            SkipReason::MissingKid => f.write_str(
                "no kid, and the set has several usable keys (it can never be selected)",
            ),
        }
    }
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key {kid:?} skipped: {}", self.reason)?,
            None => write!(f, "key without kid skipped: {}", self.reason)?,
        }
        if self.kid_shared_with_usable_key {
            f.write_str(" (a usable key has the same kid; only that one verifies tokens)")?;
        }
        Ok(())
    }
}

/// One problem with a set, at a path relative to the document (`""`, `keys`, `keys[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetError {
    /// Relative JSON path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl KeySetError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        KeySetError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Imports a JWK Set document received as bytes (strict JSON: no duplicate members).
pub fn import_jwks_json(bytes: &[u8], pinned: &[Alg]) -> Result<KeySet, Vec<KeySetError>> {
    let doc = parse_strict(bytes, MAX_JWKS_DEPTH)
        .map_err(|e| vec![KeySetError::new("", e.to_string())])?;
    import_jwks(&doc, pinned)
}

/// Imports a JWK Set document for an issuer that pins `pinned`: every usable key, every
/// skipped key with its reason, or every error found.
pub fn import_jwks(doc: &Value, pinned: &[Alg]) -> Result<KeySet, Vec<KeySetError>> {
    import_set(doc, pinned, Source::Configured)
}

/// Imports a key set fetched from the issuer's `jwks_uri` (the response body): strict JSON
/// (no duplicate members, at most [`MAX_JWKS_DEPTH`] deep), at most [`MAX_FETCHED_KEYS`]
/// entries; keys that do not import, and keys with an ambiguous or missing `kid`, are
/// skipped with their reason. Refused only when no key is usable.
pub fn import_fetched_jwks(bytes: &[u8], pinned: &[Alg]) -> Result<KeySet, KeySetError> {
    let doc =
        parse_strict(bytes, MAX_JWKS_DEPTH).map_err(|e| KeySetError::new("", e.to_string()))?;
    let count = doc
        .get("keys")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if count > MAX_FETCHED_KEYS {
        return Err(KeySetError::new(
            "keys",
            format!("{count} keys: more than {MAX_FETCHED_KEYS}, not a provider's key set"),
        ));
    }
    import_set(&doc, pinned, Source::Fetched).map_err(|mut errors| {
        // Per-key problems were turned into skips: what is left is about the whole set.
        errors.truncate(1);
        errors
            .pop()
            .unwrap_or_else(|| KeySetError::new("", "invalid key set"))
    })
}

/// Where a set comes from: the policy (a broken key is a configuration error) or the network
/// (a broken key is skipped).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Configured,
    Fetched,
}

fn import_set(doc: &Value, pinned: &[Alg], source: Source) -> Result<KeySet, Vec<KeySetError>> {
    let Value::Object(set) = doc else {
        return Err(vec![KeySetError::new(
            "",
            "must be a JWK Set object with \"keys\"",
        )]);
    };
    let items = match set.get("keys") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        None => return Err(vec![KeySetError::new("keys", "is required")]),
        Some(_) => {
            return Err(vec![KeySetError::new(
                "keys",
                "must be a non-empty array of public JWKs",
            )])
        }
    };
    let fetched = source == Source::Fetched;
    let mut errors = Vec::new();
    let mut usable: Vec<(usize, IssuerKey)> = Vec::new();
    let mut skipped = Vec::new();
    let skip = |index: usize, reason: SkipReason| SkippedKey {
        index,
        kid: items
            .get(index)
            .and_then(|k| k.get("kid"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        reason,
        kid_shared_with_usable_key: false,
    };
    for (index, jwk) in items.iter().enumerate() {
        let path = format!("keys[{index}]");
        match import_key(jwk, pinned) {
            Ok(Use::Verify(key)) => usable.push((index, *key)),
            Ok(Use::Skip(reason)) => skipped.push(skip(index, reason)),
            Err(message) if fetched => skipped.push(skip(index, SkipReason::Invalid(message))),
            Err(message) => errors.push(KeySetError::new(path, message)),
        }
    }
    if fetched {
        // Among usable keys the kid selects the key: drop every key it cannot select.
        let kids: Vec<Option<String>> = usable
            .iter()
            .map(|(_, k)| k.kid().map(str::to_owned))
            .collect();
        let several = usable.len() > 1;
        let mut kept = Vec::new();
        for (n, (index, key)) in usable.into_iter().enumerate() {
            let kid = kids.get(n).cloned().flatten();
            let shared = kid.is_some() && kids.iter().filter(|k| **k == kid).count() > 1;
            match kid {
                None if several => skipped.push(skip(index, SkipReason::MissingKid)),
                Some(_) if shared => skipped.push(skip(index, SkipReason::DuplicateKid)),
                _ => kept.push((index, key)),
            }
        }
        usable = kept;
        skipped.sort_by_key(|s| s.index);
    } else {
        // Among usable keys the kid selects the key: it must be unambiguous.
        let several = usable.len() > 1;
        for (n, (index, key)) in usable.iter().enumerate() {
            let path = format!("keys[{index}]");
            match key.kid() {
                None if several => errors.push(KeySetError::new(
                    path,
                    "kid is required when an issuer has more than one usable key",
                )),
                Some(kid) if usable.iter().take(n).any(|(_, k)| k.kid() == Some(kid)) => {
                    errors.push(KeySetError::new(path, format!("duplicate kid {kid:?}")));
                }
                _ => {}
            }
        }
    }
    for s in &mut skipped {
        s.kid_shared_with_usable_key = s
            .kid
            .as_deref()
            .is_some_and(|kid| usable.iter().any(|(_, k)| k.kid() == Some(kid)));
    }
    if usable.is_empty() && errors.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| format!("keys[{}]: {}", s.index, s.reason))
            .collect();
        errors.push(KeySetError::new(
            "keys",
            format!(
                "no key can verify this issuer's tokens ({})",
                why.join("; ")
            ),
        ));
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| key_index(&e.path));
        return Err(errors);
    }
    Ok(KeySet {
        keys: usable.into_iter().map(|(_, k)| k).collect(),
        skipped,
    })
}

/// Sorts errors in document order (`keys[10]` after `keys[9]`).
fn key_index(path: &str) -> usize {
    path.strip_prefix("keys[")
        .and_then(|p| p.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

enum Use {
    Verify(Box<IssuerKey>),
    Skip(SkipReason),
}

/// Members the strict importer sees: key material (so private members are still refused)
/// and the members that decide how the key is used. Everything else (`use` and `key_ops`,
/// already judged here; `x5c`, `x5t`, `issuer`, …) is left out, so an ignored certificate
/// chain can neither be trusted nor push the key past the importer's size limit.
const IMPORTED_MEMBERS: &[&str] = &[
    "kty", "crv", "alg", "kid", "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi", "oth", "k",
    "pub", "priv",
];

fn import_key(jwk: &Value, pinned: &[Alg]) -> Result<Use, String> {
    let Value::Object(members) = jwk else {
        return Err("must be a JWK object".into());
    };
    match members.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(u)) => return Ok(Use::Skip(SkipReason::NotForSignatures(u.clone()))),
        Some(_) => return Err("use must be a string".into()),
    }
    match members.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) => {
            let mut verify = false;
            for op in ops {
                match op.as_str() {
                    Some(o) => verify |= o == "verify",
                    None => return Err("key_ops must be an array of strings".into()),
                }
            }
            if !verify {
                return Ok(Use::Skip(SkipReason::NoVerifyOperation));
            }
        }
        Some(_) => return Err("key_ops must be an array of strings".into()),
    }
    let alg = match members.get("alg") {
        None => None,
        Some(Value::String(a)) => match Alg::from_verify_name(a) {
            Some(alg) if pinned.contains(&alg) => Some(alg),
            Some(alg) => return Ok(Use::Skip(SkipReason::AlgorithmNotPinned(vec![alg]))),
            None => return Ok(Use::Skip(SkipReason::UnsupportedAlgorithm(a.clone()))),
        },
        Some(_) => return Err("alg must be a string".into()),
    };
    let family = match key_family(members)? {
        Ok(family) => family,
        Err(skip) if alg.is_none() => return Ok(Use::Skip(skip)),
        // A pinned alg on a key type that cannot carry it is a broken key, not another key:
        // the strict importer below says what is wrong.
        Err(_) => Vec::new(),
    };
    if alg.is_none() && !family.iter().any(|a| pinned.contains(a)) {
        return Ok(Use::Skip(SkipReason::AlgorithmNotPinned(family)));
    }
    match members.get("kid") {
        None => {}
        Some(Value::String(k)) if !k.is_empty() => {}
        Some(Value::String(_)) => return Err("kid must not be empty".into()),
        Some(_) => return Err("kid must be a string".into()),
    }
    let reduced: Map<String, Value> = members
        .iter()
        .filter(|(name, _)| IMPORTED_MEMBERS.contains(&name.as_str()))
        .map(|(name, v)| (name.clone(), v.clone()))
        .collect();
    IssuerKey::from_jwk(&Value::Object(reduced), pinned)
        .map(|k| Use::Verify(Box::new(k)))
        .map_err(|e| e.0)
}

/// The algorithms a key type can verify, or why the type is skipped; `Err` outside for a
/// malformed `kty`/`crv` member.
fn key_family(members: &Map<String, Value>) -> Result<Result<Vec<Alg>, SkipReason>, String> {
    let kty = match members.get("kty") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err("kty must be a string".into()),
        None => return Err("kty is required".into()),
    };
    let crv = match members.get("crv") {
        None => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err("crv must be a string".into()),
    };
    let unsupported = |what: String| Ok(Err(SkipReason::UnsupportedKeyType(what)));
    match (kty, crv) {
        ("RSA", _) => Ok(Ok(Alg::VERIFY
            .into_iter()
            .filter(|a| a.name().starts_with("RS") || a.name().starts_with("PS"))
            .collect())),
        ("EC", Some("P-256")) => Ok(Ok(vec![Alg::ES256])),
        ("EC", Some("P-384")) => Ok(Ok(vec![Alg::ES384])),
        ("OKP", Some("Ed25519")) => Ok(Ok(vec![Alg::EdDSA])),
        ("EC" | "OKP", None) => Err(format!("crv is required for kty {kty}")),
        ("EC" | "OKP", Some(c)) => unsupported(format!("{kty} {c}")),
        ("oct", _) => unsupported("oct (a shared secret)".into()),
        (other, _) => unsupported(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn ed(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": ED_X})
    }

    #[test]
    fn skips_keys_that_are_not_for_verification() {
        let doc = json!({"keys": [
            ed("sig"),
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "x", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": ED_X},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrap", "key_ops": ["wrapKey"], "x": ED_X},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "x", "e": "AQAB"},
        ], "other": true});
        let set = import_jwks(&doc, &[Alg::EdDSA]).unwrap();
        assert_eq!(set.keys.len(), 1);
        let reasons: Vec<(usize, String)> = set
            .skipped
            .iter()
            .map(|s| (s.index, s.to_string()))
            .collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(
            reasons[0].1.contains("\"enc\" skipped: use \"enc\""),
            "{reasons:?}"
        );
        assert!(reasons[1].1.contains("OKP X25519"), "{reasons:?}");
        assert!(reasons[2].1.contains("oct"), "{reasons:?}");
        assert!(reasons[3].1.contains("EC P-521"), "{reasons:?}");
        assert!(reasons[4].1.contains("key_ops"), "{reasons:?}");
        assert!(reasons[5].1.contains("\"HS256\""), "{reasons:?}");
    }

    #[test]
    fn usable_keys_stay_strict() {
        let mut private = ed("k1");
        private["d"] = json!(ED_X);
        let doc = json!({"keys": [private, {"kty": "EC", "kid": "nocrv", "x": "AA", "y": "AA"}]});
        let errs = import_jwks(&doc, &[Alg::EdDSA, Alg::ES256]).unwrap_err();
        assert_eq!(errs[0].path, "keys[0]");
        assert!(errs[0].message.contains("invalid key"), "{errs:?}");
        assert_eq!(errs[1].path, "keys[1]");
        assert!(errs[1].message.contains("crv is required"), "{errs:?}");
        // A pinned alg on the wrong key type is an error, not a skip.
        let doc = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "ES256", "x": ED_X}]});
        assert!(import_jwks(&doc, &[Alg::ES256]).is_err());
    }

    #[test]
    fn kid_rules() {
        let dup = json!({"keys": [ed("a"), ed("a")]});
        let errs = import_jwks(&dup, &[Alg::EdDSA]).unwrap_err();
        assert_eq!(
            errs,
            vec![KeySetError::new("keys[1]", "duplicate kid \"a\"")]
        );
        let mut no_kid = ed("a");
        no_kid.as_object_mut().unwrap().remove("kid");
        let errs =
            import_jwks(&json!({"keys": [ed("a"), no_kid.clone()]}), &[Alg::EdDSA]).unwrap_err();
        assert_eq!(errs[0].path, "keys[1]");
        // One usable key needs no kid, whatever was skipped beside it.
        let enc = json!({"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"});
        assert!(import_jwks(&json!({"keys": [no_kid, enc]}), &[Alg::EdDSA]).is_ok());
        // A skipped key may share a usable key's kid; it is reported.
        let enc = json!({"kty": "RSA", "kid": "a", "use": "enc", "n": "x", "e": "AQAB"});
        let set = import_jwks(&json!({"keys": [enc, ed("a")]}), &[Alg::EdDSA]).unwrap();
        assert!(set.skipped[0].kid_shared_with_usable_key);
        assert!(set.skipped[0].to_string().contains("same kid"));
    }

    #[test]
    fn nothing_usable_is_an_error() {
        let doc = json!({"keys": [ed("a")]});
        let errs = import_jwks(&doc, &[Alg::RS256]).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "keys");
        assert!(
            errs[0]
                .message
                .contains("keys[0]: its algorithms (EdDSA) are not pinned"),
            "{errs:?}"
        );
        assert!(import_jwks(&json!({"keys": []}), &[Alg::EdDSA]).is_err());
        assert!(import_jwks(&json!([]), &[Alg::EdDSA]).is_err());
        assert!(import_jwks_json(br#"{"keys":[],"keys":[]}"#, &[Alg::EdDSA]).is_err());
    }

    #[test]
    fn fetched_sets_skip_what_cannot_be_used() {
        let mut private = ed("leaked");
        private["d"] = json!(ED_X);
        let doc = json!({"keys": [
            ed("good"),
            private,
            {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
            ed("twin"),
            ed("twin"),
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "x", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X},
            {"kty": "kyber", "kid": "future", "x": "AA"},
        ]});
        let set = import_fetched_jwks(doc.to_string().as_bytes(), &[Alg::EdDSA]).unwrap();
        let kids: Vec<Option<&str>> = set.keys.iter().map(|k| k.kid()).collect();
        assert_eq!(kids, [Some("good")]);
        let why: Vec<(usize, String)> = set
            .skipped
            .iter()
            .map(|s| (s.index, s.to_string()))
            .collect();
        assert_eq!(why.len(), 7, "{why:?}");
        assert!(
            why[0].1.contains("\"leaked\"") && why[0].1.contains("invalid key"),
            "{why:?}"
        );
        assert!(why[1].1.contains("\"short\""), "{why:?}");
        assert!(
            why[2].1.contains("same kid") && why[3].1.contains("same kid"),
            "{why:?}"
        );
        assert!(why[5].1.contains("no kid"), "{why:?}");
        assert!(why[6].1.contains("\"kyber\""), "{why:?}");
        // The same document in a policy is refused: there a broken key is a mistake.
        assert!(import_jwks(&doc, &[Alg::EdDSA]).is_err());
    }

    #[test]
    fn fetched_sets_refused_whole() {
        let pinned = &[Alg::EdDSA];
        let nothing = json!({"keys": [ed("a"), ed("a")]}).to_string();
        let e = import_fetched_jwks(nothing.as_bytes(), pinned).unwrap_err();
        assert!(e.message.contains("no key can verify"), "{e:?}");
        let many: Vec<Value> = (0..10_000).map(|i| ed(&format!("k{i}"))).collect();
        let many = json!({ "keys": many }).to_string();
        let e = import_fetched_jwks(many.as_bytes(), pinned).unwrap_err();
        assert!(e.message.contains("10000 keys"), "{e:?}");
        for bad in [
            &b"{\"keys\":[]}"[..],
            b"[]",
            b"",
            b"{\"keys\":[{\"kty\":\"OKP\"",
            b"{\"keys\":1,\"keys\":2}",
            b"{\"keys\":[{\"x5c\":[[[[[[[[[]]]]]]]]]}]}",
            b"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":1e999999}]}",
            b"\xff\xfe",
        ] {
            assert!(
                import_fetched_jwks(bad, pinned).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A huge number in a member nobody reads is just JSON.
        let big = format!("{{\"keys\":[{}],\"n\":{}}}", ed("a"), "9".repeat(300));
        assert_eq!(
            import_fetched_jwks(big.as_bytes(), pinned)
                .unwrap()
                .keys
                .len(),
            1
        );
    }
}
