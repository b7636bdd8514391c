//! Minting the downstream token: the narrowest token the rule and the original allow.

use jwt_simple::prelude::{Audiences, JWTClaims, UnixTimeStamp};
use serde_json::{Map, Value};

use super::config::{ExchangeRule, Policy};
use super::reason::DenyReason;
use super::token::b64url_encode;
use super::validate::VerifiedToken;

/// A source of randomness (the host's in production, a fixed one in tests).
pub trait Entropy {
    /// Fills `buf` with random bytes, or fails (and the request is denied).
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

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
    /// Its `exp`.
    pub expires_at: u64,
    /// The signing key's `kid`.
    pub kid: String,
}

/// Mints the downstream token for `verified` under `rule` at `now` (seconds).
///
/// - `scope` = the rule's grant ∩ the token's scopes (in the rule's order), never empty;
/// - `exp` = min(now + ttl, original `exp`), strictly after `now`;
/// - `iat` = `nbf` = now, a fresh 128-bit random `jti`;
/// - only `preserve_claims` are copied; `add_claims` cannot name registered claims
///   (enforced when the policy is loaded);
/// - provenance: `exchanged_from: {iss, token_id}` names the original token.
pub fn mint(
    policy: &Policy,
    rule: &ExchangeRule,
    verified: &VerifiedToken<'_>,
    now: u64,
    entropy: &mut dyn Entropy,
) -> Result<MintedToken, DenyReason> {
    let granted: Vec<&str> = rule
        .mint
        .scopes
        .iter()
        .filter(|s| verified.scopes.contains(s))
        .map(String::as_str)
        .collect();
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
    let key = policy
        .active_signing_key()
        .ok_or(DenyReason::InternalError)?;

    let mut id = [0u8; 16];
    entropy
        .fill(&mut id)
        .map_err(|_| DenyReason::InternalError)?;
    let jti = b64url_encode(&id);
    let scope = granted.join(" ");

    let mut custom = Map::new();
    for name in &rule.mint.preserve_claims {
        if let Some(v) = verified.claims.get(name) {
            custom.insert(name.clone(), v.clone());
        }
    }
    for (k, v) in &rule.mint.add_claims {
        custom.insert(k.clone(), v.clone());
    }
    custom.insert("scope".into(), Value::String(scope.clone()));
    if let Some(caller) = &verified.caller {
        custom.insert("client_id".into(), Value::String(caller.clone()));
    }
    custom.insert(
        "exchanged_from".into(),
        serde_json::json!({
            "iss": verified.issuer.issuer,
            "token_id": verified.token_id,
        }),
    );

    let claims = JWTClaims {
        issued_at: Some(UnixTimeStamp::from_secs(now)),
        expires_at: Some(UnixTimeStamp::from_secs(expires_at)),
        invalid_before: Some(UnixTimeStamp::from_secs(now)),
        issuer: Some(policy.issuer.clone()),
        subject: Some(verified.subject.clone()),
        audiences: Some(Audiences::AsString(rule.mint.audience.clone())),
        jwt_id: Some(jti.clone()),
        nonce: None,
        custom,
    };
    let token = key.sign(claims).map_err(|_| DenyReason::InternalError)?;
    Ok(MintedToken {
        token,
        jti,
        audience: rule.mint.audience.clone(),
        scope,
        expires_at,
        kid: key.kid().to_owned(),
    })
}
