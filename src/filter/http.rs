//! The request path: headers in, one decision, header replaced or local response sent, one
//! audit line out. A request whose token needs keys the filter does not have yet (an
//! unknown `kid`, or none fetched) may pause once while they are fetched, and is then
//! decided again the same way.

use std::rc::Rc;

use super::abi::{self, Level, Map};
use super::env::{now, now_ms, HostEntropy};
use super::exports::{CONTINUE, PAUSE};
use super::fetch::{Wait, WaitPlan};
use super::root::ExchangeRoot;
use crate::core::publish::Served;
use crate::core::{Decision, HttpRequest, Policy, Verdict};

/// One HTTP stream.
pub struct ExchangeFilter {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    /// The request, kept while it waits for keys.
    request: Option<RequestHeaders>,
    /// What it waits for.
    wait: Option<Wait>,
    /// It waited once already: the next decision is final.
    waited: bool,
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
            decided: false,
        }
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&mut self, root: Option<&mut ExchangeRoot>) -> u32 {
        let (Some(policy), Some(root)) = (self.policy.clone(), root) else {
            // No valid policy was ever loaded: refuse everything.
            abi::log(
                Level::Error,
                "token-exchange-filter: no policy loaded; denying",
            );
            let _ = abi::send_local_response(500, &[("cache-control", "no-store")], b"");
            return PAUSE;
        };
        root.before_request(now_ms());
        let headers = match RequestHeaders::read() {
            Ok(h) => h,
            Err(_) => {
                let mut decision = policy.internal_failure(&HttpRequest::default(), now());
                let action = apply(&policy, &mut decision);
                abi::log(Level::Info, &decision.audit.to_json_line());
                return action;
            }
        };
        if let Some(served) = policy.serve_published(&headers.request(), root.keys(), now()) {
            serve(&served);
            abi::log(Level::Info, &served.audit.to_json_line());
            return PAUSE;
        }
        self.request = Some(headers);
        self.decide(&policy, root, false)
    }

    /// Whether it is paused, waiting for keys.
    pub fn is_waiting(&self) -> bool {
        self.wait.is_some()
    }

    /// Whether its wait is over (keys changed, the attempt ended, or time is up).
    pub fn wait_is_over(&self, root: &ExchangeRoot) -> bool {
        self.wait
            .as_ref()
            .is_some_and(|w| root.wait_is_over(w, now_ms()))
    }

    /// Decides the paused request again (its context is the effective one) and lets it go
    /// on, or answers it.
    pub fn resume(&mut self, root: &mut ExchangeRoot) {
        self.wait = None;
        let Some(policy) = self.policy.clone() else {
            return;
        };
        self.decide(&policy, root, true);
    }

    /// Refuses the request with a 500 (an answer to a call this VM does not know arrived
    /// for it) unless it was decided already.
    pub fn refuse_internal(&mut self) {
        if self.decided {
            return;
        }
        self.wait = None;
        self.decided = true;
        let Some(policy) = self.policy.clone() else {
            let _ = abi::send_local_response(500, &[("cache-control", "no-store")], b"");
            return;
        };
        let request = self
            .request
            .as_ref()
            .map(RequestHeaders::request)
            .unwrap_or_default();
        let mut decision = policy.internal_failure(&request, now());
        // A deny: answered locally, never continued.
        apply(&policy, &mut decision);
        abi::log(Level::Info, &decision.audit.to_json_line());
    }

    /// One decision with the keys at hand; at most once, a pause for keys instead.
    /// `resumed`: the request was paused, so going on upstream is a host call.
    fn decide(&mut self, policy: &Policy, root: &mut ExchangeRoot, resumed: bool) -> u32 {
        let Some(headers) = &self.request else {
            return PAUSE;
        };
        let request = headers.request();
        let mut decision = policy.decide(&request, root.keys(), now(), &mut HostEntropy);
        if !self.waited {
            self.waited = true;
            match root.wait_for_keys(&decision, now_ms(), self.context_id) {
                WaitPlan::Wait(wait) => {
                    // No audit yet: the decision after the wait is the one logged.
                    self.wait = Some(wait);
                    return PAUSE;
                }
                WaitPlan::Redecide => {
                    decision = policy.decide(&request, root.keys(), now(), &mut HostEntropy);
                }
                WaitPlan::Proceed => {}
            }
        }
        let mut action = apply(policy, &mut decision);
        if resumed && action == CONTINUE && abi::continue_request().is_err() {
            // Resumed, and the host would not let it go: refuse it, never leave it hanging.
            decision.fail_internal(policy);
            action = apply(policy, &mut decision);
        }
        self.decided = true;
        abi::log(Level::Info, &decision.audit.to_json_line());
        action
    }
}

/// Sends a published document (or its 405).
fn serve(served: &Served) {
    let headers: Vec<(&str, &str)> = served
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    if abi::send_local_response(served.status, &headers, served.body.as_bytes()).is_err() {
        abi::log(
            Level::Error,
            "token-exchange-filter: local response failed; request held",
        );
    }
}

/// Carries out the verdict. Any host failure turns the decision into a 500 deny.
fn apply(policy: &Policy, decision: &mut Decision) -> u32 {
    let forwarded = match &decision.verdict {
        Verdict::Forward { authorization, .. } => {
            abi::replace_header(Map::RequestHeaders, "authorization", authorization)
                .and_then(|()| strip(policy))
        }
        Verdict::Pass => strip(policy),
        Verdict::Deny(_) => Ok(()),
    };
    if forwarded.is_err() {
        decision.fail_internal(policy);
    }
    match &decision.verdict {
        Verdict::Deny(denial) => {
            let mut headers = vec![
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ];
            if let Some(challenge) = &denial.www_authenticate {
                headers.push(("www-authenticate", challenge.as_str()));
            }
            let retry_after = denial.retry_after.map(|s| s.to_string());
            if let Some(seconds) = &retry_after {
                headers.push(("retry-after", seconds.as_str()));
            }
            if abi::send_local_response(denial.status, &headers, denial.body.as_bytes()).is_err() {
                abi::log(
                    Level::Error,
                    "token-exchange-filter: local response failed; request held",
                );
            }
            // Never continue a denied request, even if the response could not be sent.
            PAUSE
        }
        _ => CONTINUE,
    }
}

fn strip(policy: &Policy) -> Result<(), abi::HostStatus> {
    for name in &policy.strip_headers {
        abi::remove_header(Map::RequestHeaders, name)?;
    }
    Ok(())
}

/// The request headers the decision needs, read once.
struct RequestHeaders {
    method: String,
    path: String,
    host: Option<String>,
    route_name: Option<String>,
    authorization: Vec<String>,
    request_id: Option<String>,
}

impl RequestHeaders {
    fn read() -> Result<Self, abi::HostStatus> {
        let pairs = abi::header_pairs(Map::RequestHeaders)?;
        let mut method = None;
        let mut path = None;
        let mut host = None;
        let mut authority = None;
        let mut request_id = None;
        let mut authorization = Vec::new();
        for (name, value) in pairs {
            // Header names are case-insensitive; hosts differ in the casing they report.
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&value).into_owned();
            match name.as_str() {
                "authorization" => authorization.push(value),
                ":method" => method = Some(value),
                ":path" => path = Some(value),
                ":authority" => authority = Some(value),
                "host" => host = Some(value),
                "x-request-id" => request_id = Some(value),
                _ => {}
            }
        }
        // Hosts without pseudo-headers in the map (Kong) expose them as properties.
        let method = method
            .or_else(|| string_property(&["request", "method"]))
            .unwrap_or_default();
        let path = path
            .or_else(|| string_property(&["request", "path"]))
            .unwrap_or_default();
        Ok(RequestHeaders {
            method,
            path,
            host: host.or(authority),
            route_name: string_property(&["xds", "route_name"]),
            authorization,
            request_id,
        })
    }

    fn request(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: &self.method,
            path: &self.path,
            host: self.host.as_deref(),
            route_name: self.route_name.as_deref(),
            authorization: self.authorization.iter().map(String::as_str).collect(),
            request_id: self.request_id.as_deref(),
        }
    }
}

/// A string property; absent (or unreadable) is normal and gives `None`.
fn string_property(path: &[&str]) -> Option<String> {
    match abi::property(path) {
        Ok(Some(bytes)) if !bytes.is_empty() => String::from_utf8(bytes).ok(),
        _ => None,
    }
}
