//! The audit record: one JSON line per decision. It names the original token by id (its
//! `jti`, else a hash of its signature) and never contains a token or a secret.

use serde::Serialize;

/// The decision taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Token validated, exchanged, forwarded.
    Allow,
    /// Refused with a local response (what a record says until a decision is made).
    #[default]
    Deny,
    /// No rule matched and policy says pass: forwarded untouched.
    Pass,
    /// The filter answered itself with a public document (the gateway's key set or its
    /// OpenID configuration).
    Serve,
}

/// One audit record. Field order is the JSON order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Always `token_exchange`: lets log pipelines select these lines.
    pub event: &'static str,
    /// Milliseconds since the Unix epoch (host clock).
    pub ts_ms: u64,
    /// allow / deny / pass.
    pub decision: Outcome,
    /// `exchanged`, `unmatched_pass`, a deny reason code, or what was served (`jwks`,
    /// `openid_configuration`).
    pub reason: &'static str,
    /// HTTP status of a local response (deny and serve; in shadow mode, the status enforcing
    /// would have sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `shadow` when the matched rule is in shadow mode: `decision`, `reason` and `status`
    /// say what enforcing would have done; the request was forwarded unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The matched rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `x-request-id`, when the request has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Request method.
    pub method: String,
    /// Request path without the query string (queries may carry secrets).
    pub path: String,
    /// Original issuer (`iss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Original subject (`sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Original caller (`azp`, else `client_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Original token id: its `jti`, else `sha256:` + 32 hex of its signature's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Whether `iss`/`sub`/`caller`/`token_id` come from a token whose signature verified.
    pub token_verified: bool,
    /// For a gateway token (chained exchange): the issuer of the token the chain started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_iss: Option<String>,
    /// For a gateway token: the id of the token the chain started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_token_id: Option<String>,
    /// Exchanges the minted token records (or would have): 1 at the edge, one more per hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_depth: Option<usize>,
    /// The verified token's `acr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The verified token's `auth_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The (original) issuer's `review_by` date has passed.
    #[serde(skip_serializing_if = "is_false")]
    pub issuer_review_overdue: bool,
    /// Scopes the rule would grant and the token holds, removed by the issuer's `max_scopes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_removed_scopes: Option<String>,
    /// Names (never values) of `strip_headers` the request carried: stripped, or the reason
    /// for `identity_header_present`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity_headers: Vec<String>,
    /// The minted token's `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_jti: Option<String>,
    /// The minted token's `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_aud: Option<String>,
    /// The minted token's `scope`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_scope: Option<String>,
    /// The minted token's `exp` (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_exp: Option<u64>,
    /// The `kid` that signed the minted token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_kid: Option<String>,
}

impl AuditRecord {
    /// The record as one JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings and integers cannot fail; keep a fixed fallback anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"event":"token_exchange","decision":"deny","reason":"internal_error"}"#.to_owned()
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Truncates attacker-supplied text for the log, on a char boundary.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_respects_char_boundaries() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééé", 3), "é…");
    }

    #[test]
    fn json_line_omits_absent_fields() {
        let r = AuditRecord {
            event: "token_exchange",
            ts_ms: 5,
            decision: Outcome::Deny,
            reason: "missing_token",
            status: Some(401),
            method: "GET".into(),
            path: "/x".into(),
            ..AuditRecord::default()
        };
        assert_eq!(
            r.to_json_line(),
            r#"{"event":"token_exchange","ts_ms":5,"decision":"deny","reason":"missing_token","status":401,"method":"GET","path":"/x","token_verified":false}"#
        );
    }
}
