//! Token introspection (RFC 7662): opaque tokens, and JWTs whose revocation at the provider
//! must be honoured. The request to send (`request`), what an answer means (`response`),
//! how long it is kept (`cache`) and how a decision reads it (here) are host-free; the glue
//! sends the call, pauses the request and hands the answer back.
//!
//! An introspected token then goes through the same checks as a JWT whose signature
//! verified (`validate::vouched`): the provider's answer takes the place of the signature.

mod cache;
mod request;
mod response;

pub use cache::IntrospectionCache;
pub use request::{form_urlencode, introspection_call, IntrospectionCall};
pub use response::{describe_failure, parse_introspection, EndpointHealth, Introspected};

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::claims::caller_hint;
use super::config::{Policy, TrustedIssuer};
use super::reason::DenyReason;
use super::validate::{str_claim, vouched, TokenFacts, VerifiedBy, VerifiedToken};

/// The SHA-256 of a bearer token: how answers are cached and calls coalesced (compared
/// whole), and what the audit names an opaque token by. Never the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(Sha256::digest(token.as_bytes())) {
            *o = b;
        }
        TokenDigest(out)
    }

    /// `sha256:` and the first 16 bytes in hex, as the audit names tokens without a `jti`.
    pub fn token_id(&self) -> String {
        let mut id = String::from("sha256:");
        for b in self.0.iter().take(16) {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token_id())
    }
}

/// What is known about one token's introspection when a request is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionResult {
    /// `active: true`, with the members of the answer (`active` removed).
    Active(Arc<Map<String, Value>>),
    /// `active: false`: revoked, expired, or never issued.
    Inactive,
    /// The call failed (timeout, refused, 5xx, not JSON, too large, `active` missing).
    Unavailable,
}

/// Where a decision finds introspection answers (the glue's cache and the answer a paused
/// request waited for).
pub trait IntrospectionLookup {
    /// The answer about the token with `digest` from `issuer`'s endpoint, if one is known.
    fn introspected(&self, issuer: &str, digest: &TokenDigest) -> Option<IntrospectionResult>;
}

/// No answers at all: every token that needs introspection is refused as unavailable (the
/// CLI, and callers without an endpoint to ask).
pub struct NoIntrospection;

impl IntrospectionLookup for NoIntrospection {
    fn introspected(&self, _: &str, _: &TokenDigest) -> Option<IntrospectionResult> {
        None
    }
}

/// A decision needed an answer it did not have: the glue may ask and decide again.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionNeed {
    /// The trusted issuer whose endpoint is asked.
    pub issuer: String,
    /// The token to send (never logged: `Debug` shows its digest).
    pub token: String,
    /// Its digest.
    pub digest: TokenDigest,
}

impl fmt::Debug for IntrospectionNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionNeed")
            .field("issuer", &self.issuer)
            .field("token", &self.digest)
            .finish()
    }
}

/// Whether `token` is opaque: not three (a JWS) or five (a JWE) dot-separated segments whose
/// first is a base64url JSON object. Such tokens name no issuer and carry no signature.
pub fn is_opaque(token: &str) -> bool {
    let segments = token.split('.').count();
    if segments != 3 && segments != 5 {
        return true;
    }
    let header = token.split('.').next().unwrap_or_default();
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(header) else {
        return true;
    };
    // A JSON object, however malformed inside, is a JOSE header: the JWT path refuses it
    // with its precise reason.
    bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
}

/// Verifies an opaque token of `issuer` by the provider's answer in `lookup`: unknown is
/// recorded in `facts` as a need (and refused as unavailable until answered), inactive is
/// `token_inactive`, active goes through the same checks as a verified JWT's claims.
pub fn verify_opaque<'p>(
    policy: &'p Policy,
    issuer: &'p TrustedIssuer,
    token: &str,
    lookup: &dyn IntrospectionLookup,
    now: u64,
    facts: &mut TokenFacts,
) -> Result<VerifiedToken<'p>, DenyReason> {
    let digest = TokenDigest::of(token);
    facts.issuer = Some(issuer.issuer.clone());
    facts.token_id = Some(digest.token_id());
    facts.review_overdue = issuer.review_overdue(now);
    let claims = match answer(issuer, token, digest, lookup, facts)? {
        Some(claims) => claims,
        None => return Err(DenyReason::IntrospectionUnavailable),
    };
    // The provider vouched for the token: its claims are now believed as a signature's are.
    facts.verified = true;
    let mut claims = (*claims).clone();
    claims.remove("active");
    facts.subject = str_claim(&claims, "sub").map(str::to_owned);
    facts.caller = caller_hint(&claims, issuer.claims.caller_claims()).map(str::to_owned);
    check_issuer(issuer, &claims)?;
    if claims.len() > policy.limits.max_claims {
        return Err(DenyReason::TooManyClaims);
    }
    // The index a cached exchange of this token is checked against on a hit.
    let index = policy
        .trusted_issuer_index(&issuer.issuer)
        .ok_or(DenyReason::InternalError)?;
    vouched(
        policy,
        (index, issuer),
        VerifiedBy::Introspection,
        claims,
        digest.token_id(),
        now,
    )
}

/// For an issuer with `introspect_jwts`: its locally valid JWT must also be active at the
/// provider (`iss`, when the answer names one, must be the issuer).
pub fn confirm_active(
    issuer: &TrustedIssuer,
    token: &str,
    lookup: &dyn IntrospectionLookup,
    facts: &mut TokenFacts,
) -> Result<(), DenyReason> {
    match answer(issuer, token, TokenDigest::of(token), lookup, facts)? {
        Some(claims) => check_issuer(issuer, &claims),
        None => Err(DenyReason::IntrospectionUnavailable),
    }
}

/// The active answer's members; `Ok(None)` when none is known yet (the need is recorded).
fn answer(
    issuer: &TrustedIssuer,
    token: &str,
    digest: TokenDigest,
    lookup: &dyn IntrospectionLookup,
    facts: &mut TokenFacts,
) -> Result<Option<Arc<Map<String, Value>>>, DenyReason> {
    match lookup.introspected(&issuer.issuer, &digest) {
        Some(IntrospectionResult::Active(claims)) => Ok(Some(claims)),
        Some(IntrospectionResult::Inactive) => Err(DenyReason::TokenInactive),
        Some(IntrospectionResult::Unavailable) => Err(DenyReason::IntrospectionUnavailable),
        None => {
            facts.introspection = Some(IntrospectionNeed {
                issuer: issuer.issuer.clone(),
                token: token.to_owned(),
                digest,
            });
            Ok(None)
        }
    }
}

/// RFC 7662 §2.2 `iss`: optional; when present, exactly the trusted issuer.
fn check_issuer(issuer: &TrustedIssuer, claims: &Map<String, Value>) -> Result<(), DenyReason> {
    match claims.get("iss") {
        None => Ok(()),
        Some(Value::String(s)) if *s == issuer.issuer => Ok(()),
        Some(Value::String(_)) => Err(DenyReason::UntrustedIssuer),
        Some(_) => Err(DenyReason::InvalidClaim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_is_anything_but_a_jose_compact_serialization() {
        for opaque in [
            "2YotnFZFEjr1zCsicMWpAA",
            "a.b",
            "a.b.c",
            "e30.e30",
            "W10.e30.c2ln",
            "x.y.z.w",
            "abc~def+ghi/jkl==",
        ] {
            assert!(is_opaque(opaque), "{opaque}");
        }
        for jose in [
            "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
            "e30.e30.c2ln",
            "e30.e30.",
            "e30.a.b.c.d",
            // A header with a duplicate member is a (hostile) JOSE header, not opaque.
            "eyJhIjoxLCJhIjoyfQ.e30.c2ln",
            // So is a truncated one.
            "eyJhIjox.e30.c2ln",
        ] {
            assert!(!is_opaque(jose), "{jose}");
        }
    }

    #[test]
    fn digests_compare_whole_and_name_no_token() {
        let a = TokenDigest::of("token-a");
        assert_eq!(a, TokenDigest::of("token-a"));
        assert_ne!(a, TokenDigest::of("token-b"));
        let id = a.token_id();
        assert!(id.starts_with("sha256:") && id.len() == 7 + 32, "{id}");
        assert!(!format!("{a:?}").contains("token-a"));
        let need = IntrospectionNeed {
            issuer: "i".into(),
            token: "secret-token".into(),
            digest: a,
        };
        assert!(!format!("{need:?}").contains("secret-token"));
    }
}
