//! Minting the downstream token: the narrowest token the rule and the original allow.
//!
//! The payload is built as one JSON object ([`ClaimSet`]), so no member can appear twice (a
//! strict verifier such as Envoy's `jwt_authn` refuses a payload that repeats a member), and
//! policy data (`preserve_claims`, `add_claims`) can never set a claim the gateway sets.

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

/// The claims of a minted token: one JSON object, each member set once.
///
/// The gateway's own claims go in through [`ClaimSet::set`], which refuses a name already
/// present. Claims that come from policy data go in through [`ClaimSet::set_from_policy`],
/// which additionally refuses every reserved claim and the names given to
/// [`ClaimSet::new`] (the claims the issuer's mapping reads), whatever the configuration
/// reader allowed.
#[derive(Debug, Clone, Default)]
pub struct ClaimSet {
    claims: Map<String, Value>,
    protected: Vec<String>,
}

impl ClaimSet {
    /// An empty set; `protected` names claims policy data may never set.
    pub fn new(protected: Vec<String>) -> ClaimSet {
        ClaimSet {
            claims: Map::new(),
            protected,
        }
    }

    /// Sets one of the gateway's own claims.
    pub fn set(&mut self, name: &str, value: Value) -> Result<(), ClaimRefused> {
        if self.claims.contains_key(name) {
            return Err(ClaimRefused(name.to_owned()));
        }
        self.claims.insert(name.to_owned(), value);
        Ok(())
    }

    /// Sets a claim named by policy (copied or added).
    pub fn set_from_policy(&mut self, name: &str, value: Value) -> Result<(), ClaimRefused> {
        if RESERVED_CLAIMS.contains(&name) || self.protected.iter().any(|p| p == name) {
            return Err(ClaimRefused(name.to_owned()));
        }
        self.set(name, value)
    }

    /// The UTF-8 JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // A map of JSON values always serializes (no non-string keys, no NaN in a Value).
        serde_json::to_vec(&self.claims).unwrap_or_default()
    }
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

fn minted_claims(
    policy: &Policy,
    rule: &ExchangeRule,
    verified: &VerifiedToken<'_>,
    now: u64,
    expires_at: u64,
    jti: &str,
    scope: &str,
) -> Result<ClaimSet, ClaimRefused> {
    let mapping = &verified.issuer.claims;
    let protected = mapping
        .caller_claims()
        .iter()
        .chain(mapping.scope_claims())
        .cloned()
        .collect();
    let mut c = ClaimSet::new(protected);
    c.set("iss", Value::String(policy.issuer.clone()))?;
    c.set("sub", Value::String(verified.subject.clone()))?;
    c.set("aud", Value::String(rule.mint.audience.clone()))?;
    c.set("iat", Value::from(now))?;
    c.set("nbf", Value::from(now))?;
    c.set("exp", Value::from(expires_at))?;
    c.set("jti", Value::String(jti.to_owned()))?;
    c.set("scope", Value::String(scope.to_owned()))?;
    if let Some(caller) = &verified.caller {
        c.set("client_id", Value::String(caller.clone()))?;
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
            c.set_from_policy(name, v.clone())?;
        }
    }
    for (name, v) in &rule.mint.add_claims {
        c.set_from_policy(name, v.clone())?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_set_holds_each_member_once() {
        let mut c = ClaimSet::new(vec!["roles".into()]);
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
}
