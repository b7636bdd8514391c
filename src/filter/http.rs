//! The request path: headers in, one decision, header replaced or local response sent, one
//! audit line out.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, Level, Map};
use super::metrics::{self, Counter};
use crate::core::{
    grpc, Decision, Denial, DenyReason, Entropy, EntropyError, HttpRequest, Policy, RequestHead,
    Verdict,
};

/// One HTTP stream.
pub struct ExchangeFilter {
    policy: Option<Rc<Policy>>,
}

impl ExchangeFilter {
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        ExchangeFilter { policy }
    }
}

impl Context for ExchangeFilter {}

impl HttpContext for ExchangeFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = RequestHeaders::read();
        if headers.is_err() {
            metrics::increment(Counter::HostCallFailed);
        }
        let grpc = headers.as_ref().is_ok_and(|h| h.head.grpc);
        let Some(policy) = self.policy.clone() else {
            // No valid policy was ever loaded: refuse everything.
            abi::log(
                Level::Error,
                "token-exchange-filter: no policy loaded; denying",
            );
            metrics::increment(Counter::DecisionDeny);
            metrics::increment_deny(DenyReason::InternalError);
            send(&no_policy_denial(), grpc);
            return Action::Pause;
        };
        let mut decision = match &headers {
            Ok(h) => policy.decide(&h.request(), now(), &mut HostEntropy),
            Err(_) => policy.internal_failure(&HttpRequest::default(), now()),
        };
        if matches!(decision.verdict, Verdict::Forward { .. }) {
            metrics::increment(Counter::TokensMinted);
        }
        let action = apply(&policy, &mut decision, grpc);
        abi::log(Level::Info, &decision.audit.to_json_line());
        metrics::count_decision(&decision);
        action
    }
}

/// Carries out the verdict. Any host failure turns the decision into a 500 deny.
fn apply(policy: &Policy, decision: &mut Decision, grpc: bool) -> Action {
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
            Action::Pause
        }
        _ => Action::Continue,
    }
}

/// Sends a denial: JSON with an RFC 6750 challenge, or for a gRPC request a gRPC status the
/// client can read. For gRPC the status goes both as the host's `grpc_status` argument (Envoy
/// then answers `:status 200` with it, trailers-only) and as headers, for hosts that ignore
/// the argument (Kong, APISIX send the HTTP status with them, which gRPC clients map to the
/// same code for 401 and 403).
fn send(denial: &Denial, grpc: bool) {
    let grpc_status = denial.grpc_status.to_string();
    let mut headers = vec![("cache-control", "no-store")];
    if let Some(challenge) = &denial.www_authenticate {
        headers.push(("www-authenticate", challenge.as_str()));
    }
    let sent = if grpc {
        headers.push(("content-type", "application/grpc"));
        headers.push(("grpc-status", grpc_status.as_str()));
        headers.push(("grpc-message", denial.grpc_message.as_str()));
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
        body: r#"{"error":"server_error","error_description":"internal error"}"#.to_owned(),
        reason,
        grpc_status: grpc::INTERNAL,
        grpc_message: reason.description().to_owned(),
    }
}

fn strip(names: &[String]) -> Result<(), abi::HostStatus> {
    for name in names {
        abi::remove_header(Map::RequestHeaders, name)?;
    }
    Ok(())
}

/// The host clock; WASI's clock where the host lacks `proxy_get_current_time_nanoseconds`.
pub(super) fn now() -> Duration {
    match abi::current_time_nanos() {
        Some(ns) => Duration::from_nanos(ns),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}

/// The request headers the decision needs, read once (`RequestHead` reads the pairs).
struct RequestHeaders {
    head: RequestHead,
}

impl RequestHeaders {
    fn read() -> Result<Self, abi::HostStatus> {
        let pairs = abi::header_pairs(Map::RequestHeaders)?;
        let mut head = RequestHead::from_headers(pairs.iter().map(|(name, value)| {
            (
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value).into_owned(),
            )
        }));
        // Hosts without pseudo-headers in the map (Kong) expose them as properties.
        if head.method.is_none() {
            head.method = string_property(&["request", "method"]);
        }
        if head.path.is_none() {
            head.path = string_property(&["request", "path"]);
        }
        head.route_name = string_property(&["xds", "route_name"]);
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
