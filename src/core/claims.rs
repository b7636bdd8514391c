//! The claim vocabulary: which claims the gateway sets itself, and where an issuer's tokens
//! carry their caller and their scopes.
//!
//! Providers disagree on the second point (Okta: `cid` and an `scp` array; Entra ID v1:
//! `appid`; app-only Entra tokens: `roles`; Auth0 with RBAC: `permissions`), so each trusted
//! issuer has a [`ClaimMapping`]. Every reader of a caller or of scopes (the rule's
//! requirements, the minted `client_id` and `scope`, the audit record) goes through this
//! module, so they can never disagree about what a token says.

use serde_json::{Map, Value};

use super::reason::DenyReason;
use super::syntax::is_scope_token;

/// Claims the gateway sets itself on minted tokens: never copied, never added by policy.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "scp",
    "client_id",
    "azp",
    "act",
    "may_act",
    "cnf",
    "exchanged_from",
];

/// Registered JWT claims (RFC 7519 §4.1) whose meaning is fixed elsewhere: never a caller or
/// scope claim (`sub` may name the caller).
pub const FIXED_MEANING_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The caller claims read when an issuer has no mapping (and for tokens of unknown issuers).
pub const DEFAULT_CALLER_CLAIMS: &[&str] = &["azp", "client_id"];

/// The scope claims read when an issuer has no mapping.
pub const DEFAULT_SCOPE_CLAIMS: &[&str] = &["scope", "scp"];

/// Where one issuer's tokens carry the caller and the scopes: claim names, read in order, the
/// first present wins (later ones are not looked at, even if malformed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    caller: Vec<String>,
    scopes: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            caller: DEFAULT_CALLER_CLAIMS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            scopes: DEFAULT_SCOPE_CLAIMS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }
}

impl ClaimMapping {
    /// A mapping from already validated names (see the configuration reader).
    pub fn new(caller: Vec<String>, scopes: Vec<String>) -> ClaimMapping {
        ClaimMapping { caller, scopes }
    }

    /// The caller claims, in reading order.
    pub fn caller_claims(&self) -> &[String] {
        &self.caller
    }

    /// The scope claims, in reading order.
    pub fn scope_claims(&self) -> &[String] {
        &self.scopes
    }

    /// Whether `name` is one of the claims this mapping reads.
    pub fn reads(&self, name: &str) -> bool {
        self.caller.iter().chain(&self.scopes).any(|c| c == name)
    }

    /// The caller of a verified token: the first listed claim present, which must be a
    /// string (`invalid_claim` otherwise); `None` when no listed claim is present.
    pub fn caller<'c>(
        &self,
        claims: &'c Map<String, Value>,
    ) -> Result<Option<&'c str>, DenyReason> {
        match first_present(claims, &self.caller) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(DenyReason::InvalidClaim),
        }
    }

    /// The scopes of a verified token: the first listed claim present, as a space-separated
    /// string or an array of strings, every value an RFC 6749 scope-token (`invalid_claim`
    /// otherwise), duplicates dropped, at most `max` values (`too_many_scopes`).
    pub fn scopes(
        &self,
        claims: &Map<String, Value>,
        max: usize,
    ) -> Result<Vec<String>, DenyReason> {
        scope_values(first_present(claims, &self.scopes), max)
    }

    /// A cheap bound on the number of scope values, before the signature is checked: the
    /// largest count among the listed claims present.
    pub fn scope_count(&self, claims: &Map<String, Value>) -> usize {
        self.scopes
            .iter()
            .map(|name| match claims.get(name) {
                Some(Value::String(s)) => s.split(' ').filter(|x| !x.is_empty()).count(),
                Some(Value::Array(a)) => a.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

/// For the audit record, before (or without) verification: the first present caller claim
/// of `names`, when it is a string. Never fails; what it returns is attacker-supplied until
/// the signature verifies.
pub fn caller_hint<'c, S: AsRef<str>>(
    claims: &'c Map<String, Value>,
    names: &[S],
) -> Option<&'c str> {
    first_present(claims, names).and_then(Value::as_str)
}

fn first_present<'c, S: AsRef<str>>(
    claims: &'c Map<String, Value>,
    names: &[S],
) -> Option<&'c Value> {
    names.iter().find_map(|n| claims.get(n.as_ref()))
}

fn scope_values(value: Option<&Value>, max: usize) -> Result<Vec<String>, DenyReason> {
    let list: Vec<&str> = match value {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(' ').filter(|x| !x.is_empty()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or(DenyReason::InvalidClaim)?,
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    if list.len() > max {
        return Err(DenyReason::TooManyScopes);
    }
    // A tab or another control character as a separator is not RFC 6749: refuse, never guess.
    if !list.iter().all(|s| is_scope_token(s)) {
        return Err(DenyReason::InvalidClaim);
    }
    let mut unique: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        if !unique.iter().any(|u| u == s) {
            unique.push(s.to_owned());
        }
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn first_present_claim_wins() {
        let m = ClaimMapping::default();
        let c = claims(json!({"azp": "a", "client_id": "b"}));
        assert_eq!(m.caller(&c), Ok(Some("a")));
        let c = claims(json!({"client_id": "b"}));
        assert_eq!(m.caller(&c), Ok(Some("b")));
        // The first present claim decides, even when a later one would be valid.
        let c = claims(json!({"azp": 1, "client_id": "b"}));
        assert_eq!(m.caller(&c), Err(DenyReason::InvalidClaim));
        assert_eq!(caller_hint(&c, m.caller_claims()), None);
        assert_eq!(m.caller(&claims(json!({}))), Ok(None));
    }

    #[test]
    fn scopes_as_strings_or_arrays() {
        let m = ClaimMapping::new(vec!["cid".into()], vec!["scp".into(), "roles".into()]);
        let c = claims(json!({"scp": ["a", "b", "a"], "roles": ["r"]}));
        assert_eq!(m.scopes(&c, 8), Ok(vec!["a".to_owned(), "b".to_owned()]));
        let c = claims(json!({"roles": "x  y"}));
        assert_eq!(m.scopes(&c, 8), Ok(vec!["x".to_owned(), "y".to_owned()]));
        for bad in [
            json!({"scp": ["a b"]}),
            json!({"scp": [1]}),
            json!({"scp": {}}),
            json!({"scp": "a\tb"}),
        ] {
            assert_eq!(
                m.scopes(&claims(bad.clone()), 8),
                Err(DenyReason::InvalidClaim),
                "{bad}"
            );
        }
        let c = claims(json!({"scp": ["a", "b", "c"]}));
        assert_eq!(m.scopes(&c, 2), Err(DenyReason::TooManyScopes));
        assert_eq!(
            m.scope_count(&claims(json!({"scp": "a b", "roles": ["1", "2", "3"]}))),
            3
        );
        assert_eq!(m.scopes(&claims(json!({"scope": "a"})), 8), Ok(vec![]));
    }
}
