//! Validating an incoming token against the issuer allow list: structure, trust,
//! signature, then claims. Order matters: nothing about a token's claims is believed (or
//! reported as a reason) before its signature verifies, except what is needed to find the
//! key (`iss`, `alg`, `kid`) and cheap size limits.
//!
//! The gateway's own tokens (a chained exchange) are verified in `chain` with the gateway's
//! keys; both paths read the verified claims through [`ClaimFacts`].

use std::sync::Arc;

use serde_json::{Map, Value};

use super::claims::{caller_hint, DEFAULT_CALLER_CLAIMS};
use super::config::{Policy, TrustedIssuer};
use super::introspect::IntrospectionNeed;
use super::keys::{Alg, IssuerKey};
use super::keyset::{KeyMiss, KeySnapshot};
use super::reason::DenyReason;
use super::token::ParsedToken;

/// What is known about a token for the audit record, verified or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    /// `iss`, if a string.
    pub issuer: Option<String>,
    /// `sub`, if a string.
    pub subject: Option<String>,
    /// The caller (the issuer's caller claims, else `azp`/`client_id`), if a string.
    pub caller: Option<String>,
    /// `jti` or a hash of the signature (never the token).
    pub token_id: Option<String>,
    /// Whether the signature verified (facts from unverified tokens are attacker-supplied).
    pub verified: bool,
    /// The trusted issuer with fetched keys whose key set was consulted, and what was
    /// missing from it (for the glue: a refetch may change the decision).
    pub fetched_keys: Option<FetchedKeyUse>,
    /// Whether the (original) issuer's `review_by` date has passed.
    pub review_overdue: bool,
    /// An introspection answer the decision needed and did not have (the glue may ask).
    pub introspection: Option<IntrospectionNeed>,
}

impl TokenFacts {
    /// Records what a parsed (not yet verified) token says about itself.
    pub fn observe(&mut self, parsed: &ParsedToken<'_>) {
        self.issuer = str_claim(&parsed.claims, "iss").map(str::to_owned);
        self.subject = str_claim(&parsed.claims, "sub").map(str::to_owned);
        self.token_id = Some(parsed.token_id());
    }
}

/// The token a delegation chain started from: named in the minted `exchanged_from`, and
/// what revocation is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The original token's issuer (a trusted issuer).
    pub issuer: String,
    /// The original token's id (its `jti`, or a hash of its signature).
    pub token_id: String,
    /// The original token's `iat`, when it had one.
    pub issued_at: Option<u64>,
}

/// Which key verified a token: what a cached exchange checks is still in force on a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedBy {
    /// A trusted issuer's key, inline or fetched.
    Issuer {
        /// Its `kid` (None: the issuer's only key, without kid).
        kid: Option<Arc<str>>,
        /// Its [`IssuerKey::fingerprint`]: a key re-published under the same `kid` with
        /// other material is another key.
        fingerprint: [u8; 32],
        /// The issuer's fetched key-set version then (0 without fetched keys).
        key_set_version: u64,
    },
    /// The gateway's own key (a chained exchange of one of its tokens).
    Gateway {
        /// Its `kid`.
        kid: Arc<str>,
        /// Its [`IssuerKey::fingerprint`].
        fingerprint: [u8; 32],
    },
    /// The issuer's introspection endpoint answered active (an opaque token): a hit
    /// checks that the answer is still known active.
    Introspection,
}

/// A token that passed every issuer-level check.
#[derive(Debug, Clone)]
pub struct VerifiedToken<'p> {
    /// The issuer that vouched for it; for a gateway token, the original token's issuer
    /// (its ceilings, lifecycle and revocation still apply).
    pub issuer: &'p TrustedIssuer,
    /// The position of `issuer` among the policy's trusted issuers.
    pub issuer_index: usize,
    /// The key that verified it.
    pub verified_by: VerifiedBy,
    /// All its claims.
    pub claims: Map<String, Value>,
    /// `sub`.
    pub subject: String,
    /// The caller: from the issuer's caller claims (by default `azp`, else `client_id`); for
    /// a gateway token, the service it was minted for (its `aud`), which now acts.
    pub caller: Option<String>,
    /// The scopes, from the issuer's scope claims (by default `scope`, else `scp`).
    pub scopes: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `auth_time`, in seconds.
    pub auth_time: Option<u64>,
    /// `exp`, in seconds.
    pub expires_at: u64,
    /// `iat`, in seconds.
    pub issued_at: Option<u64>,
    /// The token's id (its `jti`, or a hash of its signature).
    pub token_id: String,
    /// The raw `jti`.
    pub jti: Option<String>,
    /// The token the chain started from (this token itself at the edge).
    pub origin: Origin,
    /// The delegation chain it carries (`act`, newest outermost), if any.
    pub act: Option<Value>,
    /// Whether it is the gateway's own token (a chained exchange).
    pub gateway_token: bool,
}

/// A token's trusted issuer has fetched keys: which, and whether its key was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKeyUse {
    /// The issuer (`iss`).
    pub issuer: String,
    /// Why no key was found, when none was.
    pub missing: Option<KeyMiss>,
}

/// Validates a parsed edge token at time `now` (seconds since the epoch). Gateway tokens are
/// refused here (`gateway_token_replay`); rules that take them verify them in `chain`.
pub fn validate<'p>(
    policy: &'p Policy,
    keys: &'p KeySnapshot,
    parsed: ParsedToken<'_>,
    now: u64,
    facts: &mut TokenFacts,
) -> Result<VerifiedToken<'p>, DenyReason> {
    facts.observe(&parsed);
    let claims = &parsed.claims;
    let issuer = trusted_issuer(policy, claims).and_then(|i| {
        policy
            .trusted_issuers
            .get(i)
            .map(|t| (i, t))
            .ok_or(DenyReason::UntrustedIssuer)
    });
    // The audit names the caller the way the issuer's tokens do; unknown issuers: the defaults.
    facts.caller = match &issuer {
        Ok((_, t)) => caller_hint(claims, t.claims.caller_claims()),
        Err(_) => caller_hint(claims, DEFAULT_CALLER_CLAIMS),
    }
    .map(str::to_owned);
    let (issuer_index, issuer) = issuer?;
    facts.review_overdue = issuer.review_overdue(now);
    let alg = Alg::from_verify_name(&parsed.alg)
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(DenyReason::AlgorithmNotAllowed)?;
    // A cheap bound before any cryptography.
    if issuer.claims.scope_count(claims) > policy.limits.max_scopes {
        return Err(DenyReason::TooManyScopes);
    }
    // Inline keys first, then the issuer's fetched keys in force (`keys`).
    let key = keys.select(issuer, parsed.kid.as_deref(), now);
    if issuer.key_source.is_some() {
        facts.fetched_keys = Some(FetchedKeyUse {
            issuer: issuer.issuer.clone(),
            missing: key.as_ref().err().copied(),
        });
    }
    let key = key.map_err(|miss| match miss {
        KeyMiss::UnknownKid => DenyReason::UnknownKey,
        KeyMiss::Unavailable => DenyReason::IssuerKeysUnavailable,
    })?;
    check_signature(key, alg, &parsed)?;
    let verified_by = VerifiedBy::Issuer {
        kid: key.kid().map(Arc::from),
        fingerprint: key.fingerprint(),
        key_set_version: keys.fetched(&issuer.issuer).map_or(0, |s| s.version),
    };
    facts.verified = true;
    // Computed once by `observe` (it may hash the signature).
    let token_id = facts.token_id.clone().unwrap_or_else(|| parsed.token_id());
    vouched(
        policy,
        (issuer_index, issuer),
        verified_by,
        parsed.claims,
        token_id,
        now,
    )
}

/// The checks on the claims of a token `issuer` vouched for (its signature verified, or its
/// introspection endpoint answered active): lifetime, audience, subject and authentication
/// context, caller, delegation, scopes. `token_id` names it in the audit and for revocation.
pub(crate) fn vouched<'p>(
    policy: &'p Policy,
    (issuer_index, issuer): (usize, &'p TrustedIssuer),
    verified_by: VerifiedBy,
    claims: Map<String, Value>,
    token_id: String,
    now: u64,
) -> Result<VerifiedToken<'p>, DenyReason> {
    let lifetime = Lifetime::read(&claims, policy.clock_skew_seconds, now)?;
    if !audiences(&claims)?
        .iter()
        .any(|a| issuer.audiences.iter().any(|ok| ok == *a))
    {
        return Err(DenyReason::AudienceMismatch);
    }
    let read = ClaimFacts::read(&claims, now, policy.clock_skew_seconds)?;
    let caller = issuer.claims.caller(&claims)?.map(str::to_owned);
    if caller.as_deref().is_some_and(has_control) {
        return Err(DenyReason::InvalidClaim);
    }
    let act = match claims.get("act") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    let scopes = issuer.claims.scopes(&claims, policy.limits.max_scopes)?;
    Ok(VerifiedToken {
        issuer,
        issuer_index,
        verified_by,
        subject: read.subject,
        caller,
        scopes,
        acr: read.acr,
        amr: read.amr,
        auth_time: read.auth_time,
        expires_at: lifetime.expires_at,
        issued_at: lifetime.issued_at,
        origin: Origin {
            issuer: issuer.issuer.clone(),
            token_id: token_id.clone(),
            issued_at: lifetime.issued_at,
        },
        token_id,
        jti: read.jti,
        act,
        gateway_token: false,
        claims,
    })
}

/// A verified token's lifetime, checked against `now` with the clock skew.
pub(crate) struct Lifetime {
    pub(crate) expires_at: u64,
    pub(crate) issued_at: Option<u64>,
}

impl Lifetime {
    /// `exp` (required), `nbf`, `iat`.
    pub(crate) fn read(
        claims: &Map<String, Value>,
        skew: u64,
        now: u64,
    ) -> Result<Lifetime, DenyReason> {
        let expires_at = numeric_date(claims, "exp")?.ok_or(DenyReason::MissingClaim)?;
        let not_before = numeric_date(claims, "nbf")?;
        let issued_at = numeric_date(claims, "iat")?;
        // Valid while now < exp + skew (RFC 7519 §4.1.4).
        if now >= expires_at.saturating_add(skew) {
            return Err(DenyReason::TokenExpired);
        }
        if not_before.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(DenyReason::TokenNotYetValid);
        }
        if issued_at.is_some_and(|iat| iat > now.saturating_add(skew)) {
            return Err(DenyReason::IssuedInFuture);
        }
        Ok(Lifetime {
            expires_at,
            issued_at,
        })
    }
}

/// The claims every verified token is read for after its lifetime and audience, whoever
/// issued it: subject, authentication context, id.
pub(crate) struct ClaimFacts {
    pub(crate) subject: String,
    pub(crate) acr: Option<String>,
    pub(crate) amr: Vec<String>,
    pub(crate) auth_time: Option<u64>,
    pub(crate) jti: Option<String>,
}

impl ClaimFacts {
    /// Reads and checks them on the claims of a token whose signature verified.
    pub(crate) fn read(
        claims: &Map<String, Value>,
        now: u64,
        skew: u64,
    ) -> Result<ClaimFacts, DenyReason> {
        let subject = match claims.get("sub") {
            None => return Err(DenyReason::MissingClaim),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(DenyReason::InvalidClaim),
        };
        let acr = match claims.get("acr") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(DenyReason::InvalidClaim),
        };
        let amr = match claims.get("amr") {
            None => Vec::new(),
            Some(v) => string_array(v).ok_or(DenyReason::InvalidClaim)?,
        };
        // When the user authenticated (RFC 9068 §2.2.1): a claim about the past.
        let auth_time = numeric_date(claims, "auth_time")?;
        if auth_time.is_some_and(|t| t > now.saturating_add(skew)) {
            return Err(DenyReason::InvalidClaim);
        }
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(DenyReason::InvalidClaim),
        };
        if claims.get("iss").is_some_and(|v| !v.is_string()) {
            return Err(DenyReason::InvalidClaim);
        }
        // Identity values travel on (minted token, audit, downstream logs): no control characters.
        if has_control(&subject)
            || acr.as_deref().is_some_and(has_control)
            || amr.iter().any(|m| has_control(m))
        {
            return Err(DenyReason::InvalidClaim);
        }
        Ok(ClaimFacts {
            subject,
            acr,
            amr,
            auth_time,
            jti,
        })
    }
}

pub(crate) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

pub(crate) fn str_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c str> {
    claims.get(name).and_then(Value::as_str)
}

fn trusted_issuer(policy: &Policy, claims: &Map<String, Value>) -> Result<usize, DenyReason> {
    let iss = match claims.get("iss") {
        None => return Err(DenyReason::UntrustedIssuer),
        Some(Value::String(s)) => s,
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    if *iss == policy.issuer {
        return Err(DenyReason::GatewayTokenReplay);
    }
    policy
        .trusted_issuer_index(iss)
        .ok_or(DenyReason::UntrustedIssuer)
}

/// Verifies `parsed` with the key of `keys` its `kid` names (no `kid`: the only key);
/// returns the key that verified it.
pub(crate) fn verify_signature<'k>(
    keys: &'k [IssuerKey],
    alg: Alg,
    parsed: &ParsedToken<'_>,
) -> Result<&'k IssuerKey, DenyReason> {
    let key = match parsed.kid.as_deref() {
        Some(kid) => keys.iter().find(|k| k.kid() == Some(kid)),
        None => match keys {
            [only] => Some(only),
            _ => None,
        },
    }
    .ok_or(DenyReason::UnknownKey)?;
    check_signature(key, alg, parsed)?;
    Ok(key)
}

/// Verifies the signature with `key`, which must accept `alg`.
pub(crate) fn check_signature(
    key: &IssuerKey,
    alg: Alg,
    parsed: &ParsedToken<'_>,
) -> Result<(), DenyReason> {
    if !key.accepts(alg) {
        // e.g. an ES256 token naming an RSA key's kid: algorithm confusion.
        return Err(DenyReason::AlgorithmNotAllowed);
    }
    if key.verify(alg, parsed.signing_input.as_bytes(), &parsed.signature) {
        Ok(())
    } else {
        Err(DenyReason::InvalidSignature)
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number; fractions are truncated.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, DenyReason> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(DenyReason::InvalidClaim);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // Also bounds absurd values: 1e19 does not fit u64 seconds.
        Some(f) if (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
        _ => Err(DenyReason::InvalidClaim),
    }
}

fn string_array(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

pub(crate) fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, DenyReason> {
    // Borrowed: the audiences are only compared, never kept.
    match claims.get("aud") {
        None => Err(DenyReason::AudienceMismatch),
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or(DenyReason::InvalidClaim),
        Some(_) => Err(DenyReason::InvalidClaim),
    }
}
