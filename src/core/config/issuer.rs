//! Reading `trusted_issuers`: the issuer allow list, pinned algorithms, keys, audiences and
//! claim mappings.

use serde_json::Value;

use super::introspection::read_introspection;
use super::keysource::read_key_source;
use super::reader::{any, boolean, join, non_empty, scope_check, string, string_list, Errors, Obj};
use super::{IntrospectedTokens, TrustedIssuer};
use crate::core::claims::{
    ClaimMapping, DEFAULT_CALLER_CLAIMS, DEFAULT_SCOPE_CLAIMS, FIXED_MEANING_CLAIMS,
};
use crate::core::date::{parse_utc_timestamp, UtcDate};
use crate::core::jwks::import_jwks;
use crate::core::keys::{Alg, IssuerKey};
use crate::core::names::NameIndex;

pub(super) fn read_trusted_issuers(
    v: Option<&Value>,
    path: &str,
    gateway_issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<Vec<TrustedIssuer>> {
    let items = match v? {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            errs.push(path, "must be a non-empty array");
            return None;
        }
    };
    let mut out: Vec<TrustedIssuer> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_trusted_issuer(item, &p, gateway_issuer, errs) {
            Some(t) if out.iter().any(|o| o.issuer == t.issuer) => {
                errs.push(
                    &join(&p, "issuer"),
                    format!("duplicate issuer {:?}", t.issuer),
                );
                ok = false;
            }
            Some(t) => out.push(t),
            None => ok = false,
        }
    }
    // Opaque tokens carry no `iss`: exactly one issuer can be asked about them.
    let opaque: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.get("opaque_tokens") == Some(&Value::Bool(true)))
        .map(|(i, _)| i)
        .collect();
    if let [_, rest @ ..] = opaque.as_slice() {
        for i in rest {
            errs.push(
                &format!("{path}[{i}].opaque_tokens"),
                "only one trusted issuer may take opaque tokens (they name no issuer)",
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

pub(super) fn read_trusted_issuer(
    v: &Value,
    path: &str,
    gateway_issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<TrustedIssuer> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("issuer", errs);
    let issuer = string(v, &p, errs);
    if issuer.is_some() && issuer.as_deref() == gateway_issuer {
        errs.push(
            &p,
            "must not be the gateway's own issuer (its tokens are not accepted at the edge)",
        );
    }
    let (v, p) = o.required("algorithms", errs);
    let algorithms = non_empty(
        string_list(v, &p, errs, |a| match Alg::from_verify_name(a) {
            Some(_) => None,
            None if a.eq_ignore_ascii_case("none") => Some("\"none\" is never accepted".into()),
            None if a.starts_with("HS") => {
                Some("HMAC algorithms are not accepted for issuers (shared secrets)".into())
            }
            None => Some(format!(
                "unsupported algorithm {a:?} (one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
            )),
        }),
        &p,
        errs,
    )
    .map(|l| l.iter().filter_map(|a| Alg::from_verify_name(a)).collect::<Vec<_>>());

    let (jwks, jwks_path) = o.get("jwks");
    let key_source = read_key_source(&mut o, path, issuer.as_deref(), errs);
    let keys = match (jwks, &algorithms) {
        (Some(v), Some(algs)) => read_jwks(v, &jwks_path, algs, errs),
        // Keys fetched from the network only.
        (None, _) if matches!(key_source, Some(Some(_))) => Some(Vec::new()),
        (None, _) => {
            if matches!(key_source, Some(None)) {
                errs.push(&jwks_path, "is required (or jwks_uri, or discovery)");
            }
            None
        }
        _ => None,
    };
    let (v, p) = o.required("audiences", errs);
    let audiences = non_empty(string_list(v, &p, errs, any), &p, errs);
    let (v, p) = o.get("claims");
    let claims = match v {
        None => Some(ClaimMapping::default()),
        Some(v) => read_claim_mapping(v, &p, errs),
    };
    // Partner ceilings.
    let (v, p) = o.get("max_scopes");
    let max_scopes = optional(v, |v| {
        non_empty(string_list(v, &p, errs, scope_check), &p, errs)
    });
    let (v, p) = o.get("allowed_audiences");
    let allowed_audiences = optional(v, |v| non_empty(string_list(v, &p, errs, any), &p, errs));
    // Lifecycle and revocation.
    let (v, p) = o.get("review_by");
    let review_by = optional(v, |v| date(v, &p, errs));
    let (v, p) = o.get("expires");
    let expires = optional(v, |v| date(v, &p, errs));
    let (v, p) = o.get("revoked_before");
    let revoked_before = optional(v, |v| point_in_time(v, &p, errs));
    let introspection = read_introspected(&mut o, path, errs);
    o.finish(errs);
    let keys = keys?;
    let mut keys_by_kid = NameIndex::default();
    for (i, key) in keys.iter().enumerate() {
        if let Some(kid) = key.kid() {
            keys_by_kid.insert_first(kid, i);
        }
    }
    Some(TrustedIssuer {
        issuer: issuer?,
        algorithms: algorithms?,
        keys,
        audiences: audiences?,
        claims: claims?,
        max_scopes: max_scopes?,
        allowed_audiences: allowed_audiences?,
        review_by: review_by?,
        expires: expires?,
        revoked_before: revoked_before?,
        key_source: key_source?,
        keys_by_kid,
        introspection: introspection?,
    })
}

/// `introspection`, `opaque_tokens` and `introspect_jwts`: `Some(None)` when the issuer's
/// tokens are never introspected, `None` when an error was reported.
fn read_introspected(
    o: &mut Obj,
    path: &str,
    errs: &mut Errors,
) -> Option<Option<IntrospectedTokens>> {
    let (v, intro_path) = o.get("introspection");
    let endpoint = optional(v, |v| read_introspection(v?, &intro_path, errs));
    let mut flag = |o: &mut Obj, key: &'static str| {
        let (v, p) = o.get(key);
        let value = match v {
            None => Some(false),
            v => boolean(v, &p, errs),
        };
        (value, p)
    };
    let (opaque, opaque_path) = flag(o, "opaque_tokens");
    let (jwts, jwts_path) = flag(o, "introspect_jwts");
    let (endpoint, opaque, jwts) = (endpoint?, opaque?, jwts?);
    match endpoint {
        None => {
            for (on, p) in [(opaque, &opaque_path), (jwts, &jwts_path)] {
                if on {
                    errs.push(p, "needs introspection (the endpoint to ask)");
                }
            }
            (!opaque && !jwts).then_some(None)
        }
        Some(_) if !opaque && !jwts => {
            errs.push(
                &join(path, "introspection"),
                "is never used: set opaque_tokens or introspect_jwts",
            );
            None
        }
        Some(endpoint) => Some(Some(IntrospectedTokens {
            endpoint,
            opaque_tokens: opaque,
            jwts,
        })),
    }
}

/// An optional member: `Some(None)` when absent, `None` when present and invalid.
fn optional<T>(
    v: Option<&Value>,
    read: impl FnOnce(Option<&Value>) -> Option<T>,
) -> Option<Option<T>> {
    match v {
        None => Some(None),
        v => read(v).map(Some),
    }
}

/// A calendar day, `YYYY-MM-DD` (UTC).
fn date(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<UtcDate> {
    let parsed = v?.as_str().and_then(UtcDate::parse);
    if parsed.is_none() {
        errs.push(path, "must be a date \"YYYY-MM-DD\" (UTC), from 1970-01-01");
    }
    parsed
}

/// A point in time: an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ` or a NumericDate (seconds).
fn point_in_time(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<u64> {
    let parsed = match v? {
        Value::String(s) => parse_utc_timestamp(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    if parsed.is_none() {
        errs.push(
            path,
            "must be a UTC time \"YYYY-MM-DDTHH:MM:SSZ\" or a NumericDate (non-negative integer seconds)",
        );
    }
    parsed
}

/// A provider's JWK Set: usable keys, skipped ones as warnings (see `jwks`).
pub(super) fn read_jwks(
    v: &Value,
    path: &str,
    algs: &[Alg],
    errs: &mut Errors,
) -> Option<Vec<IssuerKey>> {
    match import_jwks(v, algs) {
        Ok(set) => {
            for skipped in &set.skipped {
                errs.warn(
                    &format!("{path}.keys[{}]", skipped.index),
                    skipped.to_string(),
                );
            }
            Some(set.keys)
        }
        Err(problems) => {
            for e in problems {
                errs.push(&join(path, &e.path), e.message);
            }
            None
        }
    }
}

/// `claims: {"caller": [...], "scopes": [...]}`: claim names, read in order.
pub(super) fn read_claim_mapping(v: &Value, path: &str, errs: &mut Errors) -> Option<ClaimMapping> {
    let mut o = Obj::new(v, path, errs)?;
    let fixed = |allowed: &'static str| {
        move |c: &str| {
            (FIXED_MEANING_CLAIMS.contains(&c) && c != allowed)
                .then(|| format!("{c:?} is a registered claim with its own meaning"))
        }
    };
    let mut list = |o: &mut Obj, key: &'static str, default: &[&str], allowed: &'static str| {
        let (v, p) = o.get(key);
        match v {
            None => Some((default.iter().map(|c| (*c).to_owned()).collect(), None)),
            v => {
                non_empty(string_list(v, &p, errs, fixed(allowed)), &p, errs).map(|l| (l, Some(p)))
            }
        }
    };
    // `sub` may name the caller (a service account's token); as a scope claim it would grant
    // the subject's name as a scope.
    let caller = list(&mut o, "caller", DEFAULT_CALLER_CLAIMS, "sub");
    let scopes = list(&mut o, "scopes", DEFAULT_SCOPE_CLAIMS, "");
    o.finish(errs);
    let ((caller, caller_path), (scopes, scopes_path)) = (caller?, scopes?);
    let mut ok = true;
    for (i, c) in caller.iter().enumerate() {
        if let Some(j) = scopes.iter().position(|s| s == c) {
            // Report it in a list the operator wrote.
            let at = match (&caller_path, &scopes_path) {
                (Some(p), _) => format!("{p}[{i}]"),
                (None, Some(p)) => format!("{p}[{j}]"),
                (None, None) => join(path, "caller"),
            };
            errs.push(
                &at,
                format!("{c:?} cannot be both a caller claim and a scope claim"),
            );
            ok = false;
        }
    }
    ok.then(|| ClaimMapping::new(caller, scopes))
}
