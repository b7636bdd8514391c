//! The key sets the filter would have fetched for its issuers with `jwks_uri` or discovery,
//! supplied offline (`explain --jwks`, a case file's `fetched`): the CLI never makes a network
//! call. A supplied document goes through the filter's own answer checks and fetched-set
//! importer (`core::fetch::parse_jwks`: the size cap `jwks_max_bytes`, strict JSON, unusable
//! keys skipped with the reason the filter logs), and the keys are put in the decision's
//! `KeySnapshot` with their fetch time, so staleness (`jwks_max_stale_seconds`) is judged by
//! the core as the filter judges it. An issuer without a supplied set is one the filter has
//! not fetched yet.

use std::sync::Arc;

use serde_json::{json, Value};
use token_exchange_filter::core::config::{JwksLocation, KeySource};
use token_exchange_filter::core::fetch::{parse_jwks, CallResponse};
use token_exchange_filter::core::keys::IssuerKey;
use token_exchange_filter::core::keyset::FetchedKeySet;
use token_exchange_filter::core::{KeySnapshot, Policy, TrustedIssuer};

use crate::input::{format_time, parse_json, InputError};

/// A key set as the filter last fetched it for one issuer, imported.
#[derive(Debug, Clone)]
pub struct SuppliedKeys {
    /// The trusted issuer.
    pub issuer: String,
    /// Where the document came from (a file, or "inline").
    pub origin: String,
    /// The usable keys.
    pub keys: Arc<Vec<IssuerKey>>,
    /// The keys the filter would skip, as it logs them (`fetched keys[1]: key "x" skipped: …`).
    pub skipped: Vec<String>,
    /// The document was one JWK, served as a one-key set (as `envoy-example/jwks_server.py`
    /// serves its key files).
    pub wrapped: bool,
}

/// What the filter holds for one issuer when a decision is made.
#[derive(Debug, Clone)]
pub enum Fetch {
    /// Nothing fetched yet (or the fetched set was forgotten): its tokens are refused with
    /// `issuer_keys_unavailable` until a fetch succeeds.
    Never,
    /// The last successful fetch: these keys, fetched at this time (Unix seconds).
    At(Arc<SuppliedKeys>, u64),
}

/// The trusted issuer `issuer` of `policy`, which must fetch its keys.
pub fn fetching_issuer<'p>(
    policy: &'p Policy,
    issuer: &str,
) -> Result<(&'p TrustedIssuer, &'p KeySource), InputError> {
    let t = policy
        .trusted_issuer(issuer)
        .ok_or_else(|| InputError(format!("{issuer:?} is not a trusted issuer of the policy")))?;
    let source = t.key_source.as_ref().ok_or_else(|| {
        InputError(format!(
            "trusted issuer {issuer:?} has its keys in the policy (jwks) and no jwks_uri or discovery: the filter never fetches them"
        ))
    })?;
    Ok((t, source))
}

/// Imports `text`, a JWK Set document (or one public JWK), as the key set the filter fetched
/// for `issuer`: refused as the filter refuses an answer (too large, not JSON, no usable key).
pub fn import(
    policy: &Policy,
    issuer: &str,
    text: &str,
    origin: &str,
) -> Result<SuppliedKeys, InputError> {
    let (t, source) = fetching_issuer(policy, issuer)?;
    let doc = parse_json(text, origin)?;
    // One JWK alone: the set a server with that key file serves.
    let wrapped = doc.get("keys").is_none() && doc.get("kty").is_some();
    let body = if wrapped {
        json!({ "keys": [doc] }).to_string().into_bytes()
    } else {
        text.as_bytes().to_vec()
    };
    let headers = [
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let answer = CallResponse {
        headers: &headers,
        body: &body,
        body_size: body.len(),
    };
    let set = parse_jwks(&answer, source.max_bytes, &t.algorithms).map_err(|f| {
        InputError(format!(
            "{origin}: the filter would refuse this key set for {issuer:?} ({}: {f}), keeping the keys it fetched before or refusing the issuer's tokens (issuer_keys_unavailable)",
            f.kind()
        ))
    })?;
    Ok(SuppliedKeys {
        issuer: issuer.to_owned(),
        origin: origin.to_owned(),
        skipped: set
            .skipped
            .iter()
            .map(|s| format!("fetched keys[{}]: {s}", s.index))
            .collect(),
        keys: Arc::new(set.keys),
        wrapped,
    })
}

/// Puts what the filter holds for each issuer into `snapshot`.
pub fn apply(snapshot: &mut KeySnapshot, fetches: &[(String, Fetch)]) {
    for (issuer, fetch) in fetches {
        match fetch {
            Fetch::Never => snapshot.clear_fetched(issuer),
            Fetch::At(supplied, at) => snapshot.set_fetched(
                issuer,
                FetchedKeySet {
                    version: 1,
                    fetched_at_ms: at.saturating_mul(1000),
                    keys: supplied.keys.clone(),
                },
            ),
        }
    }
}

/// Where an issuer's keys are fetched from, in a reviewer's words.
pub fn describe_source(source: &KeySource) -> String {
    let from = match &source.location {
        JwksLocation::Uri(url) => format!("from {url}"),
        JwksLocation::Discovery(url) => {
            format!("by OIDC discovery ({url}: its issuer must equal this one, its jwks_uri is fetched)")
        }
    };
    format!(
        "{from} through upstream {}: refreshed every {} s, used until {} s after the last good fetch (jwks_max_stale_seconds), timeout {} ms, at most {} bytes; an unknown kid refetches at most every {} s",
        source.upstream,
        source.refresh_seconds,
        source.max_stale_seconds,
        source.timeout_ms,
        source.max_bytes,
        source.min_refetch_seconds
    )
}

/// Where an issuer's keys are fetched from, as JSON.
pub fn source_json(source: &KeySource) -> Value {
    let (kind, url) = match &source.location {
        JwksLocation::Uri(url) => ("jwks_uri", url.to_string()),
        JwksLocation::Discovery(url) => ("discovery", url.to_string()),
    };
    json!({
        "kind": kind,
        "url": url,
        "upstream": source.upstream,
        "refresh_seconds": source.refresh_seconds,
        "max_stale_seconds": source.max_stale_seconds,
        "timeout_ms": source.timeout_ms,
        "max_bytes": source.max_bytes,
        "min_refetch_seconds": source.min_refetch_seconds,
    })
}

/// The state of every fetching issuer's keys at `now` (seconds), for `explain`: (JSON, one
/// line each).
pub fn describe_state(
    policy: &Policy,
    fetches: &[(String, Fetch)],
    now: u64,
) -> Vec<(Value, String)> {
    policy
        .trusted_issuers
        .iter()
        .filter_map(|t| Some((t, t.key_source.as_ref()?)))
        .map(|(t, source)| {
            let fetch = fetches
                .iter()
                .find(|(i, _)| *i == t.issuer)
                .map_or(&Fetch::Never, |(_, f)| f);
            match fetch {
                Fetch::Never => (
                    json!({"issuer": t.issuer, "state": "never_fetched"}),
                    format!(
                        "{}: never fetched, as before the filter's first fetch: its tokens are refused (issuer_keys_unavailable, 503); give the key set it would fetch with --jwks {}=@jwks.json",
                        t.issuer, t.issuer
                    ),
                ),
                Fetch::At(s, at) => {
                    let stale_at = at.saturating_add(source.max_stale_seconds);
                    let fresh = now < stale_at;
                    let kids: Vec<&str> = s.keys.iter().map(|k| k.kid().unwrap_or("(no kid)")).collect();
                    let state = if fresh {
                        format!("in use until {} (jwks_max_stale_seconds {})", format_time(stale_at), source.max_stale_seconds)
                    } else {
                        format!(
                            "STALE since {} (jwks_max_stale_seconds {}): its tokens are refused (issuer_keys_unavailable, 503)",
                            format_time(stale_at),
                            source.max_stale_seconds
                        )
                    };
                    let mut line = format!(
                        "{}: fetched {} from {}{}: usable {}; {state}",
                        t.issuer,
                        format_time(*at),
                        s.origin,
                        if s.wrapped { " (one JWK, served as a one-key set)" } else { "" },
                        if kids.is_empty() { "none".to_owned() } else { kids.join(", ") },
                    );
                    for skipped in &s.skipped {
                        line.push_str(&format!("; {skipped}"));
                    }
                    (
                        json!({
                            "issuer": t.issuer,
                            "state": if fresh { "fresh" } else { "stale" },
                            "origin": s.origin,
                            "fetched_at": at,
                            "stale_at": stale_at,
                            "usable_kids": kids,
                            "skipped": s.skipped,
                        }),
                        line,
                    )
                }
            }
        })
        .collect()
}
