//! The local responses that refuse a request: status, RFC 6750 / RFC 9470 challenge, JSON
//! body and gRPC status, from a refusal and the policy's realm. Below the policy: the policy
//! builds every fixed one at load (`config`), the decision builds the rest (`decide`).

use std::sync::Arc;

use super::grpc;
use super::reason::{BearerError, DenyReason, Refusal};

/// A local response refusing the request (built once per reason and rule, at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status.
    pub status: u16,
    /// The `WWW-Authenticate` challenge (absent on 500).
    pub www_authenticate: Option<Arc<str>>,
    /// A small JSON body with the same error.
    pub body: Arc<str>,
    /// Why.
    pub reason: DenyReason,
    /// The gRPC status for gRPC requests (`UNAUTHENTICATED` for 401, `PERMISSION_DENIED` for 403).
    pub grpc_status: u32,
    /// The `grpc-message` for gRPC requests (`<error>: <description>`), percent-encoded.
    pub grpc_message: Arc<str>,
    /// `Retry-After` seconds (when the refusal is the gateway's temporary state).
    pub retry_after: Option<u64>,
}

/// The local response for `refusal` under `realm`.
pub fn build(realm: &str, refusal: &Refusal) -> Denial {
    let reason = refusal.reason;
    let error = reason.bearer_error();
    let www_authenticate = match (reason, error.code()) {
        // The gateway's failures, not the credentials': no challenge.
        (DenyReason::InternalError | DenyReason::IssuerKeysUnavailable, _) => None,
        (_, None) => Some(format!("Bearer realm=\"{}\"", realm)),
        (_, Some(code)) => {
            let mut c = format!(
                "Bearer realm=\"{}\", error=\"{code}\", error_description=\"{}\"",
                realm,
                reason.description()
            );
            if let (BearerError::InsufficientScope, Some(s)) = (error, &refusal.scope) {
                c.push_str(&format!(", scope=\"{s}\""));
            }
            if error == BearerError::InsufficientUserAuthentication {
                // RFC 9470 §3; values checked at load (no quote, backslash or control).
                if let Some(acr) = &refusal.acr_values {
                    c.push_str(&format!(", acr_values=\"{acr}\""));
                }
                if let Some(max_age) = refusal.max_age {
                    c.push_str(&format!(", max_age=\"{max_age}\""));
                }
            }
            Some(c)
        }
    };
    let body = serde_json::json!({
        "error": error.code().unwrap_or(match reason {
            DenyReason::InternalError => "server_error",
            DenyReason::IssuerKeysUnavailable => "temporarily_unavailable",
            DenyReason::NoMatchingRule => "access_denied",
            _ => "unauthorized",
        }),
        "error_description": reason.description(),
    })
    .to_string();
    let grpc_message = match error.code() {
        Some(code) => format!("{code}: {}", reason.description()),
        None => reason.description().to_owned(),
    };
    Denial {
        status: reason.status(),
        www_authenticate: www_authenticate.map(Arc::from),
        body: body.into(),
        reason,
        grpc_status: grpc::status_for_http(reason.status()),
        grpc_message: grpc::percent_encode_message(&grpc_message).into(),
        retry_after: None,
    }
}
