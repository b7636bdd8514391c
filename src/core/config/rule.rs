//! Reading `rules`: match, requirements and what is minted, checked against the trusted
//! issuers.

use serde_json::{Map, Value};

use super::reader::{any, integer, join, non_empty, scope_check, string, string_list, Errors, Obj};
use super::{
    ExchangeRule, GatewayTokens, MintSpec, Requirements, RouteMatch, RuleMode, TrustedIssuer,
    DEFAULT_MAX_CHAIN_DEPTH,
};
use crate::core::claims::RESERVED_CLAIMS;
use crate::core::token::Limits;

/// What rules are checked against: the trusted issuers (names, how many were configured, and
/// the claims their mappings read).
pub(super) struct RuleContext {
    /// Names of the trusted issuers that parsed.
    issuers: Vec<String>,
    /// How many trusted issuers the document lists (parsed or not).
    configured: usize,
    /// (claim, issuer, what it carries) for every claim an issuer's mapping reads.
    mapped: Vec<(String, String, &'static str)>,
}

impl RuleContext {
    pub(super) fn new(raw: Option<&Value>, parsed: Option<&[TrustedIssuer]>) -> RuleContext {
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

pub(super) fn read_rules(
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

pub(super) fn read_rule(
    v: &Value,
    path: &str,
    ctx: &RuleContext,
    errs: &mut Errors,
) -> Option<ExchangeRule> {
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
    let (v, p) = o.get("mode");
    let mode = match v {
        None => Some(RuleMode::Enforce),
        Some(Value::String(s)) if s == "enforce" => Some(RuleMode::Enforce),
        Some(Value::String(s)) if s == "shadow" => Some(RuleMode::Shadow),
        Some(_) => {
            errs.push(&p, "must be \"enforce\" or \"shadow\"");
            None
        }
    };
    let (v, p) = o.get("accept_gateway_tokens");
    let accept_gateway_tokens = match v {
        None => Some(None),
        Some(v) => read_gateway_tokens(v, &p, mint.as_ref(), errs).map(Some),
    };
    let (v, p) = o.get("max_chain_depth");
    let max_chain_depth = match v {
        None => Some(DEFAULT_MAX_CHAIN_DEPTH as u64),
        v => integer(v, &p, 1, MAX_CHAIN_DEPTH, errs),
    }
    .and_then(|d| usize::try_from(d).ok());
    o.finish(errs);
    Some(ExchangeRule {
        name: name?.into(),
        matcher: matcher?,
        require: require?,
        mint: mint?,
        mode: mode?,
        accept_gateway_tokens: accept_gateway_tokens?,
        max_chain_depth: max_chain_depth?,
        issuer_indices: Vec::new(),
    })
}

/// The largest `max_chain_depth`: each exchange nests the `act` chain one level deeper.
const MAX_CHAIN_DEPTH: u64 = 8;

/// `accept_gateway_tokens: {"audiences": [...]}`.
fn read_gateway_tokens(
    v: &Value,
    path: &str,
    mint: Option<&MintSpec>,
    errs: &mut Errors,
) -> Option<GatewayTokens> {
    let mut o = Obj::new(v, path, errs)?;
    let (v, p) = o.required("audiences", errs);
    let audiences = non_empty(string_list(v, &p, errs, any), &p, errs);
    o.finish(errs);
    let audiences = audiences?;
    if let Some(i) = mint.and_then(|m| audiences.iter().position(|a| *a == m.audience)) {
        // A token for this audience exchanged into this audience again is always a cycle.
        errs.push(
            &format!("{p}[{i}]"),
            "is this rule's own mint.audience: every such exchange would be a cycle",
        );
        return None;
    }
    Some(GatewayTokens { audiences })
}

/// Checks that need the whole policy: rules taking gateway tokens need a key that verifies
/// them, room in `max_chain_depth` for a second exchange, and JSON depth for the `act`
/// chain they carry.
pub(super) fn check_chained_rules(
    rules: &[ExchangeRule],
    path: &str,
    gateway_verifiable: bool,
    limits: &Limits,
    errs: &mut Errors,
) {
    for (i, rule) in rules.iter().enumerate() {
        if rule.accept_gateway_tokens.is_none() {
            continue;
        }
        let p = format!("{path}[{i}]");
        if !gateway_verifiable {
            errs.push(
                &join(&p, "accept_gateway_tokens"),
                "needs a signing key with a public half (EdDSA, ES256 or RS256): HS256 gateway tokens cannot be verified as the gateway's",
            );
        }
        if rule.max_chain_depth < 2 {
            errs.push(
                &join(&p, "max_chain_depth"),
                "must be at least 2 for a rule that accepts gateway tokens (the edge exchange counts as 1)",
            );
        }
        // A gateway token carrying n exchanges nests `act` n deep inside the payload.
        if limits.max_json_depth <= rule.max_chain_depth {
            errs.push(
                &join(&p, "max_chain_depth"),
                format!(
                    "gateway tokens of depth {} would exceed limits.max_json_depth ({})",
                    rule.max_chain_depth, limits.max_json_depth
                ),
            );
        }
    }
}

pub(super) fn read_match(v: &Value, path: &str, errs: &mut Errors) -> Option<RouteMatch> {
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

pub(super) fn read_require(
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
    // They are named in a step-up challenge (`acr_values`, space-separated, quoted).
    let acr = list(&mut o, "acr", &|a: &str| {
        (!a.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)))
        .then(|| {
            "must be printable ASCII without spaces, '\"' or '\\' (it is named in acr_values)"
                .to_owned()
        })
    });
    let amr = list(&mut o, "amr", &any);
    let callers = list(&mut o, "callers", &any);
    let issuer_check = |s: &str| {
        (!issuers.iter().any(|i| i == s)).then(|| format!("{s:?} is not in trusted_issuers"))
    };
    let issuers = list(&mut o, "issuers", &issuer_check);
    let (v, p) = o.get("max_age_seconds");
    let max_age_seconds = match v {
        None => Some(None),
        v => integer(v, &p, 0, 31_536_000, errs).map(Some),
    };
    o.finish(errs);
    Some(Requirements {
        scopes: scopes?,
        acr: acr?,
        amr: amr?,
        callers: callers?,
        issuers: issuers?,
        max_age_seconds: max_age_seconds?,
    })
}

pub(super) fn read_mint(
    v: &Value,
    path: &str,
    ctx: &RuleContext,
    errs: &mut Errors,
) -> Option<MintSpec> {
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
