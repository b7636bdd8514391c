//! The decision for one request: rule → token → requirements → mint, and the audit record.
//! Pure: time and randomness come in as arguments; the answer goes out as a value.

use std::time::Duration;

use super::audit::{bounded, AuditRecord, Outcome};
use super::config::{ExchangeRule, Policy, RouteMatch, Unmatched};
use super::entropy::Entropy;
use super::keyset::KeySnapshot;
use super::mint::{mint, MintedToken};
use super::reason::{BearerError, DenyReason};
use super::syntax::is_http_token;
use super::validate::{validate, FetchedKeyUse, TokenFacts, VerifiedToken};

/// Ok(Some) = exchanged, Ok(None) = pass, Err = deny (with the scopes to name, if any).
type EvalResult = Result<Option<MintedToken>, (DenyReason, Option<String>)>;

/// What the filter needs to know about a request.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `Host`, else `:authority`.
    pub host: Option<&'a str>,
    /// The host's route name (Envoy `xds.route_name`), when it exposes one.
    pub route_name: Option<&'a str>,
    /// Every `Authorization` header value (names compared case-insensitively by the caller).
    pub authorization: Vec<&'a str>,
    /// `x-request-id`, when present.
    pub request_id: Option<&'a str>,
}

/// A local response refusing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status.
    pub status: u16,
    /// The `WWW-Authenticate` challenge (absent on 500).
    pub www_authenticate: Option<String>,
    /// A small JSON body with the same error.
    pub body: String,
    /// Why.
    pub reason: DenyReason,
    /// `Retry-After` seconds (when the refusal is the gateway's temporary state).
    pub retry_after: Option<u64>,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value, strip the policy's headers, forward.
    Forward {
        /// `Bearer <minted token>`.
        authorization: String,
        /// What was minted.
        minted: Box<MintedToken>,
    },
    /// Forward untouched (no rule matched and policy says pass); strip the policy's headers.
    Pass,
    /// Send a local response; forward nothing.
    Deny(Denial),
}

/// A verdict and its audit record.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// What to log (exactly once).
    pub audit: AuditRecord,
    /// The token's issuer has fetched keys: which, and whether its key was missing (a
    /// refetch could then change this decision; the glue may wait for one).
    pub fetched_keys: Option<FetchedKeyUse>,
}

impl Decision {
    /// Turns this decision into a 500 deny: the host failed to carry it out, so nothing may
    /// be forwarded. The audit keeps the token facts but no longer claims a minted token.
    pub fn fail_internal(&mut self, policy: &Policy) {
        let reason = DenyReason::InternalError;
        self.verdict = Verdict::Deny(policy.denial(reason, None));
        self.audit.decision = Outcome::Deny;
        self.audit.reason = reason.code();
        self.audit.status = Some(reason.status());
        self.audit.minted_jti = None;
        self.audit.minted_aud = None;
        self.audit.minted_scope = None;
        self.audit.minted_exp = None;
        self.audit.minted_kid = None;
    }
}

impl Policy {
    /// Decides one request at `now` (since the Unix epoch) with the keys in force: the
    /// policy's own and those in `keys` (fetched issuer keys, generated signing keys).
    pub fn decide(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        let path = path_only(req.path);
        let mut audit = self.blank_audit(req, now);
        let mut facts = TokenFacts::default();
        let result = self.evaluate(
            req,
            keys,
            path,
            now.as_secs(),
            entropy,
            &mut audit.rule,
            &mut facts,
        );
        self.finish(audit, facts, result)
    }

    pub(crate) fn blank_audit(&self, req: &HttpRequest<'_>, now: Duration) -> AuditRecord {
        AuditRecord {
            event: "token_exchange",
            ts_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            decision: Outcome::Deny,
            reason: "",
            status: None,
            rule: None,
            request_id: req.request_id.map(|r| bounded(r, 128)),
            method: bounded(req.method, 16),
            path: bounded(path_only(req.path), 512),
            iss: None,
            sub: None,
            caller: None,
            token_id: None,
            token_verified: false,
            minted_jti: None,
            minted_aud: None,
            minted_scope: None,
            minted_exp: None,
            minted_kid: None,
        }
    }

    fn finish(&self, mut audit: AuditRecord, facts: TokenFacts, result: EvalResult) -> Decision {
        audit.iss = facts.issuer.map(|s| bounded(&s, 256));
        audit.sub = facts.subject.map(|s| bounded(&s, 256));
        audit.caller = facts.caller.map(|s| bounded(&s, 256));
        audit.token_id = facts.token_id;
        audit.token_verified = facts.verified;
        let fetched_keys = facts.fetched_keys;
        let verdict = match result {
            Ok(Some(minted)) => {
                audit.decision = Outcome::Allow;
                audit.reason = "exchanged";
                audit.minted_jti = Some(minted.jti.clone());
                audit.minted_aud = Some(minted.audience.clone());
                audit.minted_scope = Some(minted.scope.clone());
                audit.minted_exp = Some(minted.expires_at);
                audit.minted_kid = Some(minted.kid.clone());
                Verdict::Forward {
                    authorization: format!("Bearer {}", minted.token),
                    minted: Box::new(minted),
                }
            }
            Ok(None) => {
                audit.decision = Outcome::Pass;
                audit.reason = "unmatched_pass";
                Verdict::Pass
            }
            Err((reason, required)) => {
                audit.decision = Outcome::Deny;
                audit.reason = reason.code();
                audit.status = Some(reason.status());
                let mut denial = self.denial(reason, required.as_deref());
                if reason == DenyReason::IssuerKeysUnavailable {
                    // A retry sooner than the refetch interval cannot find new keys.
                    denial.retry_after = fetched_keys
                        .as_ref()
                        .and_then(|f| self.trusted_issuer(&f.issuer))
                        .and_then(|t| t.key_source.as_ref())
                        .map(|s| s.min_refetch_seconds);
                }
                Verdict::Deny(denial)
            }
        };
        Decision {
            verdict,
            audit,
            fetched_keys,
        }
    }

    /// A deny for a failure outside the policy (e.g. the host could not give the headers).
    pub fn internal_failure(&self, req: &HttpRequest<'_>, now: Duration) -> Decision {
        let audit = self.blank_audit(req, now);
        self.finish(
            audit,
            TokenFacts::default(),
            Err((DenyReason::InternalError, None)),
        )
    }

    /// Ok(Some) = exchanged, Ok(None) = pass, Err = deny (with the scopes to name, if any).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        path: &str,
        now: u64,
        entropy: &mut dyn Entropy,
        rule_name: &mut Option<String>,
        facts: &mut TokenFacts,
    ) -> EvalResult {
        if is_ambiguous_path(path) {
            return Err((DenyReason::AmbiguousPath, None));
        }
        let Some(rule) = self.rules.iter().find(|r| r.matcher.matches(req, path)) else {
            return match self.unmatched {
                Unmatched::Pass => Ok(None),
                Unmatched::Deny => Err((DenyReason::NoMatchingRule, None)),
            };
        };
        *rule_name = Some(rule.name.clone());
        if has_query_token(req.path) {
            return Err((DenyReason::TokenInQuery, None));
        }
        let token = bearer_token(&req.authorization).map_err(|r| (r, None))?;
        let verified = validate(self, keys, token, now, facts).map_err(|r| (r, None))?;
        check_requirements(rule, &verified)?;
        mint(self, keys, rule, &verified, now, entropy)
            .map(Some)
            .map_err(|r| match r {
                DenyReason::NoGrantableScope => (r, Some(rule.mint.scopes.join(" "))),
                r => (r, None),
            })
    }

    /// The local response for `reason` (`scope` names what an insufficient_scope lacks).
    pub fn denial(&self, reason: DenyReason, scope: Option<&str>) -> Denial {
        let error = reason.bearer_error();
        let www_authenticate = match (reason, error.code()) {
            // The gateway's failures, not the credentials': no challenge.
            (DenyReason::InternalError | DenyReason::IssuerKeysUnavailable, _) => None,
            (_, None) => Some(format!("Bearer realm=\"{}\"", self.realm)),
            (_, Some(code)) => {
                let mut c = format!(
                    "Bearer realm=\"{}\", error=\"{code}\", error_description=\"{}\"",
                    self.realm,
                    reason.description()
                );
                if let (BearerError::InsufficientScope, Some(s)) = (error, scope) {
                    c.push_str(&format!(", scope=\"{s}\""));
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
        Denial {
            status: reason.status(),
            www_authenticate,
            body,
            reason,
            retry_after: None,
        }
    }
}

fn check_requirements(
    rule: &ExchangeRule,
    t: &VerifiedToken<'_>,
) -> Result<(), (DenyReason, Option<String>)> {
    let req = &rule.require;
    if !req.issuers.is_empty() && !req.issuers.contains(&t.issuer.issuer) {
        return Err((DenyReason::IssuerNotAllowed, None));
    }
    if !req.callers.is_empty() && !t.caller.as_ref().is_some_and(|c| req.callers.contains(c)) {
        return Err((DenyReason::CallerNotAllowed, None));
    }
    if !req.scopes.iter().all(|s| t.scopes.contains(s)) {
        return Err((DenyReason::InsufficientScope, Some(req.scopes.join(" "))));
    }
    if !req.acr.is_empty() && !t.acr.as_ref().is_some_and(|a| req.acr.contains(a)) {
        return Err((DenyReason::AcrNotSatisfied, None));
    }
    if !req.amr.iter().all(|m| t.amr.contains(m)) {
        return Err((DenyReason::AmrNotSatisfied, None));
    }
    Ok(())
}

/// The one bearer token of the request (RFC 6750 §2.1), or why there is none.
fn bearer_token<'a>(values: &[&'a str]) -> Result<&'a str, DenyReason> {
    let value = match values {
        [] => return Err(DenyReason::MissingToken),
        [one] => *one,
        _ => return Err(DenyReason::DuplicateAuthorization),
    };
    // Proxies fold repeated headers into one, comma-separated (RFC 9110 §5.3; Envoy does for
    // Authorization). A comma is never part of a b64token, so it means several credentials.
    if value.contains(',') {
        return Err(DenyReason::DuplicateAuthorization);
    }
    if value.is_empty() {
        // An empty header carries no credentials.
        return Err(DenyReason::MissingToken);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    // auth-scheme is an RFC 9110 token: anything else (a tab, a colon, nothing) is malformed.
    if !is_http_token(scheme) {
        return Err(DenyReason::MalformedAuthorization);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme: no bearer credentials were presented.
        return Err(DenyReason::MissingToken);
    }
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = rest.trim_end_matches('=');
    let b64token = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !b64token {
        return Err(DenyReason::MalformedAuthorization);
    }
    Ok(rest)
}

/// An RFC 6750 §2.3 `access_token` query parameter: a credential the filter would forward
/// untouched in the URL, beside the exchanged one.
fn has_query_token(path: &str) -> bool {
    let before_fragment = path.split('#').next().unwrap_or_default();
    let Some((_, query)) = before_fragment.split_once('?') else {
        return false;
    };
    query.split('&').any(|param| {
        let name = param.split('=').next().unwrap_or_default();
        name.eq_ignore_ascii_case("access_token") || name.eq_ignore_ascii_case("access%5Ftoken")
    })
}

/// The path without its query string or fragment.
pub(crate) fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// Dot-segments, encoded separators or backslashes make prefix matching ambiguous between
/// this filter and the upstream's router: refuse rather than guess.
fn is_ambiguous_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || path.split('/').any(|seg| seg == "." || seg == "..")
}

impl RouteMatch {
    /// Whether this request (with `path` stripped of its query) is in scope.
    pub fn matches(&self, req: &HttpRequest<'_>, path: &str) -> bool {
        if let Some(exact) = &self.path {
            if path != exact {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let segment_ok = match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
                None => false,
            };
            if !segment_ok {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        if let Some(host) = &self.host {
            let Some(actual) = req.host else {
                return false;
            };
            let actual = actual.to_ascii_lowercase();
            let compared = if host.contains(':') {
                actual.as_str()
            } else {
                strip_port(&actual)
            };
            if compared != host {
                return false;
            }
        }
        if let Some(route) = &self.route {
            if req.route_name != Some(route.as_str()) {
                return false;
            }
        }
        true
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(&[]), Err(DenyReason::MissingToken));
        assert_eq!(
            bearer_token(&["Bearer a.b.c", "Bearer a.b.c"]),
            Err(DenyReason::DuplicateAuthorization)
        );
        assert_eq!(
            bearer_token(&["Basic dXNlcjpwYXNz"]),
            Err(DenyReason::MissingToken)
        );
        assert_eq!(
            bearer_token(&["Bearer"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["Bearer "]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["Bearer  a.b.c"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["Bearer a.b.c x"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["Bearer a.b.c\t"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&[" Bearer a.b.c"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(bearer_token(&["bEaReR a.b.c"]), Ok("a.b.c"));
        assert_eq!(
            bearer_token(&["Bearer\ta.b.c"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["Bearer: a.b.c"]),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&["eyJhbGciOiJ9.e30.c2ln"]),
            Err(DenyReason::MissingToken)
        );
        // Two headers folded into one by a proxy.
        assert_eq!(
            bearer_token(&["Bearer a.b.c,Bearer d.e.f"]),
            Err(DenyReason::DuplicateAuthorization)
        );
        assert_eq!(
            bearer_token(&["Basic YTpi, Bearer d.e.f"]),
            Err(DenyReason::DuplicateAuthorization)
        );
    }

    #[test]
    fn query_tokens() {
        assert!(has_query_token("/a?access_token=x"));
        assert!(has_query_token("/a?b=1&ACCESS_TOKEN=x"));
        assert!(has_query_token("/a?access%5Ftoken=x"));
        assert!(has_query_token("/a?access_token"));
        assert!(!has_query_token("/a?my_access_token=x"));
        assert!(!has_query_token("/access_token"));
        assert!(!has_query_token("/a#?access_token=x"));
    }

    #[test]
    fn ambiguous_paths() {
        for p in ["/a/../b", "/a/./b", "/..", "/a%2fb", "/a%2E%2E/b", "/a\\b"] {
            assert!(is_ambiguous_path(p), "{p}");
        }
        for p in ["/a/b", "/a..b/c", "/", "/a/.well-known"] {
            assert!(!is_ambiguous_path(p), "{p}");
        }
    }

    #[test]
    fn route_matching() {
        let m = RouteMatch {
            path_prefix: Some("/orders".into()),
            methods: vec!["GET".into()],
            host: Some("api.example.com".into()),
            ..Default::default()
        };
        let req = |method, path, host| HttpRequest {
            method,
            path,
            host,
            ..Default::default()
        };
        assert!(m.matches(&req("GET", "", Some("api.example.com")), "/orders"));
        assert!(m.matches(&req("GET", "", Some("API.example.com:8443")), "/orders/1"));
        assert!(!m.matches(&req("GET", "", Some("api.example.com")), "/orders-admin"));
        assert!(!m.matches(&req("POST", "", Some("api.example.com")), "/orders"));
        assert!(!m.matches(&req("GET", "", Some("evil.com")), "/orders"));
        assert!(!m.matches(&req("GET", "", None), "/orders"));
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("h:80"), "h");
    }
}
