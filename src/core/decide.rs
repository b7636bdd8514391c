//! The decision for one request: rule → token → requirements → mint, and the audit record.
//! Pure: time and randomness come in as arguments; the answer goes out as a value.
//!
//! With an [`ExchangeCache`], the token-dependent steps (parse, verify, claims, the rule's
//! requirements, minting) are looked up before they are done, per exact token and rule; the
//! request-dependent ones (path, rule match, query, Authorization syntax) always run. See
//! `cache` for what a hit reuses and re-checks.

use std::sync::Arc;
use std::time::Duration;

use super::audit::{bounded, AuditRecord, CacheUse, Outcome};
use super::cache::{Exchange, ExchangeCache, MintedFacts, VerifiedBy, VerifiedFacts};
use super::config::{ExchangeRule, Policy, Unmatched};
use super::entropy::Entropy;
use super::grpc;
use super::mint::{mint, MintedToken};
use super::reason::{BearerError, DenyReason};
pub use super::routing::HttpRequest;
use super::syntax::is_http_token;
use super::validate::{validate, TokenFacts, VerifiedToken};

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
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value, strip the policy's headers, forward.
    Forward {
        /// `Bearer <minted token>`.
        authorization: Arc<str>,
        /// What was minted (shared with the cache entry on a hit).
        minted: Arc<MintedToken>,
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
    /// The position of the matched rule in the policy (for per-rule counters).
    pub rule_index: Option<usize>,
}

impl Decision {
    /// Turns this decision into a 500 deny: the host failed to carry it out, so nothing may
    /// be forwarded. The audit keeps the token facts but no longer claims a minted token.
    pub fn fail_internal(&mut self, policy: &Policy) {
        let reason = DenyReason::InternalError;
        self.verdict = Verdict::Deny(policy.prebuilt_denial(reason, None));
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

/// How one request was evaluated.
enum Evaluated {
    /// Exchanged (now, or reused from the cache).
    Exchanged {
        rule: usize,
        exchange: Arc<Exchange>,
        cache: CacheUse,
    },
    /// No rule matched and policy says pass.
    Pass,
    /// Refused (under the matched rule, if any).
    Denied {
        rule: Option<usize>,
        reason: DenyReason,
    },
}

impl Policy {
    /// Decides one request at `now` (since the Unix epoch), without a cache: every token is
    /// verified and a fresh token minted.
    pub fn decide(
        &self,
        req: &HttpRequest<'_>,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        self.decide_with(req, now, entropy, None)
    }

    /// Decides one request at `now`, reusing (and filling) `cache`. A cache holding another
    /// policy's entries is emptied first: a new policy (its signing key, its rules) never
    /// reuses what an earlier one minted.
    pub fn decide_cached(
        &self,
        req: &HttpRequest<'_>,
        now: Duration,
        entropy: &mut dyn Entropy,
        cache: &mut ExchangeCache,
    ) -> Decision {
        cache.bind(self.compiled.id);
        self.decide_with(req, now, entropy, Some(cache))
    }

    /// A new cache with this policy's settings (`cache.enabled: false` gives one that
    /// stores nothing).
    pub fn new_cache(&self) -> ExchangeCache {
        let mut cache = ExchangeCache::new(self.cache);
        cache.bind(self.compiled.id);
        cache
    }

    fn decide_with(
        &self,
        req: &HttpRequest<'_>,
        now: Duration,
        entropy: &mut dyn Entropy,
        cache: Option<&mut ExchangeCache>,
    ) -> Decision {
        let path = path_only(req.path);
        let audit = self.blank_audit(req, now);
        let mut facts = TokenFacts::default();
        let evaluated = self.evaluate(req, path, now.as_secs(), entropy, cache, &mut facts);
        self.finish(audit, facts, evaluated)
    }

    fn blank_audit(&self, req: &HttpRequest<'_>, now: Duration) -> AuditRecord {
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
            cache: CacheUse::Miss,
            minted_jti: None,
            minted_aud: None,
            minted_scope: None,
            minted_exp: None,
            minted_kid: None,
        }
    }

    fn finish(&self, mut audit: AuditRecord, facts: TokenFacts, evaluated: Evaluated) -> Decision {
        let rule_index = match &evaluated {
            Evaluated::Exchanged { rule, .. } => Some(*rule),
            Evaluated::Denied { rule, .. } => *rule,
            Evaluated::Pass => None,
        };
        audit.rule = rule_index
            .and_then(|i| self.rules.get(i))
            .map(|r| Arc::clone(&r.name));
        let verdict = match evaluated {
            Evaluated::Exchanged {
                exchange, cache, ..
            } => {
                // Shared with the cache entry: reference counts, no copies.
                let f = &exchange.facts;
                audit.iss = Some(Arc::clone(&f.issuer));
                audit.sub = Some(Arc::clone(&f.subject));
                audit.caller = f.caller.clone();
                audit.token_id = Some(Arc::clone(&f.token_id));
                audit.token_verified = true;
                audit.cache = cache;
                let m = &exchange.minted_facts;
                audit.decision = Outcome::Allow;
                audit.reason = "exchanged";
                audit.minted_jti = Some(Arc::clone(&m.jti));
                audit.minted_aud = Some(Arc::clone(&m.audience));
                audit.minted_scope = Some(Arc::clone(&m.scope));
                audit.minted_exp = Some(exchange.minted.expires_at);
                audit.minted_kid = Some(Arc::clone(&m.kid));
                Verdict::Forward {
                    authorization: Arc::clone(&exchange.authorization),
                    minted: Arc::clone(&exchange.minted),
                }
            }
            Evaluated::Pass => {
                audit.decision = Outcome::Pass;
                audit.reason = "unmatched_pass";
                Verdict::Pass
            }
            Evaluated::Denied { rule, reason } => {
                audit.iss = facts.issuer.map(|s| bounded(&s, 256).into());
                audit.sub = facts.subject.map(|s| bounded(&s, 256).into());
                audit.caller = facts.caller.map(|s| bounded(&s, 256).into());
                audit.token_id = facts.token_id.map(Arc::from);
                audit.token_verified = facts.verified;
                audit.decision = Outcome::Deny;
                audit.reason = reason.code();
                audit.status = Some(reason.status());
                Verdict::Deny(self.prebuilt_denial(reason, rule))
            }
        };
        Decision {
            verdict,
            audit,
            rule_index,
        }
    }

    /// A deny for a failure outside the policy (e.g. the host could not give the headers).
    pub fn internal_failure(&self, req: &HttpRequest<'_>, now: Duration) -> Decision {
        let audit = self.blank_audit(req, now);
        self.finish(
            audit,
            TokenFacts::default(),
            Evaluated::Denied {
                rule: None,
                reason: DenyReason::InternalError,
            },
        )
    }

    fn evaluate(
        &self,
        req: &HttpRequest<'_>,
        path: &str,
        now: u64,
        entropy: &mut dyn Entropy,
        mut cache: Option<&mut ExchangeCache>,
        facts: &mut TokenFacts,
    ) -> Evaluated {
        let deny = |rule, reason| Evaluated::Denied { rule, reason };
        if is_ambiguous_path(path) {
            return deny(None, DenyReason::AmbiguousPath);
        }
        let matched = self.compiled.rules.first_match(req, path);
        let Some((index, rule)) = matched.and_then(|i| self.rules.get(i).map(|r| (i, r))) else {
            return match self.unmatched {
                Unmatched::Pass => Evaluated::Pass,
                Unmatched::Deny => deny(None, DenyReason::NoMatchingRule),
            };
        };
        let rule_deny = |reason| deny(Some(index), reason);
        if has_query_token(req.path) {
            return rule_deny(DenyReason::TokenInQuery);
        }
        let token = match bearer_token(&req.authorization) {
            Ok(t) => t,
            Err(r) => return rule_deny(r),
        };
        if let Some(cache) = cache.as_deref_mut() {
            if let Some(hit) = cache.lookup(token, index, now) {
                if self.recheck_cached(&hit) {
                    return Evaluated::Exchanged {
                        rule: index,
                        exchange: hit,
                        cache: CacheUse::Hit,
                    };
                }
                cache.remove(token, index);
            }
        }
        let verified = match validate(self, token, now, facts) {
            Ok(v) => v,
            Err(r) => return rule_deny(r),
        };
        if let Err(r) = check_requirements(rule, &verified) {
            return rule_deny(r);
        }
        let minted = match mint(self, rule, &verified, now, entropy) {
            Ok(m) => m,
            Err(r) => return rule_deny(r),
        };
        let exchange = Arc::new(exchange_of(&verified, facts, minted));
        if let Some(cache) = cache {
            cache.insert(token, index, Arc::clone(&exchange));
        }
        Evaluated::Exchanged {
            rule: index,
            exchange,
            cache: CacheUse::Miss,
        }
    }

    /// What a cache hit must still satisfy: the key that verified the original token is
    /// still in force (same key-set version, the key still there). Issues that change trust
    /// at runtime (fetched key sets, revocation) add their checks here.
    fn recheck_cached(&self, exchange: &Exchange) -> bool {
        let by = &exchange.verified_by;
        self.trusted_issuers.get(by.issuer_index).is_some_and(|t| {
            t.key_set_version == by.key_set_version && t.key_for(by.kid.as_deref()).is_some()
        })
    }

    /// The local response for `reason` under rule `rule`, built at load.
    pub(crate) fn prebuilt_denial(&self, reason: DenyReason, rule: Option<usize>) -> Denial {
        let per_rule = rule.and_then(|i| self.compiled.rule_denials.get(i));
        let prebuilt = match (reason, per_rule) {
            (DenyReason::InsufficientScope, Some((d, _))) => Some(d),
            (DenyReason::NoGrantableScope, Some((_, d))) => Some(d),
            _ => self.compiled.denials.get(reason as usize),
        };
        match prebuilt {
            Some(d) if d.reason == reason => d.clone(),
            _ => self.build_denial(reason, None),
        }
    }

    /// The local response for `reason` (`scope` names what an insufficient_scope lacks).
    pub fn denial(&self, reason: DenyReason, scope: Option<&str>) -> Denial {
        self.build_denial(reason, scope)
    }

    pub(crate) fn build_denial(&self, reason: DenyReason, scope: Option<&str>) -> Denial {
        let error = reason.bearer_error();
        let www_authenticate = match (reason, error.code()) {
            (DenyReason::InternalError, _) => None,
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
        }
    }
}

/// The exchange made for a verified token: what is forwarded, audited and cached.
fn exchange_of(verified: &VerifiedToken<'_>, facts: &TokenFacts, minted: MintedToken) -> Exchange {
    let text = |s: &Option<String>| s.as_deref().map(|s| Arc::from(bounded(s, 256)));
    Exchange {
        authorization: format!("Bearer {}", minted.token).into(),
        minted_facts: MintedFacts::of(&minted),
        minted: Arc::new(minted),
        facts: VerifiedFacts {
            issuer: text(&facts.issuer).unwrap_or_else(|| Arc::from("")),
            subject: text(&facts.subject).unwrap_or_else(|| Arc::from("")),
            caller: text(&facts.caller),
            token_id: verified.token_id.as_str().into(),
        },
        verified_by: VerifiedBy {
            issuer_index: verified.issuer_index,
            kid: verified.key_id.clone(),
            key_set_version: verified.issuer.key_set_version,
        },
        original_expires_at: verified.expires_at,
    }
}

fn check_requirements(rule: &ExchangeRule, t: &VerifiedToken<'_>) -> Result<(), DenyReason> {
    let req = &rule.require;
    if !req.issuers.is_empty() && rule.issuer_indices.binary_search(&t.issuer_index).is_err() {
        return Err(DenyReason::IssuerNotAllowed);
    }
    if !req.callers.is_empty() && !t.caller.as_ref().is_some_and(|c| req.callers.contains(c)) {
        return Err(DenyReason::CallerNotAllowed);
    }
    if !req.scopes.iter().all(|s| t.scopes.contains(s)) {
        return Err(DenyReason::InsufficientScope);
    }
    if !req.acr.is_empty() && !t.acr.as_ref().is_some_and(|a| req.acr.contains(a)) {
        return Err(DenyReason::AcrNotSatisfied);
    }
    if !req.amr.iter().all(|m| t.amr.contains(m)) {
        return Err(DenyReason::AmrNotSatisfied);
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
fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// Dot-segments, encoded separators or backslashes make prefix matching ambiguous between
/// this filter and the upstream's router: refuse rather than guess.
fn is_ambiguous_path(path: &str) -> bool {
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        matches!(w, [b'%', a, b] if matches!((a, b.to_ascii_lowercase()), (b'2', b'e' | b'f') | (b'5', b'c')))
    });
    encoded_separator || path.contains('\\') || path.split('/').any(|seg| seg == "." || seg == "..")
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
}
