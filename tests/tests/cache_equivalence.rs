//! Decisions through the verified-and-minted cache equal the uncached ones, natively with a
//! fixed clock, for everything that can change the answer for the same token and rule
//! without the token changing: trust boundaries (revocation, issuer lifecycle, shadow mode,
//! chained tokens, step-up, ceilings, header hygiene), fetched issuer keys that rotate or go
//! stale, and a signing key that changes. Every request is decided twice, without and with
//! the cache, and the two must agree in everything but the reuse of the minted token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_filter::core::date::UtcDate;
use token_exchange_filter::core::jwks::import_fetched_jwks;
use token_exchange_filter::core::keys::Alg;
use token_exchange_filter::core::keyset::{FetchedKeySet, KeySnapshot};
use token_exchange_filter::core::signing::SigningKey;
use token_exchange_filter::core::{
    AuditRecord, CacheUse, Decision, ExchangeCache, HttpRequest, Outcome, Policy, Verdict,
};
use token_exchange_tests::trust::*;
use token_exchange_tests::*;

/// One policy, its keys and one cache, deciding every request both ways.
struct Twin {
    policy: Policy,
    keys: KeySnapshot,
    cache: ExchangeCache,
    entropy: CountingEntropy,
}

impl Twin {
    fn new(doc: &Value) -> Twin {
        let policy = load(doc);
        let cache = policy.new_cache();
        Twin {
            policy,
            keys: KeySnapshot::new(),
            cache,
            entropy: CountingEntropy(0),
        }
    }

    /// Decides a GET of `path` with `token` (and these extra header names) without and with
    /// the cache; asserts they agree; returns the cached decision.
    fn get(&mut self, path: &str, token: &str, headers: &[&str], now: u64) -> Decision {
        let auth = format!("Bearer {token}");
        let mut names = vec!["host", "authorization"];
        names.extend_from_slice(headers);
        let req = HttpRequest {
            method: "GET",
            path,
            host: Some("api.example.com"),
            route_name: None,
            authorization: vec![&auth],
            request_id: Some("req"),
            header_names: names,
        };
        let at = Duration::from_secs(now);
        let fresh = self.policy.decide(&req, &self.keys, at, &mut self.entropy);
        let cached =
            self.policy
                .decide_cached(&req, &self.keys, at, &mut self.entropy, &mut self.cache);
        assert_equivalent(&cached, &fresh, &format!("GET {path} at {now}"));
        cached
    }
}

/// The audit record without what a hit legitimately changes: the minted token's id and
/// `exp` (the cached token's), and `cache` itself.
fn comparable(a: &AuditRecord) -> AuditRecord {
    AuditRecord {
        cache: CacheUse::Miss,
        minted_jti: None,
        minted_exp: None,
        ..a.clone()
    }
}

fn assert_equivalent(cached: &Decision, fresh: &Decision, what: &str) {
    assert_eq!(fresh.audit.cache, CacheUse::Miss, "{what}");
    assert_eq!(
        comparable(&cached.audit),
        comparable(&fresh.audit),
        "{what}: audit"
    );
    match (&cached.verdict, &fresh.verdict) {
        (Verdict::Forward { minted: c, .. }, Verdict::Forward { minted: f, .. }) => {
            assert_eq!(
                (&c.audience, &c.scope, &c.kid),
                (&f.audience, &f.scope, &f.kid),
                "{what}"
            );
            assert!(
                c.expires_at <= f.expires_at,
                "{what}: never outlives a fresh one"
            );
        }
        (Verdict::Pass, Verdict::Pass) => {}
        (Verdict::Deny(c), Verdict::Deny(f)) => assert_eq!(c, f, "{what}: denial"),
        (c, f) => panic!("{what}: cached {c:?}, fresh {f:?}"),
    }
    assert_eq!(cached.strip_headers, fresh.strip_headers, "{what}");
    assert_eq!(cached.fetched_keys, fresh.fetched_keys, "{what}");
    assert_eq!(cached.rule_index, fresh.rule_index, "{what}");
    if cached.audit.cache == CacheUse::Hit {
        assert_eq!(
            cached.audit.decision,
            Outcome::Allow,
            "{what}: only exchanges are cached"
        );
    }
}

fn minted(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Forward { minted, .. } => minted.token.clone(),
        other => panic!("not forwarded: {other:?} ({:?})", d.audit),
    }
}

/// Every trust boundary of issue 11, each request twice (the second from the cache when the
/// first was an exchange): the cached answers are the uncached ones.
#[test]
fn trust_boundaries_decide_alike_through_the_cache() {
    let t = Trust::new();
    let mut twin = Twin::new(&t.policy(NOW));
    let sign = |issuer: &Issuer, scope: &str, jti: &str| t_sign(&t, issuer, scope, jti);
    let edge = sign(&t.idp, "orders:read orders:write billing:read", "edge-1");
    let partner = sign(
        &t.partner,
        "orders:read orders:write shipments:write",
        "p-1",
    );
    let retired = sign(&t.retired, "orders:read", "r-1");
    let revoked = sign(&t.idp, "orders:read", REVOKED_JTI);
    let mallory = {
        let mut c = t.claims(&t.idp, NOW, "orders:read", "m-1");
        c["sub"] = json!(REVOKED_SUB);
        t.idp.sign(&c)
    };
    let reports = sign(&t.idp, "reports:read", "rep-1");
    let no_reports = sign(&t.idp, "orders:read", "rep-2");
    let admin = sign(&t.idp, "admin", "adm-1");
    let cases: Vec<(&str, &str, &[&str], &str)> = vec![
        ("/orders", &edge, &[], "exchanged"),
        ("/orders", &edge, &["x-forwarded-user"], "exchanged"),
        ("/orders", &partner, &[], "exchanged"),
        ("/partner-write", &partner, &[], "issuer_scope_ceiling"),
        ("/shipments", &partner, &[], "issuer_scope_ceiling"),
        ("/internal", &partner, &[], "issuer_audience_not_allowed"),
        ("/orders", &retired, &[], "issuer_expired"),
        ("/orders", &revoked, &[], "token_revoked"),
        ("/orders", &mallory, &[], "subject_revoked"),
        ("/reports", &reports, &["x-auth-request-user"], "exchanged"),
        ("/reports", &no_reports, &[], "insufficient_scope"),
        ("/admin", &admin, &[], "exchanged"),
        ("/billing", &edge, &[], "exchanged"),
    ];
    for (path, token, headers, reason) in &cases {
        let first = twin.get(path, token, headers, NOW);
        assert_eq!(first.audit.reason, *reason, "{path}");
        let again = twin.get(path, token, headers, NOW + 1);
        let expected = if first.audit.decision == Outcome::Allow {
            CacheUse::Hit
        } else {
            CacheUse::Miss
        };
        assert_eq!(again.audit.cache, expected, "{path}");
    }
    // Shadow: a hit is audited as enforcing decided and forwarded unchanged, headers stripped.
    let d = twin.get("/reports", &reports, &["x-auth-request-user"], NOW + 2);
    assert_eq!(d.audit.cache, CacheUse::Hit);
    assert_eq!(d.audit.mode, Some("shadow"));
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(d.strip_headers, ["x-auth-request-user"]);
    assert!(d.audit.minted_jti.is_some());

    // A chain: the edge exchange's token presented for the next hop, twice; its depth,
    // origin and `act` come from the cache as the miss recorded them.
    let for_orders = minted(&twin.get("/orders", &edge, &[], NOW + 3));
    let hop = twin.get("/billing", &for_orders, &[], NOW + 3);
    assert_eq!(hop.audit.reason, "exchanged");
    assert_eq!(hop.audit.chain_depth, Some(2));
    let hop_again = twin.get("/billing", &for_orders, &[], NOW + 4);
    assert_eq!(hop_again.audit.cache, CacheUse::Hit);
    assert_eq!(hop_again.audit.origin_token_id.as_deref(), Some("edge-1"));
    let for_billing = minted(&hop_again);
    let (_, claims) = t.gw.verify(&for_billing, NOW + 4);
    assert_eq!(claims["act"]["act"]["audience"], "orders-service");
    // Depth and cycles are refused, cached or not.
    for _ in 0..2 {
        let d = twin.get("/deep-ledger", &for_billing, &[], NOW + 5);
        assert_eq!(d.audit.reason, "exchanged");
        let ledger = minted(&d);
        assert_eq!(
            twin.get("/ledger", &for_billing, &[], NOW + 5).audit.reason,
            "chain_too_deep"
        );
        assert_eq!(
            twin.get("/loop", &for_billing, &[], NOW + 5).audit.reason,
            "chain_cycle"
        );
        assert_ne!(ledger, for_billing);
    }

    // Refusing identity headers: refused on what would otherwise be a hit.
    let mut doc = t.policy(NOW);
    doc["strip_headers_action"] = json!("refuse");
    let mut refusing = Twin::new(&doc);
    refusing.get("/orders", &edge, &[], NOW);
    assert_eq!(
        refusing.get("/orders", &edge, &[], NOW).audit.cache,
        CacheUse::Hit
    );
    let d = refusing.get("/orders", &edge, &["X-Forwarded-User"], NOW);
    assert_eq!(d.audit.reason, "identity_header_present");
    assert_eq!(d.audit.cache, CacheUse::Miss);
}

/// `Trust::claims` at `NOW`, valid for two hours.
fn t_sign(t: &Trust, issuer: &Issuer, scope: &str, jti: &str) -> String {
    let mut claims = t.claims(issuer, NOW, scope, jti);
    claims["exp"] = json!(NOW + 7200);
    issuer.sign(&claims)
}

/// A revocation is a configuration update: the cache of the previous policy serves nothing
/// under the new one, and the revoked token is refused at once.
#[test]
fn a_revocation_applied_by_an_update_ends_cached_exchanges() {
    let t = Trust::new();
    let mut twin = Twin::new(&t.policy(NOW));
    let token = t_sign(&t, &t.idp, "orders:read", "soon-revoked");
    twin.get("/orders", &token, &[], NOW);
    assert_eq!(
        twin.get("/orders", &token, &[], NOW).audit.cache,
        CacheUse::Hit
    );
    for (list, value, reason) in [
        ("jti", "soon-revoked", "token_revoked"),
        ("sub", "alice", "subject_revoked"),
    ] {
        let mut doc = t.policy(NOW);
        doc["revoked"][list] = json!([value]);
        // The same cache, handed to the new policy (as the glue's root keeps one per VM).
        twin.policy = load(&doc);
        let d = twin.get("/orders", &token, &[], NOW + 1);
        assert_eq!(d.audit.reason, reason);
        assert_eq!(d.audit.cache, CacheUse::Miss);
    }
}

/// A trusted issuer whose `expires` day ends while its tokens are cached: refused on the
/// next request, as without a cache; `review_by` passing shows in the very next hit.
#[test]
fn issuer_lifecycle_is_judged_on_every_hit() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let today = UtcDate::of(NOW);
    let end = today.end();
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["trusted_issuers"][0]["review_by"] = json!(today.to_string());
    let mut reviewing = Twin::new(&doc);
    doc["trusted_issuers"][0]["expires"] = json!(today.to_string());
    let mut expiring = Twin::new(&doc);

    let before = end - 20;
    let token = idp.sign(&idp.claims(before, "orders:read"));
    for twin in [&mut reviewing, &mut expiring] {
        let d = twin.get("/orders", &token, &[], before);
        assert_eq!(d.audit.reason, "exchanged");
        assert!(!d.audit.issuer_review_overdue);
        assert_eq!(
            twin.get("/orders", &token, &[], end - 1).audit.cache,
            CacheUse::Hit
        );
    }
    // The review date passed: still a hit (the entry is within its window), now flagged.
    let d = reviewing.get("/orders", &token, &[], end + 1);
    assert_eq!(d.audit.cache, CacheUse::Hit);
    assert!(d.audit.issuer_review_overdue);
    // The issuer expired: refused, and the entry is gone.
    let d = expiring.get("/orders", &token, &[], end);
    assert_eq!(d.audit.reason, "issuer_expired");
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert!(expiring.cache.is_empty());
}

/// Step-up: an `auth_time` that ages past `max_age_seconds` while the exchange is cached.
#[test]
fn step_up_max_age_is_checked_on_every_hit() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut rule = orders_rule();
    rule["require"]["max_age_seconds"] = json!(300);
    let mut twin = Twin::new(&policy(&gw, &[&idp], json!([rule])));
    let mut claims = idp.claims(NOW, "orders:read");
    claims["auth_time"] = json!(NOW - 290);
    let token = idp.sign(&claims);
    assert_eq!(
        twin.get("/orders", &token, &[], NOW).audit.reason,
        "exchanged"
    );
    assert_eq!(
        twin.get("/orders", &token, &[], NOW + 10).audit.cache,
        CacheUse::Hit
    );
    // 301 s after the authentication, inside the reuse window: a step-up challenge.
    let d = twin.get("/orders", &token, &[], NOW + 11);
    assert_eq!(d.audit.reason, "authentication_too_old");
    assert_eq!(d.audit.cache, CacheUse::Miss);
    let Verdict::Deny(denial) = &d.verdict else {
        panic!()
    };
    assert!(denial
        .www_authenticate
        .as_deref()
        .unwrap()
        .contains("max_age=\"300\""));
}

const IDP_ISS: &str = "https://idp.test";

fn fetched_policy(gw: &Gateway) -> Value {
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([{
        "issuer": IDP_ISS,
        "jwks_uri": "https://idp.test/keys",
        "jwks_upstream": "idp",
        "algorithms": ["EdDSA"],
        "audiences": ["api"]
    }]);
    doc
}

fn fetched(keys: &[&Issuer], version: u64, fetched_at: u64) -> FetchedKeySet {
    let doc = json!({ "keys": keys.iter().map(|i| i.public_jwk()).collect::<Vec<_>>() });
    let set = import_fetched_jwks(doc.to_string().as_bytes(), &[Alg::EdDSA]).unwrap();
    FetchedKeySet {
        version,
        fetched_at_ms: fetched_at * 1000,
        keys: Arc::new(set.keys),
    }
}

/// Issue 9: an entry ends when the fetched key that verified it leaves the key set, is
/// replaced by other material under the same `kid`, or the set goes stale; it survives a
/// new version that keeps the key.
#[test]
fn fetched_key_rotation_ends_the_entries_it_verified() {
    let gw = Gateway::new();
    let k1 = Issuer::ed25519(IDP_ISS, "k1", 7);
    let k2 = Issuer::ed25519(IDP_ISS, "k2", 8);
    let impostor = Issuer::ed25519(IDP_ISS, "k1", 9);
    let mut twin = Twin::new(&fetched_policy(&gw));
    twin.keys.set_fetched(IDP_ISS, fetched(&[&k1], 1, NOW));
    let token = k1.sign(&k1.claims(NOW, "orders:read"));
    let d = twin.get("/orders", &token, &[], NOW);
    assert_eq!(d.audit.reason, "exchanged");
    assert!(d.fetched_keys.is_some());
    let first = minted(&d);
    let hit = twin.get("/orders", &token, &[], NOW + 1);
    assert_eq!(hit.audit.cache, CacheUse::Hit);
    assert_eq!(
        hit.fetched_keys, d.fetched_keys,
        "the glue sees the same key use"
    );

    // A new version that keeps k1 (the provider announces k2): still served.
    twin.keys
        .set_fetched(IDP_ISS, fetched(&[&k1, &k2], 2, NOW + 2));
    let d = twin.get("/orders", &token, &[], NOW + 2);
    assert_eq!(d.audit.cache, CacheUse::Hit);
    assert_eq!(minted(&d), first);

    // k1 rotated out: refused like an unknown key, the entry gone.
    twin.keys.set_fetched(IDP_ISS, fetched(&[&k2], 3, NOW + 3));
    let d = twin.get("/orders", &token, &[], NOW + 3);
    assert_eq!(d.audit.reason, "unknown_key");
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert!(twin.cache.is_empty());

    // k1 back: a new exchange; then "k1" re-published with other material.
    twin.keys.set_fetched(IDP_ISS, fetched(&[&k1], 4, NOW + 4));
    twin.get("/orders", &token, &[], NOW + 4);
    assert_eq!(
        twin.get("/orders", &token, &[], NOW + 4).audit.cache,
        CacheUse::Hit
    );
    twin.keys
        .set_fetched(IDP_ISS, fetched(&[&impostor], 5, NOW + 5));
    let d = twin.get("/orders", &token, &[], NOW + 5);
    assert_eq!(d.audit.reason, "invalid_signature");
    assert_eq!(d.audit.cache, CacheUse::Miss);

    // Stale beyond jwks_max_stale_seconds (default a day): unavailable, cached or not.
    twin.keys.set_fetched(IDP_ISS, fetched(&[&k1], 6, NOW + 6));
    twin.get("/orders", &token, &[], NOW + 6);
    assert_eq!(
        twin.get("/orders", &token, &[], NOW + 7).audit.cache,
        CacheUse::Hit
    );
    twin.keys
        .set_fetched(IDP_ISS, fetched(&[&k1], 6, NOW + 7 - 86_400));
    let d = twin.get("/orders", &token, &[], NOW + 8);
    assert_eq!(d.audit.reason, "issuer_keys_unavailable");
    assert_eq!(d.audit.cache, CacheUse::Miss);
}

/// Issue 9: a generated signing key replaced (same policy, same `kid`, other key) never
/// forwards a token the previous key signed.
#[test]
fn a_new_signer_never_reuses_a_token_signed_by_another_key() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP_ISS, "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["signing_keys"] = json!([{ "generate": "EdDSA", "kid": "gen-1" }]);
    let mut twin = Twin::new(&doc);
    let adopt = |seed: u8| {
        let (key, _) =
            SigningKey::generate(Alg::EdDSA, "gen-1", &mut CountingEntropy(seed)).unwrap();
        let public = key.public_jwk().unwrap();
        (Arc::new(key), public)
    };
    let (first_key, first_public) = adopt(3);
    twin.keys.add_generated(first_key);
    let token = idp.sign(&idp.claims(NOW, "orders:read"));
    let old = minted(&twin.get("/orders", &token, &[], NOW));
    assert_eq!(
        twin.get("/orders", &token, &[], NOW + 1).audit.cache,
        CacheUse::Hit
    );
    let (second_key, second_public) = adopt(40);
    assert_ne!(first_public, second_public);
    twin.keys.add_generated(second_key);
    let d = twin.get("/orders", &token, &[], NOW + 2);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    let renewed = minted(&d);
    assert_ne!(renewed, old);
    // Signed by the new key: its public half verifies it, the old one's does not.
    use jwt_simple::prelude::*;
    let verifies = |public: &Value, token: &str| {
        Ed25519PublicKey::from_jwk(&public.to_string())
            .unwrap()
            .verify_token::<NoCustomClaims>(
                token,
                Some(VerificationOptions {
                    artificial_time: Some(UnixTimeStamp::from_secs(NOW + 2)),
                    time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(0)),
                    ..Default::default()
                }),
            )
            .is_ok()
    };
    assert!(verifies(&second_public, &renewed));
    assert!(!verifies(&first_public, &renewed));
    assert!(verifies(&first_public, &old));
}

/// A random walk over the trust fixture: tokens of every kind, paths of every rule, identity
/// headers, a clock that mostly advances (sometimes jumps, sometimes goes back). Each request
/// is decided without and with one cache kept throughout; they must always agree.
#[test]
fn a_random_walk_decides_alike_with_and_without_the_cache() {
    let t = Trust::new();
    let mut twin = Twin::new(&t.policy(NOW));
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut tokens: Vec<String> = Vec::new();
    for (i, (issuer, scope)) in [
        (&t.idp, "orders:read orders:write billing:read"),
        (&t.idp, "reports:read"),
        (&t.idp, "admin"),
        (&t.partner, "orders:read orders:write shipments:write"),
        (&t.retired, "orders:read"),
    ]
    .into_iter()
    .enumerate()
    {
        tokens.push(t_sign(&t, issuer, scope, &format!("walk-{i}")));
    }
    tokens.push(t_sign(&t, &t.idp, "orders:read", REVOKED_JTI));
    let paths = [
        "/orders",
        "/partner-write",
        "/shipments",
        "/internal",
        "/billing",
        "/ledger",
        "/deep-ledger",
        "/loop",
        "/admin",
        "/reports",
        "/nowhere",
    ];
    let header_sets: [&[&str]; 3] = [&[], &["x-forwarded-user"], &["x-auth-request-email"]];
    let mut now = NOW;
    let (mut hits, mut allows) = (0, 0);
    let mut recent: Vec<(usize, usize, usize)> = Vec::new();
    let mut reasons = std::collections::BTreeMap::new();
    for _ in 0..600 {
        now = match next(40) {
            0 => now.saturating_sub(next(40)),
            1 => now + 30 + next(120),
            _ => now + next(3),
        };
        // Clients repeat themselves: half the requests repeat a recent exchange.
        let pick = match recent.len() {
            n if n > 0 && next(2) == 0 => recent[next(n as u64) as usize],
            _ => (
                next(tokens.len() as u64) as usize,
                next(paths.len() as u64) as usize,
                next(3) as usize,
            ),
        };
        let (token, path, headers) = (tokens[pick.0].clone(), paths[pick.1], header_sets[pick.2]);
        let d = twin.get(path, &token, headers, now);
        *reasons.entry(d.audit.reason).or_insert(0) += 1;
        if d.audit.cache == CacheUse::Hit {
            hits += 1;
        }
        if d.audit.decision == Outcome::Allow {
            allows += 1;
            recent.push(pick);
            if recent.len() > 8 {
                recent.remove(0);
            }
            // Minted tokens join the pool: chained hops through the cache too.
            if let Verdict::Forward { minted, .. } = &d.verdict {
                if tokens.len() < 12 {
                    tokens.push(minted.token.clone());
                }
            }
        }
    }
    // The walk exercised the cache, not only denials.
    assert!(hits > 150, "hits {hits}, allows {allows}, {reasons:?}");
    // And met the answers that change over time or by policy for the same token.
    for reason in [
        "authentication_too_old",
        "token_expired",
        "issuer_expired",
        "token_revoked",
    ] {
        assert!(reasons.contains_key(reason), "{reason}: {reasons:?}");
    }
    assert!(allows > hits, "allows {allows}, hits {hits}");
}
