//! Reading where a trusted issuer's keys are fetched from: `jwks_uri` or OIDC discovery,
//! the host's upstream for the calls, and the schedule's bounds.

use super::reader::{boolean, integer, join, string, Errors, Obj};
use crate::core::url::HttpUrl;

/// Where an issuer's key set is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// The key set's URL, as configured.
    Uri(HttpUrl),
    /// OIDC discovery: this `/.well-known/openid-configuration` URL names the key set's URL.
    Discovery(HttpUrl),
}

/// How an issuer's keys are fetched and how long they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The key set's URL, or the discovery document that names it.
    pub location: JwksLocation,
    /// The host's name for the endpoint: an Envoy cluster, or Kong's `host:port`.
    pub upstream: String,
    /// Seconds between scheduled refreshes.
    pub refresh_seconds: u64,
    /// Seconds after the last successful fetch during which its keys stay in use.
    pub max_stale_seconds: u64,
    /// Deadline of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    pub max_bytes: usize,
    /// Least time between two fetches an unknown `kid` may cause, in seconds.
    pub min_refetch_seconds: u64,
}

/// Defaults of the schedule, in the configuration's units.
pub const DEFAULT_REFRESH_SECONDS: u64 = 300;
/// Default `jwks_max_stale_seconds`.
pub const DEFAULT_MAX_STALE_SECONDS: u64 = 86_400;
/// Default `jwks_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Default `jwks_max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 65_536;
/// Default `jwks_min_refetch_seconds`.
pub const DEFAULT_MIN_REFETCH_SECONDS: u64 = 30;

/// The members of a trusted issuer that only make sense with fetched keys.
const FETCH_MEMBERS: [&str; 6] = [
    "jwks_upstream",
    "jwks_refresh_seconds",
    "jwks_max_stale_seconds",
    "jwks_timeout_ms",
    "jwks_max_bytes",
    "jwks_min_refetch_seconds",
];

/// Reads `jwks_uri` / `discovery` and their companions from a trusted issuer object.
/// `Some(None)`: the issuer's keys are all inline; `None`: an error was reported.
pub(super) fn read_key_source(
    o: &mut Obj,
    path: &str,
    issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<Option<KeySource>> {
    let (uri_v, uri_p) = o.get("jwks_uri");
    let (disc_v, disc_p) = o.get("discovery");
    let discovery = match disc_v {
        None => Some(false),
        v => boolean(v, &disc_p, errs),
    };
    let uri = match uri_v {
        None => Some(None),
        v => string(v, &uri_p, errs).and_then(|u| match HttpUrl::parse(&u) {
            Ok(url) => Some(Some(url)),
            Err(why) => {
                errs.push(&uri_p, why);
                None
            }
        }),
    };
    let location = match (uri?, discovery?) {
        (Some(_), true) => {
            errs.push(
                &disc_p,
                "cannot be used with jwks_uri (discovery finds the key set's URL itself)",
            );
            return None;
        }
        (Some(url), false) => Some(JwksLocation::Uri(url)),
        (None, true) => Some(JwksLocation::Discovery(discovery_url(
            issuer?,
            &join(path, "issuer"),
            errs,
        )?)),
        (None, false) => None,
    };
    let Some(location) = location else {
        // Inline keys only: the fetch settings would be silently unused.
        for member in FETCH_MEMBERS {
            if let (Some(_), p) = o.get(member) {
                errs.push(&p, "is only valid with jwks_uri or discovery");
            }
        }
        return Some(None);
    };
    let (v, p) = o.required("jwks_upstream", errs);
    let upstream = string(v, &p, errs);
    let mut bounded = |o: &mut Obj, key: &'static str, default: u64, min: u64, max: u64| {
        let (v, p) = o.get(key);
        match v {
            None => Some(default),
            v => integer(v, &p, min, max, errs),
        }
    };
    let refresh = bounded(
        o,
        "jwks_refresh_seconds",
        DEFAULT_REFRESH_SECONDS,
        10,
        86_400,
    );
    let max_stale = bounded(
        o,
        "jwks_max_stale_seconds",
        DEFAULT_MAX_STALE_SECONDS,
        60,
        604_800,
    );
    let timeout = bounded(o, "jwks_timeout_ms", DEFAULT_TIMEOUT_MS, 100, 60_000);
    let max_bytes = bounded(o, "jwks_max_bytes", DEFAULT_MAX_BYTES, 1_024, 1_048_576);
    let min_refetch = bounded(
        o,
        "jwks_min_refetch_seconds",
        DEFAULT_MIN_REFETCH_SECONDS,
        1,
        3_600,
    );
    if let (Some(r), Some(s)) = (refresh, max_stale) {
        if s < r {
            errs.push(
                &join(path, "jwks_max_stale_seconds"),
                format!("must be at least jwks_refresh_seconds ({r}): keys would go stale between two refreshes"),
            );
            return None;
        }
    }
    Some(Some(KeySource {
        location,
        upstream: upstream?,
        refresh_seconds: refresh?,
        max_stale_seconds: max_stale?,
        timeout_ms: timeout?,
        max_bytes: usize::try_from(max_bytes?).ok()?,
        min_refetch_seconds: min_refetch?,
    }))
}

/// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4: a trailing `/` of the
/// issuer is removed first). The issuer must be an `http(s)` URL without a query.
fn discovery_url(issuer: &str, path: &str, errs: &mut Errors) -> Option<HttpUrl> {
    let parsed = HttpUrl::parse(issuer);
    match parsed {
        Ok(url) if !url.path.contains('?') => {
            let base = issuer.strip_suffix('/').unwrap_or(issuer);
            HttpUrl::parse(&format!("{base}/.well-known/openid-configuration")).ok()
        }
        Ok(_) => {
            errs.push(path, "discovery needs an issuer URL without a query");
            None
        }
        Err(why) => {
            errs.push(
                path,
                format!("discovery needs an http(s) issuer URL: it {why}"),
            );
            None
        }
    }
}
