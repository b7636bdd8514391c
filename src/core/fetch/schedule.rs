//! The fetch schedule of one issuer: a state machine over [`FetchState`], driven by a clock.
//!
//! The state is shared by every worker VM (the glue keeps it in shared data and updates it
//! with compare-and-swap), so that one fetch serves them all:
//!
//! - a **lease** elects the worker that fetches; it expires (twice the timeout and a
//!   second), so a worker that dies mid-fetch does not block the others;
//! - **refresh**: a fetch is due `jwks_refresh_seconds` after the last success;
//! - **back-off** after a failure: 1 s, 2 s, 4 s, … capped at the refresh interval, with
//!   jitter drawn from an [`Entropy`] argument, so a fleet does not retry in step;
//! - **staleness**: keys are used for `jwks_max_stale_seconds` after the last success
//!   (checked where keys are selected, `keyset`); the health goes to `Unavailable` then;
//! - **unknown `kid`**: a request may cause a fetch at most once per
//!   `jwks_min_refetch_seconds` (since the last attempt of any kind), never during back-off,
//!   so a caller spraying random `kid`s cannot cause a fetch storm;
//! - **discovery** first, when configured and no `jwks_uri` is known (again after a failure);
//! - **recovery**: the first success after failures resets everything.
//!
//! Health changes are returned as values, so the worker whose write made the change logs it
//! once (never per request). All times are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

use super::{FetchFailure, FetchRequest};
use crate::core::config::{JwksLocation, KeySource};
use crate::core::entropy::Entropy;
use crate::core::url::HttpUrl;

/// First back-off delay.
const BACKOFF_BASE_MS: u64 = 1_000;
/// Slack added to a lease beyond the calls' deadlines.
const LEASE_SLACK_MS: u64 = 1_000;

/// One issuer's schedule state, as shared between workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchState {
    /// Version of the stored key set; 0 until the first success.
    pub version: u64,
    /// When the stored set was last fetched successfully.
    pub fetched_at_ms: u64,
    /// When the next scheduled attempt is due (refresh, or retry after back-off).
    pub due_ms: u64,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// When the last attempt started (the unknown-`kid` rate limit counts from here).
    pub attempted_ms: u64,
    /// The attempt in flight, if any.
    pub lease: Option<Lease>,
    /// The key set's URL found by discovery (cleared after a failure: rediscover).
    pub jwks_uri: Option<String>,
    /// The last health, so each change is logged once.
    pub health: Health,
}

/// Which worker is fetching, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The worker's random id.
    pub holder: u64,
    /// When the lease ends even if the holder never reports.
    pub until_ms: u64,
}

/// How an issuer's fetched keys are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "snake_case", deny_unknown_fields)]
pub enum Health {
    /// Never fetched yet.
    #[default]
    Pending,
    /// The last attempt succeeded.
    Ok,
    /// Attempts fail; the last good keys are still used.
    Failing {
        /// [`FetchFailure::kind`] of the last failure.
        kind: String,
        /// Its description.
        cause: String,
    },
    /// No usable keys: never fetched, or stale beyond `jwks_max_stale_seconds`.
    Unavailable {
        /// [`FetchFailure::kind`] of the last failure (or `stale`).
        kind: String,
        /// Its description.
        cause: String,
    },
}

impl Health {
    /// Same state and same kind of cause: not worth another log line.
    fn same(&self, other: &Health) -> bool {
        match (self, other) {
            (Health::Pending, Health::Pending) | (Health::Ok, Health::Ok) => true,
            (Health::Failing { kind: a, .. }, Health::Failing { kind: b, .. })
            | (Health::Unavailable { kind: a, .. }, Health::Unavailable { kind: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// A change of health, to be logged once by the worker that recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// Before.
    pub from: Health,
    /// After.
    pub to: Health,
}

impl HealthChange {
    /// Whether it is a warning (a failure) rather than news (a success).
    pub fn is_warning(&self) -> bool {
        matches!(self.to, Health::Failing { .. } | Health::Unavailable { .. })
    }

    /// The log line for issuer `issuer`.
    pub fn message(&self, issuer: &str) -> String {
        match (&self.from, &self.to) {
            (Health::Pending, Health::Ok) => {
                format!("keys of issuer {issuer:?} fetched")
            }
            (_, Health::Ok) => format!("keys of issuer {issuer:?} recovered: fetched again"),
            (_, Health::Failing { cause, .. }) => format!(
                "fetching keys of issuer {issuer:?} failed ({cause}); the last keys fetched stay in use until jwks_max_stale_seconds"
            ),
            (_, Health::Unavailable { cause, .. }) => format!(
                "keys of issuer {issuer:?} unavailable ({cause}): its tokens are refused (issuer_keys_unavailable, 503) until a fetch succeeds"
            ),
            (_, Health::Pending) => format!("keys of issuer {issuer:?} not fetched yet"),
        }
    }
}

/// What caused a look at the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A timer: fetch if the refresh (or a retry) is due.
    Scheduled,
    /// A request's token names a `kid` the current keys lack.
    UnknownKid,
    /// A request needs keys and there are none (never fetched, or stale).
    NoKeys,
}

/// The next call of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The OIDC discovery document.
    Discovery,
    /// The key set.
    Jwks,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is due.
    Idle,
    /// An attempt is in flight (this worker's or another's): wait for it, at most until then.
    InFlight {
        /// When its lease ends.
        until_ms: u64,
    },
    /// Not allowed now (rate limit or back-off): decide with the keys at hand.
    Refused,
    /// Start an attempt: record `state` (it holds this worker's lease), then make `step`.
    Claim {
        /// The state to write.
        state: FetchState,
        /// The first call.
        step: Step,
    },
}

/// The result of a step: the state to record, the next call if any, the health change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The state to write.
    pub state: FetchState,
    /// The next call of this attempt, if there is one.
    pub next: Option<Step>,
    /// A change of health to log.
    pub change: Option<HealthChange>,
}

/// One issuer's schedule bounds, in milliseconds (from its [`KeySource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Between successful fetches.
    pub refresh_ms: u64,
    /// How long the last good keys are used.
    pub max_stale_ms: u64,
    /// One call's deadline.
    pub timeout_ms: u64,
    /// Least time between attempts an unknown `kid` may cause.
    pub min_refetch_ms: u64,
    /// Discovery first.
    pub discovery: bool,
}

impl Schedule {
    /// The schedule of `source`.
    pub fn new(source: &KeySource) -> Schedule {
        Schedule {
            refresh_ms: source.refresh_seconds.saturating_mul(1000),
            max_stale_ms: source.max_stale_seconds.saturating_mul(1000),
            timeout_ms: source.timeout_ms,
            min_refetch_ms: source.min_refetch_seconds.saturating_mul(1000),
            discovery: matches!(source.location, JwksLocation::Discovery(_)),
        }
    }

    /// What worker `me` should do about `trigger` at `now`.
    pub fn plan(&self, state: &FetchState, trigger: Trigger, now: u64, me: u64) -> Plan {
        if let Some(lease) = state.lease {
            if now < lease.until_ms {
                return Plan::InFlight {
                    until_ms: lease.until_ms,
                };
            }
        }
        let due = now >= state.due_ms;
        let allowed = match trigger {
            Trigger::Scheduled if !due => return Plan::Idle,
            Trigger::Scheduled | Trigger::NoKeys => due,
            // Never during back-off, and at most once per min_refetch.
            Trigger::UnknownKid => {
                (state.failures == 0 || due)
                    && now >= state.attempted_ms.saturating_add(self.min_refetch_ms)
            }
        };
        if !allowed {
            return Plan::Refused;
        }
        let mut next = state.clone();
        next.attempted_ms = now;
        next.lease = Some(Lease {
            holder: me,
            until_ms: now.saturating_add(self.lease_ms()),
        });
        let step = if self.discovery && state.jwks_uri.is_none() {
            Step::Discovery
        } else {
            Step::Jwks
        };
        Plan::Claim { state: next, step }
    }

    /// The discovery step of `me`'s attempt ended: `Ok(jwks_uri)` or why not. `None` when
    /// the attempt is no longer `me`'s (its lease ended; another worker took over).
    pub fn discovered(
        &self,
        state: &FetchState,
        now: u64,
        me: u64,
        result: Result<String, FetchFailure>,
        entropy: &mut dyn Entropy,
    ) -> Option<Attempt> {
        self.holds(state, me)?;
        match result {
            Ok(uri) => {
                let mut next = state.clone();
                next.jwks_uri = Some(uri);
                next.lease = Some(Lease {
                    holder: me,
                    until_ms: now
                        .saturating_add(self.timeout_ms)
                        .saturating_add(LEASE_SLACK_MS),
                });
                Some(Attempt {
                    state: next,
                    next: Some(Step::Jwks),
                    change: None,
                })
            }
            Err(failure) => Some(self.failed(state, now, &failure, entropy)),
        }
    }

    /// The key set step of `me`'s attempt ended: `Ok(changed)` (the set differs from the
    /// stored one, which the caller then stores under the new version) or why not. `None`
    /// when the attempt is no longer `me`'s.
    pub fn fetched(
        &self,
        state: &FetchState,
        now: u64,
        me: u64,
        result: Result<bool, FetchFailure>,
        entropy: &mut dyn Entropy,
    ) -> Option<Attempt> {
        self.holds(state, me)?;
        let changed = match result {
            Ok(changed) => changed,
            Err(failure) => return Some(self.failed(state, now, &failure, entropy)),
        };
        let mut next = state.clone();
        if changed || next.version == 0 {
            next.version = next.version.saturating_add(1);
        }
        next.fetched_at_ms = now;
        next.due_ms = now.saturating_add(self.refresh_ms);
        next.failures = 0;
        next.lease = None;
        next.health = Health::Ok;
        let change = transition(state, &next);
        Some(Attempt {
            state: next,
            next: None,
            change,
        })
    }

    /// `me`'s attempt ended without an answer worth judging (the request context that made
    /// the call went away, so the host cancelled it): release the lease, count nothing.
    pub fn abandoned(&self, state: &FetchState, me: u64) -> Option<FetchState> {
        self.holds(state, me)?;
        let mut next = state.clone();
        next.lease = None;
        Some(next)
    }

    /// The health at `now` when it changed without an attempt (the last keys went stale):
    /// the state to record and the change to log.
    pub fn observe(&self, state: &FetchState, now: u64) -> Option<(FetchState, HealthChange)> {
        let stale = state.version > 0 && !self.fresh(state, now);
        if !stale || matches!(state.health, Health::Unavailable { .. } | Health::Pending) {
            return None;
        }
        // The kind stays the failure's: the same failure next time is no news.
        let (kind, cause) = match &state.health {
            Health::Failing { kind, cause } => {
                (kind.clone(), format!("last fetch failed: {cause}"))
            }
            _ => ("stale".to_owned(), "no fetch since".to_owned()),
        };
        let mut next = state.clone();
        next.health = Health::Unavailable {
            kind,
            cause: format!("keys older than jwks_max_stale_seconds; {cause}"),
        };
        let change = transition(state, &next)?;
        Some((next, change))
    }

    /// Whether the stored keys are still usable at `now`.
    pub fn fresh(&self, state: &FetchState, now: u64) -> bool {
        state.version > 0 && now < state.fetched_at_ms.saturating_add(self.max_stale_ms)
    }

    /// The call for `step`: the discovery document, or the key set at the configured or
    /// discovered URL.
    pub fn request(
        &self,
        step: Step,
        source: &KeySource,
        state: &FetchState,
    ) -> Result<FetchRequest, FetchFailure> {
        let (url, accept) = match (step, &source.location) {
            (Step::Discovery, JwksLocation::Discovery(url)) => (url.clone(), "application/json"),
            (Step::Jwks, JwksLocation::Uri(url)) => (url.clone(), JWKS_ACCEPT),
            (Step::Jwks, JwksLocation::Discovery(_)) => {
                let uri = state
                    .jwks_uri
                    .as_deref()
                    .ok_or_else(|| FetchFailure::Invalid("no jwks_uri discovered".into()))?;
                let url = HttpUrl::parse(uri)
                    .map_err(|why| FetchFailure::Invalid(format!("discovered jwks_uri {why}")))?;
                (url, JWKS_ACCEPT)
            }
            (Step::Discovery, JwksLocation::Uri(_)) => {
                return Err(FetchFailure::Invalid("discovery is not configured".into()))
            }
        };
        Ok(FetchRequest {
            upstream: source.upstream.clone(),
            authority: url.authority.clone(),
            path: url.path.clone(),
            scheme: url.scheme(),
            accept,
            timeout_ms: self.timeout_ms,
            max_bytes: source.max_bytes,
        })
    }

    fn holds(&self, state: &FetchState, me: u64) -> Option<()> {
        (state.lease.map(|l| l.holder) == Some(me)).then_some(())
    }

    fn lease_ms(&self) -> u64 {
        let calls = if self.discovery { 2 } else { 1 };
        self.timeout_ms
            .saturating_mul(calls)
            .saturating_add(LEASE_SLACK_MS)
    }

    fn failed(
        &self,
        state: &FetchState,
        now: u64,
        failure: &FetchFailure,
        entropy: &mut dyn Entropy,
    ) -> Attempt {
        let mut next = state.clone();
        next.failures = next.failures.saturating_add(1);
        next.due_ms = now.saturating_add(self.backoff(next.failures, entropy));
        next.lease = None;
        // The endpoint may have moved: find it again next time.
        if self.discovery {
            next.jwks_uri = None;
        }
        let (kind, cause) = (failure.kind(), failure.to_string());
        next.health = if self.fresh(state, now) {
            Health::Failing { kind, cause }
        } else {
            Health::Unavailable { kind, cause }
        };
        let change = transition(state, &next);
        Attempt {
            state: next,
            next: None,
            change,
        }
    }

    /// The wait before retry number `failures`: `BACKOFF_BASE_MS · 2^(failures-1)`, capped at
    /// the refresh interval, then "equal jitter": half of it fixed, half drawn at random.
    pub fn backoff(&self, failures: u32, entropy: &mut dyn Entropy) -> u64 {
        let exp = failures.saturating_sub(1).min(32);
        let delay = BACKOFF_BASE_MS
            .saturating_mul(1u64 << exp)
            .min(self.refresh_ms.max(BACKOFF_BASE_MS));
        let half = delay / 2;
        let mut r = [0u8; 8];
        match entropy.fill(&mut r) {
            Ok(()) => half + u64::from_le_bytes(r) % (delay - half + 1),
            // Without randomness, the full delay: later rather than in step.
            Err(_) => delay,
        }
    }
}

/// `accept` of a key set request (RFC 7517 §8.5.1, then plain JSON).
const JWKS_ACCEPT: &str = "application/jwk-set+json, application/json";

fn transition(before: &FetchState, after: &FetchState) -> Option<HealthChange> {
    (!before.health.same(&after.health)).then(|| HealthChange {
        from: before.health.clone(),
        to: after.health.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entropy::EntropyError;

    const S: u64 = 1000;
    const T0: u64 = 1_767_225_600_000;

    /// Deterministic "randomness": a fixed byte.
    struct Fixed(u8);
    impl Entropy for Fixed {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
            buf.fill(self.0);
            Ok(())
        }
    }
    struct NoEntropy;
    impl Entropy for NoEntropy {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
            Err(EntropyError)
        }
    }

    fn schedule(discovery: bool) -> Schedule {
        Schedule {
            refresh_ms: 300 * S,
            max_stale_ms: 3600 * S,
            timeout_ms: 2 * S,
            min_refetch_ms: 30 * S,
            discovery,
        }
    }

    fn claim(s: &Schedule, state: &FetchState, trigger: Trigger, now: u64, me: u64) -> FetchState {
        match s.plan(state, trigger, now, me) {
            Plan::Claim { state, .. } => state,
            other => panic!("expected a claim at {now}, got {other:?}"),
        }
    }

    fn succeed(s: &Schedule, state: &FetchState, now: u64, me: u64, changed: bool) -> Attempt {
        s.fetched(state, now, me, Ok(changed), &mut Fixed(0))
            .unwrap()
    }

    fn fail(s: &Schedule, state: &FetchState, now: u64, me: u64, why: FetchFailure) -> Attempt {
        s.fetched(state, now, me, Err(why), &mut Fixed(0)).unwrap()
    }

    #[test]
    fn fetches_at_start_then_every_refresh() {
        let s = schedule(false);
        let start = FetchState::default();
        let claimed = claim(&s, &start, Trigger::Scheduled, T0, 1);
        assert_eq!(
            claimed.lease,
            Some(Lease {
                holder: 1,
                until_ms: T0 + 3 * S
            })
        );
        // Another worker sees the lease and waits; so does the holder.
        assert_eq!(
            s.plan(&claimed, Trigger::Scheduled, T0 + S, 2),
            Plan::InFlight {
                until_ms: T0 + 3 * S
            }
        );
        let done = succeed(&s, &claimed, T0 + 100, 1, true);
        assert_eq!(done.state.version, 1);
        assert_eq!(done.state.fetched_at_ms, T0 + 100);
        assert_eq!(done.state.lease, None);
        assert_eq!(done.change.as_ref().map(|c| c.to.clone()), Some(Health::Ok));
        assert!(!done.change.unwrap().is_warning());
        // Nothing until the refresh is due.
        assert_eq!(
            s.plan(&done.state, Trigger::Scheduled, T0 + 299 * S, 2),
            Plan::Idle
        );
        let again = claim(&s, &done.state, Trigger::Scheduled, T0 + 100 + 300 * S, 2);
        // The same content again: same version (no worker re-parses), newer fetched_at, and
        // nothing to log.
        let same = succeed(&s, &again, T0 + 301 * S, 2, false);
        assert_eq!(same.state.version, 1);
        assert_eq!(same.state.fetched_at_ms, T0 + 301 * S);
        assert_eq!(same.change, None);
        let rotated = succeed(
            &s,
            &claim(&s, &same.state, Trigger::Scheduled, T0 + 602 * S, 1),
            T0 + 602 * S,
            1,
            true,
        );
        assert_eq!(rotated.state.version, 2);
    }

    #[test]
    fn results_of_a_lost_lease_are_ignored() {
        let s = schedule(false);
        let mine = claim(&s, &FetchState::default(), Trigger::Scheduled, T0, 1);
        // The lease ran out; worker 2 took over.
        let theirs = claim(&s, &mine, Trigger::Scheduled, T0 + 3 * S, 2);
        assert_eq!(
            s.fetched(&theirs, T0 + 4 * S, 1, Ok(true), &mut Fixed(0)),
            None
        );
        assert_eq!(s.abandoned(&theirs, 1), None);
        assert_eq!(s.abandoned(&theirs, 2).unwrap().lease, None);
    }

    #[test]
    fn backs_off_exponentially_with_jitter_capped_at_refresh() {
        let s = schedule(false);
        // Jitter: the upper half is drawn; 0x00 draws its bottom, 0xff somewhere inside.
        assert_eq!(s.backoff(1, &mut Fixed(0)), 500);
        assert_eq!(s.backoff(2, &mut Fixed(0)), 1000);
        assert_eq!(s.backoff(4, &mut Fixed(0)), 4000);
        for failures in 1..40 {
            let d = s.backoff(failures, &mut Fixed(0xff));
            let full = (1000u64 << (failures - 1).min(32)).min(300 * S);
            assert!(d >= full / 2 && d <= full, "{failures}: {d} vs {full}");
        }
        assert_eq!(
            s.backoff(30, &mut Fixed(0)),
            150 * S,
            "capped at the refresh interval"
        );
        assert_eq!(
            s.backoff(3, &mut NoEntropy),
            4000,
            "no randomness: the full delay"
        );
        // Different draws spread retries.
        assert_ne!(s.backoff(5, &mut Fixed(1)), s.backoff(5, &mut Fixed(7)));
    }

    #[test]
    fn failures_keep_the_last_keys_until_stale_then_recover() {
        let s = schedule(false);
        let ok = succeed(
            &s,
            &claim(&s, &FetchState::default(), Trigger::Scheduled, T0, 1),
            T0,
            1,
            true,
        )
        .state;
        let now = T0 + 300 * S;
        let down = fail(
            &s,
            &claim(&s, &ok, Trigger::Scheduled, now, 1),
            now + 10,
            1,
            FetchFailure::Status(503),
        );
        assert_eq!(down.state.failures, 1);
        assert_eq!(down.state.due_ms, now + 10 + 500);
        assert!(matches!(&down.state.health, Health::Failing { kind, .. } if kind == "http_503"));
        let change = down.change.clone().unwrap();
        assert!(change.is_warning());
        assert!(
            change.message("https://idp").contains("HTTP 503"),
            "{}",
            change.message("https://idp")
        );
        assert!(s.fresh(&down.state, now + 10));
        // The same failure again: logged once only.
        let t = down.state.due_ms;
        let again = fail(
            &s,
            &claim(&s, &down.state, Trigger::Scheduled, t, 2),
            t,
            2,
            FetchFailure::Status(503),
        );
        assert_eq!(again.change, None);
        assert_eq!(again.state.failures, 2);
        assert_eq!(again.state.due_ms, t + 1000);
        // Another kind of failure: one more line.
        let t = again.state.due_ms;
        let other = fail(
            &s,
            &claim(&s, &again.state, Trigger::Scheduled, t, 1),
            t,
            1,
            FetchFailure::TimedOut,
        );
        assert!(other.change.is_some());
        // Past max_stale: the tick notices once.
        let stale_at = T0 + 3600 * S;
        assert_eq!(s.observe(&other.state, stale_at - 1), None);
        let (unavailable, change) = s.observe(&other.state, stale_at).unwrap();
        assert!(
            change.message("i").contains("issuer_keys_unavailable"),
            "{}",
            change.message("i")
        );
        assert!(!s.fresh(&unavailable, stale_at));
        assert_eq!(s.observe(&unavailable, stale_at + S), None, "logged once");
        // The same failure afterwards is no news either.
        let t = stale_at + 2 * S;
        let same = fail(
            &s,
            &claim(&s, &unavailable, Trigger::Scheduled, t, 1),
            t,
            1,
            FetchFailure::TimedOut,
        );
        assert_eq!(same.change, None);
        assert!(matches!(same.state.health, Health::Unavailable { .. }));
        // Recovery: everything reset, logged as news.
        let t = stale_at + 10 * S;
        let back = succeed(
            &s,
            &claim(&s, &unavailable, Trigger::Scheduled, t, 2),
            t,
            2,
            false,
        );
        assert_eq!(back.state.failures, 0);
        assert_eq!(back.state.health, Health::Ok);
        assert_eq!(back.state.due_ms, t + 300 * S);
        assert!(s.fresh(&back.state, t));
        let change = back.change.unwrap();
        assert!(!change.is_warning() && change.message("i").contains("recovered"));
    }

    #[test]
    fn never_fetched_is_unavailable_from_the_first_failure() {
        let s = schedule(false);
        let first = claim(&s, &FetchState::default(), Trigger::Scheduled, T0, 1);
        let down = fail(
            &s,
            &first,
            T0 + 5,
            1,
            FetchFailure::NoResponse(Some("timeout".into())),
        );
        assert!(matches!(down.state.health, Health::Unavailable { .. }));
        assert!(!s.fresh(&down.state, T0 + 5));
        // A request needing keys waits for the retry only once it is due.
        assert_eq!(
            s.plan(&down.state, Trigger::NoKeys, T0 + 10, 2),
            Plan::Refused
        );
        claim(&s, &down.state, Trigger::NoKeys, down.state.due_ms, 2);
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_interval() {
        let s = schedule(false);
        let ok = succeed(
            &s,
            &claim(&s, &FetchState::default(), Trigger::Scheduled, T0, 1),
            T0 + 50,
            1,
            true,
        )
        .state;
        // Within min_refetch of the last attempt (the start fetch): refused at once.
        assert_eq!(
            s.plan(&ok, Trigger::UnknownKid, T0 + 29 * S, 1),
            Plan::Refused
        );
        let mut state = ok;
        let mut fetches = 0;
        // A caller spraying random kids for ten minutes, one request every 100 ms.
        let mut t = T0 + 29 * S;
        while t < T0 + 629 * S {
            match s.plan(&state, Trigger::UnknownKid, t, 1) {
                Plan::Claim { state: claimed, .. } => {
                    fetches += 1;
                    state = succeed(&s, &claimed, t + 20, 1, false).state;
                }
                Plan::Refused | Plan::InFlight { .. } => {}
                Plan::Idle => panic!("an unknown kid is never idle"),
            }
            t += 100;
        }
        assert_eq!(fetches, 20, "one refetch per 30 s over 600 s");
        // While a fetch is in flight, requests wait for it instead.
        let claimed = claim(&s, &state, Trigger::UnknownKid, t + 30 * S, 2);
        assert!(matches!(
            s.plan(&claimed, Trigger::UnknownKid, t + 30 * S, 1),
            Plan::InFlight { .. }
        ));
        // Never during back-off.
        let down = fail(&s, &claimed, t + 31 * S, 2, FetchFailure::Status(500));
        assert_eq!(
            s.plan(&down.state, Trigger::UnknownKid, t + 31 * S + 400, 1),
            Plan::Refused
        );
    }

    #[test]
    fn discovery_comes_first_and_again_after_a_failure() {
        let s = schedule(true);
        let claimed = claim(&s, &FetchState::default(), Trigger::Scheduled, T0, 1);
        assert_eq!(
            claimed.lease.unwrap().until_ms,
            T0 + 5 * S,
            "two calls and slack"
        );
        assert!(matches!(
            s.plan(&FetchState::default(), Trigger::Scheduled, T0, 1),
            Plan::Claim {
                step: Step::Discovery,
                ..
            }
        ));
        let found = s
            .discovered(
                &claimed,
                T0 + 10,
                1,
                Ok("https://idp/keys".into()),
                &mut Fixed(0),
            )
            .unwrap();
        assert_eq!(found.next, Some(Step::Jwks));
        assert_eq!(found.state.lease.unwrap().until_ms, T0 + 10 + 3 * S);
        let ok = succeed(&s, &found.state, T0 + 20, 1, true).state;
        // The next refresh goes straight to the key set.
        assert!(matches!(
            s.plan(&ok, Trigger::Scheduled, ok.due_ms, 1),
            Plan::Claim {
                step: Step::Jwks,
                ..
            }
        ));
        let retry = claim(&s, &ok, Trigger::Scheduled, ok.due_ms, 1);
        let down = fail(&s, &retry, ok.due_ms + 1, 1, FetchFailure::Status(404));
        assert_eq!(down.state.jwks_uri, None);
        assert!(matches!(
            s.plan(&down.state, Trigger::Scheduled, down.state.due_ms, 1),
            Plan::Claim {
                step: Step::Discovery,
                ..
            }
        ));
        // A failed discovery is a failure like any other.
        let d = claim(&s, &down.state, Trigger::Scheduled, down.state.due_ms, 1);
        let failed = s
            .discovered(
                &d,
                down.state.due_ms,
                1,
                Err(FetchFailure::IssuerMismatch),
                &mut Fixed(0),
            )
            .unwrap();
        assert_eq!(failed.state.failures, 2);
        assert_eq!(failed.next, None);
    }

    #[test]
    fn requests_carry_method_path_authority_and_scheme() {
        let source = KeySource {
            location: JwksLocation::Discovery(
                HttpUrl::parse("https://idp.test/realm/.well-known/openid-configuration").unwrap(),
            ),
            upstream: "idp_cluster".into(),
            refresh_seconds: 300,
            max_stale_seconds: 3600,
            timeout_ms: 1500,
            max_bytes: 4096,
            min_refetch_seconds: 30,
        };
        let s = Schedule::new(&source);
        assert!(s.discovery);
        let mut state = FetchState::default();
        let r = s.request(Step::Discovery, &source, &state).unwrap();
        assert_eq!(r.upstream, "idp_cluster");
        assert_eq!(r.path, "/realm/.well-known/openid-configuration");
        assert_eq!(r.timeout_ms, 1500);
        let h = r.headers();
        for name in [":method", ":path", ":authority", ":scheme"] {
            assert!(h.iter().any(|(n, _)| *n == name), "{name}");
        }
        assert!(h.contains(&(":authority", "idp.test")) && h.contains(&(":scheme", "https")));
        assert!(s.request(Step::Jwks, &source, &state).is_err());
        state.jwks_uri = Some("http://keys.idp.test:8080/certs?v=2".into());
        let r = s.request(Step::Jwks, &source, &state).unwrap();
        assert_eq!(
            (r.authority.as_str(), r.path.as_str(), r.scheme),
            ("keys.idp.test:8080", "/certs?v=2", "http")
        );
        state.jwks_uri = Some("ftp://x".into());
        assert!(s.request(Step::Jwks, &source, &state).is_err());
    }

    #[test]
    fn the_shared_state_round_trips_and_refuses_strangers() {
        let s = schedule(true);
        let mut state = claim(&s, &FetchState::default(), Trigger::Scheduled, T0, u64::MAX);
        state.health = Health::Failing {
            kind: "timeout".into(),
            cause: "c".into(),
        };
        state.jwks_uri = Some("https://x/\"quoted\"".into());
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<FetchState>(&text).unwrap(), state);
        assert!(serde_json::from_str::<FetchState>(r#"{"version":1,"extra":2}"#).is_err());
        assert!(serde_json::from_str::<FetchState>("null").is_err());
    }
}
