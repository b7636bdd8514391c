//! Reading a trusted issuer's `introspection` (RFC 7662): the endpoint, the host's upstream
//! for the calls, the gateway's client credentials, the call's bounds and the cache's.

use std::fmt;

use super::reader::{integer, string, Errors, Obj};
use crate::core::url::HttpUrl;

/// Where and how an issuer's tokens are introspected, and how long the answers are kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Introspection {
    /// The introspection endpoint.
    pub endpoint: HttpUrl,
    /// The host's name for the endpoint: an Envoy cluster, or Kong's `host:port`.
    pub upstream: String,
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// The gateway's client secret (never logged, audited or forwarded; `Debug` hides it).
    pub client_secret: String,
    /// Deadline of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest an active answer is reused, in seconds (never past the token's `exp`).
    pub cache_seconds: u64,
    /// How long an inactive answer is reused, in seconds.
    pub negative_cache_seconds: u64,
    /// Most answers kept per worker for this issuer.
    pub cache_max_entries: usize,
}

impl fmt::Debug for Introspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint.to_string())
            .field("upstream", &self.upstream)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("max_bytes", &self.max_bytes)
            .field("cache_seconds", &self.cache_seconds)
            .field("negative_cache_seconds", &self.negative_cache_seconds)
            .field("cache_max_entries", &self.cache_max_entries)
            .finish()
    }
}

/// Default `introspection.timeout_ms`.
pub const DEFAULT_INTROSPECTION_TIMEOUT_MS: u64 = 2_000;
/// Default `introspection.max_bytes`.
pub const DEFAULT_INTROSPECTION_MAX_BYTES: u64 = 16_384;
/// Default `introspection.cache_seconds`.
pub const DEFAULT_CACHE_SECONDS: u64 = 60;
/// Default `introspection.negative_cache_seconds`.
pub const DEFAULT_NEGATIVE_CACHE_SECONDS: u64 = 10;
/// Default `introspection.cache_max_entries`.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 10_000;

/// Reads `introspection` (an object); `None` when an error was reported.
pub(super) fn read_introspection(
    v: &serde_json::Value,
    path: &str,
    errs: &mut Errors,
) -> Option<Introspection> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("endpoint", errs);
    let endpoint = string(v, &p, errs).and_then(|u| match HttpUrl::parse(&u) {
        Ok(url) => Some(url),
        Err(why) => {
            errs.push(&p, why);
            None
        }
    });
    let (v, p) = o.required("upstream", errs);
    let upstream = string(v, &p, errs);
    let (v, p) = o.required("client_id", errs);
    let client_id = string(v, &p, errs);
    let (v, p) = o.required("client_secret", errs);
    // `string` never echoes the value, so a mistake here cannot leak the secret into a log.
    let client_secret = string(v, &p, errs);
    let mut bounded = |o: &mut Obj, key: &'static str, default: u64, min: u64, max: u64| {
        let (v, p) = o.get(key);
        match v {
            None => Some(default),
            v => integer(v, &p, min, max, errs),
        }
    };
    let timeout_ms = bounded(
        &mut o,
        "timeout_ms",
        DEFAULT_INTROSPECTION_TIMEOUT_MS,
        100,
        60_000,
    );
    let max_bytes = bounded(
        &mut o,
        "max_bytes",
        DEFAULT_INTROSPECTION_MAX_BYTES,
        256,
        1_048_576,
    );
    let cache_seconds = bounded(&mut o, "cache_seconds", DEFAULT_CACHE_SECONDS, 0, 3_600);
    let negative = bounded(
        &mut o,
        "negative_cache_seconds",
        DEFAULT_NEGATIVE_CACHE_SECONDS,
        0,
        3_600,
    );
    let entries = bounded(
        &mut o,
        "cache_max_entries",
        DEFAULT_CACHE_MAX_ENTRIES,
        4,
        1_000_000,
    );
    o.finish(errs);
    Some(Introspection {
        endpoint: endpoint?,
        upstream: upstream?,
        client_id: client_id?,
        client_secret: client_secret?,
        timeout_ms: timeout_ms?,
        max_bytes: usize::try_from(max_bytes?).ok()?,
        cache_seconds: cache_seconds?,
        negative_cache_seconds: negative?,
        cache_max_entries: usize::try_from(entries?).ok()?,
    })
}
