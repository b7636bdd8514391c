//! The policy: parsed from JSON bytes, validated whole, and only then used.
//!
//! Every error is collected with its JSON path (`rules[2].mint.ttl_seconds: ...`) so an
//! operator sees all mistakes at once; unknown fields are errors, because a typo in a
//! security policy must not pass silently. A `Policy` value can only exist once the whole
//! document is valid: there is no half-applied configuration.

use std::fmt;

use serde_json::{Map, Value};

use super::claims::{
    ClaimMapping, DEFAULT_CALLER_CLAIMS, DEFAULT_SCOPE_CLAIMS, FIXED_MEANING_CLAIMS,
    RESERVED_CLAIMS,
};
use super::json::parse_strict;
use super::jwks::import_jwks;
use super::keys::{Alg, IssuerKey};
use super::signing::SigningKey;
use super::syntax::{is_http_token, is_scope_token};
use super::token::Limits;

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
}

/// Which requests a rule applies to; every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Segment-aware path prefix (`/orders` matches `/orders` and `/orders/1`, not `/ordersX`).
    pub path_prefix: Option<String>,
    /// Exact path (query string excluded).
    pub path: Option<String>,
    /// Allowed methods (upper case); empty means any.
    pub methods: Vec<String>,
    /// Host (lower case), compared without the port unless it names one.
    pub host: Option<String>,
    /// The gateway's route name (Envoy `xds.route_name`).
    pub route: Option<String>,
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
    pub name: String,
    /// Which requests it applies to.
    pub matcher: RouteMatch,
    /// What the token must carry.
    pub require: Requirements,
    /// What is minted.
    pub mint: MintSpec,
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
    /// What the operator should know about this (valid) policy.
    pub warnings: Vec<ConfigWarning>,
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
        self.trusted_issuers.iter().find(|t| t.issuer == iss)
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

#[derive(Default)]
struct Errors {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Errors {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An object being read: tracks which members were consumed to report unknown ones.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj {
                path: path.to_owned(),
                map,
                known: Vec::new(),
            }),
            _ => {
                errs.push(path, "must be an object");
                None
            }
        }
    }
    /// The member `key` (marking it known), with its path.
    fn get(&mut self, key: &'static str) -> (Option<&'a Value>, String) {
        self.known.push(key);
        (self.map.get(key), join(&self.path, key))
    }
    fn required(&mut self, key: &'static str, errs: &mut Errors) -> (Option<&'a Value>, String) {
        let (v, p) = self.get(key);
        if v.is_none() {
            errs.push(&p, "is required");
        }
        (v, p)
    }
    fn finish(self, errs: &mut Errors) {
        for k in self.map.keys() {
            if !self.known.contains(&k.as_str()) {
                errs.push(
                    &join(&self.path, k),
                    format!("unknown field (expected one of: {})", self.known.join(", ")),
                );
            }
        }
    }
}

fn string(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => {
            errs.push(path, "must not be empty");
            None
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            errs.push(path, "must not contain control characters");
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errs.push(path, "must be a string");
            None
        }
    }
}

fn integer(v: Option<&Value>, path: &str, min: u64, max: u64, errs: &mut Errors) -> Option<u64> {
    match v?.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            errs.push(path, format!("must be an integer between {min} and {max}"));
            None
        }
    }
}

fn boolean(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        _ => {
            errs.push(path, "must be true or false");
            None
        }
    }
}

/// A list of non-empty strings, each checked by `check` (which returns a message on error).
fn string_list(
    v: Option<&Value>,
    path: &str,
    errs: &mut Errors,
    check: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let items = match v? {
        Value::Array(items) => items,
        _ => {
            errs.push(path, "must be an array of strings");
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match string(Some(item), &p, errs) {
            Some(s) => {
                if let Some(msg) = check(&s) {
                    errs.push(&p, msg);
                    ok = false;
                } else if out.contains(&s) {
                    errs.push(&p, format!("duplicate value {s:?}"));
                    ok = false;
                } else {
                    out.push(s);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn any(_: &str) -> Option<String> {
    None
}

fn scope_check(s: &str) -> Option<String> {
    (!is_scope_token(s)).then(|| "is not a valid scope token (RFC 6749 §3.3)".to_owned())
}

fn non_empty(list: Option<Vec<String>>, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    match list {
        Some(l) if l.is_empty() => {
            errs.push(path, "must not be empty");
            None
        }
        other => other,
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
        warnings: Vec::new(),
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

fn read_trusted_issuers(
    v: Option<&Value>,
    path: &str,
    gateway_issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<Vec<TrustedIssuer>> {
    let items = match v? {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            errs.push(path, "must be a non-empty array");
            return None;
        }
    };
    let mut out: Vec<TrustedIssuer> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_trusted_issuer(item, &p, gateway_issuer, errs) {
            Some(t) if out.iter().any(|o| o.issuer == t.issuer) => {
                errs.push(
                    &join(&p, "issuer"),
                    format!("duplicate issuer {:?}", t.issuer),
                );
                ok = false;
            }
            Some(t) => out.push(t),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_trusted_issuer(
    v: &Value,
    path: &str,
    gateway_issuer: Option<&str>,
    errs: &mut Errors,
) -> Option<TrustedIssuer> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("issuer", errs);
    let issuer = string(v, &p, errs);
    if issuer.is_some() && issuer.as_deref() == gateway_issuer {
        errs.push(
            &p,
            "must not be the gateway's own issuer (its tokens are not accepted at the edge)",
        );
    }
    let (v, p) = o.required("algorithms", errs);
    let algorithms = non_empty(
        string_list(v, &p, errs, |a| match Alg::from_verify_name(a) {
            Some(_) => None,
            None if a.eq_ignore_ascii_case("none") => Some("\"none\" is never accepted".into()),
            None if a.starts_with("HS") => {
                Some("HMAC algorithms are not accepted for issuers (shared secrets)".into())
            }
            None => Some(format!(
                "unsupported algorithm {a:?} (one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
            )),
        }),
        &p,
        errs,
    )
    .map(|l| l.iter().filter_map(|a| Alg::from_verify_name(a)).collect::<Vec<_>>());

    let (v, p) = o.required("jwks", errs);
    let keys = match (v, &algorithms) {
        (Some(v), Some(algs)) => read_jwks(v, &p, algs, errs),
        _ => None,
    };
    let (v, p) = o.required("audiences", errs);
    let audiences = non_empty(string_list(v, &p, errs, any), &p, errs);
    let (v, p) = o.get("claims");
    let claims = match v {
        None => Some(ClaimMapping::default()),
        Some(v) => read_claim_mapping(v, &p, errs),
    };
    o.finish(errs);
    Some(TrustedIssuer {
        issuer: issuer?,
        algorithms: algorithms?,
        keys: keys?,
        audiences: audiences?,
        claims: claims?,
    })
}

/// A provider's JWK Set: usable keys, skipped ones as warnings (see `jwks`).
fn read_jwks(v: &Value, path: &str, algs: &[Alg], errs: &mut Errors) -> Option<Vec<IssuerKey>> {
    match import_jwks(v, algs) {
        Ok(set) => {
            for skipped in &set.skipped {
                errs.warn(
                    &format!("{path}.keys[{}]", skipped.index),
                    skipped.to_string(),
                );
            }
            Some(set.keys)
        }
        Err(problems) => {
            for e in problems {
                errs.push(&join(path, &e.path), e.message);
            }
            None
        }
    }
}

/// `claims: {"caller": [...], "scopes": [...]}`: claim names, read in order.
fn read_claim_mapping(v: &Value, path: &str, errs: &mut Errors) -> Option<ClaimMapping> {
    let mut o = Obj::new(v, path, errs)?;
    let fixed = |allowed: &'static str| {
        move |c: &str| {
            (FIXED_MEANING_CLAIMS.contains(&c) && c != allowed)
                .then(|| format!("{c:?} is a registered claim with its own meaning"))
        }
    };
    let mut list = |o: &mut Obj, key: &'static str, default: &[&str], allowed: &'static str| {
        let (v, p) = o.get(key);
        match v {
            None => Some((default.iter().map(|c| (*c).to_owned()).collect(), None)),
            v => {
                non_empty(string_list(v, &p, errs, fixed(allowed)), &p, errs).map(|l| (l, Some(p)))
            }
        }
    };
    // `sub` may name the caller (a service account's token); as a scope claim it would grant
    // the subject's name as a scope.
    let caller = list(&mut o, "caller", DEFAULT_CALLER_CLAIMS, "sub");
    let scopes = list(&mut o, "scopes", DEFAULT_SCOPE_CLAIMS, "");
    o.finish(errs);
    let ((caller, caller_path), (scopes, scopes_path)) = (caller?, scopes?);
    let mut ok = true;
    for (i, c) in caller.iter().enumerate() {
        if let Some(j) = scopes.iter().position(|s| s == c) {
            // Report it in a list the operator wrote.
            let at = match (&caller_path, &scopes_path) {
                (Some(p), _) => format!("{p}[{i}]"),
                (None, Some(p)) => format!("{p}[{j}]"),
                (None, None) => join(path, "caller"),
            };
            errs.push(
                &at,
                format!("{c:?} cannot be both a caller claim and a scope claim"),
            );
            ok = false;
        }
    }
    ok.then(|| ClaimMapping::new(caller, scopes))
}

/// What rules are checked against: the trusted issuers (names, how many were configured, and
/// the claims their mappings read).
struct RuleContext {
    /// Names of the trusted issuers that parsed.
    issuers: Vec<String>,
    /// How many trusted issuers the document lists (parsed or not).
    configured: usize,
    /// (claim, issuer, what it carries) for every claim an issuer's mapping reads.
    mapped: Vec<(String, String, &'static str)>,
}

impl RuleContext {
    fn new(raw: Option<&Value>, parsed: Option<&[TrustedIssuer]>) -> RuleContext {
        let parsed = parsed.unwrap_or_default();
        let mut mapped = Vec::new();
        for t in parsed {
            for c in t.claims.caller_claims() {
                mapped.push((c.clone(), t.issuer.clone(), "caller (minted as client_id)"));
            }
            for c in t.claims.scope_claims() {
                mapped.push((c.clone(), t.issuer.clone(), "scopes (narrowed into scope)"));
            }
        }
        RuleContext {
            issuers: parsed.iter().map(|t| t.issuer.clone()).collect(),
            configured: raw.and_then(Value::as_array).map_or(parsed.len(), Vec::len),
            mapped,
        }
    }

    /// Why `claim` may not be copied or added by a rule, if it may not.
    fn claim_refusal(&self, claim: &str) -> Option<String> {
        if RESERVED_CLAIMS.contains(&claim) {
            return Some(format!(
                "{claim:?} is set by the gateway and cannot be copied or added"
            ));
        }
        self.mapped
            .iter()
            .find(|(c, _, _)| c == claim)
            .map(|(_, issuer, what)| {
                format!(
                    "{claim:?} carries the {what} of trusted issuer {issuer:?}: it cannot be copied or added"
                )
            })
    }
}

fn read_rules(
    v: Option<&Value>,
    path: &str,
    ctx: &RuleContext,
    errs: &mut Errors,
) -> Option<Vec<ExchangeRule>> {
    let items = match v? {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            errs.push(path, "must be a non-empty array");
            return None;
        }
    };
    let mut out: Vec<ExchangeRule> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_rule(item, &p, ctx, errs) {
            Some(r) if out.iter().any(|o| o.name == r.name) => {
                errs.push(
                    &join(&p, "name"),
                    format!("duplicate rule name {:?}", r.name),
                );
                ok = false;
            }
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_rule(v: &Value, path: &str, ctx: &RuleContext, errs: &mut Errors) -> Option<ExchangeRule> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("name", errs);
    let name = string(v, &p, errs);
    let (v, p) = o.required("match", errs);
    let matcher = v.and_then(|v| read_match(v, &p, errs));
    let (v, p) = o.get("require");
    let require = match v {
        None => Some(Requirements::default()),
        Some(v) => read_require(v, &p, &ctx.issuers, errs),
    };
    // With a partner beside the internal issuer, a rule that does not say which issuers it
    // accepts would accept them all: the binding must be explicit.
    let names_issuers = v
        .and_then(|r| r.get("issuers"))
        .is_some_and(|i| !i.is_null());
    if ctx.configured > 1 && !names_issuers {
        let rule = name
            .as_deref()
            .map_or(String::new(), |n| format!("rule {n:?}: "));
        errs.push(
            &format!("{}.issuers", join(path, "require")),
            format!(
                "{rule}required when more than one issuer is trusted ({}): name the issuers this rule accepts",
                ctx.configured
            ),
        );
    }
    let (v, p) = o.required("mint", errs);
    let mint = v.and_then(|v| read_mint(v, &p, ctx, errs));
    o.finish(errs);
    Some(ExchangeRule {
        name: name?,
        matcher: matcher?,
        require: require?,
        mint: mint?,
    })
}

fn read_match(v: &Value, path: &str, errs: &mut Errors) -> Option<RouteMatch> {
    let mut o = Obj::new(v, path, errs)?;
    let mut ok = true;
    let path_check = |s: &str| -> Option<String> {
        if !s.starts_with('/') {
            Some("must start with '/'".into())
        } else if s.contains('?') || s.contains('#') {
            Some("must not contain a query or fragment".into())
        } else {
            None
        }
    };
    let mut path_field = |o: &mut Obj, key: &'static str, errs: &mut Errors| {
        let (v, p) = o.get(key);
        let s = string(v, &p, errs);
        if let Some(msg) = s.as_deref().and_then(path_check) {
            errs.push(&p, msg);
            ok = false;
            return None;
        }
        if v.is_some() && s.is_none() {
            ok = false;
        }
        s
    };
    let path_prefix = path_field(&mut o, "path_prefix", errs);
    let exact = path_field(&mut o, "path", errs);
    let (v, p) = o.get("methods");
    let methods = match v {
        None => Some(Vec::new()),
        v => non_empty(
            string_list(v, &p, errs, |m| {
                (!m.bytes().all(|b| b.is_ascii_uppercase()))
                    .then(|| "must be an upper-case HTTP method".to_owned())
            }),
            &p,
            errs,
        ),
    };
    let (v, p) = o.get("host");
    let host = string(v, &p, errs).map(|h| h.to_ascii_lowercase());
    if v.is_some() && host.is_none() {
        ok = false;
    }
    let (v, p) = o.get("route");
    let route = string(v, &p, errs);
    if v.is_some() && route.is_none() {
        ok = false;
    }
    o.finish(errs);
    ok.then_some(())?;
    Some(RouteMatch {
        path_prefix,
        path: exact,
        methods: methods?,
        host,
        route,
    })
}

fn read_require(
    v: &Value,
    path: &str,
    issuers: &[String],
    errs: &mut Errors,
) -> Option<Requirements> {
    let mut o = Obj::new(v, path, errs)?;
    let mut list = |o: &mut Obj, key: &'static str, check: &dyn Fn(&str) -> Option<String>| {
        let (v, p) = o.get(key);
        match v {
            None => Some(Vec::new()),
            v => non_empty(string_list(v, &p, errs, check), &p, errs),
        }
    };
    let scopes = list(&mut o, "scopes", &scope_check);
    let acr = list(&mut o, "acr", &any);
    let amr = list(&mut o, "amr", &any);
    let callers = list(&mut o, "callers", &any);
    let issuer_check = |s: &str| {
        (!issuers.iter().any(|i| i == s)).then(|| format!("{s:?} is not in trusted_issuers"))
    };
    let issuers = list(&mut o, "issuers", &issuer_check);
    o.finish(errs);
    Some(Requirements {
        scopes: scopes?,
        acr: acr?,
        amr: amr?,
        callers: callers?,
        issuers: issuers?,
    })
}

fn read_mint(v: &Value, path: &str, ctx: &RuleContext, errs: &mut Errors) -> Option<MintSpec> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("audience", errs);
    let audience = string(v, &p, errs);
    let (v, p) = o.required("scopes", errs);
    let scopes = non_empty(string_list(v, &p, errs, scope_check), &p, errs);
    let (v, p) = o.get("ttl_seconds");
    let ttl_seconds = match v {
        None => Some(300),
        v => integer(v, &p, 1, 86400, errs),
    };
    let (v, p) = o.get("preserve_claims");
    // `sub` is always kept: listing it is accepted and changes nothing.
    let preserve_claims = match v {
        None => Some(Vec::new()),
        v => string_list(v, &p, errs, |c| {
            if c == "sub" {
                None
            } else {
                ctx.claim_refusal(c)
            }
        })
        .map(|l| l.into_iter().filter(|c| c != "sub").collect()),
    };
    // Checked against the raw list so a conflict is reported even when another entry is bad.
    let preserve_raw = v.and_then(Value::as_array);
    let (v, p) = o.get("add_claims");
    let add_claims = match v {
        None => Some(Map::new()),
        Some(Value::Object(m)) => {
            let mut ok = true;
            for k in m.keys() {
                let kp = join(&p, k);
                if let Some(msg) = ctx.claim_refusal(k) {
                    errs.push(&kp, msg);
                    ok = false;
                } else if preserve_raw.is_some_and(|pc| pc.iter().any(|c| c.as_str() == Some(k))) {
                    errs.push(&kp, "is also in preserve_claims: choose one");
                    ok = false;
                }
            }
            ok.then(|| m.clone())
        }
        Some(_) => {
            errs.push(&p, "must be an object");
            None
        }
    };
    o.finish(errs);
    Some(MintSpec {
        audience: audience?,
        scopes: scopes?,
        ttl_seconds: ttl_seconds?,
        preserve_claims: preserve_claims?,
        add_claims: add_claims?,
    })
}
