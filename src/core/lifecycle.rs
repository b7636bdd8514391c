//! The issuer allow list over time, and revocation: `review_by` (a reminder to review an
//! entry, warned about at load and once a day), `expires` (after it the issuer is no longer
//! trusted), `revoked_before` per issuer and the policy's `revoked` lists.
//!
//! [`standing`] is a pure check on a verified token's facts and the clock: a cache of
//! verified tokens must re-run it on every hit, so that a revocation or an expiry applied
//! with a configuration update takes effect on tokens it has already seen.

use super::config::Policy;
use super::date::{format_utc_timestamp, UtcDate};
use super::reason::DenyReason;
use super::validate::VerifiedToken;

/// Whether a verified token still stands at `now`: its (original) issuer has not expired,
/// neither it nor the token it was exchanged from is revoked by `jti`, its subject is not
/// revoked, and the original was issued no earlier than its issuer's `revoked_before`.
pub fn standing(policy: &Policy, t: &VerifiedToken<'_>, now: u64) -> Result<(), DenyReason> {
    if t.issuer.expired(now) {
        return Err(DenyReason::IssuerExpired);
    }
    let revoked = &policy.revoked;
    if t.jti.as_ref().is_some_and(|j| revoked.jti.contains(j))
        || revoked.jti.contains(&t.origin.token_id)
    {
        return Err(DenyReason::TokenRevoked);
    }
    if revoked.sub.contains(&t.subject) {
        return Err(DenyReason::SubjectRevoked);
    }
    if let Some(before) = t.issuer.revoked_before {
        // Without an `iat` nothing shows the token came after the revocation.
        if t.origin.issued_at.is_none_or(|iat| iat < before) {
            return Err(DenyReason::IssuedBeforeRevocation);
        }
    }
    Ok(())
}

/// What an operator should be told about the allow list at `now`: one line per issuer whose
/// review is overdue or whose trust has ended.
pub fn notices(policy: &Policy, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    for t in &policy.trusted_issuers {
        if let Some(expires) = t.expires.filter(|_| t.expired(now)) {
            out.push(format!(
                "trusted issuer {:?} expired after {expires}: its tokens are refused (issuer_expired); remove or renew the entry",
                t.issuer
            ));
        } else if let Some(review_by) = t.review_by.filter(|_| t.review_overdue(now)) {
            out.push(format!(
                "trusted issuer {:?} is overdue for review (review_by {review_by}, now {}): review the entry and set a new review_by",
                t.issuer,
                format_utc_timestamp(now)
            ));
        }
    }
    out
}

/// Whether any trusted issuer has a `review_by` or `expires` date (and so needs reminders).
pub fn has_dates(policy: &Policy) -> bool {
    policy
        .trusted_issuers
        .iter()
        .any(|t| t.review_by.is_some() || t.expires.is_some())
}

/// Repeats [`notices`] at most once per UTC day (the root calls it on load and on every
/// tick).
#[derive(Debug, Default)]
pub struct ReviewReminder {
    last_day: Option<UtcDate>,
}

impl ReviewReminder {
    /// The notices to log now: all of them on the first call of a UTC day, none otherwise.
    pub fn due(&mut self, policy: &Policy, now: u64) -> Vec<String> {
        let today = UtcDate::of(now);
        if self.last_day == Some(today) {
            return Vec::new();
        }
        self.last_day = Some(today);
        notices(policy, now)
    }
}
