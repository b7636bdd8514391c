//! Fetching issuers' keys: what to fetch and when (`schedule`, a state machine driven by a
//! clock), the calls to make (as values: [`FetchRequest`]), and what to make of the answers
//! (`response`). The glue carries the requests out and hands the answers back as bytes; the
//! shared [`FetchState`] it keeps between workers is a value this module computes.

mod response;
mod schedule;

pub use response::{parse_discovery, parse_jwks, CallResponse};
pub use schedule::{
    Attempt, FetchState, Health, HealthChange, Lease, Plan, Schedule, Step, Trigger,
};

use std::fmt;

use sha2::{Digest, Sha256};

use super::config::{JwksLocation, KeySource, TrustedIssuer};

/// One outgoing call: what the host's `dispatch_http_call` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The host's name for the endpoint (an Envoy cluster, Kong's `host:port`).
    pub upstream: String,
    /// `:authority`, from the URL.
    pub authority: String,
    /// `:path` (with the query), from the URL.
    pub path: String,
    /// `:scheme`, from the URL (Kong's host dispatches over TLS for `https`).
    pub scheme: &'static str,
    /// `accept`.
    pub accept: &'static str,
    /// The deadline, in milliseconds (also enforced by the caller: some hosts apply it per
    /// socket operation only).
    pub timeout_ms: u64,
    /// The largest body accepted.
    pub max_bytes: usize,
}

impl FetchRequest {
    /// The headers of the call, pseudo-headers first.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            (":method", "GET"),
            (":path", &self.path),
            (":authority", &self.authority),
            (":scheme", self.scheme),
            ("accept", self.accept),
        ]
    }
}

/// Why one attempt failed. Each is logged (once per change) with the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The host refused to send the call (its status): a wrong `jwks_upstream`, usually.
    DispatchRefused(u32),
    /// No HTTP response: connection refused, reset, or the host's timeout (with the host's
    /// `:dispatch_status`, when it gives one).
    NoResponse(Option<String>),
    /// No answer within `jwks_timeout_ms`.
    TimedOut,
    /// A redirect: not followed (the URL is configuration, not the endpoint's choice).
    Redirect(u16),
    /// Any other status than 200.
    Status(u16),
    /// `content-type` is not JSON.
    NotJson(Option<String>),
    /// The body is larger than `jwks_max_bytes`.
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid document (strict JSON, the members required).
    Invalid(String),
    /// A key set without a single usable key.
    NoUsableKeys(String),
    /// The discovery document names another issuer (OIDC Discovery §4.3).
    IssuerMismatch,
}

impl FetchFailure {
    /// A short stable name of the kind of failure (a change of kind is logged again).
    pub fn kind(&self) -> String {
        match self {
            FetchFailure::DispatchRefused(s) => format!("dispatch_refused_{s}"),
            FetchFailure::NoResponse(_) => "no_response".into(),
            FetchFailure::TimedOut => "timeout".into(),
            FetchFailure::Redirect(s) | FetchFailure::Status(s) => format!("http_{s}"),
            FetchFailure::NotJson(_) => "not_json".into(),
            FetchFailure::TooLarge { .. } => "too_large".into(),
            FetchFailure::Invalid(_) => "invalid".into(),
            FetchFailure::NoUsableKeys(_) => "no_usable_keys".into(),
            FetchFailure::IssuerMismatch => "issuer_mismatch".into(),
        }
    }
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchFailure::DispatchRefused(s) => write!(
                f,
                "the host refused the call (status {s}): check jwks_upstream"
            ),
            FetchFailure::NoResponse(None) => f.write_str("no response (connection failed)"),
            FetchFailure::NoResponse(Some(d)) => write!(f, "no response ({d})"),
            FetchFailure::TimedOut => f.write_str("no response within jwks_timeout_ms"),
            FetchFailure::Redirect(s) => write!(f, "HTTP {s}: redirects are not followed"),
            FetchFailure::Status(s) => write!(f, "HTTP {s}"),
            FetchFailure::NotJson(None) => f.write_str("no content-type (JSON expected)"),
            FetchFailure::NotJson(Some(t)) => write!(f, "content-type {t:?} is not JSON"),
            FetchFailure::TooLarge { size, max } => {
                write!(
                    f,
                    "body of {size} bytes is larger than jwks_max_bytes ({max})"
                )
            }
            FetchFailure::Invalid(why) => write!(f, "invalid document: {why}"),
            FetchFailure::NoUsableKeys(why) => write!(f, "no usable key: {why}"),
            FetchFailure::IssuerMismatch => {
                f.write_str("the discovery document names another issuer (OIDC Discovery 4.3)")
            }
        }
    }
}

/// A name for an issuer's key source that changes whenever what would be fetched changes
/// (issuer, URL or discovery, upstream): shared records of an older configuration are then
/// never mistaken for the current one.
pub fn source_id(issuer: &TrustedIssuer, source: &KeySource) -> String {
    let mut h = Sha256::new();
    let location = match &source.location {
        JwksLocation::Uri(u) => format!("uri {u}"),
        JwksLocation::Discovery(u) => format!("discovery {u}"),
    };
    for part in [
        issuer.issuer.as_str(),
        location.as_str(),
        source.upstream.as_str(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}
