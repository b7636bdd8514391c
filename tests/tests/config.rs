//! Configuration: every example loads through the JSON Schema and the parser; bad
//! configurations are refused whole, with every error and its JSON path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::path::PathBuf;

use serde_json::{json, Value};
use token_exchange_filter::core::Policy;
use token_exchange_tests::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(repo().join("filter-config/token-exchange-filter.schema.json"))
            .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Every JSON policy shipped in the repository: the examples and the demo's.
fn shipped_policies() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["filter-config/examples", "envoy-example"] {
        let Ok(entries) = std::fs::read_dir(repo().join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.extension().is_some_and(|x| x == "json")
                && (dir.starts_with("filter") || name.contains("policy"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_policy_passes_schema_and_parser() {
    let validator = schema();
    let files = shipped_policies();
    assert!(files.len() >= 3, "examples missing: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let schema_errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            schema_errors.is_empty(),
            "{}: schema: {schema_errors:?}",
            f.display()
        );
        if let Err(e) = Policy::from_json(text.as_bytes()) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn schema_documents_every_field() {
    // Every property at every level carries a description.
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{path}.{k}"));
                }
                walk(p, &format!("{path}.{k}"), missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let text =
        std::fs::read_to_string(repo().join("filter-config/token-exchange-filter.schema.json"))
            .unwrap();
    let mut missing = vec![];
    walk(&serde_json::from_str(&text).unwrap(), "", &mut missing);
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}

#[test]
fn schema_and_parser_agree_on_bad_documents() {
    let validator = schema();
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let good = policy(&gw, &[&idp], json!([orders_rule()]));
    assert!(validator.is_valid(&good));
    assert!(config_errors(&good).is_empty());
    // Both accept: two issuers with every rule naming its issuers, a claim mapping, a key
    // set with a key that is skipped.
    let partner = Issuer::ed25519("https://partner.test", "p1", 12);
    let mut also_good = policy(
        &gw,
        &[&idp, &partner],
        json!([accepting(orders_rule(), &["https://idp.test"])]),
    );
    also_good["trusted_issuers"][1]["claims"] =
        json!({"caller": ["cid"], "scopes": ["scp", "roles"]});
    also_good["trusted_issuers"][1]["jwks"]["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc", "n": "AQAB", "e": "AQAB"}));
    assert!(
        validator.is_valid(&also_good),
        "{:?}",
        validator
            .iter_errors(&also_good)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        config_errors(&also_good).is_empty(),
        "{:?}",
        config_errors(&also_good)
    );
    let mut bads = vec![];
    let mut b = good.clone();
    b["rules"][0]["mint"]["ttl_seconds"] = json!(0);
    bads.push(b);
    let mut b = good.clone();
    b["rules"][0]["mint"]["ttl_secs"] = json!(10);
    bads.push(b);
    let mut b = good.clone();
    b["unmatched"] = json!("allow");
    bads.push(b);
    let mut b = good.clone();
    b["trusted_issuers"][0]["algorithms"] = json!(["none"]);
    bads.push(b);
    let mut b = good.clone();
    b["rules"][0]["mint"]["add_claims"] = json!({"aud": "x"});
    bads.push(b);
    // Two trusted issuers and a rule that does not name the ones it accepts.
    let partner = Issuer::ed25519("https://partner.test", "p1", 12);
    bads.push(policy(&gw, &[&idp, &partner], json!([orders_rule()])));
    let mut b = good.clone();
    b["trusted_issuers"][0]["claims"] = json!({"caller": []});
    bads.push(b);
    let mut b = good.clone();
    b["trusted_issuers"][0]["claims"] = json!({"scopes": ["roles"], "scope": ["x"]});
    bads.push(b);
    let mut b = good.clone();
    b["trusted_issuers"][0]["claims"] = json!({"scopes": ["exp"]});
    bads.push(b);
    // Living keys (issue 9): fetched key sources, signing-key states, generated keys,
    // publication.
    let mut fetched = good.clone();
    fetched["trusted_issuers"][0] = json!({
        "issuer": "https://idp.test", "jwks_uri": "https://idp.test/keys",
        "jwks_upstream": "idp", "algorithms": ["EdDSA"], "audiences": ["api"]
    });
    assert!(validator.is_valid(&fetched));
    assert!(
        config_errors(&fetched).is_empty(),
        "{:?}",
        config_errors(&fetched)
    );
    let edits: Vec<(&str, Value)> = vec![
        ("/trusted_issuers/0/jwks_upstream", Value::Null),
        ("/trusted_issuers/0/discovery", json!(true)),
        ("/trusted_issuers/0/jwks_uri", Value::Null),
        ("/trusted_issuers/0/jwks_uri", json!("ftp://idp.test/keys")),
        ("/trusted_issuers/0/jwks_refresh_seconds", json!(5)),
        ("/trusted_issuers/0/jwks_max_bytes", json!(10)),
        ("/jwks_path", json!("jwks")),
        ("/discovery_path", json!("/oidc")),
        ("/jwks_max_age_seconds", json!(60)),
        ("/signing_keys/0/state", json!("old")),
        ("/signing_keys/0/retired_at", json!(5)),
        (
            "/signing_keys",
            json!([{"generate": "EdDSA", "kid": "g", "d": "x"}]),
        ),
        ("/signing_keys", json!([{"generate": "RS256", "kid": "g"}])),
        (
            "/signing_keys",
            json!([{"generate": "EdDSA", "kid": "g", "state": "retired"}]),
        ),
    ];
    for (at, value) in edits {
        let mut b = fetched.clone();
        let (parent, name) = at.rsplit_once('/').unwrap();
        let target = b.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        if value.is_null() {
            target.remove(name);
        } else {
            target.insert(name.to_owned(), value);
        }
        bads.push(b);
    }
    // Fetch settings on an issuer whose keys are all inline.
    let mut b = good.clone();
    b["trusted_issuers"][0]["jwks_timeout_ms"] = json!(1000);
    bads.push(b);
    for b in bads {
        assert!(!validator.is_valid(&b), "schema accepted {b}");
        assert!(!config_errors(&b).is_empty(), "parser accepted {b}");
    }
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut doc = policy(&gw, &[&idp], json!([orders_rule(), orders_rule()]));
    doc["clock_skew_seconds"] = json!(301);
    doc["unmatched"] = json!("allow");
    doc["surprise"] = json!(true);
    doc["trusted_issuers"][0]["algorithms"] = json!(["EdDSA", "HS256"]);
    doc["rules"][0]["mint"]["ttl_seconds"] = json!(0);
    doc["rules"][0]["mint"]["add_claims"] = json!({"iss": "x", "tenant": "y"});
    doc["rules"][0]["mint"]["preserve_claims"] = json!(["tenant", "exp"]);
    doc["rules"][0]["match"]["path_prefix"] = json!("orders");
    doc["rules"][0]["require"]["scopes"] = json!(["bad scope"]);
    doc["rules"][0]["require"]["issuers"] = json!(["https://unknown.test"]);
    doc["rules"][1]["match"]["methods"] = json!(["get"]);
    doc["strip_headers"] = json!(["Authorization"]);
    let errs = config_errors(&doc);
    let expect = [
        ("clock_skew_seconds", "between 0 and 300"),
        ("unmatched", "\"deny\" or \"pass\""),
        ("surprise", "unknown field"),
        ("trusted_issuers[0].algorithms[1]", "HMAC"),
        ("rules[0].mint.ttl_seconds", "between 1 and 86400"),
        ("rules[0].mint.add_claims.iss", "set by the gateway"),
        ("rules[0].mint.add_claims.tenant", "also in preserve_claims"),
        ("rules[0].mint.preserve_claims[1]", "set by the gateway"),
        ("rules[0].match.path_prefix", "start with '/'"),
        ("rules[0].require.scopes[0]", "scope token"),
        ("rules[0].require.issuers[0]", "not in trusted_issuers"),
        ("rules[1].match.methods[0]", "upper-case"),
        ("strip_headers[0]", "cannot strip Authorization"),
    ];
    for (path, needle) in expect {
        assert!(
            has_error(&errs, path, needle),
            "missing {path}: {needle} in {errs:#?}"
        );
    }
    // Duplicate rule names are only detectable once both rules parse; here rule 0 is broken.
    assert!(errs.len() >= expect.len());
}

#[test]
fn key_errors() {
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let base = policy(&gw, &[&idp], json!([orders_rule()]));

    let mut d = base.clone();
    d["signing_keys"] = json!([{"kty": "oct", "kid": "h", "k": b64(&[7u8; 32])}]);
    assert!(has_error(
        &config_errors(&d),
        "signing_keys[0]",
        "allow_hs256_signing"
    ));
    d["allow_hs256_signing"] = json!(true);
    assert!(config_errors(&d).is_empty(), "{:?}", config_errors(&d));
    d["signing_keys"] = json!([{"kty": "oct", "kid": "h", "k": b64(&[7u8; 16])}]);
    assert!(has_error(
        &config_errors(&d),
        "signing_keys[0]",
        "at least 32 bytes"
    ));

    let mut d = base.clone();
    let mut no_kid = gw.private_jwk();
    no_kid.as_object_mut().unwrap().remove("kid");
    d["signing_keys"] = json!([no_kid]);
    assert!(has_error(&config_errors(&d), "signing_keys[0]", "kid"));

    let mut d = base.clone();
    d["signing_keys"] = json!([gw.private_jwk(), gw.private_jwk()]);
    assert!(has_error(
        &config_errors(&d),
        "signing_keys[1]",
        "duplicate kid"
    ));

    // A public key where a private one is needed.
    let mut d = base.clone();
    d["signing_keys"] = json!([idp.public_jwk()]);
    assert!(has_error(
        &config_errors(&d),
        "signing_keys[0]",
        "invalid key"
    ));

    // A private key in an issuer's JWKS is refused (private members in a public key).
    let mut d = base.clone();
    d["trusted_issuers"][0]["jwks"]["keys"] = json!([gw.private_jwk()]);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].jwks.keys[0]",
        "invalid key"
    ));

    // Symmetric issuer keys are skipped (never used to verify); alone, nothing is usable.
    let mut d = base.clone();
    d["trusted_issuers"][0]["jwks"]["keys"] = json!([{"kty": "oct", "k": b64(&[1u8; 32])}]);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].jwks.keys",
        "keys[0]: key type oct (a shared secret) is never used"
    ));
    // Beside a usable key, an oct key is a warning.
    let mut d = base.clone();
    d["trusted_issuers"][0]["jwks"]["keys"] =
        json!([idp.public_jwk(), {"kty": "oct", "kid": "h", "k": b64(&[1u8; 32])}]);
    let p = Policy::from_json(d.to_string().as_bytes()).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].path, "trusted_issuers[0].jwks.keys[1]");
    assert!(
        p.warnings[0].message.starts_with("key \"h\" skipped"),
        "{}",
        p.warnings[0]
    );

    // A key whose type matches none of the pinned algorithms: skipped, so nothing is usable.
    let mut d = base.clone();
    d["trusted_issuers"][0]["algorithms"] = json!(["RS256"]);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].jwks.keys",
        "(EdDSA) are not pinned"
    ));

    // The gateway trusting itself.
    let mut d = base.clone();
    d["trusted_issuers"][0]["issuer"] = json!(gw.iss);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].issuer",
        "gateway's own issuer"
    ));

    // Bad point on the curve.
    let mut d = base.clone();
    let mut bad = idp.public_jwk();
    bad["x"] = json!(b64(&[0u8; 31]));
    d["trusted_issuers"][0]["jwks"]["keys"] = json!([bad]);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].jwks.keys[0]",
        "invalid key"
    ));
}

#[test]
fn small_rsa_keys_are_refused() {
    use rsa::traits::PublicKeyParts;
    let sk = rsa::RsaPrivateKey::new(&mut FixedRng(1), 1024).unwrap();
    let gw = Gateway::new();
    let idp = Issuer::ed25519("https://idp.test", "k1", 7);
    let mut d = policy(&gw, &[&idp], json!([orders_rule()]));
    d["trusted_issuers"][0]["algorithms"] = json!(["RS256"]);
    d["trusted_issuers"][0]["jwks"]["keys"] = json!([{
        "kty": "RSA", "kid": "small", "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be())
    }]);
    assert!(has_error(
        &config_errors(&d),
        "trusted_issuers[0].jwks.keys[0]",
        "invalid key"
    ));
}

#[test]
fn syntax_errors_and_duplicates_are_reported() {
    let e = Policy::from_json(b"{\"issuer\": ").unwrap_err();
    assert!(e.to_string().contains("invalid JSON"), "{e}");
    let e = Policy::from_json(br#"{"issuer":"a","issuer":"b"}"#).unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
    let e = Policy::from_json(b"[]").unwrap_err();
    assert!(e.to_string().contains("must be an object"), "{e}");
    let e = Policy::from_json(b"{}").unwrap_err();
    for f in ["issuer", "signing_keys", "trusted_issuers", "rules"] {
        assert!(
            e.0.iter()
                .any(|x| x.path == f && x.message == "is required"),
            "{f}: {e}"
        );
    }
}

/// The trust-boundary fields (issue 11): the schema and the parser refuse the same mistakes,
/// and the parser names each one's path.
#[test]
fn trust_boundary_fields_are_checked_by_schema_and_parser() {
    use token_exchange_tests::trust::Trust;
    let validator = schema();
    let t = Trust::new();
    let good = t.policy(NOW);
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator
            .iter_errors(&good)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect::<Vec<_>>()
    );
    assert!(
        config_errors(&good).is_empty(),
        "{:?}",
        config_errors(&good)
    );
    // revoked_before as a NumericDate; a rule accepting gateway tokens with room to chain.
    let mut also_good = good.clone();
    also_good["trusted_issuers"][0]["revoked_before"] = json!(NOW - 10);
    assert!(validator.is_valid(&also_good));
    assert!(config_errors(&also_good).is_empty());

    type Edit = fn(&mut Value);
    let cases: &[(Edit, &str, &str)] = &[
        (
            |d| d["trusted_issuers"][0]["review_by"] = json!("2026-13-01"),
            "trusted_issuers[0].review_by",
            "YYYY-MM-DD",
        ),
        (
            |d| d["trusted_issuers"][0]["review_by"] = json!("2026-1-5"),
            "trusted_issuers[0].review_by",
            "YYYY-MM-DD",
        ),
        (
            |d| d["trusted_issuers"][1]["expires"] = json!(20261231),
            "trusted_issuers[1].expires",
            "YYYY-MM-DD",
        ),
        (
            |d| d["trusted_issuers"][0]["revoked_before"] = json!("2026-01-01T00:00:00+01:00"),
            "trusted_issuers[0].revoked_before",
            "NumericDate",
        ),
        (
            |d| d["trusted_issuers"][0]["revoked_before"] = json!(-1),
            "trusted_issuers[0].revoked_before",
            "NumericDate",
        ),
        (
            |d| d["trusted_issuers"][1]["max_scopes"] = json!(["bad scope"]),
            "trusted_issuers[1].max_scopes[0]",
            "scope token",
        ),
        (
            |d| d["trusted_issuers"][1]["max_scopes"] = json!([]),
            "trusted_issuers[1].max_scopes",
            "must not be empty",
        ),
        (
            |d| d["trusted_issuers"][1]["allowed_audiences"] = json!("orders-service"),
            "trusted_issuers[1].allowed_audiences",
            "array",
        ),
        (
            |d| d["rules"][9]["mode"] = json!("dry-run"),
            "rules[9].mode",
            "\"enforce\" or \"shadow\"",
        ),
        (
            |d| d["rules"][4]["accept_gateway_tokens"] = json!({}),
            "rules[4].accept_gateway_tokens.audiences",
            "is required",
        ),
        (
            |d| {
                d["rules"][4]["accept_gateway_tokens"] =
                    json!({"audiences": ["orders-service"], "issuer": "x"})
            },
            "rules[4].accept_gateway_tokens.issuer",
            "unknown field",
        ),
        (
            |d| d["rules"][4]["max_chain_depth"] = json!(1),
            "rules[4].max_chain_depth",
            "at least 2",
        ),
        (
            |d| d["rules"][0]["max_chain_depth"] = json!(9),
            "rules[0].max_chain_depth",
            "between 1 and 8",
        ),
        (
            |d| d["rules"][0]["max_chain_depth"] = json!(0),
            "rules[0].max_chain_depth",
            "between 1 and 8",
        ),
        (
            |d| d["rules"][8]["require"]["max_age_seconds"] = json!(-5),
            "rules[8].require.max_age_seconds",
            "between 0 and 31536000",
        ),
        (
            |d| d["rules"][8]["require"]["acr"] = json!(["urn:mfa level2"]),
            "rules[8].require.acr[0]",
            "acr_values",
        ),
        (
            |d| d["rules"][8]["require"]["acr"] = json!(["urn:\"mfa\""]),
            "rules[8].require.acr[0]",
            "acr_values",
        ),
        (
            |d| d["strip_headers"] = json!(["x-*-user"]),
            "strip_headers[0]",
            "trailing '*'",
        ),
        (
            |d| d["strip_headers"] = json!(["Host"]),
            "strip_headers[0]",
            "cannot strip Authorization",
        ),
        (
            |d| d["strip_headers_action"] = json!("drop"),
            "strip_headers_action",
            "\"strip\" or \"refuse\"",
        ),
        (
            |d| d["revoked"] = json!({"jti": "abc"}),
            "revoked.jti",
            "array of strings",
        ),
        (
            |d| d["revoked"] = json!({"sid": ["abc"]}),
            "revoked.sid",
            "unknown field",
        ),
        (
            |d| d["revoked"]["sub"] = json!([""]),
            "revoked.sub[0]",
            "must not be empty",
        ),
    ];
    for (edit, path, needle) in cases {
        let mut doc = good.clone();
        edit(&mut doc);
        let errs = config_errors(&doc);
        assert!(
            has_error(&errs, path, needle),
            "{path}: {needle} not in {errs:#?}"
        );
        assert!(
            !validator.is_valid(&doc),
            "the schema accepted the document with {path} wrong"
        );
    }
}

/// Checks across the document: gateway tokens need a key with a public half, and JSON depth
/// for the chain they carry.
#[test]
fn chained_rules_need_a_verifiable_gateway_key_and_json_depth() {
    use token_exchange_tests::trust::Trust;
    let t = Trust::new();
    let mut doc = t.policy(NOW);
    let hs = Gateway::with_alg("HS256", "gw-hs");
    doc["signing_keys"] = json!([hs.private_jwk()]);
    doc["allow_hs256_signing"] = json!(true);
    let errs = config_errors(&doc);
    assert!(
        has_error(&errs, "rules[4].accept_gateway_tokens", "public half"),
        "{errs:#?}"
    );
    // An Ed25519 key beside the HS256 one verifies them.
    doc["signing_keys"] = json!([hs.private_jwk(), t.gw.private_jwk()]);
    assert!(config_errors(&doc).is_empty(), "{:?}", config_errors(&doc));

    let mut doc = t.policy(NOW);
    doc["limits"] = json!({"max_json_depth": 3});
    let errs = config_errors(&doc);
    assert!(
        has_error(
            &errs,
            "rules[6].max_chain_depth",
            "limits.max_json_depth (3)"
        ),
        "{errs:#?}"
    );
    assert!(
        !has_error(&errs, "rules[4].max_chain_depth", ""),
        "{errs:#?}"
    );
}
