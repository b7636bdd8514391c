//! The policy: parsed from JSON bytes, validated whole, and only then used.
//!
//! Every error is collected with its JSON path (`rules[2].mint.ttl_seconds: ...`) so an
//! operator sees all mistakes at once; unknown fields are errors, because a typo in a
//! security policy must not pass silently. A `Policy` value can only exist once the whole
//! document is valid: there is no half-applied configuration.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};

pub use super::cache::CacheSettings;
use super::claims::ClaimMapping;
use super::json::parse_strict;
use super::keys::{Alg, IssuerKey};
use super::names::NameIndex;
use super::reason::DenyReason;
pub use super::routing::RouteMatch;
use super::routing::RuleIndex;
use super::signing::SigningKey;
use super::syntax::is_http_token;
use super::token::Limits;

mod issuer;
mod reader;
mod rule;

use issuer::read_trusted_issuers;
use reader::{boolean, integer, number, string, string_list, Errors, Obj};
use rule::{read_rules, RuleContext};

/// One configuration mistake, with the JSON path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path, e.g. `rules[0].mint.audience`; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// All mistakes found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            if e.path.is_empty() {
                write!(f, "\n  {}", e.message)?;
            } else {
                write!(f, "\n  {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

/// Something in a valid configuration the operator should know about (the root logs each at
/// warn level when the policy loads), e.g. a key of a provider's key set that is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// JSON path, e.g. `trusted_issuers[0].jwks.keys[1]`.
    pub path: String,
    /// What was noticed.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What happens to a request no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Refuse it (the default).
    Deny,
    /// Forward it untouched (audited as `pass`).
    Pass,
}

/// An issuer on the allow list.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Pinned algorithms.
    pub algorithms: Vec<Alg>,
    /// Verification keys.
    pub keys: Vec<IssuerKey>,
    /// Accepted `aud` values (one must be present in the token).
    pub audiences: Vec<String>,
    /// Where its tokens carry the caller and the scopes.
    pub claims: ClaimMapping,
    /// Index in `keys` by `kid` (compiled at load).
    pub(crate) keys_by_kid: NameIndex,
    /// Version of `keys`: cached exchanges verified under another version are not reused.
    /// Static keys never change (0); key sets that change at runtime bump it.
    pub key_set_version: u64,
}

impl TrustedIssuer {
    /// The key a token names (`kid`), or the only key when the token names none.
    pub fn key_for(&self, kid: Option<&str>) -> Option<&IssuerKey> {
        match kid {
            Some(kid) => self.keys_by_kid.get(kid).and_then(|i| self.keys.get(i)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }
}

/// What a valid token must also carry for this rule.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// All of these scopes.
    pub scopes: Vec<String>,
    /// One of these `acr` values (if non-empty).
    pub acr: Vec<String>,
    /// All of these `amr` values.
    pub amr: Vec<String>,
    /// The caller (read through the issuer's claim mapping) is one of these (if non-empty).
    pub callers: Vec<String>,
    /// The issuer is one of these (if non-empty; with several trusted issuers, always).
    pub issuers: Vec<String>,
}

/// How the downstream token is minted.
#[derive(Debug, Clone)]
pub struct MintSpec {
    /// The one target audience.
    pub audience: String,
    /// The most this rule grants; the minted scope is this ∩ the token's.
    pub scopes: Vec<String>,
    /// Upper bound on the minted lifetime.
    pub ttl_seconds: u64,
    /// Claims copied from the original when present (`sub`, always kept, is not listed).
    pub preserve_claims: Vec<String>,
    /// Claims added with fixed values.
    pub add_claims: Map<String, Value>,
}

/// One exchange rule.
#[derive(Debug, Clone)]
pub struct ExchangeRule {
    /// Unique name, used in audit records.
    pub name: Arc<str>,
    /// Which requests it applies to.
    pub matcher: RouteMatch,
    /// What the token must carry.
    pub require: Requirements,
    /// What is minted.
    pub mint: MintSpec,
    /// Indices of `require.issuers` in the policy's trusted issuers (compiled at load).
    pub(crate) issuer_indices: Vec<usize>,
}

/// A complete, validated policy.
#[derive(Debug)]
pub struct Policy {
    /// The gateway's `iss` for minted tokens.
    pub issuer: String,
    /// Signing keys; the first signs.
    pub signing_keys: Vec<SigningKey>,
    /// The issuer allow list.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Tolerance for `exp`, `nbf`, `iat`.
    pub clock_skew_seconds: u64,
    /// Rules, first match wins.
    pub rules: Vec<ExchangeRule>,
    /// What to do when no rule matches.
    pub unmatched: Unmatched,
    /// Token limits.
    pub limits: Limits,
    /// Request headers removed before forwarding (lower case).
    pub strip_headers: Vec<String>,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
    /// The verified-and-minted cache's settings.
    pub cache: CacheSettings,
    /// What the operator should know about this (valid) policy.
    pub warnings: Vec<ConfigWarning>,
    /// Compiled at load: the rule index, issuers by name, the prebuilt denials.
    pub(crate) compiled: Compiled,
}

/// What is computed once per policy so that no request repeats it.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    /// This policy's id among those loaded by this process (binds caches to it).
    pub(crate) id: u64,
    /// The rules' match conditions, indexed.
    pub(crate) rules: RuleIndex,
    /// Trusted issuers by exact `iss`.
    pub(crate) issuers: NameIndex,
    /// The local response of every deny reason, in `DenyReason::ALL` order.
    pub(crate) denials: Vec<super::decide::Denial>,
    /// Per rule: the `insufficient_scope` and `no_grantable_scope` denials naming its scopes.
    pub(crate) rule_denials: Vec<(super::decide::Denial, super::decide::Denial)>,
}

impl Policy {
    /// Parses and validates a configuration document.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigErrors> {
        let doc = parse_strict(bytes, 64).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: e.to_string(),
            }])
        })?;
        let mut errs = Errors::default();
        let policy = read_policy(&doc, &mut errs);
        match policy {
            Some(mut p) if errs.errors.is_empty() => {
                p.warnings = errs.warnings;
                p.compile();
                Ok(p)
            }
            _ => {
                if errs.errors.is_empty() {
                    errs.push("", "invalid configuration");
                }
                Err(ConfigErrors(errs.errors))
            }
        }
    }

    /// The key minted tokens are signed with.
    pub fn active_signing_key(&self) -> Option<&SigningKey> {
        self.signing_keys.first()
    }

    /// The trusted issuer with this exact `iss`.
    pub fn trusted_issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.trusted_issuer_index(iss)
            .and_then(|i| self.trusted_issuers.get(i))
    }

    /// The position of the trusted issuer with this exact `iss`.
    pub fn trusted_issuer_index(&self, iss: &str) -> Option<usize> {
        self.compiled.issuers.get(iss)
    }

    /// Whether deciding needs the host's route name (some rule matches on it).
    pub fn needs_route_name(&self) -> bool {
        self.compiled.rules.needs_route_name()
    }

    /// Builds everything a request would otherwise recompute.
    fn compile(&mut self) {
        let mut issuers = NameIndex::default();
        for (i, t) in self.trusted_issuers.iter().enumerate() {
            issuers.insert_first(&t.issuer, i);
        }
        for rule in &mut self.rules {
            rule.issuer_indices = rule
                .require
                .issuers
                .iter()
                .filter_map(|name| issuers.get(name))
                .collect();
            rule.issuer_indices.sort_unstable();
        }
        let denials = DenyReason::ALL
            .iter()
            .map(|r| self.build_denial(*r, None))
            .collect();
        let rule_denials = self
            .rules
            .iter()
            .map(|r| {
                (
                    self.build_denial(
                        DenyReason::InsufficientScope,
                        Some(&r.require.scopes.join(" ")),
                    ),
                    self.build_denial(DenyReason::NoGrantableScope, Some(&r.mint.scopes.join(" "))),
                )
            })
            .collect();
        // Ids start at 1: 0 is a new cache's "no policy yet".
        static LOADED: AtomicU64 = AtomicU64::new(0);
        self.compiled = Compiled {
            id: LOADED.fetch_add(1, Ordering::Relaxed).wrapping_add(1),
            rules: RuleIndex::new(self.rules.iter().map(|r| &r.matcher)),
            issuers,
            denials,
            rule_denials,
        };
    }

    /// The gateway's public keys as a JWKS document (HS256 keys are never published).
    pub fn public_jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .signing_keys
            .iter()
            .filter_map(SigningKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

fn read_policy(doc: &Value, errs: &mut Errors) -> Option<Policy> {
    let mut o = Obj::new(doc, "", errs)?;
    let _ = o.get("$schema");

    let (v, p) = o.required("issuer", errs);
    let issuer = string(v, &p, errs);

    let (v, p) = o.get("allow_hs256_signing");
    let allow_hs256 = boolean(v, &p, errs).unwrap_or(false);

    let (v, p) = o.required("signing_keys", errs);
    let signing_keys = read_signing_keys(v, &p, allow_hs256, errs);

    let (v, p) = o.required("trusted_issuers", errs);
    let trusted_issuers = read_trusted_issuers(v, &p, issuer.as_deref(), errs);

    let (v, p) = o.get("clock_skew_seconds");
    let clock_skew_seconds = match v {
        None => Some(30),
        v => integer(v, &p, 0, 300, errs),
    };

    let (v, p) = o.get("unmatched");
    let unmatched = match v {
        None => Some(Unmatched::Deny),
        Some(Value::String(s)) if s == "deny" => Some(Unmatched::Deny),
        Some(Value::String(s)) if s == "pass" => Some(Unmatched::Pass),
        Some(_) => {
            errs.push(&p, "must be \"deny\" or \"pass\"");
            None
        }
    };

    let defaults = Limits::default();
    let (v, p) = o.get("max_token_bytes");
    let max_token_bytes = match v {
        None => Some(defaults.max_token_bytes as u64),
        v => integer(v, &p, 256, 65536, errs),
    };
    let (v, p) = o.get("limits");
    let limits = match v {
        None => Some(defaults),
        Some(v) => read_limits(v, &p, errs),
    };

    let (v, p) = o.get("strip_headers");
    let strip_headers = match v {
        None => Some(Vec::new()),
        v => string_list(v, &p, errs, |h| {
            let lower = h.to_ascii_lowercase();
            if lower == "authorization" || lower.starts_with(':') {
                Some("cannot strip Authorization or pseudo-headers".into())
            } else if !is_http_token(h) {
                Some("is not a valid header name".into())
            } else {
                None
            }
        })
        .map(|l| l.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
    };

    let (v, p) = o.get("realm");
    let realm = match v {
        None => Some("token-exchange".to_owned()),
        v => string(v, &p, errs).and_then(|r| {
            if r.bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
            {
                Some(r)
            } else {
                errs.push(&p, "must be printable ASCII without '\"' or '\\'");
                None
            }
        }),
    };

    let (v, p) = o.get("cache");
    let cache = match v {
        None => Some(CacheSettings::default()),
        Some(v) => read_cache(v, &p, errs),
    };

    let (v, p) = o.required("rules", errs);
    let ctx = RuleContext::new(doc.get("trusted_issuers"), trusted_issuers.as_deref());
    let rules = read_rules(v, &p, &ctx, errs);

    o.finish(errs);

    let mut limits = limits?;
    limits.max_token_bytes = usize::try_from(max_token_bytes?).ok()?;
    Some(Policy {
        issuer: issuer?,
        signing_keys: signing_keys?,
        trusted_issuers: trusted_issuers?,
        clock_skew_seconds: clock_skew_seconds?,
        rules: rules?,
        unmatched: unmatched?,
        limits,
        strip_headers: strip_headers?,
        realm: realm?,
        cache: cache?,
        warnings: Vec::new(),
        compiled: Compiled::default(),
    })
}

fn read_cache(v: &Value, path: &str, errs: &mut Errors) -> Option<CacheSettings> {
    let mut o = Obj::new(v, path, errs)?;
    let d = CacheSettings::default();
    let (v, p) = o.get("enabled");
    let enabled = match v {
        None => Some(d.enabled),
        v => boolean(v, &p, errs),
    };
    let (v, p) = o.get("max_entries");
    let max_entries = match v {
        None => Some(d.max_entries),
        v => integer(v, &p, 1, 1_000_000, errs).and_then(|n| usize::try_from(n).ok()),
    };
    let (v, p) = o.get("max_bytes");
    let max_bytes = match v {
        None => Some(d.max_bytes),
        v => integer(v, &p, 65_536, 1 << 30, errs).and_then(|n| usize::try_from(n).ok()),
    };
    let (v, p) = o.get("reuse_fraction");
    let reuse_permille = match v {
        None => Some(d.reuse_permille),
        // Thousandths: 0.5 is 500; anything finer than 0.001 is rounded down.
        v => number(v, &p, 0.01, 1.0, errs).map(|f| (f * 1000.0).floor() as u32),
    };
    o.finish(errs);
    Some(CacheSettings {
        enabled: enabled?,
        max_entries: max_entries?,
        max_bytes: max_bytes?,
        reuse_permille: reuse_permille?,
    })
}

fn read_limits(v: &Value, path: &str, errs: &mut Errors) -> Option<Limits> {
    let mut o = Obj::new(v, path, errs)?;
    let d = Limits::default();
    let mut field = |o: &mut Obj, key: &'static str, default: usize, min: u64, max: u64| {
        let (v, p) = o.get(key);
        match v {
            None => Some(default),
            v => integer(v, &p, min, max, errs).and_then(|n| usize::try_from(n).ok()),
        }
    };
    let max_header_bytes = field(&mut o, "max_header_bytes", d.max_header_bytes, 64, 16384);
    let max_json_depth = field(&mut o, "max_json_depth", d.max_json_depth, 1, 64);
    let max_claims = field(&mut o, "max_claims", d.max_claims, 1, 1000);
    let max_scopes = field(&mut o, "max_scopes", d.max_scopes, 1, 1000);
    o.finish(errs);
    Some(Limits {
        max_token_bytes: d.max_token_bytes,
        max_header_bytes: max_header_bytes?,
        max_json_depth: max_json_depth?,
        max_claims: max_claims?,
        max_scopes: max_scopes?,
    })
}

fn read_signing_keys(
    v: Option<&Value>,
    path: &str,
    allow_hs256: bool,
    errs: &mut Errors,
) -> Option<Vec<SigningKey>> {
    let items = match v? {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            errs.push(path, "must be a non-empty array of private JWKs");
            return None;
        }
    };
    let mut keys: Vec<SigningKey> = Vec::new();
    let mut ok = true;
    for (i, jwk) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match SigningKey::from_jwk(jwk, allow_hs256) {
            Ok(k) if keys.iter().any(|o| o.kid() == k.kid()) => {
                errs.push(&p, format!("duplicate kid {:?}", k.kid()));
                ok = false;
            }
            Ok(k) => keys.push(k),
            Err(e) => {
                errs.push(&p, e.0);
                ok = false;
            }
        }
    }
    ok.then_some(keys)
}
