//! The request path: headers in, one decision, header replaced or local response sent, one
//! audit line out.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, Level, Map};
use crate::core::{Decision, Entropy, EntropyError, HttpRequest, Policy, Verdict};

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
        let Some(policy) = self.policy.clone() else {
            // No valid policy was ever loaded: refuse everything.
            abi::log(
                Level::Error,
                "token-exchange-filter: no policy loaded; denying",
            );
            let _ = abi::send_local_response(500, &[("cache-control", "no-store")], b"");
            return Action::Pause;
        };
        let mut decision = match RequestHeaders::read() {
            Ok(h) => {
                let request = h.request();
                policy.decide(&request, now(), &mut HostEntropy)
            }
            Err(_) => policy.internal_failure(&HttpRequest::default(), now()),
        };
        let action = apply(&policy, &mut decision);
        abi::log(Level::Info, &decision.audit.to_json_line());
        action
    }
}

/// Carries out the verdict. Any host failure turns the decision into a 500 deny.
fn apply(policy: &Policy, decision: &mut Decision) -> Action {
    let forwarded = match &decision.verdict {
        Verdict::Forward { authorization, .. } => {
            abi::replace_header(Map::RequestHeaders, "authorization", authorization)
                .and_then(|()| strip(&decision.strip_headers))
        }
        Verdict::Pass => strip(&decision.strip_headers),
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
            if abi::send_local_response(denial.status, &headers, denial.body.as_bytes()).is_err() {
                abi::log(
                    Level::Error,
                    "token-exchange-filter: local response failed; request held",
                );
            }
            // Never continue a denied request, even if the response could not be sent.
            Action::Pause
        }
        _ => Action::Continue,
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

/// The request headers the decision needs, read once.
struct RequestHeaders {
    method: String,
    path: String,
    host: Option<String>,
    route_name: Option<String>,
    authorization: Vec<String>,
    request_id: Option<String>,
    /// Every header name, lower case.
    names: Vec<String>,
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
        let mut names = Vec::new();
        for (name, value) in pairs {
            // Header names are case-insensitive; hosts differ in the casing they report.
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&value).into_owned();
            if !name.starts_with(':') {
                names.push(name.clone());
            }
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
            names,
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
            header_names: self.names.iter().map(String::as_str).collect(),
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
