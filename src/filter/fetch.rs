//! Outgoing calls for issuers' keys and their answers: the glue around `core::fetch`.
//!
//! Each worker VM keeps a [`KeySnapshot`] (what requests are decided with) and, per issuer
//! with a key source, the shared [`FetchState`] it last read. On every tick (and when a
//! request needs keys) it reads the shared state, re-parses the shared key set only when
//! its version changed, and asks the core schedule what to do; a claim is written with
//! compare-and-swap, so one worker fetches for all. The worker that made a state change
//! logs it; nobody logs per request.
//!
//! Calls carry `:method`, `:path`, `:authority` and `:scheme` from the URL and go to
//! `jwks_upstream` (an Envoy cluster; `host:port` on Kong). They are made only from a
//! tick of the root context or from a paused request's context (Kong's host cannot call
//! out from `on_configure`; Envoy's first main-thread root never gets an answer). Each has
//! its own deadline and size cap, enforced here (Kong applies its timeout per socket
//! operation and delivers any size).

use std::sync::Arc;

use super::abi::{self, Level};
use super::env::HostEntropy;
use super::metrics::{self, Counter};
use super::shared::{SharedStore, PREFIX};
use crate::core::config::{KeySource, Policy};
use crate::core::fetch::{
    parse_discovery, parse_jwks, source_id, Attempt, CallResponse, FetchFailure, FetchState,
    HealthChange, Plan, Schedule, Step, Trigger,
};
use crate::core::jwks::{import_fetched_jwks, KeySet};
use crate::core::keys::Alg;
use crate::core::keyset::{FetchedKeySet, KeyMiss, KeySnapshot};
use crate::core::validate::FetchedKeyUse;

/// Slack past a call's timeout before this filter gives up on it itself: the host's own
/// timeout (Envoy's made-up 504) normally comes first.
const DEADLINE_SLACK_MS: u64 = 500;

/// One issuer whose keys are fetched.
struct Source {
    issuer: String,
    id: String,
    config: KeySource,
    schedule: Schedule,
    pinned: Vec<Alg>,
    /// The shared state as last read or written.
    state: FetchState,
    /// The version of the set in the snapshot (0: none).
    loaded: u64,
}

impl Source {
    fn state_key(&self) -> String {
        format!("{PREFIX}jwks/{}/state", self.id)
    }

    fn keys_key(&self) -> String {
        format!("{PREFIX}jwks/{}/keys", self.id)
    }

    /// How long a request may wait for an attempt that starts now.
    fn wait_ms(&self) -> u64 {
        let calls = if self.schedule.discovery { 2 } else { 1 };
        self.config
            .timeout_ms
            .saturating_mul(calls)
            .saturating_add(DEADLINE_SLACK_MS)
    }
}

/// A call in flight.
struct Call {
    token: u32,
    source: String,
    step: Step,
    deadline_ms: u64,
    context: u32,
}

/// A request waiting for an issuer's keys.
#[derive(Debug, Clone)]
pub struct Wait {
    source: String,
    version: u64,
    until_ms: u64,
}

/// What a request whose keys were missing (or due for a refresh) does.
pub enum WaitPlan {
    /// Decide with the keys at hand.
    Proceed,
    /// The keys changed meanwhile (another worker fetched): decide again now.
    Redecide,
    /// Pause until the attempt in flight ends (or the wait times out).
    Wait(Wait),
}

/// The keys of one worker VM, and the fetching of them.
pub struct KeyFetcher {
    /// This VM's lease-holder id (random).
    me: u64,
    sources: Vec<Source>,
    snapshot: KeySnapshot,
    calls: Vec<Call>,
    store: SharedStore,
}

impl KeyFetcher {
    /// A fetcher for the VM with lease-holder id `me`.
    pub fn new(me: u64) -> KeyFetcher {
        KeyFetcher {
            me,
            sources: Vec::new(),
            snapshot: KeySnapshot::new(),
            calls: Vec::new(),
            store: SharedStore::default(),
        }
    }

    /// The keys requests are decided with.
    pub fn snapshot(&self) -> &KeySnapshot {
        &self.snapshot
    }

    /// The shared store and the snapshot (to adopt generated keys).
    pub fn store_and_snapshot(&mut self) -> (&mut SharedStore, &mut KeySnapshot) {
        (&mut self.store, &mut self.snapshot)
    }

    /// Whether any issuer's keys are fetched.
    pub fn has_sources(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Takes the key sources of a newly loaded policy and reads what other workers already
    /// fetched (no call is made here: some hosts cannot call out while configuring). Calls
    /// in flight for a source that did not change go on.
    pub fn configure(&mut self, policy: &Policy) {
        let mut sources = Vec::new();
        for t in &policy.trusted_issuers {
            let Some(config) = &t.key_source else {
                continue;
            };
            let id = source_id(t, config);
            let previous = self.sources.iter().position(|s| s.id == id);
            let (state, loaded) = match previous {
                Some(p) => {
                    let s = self.sources.swap_remove(p);
                    (s.state, s.loaded)
                }
                None => (FetchState::default(), 0),
            };
            sources.push(Source {
                issuer: t.issuer.clone(),
                id,
                config: config.clone(),
                schedule: Schedule::new(config),
                pinned: t.algorithms.clone(),
                state,
                loaded,
            });
        }
        // Keys of sources that are gone (or changed) are no longer used.
        for old in &self.sources {
            if !sources.iter().any(|s| s.issuer == old.issuer) {
                self.snapshot.clear_fetched(&old.issuer);
            }
        }
        for s in &sources {
            if s.loaded == 0 {
                self.snapshot.clear_fetched(&s.issuer);
            }
        }
        self.sources = sources;
        for i in 0..self.sources.len() {
            self.sync(i);
        }
    }

    /// The timer: give up on overdue calls, read what other workers fetched, note keys that
    /// went stale, and start the attempts that are due (from context `context`).
    pub fn tick(&mut self, now: u64, context: u32) {
        self.expire(now);
        for i in 0..self.sources.len() {
            self.sync(i);
            self.observe(i, now);
            let _ = self.claim(i, Trigger::Scheduled, now, context);
        }
    }

    /// Gives up on calls past their deadline (each a failed attempt).
    pub fn expire(&mut self, now: u64) {
        while let Some(pos) = self.calls.iter().position(|c| c.deadline_ms <= now) {
            let call = self.calls.swap_remove(pos);
            if let Some(i) = self.index_of_id(&call.source) {
                match call.step {
                    Step::Discovery => {
                        self.finish_discovery(i, Err(FetchFailure::TimedOut), now, call.context)
                    }
                    Step::Jwks => self.finish_jwks(i, Err(FetchFailure::TimedOut), now),
                }
            }
        }
    }

    /// Whether `token` is a call of this fetcher.
    pub fn owns_call(&self, token: u32) -> bool {
        self.calls.iter().any(|c| c.token == token)
    }

    /// The answer to call `token` (its headers and body are read from the host here).
    pub fn on_response(&mut self, token: u32, body_size: usize, now: u64) {
        let Some(pos) = self.calls.iter().position(|c| c.token == token) else {
            return;
        };
        let call = self.calls.swap_remove(pos);
        let Some(i) = self.index_of_id(&call.source) else {
            // The configuration changed meanwhile: nothing to do with it.
            return;
        };
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let max = source.config.max_bytes;
        let (headers, body) = abi::call_response(body_size, max);
        let response = CallResponse {
            headers: &headers,
            body: &body,
            body_size,
        };
        match call.step {
            Step::Discovery => {
                let result = parse_discovery(&response, max, &source.issuer);
                self.finish_discovery(i, result, now, call.context);
            }
            Step::Jwks => {
                let result = parse_jwks(&response, max, &source.pinned);
                self.finish_jwks(i, result.map(|set| (body, set)), now);
            }
        }
    }

    /// The request context `context` went away; the host cancels its calls, so their
    /// attempts end without a verdict on the endpoint.
    pub fn forget_calls_of(&mut self, context: u32) {
        while let Some(pos) = self.calls.iter().position(|c| c.context == context) {
            let call = self.calls.swap_remove(pos);
            let Some(i) = self.index_of_id(&call.source) else {
                continue;
            };
            let (me, schedule, key) = match self.sources.get(i) {
                Some(s) => (self.me, s.schedule.clone(), s.state_key()),
                None => continue,
            };
            let stored = self.store.update(&key, |current| {
                let state = parse_state(current)?;
                serde_json::to_vec(&schedule.abandoned(&state, me)?).ok()
            });
            self.adopt_stored(i, stored);
        }
    }

    /// Whether a request whose decision consulted fetched keys (`fetched`) should wait for
    /// an attempt: when its key was missing, or (`refresh_on_requests`, hosts without ticks)
    /// when a refresh is due. An attempt the schedule allows is started from `context`.
    pub fn wait_for(
        &mut self,
        fetched: Option<&FetchedKeyUse>,
        refresh_on_requests: bool,
        now: u64,
        context: u32,
    ) -> WaitPlan {
        let Some(fetched) = fetched else {
            return WaitPlan::Proceed;
        };
        let Some(i) = self.sources.iter().position(|s| s.issuer == fetched.issuer) else {
            return WaitPlan::Proceed;
        };
        let trigger = match fetched.missing {
            Some(KeyMiss::UnknownKid) => Trigger::UnknownKid,
            Some(KeyMiss::Unavailable) => Trigger::NoKeys,
            None if refresh_on_requests => Trigger::Scheduled,
            None => return WaitPlan::Proceed,
        };
        let before = self.sources.get(i).map_or(0, |s| s.loaded);
        self.expire(now);
        self.sync(i);
        let Some(source) = self.sources.get(i) else {
            return WaitPlan::Proceed;
        };
        if source.loaded != before {
            return WaitPlan::Redecide;
        }
        let longest = now.saturating_add(source.wait_ms());
        let id = source.id.clone();
        let until_ms = match self.claim(i, trigger, now, context) {
            Plan::Claim { .. } => longest,
            Plan::InFlight { until_ms } => until_ms.min(longest),
            Plan::Refused | Plan::Idle => return WaitPlan::Proceed,
        };
        let wait = Wait {
            source: id,
            version: before,
            until_ms,
        };
        if self.wait_is_over(&wait, now) {
            // The attempt ended at once (e.g. the host refused the call).
            WaitPlan::Redecide
        } else {
            WaitPlan::Wait(wait)
        }
    }

    /// Whether a waiting request can be decided again: its keys changed, no attempt is in
    /// flight any more, or it waited long enough.
    pub fn wait_is_over(&self, wait: &Wait, now: u64) -> bool {
        let Some(source) = self.sources.iter().find(|s| s.id == wait.source) else {
            return true;
        };
        let calling = self.calls.iter().any(|c| c.source == wait.source);
        let leased = source.state.lease.is_some_and(|l| now < l.until_ms);
        // The fetcher writes the state, then the key set: a new version may not be readable
        // yet (the next sync loads it).
        let unloaded = source.state.version != source.loaded;
        now >= wait.until_ms || source.loaded != wait.version || !(calling || leased || unloaded)
    }

    fn index_of_id(&self, id: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.id == id)
    }

    /// Reads the shared state of source `i`, and its key set when the version changed.
    fn sync(&mut self, i: usize) {
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let read = self.store.get(&source.state_key());
        let state = match read {
            Ok(Some((bytes, _))) => parse_state(Some(&bytes)),
            Ok(None) => Some(FetchState::default()),
            Err(_) => None,
        };
        let Some(source) = self.sources.get_mut(i) else {
            return;
        };
        if let Some(state) = state {
            source.state = state;
        }
        self.load(i);
    }

    /// Brings the snapshot to the version of the shared state (parsing the shared set when
    /// it changed; only the `fetched_at` time otherwise).
    fn load(&mut self, i: usize) {
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let version = source.state.version;
        if version == 0 {
            return;
        }
        if version == source.loaded {
            if let Some(set) = self.snapshot.fetched(&source.issuer) {
                if set.fetched_at_ms != source.state.fetched_at_ms {
                    let mut set = set.clone();
                    set.fetched_at_ms = source.state.fetched_at_ms;
                    self.snapshot.set_fetched(&source.issuer, set);
                }
            }
            return;
        }
        let record = self.store.get(&source.keys_key());
        let Ok(Some((record, _))) = record else {
            return;
        };
        // Written after the state: until it is, keep the keys at hand.
        let Some((stored_version, body)) = split_record(&record) else {
            return;
        };
        if stored_version != version {
            return;
        }
        match import_fetched_jwks(body, &source.pinned) {
            Ok(set) => {
                let set = FetchedKeySet {
                    version,
                    fetched_at_ms: source.state.fetched_at_ms,
                    keys: Arc::new(set.keys),
                };
                self.snapshot.set_fetched(&source.issuer, set);
            }
            Err(e) => {
                abi::log(
                    Level::Error,
                    &format!(
                        "token-exchange-filter: the shared key set of issuer {:?} does not import here: {}",
                        source.issuer, e.message
                    ),
                );
            }
        }
        if let Some(source) = self.sources.get_mut(i) {
            source.loaded = version;
        }
    }

    /// Notes (once, by whichever worker writes it) that the keys went stale.
    fn observe(&mut self, i: usize, now: u64) {
        let Some(source) = self.sources.get(i) else {
            return;
        };
        if source.schedule.observe(&source.state, now).is_none() {
            return;
        }
        let (schedule, key) = (source.schedule.clone(), source.state_key());
        let mut change = None;
        let stored = self.store.update(&key, |current| {
            let (next, c) = schedule.observe(&parse_state(current)?, now)?;
            change = Some((next.clone(), c));
            serde_json::to_vec(&next).ok()
        });
        let won = self.adopt_stored(i, stored);
        if let Some((next, change)) = change {
            if won.as_ref() == Some(&next) {
                self.log_change(i, &change);
            }
        }
    }

    /// Asks the schedule about `trigger` and, on a claim this worker wins, makes the first
    /// call of the attempt from `context`. Returns what the schedule said (after a lost race:
    /// what the winner's state means).
    fn claim(&mut self, i: usize, trigger: Trigger, now: u64, context: u32) -> Plan {
        let Some(source) = self.sources.get(i) else {
            return Plan::Refused;
        };
        let (me, schedule, key) = (self.me, source.schedule.clone(), source.state_key());
        let mut planned = Plan::Refused;
        let stored = self.store.update(&key, |current| {
            let state = parse_state(current).unwrap_or_default();
            planned = schedule.plan(&state, trigger, now, me);
            match &planned {
                Plan::Claim { state, .. } => serde_json::to_vec(state).ok(),
                _ => None,
            }
        });
        let stored_state = self.adopt_stored(i, stored);
        match planned {
            Plan::Claim { state, step } if stored_state.as_ref() == Some(&state) => {
                self.dispatch(i, step, now, context);
                Plan::Claim { state, step }
            }
            Plan::Claim { .. } => match stored_state {
                // Another worker claimed first: wait for it.
                Some(s) => match s.lease {
                    Some(l) if now < l.until_ms => Plan::InFlight {
                        until_ms: l.until_ms,
                    },
                    _ => Plan::Refused,
                },
                None => Plan::Refused,
            },
            other => other,
        }
    }

    /// Makes call `step` of source `i`'s attempt from `context`.
    fn dispatch(&mut self, i: usize, step: Step, now: u64, context: u32) {
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let request = source.schedule.request(step, &source.config, &source.state);
        let sent = request.and_then(|r| {
            let timeout = u32::try_from(r.timeout_ms).unwrap_or(u32::MAX);
            abi::http_call(&r.upstream, &r.headers(), b"", timeout)
                .map_err(|s| FetchFailure::DispatchRefused(s.0))
        });
        match sent {
            Ok(token) => self.calls.push(Call {
                token,
                source: source.id.clone(),
                step,
                deadline_ms: now
                    .saturating_add(source.config.timeout_ms)
                    .saturating_add(DEADLINE_SLACK_MS),
                context,
            }),
            Err(failure) => match step {
                Step::Discovery => self.finish_discovery(i, Err(failure), now, context),
                Step::Jwks => self.finish_jwks(i, Err(failure), now),
            },
        }
    }

    fn finish_discovery(
        &mut self,
        i: usize,
        result: Result<String, FetchFailure>,
        now: u64,
        context: u32,
    ) {
        if result.is_err() {
            metrics::increment(Counter::JwksFetchFailed);
        }
        let Some(attempt) = self.record(i, |schedule, state, me| {
            schedule.discovered(state, now, me, result.clone(), &mut HostEntropy)
        }) else {
            return;
        };
        if let Some(change) = &attempt.change {
            self.log_change(i, change);
        }
        if attempt.next == Some(Step::Jwks) {
            self.dispatch(i, Step::Jwks, now, context);
        }
    }

    fn finish_jwks(&mut self, i: usize, result: Result<(Vec<u8>, KeySet), FetchFailure>, now: u64) {
        metrics::increment(if result.is_ok() {
            Counter::JwksFetched
        } else {
            Counter::JwksFetchFailed
        });
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let (keys_key, issuer) = (source.keys_key(), source.issuer.clone());
        let outcome = match &result {
            Ok((body, _)) => {
                let stored = self.store.get(&keys_key).ok().flatten();
                let same = stored
                    .as_ref()
                    .and_then(|(r, _)| split_record(r))
                    .is_some_and(|(_, b)| b == body.as_slice());
                Ok(!same)
            }
            Err(failure) => Err(failure.clone()),
        };
        let Some(attempt) = self.record(i, |schedule, state, me| {
            schedule.fetched(state, now, me, outcome.clone(), &mut HostEntropy)
        }) else {
            return;
        };
        let version = attempt.state.version;
        if let (Ok((body, set)), Ok(changed)) = (result, outcome) {
            if changed {
                let mut record = format!("{version}\n").into_bytes();
                record.extend_from_slice(&body);
                let _ = self.store.update(&keys_key, |_| Some(record.clone()));
                let kids: Vec<&str> = set.keys.iter().map(|k| k.kid().unwrap_or("")).collect();
                abi::log(
                    Level::Info,
                    &format!(
                        "token-exchange-filter: issuer {issuer:?}: key set version {version}, usable kids {kids:?}"
                    ),
                );
                for skipped in &set.skipped {
                    abi::log(
                        Level::Warn,
                        &format!(
                            "token-exchange-filter: issuer {issuer:?}: fetched keys[{}]: {skipped}",
                            skipped.index
                        ),
                    );
                }
            }
            let fetched = FetchedKeySet {
                version,
                fetched_at_ms: attempt.state.fetched_at_ms,
                keys: Arc::new(set.keys),
            };
            if changed || self.snapshot.fetched(&issuer).is_none() {
                self.snapshot.set_fetched(&issuer, fetched);
                if let Some(s) = self.sources.get_mut(i) {
                    s.loaded = version;
                }
            } else {
                self.load(i);
            }
        }
        if let Some(change) = &attempt.change {
            self.log_change(i, change);
        }
    }

    /// Applies one step of the schedule (`step(schedule, current state, me)`) to source
    /// `i`'s shared state with compare-and-swap; the attempt when this worker's write is what
    /// is stored (not when the step did not apply, or another worker's write won).
    fn record(
        &mut self,
        i: usize,
        mut step: impl FnMut(&Schedule, &FetchState, u64) -> Option<Attempt>,
    ) -> Option<Attempt> {
        let source = self.sources.get(i)?;
        let (me, schedule, key) = (self.me, source.schedule.clone(), source.state_key());
        let mut attempt = None;
        let stored = self.store.update(&key, |current| {
            let a = step(&schedule, &parse_state(current)?, me)?;
            let bytes = serde_json::to_vec(&a.state).ok();
            attempt = Some(a);
            bytes
        });
        let stored = self.adopt_stored(i, stored);
        attempt.filter(|a| stored.as_ref() == Some(&a.state))
    }

    fn log_change(&self, i: usize, change: &HealthChange) {
        let Some(source) = self.sources.get(i) else {
            return;
        };
        let level = if change.is_warning() {
            Level::Warn
        } else {
            Level::Info
        };
        abi::log(
            level,
            &format!("token-exchange-filter: {}", change.message(&source.issuer)),
        );
    }

    /// Records what `update` left in shared data as source `i`'s state; returns it.
    fn adopt_stored(
        &mut self,
        i: usize,
        stored: Result<Option<(Vec<u8>, u32)>, abi::HostStatus>,
    ) -> Option<FetchState> {
        let state = match stored {
            Ok(Some((bytes, _))) => parse_state(Some(&bytes)),
            Ok(None) => None,
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!(
                        "token-exchange-filter: shared data failed (host status {})",
                        s.0
                    ),
                );
                None
            }
        }?;
        if let Some(source) = self.sources.get_mut(i) {
            source.state = state.clone();
        }
        Some(state)
    }
}

/// A shared state; `None` when absent or unreadable (it is then rewritten).
fn parse_state(bytes: Option<&[u8]>) -> Option<FetchState> {
    serde_json::from_slice(bytes?).ok()
}

/// `<version>\n<key set bytes>`.
fn split_record(record: &[u8]) -> Option<(u64, &[u8])> {
    let newline = record.iter().position(|b| *b == b'\n')?;
    let version = std::str::from_utf8(record.get(..newline)?)
        .ok()?
        .parse()
        .ok()?;
    Some((version, record.get(newline.checked_add(1)?..)?))
}
