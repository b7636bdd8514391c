//! `check`: the policy validated by the filter's parser (every error with its JSON path),
//! then a review summary read through the core's accessors: issuers with their ceilings and
//! review dates (judged at `--now`), header hygiene and revocation lists, rules in evaluation
//! order, warnings, the lifecycle notices the filter logs, and the core's findings
//! (`Policy::rule_findings`). For living keys: each issuer's key sources (inline, `jwks_uri`
//! or discovery, with the fetch schedule's bounds), each gateway key's state and until when
//! it is published (judged at `--now` by the core's `GatewayKey::published_at`), what the
//! filter serves at `jwks_path` and `discovery_path`, and the key findings below: settings
//! the loader accepts (it cannot know the time, nor the deployment) that a reviewer should
//! act on.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use token_exchange_filter::core::config::{StripAction, Unmatched};
use token_exchange_filter::core::hygiene::DEFAULT_STRIP_HEADERS;
use token_exchange_filter::core::keys::Alg;
use token_exchange_filter::core::lifecycle;
use token_exchange_filter::core::review::{CeilingConflict, GatewayConflict, IssuerConflict};
use token_exchange_filter::core::signing::{GatewayKey, KeyMaterial, KeyState};
use token_exchange_filter::core::{ExchangeRule, Policy, RuleFinding, RuleMode, TrustedIssuer};

use crate::fetched::{describe_source, source_json};
use crate::input::{format_time, InputError};
use crate::keys::generated_keys;
use crate::policy::PolicyDocument;
use crate::random::OsEntropy;

/// What `check` found: the human text, the JSON, whether the policy is valid, and whether a
/// valid policy has something a reviewer must act on (a warning, a finding, or an issuer
/// overdue for review or expired at `now`).
pub struct CheckReport {
    /// Human-readable output.
    pub text: String,
    /// Machine-readable output.
    pub json: Value,
    /// The policy is valid.
    pub valid: bool,
    /// Warnings, findings or lifecycle notices.
    pub notable: bool,
}

/// Checks the policy at `path`, judging review dates at `now`.
pub fn check(path: &str, now: Duration) -> Result<CheckReport, InputError> {
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
            return Ok(CheckReport {
                text: t,
                json: j,
                valid: false,
                notable: false,
            });
        }
    };
    let now = now.as_secs();
    let findings = policy.rule_findings();
    let notices = lifecycle::notices(&policy, now);
    let key_findings = key_findings(&policy, now);
    // Generated here only to list what would be served (their kids and algorithms).
    let generated = generated_keys(&policy, &mut OsEntropy)?;
    let published = policy.published_jwks(&generated, now);
    let review = Review {
        path,
        policy: &policy,
        findings: &findings,
        key_findings: &key_findings,
        published: &published,
        notices: &notices,
        now,
    };
    Ok(CheckReport {
        text: review.human(),
        json: review.summary(),
        valid: true,
        notable: !findings.is_empty()
            || !key_findings.is_empty()
            || !policy.warnings.is_empty()
            || !notices.is_empty(),
    })
}

/// A valid policy and what the review found in it.
struct Review<'a> {
    path: &'a str,
    policy: &'a Policy,
    findings: &'a [RuleFinding],
    key_findings: &'a [KeyFinding],
    /// The JWK Set the filter serves at `now` (when `jwks_path` is set).
    published: &'a Value,
    /// The lines the filter logs about the allow list at `now` (overdue, expired).
    notices: &'a [String],
    now: u64,
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

/// Whether the policy's `strip_headers` is the documented default list.
fn default_strip_headers(policy: &Policy) -> bool {
    let patterns: Vec<String> = policy
        .strip_headers
        .iter()
        .map(ToString::to_string)
        .collect();
    patterns == DEFAULT_STRIP_HEADERS
}

fn strip_action(policy: &Policy) -> &'static str {
    match policy.strip_headers_action {
        StripAction::Strip => "strip",
        StripAction::Refuse => "refuse",
    }
}

fn mode_name(rule: &ExchangeRule) -> &'static str {
    match rule.mode {
        RuleMode::Enforce => "enforce",
        RuleMode::Shadow => "shadow",
    }
}

fn ceiling_code(c: &CeilingConflict) -> (&'static str, Option<(&'static str, &str)>) {
    match c {
        CeilingConflict::AudienceNotAllowed => ("audience_not_allowed", None),
        CeilingConflict::RequiredScopeOutside { scope } => {
            ("required_scope_outside", Some(("scope", scope)))
        }
        CeilingConflict::GrantOutside => ("grant_outside", None),
    }
}

fn gateway_code(c: &GatewayConflict) -> (&'static str, Option<(&'static str, &str)>) {
    match c {
        GatewayConflict::NotMinted => ("not_minted", None),
        GatewayConflict::IssuersDisjoint => ("issuers_disjoint", None),
        GatewayConflict::CallerNotAllowed => ("caller_not_allowed", None),
        GatewayConflict::RequiredScopeNeverHeld { scope } => {
            ("required_scope_never_held", Some(("scope", scope)))
        }
        GatewayConflict::ClaimNeverCarried { claim } => {
            ("claim_never_carried", Some(("claim", claim)))
        }
        GatewayConflict::GrantNeverHeld => ("grant_never_held", None),
    }
}

impl Review<'_> {
    fn rule_name(&self, i: usize) -> String {
        self.policy
            .rules
            .get(i)
            .map(|r| r.name.to_string())
            .unwrap_or_default()
    }

    fn issuer_name(&self, i: usize) -> String {
        self.policy
            .trusted_issuers
            .get(i)
            .map(|t| t.issuer.clone())
            .unwrap_or_default()
    }

    fn issuer_json(&self, t: &TrustedIssuer) -> Value {
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
            "max_scopes": t.max_scopes,
            "allowed_audiences": t.allowed_audiences,
            "review_by": t.review_by.map(|d| d.to_string()),
            "review_overdue": t.review_overdue(self.now),
            "expires": t.expires.map(|d| d.to_string()),
            "expired": t.expired(self.now),
            "revoked_before": t.revoked_before,
            "revoked_before_utc": t.revoked_before.map(format_time),
            "key_source": t.key_source.as_ref().map(source_json),
        })
    }

    /// The issuers a rule accepts, and whether that is implied (one trusted issuer).
    fn accepted_issuers(&self, rule: &ExchangeRule) -> (Vec<String>, bool) {
        let names = self
            .policy
            .accepted_issuers(rule)
            .map(|(_, t)| t.issuer.clone())
            .collect();
        (names, rule.require.issuers.is_empty())
    }

    fn rule_json(&self, i: usize, r: &ExchangeRule) -> Value {
        let m = &r.matcher;
        let (issuers, implied) = self.accepted_issuers(r);
        json!({
            "index": i,
            "name": r.name,
            "mode": mode_name(r),
            "match": {
                "path_prefix": m.path_prefix, "path": m.path, "methods": m.methods,
                "host": m.host, "route": m.route,
            },
            "require": {
                "issuers": issuers, "issuers_implied": implied,
                "scopes": r.require.scopes, "acr": r.require.acr, "amr": r.require.amr,
                "callers": r.require.callers, "max_age_seconds": r.require.max_age_seconds,
            },
            "mint": {
                "audience": r.mint.audience, "scopes": r.mint.scopes,
                "ttl_seconds": r.mint.ttl_seconds, "preserve_claims": r.mint.preserve_claims,
                "add_claims": r.mint.add_claims,
            },
            "accept_gateway_tokens": r.accept_gateway_tokens.as_ref().map(|g| json!({"audiences": g.audiences})),
            "max_chain_depth": r.max_chain_depth,
        })
    }

    fn conflict_json(&self, c: &IssuerConflict) -> Value {
        let (why, detail) = ceiling_code(&c.why);
        let mut v = json!({
            "issuer_path": format!("trusted_issuers[{}]", c.issuer),
            "issuer": self.issuer_name(c.issuer),
            "why": why,
            "message": c.why.to_string(),
        });
        if let (Some((k, d)), Some(o)) = (detail, v.as_object_mut()) {
            o.insert(k.into(), json!(d));
        }
        v
    }

    fn finding_json(&self, f: &RuleFinding) -> Value {
        let mut v = match f {
            RuleFinding::Shadowed { rule, by } => json!({
                "kind": "shadowed", "path": format!("rules[{rule}]"), "rule": self.rule_name(*rule),
                "by_path": format!("rules[{by}]"), "by": self.rule_name(*by),
            }),
            RuleFinding::MatchesNothing { rule } => json!({
                "kind": "matches_nothing", "path": format!("rules[{rule}]"), "rule": self.rule_name(*rule),
            }),
            RuleFinding::NeverGrants { rule, conflicts } => json!({
                "kind": "never_grants", "path": format!("rules[{rule}]"), "rule": self.rule_name(*rule),
                "issuers": conflicts.iter().map(|c| self.conflict_json(c)).collect::<Vec<_>>(),
            }),
            RuleFinding::IssuerNeverGranted { rule, conflict } => {
                let mut v = self.conflict_json(conflict);
                if let Some(o) = v.as_object_mut() {
                    o.remove("message");
                    o.insert("kind".into(), json!("issuer_never_granted"));
                    o.insert("path".into(), json!(format!("rules[{rule}]")));
                    o.insert("rule".into(), json!(self.rule_name(*rule)));
                }
                v
            }
            RuleFinding::GatewayAudienceNeverGranted {
                rule,
                audience,
                why,
            } => {
                let (code, detail) = gateway_code(why);
                let mut v = json!({
                    "kind": "gateway_audience_never_granted", "path": format!("rules[{rule}]"),
                    "rule": self.rule_name(*rule), "audience": audience, "why": code,
                });
                if let (Some((k, d)), Some(o)) = (detail, v.as_object_mut()) {
                    o.insert(k.into(), json!(d));
                }
                v
            }
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("message".into(), json!(f.to_string()));
        }
        v
    }

    fn summary(&self) -> Value {
        let policy = self.policy;
        let ttl = policy.longest_ttl_seconds();
        let signing: Vec<Value> = policy
            .signing_keys
            .iter()
            .map(|k| {
                let (state, retired_at) = match k.state {
                    KeyState::Active => ("active", None),
                    KeyState::Published => ("published", None),
                    KeyState::Retired { at } => ("retired", Some(at)),
                };
                json!({
                    "kid": k.kid, "alg": k.alg().name(), "role": key_role(k), "state": state,
                    "retired_at": retired_at,
                    "published_until": retired_at.map(|at| at.saturating_add(ttl)),
                    "published_now": k.published_at(self.now, ttl) && k.alg() != Alg::HS256,
                    "generated": matches!(k.material, KeyMaterial::Generated(_)),
                })
            })
            .collect();
        let publication = &policy.publication;
        json!({
            "policy": self.path,
            "valid": true,
            "now": self.now,
            "now_utc": format_time(self.now),
            "issuer": policy.issuer,
            "signing_keys": signing,
            "unmatched": match policy.unmatched { Unmatched::Deny => "deny", Unmatched::Pass => "pass" },
            "clock_skew_seconds": policy.clock_skew_seconds,
            "realm": policy.realm,
            "strip_headers": policy.strip_headers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "strip_headers_default": default_strip_headers(policy),
            "strip_headers_action": strip_action(policy),
            "revoked": {"jti": policy.revoked.jti.len(), "sub": policy.revoked.sub.len()},
            "limits": {
                "max_token_bytes": policy.limits.max_token_bytes,
                "max_header_bytes": policy.limits.max_header_bytes,
                "max_json_depth": policy.limits.max_json_depth,
                "max_claims": policy.limits.max_claims,
                "max_scopes": policy.limits.max_scopes,
            },
            "published": {
                "jwks_path": publication.jwks_path,
                "discovery_path": publication.discovery_path,
                "max_age_seconds": publication.jwks_path.as_ref().map(|_| publication.max_age_seconds),
                "kids": publication.jwks_path.as_ref().map(|_| served_kids(self.published)),
                "openid_configuration": policy.openid_configuration(),
            },
            "trusted_issuers": policy.trusted_issuers.iter().map(|t| self.issuer_json(t)).collect::<Vec<_>>(),
            "rules": policy.rules.iter().enumerate().map(|(i, r)| self.rule_json(i, r)).collect::<Vec<_>>(),
            "warnings": policy.warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
            "notices": self.notices,
            "findings": self.findings.iter().map(|f| self.finding_json(f)).collect::<Vec<_>>(),
            "key_findings": self.key_findings.iter().map(KeyFinding::json).collect::<Vec<_>>(),
        })
    }

    fn human(&self) -> String {
        let policy = self.policy;
        let mut t = String::new();
        let _ = writeln!(t, "{}: valid policy", self.path);
        let _ = writeln!(
            t,
            "now              {} (review dates are judged at this time)",
            format_time(self.now)
        );
        let _ = writeln!(t, "gateway issuer   {}", policy.issuer);
        let ttl = policy.longest_ttl_seconds();
        let keys: Vec<String> = policy
            .signing_keys
            .iter()
            .map(|k| {
                let generated = if matches!(k.material, KeyMaterial::Generated(_)) {
                    ", generated at start: lost on restart, one per gateway"
                } else {
                    ""
                };
                format!(
                    "{} ({}, {}{generated})",
                    k.kid,
                    k.alg().name(),
                    key_state_text(k, ttl, self.now)
                )
            })
            .collect();
        let _ = writeln!(t, "signing keys     {}", keys.join(", "));
        let _ = writeln!(t, "published        {}", self.describe_publication());
        let unmatched = match policy.unmatched {
            Unmatched::Deny => "deny (403 no_matching_rule)",
            Unmatched::Pass => "pass (forwarded untouched, audited as pass)",
        };
        let _ = writeln!(t, "unmatched        {unmatched}");
        let _ = writeln!(t, "clock skew       {} s", policy.clock_skew_seconds);
        let _ = writeln!(t, "header hygiene   {}", self.describe_hygiene());
        let revoked = &policy.revoked;
        let _ = writeln!(
            t,
            "revoked          {} jti, {} sub (original tokens and subjects refused: token_revoked, subject_revoked)",
            revoked.jti.len(),
            revoked.sub.len()
        );
        let _ = writeln!(t, "\ntrusted issuers ({})", policy.trusted_issuers.len());
        for ti in &policy.trusted_issuers {
            self.describe_issuer(&mut t, ti);
        }
        let _ = writeln!(
            t,
            "\nrules in evaluation order, first match wins ({})",
            policy.rules.len()
        );
        for (i, r) in policy.rules.iter().enumerate() {
            let _ = writeln!(t, "  {}. {}  (rules[{i}])", i + 1, r.name);
            let _ = writeln!(t, "     match    {}", describe_match(r));
            let _ = writeln!(t, "     require  {}", self.describe_require(r));
            let _ = writeln!(t, "     grants   {}", describe_mint(r));
            let _ = writeln!(t, "     chain    {}", describe_chain(r));
            if r.mode == RuleMode::Shadow {
                let _ = writeln!(
                    t,
                    "     mode     shadow: decides, mints and audits as enforcing would, but forwards the request unchanged and never denies"
                );
            }
        }
        let _ = writeln!(t, "\nwarnings ({})", policy.warnings.len());
        for w in &policy.warnings {
            let _ = writeln!(t, "  {w}");
        }
        let _ = writeln!(
            t,
            "\nlifecycle notices ({}), as the filter logs them at load and daily",
            self.notices.len()
        );
        for n in self.notices {
            let _ = writeln!(t, "  {n}");
        }
        let _ = writeln!(t, "\nfindings ({})", self.findings.len());
        for f in self.findings {
            let _ = writeln!(t, "  {f} ({})", self.finding_detail(f));
        }
        let _ = writeln!(t, "\nkey findings ({})", self.key_findings.len());
        for f in self.key_findings {
            let _ = writeln!(t, "  {}: {}", f.path, f.message);
        }
        t
    }

    fn describe_publication(&self) -> String {
        let publication = &self.policy.publication;
        let Some(jwks_path) = &publication.jwks_path else {
            return "nothing (no jwks_path: verifiers get the gateway's public keys another way)"
                .to_owned();
        };
        let kids = served_kids(self.published);
        let mut text = format!(
            "GET {jwks_path}: the JWK Set of {} (cache-control: public, max-age={})",
            if kids.is_empty() {
                "no key".to_owned()
            } else {
                kids.join(", ")
            },
            publication.max_age_seconds
        );
        if let (Some(path), Some(doc)) = (
            &publication.discovery_path,
            self.policy.openid_configuration(),
        ) {
            let uri = doc.get("jwks_uri").and_then(Value::as_str).unwrap_or("");
            let _ = write!(
                text,
                "; GET {path}: issuer {}, jwks_uri {uri}",
                self.policy.issuer
            );
        }
        text
    }

    fn describe_hygiene(&self) -> String {
        let policy = self.policy;
        let patterns: Vec<String> = policy
            .strip_headers
            .iter()
            .map(ToString::to_string)
            .collect();
        if patterns.is_empty() {
            return "none (strip_headers is empty: identity headers reach the upstream)".into();
        }
        let action = match policy.strip_headers_action {
            StripAction::Strip => "strip (removed before forwarding)",
            StripAction::Refuse => "refuse (400 identity_header_present)",
        };
        let list = if default_strip_headers(policy) {
            "the default list"
        } else {
            "the policy's list"
        };
        format!("{action}: {list}, {}", patterns.join(", "))
    }

    fn describe_issuer(&self, t: &mut String, ti: &TrustedIssuer) {
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
        match (&ti.key_source, keys.is_empty()) {
            (Some(_), true) => {
                let _ = writeln!(t, "    keys        fetched only (none inline)");
            }
            (Some(_), false) => {
                let _ = writeln!(t, "    keys        inline {}, and fetched", keys.join(", "));
            }
            (None, _) => {
                let _ = writeln!(t, "    keys        inline {}", keys.join(", "));
            }
        }
        if let Some(source) = &ti.key_source {
            let _ = writeln!(t, "    fetched     {}", describe_source(source));
        }
        let _ = writeln!(t, "    audiences   {}", join(&ti.audiences));
        let _ = writeln!(
            t,
            "    claims      caller from {}; scopes from {}",
            ti.claims.caller_claims().join(", "),
            ti.claims.scope_claims().join(", ")
        );
        let mut ceilings = Vec::new();
        if let Some(max) = &ti.max_scopes {
            ceilings.push(format!("scopes at most {}", join(max)));
        }
        if let Some(aud) = &ti.allowed_audiences {
            ceilings.push(format!("exchanged only for {}", aud.join(", ")));
        }
        if !ceilings.is_empty() {
            let _ = writeln!(t, "    ceilings    {}", ceilings.join("; "));
        }
        if let Some(d) = ti.review_by {
            let state = if ti.review_overdue(self.now) {
                format!("OVERDUE since {}", format_time(d.end()))
            } else {
                "not yet due".to_owned()
            };
            let _ = writeln!(t, "    review by   {d} ({state})");
        }
        if let Some(d) = ti.expires {
            let state = if ti.expired(self.now) {
                format!(
                    "EXPIRED since {}: its tokens are refused (issuer_expired)",
                    format_time(d.end())
                )
            } else {
                "trusted through that day".to_owned()
            };
            let _ = writeln!(t, "    expires     {d} ({state})");
        }
        if let Some(before) = ti.revoked_before {
            let _ = writeln!(
                t,
                "    revoked     tokens issued before {} (or without iat) are refused (issued_before_revocation)",
                format_time(before)
            );
        }
    }

    fn describe_require(&self, r: &ExchangeRule) -> String {
        let q = &r.require;
        let (issuers, implied) = self.accepted_issuers(r);
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
            parts.push(format!("acr one of {} (step-up)", q.acr.join(", ")));
        }
        if let Some(max_age) = q.max_age_seconds {
            parts.push(format!(
                "authenticated at most {max_age} s ago (auth_time; step-up)"
            ));
        }
        if !q.amr.is_empty() {
            parts.push(format!("amr {} (all)", join(&q.amr)));
        }
        parts.join("; ")
    }

    fn finding_detail(&self, f: &RuleFinding) -> String {
        match f {
            RuleFinding::Shadowed { rule, by } => format!(
                "{:?} never applies: {:?} takes its requests first",
                self.rule_name(*rule),
                self.rule_name(*by)
            ),
            RuleFinding::MatchesNothing { rule } => {
                format!("{:?} never applies", self.rule_name(*rule))
            }
            RuleFinding::NeverGrants { rule, conflicts } => {
                let names: Vec<String> = conflicts
                    .iter()
                    .map(|c| format!("{:?}", self.issuer_name(c.issuer)))
                    .collect();
                format!(
                    "{:?} never mints: refused for every token of {}",
                    self.rule_name(*rule),
                    names.join(", ")
                )
            }
            RuleFinding::IssuerNeverGranted { rule, conflict } => format!(
                "{:?} refuses every token of {:?}",
                self.rule_name(*rule),
                self.issuer_name(conflict.issuer)
            ),
            RuleFinding::GatewayAudienceNeverGranted { rule, audience, .. } => format!(
                "{:?} refuses every gateway token minted for {audience:?}",
                self.rule_name(*rule)
            ),
        }
    }
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

fn describe_chain(r: &ExchangeRule) -> String {
    let gateway = match &r.accept_gateway_tokens {
        Some(g) => format!(
            "takes the gateway's tokens minted for {} (chained exchange)",
            g.audiences.join(", ")
        ),
        None => "refuses the gateway's own tokens (gateway_token_replay)".to_owned(),
    };
    format!(
        "at most {} exchange(s) recorded in act; {gateway}",
        r.max_chain_depth
    )
}

/// The kids of a served JWK Set.
fn served_kids(jwks: &Value) -> Vec<String> {
    jwks.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| k.get("kid").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// A gateway key's state at `now`, in words: it signs, is published ahead of use, or is
/// retired and published until the last token it signed has expired (`retired_at` plus the
/// longest `ttl_seconds`).
pub fn key_state_text(k: &GatewayKey, longest_ttl: u64, now: u64) -> String {
    let hs = k.alg() == Alg::HS256;
    match k.state {
        KeyState::Active if hs => "active: signs; HS256, never published".to_owned(),
        KeyState::Active => "active: signs".to_owned(),
        KeyState::Published if hs => "published state; HS256, never published".to_owned(),
        KeyState::Published => "published: announced before it signs".to_owned(),
        KeyState::Retired { at } => {
            let until = at.saturating_add(longest_ttl);
            let published = if hs {
                "HS256, never published".to_owned()
            } else if k.published_at(now, longest_ttl) {
                format!("published until {}", format_time(until))
            } else {
                format!("no longer published since {}", format_time(until))
            };
            format!("retired at {}, {published}", format_time(at))
        }
    }
}

/// A setting of the gateway's or an issuer's keys that a reviewer should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFinding {
    /// What kind (see the README's key findings table).
    pub kind: &'static str,
    /// The JSON path of the setting.
    pub path: String,
    /// The key's `kid` or the issuer.
    pub subject: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl KeyFinding {
    fn json(&self) -> Value {
        json!({"kind": self.kind, "path": self.path, "subject": self.subject, "message": self.message})
    }
}

/// The key findings of a valid policy at `now` (seconds). The loader already refuses an
/// issuer without keys or key source, a refresh longer than the staleness bound, and a
/// `retired_at` without a retired state; these are what it cannot judge.
pub fn key_findings(policy: &Policy, now: u64) -> Vec<KeyFinding> {
    let mut found = Vec::new();
    let ttl = policy.longest_ttl_seconds();
    let jwks_path = policy.publication.jwks_path.is_some();
    for (i, k) in policy.signing_keys.iter().enumerate() {
        let path = format!("signing_keys[{i}]");
        let generated = matches!(k.material, KeyMaterial::Generated(_));
        match k.state {
            KeyState::Retired { at } if at > now => found.push(KeyFinding {
                kind: "retired_in_future",
                path: format!("{path}.retired_at"),
                subject: k.kid.clone(),
                message: format!(
                    "key {:?} is retired (it no longer signs) but retired_at is {}, in the future: it stays published until {}, long after the last token it signed expired; set retired_at to when it stopped signing",
                    k.kid,
                    format_time(at),
                    format_time(at.saturating_add(ttl))
                ),
            }),
            KeyState::Retired { at } if !k.published_at(now, ttl) => {
                found.push(KeyFinding {
                    kind: "retired_key_unpublished",
                    path: path.clone(),
                    subject: k.kid.clone(),
                    message: format!(
                        "key {:?} retired at {} is no longer published since {} (every token it signed has expired): remove it from signing_keys (a private key kept for nothing)",
                        k.kid,
                        format_time(at),
                        format_time(at.saturating_add(ttl))
                    ),
                })
            }
            _ => {}
        }
        if generated && !jwks_path {
            found.push(KeyFinding {
                kind: "generated_key_unpublished",
                path: path.clone(),
                subject: k.kid.clone(),
                message: format!(
                    "key {:?} is generated at start and there is no jwks_path: no verifier can ever get its public key; set jwks_path, or configure a key",
                    k.kid
                ),
            });
        }
        if generated && k.state == KeyState::Active {
            found.push(KeyFinding {
                kind: "generated_active_key",
                path,
                subject: k.kid.clone(),
                message: format!(
                    "the active key {:?} is generated at start: lost on every restart (tokens it signed stop verifying once verifiers refetch the key set) and different on every gateway; for demos and a single gateway only",
                    k.kid
                ),
            });
        }
    }
    if jwks_path {
        let served = policy
            .signing_keys
            .iter()
            .any(|k| k.alg() != Alg::HS256 && k.published_at(now, ttl));
        if !served {
            found.push(KeyFinding {
                kind: "nothing_published",
                path: "jwks_path".to_owned(),
                subject: policy.issuer.clone(),
                message: "the JWK Set served at jwks_path has no key (HS256 keys are never published): verifiers cannot check any minted token".to_owned(),
            });
        }
    }
    for (i, t) in policy.trusted_issuers.iter().enumerate() {
        if t.key_source.is_some() && !t.keys.is_empty() {
            found.push(KeyFinding {
                kind: "inline_and_fetched",
                path: format!("trusted_issuers[{i}].jwks"),
                subject: t.issuer.clone(),
                message: format!(
                    "issuer {:?} has inline keys beside its fetched ones: the inline keys stay trusted whatever the provider rotates out (a compromised key it removes keeps verifying); drop jwks and let the filter fetch",
                    t.issuer
                ),
            });
        }
    }
    found
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
