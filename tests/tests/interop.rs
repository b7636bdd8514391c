//! Interoperability, natively with a fixed clock: minted tokens are strict JSON for every
//! signing algorithm, real providers' key sets load (skipped keys warned about), their user
//! and machine tokens are read through each issuer's claim mapping, and a rule must name its
//! issuers when several are trusted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use serde_json::{json, Value};
use token_exchange_filter::core::{KeySnapshot, Verdict};
use token_exchange_tests::providers;
use token_exchange_tests::*;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The minted token of an allowed decision, checked strictly and with the gateway's key.
fn minted(
    gw: &Gateway,
    d: &token_exchange_filter::core::Decision,
) -> serde_json::Map<String, Value> {
    let Verdict::Forward { authorization, .. } = &d.verdict else {
        panic!("expected an exchange, got {:?}", d.audit);
    };
    gw.verify(authorization.strip_prefix("Bearer ").unwrap(), NOW)
        .1
}

// --- part 1: minted tokens -------------------------------------------------------------

#[test]
fn preserving_sub_is_a_no_op_and_mints_one_sub() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut rule = orders_rule();
    rule["mint"]["preserve_claims"] = json!(["sub", "tenant"]);
    let p = load(&policy(&gw, &[&idp], json!([rule])));
    assert_eq!(p.rules[0].mint.preserve_claims, vec!["tenant".to_owned()]);
    let t = idp.sign(&idp.claims(NOW, "orders:read"));
    let d = decide_get(&p, "/orders", &[&bearer(&t)], NOW);
    let c = minted(&gw, &d);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["tenant"], "acme");
    // The payload text itself holds one "sub" member for the subject (the strict parser
    // refuses two); `act` names the actor in its own `sub`.
    let Verdict::Forward { minted: m, .. } = &d.verdict else {
        unreachable!()
    };
    let payload = String::from_utf8(unb64(m.token.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(payload.matches("\"sub\":\"alice\"").count(), 1, "{payload}");
}

#[test]
fn every_signing_algorithm_mints_strict_tokens() {
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    for alg in ["EdDSA", "ES256", "RS256", "HS256"] {
        let gw = Gateway::with_alg(alg, &format!("gw-{alg}"));
        let mut doc = policy(&gw, &[&idp], json!([orders_rule()]));
        doc["allow_hs256_signing"] = json!(alg == "HS256");
        doc["rules"][0]["mint"]["preserve_claims"] = json!(["sub", "tenant", "email"]);
        let p = load(&doc);
        let t = idp.sign(&idp.claims(NOW, "orders:read orders:write"));
        let d = decide_get(&p, "/orders", &[&bearer(&t)], NOW);
        let c = minted(&gw, &d);
        assert_eq!(c["scope"], "orders:read orders:write", "{alg}");
        assert_eq!(c["email"], "alice@example.com", "{alg}");
        assert_eq!(d.audit.minted_kid.as_deref(), Some(gw.kid.as_str()));
        // The published JWKS carries the public half only (none for HS256).
        let jwks = p.public_jwks();
        let keys = jwks["keys"].as_array().unwrap();
        if alg == "HS256" {
            assert!(keys.is_empty());
        } else {
            assert_eq!(keys[0]["kid"], gw.kid.as_str());
            assert!(keys[0].get("d").is_none());
        }
    }
}

#[test]
fn rsa_signing_fails_closed_without_randomness() {
    // The jti draw comes first; a source that fails on the blinding draw must not yield an
    // unblinded signature.
    struct OneShot(u8);
    impl token_exchange_filter::core::Entropy for OneShot {
        fn fill(
            &mut self,
            buf: &mut [u8],
        ) -> Result<(), token_exchange_filter::core::EntropyError> {
            if self.0 == 0 {
                return Err(token_exchange_filter::core::EntropyError);
            }
            self.0 -= 1;
            buf.fill(3);
            Ok(())
        }
    }
    let gw = Gateway::with_alg("RS256", "gw-rs");
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let p = load(&policy(&gw, &[&idp], json!([orders_rule()])));
    let t = bearer(&idp.sign(&idp.claims(NOW, "orders:read")));
    let req = token_exchange_filter::core::HttpRequest {
        method: "GET",
        path: "/orders",
        authorization: vec![&t],
        ..Default::default()
    };
    let now = std::time::Duration::from_secs(NOW);
    assert_eq!(
        p.decide(&req, &KeySnapshot::default(), now, &mut OneShot(1))
            .audit
            .reason,
        "internal_error"
    );
    // A constant source (all 0xFF) cannot spin the blinding draw forever.
    struct Constant;
    impl token_exchange_filter::core::Entropy for Constant {
        fn fill(
            &mut self,
            buf: &mut [u8],
        ) -> Result<(), token_exchange_filter::core::EntropyError> {
            buf.fill(0xff);
            Ok(())
        }
    }
    assert_eq!(
        p.decide(&req, &KeySnapshot::default(), now, &mut Constant)
            .audit
            .reason,
        "internal_error"
    );
    assert_eq!(
        p.decide(&req, &KeySnapshot::default(), now, &mut CountingEntropy(0))
            .audit
            .reason,
        "exchanged"
    );
}

// --- part 2: provider key sets ---------------------------------------------------------

#[test]
fn provider_key_sets_load_verbatim_and_warn_about_skipped_keys() {
    let gw = Gateway::new();
    let all = providers::all();
    let p = load(&providers::policy(&gw, &all));
    let mut expected_warnings = 0;
    for (i, prov) in all.iter().enumerate() {
        let t = &p.trusted_issuers[i];
        let total = prov.jwks["keys"].as_array().unwrap().len();
        assert_eq!(t.keys.len(), total - prov.skipped_keys, "{}", prov.name);
        expected_warnings += prov.skipped_keys;
    }
    assert_eq!(p.warnings.len(), expected_warnings, "{:?}", p.warnings);
    // Keycloak's encryption key: named by path and kid, with the reason.
    let w = &p.warnings[0];
    assert_eq!(w.path, "trusted_issuers[0].jwks.keys[0]");
    assert!(
        w.message
            .contains("Zc1jd1uBbSwIN8vBf0HDVPbjPzPA4tKd7vVFf9DCRAc"),
        "{w}"
    );
    assert!(w.message.contains("use \"enc\""), "{w}");
}

#[test]
fn a_key_set_with_nothing_usable_or_a_broken_usable_key_is_refused() {
    let gw = Gateway::new();
    let kc = providers::keycloak();
    let mut doc = providers::policy(&gw, std::slice::from_ref(&kc));
    // Only the encryption key left.
    doc["trusted_issuers"][0]["jwks"]["keys"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let errs = config_errors(&doc);
    assert!(
        has_error(&errs, "trusted_issuers[0].jwks.keys", "no key can verify"),
        "{errs:?}"
    );
    assert!(
        has_error(
            &errs,
            "trusted_issuers[0].jwks.keys",
            "keys[0]: use \"enc\""
        ),
        "{errs:?}"
    );

    // Pinned PS256 only: the RS256 key is skipped too, so nothing is usable.
    let mut doc = providers::policy(&gw, std::slice::from_ref(&kc));
    doc["trusted_issuers"][0]["algorithms"] = json!(["PS256"]);
    let errs = config_errors(&doc);
    assert!(
        has_error(
            &errs,
            "trusted_issuers[0].jwks.keys",
            "(RS256) are not pinned"
        ),
        "{errs:?}"
    );

    let base = providers::policy(&gw, std::slice::from_ref(&kc));
    let sig = base["trusted_issuers"][0]["jwks"]["keys"][1].clone();
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut doc = base.clone();
        edit(&mut doc["trusted_issuers"][0]["jwks"]["keys"][1]);
        config_errors(&doc)
    };
    // Private members, a short modulus, bad base64: errors on the usable key, by path.
    for (what, errs) in [
        ("private d", broken(&|k| k["d"] = k["n"].clone())),
        ("short n", broken(&|k| k["n"] = json!(b64(&[0xc5; 128])))),
        (
            "padded n",
            broken(&|k| k["n"] = json!(format!("{}=", k["n"].as_str().unwrap()))),
        ),
        (
            "standard base64 n",
            broken(&|k| k["n"] = json!(k["n"].as_str().unwrap().replace(['-', '_'], "+"))),
        ),
        ("kid a number", broken(&|k| k["kid"] = json!(7))),
        ("use a number", broken(&|k| k["use"] = json!(1))),
    ] {
        assert!(
            has_error(&errs, "trusted_issuers[0].jwks.keys[1]", ""),
            "{what}: {errs:?}"
        );
    }
    // An EC point off the curve.
    let es = Issuer::es256("https://es.test", "e1", 3);
    let mut jwk = es.public_jwk();
    let mut y = unb64(jwk["y"].as_str().unwrap());
    y[31] ^= 1;
    jwk["y"] = json!(b64(&y));
    let mut doc = policy(&gw, &[&es], json!([orders_rule()]));
    doc["trusted_issuers"][0]["jwks"]["keys"] = json!([jwk]);
    assert!(has_error(
        &config_errors(&doc),
        "trusted_issuers[0].jwks.keys[0]",
        "invalid key"
    ));
    // Duplicate kids among usable keys.
    let mut doc = base.clone();
    doc["trusted_issuers"][0]["jwks"]["keys"]
        .as_array_mut()
        .unwrap()
        .push(sig.clone());
    assert!(has_error(
        &config_errors(&doc),
        "trusted_issuers[0].jwks.keys[2]",
        "duplicate kid"
    ));
}

#[test]
fn a_skipped_key_may_share_a_usable_keys_kid() {
    // Decision: allowed (RFC 7517 §4.5 lets keys of different kinds share a kid; a skipped
    // key is never selectable), with a warning saying only the usable key verifies.
    let gw = Gateway::new();
    let kc = providers::keycloak();
    let mut doc = providers::policy(&gw, std::slice::from_ref(&kc));
    doc["trusted_issuers"][0]["jwks"]["keys"][0]["kid"] = json!(kc.issuer.kid);
    let p = load(&doc);
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].message.contains("same kid"),
        "{}",
        p.warnings[0]
    );
    let t = kc.sign(&kc.user_claims(NOW));
    let d = decide_get(&p, "/keycloak/orders", &[&bearer(&t)], NOW);
    assert_eq!(d.audit.reason, "exchanged", "{:?}", d.audit);
}

// --- part 3: claim mapping ---------------------------------------------------------------

#[test]
fn user_and_machine_tokens_of_every_provider() {
    let gw = Gateway::new();
    let all = providers::all();
    let p = load(&providers::policy(&gw, &all));
    for prov in &all {
        for (kind, claims, caller) in [
            ("user", prov.user_claims(NOW), prov.user),
            ("machine", prov.machine_claims(NOW), prov.machine),
        ] {
            let t = prov.sign(&claims);
            let path = format!("/{}/orders/1", prov.name);
            let d = decide_get(&p, &path, &[&bearer(&t)], NOW);
            let what = format!("{} {kind}", prov.name);
            assert!(d.audit.token_verified, "{what}: {:?}", d.audit);
            assert_eq!(d.audit.caller.as_deref(), Some(caller.client), "{what}");
            match caller.scope {
                Some(scope) => {
                    assert_eq!(d.audit.reason, "exchanged", "{what}: {:?}", d.audit);
                    let c = minted(&gw, &d);
                    assert_eq!(c["client_id"], caller.client, "{what}");
                    assert_eq!(c["scope"], scope, "{what}");
                    assert_eq!(c["sub"], claims["sub"], "{what}");
                    // The provider's own caller and permission claims never travel on.
                    for name in ["cid", "appid", "roles", "permissions", "scp", "azp"] {
                        assert!(c.get(name).is_none(), "{what}: {name} copied");
                    }
                }
                // Google's tokens carry no scope: verified and read, never granted one.
                None => assert_eq!(d.audit.reason, "no_grantable_scope", "{what}"),
            }
        }
    }
}

#[test]
fn without_the_mapping_okta_and_entra_callers_and_app_roles_are_refused() {
    // What issue 7 reported, kept as a regression: the defaults (azp/client_id, scope/scp)
    // do not read Okta's cid, Entra v1's appid, or an app-only token's roles.
    let gw = Gateway::new();
    for prov in [providers::okta(), providers::entra_v1()] {
        let mut doc = providers::policy(&gw, std::slice::from_ref(&prov));
        doc["trusted_issuers"][0]
            .as_object_mut()
            .unwrap()
            .remove("claims");
        let p = load(&doc);
        let t = prov.sign(&prov.machine_claims(NOW));
        let d = decide_get(&p, &format!("/{}/orders", prov.name), &[&bearer(&t)], NOW);
        assert_eq!(d.audit.reason, "caller_not_allowed", "{}", prov.name);
    }
    let prov = providers::entra_v2();
    let mut doc = providers::policy(&gw, std::slice::from_ref(&prov));
    doc["rules"][0]["require"]["scopes"] = json!(["Orders.Read.All"]);
    let with_mapping = load(&doc);
    doc["trusted_issuers"][0]
        .as_object_mut()
        .unwrap()
        .remove("claims");
    let without = load(&doc);
    let t = bearer(&prov.sign(&prov.machine_claims(NOW)));
    assert_eq!(
        decide_get(&without, "/entra-v2/orders", &[&t], NOW)
            .audit
            .reason,
        "insufficient_scope"
    );
    assert_eq!(
        decide_get(&with_mapping, "/entra-v2/orders", &[&t], NOW)
            .audit
            .reason,
        "exchanged"
    );
}

#[test]
fn mapped_claims_are_strictly_typed() {
    let gw = Gateway::new();
    let prov = providers::okta();
    let p = load(&providers::policy(&gw, std::slice::from_ref(&prov)));
    let base = prov.machine_claims(NOW);
    let reason = |edit: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        edit(&mut c);
        decide_get(&p, "/okta/orders", &[&bearer(&prov.sign(&c))], NOW)
            .audit
            .reason
    };
    assert_eq!(reason(&|_| {}), "exchanged");
    assert_eq!(
        reason(&|c| c["cid"] = json!(["0oa9svc8batch7okta6"])),
        "invalid_claim"
    );
    assert_eq!(
        reason(&|c| c["scp"] = json!(["orders:read", 7])),
        "invalid_claim"
    );
    assert_eq!(
        reason(&|c| c["scp"] = json!(["orders:read other"])),
        "invalid_claim"
    );
    assert_eq!(reason(&|c| c["scp"] = json!("orders:read")), "exchanged");
    // azp is not Okta's caller claim: an azp naming an allowed client changes nothing.
    assert_eq!(
        reason(&|c| {
            c.as_object_mut().unwrap().remove("cid");
            c["azp"] = json!("0oa9svc8batch7okta6");
        }),
        "caller_not_allowed"
    );
    // Too many values in the mapped scope claim are counted before the signature.
    let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    assert_eq!(reason(&|c| c["scp"] = json!(many)), "too_many_scopes");
}

#[test]
fn the_audit_caller_follows_the_mapping_and_defaults_for_unknown_issuers() {
    let gw = Gateway::new();
    let okta = providers::okta();
    let p = load(&providers::policy(&gw, std::slice::from_ref(&okta)));
    // Unknown issuer: the default caller claims (azp, then client_id).
    let stranger = Issuer::ed25519("https://stranger.test", "s1", 3);
    let mut c = stranger.claims(NOW, "orders:read");
    c["cid"] = json!("from-cid");
    c.as_object_mut().unwrap().remove("azp");
    c["client_id"] = json!("from-client-id");
    let d = decide_get(&p, "/okta/orders", &[&bearer(&stranger.sign(&c))], NOW);
    assert_eq!(d.audit.reason, "untrusted_issuer");
    assert_eq!(d.audit.caller.as_deref(), Some("from-client-id"));
    assert!(!d.audit.token_verified);
    // Okta's tokens: cid, even when refused later.
    let mut c = okta.machine_claims(NOW);
    c["scp"] = json!(["profile"]);
    let d = decide_get(&p, "/okta/orders", &[&bearer(&okta.sign(&c))], NOW);
    assert_eq!(d.audit.reason, "no_grantable_scope");
    assert_eq!(d.audit.caller.as_deref(), Some("0oa9svc8batch7okta6"));
}

#[test]
fn claim_mapping_configuration_errors() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let base = policy(&gw, &[&idp], json!([orders_rule()]));
    let with_claims = |claims: Value| {
        let mut d = base.clone();
        d["trusted_issuers"][0]["claims"] = claims;
        config_errors(&d)
    };
    let at = "trusted_issuers[0].claims";
    assert!(has_error(
        &with_claims(json!({"caller": []})),
        &format!("{at}.caller"),
        "must not be empty"
    ));
    assert!(has_error(
        &with_claims(json!({"scopes": [""]})),
        &format!("{at}.scopes[0]"),
        "must not be empty"
    ));
    assert!(has_error(
        &with_claims(json!({"caller": ["cid", "cid"]})),
        &format!("{at}.caller[1]"),
        "duplicate"
    ));
    assert!(has_error(
        &with_claims(json!({"caller": ["scp"]})),
        &format!("{at}.caller[0]"),
        "both a caller claim and a scope claim"
    ));
    assert!(has_error(
        &with_claims(json!({"scopes": ["azp"]})),
        &format!("{at}.scopes[0]"),
        "both"
    ));
    assert!(has_error(
        &with_claims(json!({"caller": ["x"], "scopes": ["x"]})),
        &format!("{at}.caller[0]"),
        "both"
    ));
    assert!(has_error(
        &with_claims(json!({"scopes": ["aud"]})),
        &format!("{at}.scopes[0]"),
        "registered claim"
    ));
    assert!(has_error(
        &with_claims(json!({"scopes": ["sub"]})),
        &format!("{at}.scopes[0]"),
        "registered claim"
    ));
    assert!(has_error(
        &with_claims(json!({"caller": ["exp"]})),
        &format!("{at}.caller[0]"),
        "registered claim"
    ));
    assert!(has_error(
        &with_claims(json!({"callers": ["cid"]})),
        &format!("{at}.callers"),
        "unknown field"
    ));
    assert!(has_error(
        &with_claims(json!({"caller": "cid"})),
        &format!("{at}.caller"),
        "array of strings"
    ));
    assert!(with_claims(json!({"caller": ["sub"], "scopes": ["roles"]})).is_empty());
    // The claims a mapping reads are narrowed into client_id and scope: never copied.
    let mut d = base.clone();
    d["trusted_issuers"][0]["claims"] = json!({"caller": ["cid"], "scopes": ["roles"]});
    d["rules"][0]["mint"]["preserve_claims"] = json!(["roles", "tenant"]);
    d["rules"][0]["mint"]["add_claims"] = json!({"cid": "x"});
    let errs = config_errors(&d);
    assert!(
        has_error(
            &errs,
            "rules[0].mint.preserve_claims[0]",
            "scopes (narrowed into scope) of trusted issuer"
        ),
        "{errs:?}"
    );
    assert!(
        has_error(
            &errs,
            "rules[0].mint.add_claims.cid",
            "caller (minted as client_id)"
        ),
        "{errs:?}"
    );
}

// --- part 4: issuers per rule ------------------------------------------------------------

#[test]
fn with_several_issuers_every_rule_names_its_issuers() {
    let gw = Gateway::new();
    let internal = Issuer::ed25519("https://idp.test", "k1", 7);
    let partner = Issuer::ed25519("https://partner.test", "p1", 12);
    let mut open = orders_rule();
    open["name"] = json!("open-rule");
    let doc = policy(
        &gw,
        &[&internal, &partner],
        json!([open, accepting(orders_rule(), &["https://idp.test"])]),
    );
    let errs = config_errors(&doc);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        has_error(
            &errs,
            "rules[0].require.issuers",
            "rule \"open-rule\": required when more than one issuer is trusted (2)"
        ),
        "{errs:?}"
    );
    // No require at all: the same error, at the same path.
    let mut bare = orders_rule();
    bare.as_object_mut().unwrap().remove("require");
    let errs = config_errors(&policy(&gw, &[&internal, &partner], json!([bare])));
    assert!(
        has_error(
            &errs,
            "rules[0].require.issuers",
            "required when more than one issuer"
        ),
        "{errs:?}"
    );
    // Counted on the document: a broken second issuer still needs the binding named.
    let mut doc = policy(&gw, &[&internal, &partner], json!([orders_rule()]));
    doc["trusted_issuers"][1]["algorithms"] = json!(["none"]);
    assert!(has_error(
        &config_errors(&doc),
        "rules[0].require.issuers",
        "required"
    ));
    // One trusted issuer: implied, as before.
    assert!(config_errors(&policy(&gw, &[&internal], json!([orders_rule()]))).is_empty());
    // Named: the partner's tokens stay off the internal rule.
    let p = load(&policy(
        &gw,
        &[&internal, &partner],
        json!([accepting(orders_rule(), &["https://idp.test"])]),
    ));
    let t = partner.sign(&partner.claims(NOW, "orders:read"));
    assert_eq!(
        decide_get(&p, "/orders", &[&bearer(&t)], NOW).audit.reason,
        "issuer_not_allowed"
    );
}
