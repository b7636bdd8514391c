//! The policy: parsed from JSON bytes, validated whole, and only then used.
//!
//! Every error is collected with its JSON path (`rules[2].mint.ttl_seconds: ...`) so an
//! operator sees all mistakes at once; unknown fields are errors, because a typo in a
//! security policy must not pass silently. A `Policy` value can only exist once the whole
//! document is valid: there is no half-applied configuration.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};

pub use super::cache::CacheSettings;
use super::claims::ClaimMapping;
use super::date::UtcDate;
use super::hygiene::{HeaderPattern, DEFAULT_STRIP_HEADERS};
use super::json::parse_strict;
use super::keys::{Alg, IssuerKey};
use super::names::NameIndex;
use super::reason::{DenyReason, Refusal};
pub use super::routing::RouteMatch;
use super::routing::RuleIndex;
use super::signing::{GatewayKey, KeyMaterial, KeyState, SigningKey};
use super::token::Limits;

mod issuer;
mod keysource;
mod reader;
mod rule;
mod signing_keys;

pub use keysource::{JwksLocation, KeySource};
pub use signing_keys::Publication;

use issuer::read_trusted_issuers;
use reader::{any, boolean, integer, number, string, string_list, Errors, Obj};
use rule::{check_chained_rules, read_rules, RuleContext};
use signing_keys::{read_publication, read_signing_keys};

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
    /// Verification keys given in the policy (empty when every key is fetched).
    pub keys: Vec<IssuerKey>,
    /// Accepted `aud` values (one must be present in the token).
    pub audiences: Vec<String>,
    /// Where its tokens carry the caller and the scopes.
    pub claims: ClaimMapping,
    /// Index in `keys` by `kid` (compiled at load).
    pub(crate) keys_by_kid: NameIndex,
    /// The scope ceiling: no token minted from this issuer's tokens carries a scope outside
    /// it (`None`: no ceiling beyond the rules').
    pub max_scopes: Option<Vec<String>>,
    /// The only `mint.audience` values its tokens may be exchanged for (`None`: any).
    pub allowed_audiences: Option<Vec<String>>,
    /// After this day (UTC) the allow-list entry is overdue for review: warned about, and
    /// flagged in every audit record of its tokens.
    pub review_by: Option<UtcDate>,
    /// After this day (UTC) the issuer is no longer trusted (`issuer_expired`).
    pub expires: Option<UtcDate>,
    /// Tokens (or, for gateway tokens, their originals) issued before this time (seconds
    /// since the epoch) are refused (`issued_before_revocation`).
    pub revoked_before: Option<u64>,
    /// Where further keys are fetched from (`jwks_uri` or discovery), if anywhere.
    pub key_source: Option<KeySource>,
}

impl TrustedIssuer {
    /// Whether the review date has passed at `now` (seconds since the epoch).
    pub fn review_overdue(&self, now: u64) -> bool {
        self.review_by.is_some_and(|d| now >= d.end())
    }

    /// Whether the issuer's trust has ended at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|d| now >= d.end())
    }

    /// The policy's own key with this `kid` (the first, if several share it), by index.
    pub fn inline_key(&self, kid: &str) -> Option<&IssuerKey> {
        self.keys_by_kid.get(kid).and_then(|i| self.keys.get(i))
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
    /// The user authenticated at most this many seconds ago (`auth_time`; RFC 9470 step-up).
    pub max_age_seconds: Option<u64>,
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

/// Whether a rule's decisions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleMode {
    /// Decide, mint and audit; forward the minted token or answer the deny (the default).
    #[default]
    Enforce,
    /// Decide, mint and audit exactly as `Enforce` would, but forward the request without
    /// exchanging its token and never answer a deny.
    Shadow,
}

/// Which of the gateway's own tokens a rule takes (chained exchange).
#[derive(Debug, Clone)]
pub struct GatewayTokens {
    /// The gateway-minted audiences accepted (the token's `aud` must be one of these).
    pub audiences: Vec<String>,
}

/// The default `max_chain_depth`: an edge token may be exchanged once more, not twice.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 2;

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
    /// Enforce or shadow.
    pub mode: RuleMode,
    /// The gateway's own tokens this rule exchanges again (none without it).
    pub accept_gateway_tokens: Option<GatewayTokens>,
    /// The most exchanges the minted token may record (its `act` chain), the edge exchange
    /// counting as 1.
    pub max_chain_depth: usize,
    /// Indices of `require.issuers` in the policy's trusted issuers (compiled at load).
    pub(crate) issuer_indices: Vec<usize>,
}

/// Original tokens refused by id or subject (`revoked`), applied with a configuration update.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Revoked `jti` values.
    pub jti: HashSet<String>,
    /// Revoked `sub` values (of any trusted issuer).
    pub sub: HashSet<String>,
}

/// What happens to a request carrying a header on the `strip_headers` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StripAction {
    /// Remove it before forwarding (the default).
    #[default]
    Strip,
    /// Refuse the request (`identity_header_present`, 400).
    Refuse,
}

/// A complete, validated policy.
#[derive(Debug)]
pub struct Policy {
    /// The gateway's `iss` for minted tokens.
    pub issuer: String,
    /// The gateway's keys: exactly one active (it signs), others published or retired.
    pub signing_keys: Vec<GatewayKey>,
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
    /// Identity-bearing request headers removed before forwarding (names or `prefix*`).
    pub strip_headers: Vec<HeaderPattern>,
    /// Strip them, or refuse requests that carry them.
    pub strip_headers_action: StripAction,
    /// Revoked original tokens and subjects.
    pub revoked: Revocations,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
    /// Where the gateway's public keys are served.
    pub publication: Publication,
    /// The verified-and-minted cache's settings.
    pub cache: CacheSettings,
    /// What the operator should know about this (valid) policy.
    pub warnings: Vec<ConfigWarning>,
    /// Public halves of the signing keys, to verify the gateway's own tokens.
    gateway_keys: Vec<IssuerKey>,
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
    /// Per rule: the denials whose challenge names what the rule requires, grants or asks of
    /// the authentication (`Policy::rule_refusals`), with the refusal each answers.
    pub(crate) rule_denials: Vec<Vec<(Refusal, super::decide::Denial)>>,
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

    /// The entry of the key that signs (exactly one is active in a valid policy).
    pub fn active_key(&self) -> Option<&GatewayKey> {
        self.signing_keys
            .iter()
            .find(|k| k.state == KeyState::Active)
    }

    /// The active key when it is in the policy itself (a generated one is not: see
    /// `KeySnapshot::signer`).
    pub fn active_signing_key(&self) -> Option<&SigningKey> {
        match &self.active_key()?.material {
            KeyMaterial::Configured(k) => Some(k),
            KeyMaterial::Generated(_) => None,
        }
    }

    /// The longest `ttl_seconds` of any rule: how long a retired key stays published.
    pub fn longest_ttl_seconds(&self) -> u64 {
        self.rules
            .iter()
            .map(|r| r.mint.ttl_seconds)
            .max()
            .unwrap_or(0)
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
            .map(|r| self.denial(&(*r).into()))
            .collect();
        let rule_denials = self
            .rules
            .iter()
            .map(|rule| {
                Policy::rule_refusals(rule)
                    .into_iter()
                    .map(|refusal| {
                        let denial = self.denial(&refusal);
                        (refusal, denial)
                    })
                    .collect()
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

    /// The keys a gateway-issued token (chained exchange) is verified with: the public halves
    /// of the policy's configured signing keys, whatever their state (a retired key's tokens
    /// still verify until they expire; generated keys come from the key snapshot).
    pub fn gateway_verification_keys(&self) -> &[IssuerKey] {
        &self.gateway_keys
    }

    /// The public halves of the policy's own (not generated) keys as a JWKS document,
    /// whatever their state (HS256 keys are never published). What the filter serves is
    /// `publish::published_jwks`, which also drops expired retired keys.
    pub fn public_jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .signing_keys
            .iter()
            .filter_map(|k| match &k.material {
                KeyMaterial::Configured(key) => key.public_jwk(),
                KeyMaterial::Generated(_) => None,
            })
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
        None => Some(
            DEFAULT_STRIP_HEADERS
                .iter()
                .filter_map(|h| HeaderPattern::parse(h).ok())
                .collect(),
        ),
        v => string_list(v, &p, errs, |h| HeaderPattern::parse(h).err()).map(|l| {
            l.iter()
                .filter_map(|h| HeaderPattern::parse(h).ok())
                .collect()
        }),
    };
    let (v, p) = o.get("strip_headers_action");
    let strip_headers_action = match v {
        None => Some(StripAction::Strip),
        Some(Value::String(s)) if s == "strip" => Some(StripAction::Strip),
        Some(Value::String(s)) if s == "refuse" => Some(StripAction::Refuse),
        Some(_) => {
            errs.push(&p, "must be \"strip\" or \"refuse\"");
            None
        }
    };

    let (v, p) = o.get("revoked");
    let revoked = match v {
        None => Some(Revocations::default()),
        Some(v) => read_revoked(v, &p, errs),
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

    let publication = read_publication(&mut o, issuer.as_deref(), errs);

    o.finish(errs);

    let mut limits = limits?;
    limits.max_token_bytes = usize::try_from(max_token_bytes?).ok()?;
    let signing_keys = signing_keys?;
    // Every configured key whatever its state: a retired key's tokens verify until they
    // expire. Generated keys (always EdDSA or ES256) are public too, but only at run time.
    let gateway_keys: Vec<IssuerKey> = signing_keys
        .iter()
        .filter_map(|k| match &k.material {
            KeyMaterial::Configured(key) => key.verification_key(),
            KeyMaterial::Generated(_) => None,
        })
        .collect();
    let has_generated = signing_keys
        .iter()
        .any(|k| matches!(k.material, KeyMaterial::Generated(_)));
    let rules = rules?;
    check_chained_rules(
        &rules,
        &p,
        !gateway_keys.is_empty() || has_generated,
        &limits,
        errs,
    );
    Some(Policy {
        issuer: issuer?,
        signing_keys,
        trusted_issuers: trusted_issuers?,
        clock_skew_seconds: clock_skew_seconds?,
        rules,
        unmatched: unmatched?,
        limits,
        strip_headers: strip_headers?,
        strip_headers_action: strip_headers_action?,
        revoked: revoked?,
        realm: realm?,
        publication: publication?,
        cache: cache?,
        warnings: Vec::new(),
        gateway_keys,
        compiled: Compiled::default(),
    })
}

/// `revoked: {"jti": [...], "sub": [...]}`.
fn read_revoked(v: &Value, path: &str, errs: &mut Errors) -> Option<Revocations> {
    let mut o = Obj::new(v, path, errs)?;
    let mut list = |o: &mut Obj, key: &'static str| {
        let (v, p) = o.get(key);
        match v {
            None => Some(HashSet::new()),
            v => string_list(v, &p, errs, any).map(|l| l.into_iter().collect()),
        }
    };
    let jti = list(&mut o, "jti");
    let sub = list(&mut o, "sub");
    o.finish(errs);
    Some(Revocations {
        jti: jti?,
        sub: sub?,
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
