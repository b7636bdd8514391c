//! Reading the gateway's own keys: `signing_keys` (private JWKs or `generate` entries, with
//! their rotation states) and where their public halves are published (`jwks_path`,
//! `discovery_path`).

use serde_json::{Map, Value};

use super::reader::{integer, join, string, Errors, Obj};
use crate::core::keys::Alg;
use crate::core::signing::{GatewayKey, KeyMaterial, KeyState, SigningKey};
use crate::core::url::HttpUrl;

/// Where the filter serves the gateway's public keys itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication {
    /// The exact path answered with the JWK Set (GET only), if any.
    pub jwks_path: Option<String>,
    /// The exact path answered with a minimal OpenID configuration, if any.
    pub discovery_path: Option<String>,
    /// `max-age` of both documents, in seconds.
    pub max_age_seconds: u64,
}

/// Default `jwks_max_age_seconds`.
pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;

/// Members of a signing key entry that are this filter's, not the JWK's.
const ENTRY_MEMBERS: [&str; 2] = ["state", "retired_at"];

pub(super) fn read_signing_keys(
    v: Option<&Value>,
    path: &str,
    allow_hs256: bool,
    errs: &mut Errors,
) -> Option<Vec<GatewayKey>> {
    let items = match v? {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            errs.push(path, "must be a non-empty array of private JWKs");
            return None;
        }
    };
    let mut keys: Vec<(GatewayKey, bool)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_entry(item, &p, allow_hs256, errs) {
            Some((k, _)) if keys.iter().any(|(o, _)| o.kid == k.kid) => {
                errs.push(&p, format!("duplicate kid {:?}", k.kid));
                ok = false;
            }
            Some(entry) => keys.push(entry),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    let with_state = keys.iter().filter(|(_, explicit)| *explicit).count();
    if with_state == 0 {
        // Without states: the first key signs, the others are published.
        for (n, (k, _)) in keys.iter_mut().enumerate() {
            k.state = if n == 0 {
                KeyState::Active
            } else {
                KeyState::Published
            };
        }
    } else if with_state < keys.len() {
        errs.push(
            path,
            "either every key has a state (active, published, retired) or none has",
        );
        return None;
    } else {
        let active = keys
            .iter()
            .filter(|(k, _)| k.state == KeyState::Active)
            .count();
        if active != 1 {
            errs.push(
                path,
                format!("exactly one key must have state \"active\" (found {active})"),
            );
            return None;
        }
    }
    Some(keys.into_iter().map(|(k, _)| k).collect())
}

/// One entry, and whether it named its state.
fn read_entry(
    v: &Value,
    path: &str,
    allow_hs256: bool,
    errs: &mut Errors,
) -> Option<(GatewayKey, bool)> {
    let Value::Object(members) = v else {
        errs.push(path, "must be a private JWK or {\"generate\": ...}");
        return None;
    };
    let state_path = join(path, "state");
    let state = match members.get("state") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "active" => Some(KeyState::Active),
            "published" => Some(KeyState::Published),
            // The time is read below.
            "retired" => Some(KeyState::Retired { at: 0 }),
            _ => {
                errs.push(
                    &state_path,
                    "must be \"active\", \"published\" or \"retired\"",
                );
                return None;
            }
        },
        Some(_) => {
            errs.push(&state_path, "must be a string");
            return None;
        }
    };
    let at_path = join(path, "retired_at");
    let state = match (state, members.get("retired_at")) {
        (Some(KeyState::Retired { .. }), Some(at)) => KeyState::Retired {
            at: integer(Some(at), &at_path, 0, 253_402_300_799, errs)?,
        },
        (Some(KeyState::Retired { .. }), None) => {
            errs.push(
                &at_path,
                "is required for a retired key (seconds since the Unix epoch when it stopped signing)",
            );
            return None;
        }
        (_, Some(_)) => {
            errs.push(&at_path, "is only valid with state \"retired\"");
            return None;
        }
        (s, None) => s.unwrap_or(KeyState::Published),
    };
    let explicit = members.contains_key("state");
    let (kid, material) = if members.contains_key("generate") {
        read_generated(v, path, errs)?
    } else {
        let jwk: Map<String, Value> = members
            .iter()
            .filter(|(name, _)| !ENTRY_MEMBERS.contains(&name.as_str()))
            .map(|(name, v)| (name.clone(), v.clone()))
            .collect();
        match SigningKey::from_jwk(&Value::Object(jwk), allow_hs256) {
            Ok(key) => (key.kid().to_owned(), KeyMaterial::Configured(key)),
            Err(e) => {
                errs.push(path, e.0);
                return None;
            }
        }
    };
    Some((
        GatewayKey {
            kid,
            state,
            material,
        },
        explicit,
    ))
}

/// `{"generate": "EdDSA" | "ES256", "kid": "..."}` (plus `state`, `retired_at`).
fn read_generated(v: &Value, path: &str, errs: &mut Errors) -> Option<(String, KeyMaterial)> {
    let mut o = Obj::new(v, path, errs)?;
    for member in ENTRY_MEMBERS {
        let _ = o.get(member);
    }
    let (g, gp) = o.get("generate");
    let alg = match g {
        Some(Value::String(a)) if a == "EdDSA" => Some(Alg::EdDSA),
        Some(Value::String(a)) if a == "ES256" => Some(Alg::ES256),
        _ => {
            errs.push(&gp, "must be \"EdDSA\" or \"ES256\"");
            None
        }
    };
    let (k, kp) = o.required("kid", errs);
    let kid = string(k, &kp, errs);
    o.finish(errs);
    Some((kid?, KeyMaterial::Generated(alg?)))
}

/// `jwks_path`, `discovery_path` and `jwks_max_age_seconds` of the policy object.
pub(super) fn read_publication(
    o: &mut Obj,
    issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<Publication> {
    let (v, jp) = o.get("jwks_path");
    let jwks_path = served_path(v, &jp, errs)?;
    let (v, dp) = o.get("discovery_path");
    let discovery_path = served_path(v, &dp, errs)?;
    let (v, ap) = o.get("jwks_max_age_seconds");
    let max_age_seconds = match v {
        None => DEFAULT_MAX_AGE_SECONDS,
        Some(_) if jwks_path.is_none() => {
            errs.push(&ap, "is only valid with jwks_path");
            return None;
        }
        v => integer(v, &ap, 0, 86_400, errs)?,
    };
    if let Some(d) = &discovery_path {
        if jwks_path.is_none() {
            errs.push(&dp, "needs jwks_path (the document points at it)");
            return None;
        }
        if jwks_path.as_deref() == Some(d.as_str()) {
            errs.push(&dp, "must differ from jwks_path");
            return None;
        }
        if issuer.is_some_and(|i| HttpUrl::parse(i).is_err()) {
            errs.push(
                &dp,
                "needs an http(s) issuer URL: jwks_uri is the issuer's origin followed by jwks_path",
            );
            return None;
        }
    }
    Some(Publication {
        jwks_path,
        discovery_path,
        max_age_seconds,
    })
}

/// An absolute request path the filter answers itself: `/` then printable ASCII, no query,
/// fragment or dot-segment (it is compared with the request's path exactly).
fn served_path(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<Option<String>> {
    let Some(v) = v else {
        return Some(None);
    };
    let s = string(Some(v), path, errs)?;
    let plain = s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'\\')
        && !s.split('/').any(|seg| seg == "." || seg == "..")
        && !s.to_ascii_lowercase().contains('%');
    if !plain {
        errs.push(
            path,
            "must be an absolute path (\"/...\") without query, fragment, escapes or dot-segments",
        );
        return None;
    }
    Some(Some(s))
}
