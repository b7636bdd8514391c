//! The root context: loads the policy from the plugin configuration, adopts generated
//! signing keys, keeps the fetched issuer keys current on every tick, holds this VM's
//! verified-and-minted cache, and reminds the operator of overdue allow-list reviews and
//! expired issuers (at load, then once a day).

use std::rc::Rc;
use std::time::Duration;

use super::abi::{self, Buffer, Level};
use super::env::{now, now_ms, HostEntropy};
use super::fetch::{KeyFetcher, Wait, WaitPlan};
use super::generated;
use super::introspect::{IntrospectPlan, Introspector};
use super::metrics::{self, Counter};
use crate::core::introspect::{IntrospectionNeed, IntrospectionResult, TokenDigest};
use crate::core::keyset::KeySnapshot;
use crate::core::lifecycle;
use crate::core::{Decision, Entropy, ExchangeCache, HttpRequest, Policy, ReviewReminder};

/// How often the root looks at the fetch schedule (and at requests waiting for keys).
const FETCH_TICK_MS: u32 = 500;
/// How often a root without key sources looks at its reminders (logged at most once per UTC
/// day).
const REMINDER_TICK_MS: u32 = 60_000;

/// Holds the policy in force and the keys. A refused update leaves the previous policy in
/// place.
pub struct ExchangeRoot {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    keys: KeyFetcher,
    /// This VM's verified-and-minted cache: a new, empty one with every policy loaded (and
    /// `Policy::decide_cached` empties it for a request decided under another policy).
    cache: ExchangeCache,
    introspector: Introspector,
    reminder: ReviewReminder,
    /// The tick period the host accepted, if any (APISIX gives none: requests then drive
    /// refreshes).
    tick_ms: Option<u32>,
}

impl ExchangeRoot {
    /// The root context `context_id`.
    pub fn new(context_id: u32) -> ExchangeRoot {
        let mut id = [0u8; 8];
        // A fixed id only makes this VM's lease indistinguishable from another's that also
        // lacks randomness; the lease still expires.
        let _ = HostEntropy.fill(&mut id);
        ExchangeRoot {
            context_id,
            policy: None,
            keys: KeyFetcher::new(u64::from_le_bytes(id)),
            cache: ExchangeCache::new(Default::default()),
            introspector: Introspector::default(),
            reminder: ReviewReminder::default(),
            tick_ms: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<Rc<Policy>> {
        self.policy.clone()
    }

    /// The keys requests are decided with.
    pub fn keys(&self) -> &KeySnapshot {
        self.keys.snapshot()
    }

    /// Decides `request` under `policy` (the one in force when its stream began) with the
    /// keys in force and this VM's cache.
    pub fn decide(
        &mut self,
        policy: &Policy,
        request: &HttpRequest<'_>,
        own: Option<&(TokenDigest, IntrospectionResult)>,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let introspections = self.introspector.lookup(own, now_ms);
        policy.decide_with(
            request,
            self.keys.snapshot(),
            &introspections,
            now,
            entropy,
            Some(&mut self.cache),
        )
    }

    /// Whether ticks come often enough to drive the fetch schedule.
    fn fetch_ticks(&self) -> bool {
        self.tick_ms.is_some_and(|ms| ms <= FETCH_TICK_MS)
    }

    /// Asks for ticks at least every `ms` (a shorter period than the one in force only).
    fn want_ticks(&mut self, ms: u32) {
        if self.tick_ms.is_none_or(|current| current > ms) && abi::set_tick_period(ms).is_ok() {
            self.tick_ms = Some(ms);
        }
    }

    /// Logs the allow list's reminders, if any are due today.
    fn remind(&mut self) {
        let Some(policy) = &self.policy else { return };
        for notice in self.reminder.due(policy, now().as_secs()) {
            abi::log(Level::Warn, &format!("token-exchange-filter: {notice}"));
        }
    }

    /// `proxy_on_configure`: parse and validate the policy, adopt its generated keys, read
    /// the keys other workers fetched, ask for ticks. Never calls out (Kong's host cannot
    /// from here) and never reads properties (some hosts trap on that here). Metrics are
    /// defined here rather than in `on_vm_start`: after a trap, Kong starts a new instance
    /// with `on_configure` only.
    pub fn on_configure(&mut self) -> bool {
        metrics::define_fixed();
        let bytes = match abi::buffer(Buffer::PluginConfiguration) {
            Ok(Some(b)) => b,
            Ok(None) => {
                abi::log(
                    Level::Error,
                    "token-exchange-filter: configuration refused: no plugin configuration given",
                );
                metrics::increment(Counter::ConfigRejected);
                return false;
            }
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused: cannot read plugin configuration (host status {})", s.0),
                );
                metrics::increment(Counter::HostCallFailed);
                metrics::increment(Counter::ConfigRejected);
                return false;
            }
        };
        let kept = if self.policy.is_some() {
            "; the previous policy stays in force"
        } else {
            ""
        };
        let policy = match Policy::from_json(&bytes) {
            Ok(policy) => policy,
            Err(errors) => {
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused{kept}: {errors}"),
                );
                metrics::increment(Counter::ConfigRejected);
                return false;
            }
        };
        let (store, snapshot) = self.keys.store_and_snapshot();
        if let Err(why) = generated::adopt(&policy, store, snapshot) {
            abi::log(
                Level::Error,
                &format!("token-exchange-filter: configuration refused{kept}: {why}"),
            );
            metrics::increment(Counter::ConfigRejected);
            return false;
        }
        self.keys.configure(&policy);
        self.introspector.configure(&policy);
        // Ticks drive the fetch schedule, the introspection calls' deadlines and the daily
        // reminders. Without any there is nothing to drive and no timer is asked for (a
        // tick left from an earlier policy finds nothing to do).
        if self.keys.has_sources() || self.introspector.has_endpoints() {
            self.want_ticks(FETCH_TICK_MS);
            if !self.fetch_ticks() {
                abi::log(
                    Level::Info,
                    "token-exchange-filter: no timer on this host: requests start key fetches and refreshes",
                );
            }
        } else if lifecycle::has_dates(&policy) {
            self.want_ticks(REMINDER_TICK_MS);
        }
        abi::log(
            Level::Info,
            &format!(
                "token-exchange-filter: policy loaded: issuer {:?}, {} trusted issuer(s), {} rule(s), signing kid {:?}, cache {}",
                policy.issuer,
                policy.trusted_issuers.len(),
                policy.rules.len(),
                policy.active_key().map(|k| k.kid.as_str()).unwrap_or(""),
                if policy.cache.enabled {
                    format!(
                        "on ({} entries, {} bytes, reuse {}/1000 of a minted lifetime)",
                        policy.cache.max_entries,
                        policy.cache.max_bytes,
                        policy.cache.reuse_permille
                    )
                } else {
                    "off".to_owned()
                }
            ),
        );
        for warning in &policy.warnings {
            abi::log(
                Level::Warn,
                &format!("token-exchange-filter: configuration warning: {warning}"),
            );
        }
        let merged = metrics::define_rules(policy.rules.iter().map(|r| &*r.name));
        for rule in merged {
            abi::log(
                Level::Warn,
                &format!("token-exchange-filter: rule {rule:?} shares its metric name with an earlier rule (names keep only letters, digits, '-' and '_'): their counts merge"),
            );
        }
        metrics::increment(Counter::ConfigLoaded);
        // A new policy (perhaps a new signing key, new rules, new revocations) starts with
        // an empty cache: nothing minted under the previous one is reused.
        self.cache = policy.new_cache();
        // A secret digest key per cache, so nobody can aim digest collisions at an entry.
        if self.cache.rekey(&mut HostEntropy).is_err() {
            abi::log(
                Level::Warn,
                "token-exchange-filter: no host randomness for the exchange cache's digest key: it keeps a fixed key (entries are still compared byte for byte)",
            );
        }
        self.policy = Some(Rc::new(policy));
        // A new policy is reminded about at once, whatever was logged today.
        self.reminder = ReviewReminder::default();
        self.remind();
        true
    }

    /// `proxy_on_tick`: the fetch schedule and the reminders.
    pub fn on_tick(&mut self) {
        self.keys.tick(now_ms(), self.context_id);
        self.introspector.expire(now_ms());
        self.remind();
    }

    /// Work a tick would do, on hosts without ticks (before each request).
    pub fn before_request(&mut self, now: u64) {
        if !self.fetch_ticks() {
            self.keys.expire(now);
            self.introspector.expire(now);
        }
    }

    /// Whether `token` is one of this root's calls.
    pub fn owns_call(&self, token: u32) -> bool {
        self.keys.owns_call(token) || self.introspector.owns_call(token)
    }

    /// The answer to call `token`.
    pub fn on_http_call_response(&mut self, token: u32, _num_headers: usize, body_size: usize) {
        if self.introspector.owns_call(token) {
            self.introspector.on_response(token, body_size, now_ms());
        } else {
            self.keys.on_response(token, body_size, now_ms());
        }
    }

    /// Request context `context` went away.
    pub fn forget_calls_of(&mut self, context: u32) {
        self.keys.forget_calls_of(context);
        self.introspector.forget_calls_of(context);
    }

    /// Whether the request of `context`, decided as `decision`, waits for keys.
    pub fn wait_for_keys(&mut self, decision: &Decision, now: u64, context: u32) -> WaitPlan {
        self.keys.wait_for(
            decision.fetched_keys.as_ref(),
            !self.fetch_ticks(),
            now,
            context,
        )
    }

    /// Whether a request's wait for keys is over.
    pub fn wait_is_over(&self, wait: &Wait, now: u64) -> bool {
        self.keys.wait_is_over(wait, now)
    }

    /// Asks about a token for the request of `context` (or joins the call already out).
    pub fn introspect(
        &mut self,
        need: &IntrospectionNeed,
        now: u64,
        context: u32,
    ) -> IntrospectPlan {
        self.introspector.start(need, now, context)
    }

    /// Whether a request waiting for an answer about `digest` can be decided again, and
    /// with which answer (none when its call ended otherwise: it is then refused).
    pub fn introspection_wait(&self, digest: &TokenDigest) -> Option<Option<IntrospectionResult>> {
        if self.introspector.in_flight(digest) {
            return None;
        }
        Some(self.introspector.finished(digest))
    }
}
