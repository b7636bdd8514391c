//! Minting the downstream token: the narrowest token the rule and the original allow.
//!
//! The payload is built as one JSON object ([`ClaimSet`]), so no member can appear twice (a
//! strict verifier such as Envoy's `jwt_authn` refuses a payload that repeats a member), and
//! policy data (`preserve_claims`, `add_claims`) can never set a claim the gateway sets.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::chain::act_claim;
use super::claims::RESERVED_CLAIMS;
use super::config::{ExchangeRule, Policy};
use super::entropy::Entropy;
use super::keyset::KeySnapshot;
use super::reason::DenyReason;
use super::token::b64url_encode;
use super::validate::VerifiedToken;

/// A minted token and what the audit records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `aud`.
    pub audience: String,
    /// Its `scope`.
    pub scope: String,
    /// Its `iat` (and `nbf`).
    pub issued_at: u64,
    /// Its `exp`.
    pub expires_at: u64,
    /// The signing key's `kid`.
    pub kid: String,
}

/// A claim could not be set: the name is taken (by the gateway or already set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRefused(pub String);

/// One claim's value in a [`ClaimSet`]: borrowed where the value already exists, so that
/// building the payload copies nothing before it is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim<'a> {
    /// A JSON string.
    Str(&'a str),
    /// A JSON non-negative integer.
    Int(u64),
    /// Any JSON value held elsewhere (preserved or added claims).
    Json(&'a Value),
    /// Any JSON value built for this token (`act`, `exchanged_from`).
    Owned(Value),
}

impl From<Value> for Claim<'_> {
    fn from(v: Value) -> Self {
        Claim::Owned(v)
    }
}

/// The claims of a minted token: one JSON object, each member set once.
///
/// The gateway's own claims go in through [`ClaimSet::set`], which refuses a name already
/// present. Claims that come from policy data go in through [`ClaimSet::set_from_policy`],
/// which additionally refuses every reserved claim and the names given to
/// [`ClaimSet::new`] (the claims the issuer's mapping reads), whatever the configuration
/// reader allowed.
#[derive(Debug, Clone, Default)]
pub struct ClaimSet<'a> {
    // Ordered by name, bytewise: the order `serde_json` writes a `Map` in (no `preserve_order`),
    // which is what minted payloads have always been.
    claims: BTreeMap<&'a str, Claim<'a>>,
    protected: &'a [String],
    protected_scopes: &'a [String],
}

impl<'a> ClaimSet<'a> {
    /// An empty set; the names in `protected` and `protected_scopes` are claims policy data
    /// may never set.
    pub fn new(protected: &'a [String], protected_scopes: &'a [String]) -> ClaimSet<'a> {
        ClaimSet {
            claims: BTreeMap::new(),
            protected,
            protected_scopes,
        }
    }

    /// Sets one of the gateway's own claims.
    pub fn set(&mut self, name: &'a str, value: impl Into<Claim<'a>>) -> Result<(), ClaimRefused> {
        match self.claims.entry(name) {
            Entry::Occupied(_) => Err(ClaimRefused(name.to_owned())),
            Entry::Vacant(e) => {
                e.insert(value.into());
                Ok(())
            }
        }
    }

    /// Sets a claim named by policy (copied or added).
    pub fn set_from_policy(
        &mut self,
        name: &'a str,
        value: impl Into<Claim<'a>>,
    ) -> Result<(), ClaimRefused> {
        if RESERVED_CLAIMS.contains(&name)
            || self
                .protected
                .iter()
                .chain(self.protected_scopes)
                .any(|p| p == name)
        {
            return Err(ClaimRefused(name.to_owned()));
        }
        self.set(name, value)
    }

    /// The UTF-8 JSON payload, written directly: byte for byte what `serde_json` writes for
    /// the same members as a `Map` (a test proves it), without building one.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, (name, value)) in self.claims.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json(&mut out, name);
            out.push(b':');
            match value {
                Claim::Str(s) => write_json(&mut out, s),
                Claim::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                Claim::Json(v) => write_json(&mut out, *v),
                Claim::Owned(v) => write_json(&mut out, v),
            }
        }
        out.push(b'}');
        out
    }
}

impl<'a> From<&'a str> for Claim<'a> {
    fn from(s: &'a str) -> Self {
        Claim::Str(s)
    }
}

impl<'a> From<&'a String> for Claim<'a> {
    fn from(s: &'a String) -> Self {
        Claim::Str(s)
    }
}

impl From<u64> for Claim<'_> {
    fn from(n: u64) -> Self {
        Claim::Int(n)
    }
}

impl<'a> From<&'a Value> for Claim<'a> {
    fn from(v: &'a Value) -> Self {
        Claim::Json(v)
    }
}

/// Appends `value` as JSON with `serde_json`'s own escaping.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string or a `Value` into a Vec cannot fail (no I/O, no non-string keys).
    let _ = serde_json::to_writer(out, value);
}

/// Mints the downstream token for `verified` under `rule` at `now` (seconds).
///
/// - `scope` = `granted`: the rule's grant ∩ the token's scopes ∩ the issuer's ceiling (see
///   `ceiling::granted_scopes`), in the rule's order, never empty;
/// - `exp` = min(now + ttl, presented `exp`), strictly after `now`;
/// - `iat` = `nbf` = now, a fresh 128-bit random `jti`;
/// - only `preserve_claims` are copied; `add_claims` cannot name registered claims
///   (enforced when the policy is loaded, and again here);
/// - provenance: `exchanged_from: {iss, token_id, iat}` names the original token (the edge
///   token, also after chained hops), `act` records this exchange around the chain so far.
pub fn mint(
    policy: &Policy,
    keys: &KeySnapshot,
    rule: &ExchangeRule,
    verified: &VerifiedToken<'_>,
    granted: &[String],
    now: u64,
    entropy: &mut dyn Entropy,
) -> Result<MintedToken, DenyReason> {
    if granted.is_empty() {
        return Err(DenyReason::NoGrantableScope);
    }
    let expires_at = now
        .saturating_add(rule.mint.ttl_seconds)
        .min(verified.expires_at);
    if expires_at <= now {
        // Accepted within clock skew, but nothing is left to grant: never outlive the original.
        return Err(DenyReason::TokenExpired);
    }
    let key = keys.signer(policy).ok_or(DenyReason::InternalError)?;

    let mut id = [0u8; 16];
    entropy
        .fill(&mut id)
        .map_err(|_| DenyReason::InternalError)?;
    let jti = b64url_encode(&id);
    let scope = granted.join(" ");

    let claims = minted_claims(policy, rule, verified, now, expires_at, &jti, &scope)
        .map_err(|_| DenyReason::InternalError)?;
    let token = key
        .sign_compact(&claims.to_json(), entropy)
        .map_err(|_| DenyReason::InternalError)?;
    Ok(MintedToken {
        token,
        jti,
        audience: rule.mint.audience.clone(),
        scope,
        issued_at: now,
        expires_at,
        kid: key.kid().to_owned(),
    })
}

fn minted_claims<'a>(
    policy: &'a Policy,
    rule: &'a ExchangeRule,
    verified: &'a VerifiedToken<'_>,
    now: u64,
    expires_at: u64,
    jti: &'a str,
    scope: &'a str,
) -> Result<ClaimSet<'a>, ClaimRefused> {
    let mapping = &verified.issuer.claims;
    let mut c = ClaimSet::new(mapping.caller_claims(), mapping.scope_claims());
    c.set("iss", &policy.issuer)?;
    c.set("sub", &verified.subject)?;
    c.set("aud", &rule.mint.audience)?;
    c.set("iat", now)?;
    c.set("nbf", now)?;
    c.set("exp", expires_at)?;
    c.set("jti", jti)?;
    c.set("scope", scope)?;
    if let Some(caller) = &verified.caller {
        c.set("client_id", caller)?;
    }
    let mut from = Map::new();
    from.insert("iss".into(), Value::String(verified.origin.issuer.clone()));
    from.insert(
        "token_id".into(),
        Value::String(verified.origin.token_id.clone()),
    );
    if let Some(iat) = verified.origin.issued_at {
        from.insert("iat".into(), Value::from(iat));
    }
    c.set("exchanged_from", Value::Object(from))?;
    c.set("act", act_claim(policy, rule, verified))?;
    for name in &rule.mint.preserve_claims {
        if let Some(v) = verified.claims.get(name) {
            c.set_from_policy(name, v)?;
        }
    }
    for (name, v) in &rule.mint.add_claims {
        c.set_from_policy(name, v)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_set_holds_each_member_once() {
        let protected = vec!["roles".to_owned()];
        let mut c = ClaimSet::new(&protected, &[]);
        assert!(c.set("sub", json!("alice")).is_ok());
        assert_eq!(c.set("sub", json!("bob")), Err(ClaimRefused("sub".into())));
        for reserved in RESERVED_CLAIMS {
            assert!(
                c.set_from_policy(reserved, json!("x")).is_err(),
                "{reserved}"
            );
        }
        assert!(c.set_from_policy("roles", json!(["admin"])).is_err());
        assert!(c.set_from_policy("tenant", json!("acme")).is_ok());
        assert!(c.set_from_policy("tenant", json!("other")).is_err());
        assert_eq!(
            String::from_utf8(c.to_json()).unwrap(),
            r#"{"sub":"alice","tenant":"acme"}"#
        );
    }

    #[test]
    fn the_payload_is_byte_for_byte_what_serde_json_writes() {
        let strings = [
            "",
            "alice",
            "quote \" backslash \\ slash /",
            "control \u{0} \u{1f} \n \r \t \u{8} \u{c} \u{7f}",
            "unicode é ü 漢字 🦀 \u{2028} \u{2029} \u{feff}",
            "</script><!--",
        ];
        let values = [
            json!(null),
            json!(true),
            json!(-1),
            json!(1.5e300),
            json!(0.1),
            json!(u64::MAX),
            json!(["a", 1, {"z": "é", "a": [null, "\u{0}"]}]),
            json!({"b\"": {"é": "🦀", "A": "\\"}, "a": []}),
        ];
        let ints = [0u64, 7, 1_764_000_000, u64::MAX];
        for round in 0..strings.len() {
            let mut set = ClaimSet::new(&[], &[]);
            let mut reference = Map::new();
            let names: Vec<String> = (0..24)
                .map(|i| match i % 4 {
                    0 => format!("claim{i}"),
                    1 => format!("É{i}"),
                    2 => format!("a\"\\{i}"),
                    _ => format!("{}{i}", strings[(i + round) % strings.len()]),
                })
                .collect();
            for (i, name) in names.iter().enumerate() {
                let pick = i + round;
                match i % 4 {
                    0 => {
                        let v = strings[pick % strings.len()];
                        set.set(name, v).unwrap();
                        reference.insert(name.clone(), Value::String(v.to_owned()));
                    }
                    1 => {
                        let v = ints[pick % ints.len()];
                        set.set(name, v).unwrap();
                        reference.insert(name.clone(), Value::from(v));
                    }
                    2 => {
                        let v = &values[pick % values.len()];
                        set.set_from_policy(name, v).unwrap();
                        reference.insert(name.clone(), v.clone());
                    }
                    _ => {
                        let v = values[pick % values.len()].clone();
                        set.set(name, v.clone()).unwrap();
                        reference.insert(name.clone(), v);
                    }
                }
            }
            let written = set.to_json();
            assert_eq!(written, serde_json::to_vec(&reference).unwrap());
            let back: Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(back, Value::Object(reference));
        }
        assert_eq!(ClaimSet::new(&[], &[]).to_json(), b"{}");
    }
}
