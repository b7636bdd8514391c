//! The native micro-benchmark: median µs per operation over interleaved rounds, printed as a
//! Markdown table. Figures are for comparing implementations and policy shapes on one
//! machine; inside Envoy's V8 the same work costs 2-5x more (bench/README.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Value};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::{ExchangeCache, HttpRequest, KeySnapshot, Policy, Verdict};
use token_exchange_tests::{b64, policy, unb64, CountingEntropy, Gateway};

use crate::gen::{
    accepting, bench_rule, issuers, scale_issuer, scale_policy, set, token, unix_now,
};
use crate::Res;

const RSA_2048: &str = include_str!("../../tests/fixtures/rsa/rsa-2048.TEST-ONLY.pem");
const RSA_4096: &str = include_str!("../../tests/fixtures/rsa/rsa-4096.TEST-ONLY.pem");

/// One measured operation: returns whether it gave the expected answer.
struct Case {
    name: String,
    op: Box<dyn FnMut() -> bool>,
}

fn split(token: &str) -> Res<(Vec<u8>, Vec<u8>)> {
    let (input, sig) = token.rsplit_once('.').ok_or("not a JWS")?;
    Ok((input.as_bytes().to_vec(), unb64(sig)))
}

fn verify_case(name: &str, jwk: &Value, alg: Alg, token: &str) -> Res<Case> {
    let key = IssuerKey::from_jwk(jwk, &Alg::VERIFY).map_err(|e| e.to_string())?;
    let (input, sig) = split(token)?;
    Ok(Case {
        name: format!("verify {name}"),
        op: Box::new(move || key.verify(alg, black_box(&input), black_box(&sig))),
    })
}

fn rsa_jwk(sk: &rsa::RsaPrivateKey, private: bool) -> Value {
    let mut jwk = json!({
        "kty": "RSA", "kid": "rsa",
        "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be()),
    });
    if private {
        let primes = sk.primes();
        let part = |v: Option<&rsa::BigUint>| v.map(|v| b64(&v.to_bytes_be()));
        set(&mut jwk, "d", json!(b64(&sk.d().to_bytes_be())));
        set(&mut jwk, "p", json!(part(primes.first())));
        set(&mut jwk, "q", json!(part(primes.get(1))));
        set(&mut jwk, "dp", json!(part(sk.dp())));
        set(&mut jwk, "dq", json!(part(sk.dq())));
        set(
            &mut jwk,
            "qi",
            json!(sk.crt_coefficient().map(|v| b64(&v.to_bytes_be()))),
        );
    }
    jwk
}

fn decide_case(name: String, policy: Policy, path: String, token: String, now: u64) -> Case {
    let authorization = format!("Bearer {token}");
    let mut entropy = CountingEntropy(0);
    let keys = KeySnapshot::new();
    Case {
        name,
        op: Box::new(move || {
            let req = HttpRequest {
                method: "GET",
                path: &path,
                host: Some("bench.test"),
                route_name: None,
                authorization: vec![authorization.as_str()],
                request_id: Some("bench"),
                header_names: vec!["host", "authorization"],
            };
            let d = policy.decide(&req, &keys, Duration::from_secs(now), &mut entropy);
            matches!(d.verdict, Verdict::Forward { .. })
        }),
    }
}

/// The decision through the cache, cycling over `tokens`: one token repeated measures a hit;
/// more distinct tokens than the cache holds measure a miss with its insertion and eviction.
fn cached_case(name: String, policy: Policy, path: String, tokens: Vec<String>, now: u64) -> Case {
    let authorizations: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    let mut cache: ExchangeCache = policy.new_cache();
    let mut entropy = CountingEntropy(0);
    let keys = KeySnapshot::new();
    let mut next = 0usize;
    Case {
        name,
        op: Box::new(move || {
            let Some(authorization) = authorizations.get(next % authorizations.len().max(1)) else {
                return false;
            };
            next = next.wrapping_add(1);
            let req = HttpRequest {
                method: "GET",
                path: &path,
                host: Some("bench.test"),
                route_name: None,
                authorization: vec![authorization.as_str()],
                request_id: Some("bench"),
                header_names: vec!["host", "authorization"],
            };
            let d = policy.decide_cached(
                &req,
                &keys,
                Duration::from_secs(now),
                &mut entropy,
                &mut cache,
            );
            matches!(d.verdict, Verdict::Forward { .. })
        }),
    }
}

/// A decision that must be refused with `reason`.
fn denied_case(
    name: String,
    policy: Policy,
    token: String,
    reason: &'static str,
    now: u64,
) -> Case {
    let authorization = format!("Bearer {token}");
    let mut entropy = CountingEntropy(0);
    let keys = KeySnapshot::new();
    Case {
        name,
        op: Box::new(move || {
            let req = HttpRequest {
                method: "GET",
                path: "/orders/1",
                host: Some("bench.test"),
                route_name: None,
                authorization: vec![authorization.as_str()],
                request_id: Some("bench"),
                header_names: vec!["host", "authorization"],
            };
            policy
                .decide(&req, &keys, Duration::from_secs(now), &mut entropy)
                .audit
                .reason
                == reason
        }),
    }
}

fn load(doc: &Value) -> Res<Policy> {
    Policy::from_json(doc.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn cases() -> Res<Vec<Case>> {
    let now = unix_now();
    let mut out = Vec::new();
    let all = issuers();
    let claims_for = |iss: &str| json!({"iss": iss, "sub": "alice", "aud": "api", "exp": now + 600, "scope": "orders:read"});

    // Verification alone, per algorithm.
    for (name, issuer) in &all {
        let alg = Alg::from_verify_name(issuer.alg()).ok_or("alg")?;
        let t = token(issuer, now, 600, &format!("micro-{name}"));
        let label = if *name == "rs256" {
            "RS256 (2048)"
        } else {
            issuer.alg()
        };
        out.push(verify_case(label, &issuer.public_jwk(), alg, &t)?);
        if *name == "rs256" {
            // The same key without its `alg`, so that it may verify every RSA algorithm.
            let mut jwk = issuer.public_jwk();
            if let Some(o) = jwk.as_object_mut() {
                o.remove("alg");
            }
            for other in ["RS512", "PS256", "PS512"] {
                let t = issuer.sign_rsa(other, &claims_for(&issuer.iss));
                let alg = Alg::from_verify_name(other).ok_or("alg")?;
                out.push(verify_case(&format!("{other} (2048)"), &jwk, alg, &t)?);
            }
        }
    }
    let sk4096 = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_4096).map_err(|e| e.to_string())?;
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","kid":"rsa"}"#),
        b64(claims_for("x").to_string().as_bytes())
    );
    let sig = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(sk4096.clone()).sign(input.as_bytes());
    let t = format!("{input}.{}", b64(&sig.to_vec()));
    out.push(verify_case(
        "RS256 (4096)",
        &rsa_jwk(&sk4096, false),
        Alg::RS256,
        &t,
    )?);
    {
        use p384::ecdsa::signature::Signer as _;
        let sk = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).map_err(|e| e.to_string())?;
        let point = sk.verifying_key().to_sec1_point(false);
        let xy = point.as_bytes().get(1..).ok_or("point")?;
        let (x, y) = xy.split_at(48);
        let jwk = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": b64(x), "y": b64(y)});
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES384"}"#),
            b64(claims_for("x").to_string().as_bytes())
        );
        let sig: p384::ecdsa::Signature = sk.sign(input.as_bytes());
        let t = format!("{input}.{}", b64(&sig.to_bytes()));
        out.push(verify_case("ES384", &jwk, Alg::ES384, &t)?);
    }

    // The whole decision (parse, verify, claims, rule, mint with EdDSA) per issuer algorithm.
    let gw = Gateway::new();
    let refs: Vec<_> = all.iter().map(|(_, i)| i).collect();
    let doc = policy(
        &gw,
        &refs,
        json!([accepting(bench_rule("bench", "/"), &refs)]),
    );
    for (name, issuer) in &all {
        let t = token(issuer, now, 600, &format!("micro-decide-{name}"));
        out.push(decide_case(
            format!("decide: {} token, EdDSA mint", issuer.alg()),
            load(&doc)?,
            "/orders/1".into(),
            t,
            now,
        ));
    }
    // Through the cache: a hit (the same token again), and misses over more distinct tokens
    // than the cache holds (each verified, minted, inserted, and evicting another).
    let cold = 4_500;
    for (name, issuer) in &all {
        let t = token(issuer, now, 600, &format!("micro-hit-{name}"));
        out.push(cached_case(
            format!("decide, cache hit: {} token", issuer.alg()),
            load(&doc)?,
            "/orders/1".into(),
            vec![t],
            now,
        ));
        let tokens = (0..cold)
            .map(|i| token(issuer, now, 600, &format!("micro-cold-{name}-{i}")))
            .collect();
        out.push(cached_case(
            format!(
                "decide, cache miss ({cold} distinct tokens, 4,096 entries): {} token, EdDSA mint",
                issuer.alg()
            ),
            load(&doc)?,
            "/orders/1".into(),
            tokens,
            now,
        ));
    }
    // What an invalid signature costs (the case a negative cache would serve).
    let rs = all
        .iter()
        .find(|(n, _)| *n == "rs256")
        .map(|(_, i)| i)
        .ok_or("rs256")?;
    let valid = token(rs, now, 600, "micro-bad-signature");
    let (input, sig) = valid.rsplit_once('.').ok_or("jws")?;
    let mut sig = unb64(sig);
    if let Some(b) = sig.first_mut() {
        *b ^= 1;
    }
    out.push(denied_case(
        "decide: RS256 token with an invalid signature (denied)".into(),
        load(&doc)?,
        format!("{input}.{}", b64(&sig)),
        "invalid_signature",
        now,
    ));

    // Minting per signing algorithm: the same EdDSA token, the gateway key varied.
    let ed = all
        .iter()
        .find(|(n, _)| *n == "eddsa")
        .map(|(_, i)| i)
        .ok_or("eddsa")?;
    let es_key = {
        let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).map_err(|e| e.to_string())?;
        let point = sk.verifying_key().to_sec1_point(false);
        let xy = point.as_bytes().get(1..).ok_or("point")?;
        let (x, y) = xy.split_at(32);
        json!({"kty": "EC", "crv": "P-256", "kid": "gw-es", "x": b64(x), "y": b64(y),
               "d": b64(&sk.to_bytes())})
    };
    let sk2048 = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_2048).map_err(|e| e.to_string())?;
    for (label, key) in [("ES256", es_key), ("RS256", rsa_jwk(&sk2048, true))] {
        let mut d = doc.clone();
        set(&mut d, "signing_keys", json!([key]));
        let t = token(ed, now, 600, "micro-mint");
        out.push(decide_case(
            format!("decide: EdDSA token, {label} mint"),
            load(&d)?,
            "/orders/1".into(),
            t,
            now,
        ));
    }

    // Policy scale: the same decision with 3 rules / 1 issuer and 1,000 rules / 100 issuers.
    for (rules, n_issuers) in [(3, 1), (1000, 100)] {
        let (doc, list, path) = scale_policy(rules, n_issuers);
        let issuer = scale_issuer(&list, rules).ok_or("no issuer")?;
        let t = token(issuer, now, 600, "micro-scale");
        out.push(decide_case(
            format!("decide: {rules} rules, {n_issuers} issuers (last rule, last issuer)"),
            load(&doc)?,
            path.clone(),
            t.clone(),
            now,
        ));
        out.push(cached_case(
            format!("decide, cache hit: {rules} rules, {n_issuers} issuers (last rule)"),
            load(&doc)?,
            path,
            vec![t],
            now,
        ));
        let text = doc.to_string();
        out.push(Case {
            name: format!(
                "policy load: {rules} rules, {n_issuers} issuers ({} KiB)",
                text.len() / 1024
            ),
            op: Box::new(move || Policy::from_json(black_box(text.as_bytes())).is_ok()),
        });
    }
    Ok(out)
}

/// Runs every case in interleaved rounds and prints the table.
pub fn run(quick: bool) -> Res<()> {
    let (rounds, budget) = if quick {
        (3, Duration::from_millis(20))
    } else {
        (11, Duration::from_millis(300))
    };
    // `BENCH_MICRO_ONLY=word,word`: only the cases whose name contains one (for profiling).
    let only = std::env::var("BENCH_MICRO_ONLY").unwrap_or_default();
    let words: Vec<&str> = only.split(',').filter(|w| !w.is_empty()).collect();
    let mut cases: Vec<Case> = cases()?
        .into_iter()
        .filter(|c| words.is_empty() || words.iter().any(|w| c.name.contains(w)))
        .collect();
    // Calibrate: operations per batch so one batch takes about `budget`.
    let mut batch = Vec::with_capacity(cases.len());
    for c in &mut cases {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < budget / 4 || n == 0 {
            if !(c.op)() {
                return Err(format!("{}: wrong answer", c.name));
            }
            n += 1;
        }
        batch.push((n * 4).max(1));
    }
    // Allocations per operation, counted over one calibrated batch (allocation counts are
    // deterministic per operation, apart from cache growth in the first batch).
    let mut allocs = Vec::with_capacity(cases.len());
    for (c, n) in cases.iter_mut().zip(&batch) {
        let before = crate::ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..*n {
            if !(c.op)() {
                return Err(format!("{}: wrong answer", c.name));
            }
        }
        let after = crate::ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        allocs.push(after.saturating_sub(before) as f64 / f64::from(*n));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for ((c, n), t) in cases.iter_mut().zip(&batch).zip(times.iter_mut()) {
            let start = Instant::now();
            for _ in 0..*n {
                if !(c.op)() {
                    return Err(format!("{}: wrong answer", c.name));
                }
            }
            t.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(*n));
        }
    }
    println!("| operation (native) | µs/op (median of {rounds}) | allocations/op |");
    println!("|---|---:|---:|");
    for ((c, t), a) in cases.iter().zip(times.iter_mut()).zip(&allocs) {
        t.sort_by(f64::total_cmp);
        let median = t.get(t.len() / 2).copied().unwrap_or(0.0);
        println!("| {} | {median:.1} | {a:.1} |", c.name);
    }
    Ok(())
}
