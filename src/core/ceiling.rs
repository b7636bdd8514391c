//! Partner ceilings: what a trusted issuer's tokens can ever be exchanged into, whatever a
//! rule grants. A partner controls which scopes its tokens carry; `max_scopes` and
//! `allowed_audiences` keep an exchanged partner token from becoming a blanket proxy for
//! the partner's original authority. The ceilings of the original token's issuer also bound
//! every later hop of a chained exchange.

use super::config::{ExchangeRule, TrustedIssuer};
use super::reason::DenyReason;
use super::validate::VerifiedToken;

/// The scopes a minted token gets, and what the ceiling took away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Rule grant ∩ token scopes ∩ the issuer's `max_scopes`, in the rule's order.
    pub scopes: Vec<String>,
    /// Rule grant ∩ token scopes outside the issuer's `max_scopes` (audited).
    pub removed: Vec<String>,
}

/// Whether the issuer's ceiling allows `scope`.
fn within(issuer: &TrustedIssuer, scope: &str) -> bool {
    issuer
        .max_scopes
        .as_ref()
        .is_none_or(|ceiling| ceiling.iter().any(|c| c == scope))
}

/// The rule's audience must be one the issuer's tokens may be exchanged for.
pub fn check_audience(issuer: &TrustedIssuer, rule: &ExchangeRule) -> Result<(), DenyReason> {
    match &issuer.allowed_audiences {
        Some(allowed) if !allowed.contains(&rule.mint.audience) => {
            Err(DenyReason::IssuerAudienceNotAllowed)
        }
        _ => Ok(()),
    }
}

/// A scope the rule requires counts only within the issuer's ceiling: a partner cannot
/// satisfy a requirement with a scope it may not grant.
pub fn check_required_scopes(
    issuer: &TrustedIssuer,
    required: &[String],
) -> Result<(), DenyReason> {
    if required.iter().all(|s| within(issuer, s)) {
        Ok(())
    } else {
        Err(DenyReason::IssuerScopeCeiling)
    }
}

/// The minted scopes: the rule's grant ∩ the token's ∩ the ceiling.
pub fn granted_scopes(rule: &ExchangeRule, t: &VerifiedToken<'_>) -> Grant {
    let (scopes, removed) = rule
        .mint
        .scopes
        .iter()
        .filter(|s| t.scopes.contains(s))
        .cloned()
        .partition(|s| within(t.issuer, s));
    Grant { scopes, removed }
}

impl Grant {
    /// Something must be left to mint: nothing in the grant and the token is
    /// `no_grantable_scope`; nothing left by the ceiling alone is `issuer_scope_ceiling`.
    pub fn check(&self) -> Result<(), DenyReason> {
        match (self.scopes.is_empty(), self.removed.is_empty()) {
            (false, _) => Ok(()),
            (true, true) => Err(DenyReason::NoGrantableScope),
            (true, false) => Err(DenyReason::IssuerScopeCeiling),
        }
    }
}
