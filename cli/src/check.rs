//! `check`: the policy validated by the filter's parser (every error with its JSON path),
//! then a review summary read through the core's accessors: issuers, rules in evaluation
//! order, warnings, and rules that never apply (`Policy::rule_findings`).

use std::fmt::Write as _;

use serde_json::{json, Value};
use token_exchange_filter::core::config::Unmatched;
use token_exchange_filter::core::keys::Alg;
use token_exchange_filter::core::signing::{GatewayKey, KeyMaterial, KeyState};
use token_exchange_filter::core::{ExchangeRule, Policy, RuleFinding, TrustedIssuer};

use crate::input::InputError;
use crate::policy::PolicyDocument;

/// The result of `check`: (human text, JSON, policy valid, any warning or finding).
pub fn check(path: &str) -> Result<(String, Value, bool, bool), InputError> {
    let doc = PolicyDocument::read(path)?;
    let policy = match doc.parse() {
        Ok(p) => p,
        Err(errors) => {
            let mut t = format!("{path}: invalid policy, {} error(s)\n", errors.0.len());
            let list: Vec<Value> = errors
                .0
                .iter()
                .map(|e| {
                    let at = if e.path.is_empty() {
                        "(document)"
                    } else {
                        &e.path
                    };
                    let _ = writeln!(t, "  {at}: {}", e.message);
                    json!({"path": e.path, "message": e.message})
                })
                .collect();
            let j = json!({"policy": path, "valid": false, "errors": list});
            return Ok((t, j, false, false));
        }
    };
    let findings = policy.rule_findings();
    let notable = !findings.is_empty() || !policy.warnings.is_empty();
    Ok((
        human(path, &policy, &findings),
        summary(path, &policy, &findings),
        true,
        notable,
    ))
}

fn join(list: &[String]) -> String {
    list.join(" ")
}

fn key_algs(algs: impl Fn(Alg) -> bool) -> Vec<&'static str> {
    Alg::VERIFY
        .into_iter()
        .filter(|a| algs(*a))
        .map(Alg::name)
        .collect()
}

fn issuer_json(t: &TrustedIssuer) -> Value {
    let keys: Vec<Value> = t
        .keys
        .iter()
        .map(|k| json!({"kid": k.kid(), "algorithms": key_algs(|a| k.accepts(a))}))
        .collect();
    json!({
        "issuer": t.issuer,
        "algorithms": t.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "keys": keys,
        "audiences": t.audiences,
        "claims": {
            "caller": t.claims.caller_claims(),
            "scopes": t.claims.scope_claims(),
        },
    })
}

/// The issuers a rule accepts: its `require.issuers`, else (one trusted issuer) all.
fn accepted_issuers<'p>(policy: &'p Policy, rule: &'p ExchangeRule) -> (Vec<&'p str>, bool) {
    if rule.require.issuers.is_empty() {
        (
            policy
                .trusted_issuers
                .iter()
                .map(|t| t.issuer.as_str())
                .collect(),
            true,
        )
    } else {
        (
            rule.require.issuers.iter().map(String::as_str).collect(),
            false,
        )
    }
}

fn rule_json(policy: &Policy, i: usize, r: &ExchangeRule) -> Value {
    let m = &r.matcher;
    let (issuers, implied) = accepted_issuers(policy, r);
    json!({
        "index": i,
        "name": r.name,
        "match": {
            "path_prefix": m.path_prefix, "path": m.path, "methods": m.methods,
            "host": m.host, "route": m.route,
        },
        "require": {
            "issuers": issuers, "issuers_implied": implied,
            "scopes": r.require.scopes, "acr": r.require.acr, "amr": r.require.amr,
            "callers": r.require.callers,
        },
        "mint": {
            "audience": r.mint.audience, "scopes": r.mint.scopes,
            "ttl_seconds": r.mint.ttl_seconds, "preserve_claims": r.mint.preserve_claims,
            "add_claims": r.mint.add_claims,
        },
    })
}

fn finding_json(policy: &Policy, f: &RuleFinding) -> Value {
    let name = |i: usize| {
        policy
            .rules
            .get(i)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    };
    match f {
        RuleFinding::Shadowed { rule, by } => json!({
            "kind": "shadowed", "path": format!("rules[{rule}]"), "rule": name(*rule),
            "by_path": format!("rules[{by}]"), "by": name(*by), "message": f.to_string(),
        }),
        RuleFinding::MatchesNothing { rule } => json!({
            "kind": "matches_nothing", "path": format!("rules[{rule}]"), "rule": name(*rule),
            "message": f.to_string(),
        }),
    }
}

fn summary(path: &str, policy: &Policy, findings: &[RuleFinding]) -> Value {
    let signing: Vec<Value> = policy
        .signing_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let _ = i;
            json!({"kid": k.kid, "alg": k.alg().name(), "role": key_role(k), "generated": matches!(k.material, KeyMaterial::Generated(_))})
        })
        .collect();
    json!({
        "policy": path,
        "valid": true,
        "issuer": policy.issuer,
        "signing_keys": signing,
        "unmatched": match policy.unmatched { Unmatched::Deny => "deny", Unmatched::Pass => "pass" },
        "clock_skew_seconds": policy.clock_skew_seconds,
        "realm": policy.realm,
        "strip_headers": policy.strip_headers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "limits": {
            "max_token_bytes": policy.limits.max_token_bytes,
            "max_header_bytes": policy.limits.max_header_bytes,
            "max_json_depth": policy.limits.max_json_depth,
            "max_claims": policy.limits.max_claims,
            "max_scopes": policy.limits.max_scopes,
        },
        "trusted_issuers": policy.trusted_issuers.iter().map(issuer_json).collect::<Vec<_>>(),
        "rules": policy.rules.iter().enumerate().map(|(i, r)| rule_json(policy, i, r)).collect::<Vec<_>>(),
        "warnings": policy.warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
        "findings": findings.iter().map(|f| finding_json(policy, f)).collect::<Vec<_>>(),
    })
}

fn human(path: &str, policy: &Policy, findings: &[RuleFinding]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{path}: valid policy");
    let _ = writeln!(t, "gateway issuer   {}", policy.issuer);
    let keys: Vec<String> = policy
        .signing_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let _ = i;
            let generated = if matches!(k.material, KeyMaterial::Generated(_)) {
                ", generated at start"
            } else {
                ""
            };
            format!("{} ({}, {}{generated})", k.kid, k.alg().name(), key_role(k))
        })
        .collect();
    let _ = writeln!(t, "signing keys     {}", keys.join(", "));
    let unmatched = match policy.unmatched {
        Unmatched::Deny => "deny (403 no_matching_rule)",
        Unmatched::Pass => "pass (forwarded untouched, audited as pass)",
    };
    let _ = writeln!(t, "unmatched        {unmatched}");
    let _ = writeln!(t, "clock skew       {} s", policy.clock_skew_seconds);
    if !policy.strip_headers.is_empty() {
        let patterns: Vec<String> = policy
            .strip_headers
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(t, "strip headers    {}", patterns.join(", "));
    }
    let _ = writeln!(t, "\ntrusted issuers ({})", policy.trusted_issuers.len());
    for ti in &policy.trusted_issuers {
        let _ = writeln!(t, "  {}", ti.issuer);
        let algs: Vec<&str> = ti.algorithms.iter().map(|a| a.name()).collect();
        let _ = writeln!(t, "    algorithms  {}", algs.join(" "));
        let keys: Vec<String> = ti
            .keys
            .iter()
            .map(|k| {
                format!(
                    "{} ({})",
                    k.kid().unwrap_or("no kid"),
                    key_algs(|a| k.accepts(a)).join(" ")
                )
            })
            .collect();
        let _ = writeln!(t, "    keys        {}", keys.join(", "));
        let _ = writeln!(t, "    audiences   {}", join(&ti.audiences));
        let _ = writeln!(
            t,
            "    claims      caller from {}; scopes from {}",
            ti.claims.caller_claims().join(", "),
            ti.claims.scope_claims().join(", ")
        );
    }
    let _ = writeln!(
        t,
        "\nrules in evaluation order, first match wins ({})",
        policy.rules.len()
    );
    for (i, r) in policy.rules.iter().enumerate() {
        let _ = writeln!(t, "  {}. {}  (rules[{i}])", i + 1, r.name);
        let _ = writeln!(t, "     match    {}", describe_match(r));
        let _ = writeln!(t, "     require  {}", describe_require(policy, r));
        let _ = writeln!(t, "     grants   {}", describe_mint(r));
    }
    let _ = writeln!(t, "\nwarnings ({})", policy.warnings.len());
    for w in &policy.warnings {
        let _ = writeln!(t, "  {w}");
    }
    let _ = writeln!(t, "\nfindings ({})", findings.len());
    for f in findings {
        let name = |i: usize| {
            policy
                .rules
                .get(i)
                .map(|r| r.name.as_str())
                .unwrap_or_default()
        };
        let detail = match f {
            RuleFinding::Shadowed { rule, by } => format!(
                "{:?} never applies: {:?} takes its requests first",
                name(*rule),
                name(*by)
            ),
            RuleFinding::MatchesNothing { rule } => format!("{:?} never applies", name(*rule)),
        };
        let _ = writeln!(t, "  {f} ({detail})");
    }
    t
}

fn describe_match(r: &ExchangeRule) -> String {
    let m = &r.matcher;
    let mut parts = Vec::new();
    parts.push(if m.methods.is_empty() {
        "any method".to_owned()
    } else {
        m.methods.join(" ")
    });
    match (&m.path, &m.path_prefix) {
        (Some(p), Some(pre)) => parts.push(format!("path {p} (under {pre})")),
        (Some(p), None) => parts.push(format!("path {p}")),
        (None, Some(pre)) => parts.push(format!("path under {pre}")),
        (None, None) => parts.push("any path".to_owned()),
    }
    if let Some(h) = &m.host {
        parts.push(format!("host {h}"));
    }
    if let Some(route) = &m.route {
        parts.push(format!("route {route}"));
    }
    parts.join("; ")
}

fn describe_require(policy: &Policy, r: &ExchangeRule) -> String {
    let q = &r.require;
    let (issuers, implied) = accepted_issuers(policy, r);
    let mut parts = vec![format!(
        "issuer{} {}",
        if implied {
            " (the only one)"
        } else {
            " one of"
        },
        issuers.join(", ")
    )];
    if !q.scopes.is_empty() {
        parts.push(format!("scopes {} (all)", join(&q.scopes)));
    }
    if !q.callers.is_empty() {
        parts.push(format!("caller one of {}", q.callers.join(", ")));
    }
    if !q.acr.is_empty() {
        parts.push(format!("acr one of {}", q.acr.join(", ")));
    }
    if !q.amr.is_empty() {
        parts.push(format!("amr {} (all)", join(&q.amr)));
    }
    parts.join("; ")
}

fn describe_mint(r: &ExchangeRule) -> String {
    let m = &r.mint;
    let mut parts = vec![format!(
        "{} ∩ the token's scopes, for audience {}, at most {} s",
        join(&m.scopes),
        m.audience,
        m.ttl_seconds
    )];
    if !m.preserve_claims.is_empty() {
        parts.push(format!("keeps {}", m.preserve_claims.join(", ")));
    }
    if !m.add_claims.is_empty() {
        let added: Vec<String> = m
            .add_claims
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("adds {}", added.join(", ")));
    }
    parts.join("; ")
}

/// What a gateway key does: signs (active), published ahead of use, or retired (published
/// until the tokens it signed have expired).
fn key_role(k: &GatewayKey) -> String {
    match k.state {
        KeyState::Active => "signs".to_owned(),
        KeyState::Published => "published".to_owned(),
        KeyState::Retired { at } => format!("retired at {at}"),
    }
}
