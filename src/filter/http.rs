//! The request path: headers in, one decision, header replaced or local response sent, one
//! audit line out. A request whose token needs keys the filter does not have yet (an
//! unknown `kid`, or none fetched) may pause once while they are fetched, and one whose
//! token needs an introspection answer once while it is asked for; it is then decided
//! again the same way.

use std::rc::Rc;
use std::time::Duration;

use super::abi::{self, Level, Map};
use super::env::{millis, now, now_ms, HostEntropy};
use super::exports::{CONTINUE, PAUSE};
use super::fetch::{Wait, WaitPlan};
use super::introspect::IntrospectPlan;
use super::metrics::{self, Counter};
use super::root::ExchangeRoot;
use crate::core::introspect::{IntrospectionResult, TokenDigest};
use crate::core::publish::Served;
use crate::core::{
    grpc, CacheUse, Decision, Denial, DenyReason, HttpRequest, Policy, RequestHead, Verdict,
};

/// One HTTP stream.
pub struct ExchangeFilter {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    /// The request, kept while it waits for keys or an introspection answer.
    request: Option<RequestHeaders>,
    /// What it waits for.
    wait: Option<Waiting>,
    /// It waited for keys once already.
    waited: bool,
    /// It asked for an introspection answer once already.
    introspection_asked: bool,
    /// The answer the call it waited for ended with.
    introspected: Option<(TokenDigest, IntrospectionResult)>,
    /// Its decision was carried out and logged.
    decided: bool,
}

impl ExchangeFilter {
    /// The stream `context_id` under `policy` (the one in force when it began).
    pub fn new(context_id: u32, policy: Option<Rc<Policy>>) -> Self {
        ExchangeFilter {
            context_id,
            policy,
            request: None,
            wait: None,
            waited: false,
            introspection_asked: false,
            introspected: None,
            decided: false,
        }
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&mut self, root: Option<&mut ExchangeRoot>) -> u32 {
        let route_name = self.policy.as_ref().is_some_and(|p| p.needs_route_name());
        let headers = RequestHeaders::read(route_name);
        if headers.is_err() {
            metrics::increment(Counter::HostCallFailed);
        }
        let grpc = headers.as_ref().is_ok_and(|h| h.head.grpc);
        let (Some(policy), Some(root)) = (self.policy.clone(), root) else {
            // No valid policy was ever loaded: refuse everything.
            abi::log(
                Level::Error,
                "token-exchange-filter: no policy loaded; denying",
            );
            metrics::increment(Counter::DecisionDeny);
            metrics::increment_deny(DenyReason::InternalError);
            send(&no_policy_denial(), grpc);
            return PAUSE;
        };
        // One clock read per request: every step of this decision uses the same instant.
        let now = now();
        root.before_request(millis(now));
        let headers = match headers {
            Ok(h) => h,
            Err(_) => {
                let mut decision = policy.internal_failure(&HttpRequest::default(), now);
                let action = apply(&policy, &mut decision, false);
                log_decision(&decision);
                return action;
            }
        };
        if let Some(served) = policy.serve_published(&headers.request(), root.keys(), now) {
            serve(&served);
            abi::log(Level::Info, &served.audit.to_json_line());
            metrics::increment(Counter::DecisionServe);
            return PAUSE;
        }
        self.request = Some(headers);
        self.decide(&policy, root, false, now)
    }

    /// Whether it is paused, waiting for keys or an introspection answer.
    pub fn is_waiting(&self) -> bool {
        self.wait.is_some()
    }

    /// Whether its wait is over (keys changed, the attempt or the call ended, or time is up).
    pub fn wait_is_over(&self, root: &ExchangeRoot) -> bool {
        match &self.wait {
            Some(Waiting::Keys(w)) => root.wait_is_over(w, now_ms()),
            Some(Waiting::Introspection(digest)) => root.introspection_wait(digest).is_some(),
            None => false,
        }
    }

    /// Decides the paused request again (its context is the effective one) and lets it go
    /// on, or answers it.
    pub fn resume(&mut self, root: &mut ExchangeRoot) {
        if let Some(Waiting::Introspection(digest)) = self.wait.take() {
            // No answer (the call was cancelled): decided without one, so refused.
            self.introspected = root
                .introspection_wait(&digest)
                .flatten()
                .map(|r| (digest, r));
        }
        let Some(policy) = self.policy.clone() else {
            return;
        };
        self.decide(&policy, root, true, now());
    }

    /// Refuses the request with a 500 (an answer to a call this VM does not know arrived
    /// for it) unless it was decided already.
    pub fn refuse_internal(&mut self) {
        if self.decided {
            return;
        }
        self.wait = None;
        self.decided = true;
        let grpc = self.request.as_ref().is_some_and(|h| h.head.grpc);
        let Some(policy) = self.policy.clone() else {
            send(&no_policy_denial(), grpc);
            return;
        };
        let request = self
            .request
            .as_ref()
            .map(RequestHeaders::request)
            .unwrap_or_default();
        let mut decision = policy.internal_failure(&request, now());
        // A deny: answered locally, never continued.
        apply(&policy, &mut decision, grpc);
        log_decision(&decision);
    }

    /// One decision with the keys at hand; at most once, a pause for keys instead.
    /// `resumed`: the request was paused, so going on upstream is a host call.
    fn decide(
        &mut self,
        policy: &Policy,
        root: &mut ExchangeRoot,
        resumed: bool,
        now: Duration,
    ) -> u32 {
        let Some(headers) = &self.request else {
            return PAUSE;
        };
        let grpc = headers.head.grpc;
        let request = headers.request();
        let mut decision = root.decide(
            policy,
            &request,
            self.introspected.as_ref(),
            now,
            &mut HostEntropy,
        );
        if !self.waited {
            self.waited = true;
            match root.wait_for_keys(&decision, millis(now), self.context_id) {
                WaitPlan::Wait(wait) => {
                    // No audit yet: the decision after the wait is the one logged.
                    self.wait = Some(Waiting::Keys(wait));
                    return PAUSE;
                }
                WaitPlan::Redecide => {
                    decision = root.decide(
                        policy,
                        &request,
                        self.introspected.as_ref(),
                        now,
                        &mut HostEntropy,
                    );
                }
                WaitPlan::Proceed => {}
            }
        }
        if let Some(need) = decision
            .introspection
            .take()
            .filter(|_| !self.introspection_asked)
        {
            self.introspection_asked = true;
            match root.introspect(&need, millis(now), self.context_id) {
                IntrospectPlan::Wait(digest) => {
                    self.wait = Some(Waiting::Introspection(digest));
                    return PAUSE;
                }
                IntrospectPlan::Answered(result) => {
                    self.introspected = Some((need.digest, result));
                    decision = root.decide(
                        policy,
                        &request,
                        self.introspected.as_ref(),
                        now,
                        &mut HostEntropy,
                    );
                }
            }
        }
        if matches!(decision.verdict, Verdict::Forward { .. }) {
            metrics::increment(match decision.audit.cache {
                CacheUse::Hit => Counter::CacheHit,
                CacheUse::Miss => Counter::TokensMinted,
            });
        }
        let mut action = apply(policy, &mut decision, grpc);
        if resumed && action == CONTINUE && abi::continue_request().is_err() {
            // Resumed, and the host would not let it go: refuse it, never leave it hanging.
            metrics::increment(Counter::HostCallFailed);
            decision.fail_internal(policy);
            action = apply(policy, &mut decision, grpc);
        }
        self.decided = true;
        log_decision(&decision);
        action
    }
}

/// What a request waits for.
enum Waiting {
    /// An issuer's keys.
    Keys(Wait),
    /// The introspection call about this token.
    Introspection(TokenDigest),
}

/// The decision's one audit line, and its counters.
fn log_decision(decision: &Decision) {
    abi::log(Level::Info, &decision.audit.to_json_line());
    metrics::count_decision(decision);
}

/// Sends a published document (or its 405).
fn serve(served: &Served) {
    let headers: Vec<(&str, &str)> = served
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    if abi::send_local_response(served.status, &headers, served.body.as_bytes(), None).is_err() {
        metrics::increment(Counter::HostCallFailed);
        abi::log(
            Level::Error,
            "token-exchange-filter: local response failed; request held",
        );
    }
}

/// Carries out the verdict. Any host failure turns the decision into a 500 deny.
fn apply(policy: &Policy, decision: &mut Decision, grpc: bool) -> u32 {
    let forwarded = match &decision.verdict {
        Verdict::Forward { authorization, .. } => {
            abi::replace_header(Map::RequestHeaders, "authorization", authorization)
                .and_then(|()| strip(&decision.strip_headers))
        }
        Verdict::Pass => strip(&decision.strip_headers),
        Verdict::Deny(_) => Ok(()),
    };
    if forwarded.is_err() {
        metrics::increment(Counter::HostCallFailed);
        decision.fail_internal(policy);
    }
    match &decision.verdict {
        Verdict::Deny(denial) => {
            send(denial, grpc);
            // Never continue a denied request, even if the response could not be sent.
            PAUSE
        }
        _ => CONTINUE,
    }
}

/// Sends a denial: JSON with an RFC 6750 challenge, or for a gRPC request a gRPC status the
/// client can read. For gRPC the status goes both as the host's `grpc_status` argument (Envoy
/// then answers `:status 200` with it, trailers-only) and as headers, for hosts that ignore
/// the argument (Kong, APISIX send the HTTP status with them, which gRPC clients map to the
/// same code for 401 and 403).
fn send(denial: &Denial, grpc: bool) {
    let grpc_status = denial.grpc_status.to_string();
    let retry_after = denial.retry_after.map(|s| s.to_string());
    let mut headers = vec![("cache-control", "no-store")];
    if let Some(challenge) = &denial.www_authenticate {
        headers.push(("www-authenticate", challenge));
    }
    if let Some(seconds) = &retry_after {
        headers.push(("retry-after", seconds.as_str()));
    }
    let sent = if grpc {
        headers.push(("content-type", "application/grpc"));
        headers.push(("grpc-status", grpc_status.as_str()));
        headers.push(("grpc-message", &denial.grpc_message));
        abi::send_local_response(denial.status, &headers, b"", Some(denial.grpc_status))
    } else {
        headers.push(("content-type", "application/json"));
        abi::send_local_response(denial.status, &headers, denial.body.as_bytes(), None)
    };
    if sent.is_err() {
        metrics::increment(Counter::HostCallFailed);
        abi::log(
            Level::Error,
            "token-exchange-filter: local response failed; request held",
        );
    }
}

/// The 500 sent while no policy is loaded (there is no policy to build it).
fn no_policy_denial() -> Denial {
    let reason = DenyReason::InternalError;
    Denial {
        status: 500,
        www_authenticate: None,
        body: r#"{"error":"server_error","error_description":"internal error"}"#.into(),
        reason,
        grpc_status: grpc::INTERNAL,
        grpc_message: reason.description().into(),
        retry_after: None,
    }
}

fn strip(names: &[String]) -> Result<(), abi::HostStatus> {
    for name in names {
        abi::remove_header(Map::RequestHeaders, name)?;
    }
    Ok(())
}

/// The request headers the decision needs, read once.
struct RequestHeaders {
    head: RequestHead,
}

impl RequestHeaders {
    /// Reads the request headers in place from the host's buffer (only the values the
    /// decision reads are copied); the route name property only when `route_name` (no rule
    /// matches on it otherwise, and a property read is a costly host call).
    fn read(route_name: bool) -> Result<Self, abi::HostStatus> {
        let map = abi::header_map(Map::RequestHeaders)?;
        let mut head = RequestHead::from_headers(map.pairs().map(|(name, value)| {
            (
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            )
        }));
        // Hosts without pseudo-headers in the map (Kong) expose them as properties.
        if head.method.is_none() {
            head.method = string_property(&["request", "method"]);
        }
        if head.path.is_none() {
            head.path = string_property(&["request", "path"]);
        }
        if route_name {
            head.route_name = string_property(&["xds", "route_name"]);
        }
        Ok(RequestHeaders { head })
    }

    fn request(&self) -> HttpRequest<'_> {
        self.head.request()
    }
}

/// A string property; absent (or unreadable) is normal and gives `None`.
fn string_property(path: &[&str]) -> Option<String> {
    match abi::property(path) {
        Ok(Some(bytes)) if !bytes.is_empty() => String::from_utf8(bytes).ok(),
        _ => None,
    }
}
