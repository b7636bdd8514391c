//! The request path: headers in, one decision, header replaced or local response sent, one
//! audit line out.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, Level, Map};
use super::metrics::{self, Counter};
use super::root::Loaded;
use crate::core::{
    grpc, CacheUse, Decision, Denial, DenyReason, Entropy, EntropyError, HttpRequest, Policy,
    Verdict,
};

/// One HTTP stream.
pub struct ExchangeFilter {
    loaded: Option<Rc<Loaded>>,
}

impl ExchangeFilter {
    pub fn new(loaded: Option<Rc<Loaded>>) -> Self {
        ExchangeFilter { loaded }
    }
}

impl Context for ExchangeFilter {}

impl HttpContext for ExchangeFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            let grpc = RequestHeaders::read(false).is_ok_and(|h| h.grpc);
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
        let policy = &loaded.policy;
        let headers = RequestHeaders::read(policy.needs_route_name());
        if headers.is_err() {
            metrics::increment(Counter::HostCallFailed);
        }
        let grpc = headers.as_ref().is_ok_and(|h| h.grpc);
        let mut decision = match (&headers, loaded.cache.try_borrow_mut()) {
            (Ok(h), Ok(mut cache)) => {
                policy.decide_cached(&h.request(), now(), &mut HostEntropy, &mut cache)
            }
            // Never re-entered; were it, deciding without the cache is still correct.
            (Ok(h), Err(_)) => policy.decide(&h.request(), now(), &mut HostEntropy),
            (Err(_), _) => policy.internal_failure(&HttpRequest::default(), now()),
        };
        if matches!(decision.verdict, Verdict::Forward { .. }) {
            metrics::increment(match decision.audit.cache {
                CacheUse::Hit => Counter::CacheHit,
                CacheUse::Miss => Counter::TokensMinted,
            });
        }
        let action = apply(policy, &mut decision, grpc);
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
                .and_then(|()| strip(policy))
        }
        Verdict::Pass => strip(policy),
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
        headers.push(("www-authenticate", challenge));
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
    }
}

fn strip(policy: &Policy) -> Result<(), abi::HostStatus> {
    for name in &policy.strip_headers {
        abi::remove_header(Map::RequestHeaders, name)?;
    }
    Ok(())
}

/// The host clock; WASI's clock where the host lacks `proxy_get_current_time_nanoseconds`.
fn now() -> Duration {
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

/// The request headers the decision needs, read once.
struct RequestHeaders {
    method: String,
    path: String,
    host: Option<String>,
    route_name: Option<String>,
    authorization: Vec<String>,
    request_id: Option<String>,
    /// `content-type` says gRPC: denials are then sent as gRPC statuses.
    grpc: bool,
}

/// The headers the filter reads (lower case), and which field each fills.
#[derive(Clone, Copy)]
enum Wanted {
    Authorization,
    Method,
    Path,
    Authority,
    Host,
    RequestId,
    ContentType,
}

const WANTED: [(&[u8], Wanted); 7] = [
    (b"authorization", Wanted::Authorization),
    (b":method", Wanted::Method),
    (b":path", Wanted::Path),
    (b":authority", Wanted::Authority),
    (b"host", Wanted::Host),
    (b"x-request-id", Wanted::RequestId),
    (b"content-type", Wanted::ContentType),
];

impl RequestHeaders {
    /// Reads the request headers; the route name property only when `route_name` (no rule
    /// matches on it otherwise, and a property read is a costly host call).
    fn read(route_name: bool) -> Result<Self, abi::HostStatus> {
        let headers = abi::header_map(Map::RequestHeaders)?;
        let mut method = None;
        let mut path = None;
        let mut host = None;
        let mut authority = None;
        let mut request_id = None;
        let mut grpc = false;
        let mut authorization = Vec::new();
        for (name, value) in headers.pairs() {
            // Header names are case-insensitive; hosts differ in the casing they report.
            // Only the wanted ones are decoded: no per-header allocation for the rest.
            let Some(wanted) = WANTED
                .iter()
                .find(|(w, _)| name.eq_ignore_ascii_case(w))
                .map(|(_, f)| *f)
            else {
                continue;
            };
            let value = into_text(value);
            match wanted {
                Wanted::Authorization => authorization.push(value),
                Wanted::Method => method = Some(value),
                Wanted::Path => path = Some(value),
                Wanted::Authority => authority = Some(value),
                Wanted::Host => host = Some(value),
                Wanted::RequestId => request_id = Some(value),
                Wanted::ContentType => grpc = grpc::is_grpc_content_type(&value),
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
            route_name: if route_name {
                string_property(&["xds", "route_name"])
            } else {
                None
            },
            authorization,
            request_id,
            grpc,
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

/// A header value as text (invalid UTF-8 with replacement characters).
fn into_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A string property; absent (or unreadable) is normal and gives `None`.
fn string_property(path: &[&str]) -> Option<String> {
    match abi::property(path) {
        Ok(Some(bytes)) if !bytes.is_empty() => String::from_utf8(bytes).ok(),
        _ => None,
    }
}
