//! Validating an incoming token against the issuer allow list: structure, trust,
//! signature, then claims. Order matters: nothing about a token's claims is believed (or
//! reported as a reason) before its signature verifies, except what is needed to find the
//! key (`iss`, `alg`, `kid`) and cheap size limits.

use serde_json::{Map, Value};

use super::claims::{caller_hint, DEFAULT_CALLER_CLAIMS};
use super::config::{Policy, TrustedIssuer};
use super::keys::Alg;
use super::reason::DenyReason;
use super::token::{parse, ParsedToken};

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
}

/// A token that passed every issuer-level check.
#[derive(Debug, Clone)]
pub struct VerifiedToken<'p> {
    /// The issuer that vouched for it.
    pub issuer: &'p TrustedIssuer,
    /// Its position among the policy's trusted issuers.
    pub issuer_index: usize,
    /// The `kid` of the key that verified it (None: the issuer's only key, without kid).
    pub key_id: Option<std::sync::Arc<str>>,
    /// All its claims.
    pub claims: Map<String, Value>,
    /// `sub`.
    pub subject: String,
    /// The caller, from the issuer's caller claims (by default `azp`, else `client_id`).
    pub caller: Option<String>,
    /// The scopes, from the issuer's scope claims (by default `scope`, else `scp`).
    pub scopes: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `exp`, in seconds.
    pub expires_at: u64,
    /// The original token's id.
    pub token_id: String,
}

/// Validates `token` at time `now` (seconds since the epoch).
pub fn validate<'p>(
    policy: &'p Policy,
    token: &str,
    now: u64,
    facts: &mut TokenFacts,
) -> Result<VerifiedToken<'p>, DenyReason> {
    let parsed = parse(token, &policy.limits)?;
    let claims = &parsed.claims;
    facts.issuer = str_claim(claims, "iss").map(str::to_owned);
    facts.subject = str_claim(claims, "sub").map(str::to_owned);
    // Computed once (it may hash the signature): for the audit now, the exchange later.
    let token_id = parsed.token_id();
    facts.token_id = Some(token_id.clone());

    let issuer = trusted_issuer(policy, claims).map(|i| (i, policy.trusted_issuers.get(i)));
    let issuer = match issuer {
        Ok((i, Some(t))) => Ok((i, t)),
        Ok((_, None)) => Err(DenyReason::UntrustedIssuer),
        Err(e) => Err(e),
    };
    // The audit names the caller the way the issuer's tokens do; unknown issuers: the defaults.
    facts.caller = match &issuer {
        Ok((_, t)) => caller_hint(claims, t.claims.caller_claims()),
        Err(_) => caller_hint(claims, DEFAULT_CALLER_CLAIMS),
    }
    .map(str::to_owned);
    let (issuer_index, issuer) = issuer?;
    let alg = Alg::from_verify_name(&parsed.alg)
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(DenyReason::AlgorithmNotAllowed)?;
    // A cheap bound before any cryptography.
    if issuer.claims.scope_count(claims) > policy.limits.max_scopes {
        return Err(DenyReason::TooManyScopes);
    }
    let key_id = verify_signature(issuer, alg, &parsed)?;
    facts.verified = true;

    let expires_at = numeric_date(claims, "exp")?.ok_or(DenyReason::MissingClaim)?;
    let not_before = numeric_date(claims, "nbf")?;
    let issued_at = numeric_date(claims, "iat")?;
    let skew = policy.clock_skew_seconds;
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

    let audiences = audiences(claims)?;
    if !audiences
        .iter()
        .any(|a| issuer.audiences.iter().any(|ok| ok == a))
    {
        return Err(DenyReason::AudienceMismatch);
    }

    let subject = match claims.get("sub") {
        None => return Err(DenyReason::MissingClaim),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    let caller = issuer.claims.caller(claims)?.map(str::to_owned);
    let acr = match claims.get("acr") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    let amr = match claims.get("amr") {
        None => Vec::new(),
        Some(v) => string_array(v).ok_or(DenyReason::InvalidClaim)?,
    };
    for name in ["jti", "iss"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(DenyReason::InvalidClaim);
        }
    }
    // Identity values travel on (minted token, audit, downstream logs): no control characters.
    let texts = [Some(&subject), caller.as_ref(), acr.as_ref()];
    if texts
        .into_iter()
        .flatten()
        .chain(amr.iter())
        .any(|t| t.chars().any(char::is_control))
    {
        return Err(DenyReason::InvalidClaim);
    }
    let scopes = issuer.claims.scopes(claims, policy.limits.max_scopes)?;
    Ok(VerifiedToken {
        issuer,
        issuer_index,
        key_id,
        subject,
        caller,
        scopes,
        acr,
        amr,
        expires_at,
        token_id,
        claims: parsed.claims,
    })
}

fn str_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c str> {
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

/// Verifies the signature; returns the `kid` of the key that verified it.
fn verify_signature(
    issuer: &TrustedIssuer,
    alg: Alg,
    parsed: &ParsedToken<'_>,
) -> Result<Option<std::sync::Arc<str>>, DenyReason> {
    let key = issuer
        .key_for(parsed.kid.as_deref())
        .ok_or(DenyReason::UnknownKey)?;
    if !key.accepts(alg) {
        // e.g. an ES256 token naming an RSA key's kid: algorithm confusion.
        return Err(DenyReason::AlgorithmNotAllowed);
    }
    if key.verify(alg, parsed.signing_input.as_bytes(), &parsed.signature) {
        Ok(key.kid().map(std::sync::Arc::from))
    } else {
        Err(DenyReason::InvalidSignature)
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number; fractions are truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, DenyReason> {
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

fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, DenyReason> {
    match claims.get("aud") {
        None => Err(DenyReason::AudienceMismatch),
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![s.clone()]),
        Some(v @ Value::Array(items)) if !items.is_empty() => {
            string_array(v).ok_or(DenyReason::InvalidClaim)
        }
        Some(_) => Err(DenyReason::InvalidClaim),
    }
}
