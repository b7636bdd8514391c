//! The issuer allow list over time, and revocation: `review_by` (a reminder to review an
//! entry, warned about at load and once a day), `expires` (after it the issuer is no longer
//! trusted), `revoked_before` per issuer and the policy's `revoked` lists.
//!
//! [`standing`] is a pure check on a verified token's facts and the clock: a cache of
//! verified tokens must re-run it on every hit, so that a revocation or an expiry applied
//! with a configuration update takes effect on tokens it has already seen.

use super::config::{Policy, TrustedIssuer};
use super::date::{format_utc_timestamp, UtcDate};
use super::reason::DenyReason;
use super::validate::VerifiedToken;

/// What [`standing`] looks at: a verified token's issuer and provenance. A cached exchange
/// keeps its own copy, so that a hit re-runs the same check.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The (original) trusted issuer.
    pub issuer: &'a TrustedIssuer,
    /// The presented token's raw `jti`.
    pub jti: Option<&'a str>,
    /// Its `sub`.
    pub subject: &'a str,
    /// The id of the token the chain started from (the token itself at the edge).
    pub origin_token_id: &'a str,
    /// That token's `iat`, when it had one.
    pub origin_issued_at: Option<u64>,
}

impl<'a> Provenance<'a> {
    /// The provenance of a verified token.
    pub fn of(t: &'a VerifiedToken<'_>) -> Provenance<'a> {
        Provenance {
            issuer: t.issuer,
            jti: t.jti.as_deref(),
            subject: &t.subject,
            origin_token_id: &t.origin.token_id,
            origin_issued_at: t.origin.issued_at,
        }
    }
}

/// Whether a verified token still stands at `now`: its (original) issuer has not expired,
/// neither it nor the token it was exchanged from is revoked by `jti`, its subject is not
/// revoked, and the original was issued no earlier than its issuer's `revoked_before`.
pub fn standing(policy: &Policy, t: &VerifiedToken<'_>, now: u64) -> Result<(), DenyReason> {
    standing_of(policy, &Provenance::of(t), now)
}

/// [`standing`] on a token's provenance (what a cached exchange re-checks on a hit).
pub fn standing_of(policy: &Policy, t: &Provenance<'_>, now: u64) -> Result<(), DenyReason> {
    if t.issuer.expired(now) {
        return Err(DenyReason::IssuerExpired);
    }
    let revoked = &policy.revoked;
    if t.jti.is_some_and(|j| revoked.jti.contains(j)) || revoked.jti.contains(t.origin_token_id) {
        return Err(DenyReason::TokenRevoked);
    }
    if revoked.sub.contains(t.subject) {
        return Err(DenyReason::SubjectRevoked);
    }
    if let Some(before) = t.issuer.revoked_before {
        // Without an `iat` nothing shows the token came after the revocation.
        if t.origin_issued_at.is_none_or(|iat| iat < before) {
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
