//! Introspection calls and their answers: the glue around `core::introspect`.
//!
//! A request whose token needs an answer pauses while one call is out; another request
//! with the same token on this worker waits for the same call (coalesced by the token's
//! SHA-256). The call goes from the paused request's context (Kong's host cannot call out
//! from the root outside a tick), carries its own deadline and size cap (enforced here:
//! Kong applies its timeout per socket operation and delivers any size), and its answer is
//! kept in the issuer's cache and handed to the requests that waited. A failure is handed
//! to them too (refused, 503), logged once per change of failure, and never cached.

use super::abi::{self, Level};
use crate::core::config::{Introspection, Policy};
use crate::core::fetch::{CallResponse, FetchFailure};
use crate::core::introspect::{
    introspection_call, parse_introspection, EndpointHealth, IntrospectionCache,
    IntrospectionLookup, IntrospectionNeed, IntrospectionResult, TokenDigest,
};

/// Slack past a call's timeout before this filter gives up on it itself: the host's own
/// timeout (Envoy's made-up 504) normally comes first.
const DEADLINE_SLACK_MS: u64 = 500;

/// One issuer's endpoint, its cached answers and whether it is failing.
struct Endpoint {
    issuer: String,
    settings: Introspection,
    cache: IntrospectionCache,
    health: EndpointHealth,
}

/// A call in flight.
struct Call {
    token: u32,
    digest: TokenDigest,
    issuer: String,
    deadline_ms: u64,
    context: u32,
}

/// What a request that needs an answer does.
pub enum IntrospectPlan {
    /// Pause until the call about this token ends.
    Wait(TokenDigest),
    /// Decide again now with this answer (the call could not be made).
    Answered(IntrospectionResult),
}

/// The introspection of one worker VM.
#[derive(Default)]
pub struct Introspector {
    endpoints: Vec<Endpoint>,
    calls: Vec<Call>,
    /// Answers of the calls that ended in the current host event, for the requests that
    /// waited on them (all resumed in that same event; cleared when the next one starts).
    finished: Vec<(TokenDigest, IntrospectionResult)>,
}

impl Introspector {
    /// Takes the endpoints of a newly loaded policy. An endpoint whose settings did not
    /// change keeps its answers; calls in flight go on (an answer for an endpoint that is
    /// gone decides its waiters as unavailable).
    pub fn configure(&mut self, policy: &Policy) {
        let mut endpoints = Vec::new();
        for t in &policy.trusted_issuers {
            let Some(i) = &t.introspection else {
                continue;
            };
            let kept = self
                .endpoints
                .iter()
                .position(|e| e.issuer == t.issuer && e.settings == i.endpoint);
            endpoints.push(match kept {
                Some(p) => self.endpoints.swap_remove(p),
                None => Endpoint {
                    issuer: t.issuer.clone(),
                    settings: i.endpoint.clone(),
                    cache: IntrospectionCache::new(&i.endpoint),
                    health: EndpointHealth::default(),
                },
            });
        }
        self.endpoints = endpoints;
    }

    /// Whether any issuer's tokens are introspected.
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Whether `token` is a call of this introspector.
    pub fn owns_call(&self, token: u32) -> bool {
        self.calls.iter().any(|c| c.token == token)
    }

    /// Whether a call about `digest` is out.
    pub fn in_flight(&self, digest: &TokenDigest) -> bool {
        self.calls.iter().any(|c| c.digest == *digest)
    }

    /// The answer a call about `digest` ended with in the current event, if one did.
    pub fn finished(&self, digest: &TokenDigest) -> Option<IntrospectionResult> {
        self.finished
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, r)| r.clone())
    }

    /// What a decision at `now_ms` knows: `own` (the answer a resumed request waited for)
    /// first, then the caches.
    pub fn lookup<'a>(
        &'a self,
        own: Option<&'a (TokenDigest, IntrospectionResult)>,
        now_ms: u64,
    ) -> Lookup<'a> {
        Lookup {
            introspector: self,
            own,
            now_ms,
        }
    }

    /// Asks about `need` from `context` (the paused request's), unless a call about the
    /// same token is already out: then the request waits for that one.
    pub fn start(&mut self, need: &IntrospectionNeed, now_ms: u64, context: u32) -> IntrospectPlan {
        self.give_up_overdue(now_ms);
        if self.in_flight(&need.digest) {
            return IntrospectPlan::Wait(need.digest);
        }
        let Some(i) = self.endpoints.iter().position(|e| e.issuer == need.issuer) else {
            return IntrospectPlan::Answered(IntrospectionResult::Unavailable);
        };
        let Some(endpoint) = self.endpoints.get(i) else {
            return IntrospectPlan::Answered(IntrospectionResult::Unavailable);
        };
        let call = introspection_call(&endpoint.settings, &need.token);
        let headers = call.headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let timeout = u32::try_from(call.timeout_ms).unwrap_or(u32::MAX);
        match abi::http_call(&call.upstream, &headers, call.body(), timeout) {
            Ok(token) => {
                self.calls.push(Call {
                    token,
                    digest: need.digest,
                    issuer: need.issuer.clone(),
                    deadline_ms: now_ms
                        .saturating_add(call.timeout_ms)
                        .saturating_add(DEADLINE_SLACK_MS),
                    context,
                });
                IntrospectPlan::Wait(need.digest)
            }
            Err(status) => {
                self.record(i, Err(&FetchFailure::DispatchRefused(status.0)));
                IntrospectPlan::Answered(IntrospectionResult::Unavailable)
            }
        }
    }

    /// The answer to call `token` (its headers and body are read from the host here).
    pub fn on_response(&mut self, token: u32, body_size: usize, now_ms: u64) {
        self.finished.clear();
        let Some(pos) = self.calls.iter().position(|c| c.token == token) else {
            return;
        };
        let call = self.calls.swap_remove(pos);
        let Some(i) = self.endpoints.iter().position(|e| e.issuer == call.issuer) else {
            // The configuration changed meanwhile: its waiters are refused.
            self.finished
                .push((call.digest, IntrospectionResult::Unavailable));
            return;
        };
        let max = self.endpoints.get(i).map_or(0, |e| e.settings.max_bytes);
        let (headers, body) = abi::call_response(body_size, max);
        let response = CallResponse {
            headers: &headers,
            body: &body,
            body_size,
        };
        let result = match parse_introspection(&response, max) {
            Ok(answer) => {
                self.record(i, Ok(()));
                match self.endpoints.get_mut(i) {
                    Some(e) => e.cache.insert(call.digest, answer, now_ms),
                    None => IntrospectionResult::Unavailable,
                }
            }
            Err(failure) => {
                self.record(i, Err(&failure));
                IntrospectionResult::Unavailable
            }
        };
        self.finished.push((call.digest, result));
    }

    /// The timer (or, on hosts without one, each request): gives up on overdue calls.
    pub fn expire(&mut self, now_ms: u64) {
        self.finished.clear();
        self.give_up_overdue(now_ms);
    }

    /// The request context `context` went away; the host cancels its calls, and the other
    /// requests that waited on them are refused (they may retry).
    pub fn forget_calls_of(&mut self, context: u32) {
        self.finished.clear();
        while let Some(pos) = self.calls.iter().position(|c| c.context == context) {
            let call = self.calls.swap_remove(pos);
            self.finished
                .push((call.digest, IntrospectionResult::Unavailable));
        }
    }

    fn give_up_overdue(&mut self, now_ms: u64) {
        while let Some(pos) = self.calls.iter().position(|c| c.deadline_ms <= now_ms) {
            let call = self.calls.swap_remove(pos);
            if let Some(i) = self.endpoints.iter().position(|e| e.issuer == call.issuer) {
                self.record(i, Err(&FetchFailure::TimedOut));
            }
            self.finished
                .push((call.digest, IntrospectionResult::Unavailable));
        }
    }

    /// Records a call's outcome for endpoint `i`; logs a change of state (never a token or
    /// a credential: the issuer and the kind of failure only).
    fn record(&mut self, i: usize, outcome: Result<(), &FetchFailure>) {
        let Some(e) = self.endpoints.get_mut(i) else {
            return;
        };
        if let Some((warning, line)) = e.health.record(&e.issuer, outcome) {
            let level = if warning { Level::Warn } else { Level::Info };
            abi::log(level, &format!("token-exchange-filter: {line}"));
        }
    }
}

/// The answers a decision reads.
pub struct Lookup<'a> {
    introspector: &'a Introspector,
    own: Option<&'a (TokenDigest, IntrospectionResult)>,
    now_ms: u64,
}

impl IntrospectionLookup for Lookup<'_> {
    fn introspected(&self, issuer: &str, digest: &TokenDigest) -> Option<IntrospectionResult> {
        if let Some((d, r)) = self.own {
            if d == digest {
                return Some(r.clone());
            }
        }
        self.introspector
            .endpoints
            .iter()
            .find(|e| e.issuer == issuer)?
            .cache
            .get(digest, self.now_ms)
    }
}
