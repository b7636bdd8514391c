//! Living keys in the core, natively with a fixed clock: the configuration of fetched key
//! sources, signing-key states, generated keys and publication (every error with its
//! path); decisions with a key snapshot (fetched, stale, unknown `kid`, generated signer);
//! the published JWKS over a rotation; the providers' key sets through the fetched-set
//! importer. The schedule state machine and hostile key set responses are tested beside
//! their code (`src/core/fetch/`, `src/core/jwks.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_filter::core::config::JwksLocation;
use token_exchange_filter::core::jwks::import_fetched_jwks;
use token_exchange_filter::core::keys::Alg;
use token_exchange_filter::core::keyset::{FetchedKeySet, KeyMiss, KeySnapshot};
use token_exchange_filter::core::signing::{KeyState, SigningKey};
use token_exchange_filter::core::{HttpRequest, Outcome, Policy, Verdict};
use token_exchange_tests::*;

const IDP: &str = "https://idp.test";

fn fetched_doc(gw: &Gateway) -> Value {
    let mut doc = policy(gw, &[], json!([orders_rule()]));
    doc["trusted_issuers"] = json!([{
        "issuer": IDP,
        "jwks_uri": "https://idp.test/keys",
        "jwks_upstream": "idp",
        "algorithms": ["EdDSA"],
        "audiences": ["api"]
    }]);
    doc
}

fn snapshot_with(keys: &[&Issuer], fetched_at: u64) -> KeySnapshot {
    let doc = json!({ "keys": keys.iter().map(|i| i.public_jwk()).collect::<Vec<_>>() });
    let set = import_fetched_jwks(doc.to_string().as_bytes(), &[Alg::EdDSA]).unwrap();
    let mut s = KeySnapshot::new();
    s.set_fetched(
        IDP,
        FetchedKeySet {
            version: 1,
            fetched_at_ms: fetched_at * 1000,
            keys: Arc::new(set.keys),
        },
    );
    s
}

fn decide(
    p: &Policy,
    keys: &KeySnapshot,
    token: &str,
    now: u64,
) -> token_exchange_filter::core::Decision {
    let auth = format!("Bearer {token}");
    let req = HttpRequest {
        method: "GET",
        path: "/orders",
        host: Some("api.example.com"),
        authorization: vec![auth.as_str()],
        ..Default::default()
    };
    p.decide(
        &req,
        keys,
        Duration::from_secs(now),
        &mut CountingEntropy(0),
    )
}

#[test]
fn key_sources_read_with_defaults() {
    let gw = Gateway::new();
    let p = load(&fetched_doc(&gw));
    let s = p.trusted_issuers[0].key_source.as_ref().unwrap();
    assert!(p.trusted_issuers[0].keys.is_empty());
    assert!(
        matches!(&s.location, JwksLocation::Uri(u) if u.to_string() == "https://idp.test/keys")
    );
    assert_eq!(s.upstream, "idp");
    assert_eq!(
        (
            s.refresh_seconds,
            s.max_stale_seconds,
            s.timeout_ms,
            s.max_bytes,
            s.min_refetch_seconds
        ),
        (300, 86_400, 2_000, 65_536, 30)
    );
    let mut doc = fetched_doc(&gw);
    let t = &mut doc["trusted_issuers"][0];
    t.as_object_mut().unwrap().remove("jwks_uri");
    t["issuer"] = json!("https://idp.test/realms/demo/");
    t["discovery"] = json!(true);
    doc["rules"][0]["require"]["issuers"] = json!(["https://idp.test/realms/demo/"]);
    let p = load(&doc);
    let s = p.trusted_issuers[0].key_source.as_ref().unwrap();
    assert!(matches!(&s.location, JwksLocation::Discovery(u)
        if u.to_string() == "https://idp.test/realms/demo/.well-known/openid-configuration"));
    // Inline issuers have no source.
    let idp = Issuer::ed25519(IDP, "k1", 7);
    assert!(
        load(&policy(&gw, &[&idp], json!([orders_rule()]))).trusted_issuers[0]
            .key_source
            .is_none()
    );
}

#[test]
fn key_source_errors_have_paths() {
    let gw = Gateway::new();
    let base = fetched_doc(&gw);
    let at = "trusted_issuers[0]";
    let case = |edit: &dyn Fn(&mut Value), path: &str, needle: &str| {
        let mut doc = base.clone();
        edit(&mut doc["trusted_issuers"][0]);
        let errs = config_errors(&doc);
        assert!(has_error(&errs, path, needle), "{path} {needle}: {errs:#?}");
    };
    let remove = |name: &'static str| {
        move |t: &mut Value| {
            t.as_object_mut().unwrap().remove(name);
        }
    };
    case(
        &remove("jwks_upstream"),
        &format!("{at}.jwks_upstream"),
        "is required",
    );
    case(
        &remove("jwks_uri"),
        &format!("{at}.jwks"),
        "or jwks_uri, or discovery",
    );
    case(
        &|t| t["discovery"] = json!(true),
        &format!("{at}.discovery"),
        "cannot be used with jwks_uri",
    );
    case(
        &|t| t["discovery"] = json!("yes"),
        &format!("{at}.discovery"),
        "true or false",
    );
    for (url, needle) in [
        ("ftp://idp.test/keys", "http:// or https://"),
        ("https://user:pw@idp.test/keys", "user information"),
        ("https://idp.test/keys#x", "fragment"),
        ("https://idp.test:0/keys", "port"),
        ("/keys", "http:// or https://"),
    ] {
        case(
            &|t| t["jwks_uri"] = json!(url),
            &format!("{at}.jwks_uri"),
            needle,
        );
    }
    case(
        &|t| {
            t.as_object_mut().unwrap().remove("jwks_uri");
            t["discovery"] = json!(true);
            t["issuer"] = json!("idp-without-url");
        },
        &format!("{at}.issuer"),
        "http(s) issuer URL",
    );
    for (field, value, needle) in [
        ("jwks_refresh_seconds", json!(5), "between 10 and 86400"),
        ("jwks_max_stale_seconds", json!(10), "between 60 and 604800"),
        ("jwks_timeout_ms", json!(60_001), "between 100 and 60000"),
        ("jwks_max_bytes", json!(100), "between 1024 and 1048576"),
        ("jwks_min_refetch_seconds", json!(0), "between 1 and 3600"),
        ("jwks_refresh_seconds", json!("300"), "integer"),
    ] {
        case(
            &|t| t[field] = value.clone(),
            &format!("{at}.{field}"),
            needle,
        );
    }
    case(
        &|t| {
            t["jwks_refresh_seconds"] = json!(600);
            t["jwks_max_stale_seconds"] = json!(300);
        },
        &format!("{at}.jwks_max_stale_seconds"),
        "at least jwks_refresh_seconds (600)",
    );
    // Fetch settings on an inline issuer would be silently unused: refused.
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["trusted_issuers"][0]["jwks_refresh_seconds"] = json!(60);
    doc["trusted_issuers"][0]["jwks_upstream"] = json!("x");
    let errs = config_errors(&doc);
    assert!(has_error(
        &errs,
        "trusted_issuers[0].jwks_refresh_seconds",
        "only valid with jwks_uri"
    ));
    assert!(has_error(
        &errs,
        "trusted_issuers[0].jwks_upstream",
        "only valid with jwks_uri"
    ));
    // Unknown members still are errors, naming the new ones.
    let mut doc = base.clone();
    doc["trusted_issuers"][0]["jwks_url"] = json!("https://x/");
    let errs = config_errors(&doc);
    assert!(
        has_error(&errs, "trusted_issuers[0].jwks_url", "jwks_upstream"),
        "{errs:?}"
    );
}

#[test]
fn decisions_with_fetched_keys() {
    let gw = Gateway::new();
    let p = load(&fetched_doc(&gw));
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let k2 = Issuer::ed25519(IDP, "k2", 8);
    let t1 = k1.sign(&k1.claims(NOW, "orders:read"));

    // Never fetched: 503, no challenge, Retry-After the refetch interval; the glue is told.
    let d = decide(&p, &KeySnapshot::new(), &t1, NOW);
    assert_eq!(d.audit.reason, "issuer_keys_unavailable");
    assert!(!d.audit.token_verified);
    let Verdict::Deny(denial) = &d.verdict else {
        panic!()
    };
    assert_eq!(denial.status, 503);
    assert_eq!(denial.retry_after, Some(30));
    assert!(denial.www_authenticate.is_none());
    assert!(denial.body.contains("temporarily_unavailable"));
    let f = d.fetched_keys.unwrap();
    assert_eq!(
        (f.issuer.as_str(), f.missing),
        (IDP, Some(KeyMiss::Unavailable))
    );

    // Fetched: exchanged.
    let keys = snapshot_with(&[&k1], NOW - 10);
    let d = decide(&p, &keys, &t1, NOW);
    assert_eq!(d.audit.reason, "exchanged");
    assert_eq!(d.fetched_keys.unwrap().missing, None);
    // A kid the set lacks: unknown_key, and a refetch could help.
    let t2 = k2.sign(&k2.claims(NOW, "orders:read"));
    let d = decide(&p, &keys, &t2, NOW);
    assert_eq!(d.audit.reason, "unknown_key");
    assert_eq!(d.fetched_keys.unwrap().missing, Some(KeyMiss::UnknownKid));
    // No kid with a one-key set: that key.
    let no_kid = k1.sign_raw(
        r#"{"alg":"EdDSA"}"#,
        &k1.claims(NOW, "orders:read").to_string(),
    );
    assert_eq!(decide(&p, &keys, &no_kid, NOW).audit.reason, "exchanged");
    // Stale beyond jwks_max_stale_seconds: unavailable, exactly at the bound.
    let stale = snapshot_with(&[&k1], NOW - 86_400);
    assert_eq!(
        decide(&p, &stale, &t1, NOW).audit.reason,
        "issuer_keys_unavailable"
    );
    let almost = snapshot_with(&[&k1], NOW - 86_399);
    assert_eq!(decide(&p, &almost, &t1, NOW).audit.reason, "exchanged");
    // Cheap checks come first: an untrusted issuer is never "unavailable".
    let other = Issuer::ed25519("https://other.test", "o", 3);
    let d = decide(
        &p,
        &KeySnapshot::new(),
        &other.sign(&other.claims(NOW, "x")),
        NOW,
    );
    assert_eq!(d.audit.reason, "untrusted_issuer");
    assert!(d.fetched_keys.is_none());
}

#[test]
fn inline_keys_stay_pinned_beside_fetched_ones() {
    let gw = Gateway::new();
    let pinned = Issuer::ed25519(IDP, "pinned", 5);
    let k1 = Issuer::ed25519(IDP, "k1", 7);
    let mut doc = fetched_doc(&gw);
    doc["trusted_issuers"][0]["jwks"] = json!({ "keys": [pinned.public_jwk()] });
    let p = load(&doc);
    let tp = pinned.sign(&pinned.claims(NOW, "orders:read"));
    let t1 = k1.sign(&k1.claims(NOW, "orders:read"));
    assert_eq!(
        decide(&p, &KeySnapshot::new(), &tp, NOW).audit.reason,
        "exchanged"
    );
    assert_eq!(
        decide(&p, &KeySnapshot::new(), &t1, NOW).audit.reason,
        "issuer_keys_unavailable"
    );
    assert_eq!(
        decide(&p, &snapshot_with(&[&k1], NOW), &t1, NOW)
            .audit
            .reason,
        "exchanged"
    );
    // A fetched key can never replace a pinned one: the pinned key is found first.
    let impostor = Issuer::ed25519(IDP, "pinned", 66);
    let ti = impostor.sign(&impostor.claims(NOW, "orders:read"));
    let keys = snapshot_with(&[&impostor], NOW);
    assert_eq!(
        decide(&p, &keys, &ti, NOW).audit.reason,
        "invalid_signature"
    );
    assert_eq!(decide(&p, &keys, &tp, NOW).audit.reason, "exchanged");
}

#[test]
fn signing_key_states_and_their_errors() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let k2 = Gateway::with_alg("ES256", "gw-2");
    let base = policy(&gw, &[&idp], json!([orders_rule()]));
    let keys_doc = |keys: Value| {
        let mut d = base.clone();
        d["signing_keys"] = keys;
        d
    };
    let state = |g: &Gateway, s: &str| {
        let mut jwk = g.private_jwk();
        jwk["state"] = json!(s);
        jwk
    };
    // Without states: the first signs, the others are published.
    let p = load(&keys_doc(json!([gw.private_jwk(), k2.private_jwk()])));
    assert_eq!(p.active_key().unwrap().kid, "gw-1");
    assert_eq!(p.signing_keys[1].state, KeyState::Published);
    // With states: the active one signs wherever it is.
    let mut retired = state(&gw, "retired");
    retired["retired_at"] = json!(NOW);
    let p = load(&keys_doc(json!([retired, state(&k2, "active")])));
    assert_eq!(p.active_key().unwrap().kid, "gw-2");
    assert_eq!(p.signing_keys[0].state, KeyState::Retired { at: NOW });
    let t = idp.sign(&idp.claims(NOW, "orders:read"));
    let d = decide(&p, &KeySnapshot::new(), &t, NOW);
    assert_eq!(d.audit.minted_kid.as_deref(), Some("gw-2"));

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!([state(&gw, "active"), state(&k2, "active")]),
            "signing_keys",
            "exactly one key must have state \"active\" (found 2)",
        ),
        (
            json!([state(&gw, "published")]),
            "signing_keys",
            "(found 0)",
        ),
        (
            json!([state(&gw, "active"), k2.private_jwk()]),
            "signing_keys",
            "either every key has a state",
        ),
        (
            json!([state(&gw, "retired"), state(&k2, "active")]),
            "signing_keys[0].retired_at",
            "is required for a retired key",
        ),
        (
            json!([{ "retired_at": 5, "kty": "OKP" }]),
            "signing_keys[0].retired_at",
            "only valid with state \"retired\"",
        ),
        (
            json!([state(&gw, "old")]),
            "signing_keys[0].state",
            "\"active\", \"published\" or \"retired\"",
        ),
        (
            json!([{ "generate": "RS256", "kid": "g" }]),
            "signing_keys[0].generate",
            "\"EdDSA\" or \"ES256\"",
        ),
        (
            json!([{ "generate": "EdDSA" }]),
            "signing_keys[0].kid",
            "is required",
        ),
        (
            json!([{ "generate": "EdDSA", "kid": "g", "d": "secret" }]),
            "signing_keys[0].d",
            "unknown field",
        ),
        (
            json!([{ "generate": "EdDSA", "kid": "gw-1" }, gw.private_jwk()]),
            "signing_keys[1]",
            "duplicate kid",
        ),
    ];
    for (keys, path, needle) in cases {
        let errs = config_errors(&keys_doc(keys.clone()));
        assert!(has_error(&errs, path, needle), "{keys}: {errs:#?}");
    }
}

#[test]
fn generated_keys_sign_only_once_adopted() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    doc["signing_keys"] = json!([{ "generate": "EdDSA", "kid": "gen-1" }]);
    let p = load(&doc);
    let t = idp.sign(&idp.claims(NOW, "orders:read"));
    // Not adopted yet: nothing is signed.
    let d = decide(&p, &KeySnapshot::new(), &t, NOW);
    assert_eq!(d.audit.reason, "internal_error");
    let (key, jwk) = SigningKey::generate(Alg::EdDSA, "gen-1", &mut CountingEntropy(3)).unwrap();
    let public = key.public_jwk().unwrap();
    let mut keys = KeySnapshot::new();
    keys.add_generated(Arc::new(key));
    let d = decide(&p, &keys, &t, NOW);
    assert_eq!(d.audit.minted_kid.as_deref(), Some("gen-1"));
    let Verdict::Forward { minted, .. } = &d.verdict else {
        panic!()
    };
    // Verified with the published half, by jwt-simple.
    use jwt_simple::prelude::*;
    let pk = Ed25519PublicKey::from_jwk(&public.to_string()).unwrap();
    let opts = VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(NOW)),
        ..Default::default()
    };
    pk.verify_token::<Value>(&minted.token, Some(opts)).unwrap();
    assert_eq!(p.published_jwks(&keys, NOW), json!({ "keys": [public] }));
    assert!(jwk.get("d").is_some());
}

#[test]
fn the_published_key_set_follows_the_rotation() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let k2 = Gateway::with_alg("ES256", "gw-2");
    let hs = Gateway::with_alg("HS256", "hs");
    let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
    let mut old = gw.private_jwk();
    old["state"] = json!("retired");
    old["retired_at"] = json!(NOW);
    let mut new = k2.private_jwk();
    new["state"] = json!("active");
    let mut secret = hs.private_jwk();
    secret["state"] = json!("published");
    doc["signing_keys"] = json!([old, new, secret]);
    doc["allow_hs256_signing"] = json!(true);
    doc["rules"][0]["mint"]["ttl_seconds"] = json!(900);
    let mut short = orders_rule();
    short["name"] = json!("short");
    short["mint"]["ttl_seconds"] = json!(30);
    doc["rules"] = json!([doc["rules"][0].clone(), short]);
    doc["jwks_path"] = json!("/jwks");
    let p = load(&doc);
    assert_eq!(p.longest_ttl_seconds(), 900);
    let kids = |now: u64| -> Vec<String> {
        p.published_jwks(&KeySnapshot::new(), now)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                for private in ["d", "k", "p", "q"] {
                    assert!(k.get(private).is_none());
                }
                k["kid"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(kids(NOW + 899), ["gw-1", "gw-2"], "HS256 never published");
    assert_eq!(kids(NOW + 900), ["gw-2"]);
    // Served: GET only, with the cache lifetime; the audit says what was served.
    let req = |method| HttpRequest {
        method,
        path: "/jwks?x=1",
        request_id: Some("r"),
        ..Default::default()
    };
    let served = p
        .serve_published(&req("GET"), &KeySnapshot::new(), Duration::from_secs(NOW))
        .unwrap();
    assert_eq!(served.status, 200);
    assert!(served
        .headers
        .contains(&("cache-control", "public, max-age=300".to_owned())));
    assert_eq!(served.audit.decision, Outcome::Serve);
    assert!(served
        .audit
        .to_json_line()
        .contains("\"decision\":\"serve\",\"reason\":\"jwks\",\"status\":200"));
    let refused = p
        .serve_published(&req("PUT"), &KeySnapshot::new(), Duration::from_secs(NOW))
        .unwrap();
    assert_eq!((refused.status, refused.body.as_str()), (405, ""));
    let other = HttpRequest {
        method: "GET",
        path: "/jwks/x",
        ..Default::default()
    };
    assert!(p
        .serve_published(&other, &KeySnapshot::new(), Duration::from_secs(NOW))
        .is_none());
    assert!(p.openid_configuration().is_none(), "no discovery_path");
}

#[test]
fn publication_errors_have_paths() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519(IDP, "k1", 7);
    let base = policy(&gw, &[&idp], json!([orders_rule()]));
    let case = |edit: &dyn Fn(&mut Value), path: &str, needle: &str| {
        let mut doc = base.clone();
        edit(&mut doc);
        let errs = config_errors(&doc);
        assert!(has_error(&errs, path, needle), "{path}: {errs:#?}");
    };
    for bad in ["jwks", "/a?b", "/a#b", "/a/../b", "/a%2fb", "/a b", ""] {
        case(&|d| d["jwks_path"] = json!(bad), "jwks_path", "");
    }
    case(
        &|d| d["discovery_path"] = json!("/.well-known/openid-configuration"),
        "discovery_path",
        "needs jwks_path",
    );
    case(
        &|d| {
            d["jwks_path"] = json!("/same");
            d["discovery_path"] = json!("/same");
        },
        "discovery_path",
        "must differ",
    );
    case(
        &|d| {
            d["issuer"] = json!("gateway");
            d["jwks_path"] = json!("/jwks");
            d["discovery_path"] = json!("/oidc");
        },
        "discovery_path",
        "http(s) issuer URL",
    );
    case(
        &|d| d["jwks_max_age_seconds"] = json!(60),
        "jwks_max_age_seconds",
        "only valid with jwks_path",
    );
    case(
        &|d| {
            d["jwks_path"] = json!("/jwks");
            d["jwks_max_age_seconds"] = json!(86_401);
        },
        "jwks_max_age_seconds",
        "between 0 and 86400",
    );
    let mut ok = base.clone();
    ok["jwks_path"] = json!("/.well-known/jwks.json");
    ok["discovery_path"] = json!("/.well-known/openid-configuration");
    let p = load(&ok);
    assert_eq!(
        p.openid_configuration().unwrap(),
        json!({"issuer": "https://gateway.test", "jwks_uri": "https://gateway.test/.well-known/jwks.json"})
    );
}

#[test]
fn provider_key_sets_import_the_same_when_fetched() {
    for prov in providers::all() {
        let pinned: Vec<Alg> = prov.trusted()["algorithms"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| Alg::from_verify_name(a.as_str().unwrap()))
            .collect();
        let set = import_fetched_jwks(prov.jwks.to_string().as_bytes(), &pinned)
            .unwrap_or_else(|e| panic!("{}: {e:?}", prov.name));
        let total = prov.jwks["keys"].as_array().unwrap().len();
        assert_eq!(set.keys.len(), total - prov.skipped_keys, "{}", prov.name);
        assert_eq!(set.skipped.len(), prov.skipped_keys, "{}", prov.name);
    }
}
