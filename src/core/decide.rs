//! The decision for one request: rule → token → requirements → mint, and the audit record.
//! Pure: time and randomness come in as arguments; the answer goes out as a value.

use std::time::Duration;

use super::audit::{bounded, AuditRecord, Outcome};
use super::ceiling;
use super::chain;
use super::config::{ExchangeRule, Policy, RouteMatch, RuleMode, StripAction, Unmatched};
use super::entropy::Entropy;
use super::grpc;
use super::hygiene::identity_headers;
use super::introspect::{
    confirm_active, is_opaque, verify_opaque, IntrospectionLookup, IntrospectionNeed,
    NoIntrospection,
};
use super::keyset::KeySnapshot;
use super::lifecycle;
use super::mint::{mint, MintedToken};
use super::reason::{BearerError, DenyReason, Refusal};
use super::step_up;
use super::syntax::is_http_token;
use super::token::parse;
use super::validate::{validate, FetchedKeyUse, TokenFacts, VerifiedToken};

/// Ok(Some) = exchanged, Ok(None) = pass, Err = deny (with what the challenge names).
type EvalResult = Result<Option<MintedToken>, Refusal>;

/// The audit `mode` of a shadow rule's decisions.
const SHADOW: &str = "shadow";

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
    /// The names of all request headers (for `strip_headers`; any case).
    pub header_names: Vec<&'a str>,
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
    /// The gRPC status for gRPC requests (`UNAUTHENTICATED` for 401, `PERMISSION_DENIED` for 403).
    pub grpc_status: u32,
    /// The `grpc-message` for gRPC requests (`<error>: <description>`), percent-encoded.
    pub grpc_message: String,
    /// `Retry-After` seconds (when the refusal is the gateway's temporary state).
    pub retry_after: Option<u64>,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value, remove `Decision::strip_headers`, forward.
    Forward {
        /// `Bearer <minted token>`.
        authorization: String,
        /// What was minted.
        minted: Box<MintedToken>,
    },
    /// Forward without exchanging the token (no rule matched and policy says pass, or the
    /// rule is in shadow mode); remove `Decision::strip_headers`.
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
    /// Request headers to remove before forwarding (those of `strip_headers` it carries).
    pub strip_headers: Vec<String>,
    /// The token's issuer has fetched keys: which, and whether its key was missing (a
    /// refetch could then change this decision; the glue may wait for one).
    pub fetched_keys: Option<FetchedKeyUse>,
    /// The token needs an introspection answer this decision did not have (it is refused
    /// as unavailable; the glue may ask and decide again).
    pub introspection: Option<IntrospectionNeed>,
}

impl Decision {
    /// Turns this decision into a 500 deny: the host failed to carry it out, so nothing may
    /// be forwarded. The audit keeps the token facts but no longer claims a minted token.
    pub fn fail_internal(&mut self, policy: &Policy) {
        let reason = DenyReason::InternalError;
        self.verdict = Verdict::Deny(policy.denial(&reason.into()));
        self.audit.decision = Outcome::Deny;
        self.audit.reason = reason.code();
        self.audit.status = Some(reason.status());
        // What happened is this deny, whatever a shadowed rule would have done.
        self.audit.mode = None;
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
    /// Tokens that need introspection are refused as unavailable (see `decide_introspected`).
    pub fn decide(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        self.decide_introspected(req, keys, &NoIntrospection, now, entropy)
    }

    /// As `decide`, with the introspection answers known in `introspections`.
    pub fn decide_introspected(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        introspections: &dyn IntrospectionLookup,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        let path = path_only(req.path);
        let mut audit = self.blank_audit(req, now);
        audit.identity_headers = identity_headers(&self.strip_headers, &req.header_names);
        let mut facts = TokenFacts::default();
        let result = self.evaluate(
            req,
            (keys, introspections),
            path,
            now.as_secs(),
            entropy,
            &mut audit,
            &mut facts,
        );
        let mut decision = self.finish(audit, facts, result);
        if decision.audit.mode == Some(SHADOW) {
            // Audited as enforcing would have decided; forwarded as it came (minus the
            // identity headers, which no rule's mode affects).
            decision.verdict = Verdict::Pass;
            decision.strip_headers = decision.audit.identity_headers.clone();
        }
        decision
    }

    pub(crate) fn blank_audit(&self, req: &HttpRequest<'_>, now: Duration) -> AuditRecord {
        AuditRecord {
            event: "token_exchange",
            ts_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            request_id: req.request_id.map(|r| bounded(r, 128)),
            method: bounded(req.method, 16),
            path: bounded(path_only(req.path), 512),
            ..AuditRecord::default()
        }
    }

    fn finish(&self, mut audit: AuditRecord, facts: TokenFacts, result: EvalResult) -> Decision {
        audit.iss = facts.issuer.map(|s| bounded(&s, 256));
        audit.sub = facts.subject.map(|s| bounded(&s, 256));
        audit.caller = facts.caller.map(|s| bounded(&s, 256));
        audit.token_id = facts.token_id;
        audit.token_verified = facts.verified;
        audit.issuer_review_overdue = facts.review_overdue;
        let fetched_keys = facts.fetched_keys;
        let introspection = facts.introspection;
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
            Err(refusal) => {
                audit.decision = Outcome::Deny;
                audit.reason = refusal.reason.code();
                audit.status = Some(refusal.reason.status());
                let mut denial = self.denial(&refusal);
                if refusal.reason == DenyReason::IssuerKeysUnavailable {
                    // A retry sooner than the refetch interval cannot find new keys.
                    denial.retry_after = fetched_keys
                        .as_ref()
                        .and_then(|f| self.trusted_issuer(&f.issuer))
                        .and_then(|t| t.key_source.as_ref())
                        .map(|s| s.min_refetch_seconds);
                }
                if refusal.reason == DenyReason::IntrospectionUnavailable {
                    // The next request asks the endpoint again.
                    denial.retry_after = Some(1);
                }
                Verdict::Deny(denial)
            }
        };
        let strip_headers = match verdict {
            Verdict::Deny(_) => Vec::new(),
            _ => audit.identity_headers.clone(),
        };
        Decision {
            verdict,
            audit,
            strip_headers,
            fetched_keys,
            introspection,
        }
    }

    /// A deny for a failure outside the policy (e.g. the host could not give the headers).
    pub fn internal_failure(&self, req: &HttpRequest<'_>, now: Duration) -> Decision {
        let audit = self.blank_audit(req, now);
        self.finish(
            audit,
            TokenFacts::default(),
            Err(DenyReason::InternalError.into()),
        )
    }

    /// Ok(Some) = exchanged, Ok(None) = pass, Err = deny. Records the rule (and its shadow
    /// mode) and what the verified token says in `audit` as they become known.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        req: &HttpRequest<'_>,
        (keys, introspections): (&KeySnapshot, &dyn IntrospectionLookup),
        path: &str,
        now: u64,
        entropy: &mut dyn Entropy,
        audit: &mut AuditRecord,
        facts: &mut TokenFacts,
    ) -> EvalResult {
        if is_ambiguous_path(path) {
            return Err(DenyReason::AmbiguousPath.into());
        }
        let Some(rule) = self.rules.iter().find(|r| r.matcher.matches(req, path)) else {
            return match self.unmatched {
                Unmatched::Pass => self.check_identity_headers(audit).map(|()| None),
                Unmatched::Deny => Err(DenyReason::NoMatchingRule.into()),
            };
        };
        audit.rule = Some(rule.name.clone());
        if rule.mode == RuleMode::Shadow {
            audit.mode = Some(SHADOW);
        }
        self.check_identity_headers(audit)?;
        if has_query_token(req.path) {
            return Err(DenyReason::TokenInQuery.into());
        }
        let token = bearer_token(&req.authorization)?;
        let verified = self.verify(rule, (keys, introspections), token, now, facts)?;
        audit.acr = verified.acr.as_deref().map(|a| bounded(a, 256));
        audit.auth_time = verified.auth_time;
        if verified.gateway_token {
            audit.origin_iss = Some(bounded(&verified.origin.issuer, 256));
            audit.origin_token_id = Some(bounded(&verified.origin.token_id, 256));
        }
        lifecycle::standing(self, &verified, now)?;
        let depth = chain::recorded_exchanges(verified.act.as_ref())?.saturating_add(1);
        audit.chain_depth = Some(depth);
        chain::check_hop(rule, &verified, depth)?;
        ceiling::check_audience(verified.issuer, rule)?;
        check_requirements(rule, &verified, now)?;
        let grant = ceiling::granted_scopes(rule, &verified);
        if !grant.removed.is_empty() {
            audit.ceiling_removed_scopes = Some(grant.removed.join(" "));
        }
        grant.check().map_err(|reason| Refusal {
            // Name what the rule grants, as an insufficient_scope challenge does.
            scope: (reason == DenyReason::NoGrantableScope).then(|| rule.mint.scopes.join(" ")),
            ..Refusal::from(reason)
        })?;
        Ok(Some(mint(
            self,
            keys,
            rule,
            &verified,
            &grant.scopes,
            now,
            entropy,
        )?))
    }

    /// The token's verification: the gateway's own tokens through `chain` when the rule
    /// accepts them, opaque tokens by introspection at the issuer that takes them, every
    /// other token against the trusted issuers (and, with `introspect_jwts`, also at its
    /// issuer's introspection endpoint).
    fn verify<'p>(
        &'p self,
        rule: &ExchangeRule,
        (keys, introspections): (&'p KeySnapshot, &dyn IntrospectionLookup),
        token: &str,
        now: u64,
        facts: &mut TokenFacts,
    ) -> Result<VerifiedToken<'p>, DenyReason> {
        if token.len() > self.limits.max_token_bytes {
            return Err(DenyReason::TokenTooLarge);
        }
        if let Some((issuer, _)) = self.opaque_issuer().filter(|_| is_opaque(token)) {
            // Never ask the provider about a token this rule could not take anyway.
            if !rule.require.issuers.is_empty() && !rule.require.issuers.contains(&issuer.issuer) {
                return Err(DenyReason::IssuerNotAllowed);
            }
            return verify_opaque(self, issuer, token, introspections, now, facts);
        }
        let parsed = parse(token, &self.limits)?;
        let verified = match &rule.accept_gateway_tokens {
            Some(accept) if chain::is_gateway_token(self, &parsed) => {
                chain::verify_gateway_token(self, keys, accept, parsed, now, facts)
            }
            _ => validate(self, keys, parsed, now, facts),
        }?;
        if !verified.gateway_token && verified.issuer.jwt_introspection().is_some() {
            confirm_active(verified.issuer, token, introspections, facts)?;
        }
        Ok(verified)
    }

    /// With `strip_headers_action: refuse`, a request carrying an identity header is refused.
    fn check_identity_headers(&self, audit: &AuditRecord) -> Result<(), Refusal> {
        if self.strip_headers_action == StripAction::Refuse && !audit.identity_headers.is_empty() {
            return Err(DenyReason::IdentityHeaderPresent.into());
        }
        Ok(())
    }

    /// The local response for a refusal.
    pub fn denial(&self, refusal: &Refusal) -> Denial {
        let reason = refusal.reason;
        let error = reason.bearer_error();
        let www_authenticate = match (reason, error.code()) {
            // The gateway's failures, not the credentials': no challenge.
            (
                DenyReason::InternalError
                | DenyReason::IssuerKeysUnavailable
                | DenyReason::IntrospectionUnavailable,
                _,
            ) => None,
            (_, None) => Some(format!("Bearer realm=\"{}\"", self.realm)),
            (_, Some(code)) => {
                let mut c = format!(
                    "Bearer realm=\"{}\", error=\"{code}\", error_description=\"{}\"",
                    self.realm,
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
                DenyReason::IssuerKeysUnavailable | DenyReason::IntrospectionUnavailable => {
                    "temporarily_unavailable"
                }
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
            www_authenticate,
            body,
            reason,
            grpc_status: grpc::status_for_http(reason.status()),
            grpc_message: grpc::percent_encode_message(&grpc_message),
            retry_after: None,
        }
    }
}

fn check_requirements(rule: &ExchangeRule, t: &VerifiedToken<'_>, now: u64) -> Result<(), Refusal> {
    let req = &rule.require;
    if !req.issuers.is_empty() && !req.issuers.contains(&t.issuer.issuer) {
        return Err(DenyReason::IssuerNotAllowed.into());
    }
    if !req.callers.is_empty() && !t.caller.as_ref().is_some_and(|c| req.callers.contains(c)) {
        return Err(DenyReason::CallerNotAllowed.into());
    }
    if !req.scopes.iter().all(|s| t.scopes.contains(s)) {
        return Err(Refusal {
            scope: Some(req.scopes.join(" ")),
            ..Refusal::from(DenyReason::InsufficientScope)
        });
    }
    ceiling::check_required_scopes(t.issuer, &req.scopes)?;
    step_up::check(req, t, now)?;
    if !req.amr.iter().all(|m| t.amr.contains(m)) {
        return Err(DenyReason::AmrNotSatisfied.into());
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
            if !is_under_prefix(path, prefix) {
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
            if !host_matches(host, actual) {
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

/// Segment-aware prefix match: `/orders` takes `/orders` and `/orders/1`, not `/orders-admin`.
pub(crate) fn is_under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// A rule's `host` (lower case) against the request's: case-insensitive, the port ignored
/// unless the rule names one.
pub(crate) fn host_matches(rule_host: &str, actual: &str) -> bool {
    let actual = actual.to_ascii_lowercase();
    let compared = if rule_host.contains(':') {
        actual.as_str()
    } else {
        strip_port(&actual)
    };
    compared == rule_host
}

pub(crate) fn strip_port(host: &str) -> &str {
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
