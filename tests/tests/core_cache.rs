//! The verified-and-minted cache through the policy core (`Policy::decide_cached`), with a
//! fixed clock: what a hit reuses, what still runs on every request, when entries end, the
//! off switch, and the configuration of the cache.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_filter::core::{
    CacheUse, Decision, ExchangeCache, HttpRequest, KeySnapshot, Outcome, Policy, Verdict,
};
use token_exchange_tests::*;

struct Env {
    gw: Gateway,
    idp: Issuer,
    policy: Policy,
    cache: ExchangeCache,
    keys: KeySnapshot,
    entropy: CountingEntropy,
}

fn env_with(edit: impl FnOnce(&mut Value)) -> Env {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut admin = orders_rule();
    admin["name"] = json!("orders-admin");
    admin["match"] = json!({"path_prefix": "/admin"});
    let mut doc = policy(&gw, &[&idp], json!([orders_rule(), admin]));
    edit(&mut doc);
    let policy = load(&doc);
    let cache = policy.new_cache();
    Env {
        gw,
        idp,
        policy,
        cache,
        keys: KeySnapshot::new(),
        entropy: CountingEntropy(0),
    }
}

fn env() -> Env {
    env_with(|_| {})
}

impl Env {
    fn send(&mut self, method: &str, path: &str, auth: &[&str], now: u64) -> Decision {
        let req = HttpRequest {
            method,
            path,
            host: Some("api.example.com"),
            route_name: None,
            authorization: auth.to_vec(),
            request_id: Some("req"),
            header_names: vec!["host", "authorization"],
        };
        self.policy.decide_cached(
            &req,
            &self.keys,
            Duration::from_secs(now),
            &mut self.entropy,
            &mut self.cache,
        )
    }

    fn get(&mut self, path: &str, token: &str, now: u64) -> Decision {
        let auth = format!("Bearer {token}");
        self.send("GET", path, &[&auth], now)
    }

    fn token(&self) -> String {
        self.idp.sign(&self.idp.claims(NOW, "orders:read"))
    }
}

fn minted(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Forward { minted, .. } => minted.token.clone(),
        other => panic!("not forwarded: {other:?} ({:?})", d.audit),
    }
}

#[test]
fn a_repeated_token_gets_the_same_minted_token_from_the_cache() {
    let mut e = env();
    let t = e.token();
    let first = e.get("/orders/1", &t, NOW);
    assert_eq!(first.audit.cache, CacheUse::Miss);
    let second = e.get("/orders/2?page=3", &t, NOW + 10);
    assert_eq!(second.audit.cache, CacheUse::Hit);
    assert_eq!(minted(&first), minted(&second), "the same minted token");
    let (_, c) = e.gw.verify(&minted(&second), NOW + 10);
    assert_eq!(c["iat"], NOW, "the cached token keeps its own iat");
    // Every request has its own audit record, with its own request facts.
    assert_eq!(second.audit.path, "/orders/2");
    assert_eq!(second.audit.decision, Outcome::Allow);
    assert_eq!(second.audit.reason, "exchanged");
    assert!(second.audit.token_verified);
    assert_eq!(second.audit.ts_ms, (NOW + 10) * 1000);
    for field in [
        "iss",
        "sub",
        "caller",
        "token_id",
        "minted_jti",
        "minted_aud",
        "minted_scope",
        "minted_exp",
        "minted_kid",
    ] {
        let a: Value = serde_json::from_str(&first.audit.to_json_line()).unwrap();
        let b: Value = serde_json::from_str(&second.audit.to_json_line()).unwrap();
        assert_eq!(a[field], b[field], "{field}");
        assert!(!b[field].is_null(), "{field}");
    }
    let line: Value = serde_json::from_str(&second.audit.to_json_line()).unwrap();
    assert_eq!(line["cache"], "hit");
    assert_eq!(e.cache.stats().hits, 1);
}

#[test]
fn a_new_token_is_minted_once_the_reuse_fraction_has_passed() {
    // ttl 60 s, reuse one half: [NOW, NOW + 30).
    let mut e = env();
    let t = e.token();
    let first = minted(&e.get("/orders", &t, NOW));
    let d = e.get("/orders", &t, NOW + 29);
    assert_eq!(d.audit.cache, CacheUse::Hit);
    assert_eq!(minted(&d), first);
    let d = e.get("/orders", &t, NOW + 30);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    let renewed = minted(&d);
    assert_ne!(renewed, first);
    let (_, c) = e.gw.verify(&renewed, NOW + 30);
    assert_eq!(c["iat"], NOW + 30);
    assert_eq!(c["exp"], NOW + 90);
    assert_eq!(e.get("/orders", &t, NOW + 31).audit.cache, CacheUse::Hit);

    // Another fraction, from the policy.
    let mut e = env_with(|d| d["cache"] = json!({"reuse_fraction": 0.1}));
    let t = e.token();
    e.get("/orders", &t, NOW);
    assert_eq!(e.get("/orders", &t, NOW + 5).audit.cache, CacheUse::Hit);
    assert_eq!(e.get("/orders", &t, NOW + 6).audit.cache, CacheUse::Miss);
}

#[test]
fn never_reused_past_the_original_exp() {
    let mut e = env_with(|d| d["cache"] = json!({"reuse_fraction": 1}));
    let mut claims = e.idp.claims(NOW, "orders:read");
    claims["exp"] = json!(NOW + 20);
    let t = e.idp.sign(&claims);
    let first = e.get("/orders", &t, NOW);
    let (_, c) = e.gw.verify(&minted(&first), NOW);
    assert_eq!(c["exp"], NOW + 20);
    assert_eq!(e.get("/orders", &t, NOW + 19).audit.cache, CacheUse::Hit);
    // At the original exp: decided afresh, and refused (nothing left to grant).
    let d = e.get("/orders", &t, NOW + 20);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert_eq!(d.audit.reason, "token_expired");
    // A clock that goes back before the cached iat decides afresh too.
    let t2 = e.token();
    e.get("/orders", &t2, NOW + 5);
    assert_eq!(e.get("/orders", &t2, NOW + 4).audit.cache, CacheUse::Miss);
}

#[test]
fn request_checks_still_run_on_every_request() {
    let mut e = env();
    let t = e.token();
    let auth = format!("Bearer {t}");
    assert_eq!(e.get("/orders", &t, NOW).audit.cache, CacheUse::Miss);
    assert_eq!(e.get("/orders", &t, NOW).audit.cache, CacheUse::Hit);
    let cases: Vec<(&str, &str, Vec<String>, &str)> = vec![
        (
            "GET",
            "/orders?access_token=x",
            vec![auth.clone()],
            "token_in_query",
        ),
        (
            "GET",
            "/orders/../admin",
            vec![auth.clone()],
            "ambiguous_path",
        ),
        ("POST", "/orders", vec![auth.clone()], "no_matching_rule"),
        ("GET", "/elsewhere", vec![auth.clone()], "no_matching_rule"),
        (
            "GET",
            "/orders",
            vec![auth.clone(), auth.clone()],
            "duplicate_authorization",
        ),
        (
            "GET",
            "/orders",
            vec![format!("{auth},{auth}")],
            "duplicate_authorization",
        ),
        (
            "GET",
            "/orders",
            vec![format!("Bearer  {t}")],
            "malformed_authorization",
        ),
        (
            "GET",
            "/orders",
            vec![format!("Basic {t}")],
            "missing_token",
        ),
    ];
    for (method, path, auth, reason) in cases {
        let refs: Vec<&str> = auth.iter().map(String::as_str).collect();
        let d = e.send(method, path, &refs, NOW + 1);
        assert_eq!(d.audit.reason, reason, "{method} {path}");
        assert_eq!(d.audit.cache, CacheUse::Miss, "{method} {path}");
        assert!(matches!(d.verdict, Verdict::Deny(_)), "{method} {path}");
    }
    // The scheme's case does not matter: same token, a hit.
    let d = e.send("GET", "/orders", &[&format!("bEaReR {t}")], NOW + 1);
    assert_eq!(d.audit.cache, CacheUse::Hit);
}

#[test]
fn an_entry_serves_only_the_rule_it_was_made_under() {
    let mut e = env();
    let t = e.token();
    let orders = minted(&e.get("/orders", &t, NOW));
    let d = e.get("/admin", &t, NOW);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert_eq!(d.audit.rule.as_deref(), Some("orders-admin"));
    let admin = minted(&d);
    assert_ne!(admin, orders);
    assert_eq!(minted(&e.get("/admin/x", &t, NOW)), admin);
    assert_eq!(minted(&e.get("/orders/x", &t, NOW)), orders);
}

#[test]
fn denials_are_never_cached() {
    let mut e = env();
    let lacking = e.idp.sign(&e.idp.claims(NOW, "profile"));
    let mut tampered = e.token();
    tampered.pop();
    tampered.push(if tampered.ends_with('A') { 'B' } else { 'A' });
    for t in [&lacking, &tampered] {
        for _ in 0..3 {
            let d = e.get("/orders", t, NOW);
            assert!(matches!(d.verdict, Verdict::Deny(_)));
            assert_eq!(d.audit.cache, CacheUse::Miss);
        }
    }
    assert!(e.cache.is_empty());
    assert_eq!(e.cache.stats().hits, 0);
}

#[test]
fn a_token_differing_in_one_byte_is_not_a_hit() {
    let mut e = env();
    let t = e.token();
    e.get("/orders", &t, NOW);
    // Same claims, another signature (another jti): its own entry.
    let mut claims = e.idp.claims(NOW, "orders:read");
    claims["jti"] = json!("another");
    let other = e.idp.sign(&claims);
    let d = e.get("/orders", &other, NOW);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert_eq!(d.audit.token_id.as_deref(), Some("another"));
    // The original's signature with one byte changed: refused, not served from the cache.
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut bytes = unb64(sig);
    bytes[0] ^= 1;
    let forged = format!("{input}.{}", b64(&bytes));
    assert_eq!(
        e.get("/orders", &forged, NOW).audit.reason,
        "invalid_signature"
    );
}

#[test]
fn the_off_switch_mints_a_fresh_token_every_time() {
    let mut e = env_with(|d| d["cache"] = json!({"enabled": false}));
    let t = e.token();
    let mut jtis = Vec::new();
    for i in 0..3 {
        let d = e.get("/orders", &t, NOW + i);
        assert_eq!(d.audit.cache, CacheUse::Miss);
        jtis.push(d.audit.minted_jti.clone().unwrap());
    }
    jtis.dedup();
    assert_eq!(jtis.len(), 3, "a fresh jti per request");
    assert!(e.cache.is_empty());
}

#[test]
fn a_new_policy_comes_with_a_new_cache() {
    // A new signing key: a cache made for the new policy holds nothing of the old one, so
    // nothing signed by the old key is forwarded again.
    let mut e = env();
    let t = e.token();
    let old = minted(&e.get("/orders", &t, NOW));
    let gw2 = Gateway::with_alg("ES256", "gw-2");
    let doc = policy(&gw2, &[&e.idp], json!([orders_rule()]));
    e.policy = load(&doc);
    e.cache = e.policy.new_cache();
    let d = e.get("/orders", &t, NOW + 1);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    let renewed = minted(&d);
    assert_ne!(renewed, old);
    let (h, _) = gw2.verify(&renewed, NOW + 1);
    assert_eq!(h["kid"], "gw-2");
}

#[test]
fn a_cache_used_with_another_policy_starts_empty() {
    // Even when the glue hands the old cache to a new policy, nothing minted under the old
    // one is reused: the cache is bound to the policy that filled it.
    let mut e = env();
    let t = e.token();
    let old = minted(&e.get("/orders", &t, NOW));
    let gw2 = Gateway::with_alg("EdDSA", "gw-2");
    e.policy = load(&policy(&gw2, &[&e.idp], json!([orders_rule()])));
    let d = e.get("/orders", &t, NOW);
    assert_eq!(d.audit.cache, CacheUse::Miss);
    assert_ne!(minted(&d), old);
    gw2.verify(&minted(&d), NOW);
    assert_eq!(e.cache.len(), 1);
}

#[test]
fn entries_end_when_the_verifying_key_is_forgotten() {
    let mut e = env();
    let t = e.token();
    e.get("/orders", &t, NOW);
    assert_eq!(e.cache.forget_issuer_key(0, Some("k1")), 1);
    assert_eq!(e.get("/orders", &t, NOW).audit.cache, CacheUse::Miss);
    let id = format!("orig-{NOW}");
    assert_eq!(e.cache.forget_token("https://idp.test", &id), 1);
    assert_eq!(e.get("/orders", &t, NOW).audit.cache, CacheUse::Miss);
    assert_eq!(e.get("/orders", &t, NOW).audit.cache, CacheUse::Hit);
}

#[test]
fn the_cache_stays_within_its_bounds_under_many_tokens() {
    let mut e = env_with(|d| d["cache"] = json!({"max_entries": 16, "max_bytes": 65536}));
    for i in 0..200u64 {
        let mut claims = e.idp.claims(NOW, "orders:read");
        claims["jti"] = json!(format!("t-{i}"));
        let t = e.idp.sign(&claims);
        assert_eq!(e.get("/orders", &t, NOW).audit.reason, "exchanged");
        assert!(e.cache.len() <= 16);
        assert!(e.cache.bytes() <= 65536);
    }
    assert_eq!(e.cache.len(), 16);
}

#[test]
fn cache_settings_are_validated() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["cache"] = json!({
        "enabled": "yes", "max_entries": 0, "max_bytes": 1024, "reuse_fraction": 0, "ttl": 5
    });
    let errs = config_errors(&doc);
    assert!(
        has_error(&errs, "cache.enabled", "true or false"),
        "{errs:?}"
    );
    assert!(
        has_error(&errs, "cache.max_entries", "between 1 and 1000000"),
        "{errs:?}"
    );
    assert!(
        has_error(&errs, "cache.max_bytes", "between 65536"),
        "{errs:?}"
    );
    assert!(
        has_error(&errs, "cache.reuse_fraction", "between 0.01 and 1"),
        "{errs:?}"
    );
    assert!(has_error(&errs, "cache.ttl", "unknown field"), "{errs:?}");
    doc["cache"] = json!({"reuse_fraction": 1.5});
    assert!(has_error(
        &config_errors(&doc),
        "cache.reuse_fraction",
        "between"
    ));
    doc["cache"] = json!([]);
    assert!(has_error(
        &config_errors(&doc),
        "cache",
        "must be an object"
    ));

    doc["cache"] = json!({"max_entries": 10, "max_bytes": 70000, "reuse_fraction": 0.25});
    let p = load(&doc);
    assert!(p.cache.enabled);
    assert_eq!(
        (
            p.cache.max_entries,
            p.cache.max_bytes,
            p.cache.reuse_permille
        ),
        (10, 70000, 250)
    );
    doc.as_object_mut().unwrap().remove("cache");
    let p = load(&doc);
    assert_eq!(
        p.cache,
        token_exchange_filter::core::CacheSettings::default()
    );
    assert_eq!(p.cache.reuse_permille, 500);
}
