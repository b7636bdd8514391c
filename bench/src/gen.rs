//! Pre-minted tokens and policies for the benchmark, each checked with the filter's own
//! decision before any load is sent (a benchmark of refusals would measure the wrong path).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use token_exchange_filter::core::{HttpRequest, Policy, Verdict};
use token_exchange_tests::{policy, CountingEntropy, Gateway, Issuer};

use crate::Res;

/// The scope every benchmark rule requires.
pub const SCOPE: &str = "orders:read";

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The three benchmark issuers, by the name the script uses for them.
pub fn issuers() -> Vec<(&'static str, Issuer)> {
    vec![
        (
            "rs256",
            Issuer::rs256("https://idp-rs256.bench.test", "rs-1"),
        ),
        (
            "es256",
            Issuer::es256("https://idp-es256.bench.test", "es-1", 3),
        ),
        (
            "eddsa",
            Issuer::ed25519("https://idp-eddsa.bench.test", "ed-1", 4),
        ),
    ]
}

/// The benchmark rule: any path, requires `orders:read`, mints for `orders-service`.
pub fn bench_rule(name: &str, prefix: &str) -> Value {
    json!({
        "name": name,
        "match": { "path_prefix": prefix, "methods": ["GET"] },
        "require": { "scopes": [SCOPE] },
        "mint": {
            "audience": "orders-service",
            "scopes": [SCOPE],
            "ttl_seconds": 300,
            "preserve_claims": ["tenant"]
        }
    })
}

/// The benchmark policy: these issuers, one rule on every path accepting all of them
/// (`require.issuers` is required with several trusted issuers), EdDSA minting.
pub fn bench_policy(gw: &Gateway, issuers: &[&Issuer]) -> Value {
    let mut rule = bench_rule("bench", "/");
    if let Some(require) = rule.get_mut("require") {
        let names: Vec<&str> = issuers.iter().map(|i| i.iss.as_str()).collect();
        set(require, "issuers", json!(names));
    }
    policy(gw, issuers, json!([rule]))
}

/// A token of `issuer`, valid from `now` for `valid_for` seconds, with its own `jti`.
pub fn token(issuer: &Issuer, now: u64, valid_for: u64, jti: &str) -> String {
    let mut claims = issuer.claims(now, &format!("{SCOPE} profile"));
    set(&mut claims, "exp", json!(now + valid_for));
    set(&mut claims, "jti", json!(jti));
    issuer.sign(&claims)
}

/// Sets `key` on a JSON object (nothing on other values).
pub fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

/// Fails unless the filter would exchange `token` on `path` at `now`.
pub fn check_forwarded(policy: &Policy, path: &str, token: &str, now: u64) -> Res<()> {
    let authorization = format!("Bearer {token}");
    let req = HttpRequest {
        method: "GET",
        path,
        host: Some("bench.test"),
        route_name: None,
        authorization: vec![authorization.as_str()],
        request_id: None,
    };
    let d = policy.decide(&req, Duration::from_secs(now), &mut CountingEntropy(0));
    match d.verdict {
        Verdict::Forward { .. } => Ok(()),
        _ => Err(format!(
            "a benchmark token is not exchanged on {path}: {}",
            d.audit.reason
        )),
    }
}

fn write(path: &Path, text: &str) -> Res<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_tokens(path: &Path, tokens: &[String]) -> Res<()> {
    let mut text = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for t in tokens {
        let _ = writeln!(text, "{t}");
    }
    write(path, &text)
}

/// `bench gen`: policy.json, jwks-ALG.json and tokens-ALG-{warm,cold}.txt.
pub fn gen(out: &Path, cold: usize, warm: usize, valid_for: u64) -> Res<()> {
    let now = unix_now();
    let gw = Gateway::new();
    let all = issuers();
    let refs: Vec<&Issuer> = all.iter().map(|(_, i)| i).collect();
    let doc = bench_policy(&gw, &refs);
    let native = Policy::from_json(doc.to_string().as_bytes()).map_err(|e| e.to_string())?;
    write(&out.join("policy.json"), &doc.to_string())?;
    for (name, issuer) in &all {
        write(
            &out.join(format!("jwks-{name}.json")),
            &json!({ "keys": [issuer.public_jwk()] }).to_string(),
        )?;
        write(&out.join(format!("issuer-{name}.txt")), &issuer.iss)?;
        for (kind, count) in [("warm", warm), ("cold", cold)] {
            let tokens: Vec<String> = (0..count.max(1))
                .map(|i| token(issuer, now, valid_for, &format!("bench-{name}-{kind}-{i}")))
                .collect();
            for t in tokens.iter().take(3).chain(tokens.last()) {
                check_forwarded(&native, "/orders/1", t, now)?;
            }
            write_tokens(&out.join(format!("tokens-{name}-{kind}.txt")), &tokens)?;
        }
    }
    Ok(())
}

/// The policy-scale case: `rules` rules on `/svc-I` prefixes, each requiring one of `issuers`
/// EdDSA issuers (rule I: issuer I mod M), so a token of the last issuer on the last rule's
/// path walks past every other rule. Returns the policy, the issuers and that path.
pub fn scale_policy(rules: usize, issuers: usize) -> (Value, Vec<Issuer>, String) {
    let gw = Gateway::new();
    let issuers = issuers.max(1);
    let list: Vec<Issuer> = (0..issuers)
        .map(|j| {
            Issuer::ed25519(
                &format!("https://idp-{j}.scale.bench.test"),
                &format!("k{j}"),
                (j % 250) as u8 + 1,
            )
        })
        .collect();
    let refs: Vec<&Issuer> = list.iter().collect();
    let rules = rules.max(1);
    let rule_list: Vec<Value> = (0..rules)
        .map(|i| {
            let mut r = bench_rule(&format!("svc-{i}"), &format!("/svc-{i}"));
            if let Some(iss) = list.get(i % issuers) {
                if let Some(require) = r.get_mut("require") {
                    set(require, "issuers", json!([iss.iss]));
                }
            }
            r
        })
        .collect();
    let doc = policy(&gw, &refs, Value::Array(rule_list));
    let path = format!("/svc-{}/items", rules - 1);
    (doc, list, path)
}

/// The issuer whose tokens match the last rule of [`scale_policy`].
pub fn scale_issuer(list: &[Issuer], rules: usize) -> Option<&Issuer> {
    list.get((rules.max(1) - 1) % list.len().max(1))
}

/// `bench gen-scale`: scale-policy.json, scale-path.txt and tokens-scale-{warm,cold}.txt.
pub fn gen_scale(
    out: &Path,
    rules: usize,
    issuers: usize,
    cold: usize,
    warm: usize,
    valid_for: u64,
) -> Res<()> {
    let now = unix_now();
    let (doc, list, path) = scale_policy(rules, issuers);
    let native = Policy::from_json(doc.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let issuer = scale_issuer(&list, rules).ok_or("no issuer")?;
    write(&out.join("scale-policy.json"), &doc.to_string())?;
    write(&out.join("scale-path.txt"), &path)?;
    for (kind, count) in [("warm", warm), ("cold", cold)] {
        let tokens: Vec<String> = (0..count.max(1))
            .map(|i| token(issuer, now, valid_for, &format!("bench-scale-{kind}-{i}")))
            .collect();
        for t in tokens.iter().take(3).chain(tokens.last()) {
            check_forwarded(&native, &path, t, now)?;
        }
        write_tokens(&out.join(format!("tokens-scale-{kind}.txt")), &tokens)?;
    }
    Ok(())
}
