//! The decision for one request: rule → token → requirements → mint, and the audit record.
//! Pure: time, randomness and the keys in force come in as arguments; the answer goes out
//! as a value.
//!
//! With an [`ExchangeCache`], the token-dependent steps (parse, verify, claims, trust
//! boundaries, the rule's requirements, minting) are looked up before they are done, per
//! exact token and rule; the request-dependent ones (path, rule match, identity headers,
//! query, Authorization syntax) always run, and a hit re-checks what can change without
//! the token changing (`Policy::still_stands`). See `cache` for the whole contract.

use std::sync::Arc;
use std::time::Duration;

use super::audit::{bounded, bounded_arc, AuditRecord, CacheUse, Outcome};
use super::cache::{Exchange, ExchangeCache, MintedFacts, StandingFacts, VerifiedFacts};
use super::ceiling;
use super::chain;
use super::config::{ExchangeRule, Policy, RuleMode, StripAction, Unmatched};
use super::entropy::Entropy;
use super::grpc;
use super::hygiene::identity_headers;
use super::keyset::KeySnapshot;
use super::lifecycle::{self, Provenance};
use super::mint::{mint, MintedToken};
use super::reason::{BearerError, DenyReason, Refusal};
pub use super::routing::HttpRequest;
use super::step_up;
use super::syntax::is_http_token;
use super::token::parse;
use super::validate::{validate, FetchedKeyUse, TokenFacts, VerifiedBy, VerifiedToken};

/// Ok(Some) = exchanged (now or from the cache), Ok(None) = pass, Err = deny (with what the
/// challenge names).
type EvalResult = Result<Option<(Arc<Exchange>, CacheUse)>, Refusal>;

/// The audit `mode` of a shadow rule's decisions.
const SHADOW: &str = "shadow";

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

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value, remove `Decision::strip_headers`, forward.
    Forward {
        /// `Bearer <minted token>`.
        authorization: Arc<str>,
        /// What was minted (shared with the cache entry).
        minted: Arc<MintedToken>,
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
    /// The position of the matched rule in the policy (for per-rule counters).
    pub rule_index: Option<usize>,
}

impl Decision {
    /// Turns this decision into a 500 deny: the host failed to carry it out, so nothing may
    /// be forwarded. The audit keeps the token facts but no longer claims a minted token.
    pub fn fail_internal(&mut self, policy: &Policy) {
        let reason = DenyReason::InternalError;
        self.verdict = Verdict::Deny(policy.prebuilt_denial(&reason.into(), None));
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
    /// Decides one request at `now` (since the Unix epoch) with the keys in force (the
    /// policy's own and those in `keys`: fetched issuer keys, generated signing keys),
    /// without a cache: every token is verified and a fresh token minted.
    pub fn decide(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Decision {
        self.decide_with(req, keys, now, entropy, None)
    }

    /// Decides one request at `now`, reusing (and filling) `cache`: the same decision as
    /// [`Policy::decide`] but for the minted token's reuse. A cache holding another policy's
    /// entries is emptied first: a new policy (its signing key, its rules, its revocations)
    /// never reuses what an earlier one minted.
    pub fn decide_cached(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
        cache: &mut ExchangeCache,
    ) -> Decision {
        cache.bind(self.compiled.id);
        self.decide_with(req, keys, now, entropy, Some(cache))
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
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
        cache: Option<&mut ExchangeCache>,
    ) -> Decision {
        let path = path_only(req.path);
        let mut audit = self.blank_audit(req, now);
        audit.identity_headers = identity_headers(&self.strip_headers, &req.header_names);
        let mut facts = TokenFacts::default();
        let mut rule_index = None;
        let result = self.evaluate(
            &Request {
                req,
                keys,
                path,
                now: now.as_secs(),
            },
            entropy,
            cache,
            &mut Evaluation {
                audit: &mut audit,
                facts: &mut facts,
                rule_index: &mut rule_index,
            },
        );
        let mut decision = self.finish(audit, facts, rule_index, result);
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

    fn finish(
        &self,
        mut audit: AuditRecord,
        facts: TokenFacts,
        rule_index: Option<usize>,
        result: EvalResult,
    ) -> Decision {
        audit.issuer_review_overdue = facts.review_overdue;
        let fetched_keys = facts.fetched_keys;
        let verdict = match result {
            Ok(Some((exchange, cache))) => {
                // Shared with the cache entry: reference counts, no copies.
                let f = &exchange.facts;
                audit.iss = Some(Arc::clone(&f.issuer));
                audit.sub = Some(Arc::clone(&f.subject));
                audit.caller = f.caller.clone();
                audit.token_id = Some(Arc::clone(&f.token_id));
                audit.token_verified = true;
                audit.cache = cache;
                audit.origin_iss = f.origin_issuer.clone();
                audit.origin_token_id = f.origin_token_id.clone();
                audit.chain_depth = f.chain_depth;
                audit.acr = f.acr.clone();
                audit.auth_time = f.auth_time;
                audit.ceiling_removed_scopes = f.ceiling_removed_scopes.clone();
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
            Ok(None) => {
                audit.decision = Outcome::Pass;
                audit.reason = "unmatched_pass";
                Verdict::Pass
            }
            Err(refusal) => {
                audit.iss = facts.issuer.map(|s| bounded_arc(&s, 256));
                audit.sub = facts.subject.map(|s| bounded_arc(&s, 256));
                audit.caller = facts.caller.map(|s| bounded_arc(&s, 256));
                audit.token_id = facts.token_id.map(Arc::from);
                audit.token_verified = facts.verified;
                audit.decision = Outcome::Deny;
                audit.reason = refusal.reason.code();
                audit.status = Some(refusal.reason.status());
                let mut denial = self.prebuilt_denial(&refusal, rule_index);
                if refusal.reason == DenyReason::IssuerKeysUnavailable {
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
        let strip_headers = match verdict {
            Verdict::Deny(_) => Vec::new(),
            _ => audit.identity_headers.clone(),
        };
        Decision {
            verdict,
            audit,
            strip_headers,
            fetched_keys,
            rule_index,
        }
    }

    /// A deny for a failure outside the policy (e.g. the host could not give the headers).
    pub fn internal_failure(&self, req: &HttpRequest<'_>, now: Duration) -> Decision {
        let audit = self.blank_audit(req, now);
        self.finish(
            audit,
            TokenFacts::default(),
            None,
            Err(DenyReason::InternalError.into()),
        )
    }

    /// Ok(Some) = exchanged, Ok(None) = pass, Err = deny. Records the rule (and its shadow
    /// mode) and what the verified token says in the audit as they become known.
    fn evaluate(
        &self,
        r: &Request<'_, '_>,
        entropy: &mut dyn Entropy,
        mut cache: Option<&mut ExchangeCache>,
        e: &mut Evaluation<'_>,
    ) -> EvalResult {
        if is_ambiguous_path(r.path) {
            return Err(DenyReason::AmbiguousPath.into());
        }
        let matched = self.compiled.rules.first_match(r.req, r.path);
        let Some((index, rule)) = matched.and_then(|i| self.rules.get(i).map(|rule| (i, rule)))
        else {
            return match self.unmatched {
                Unmatched::Pass => self.check_identity_headers(e.audit).map(|()| None),
                Unmatched::Deny => Err(DenyReason::NoMatchingRule.into()),
            };
        };
        *e.rule_index = Some(index);
        e.audit.rule = Some(Arc::clone(&rule.name));
        if rule.mode == RuleMode::Shadow {
            e.audit.mode = Some(SHADOW);
        }
        self.check_identity_headers(e.audit)?;
        if has_query_token(r.req.path) {
            return Err(DenyReason::TokenInQuery.into());
        }
        let token = bearer_token(&r.req.authorization)?;
        if let Some(cache) = cache.as_deref_mut() {
            if let Some(hit) = cache.lookup(token, index, r.now) {
                if self.still_stands(&hit, rule, r.keys, r.now) {
                    e.facts.review_overdue = self
                        .trusted_issuers
                        .get(hit.issuer_index)
                        .is_some_and(|t| t.review_overdue(r.now));
                    e.facts.fetched_keys = hit.fetched_keys.clone();
                    return Ok(Some((hit, CacheUse::Hit)));
                }
                cache.remove(token, index);
            }
        }
        let exchange = Arc::new(self.exchange(rule, r, token, entropy, e)?);
        if let Some(cache) = cache {
            cache.insert(token, index, Arc::clone(&exchange));
        }
        Ok(Some((exchange, CacheUse::Miss)))
    }

    /// The token-dependent work: verify, trust boundaries, requirements, mint.
    fn exchange(
        &self,
        rule: &ExchangeRule,
        r: &Request<'_, '_>,
        token: &str,
        entropy: &mut dyn Entropy,
        e: &mut Evaluation<'_>,
    ) -> Result<Exchange, Refusal> {
        let now = r.now;
        let verified = self.verify(rule, r.keys, token, now, e.facts)?;
        let audit = &mut *e.audit;
        audit.acr = verified.acr.as_deref().map(|a| bounded_arc(a, 256));
        audit.auth_time = verified.auth_time;
        if verified.gateway_token {
            audit.origin_iss = Some(bounded_arc(&verified.origin.issuer, 256));
            audit.origin_token_id = Some(bounded_arc(&verified.origin.token_id, 256));
        }
        lifecycle::standing(self, &verified, now)?;
        let depth = chain::recorded_exchanges(verified.act.as_ref())?.saturating_add(1);
        audit.chain_depth = Some(depth);
        chain::check_hop(rule, &verified, depth)?;
        ceiling::check_audience(verified.issuer, rule)?;
        check_requirements(rule, &verified, now)?;
        let grant = ceiling::granted_scopes(rule, &verified);
        if !grant.removed.is_empty() {
            audit.ceiling_removed_scopes = Some(grant.removed.join(" ").into());
        }
        grant.check().map_err(|reason| Refusal {
            // Name what the rule grants, as an insufficient_scope challenge does.
            scope: (reason == DenyReason::NoGrantableScope).then(|| rule.mint.scopes.join(" ")),
            ..Refusal::from(reason)
        })?;
        let minted = mint(self, r.keys, rule, &verified, &grant.scopes, now, entropy)?;
        let signer_fingerprint = r.keys.signer(self).and_then(|k| k.fingerprint());
        Ok(exchange_of(
            &verified,
            e.audit,
            e.facts,
            minted,
            signer_fingerprint,
        ))
    }

    /// Whether a cached exchange may be served for this request's rule at `now` with the
    /// keys in force: what can change for the same token and rule without the token
    /// changing (see `cache`). Everything here is cheap: no parse, no cryptography.
    fn still_stands(
        &self,
        x: &Exchange,
        rule: &ExchangeRule,
        keys: &KeySnapshot,
        now: u64,
    ) -> bool {
        let Some(issuer) = self.trusted_issuers.get(x.issuer_index) else {
            return false;
        };
        // The gateway key that signs now signed the cached token.
        let signer = keys.signer(self);
        if !signer
            .is_some_and(|k| *k.kid() == *x.minted.kid && k.fingerprint() == x.signer_fingerprint)
        {
            return false;
        }
        // The key that verified the presented token is still in force.
        let key_in_force = match &x.verified_by {
            VerifiedBy::Issuer {
                kid, fingerprint, ..
            } => {
                // Inline keys live and die with the policy, which the cache is bound to.
                issuer.key_source.is_none()
                    || keys
                        .select(issuer, kid.as_deref(), now)
                        .is_ok_and(|k| k.fingerprint() == *fingerprint)
            }
            VerifiedBy::Gateway { kid, fingerprint } => match keys.generated(kid) {
                Some(k) => k.fingerprint() == Some(*fingerprint),
                None => self
                    .gateway_verification_keys()
                    .iter()
                    .any(|k| k.kid() == Some(&**kid) && k.fingerprint() == *fingerprint),
            },
        };
        if !key_in_force {
            return false;
        }
        let s = &x.standing;
        let provenance = Provenance {
            issuer,
            jti: s.jti.as_deref(),
            subject: &s.subject,
            origin_token_id: &s.origin_token_id,
            origin_issued_at: s.origin_issued_at,
        };
        lifecycle::standing_of(self, &provenance, now).is_ok()
            && step_up::recent_enough(&rule.require, x.facts.auth_time, now)
    }

    /// The token's verification: the gateway's own tokens through `chain` when the rule
    /// accepts them, every other token against the trusted issuers.
    fn verify<'p>(
        &'p self,
        rule: &ExchangeRule,
        keys: &'p KeySnapshot,
        token: &str,
        now: u64,
        facts: &mut TokenFacts,
    ) -> Result<VerifiedToken<'p>, DenyReason> {
        let parsed = parse(token, &self.limits)?;
        match &rule.accept_gateway_tokens {
            Some(accept) if chain::is_gateway_token(self, &parsed) => {
                chain::verify_gateway_token(self, keys, accept, parsed, now, facts)
            }
            _ => validate(self, keys, parsed, now, facts),
        }
    }

    /// With `strip_headers_action: refuse`, a request carrying an identity header is refused.
    fn check_identity_headers(&self, audit: &AuditRecord) -> Result<(), Refusal> {
        if self.strip_headers_action == StripAction::Refuse && !audit.identity_headers.is_empty() {
            return Err(DenyReason::IdentityHeaderPresent.into());
        }
        Ok(())
    }

    /// The local response for `refusal` under rule `rule`: built at load for every reason
    /// and for what each rule's challenges name, else built now.
    pub(crate) fn prebuilt_denial(&self, refusal: &Refusal, rule: Option<usize>) -> Denial {
        let plain =
            refusal.scope.is_none() && refusal.acr_values.is_none() && refusal.max_age.is_none();
        let prebuilt = if plain {
            self.compiled
                .denials
                .get(refusal.reason as usize)
                .filter(|d| d.reason == refusal.reason)
        } else {
            rule.and_then(|i| self.compiled.rule_denials.get(i))
                .and_then(|list| list.iter().find(|(r, _)| r == refusal))
                .map(|(_, d)| d)
        };
        match prebuilt {
            Some(d) => d.clone(),
            None => self.denial(refusal),
        }
    }

    /// The refusals with a challenge particular to `rule` (what it requires, grants and
    /// asks of the authentication), for [`Policy::prebuilt_denial`].
    pub(crate) fn rule_refusals(rule: &ExchangeRule) -> Vec<Refusal> {
        let mut out = vec![
            Refusal {
                scope: Some(rule.require.scopes.join(" ")),
                ..Refusal::from(DenyReason::InsufficientScope)
            },
            Refusal {
                scope: Some(rule.mint.scopes.join(" ")),
                ..Refusal::from(DenyReason::NoGrantableScope)
            },
        ];
        if !rule.require.acr.is_empty() || rule.require.max_age_seconds.is_some() {
            for reason in [
                DenyReason::AcrNotSatisfied,
                DenyReason::AuthenticationTooOld,
            ] {
                out.push(step_up::challenge(&rule.require, reason));
            }
        }
        out
    }

    /// The local response for a refusal.
    pub fn denial(&self, refusal: &Refusal) -> Denial {
        let reason = refusal.reason;
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
}

/// The request being decided.
struct Request<'r, 'a> {
    req: &'r HttpRequest<'a>,
    keys: &'r KeySnapshot,
    /// The path without its query.
    path: &'r str,
    /// Seconds since the epoch.
    now: u64,
}

/// What an evaluation records as it goes, for the audit and the glue.
struct Evaluation<'e> {
    audit: &'e mut AuditRecord,
    facts: &'e mut TokenFacts,
    rule_index: &'e mut Option<usize>,
}

/// The exchange made for a verified token: what is forwarded, audited and cached. The
/// audit facts are taken from the record the evaluation filled in, so a hit audits exactly
/// what the miss did.
fn exchange_of(
    verified: &VerifiedToken<'_>,
    audit: &AuditRecord,
    facts: &TokenFacts,
    minted: MintedToken,
    signer_fingerprint: Option<[u8; 32]>,
) -> Exchange {
    let text = |s: &Option<String>| s.as_deref().map(|s| bounded_arc(s, 256));
    Exchange {
        authorization: format!("Bearer {}", minted.token).into(),
        minted_facts: MintedFacts::of(&minted),
        minted: Arc::new(minted),
        facts: VerifiedFacts {
            issuer: text(&facts.issuer).unwrap_or_else(|| Arc::from("")),
            subject: text(&facts.subject).unwrap_or_else(|| Arc::from("")),
            caller: text(&facts.caller),
            token_id: Arc::from(verified.token_id.as_str()),
            origin_issuer: audit.origin_iss.clone(),
            origin_token_id: audit.origin_token_id.clone(),
            chain_depth: audit.chain_depth,
            acr: audit.acr.clone(),
            auth_time: audit.auth_time,
            ceiling_removed_scopes: audit.ceiling_removed_scopes.clone(),
        },
        issuer_index: verified.issuer_index,
        verified_by: verified.verified_by.clone(),
        signer_fingerprint,
        standing: StandingFacts {
            jti: verified.jti.as_deref().map(Box::from),
            subject: verified.subject.as_str().into(),
            origin_token_id: verified.origin.token_id.as_str().into(),
            origin_issued_at: verified.origin.issued_at,
        },
        fetched_keys: facts.fetched_keys.clone(),
        original_expires_at: verified.expires_at,
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
    // %2e, %2f, %5c in any case, found without copying the path.
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
