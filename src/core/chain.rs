//! Delegation chains (RFC 8693 §4.1, §4.4): the `act` claim of minted tokens, `may_act` on
//! presented ones, and chained exchange of the gateway's own tokens.
//!
//! Every minted token carries `act`, the actor chain, newest outermost: one entry per
//! exchange, naming the caller that acted (`sub`, and the `iss` that named it), the rule and
//! the audience minted for. A rule that says `accept_gateway_tokens` takes tokens the
//! gateway minted earlier (service A calling service B through the gateway): they are
//! verified here with the gateway's own keys, never through the trusted-issuer list, and the
//! caller of such a hop is the service the presented token was minted for (its `aud`).
//! Each hop narrows: scopes within the presented token's, `exp` never later, `sub`, `act`
//! and the original token's provenance kept. `max_chain_depth` bounds how many exchanges a
//! minted token may record, and a hop back into an audience already in the chain is a cycle.

use serde_json::{Map, Value};

use super::claims::ClaimMapping;
use super::config::{ExchangeRule, GatewayTokens, Policy};
use super::keys::Alg;
use super::keyset::KeySnapshot;
use super::reason::DenyReason;
use super::signing::MINTED_TOKEN_TYPE;
use super::token::ParsedToken;
use super::validate::{
    has_control, numeric_date, str_claim, verify_signature, ClaimFacts, Lifetime, Origin,
    TokenFacts, VerifiedBy, VerifiedToken,
};

/// Whether `parsed` claims to be one of the gateway's own tokens.
pub fn is_gateway_token(policy: &Policy, parsed: &ParsedToken<'_>) -> bool {
    str_claim(&parsed.claims, "iss") == Some(policy.issuer.as_str())
}

/// Verifies one of the gateway's own tokens for a rule that accepts them: `typ: at+jwt`,
/// the gateway's keys only (`Policy::gateway_verification_keys`), lifetime, an `aud` among
/// `accept.audiences`, and the claims every minted token has (`scope`, `exchanged_from`,
/// `act`). The original token's issuer must still be trusted: its ceilings, lifecycle and
/// revocation apply to every later hop.
pub fn verify_gateway_token<'p>(
    policy: &'p Policy,
    snapshot: &KeySnapshot,
    accept: &GatewayTokens,
    parsed: ParsedToken<'_>,
    now: u64,
    facts: &mut TokenFacts,
) -> Result<VerifiedToken<'p>, DenyReason> {
    facts.observe(&parsed);
    let claims = &parsed.claims;
    // The service the token was minted for is the one presenting it.
    facts.caller = str_claim(claims, "aud").map(str::to_owned);
    if parsed.header.get("typ").and_then(Value::as_str) != Some(MINTED_TOKEN_TYPE) {
        return Err(DenyReason::UnsupportedTokenType);
    }
    // The gateway always names its key: one of the policy's, or a generated one.
    let Some(kid) = parsed.kid.as_deref() else {
        return Err(DenyReason::UnknownKey);
    };
    let generated = snapshot.generated(kid).and_then(|k| k.verification_key());
    let keys = match &generated {
        Some(k) => std::slice::from_ref(k),
        None => policy.gateway_verification_keys(),
    };
    let alg = Alg::from_verify_name(&parsed.alg)
        .filter(|a| keys.iter().any(|k| k.accepts(*a)))
        .ok_or(DenyReason::AlgorithmNotAllowed)?;
    let mapping = gateway_claims();
    if mapping.scope_count(claims) > policy.limits.max_scopes {
        return Err(DenyReason::TooManyScopes);
    }
    let key = verify_signature(keys, alg, &parsed)?;
    let verified_by = VerifiedBy::Gateway {
        kid: kid.into(),
        fingerprint: key.fingerprint(),
    };
    facts.verified = true;

    let lifetime = Lifetime::read(claims, policy.clock_skew_seconds, now)?;
    // Minted tokens have exactly one audience, a string.
    let audience = match claims.get("aud") {
        Some(Value::String(a)) if !a.is_empty() && !has_control(a) => a.clone(),
        None => return Err(DenyReason::AudienceMismatch),
        Some(_) => return Err(DenyReason::InvalidClaim),
    };
    if !accept.audiences.contains(&audience) {
        return Err(DenyReason::AudienceMismatch);
    }
    let read = ClaimFacts::read(claims, now, policy.clock_skew_seconds)?;
    let scopes = mapping.scopes(claims, policy.limits.max_scopes)?;
    let origin = origin(claims)?;
    let (issuer_index, issuer) = policy
        .trusted_issuer_index(&origin.issuer)
        .and_then(|i| policy.trusted_issuers.get(i).map(|t| (i, t)))
        .ok_or(DenyReason::UntrustedIssuer)?;
    facts.review_overdue = issuer.review_overdue(now);
    let act = match claims.get("act") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err(DenyReason::InvalidClaim),
    };
    Ok(VerifiedToken {
        issuer,
        issuer_index,
        verified_by,
        subject: read.subject,
        caller: Some(audience),
        scopes,
        acr: read.acr,
        amr: read.amr,
        auth_time: read.auth_time,
        expires_at: lifetime.expires_at,
        issued_at: lifetime.issued_at,
        token_id: parsed.token_id(),
        jti: read.jti,
        origin,
        act: Some(act),
        gateway_token: true,
        claims: parsed.claims,
    })
}

/// Where minted tokens carry the caller and the scopes.
fn gateway_claims() -> ClaimMapping {
    ClaimMapping::new(vec!["client_id".into()], vec!["scope".into()])
}

/// The original token a gateway token was exchanged from: its `exchanged_from`.
fn origin(claims: &Map<String, Value>) -> Result<Origin, DenyReason> {
    let Some(Value::Object(from)) = claims.get("exchanged_from") else {
        return Err(DenyReason::InvalidClaim);
    };
    match (str_claim(from, "iss"), str_claim(from, "token_id")) {
        (Some(issuer), Some(token_id)) => Ok(Origin {
            issuer: issuer.to_owned(),
            token_id: token_id.to_owned(),
            issued_at: numeric_date(from, "iat")?,
        }),
        _ => Err(DenyReason::InvalidClaim),
    }
}

/// How many exchanges a chain records: the nesting depth of `act` (every level an object).
pub fn recorded_exchanges(act: Option<&Value>) -> Result<usize, DenyReason> {
    let mut depth = 0;
    let mut entry = act;
    while let Some(v) = entry {
        let Value::Object(m) = v else {
            return Err(DenyReason::InvalidClaim);
        };
        depth += 1;
        entry = m.get("act");
    }
    Ok(depth)
}

/// The audiences earlier exchanges of the chain minted for.
fn chain_audiences(act: Option<&Value>) -> impl Iterator<Item = &str> {
    std::iter::successors(act, |v| v.get("act")).filter_map(|v| str_claim_of(v, "audience"))
}

fn str_claim_of<'v>(v: &'v Value, name: &str) -> Option<&'v str> {
    v.get(name).and_then(Value::as_str)
}

/// The hop's own checks, on a verified token under `rule`, where `depth` is the number of
/// exchanges the token to mint would record: `may_act` names the caller (`actor_not_allowed`),
/// `depth` within `max_chain_depth` (`chain_too_deep`), and the rule's audience not already
/// in the chain (`chain_cycle`).
pub fn check_hop(
    rule: &ExchangeRule,
    t: &VerifiedToken<'_>,
    depth: usize,
) -> Result<(), DenyReason> {
    if let Some(may_act) = t.claims.get("may_act") {
        let Value::Object(m) = may_act else {
            return Err(DenyReason::InvalidClaim);
        };
        let Some(Value::String(actor)) = m.get("sub") else {
            return Err(DenyReason::InvalidClaim);
        };
        let named_by = match m.get("iss") {
            None => None,
            Some(Value::String(iss)) => Some(iss),
            Some(_) => return Err(DenyReason::InvalidClaim),
        };
        // The actor is named by the token's issuer: an `iss` in may_act must be that one.
        let caller_issuer = &t.issuer.issuer;
        if t.caller.as_ref() != Some(actor) || named_by.is_some_and(|i| i != caller_issuer) {
            return Err(DenyReason::ActorNotAllowed);
        }
    }
    if depth > rule.max_chain_depth {
        return Err(DenyReason::ChainTooDeep);
    }
    let target = rule.mint.audience.as_str();
    let presented_for = t.gateway_token.then_some(t.caller.as_deref()).flatten();
    if presented_for == Some(target) || chain_audiences(t.act.as_ref()).any(|a| a == target) {
        return Err(DenyReason::ChainCycle);
    }
    Ok(())
}

/// The minted token's `act`: this exchange (the caller, the issuer that named it, the rule,
/// the audience minted for) around the chain the presented token carried.
pub fn act_claim(policy: &Policy, rule: &ExchangeRule, t: &VerifiedToken<'_>) -> Value {
    let mut entry = Map::new();
    if let Some(caller) = &t.caller {
        entry.insert("sub".into(), Value::String(caller.clone()));
        let named_by = if t.gateway_token {
            &policy.issuer
        } else {
            &t.issuer.issuer
        };
        entry.insert("iss".into(), Value::String(named_by.clone()));
    }
    entry.insert("rule".into(), Value::String(rule.name.to_string()));
    entry.insert("audience".into(), Value::String(rule.mint.audience.clone()));
    if let Some(previous) = &t.act {
        entry.insert("act".into(), previous.clone());
    }
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_nested_objects() {
        assert_eq!(recorded_exchanges(None), Ok(0));
        assert_eq!(recorded_exchanges(Some(&json!({"sub": "a"}))), Ok(1));
        assert_eq!(
            recorded_exchanges(Some(&json!({"sub": "b", "act": {"sub": "a"}}))),
            Ok(2)
        );
        assert_eq!(
            recorded_exchanges(Some(&json!({"sub": "b", "act": "a"}))),
            Err(DenyReason::InvalidClaim)
        );
        assert_eq!(
            recorded_exchanges(Some(&json!(["a"]))),
            Err(DenyReason::InvalidClaim)
        );
    }

    #[test]
    fn chain_audiences_in_order() {
        let act = json!({"audience": "b", "act": {"audience": "a", "act": {"sub": "x"}}});
        let found: Vec<&str> = chain_audiences(Some(&act)).collect();
        assert_eq!(found, ["b", "a"]);
    }
}
