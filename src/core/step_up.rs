//! Step-up authentication (RFC 9470): a rule's `require.acr` and `require.max_age_seconds`
//! are about how the user authenticated, not what the token grants, so failing them answers
//! 401 `insufficient_user_authentication` with `acr_values` and/or `max_age`: the client can
//! send the user back to the authorization server with those parameters instead of giving up.

use super::config::Requirements;
use super::reason::{DenyReason, Refusal};
use super::validate::VerifiedToken;

/// Checks `acr` (one of `require.acr`) and `auth_time` (at most `require.max_age_seconds`
/// ago; a token without `auth_time` fails) at `now`.
pub fn check(req: &Requirements, t: &VerifiedToken<'_>, now: u64) -> Result<(), Refusal> {
    if !req.acr.is_empty() && !t.acr.as_ref().is_some_and(|a| req.acr.contains(a)) {
        return Err(challenge(req, DenyReason::AcrNotSatisfied));
    }
    if !recent_enough(req, t.auth_time, now) {
        return Err(challenge(req, DenyReason::AuthenticationTooOld));
    }
    Ok(())
}

/// Whether an authentication at `auth_time` is recent enough at `now` for
/// `require.max_age_seconds` (always, without one). Time passes: a cached exchange re-checks
/// this on every hit.
pub fn recent_enough(req: &Requirements, auth_time: Option<u64>, now: u64) -> bool {
    match req.max_age_seconds {
        None => true,
        Some(max_age) => auth_time.is_some_and(|at| now.saturating_sub(at) <= max_age),
    }
}

/// The refusal naming everything the rule asks of the authentication, so that one step-up
/// satisfies both conditions.
pub(crate) fn challenge(req: &Requirements, reason: DenyReason) -> Refusal {
    Refusal {
        acr_values: (!req.acr.is_empty()).then(|| req.acr.join(" ")),
        max_age: req.max_age_seconds,
        ..Refusal::from(reason)
    }
}
