//! Reviewing a valid policy as a whole: rules that can never apply because an earlier rule
//! always matches first (first match wins, there is no fall-through), rules that match no
//! request at all, and rules whose grant can never meet what their issuers' tokens may hold
//! (the partner ceilings, and for chained exchange what the gateway's own tokens can carry).
//! Pure, on the same matching and ceiling code the decision uses, so a review can never
//! disagree with what the filter does.

use std::fmt;

use super::ceiling;
use super::config::{ExchangeRule, Policy, RouteMatch, RuleMode, TrustedIssuer};
use super::routing::{host_matches, is_under_prefix};

/// Something a reviewer should know about a rule of a valid policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleFinding {
    /// Every request rule `rule` matches is matched first by the earlier rule `by`: it never
    /// applies. Indexes into `Policy::rules`.
    Shadowed {
        /// The rule that never applies.
        rule: usize,
        /// The earlier rule that takes its requests.
        by: usize,
    },
    /// The rule's exact `path` is outside its own `path_prefix`: no request matches it.
    MatchesNothing {
        /// The rule.
        rule: usize,
    },
    /// The rule can never mint: the ceilings of every issuer it accepts exclude it. The same
    /// ceilings bind gateway tokens exchanged from those issuers, so chained exchange cannot
    /// reach it either.
    NeverGrants {
        /// The rule.
        rule: usize,
        /// Why, for each issuer it accepts.
        conflicts: Vec<IssuerConflict>,
    },
    /// The rule accepts a trusted issuer whose tokens it can never exchange (its other
    /// issuers still can): listing it changes nothing but the deny reason.
    IssuerNeverGranted {
        /// The rule.
        rule: usize,
        /// The issuer and why.
        conflict: IssuerConflict,
    },
    /// The rule accepts gateway tokens minted for `audience` (`accept_gateway_tokens`) that,
    /// as this policy mints them, it can never exchange.
    GatewayAudienceNeverGranted {
        /// The rule.
        rule: usize,
        /// The accepted gateway audience.
        audience: String,
        /// Why.
        why: GatewayConflict,
    },
}

/// A trusted issuer whose ceilings exclude a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConflict {
    /// Index into `Policy::trusted_issuers`.
    pub issuer: usize,
    /// Which ceiling, first in the order the decision checks them.
    pub why: CeilingConflict,
}

/// How an issuer's ceilings exclude a rule (each refuses every token of the issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CeilingConflict {
    /// The rule's `mint.audience` is not in the issuer's `allowed_audiences`
    /// (`issuer_audience_not_allowed`).
    AudienceNotAllowed,
    /// A `require.scopes` entry lies outside the issuer's `max_scopes` (`issuer_scope_ceiling`).
    RequiredScopeOutside {
        /// The first such scope.
        scope: String,
    },
    /// None of the rule's `mint.scopes` is within the issuer's `max_scopes`: whatever the
    /// token holds, nothing is left to mint (`issuer_scope_ceiling` or `no_grantable_scope`).
    GrantOutside,
}

/// Why gateway tokens for an accepted audience can never be exchanged by a rule, given the
/// rules of the same policy that mint that audience (a gateway token holds no more than they
/// grant, and carries only the claims they set or keep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayConflict {
    /// No rule that can apply and mint in enforce mode mints the audience (shadow rules'
    /// tokens are never forwarded), so no such token exists.
    NotMinted,
    /// The tokens can only have originated from issuers this rule does not accept (or whose
    /// ceilings exclude it) (`issuer_not_allowed`).
    IssuersDisjoint,
    /// `require.callers` does not name the audience, which is the caller of every such token
    /// (`caller_not_allowed`).
    CallerNotAllowed,
    /// A `require.scopes` entry that the rules minting the audience never grant
    /// (`insufficient_scope`).
    RequiredScopeNeverHeld {
        /// The first such scope.
        scope: String,
    },
    /// `require.acr`, `require.max_age_seconds` or `require.amr` read a claim (`acr`,
    /// `auth_time`, `amr`) that the rules minting the audience neither keep nor add.
    ClaimNeverCarried {
        /// The claim.
        claim: &'static str,
    },
    /// None of the rule's `mint.scopes` is granted by the rules minting the audience
    /// (`no_grantable_scope`).
    GrantNeverHeld,
}

impl RouteMatch {
    /// Whether `self` matches every request `other` matches (on the conditions alone).
    pub fn covers(&self, other: &RouteMatch) -> bool {
        if other.matches_nothing() {
            return true;
        }
        let paths = match (&self.path, &self.path_prefix) {
            (Some(exact), _) if other.path.as_ref() != Some(exact) => false,
            (_, Some(prefix)) => match (&other.path, &other.path_prefix) {
                (Some(exact), _) => is_under_prefix(exact, prefix),
                (None, Some(inner)) => is_under_prefix(inner, prefix),
                (None, None) => false,
            },
            _ => true,
        };
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        let host = match (&self.host, &other.host) {
            (None, _) => true,
            (Some(_), None) => false,
            // A rule without a port takes every port; one with a port takes only that one.
            (Some(mine), Some(theirs)) if mine.contains(':') => mine == theirs,
            (Some(mine), Some(theirs)) => host_matches(mine, theirs),
        };
        let route = match (&self.route, &other.route) {
            (None, _) => true,
            (Some(mine), theirs) => theirs.as_ref() == Some(mine),
        };
        paths && methods && host && route
    }

    /// Whether no request can match: an exact path outside the rule's own prefix.
    pub fn matches_nothing(&self) -> bool {
        match (&self.path, &self.path_prefix) {
            (Some(exact), Some(prefix)) => !is_under_prefix(exact, prefix),
            _ => false,
        }
    }
}

/// The first ceiling of `issuer` that refuses every token under `rule`, in decision order.
fn ceiling_conflict(rule: &ExchangeRule, issuer: &TrustedIssuer) -> Option<CeilingConflict> {
    if ceiling::check_audience(issuer, rule).is_err() {
        return Some(CeilingConflict::AudienceNotAllowed);
    }
    let outside =
        |s: &String| ceiling::check_required_scopes(issuer, std::slice::from_ref(s)).is_err();
    if let Some(scope) = rule.require.scopes.iter().find(|s| outside(s)) {
        return Some(CeilingConflict::RequiredScopeOutside {
            scope: scope.clone(),
        });
    }
    if rule.mint.scopes.iter().all(outside) {
        return Some(CeilingConflict::GrantOutside);
    }
    None
}

/// What the review knows of one rule before judging chained exchange into it.
struct RuleStanding {
    /// Shadowed, or matches nothing: it never applies.
    never_applies: bool,
    /// The issuers it accepts whose ceilings exclude it.
    conflicts: Vec<IssuerConflict>,
    /// How many issuers it accepts.
    accepted: usize,
}

impl RuleStanding {
    /// Whether the ceilings of every accepted issuer exclude the rule.
    fn never_grants(&self) -> bool {
        self.accepted > 0 && self.conflicts.len() == self.accepted
    }
}

impl Policy {
    /// The trusted issuers `rule` accepts, with their index: its `require.issuers`, or with
    /// one trusted issuer (the only case in which a rule may omit it) that one.
    pub fn accepted_issuers<'p>(
        &'p self,
        rule: &'p ExchangeRule,
    ) -> impl Iterator<Item = (usize, &'p TrustedIssuer)> + 'p {
        self.trusted_issuers
            .iter()
            .enumerate()
            .filter(move |(_, t)| {
                rule.require.issuers.is_empty() || rule.require.issuers.contains(&t.issuer)
            })
    }

    /// What a reviewer should know about the rules, in rule order: rules that never apply
    /// (the first earlier rule that covers each), rules whose grant the issuers' ceilings
    /// exclude, and gateway audiences a chained rule can never exchange.
    pub fn rule_findings(&self) -> Vec<RuleFinding> {
        let mut per_rule: Vec<Vec<RuleFinding>> = Vec::new();
        let mut standing: Vec<RuleStanding> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let mut found = Vec::new();
            if rule.matcher.matches_nothing() {
                found.push(RuleFinding::MatchesNothing { rule: i });
            } else if let Some((by, _)) = self
                .rules
                .iter()
                .take(i)
                .enumerate()
                .filter(|(_, e)| !e.matcher.matches_nothing())
                .find(|(_, e)| e.matcher.covers(&rule.matcher))
            {
                found.push(RuleFinding::Shadowed { rule: i, by });
            }
            let never_applies = !found.is_empty();
            let conflicts: Vec<IssuerConflict> = self
                .accepted_issuers(rule)
                .filter_map(|(issuer, t)| {
                    ceiling_conflict(rule, t).map(|why| IssuerConflict { issuer, why })
                })
                .collect();
            let s = RuleStanding {
                never_applies,
                conflicts,
                accepted: self.accepted_issuers(rule).count(),
            };
            // A rule that never applies has its finding; what it would grant is moot.
            if !never_applies {
                if s.never_grants() {
                    found.push(RuleFinding::NeverGrants {
                        rule: i,
                        conflicts: s.conflicts.clone(),
                    });
                } else {
                    found.extend(s.conflicts.iter().map(|c| RuleFinding::IssuerNeverGranted {
                        rule: i,
                        conflict: c.clone(),
                    }));
                }
            }
            per_rule.push(found);
            standing.push(s);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(accept) = &rule.accept_gateway_tokens else {
                continue;
            };
            let Some(s) = standing.get(i) else { continue };
            if s.never_applies || s.never_grants() {
                continue;
            }
            for audience in &accept.audiences {
                if let Some(why) = self.gateway_conflict(rule, s, audience, &standing) {
                    if let Some(found) = per_rule.get_mut(i) {
                        found.push(RuleFinding::GatewayAudienceNeverGranted {
                            rule: i,
                            audience: audience.clone(),
                            why,
                        });
                    }
                }
            }
        }
        per_rule.into_iter().flatten().collect()
    }

    /// Why gateway tokens for `audience` can never be exchanged by `rule`, judged against
    /// the rules that mint them, in the order the decision checks a gateway token.
    fn gateway_conflict(
        &self,
        rule: &ExchangeRule,
        own: &RuleStanding,
        audience: &str,
        standing: &[RuleStanding],
    ) -> Option<GatewayConflict> {
        let minters: Vec<(&ExchangeRule, &RuleStanding)> = self
            .rules
            .iter()
            .zip(standing)
            .filter(|(r, s)| {
                r.mint.audience == audience
                    && r.mode == RuleMode::Enforce
                    && !s.never_applies
                    && !s.never_grants()
            })
            .collect();
        if minters.is_empty() {
            return Some(GatewayConflict::NotMinted);
        }
        // A gateway token's original issuer passed the minting rule's `require.issuers` and
        // ceilings; this rule matches its own against the same original issuer.
        let usable = |r: &ExchangeRule, s: &RuleStanding| -> Vec<usize> {
            self.accepted_issuers(r)
                .map(|(i, _)| i)
                .filter(|i| !s.conflicts.iter().any(|c| c.issuer == *i))
                .collect()
        };
        let mine = usable(rule, own);
        let reachable = minters
            .iter()
            .any(|(r, s)| usable(r, s).iter().any(|i| mine.contains(i)));
        if !reachable {
            return Some(GatewayConflict::IssuersDisjoint);
        }
        let req = &rule.require;
        if !req.callers.is_empty() && !req.callers.iter().any(|c| c == audience) {
            return Some(GatewayConflict::CallerNotAllowed);
        }
        let granted = |scope: &String| minters.iter().any(|(r, _)| r.mint.scopes.contains(scope));
        if let Some(scope) = req.scopes.iter().find(|s| !granted(s)) {
            return Some(GatewayConflict::RequiredScopeNeverHeld {
                scope: scope.clone(),
            });
        }
        let carried = |claim: &str| {
            minters.iter().any(|(r, _)| {
                r.mint.preserve_claims.iter().any(|c| c == claim)
                    || r.mint.add_claims.contains_key(claim)
            })
        };
        let needed = [
            (!req.acr.is_empty(), "acr"),
            (req.max_age_seconds.is_some(), "auth_time"),
            (!req.amr.is_empty(), "amr"),
        ];
        if let Some((_, claim)) = needed.iter().find(|(n, c)| *n && !carried(c)) {
            return Some(GatewayConflict::ClaimNeverCarried { claim });
        }
        if !rule.mint.scopes.iter().any(granted) {
            return Some(GatewayConflict::GrantNeverHeld);
        }
        None
    }
}

impl fmt::Display for CeilingConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CeilingConflict::AudienceNotAllowed => {
                f.write_str("its allowed_audiences exclude the rule's mint.audience")
            }
            CeilingConflict::RequiredScopeOutside { scope } => write!(
                f,
                "the rule requires scope {scope:?}, outside its max_scopes"
            ),
            CeilingConflict::GrantOutside => {
                f.write_str("none of the rule's mint.scopes is within its max_scopes")
            }
        }
    }
}

impl fmt::Display for IssuerConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trusted_issuers[{}]: {}", self.issuer, self.why)
    }
}

impl fmt::Display for GatewayConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConflict::NotMinted => f.write_str(
                "no rule of this policy mints that audience in enforce mode (and can apply)",
            ),
            GatewayConflict::IssuersDisjoint => f.write_str(
                "the rules that mint it exchange tokens only of issuers this rule does not accept (or whose ceilings exclude it)",
            ),
            GatewayConflict::CallerNotAllowed => f.write_str(
                "require.callers does not name it (a gateway token's caller is the audience it was minted for)",
            ),
            GatewayConflict::RequiredScopeNeverHeld { scope } => write!(
                f,
                "the rule requires scope {scope:?}, which the rules that mint it never grant"
            ),
            GatewayConflict::ClaimNeverCarried { claim } => write!(
                f,
                "the rule's requirements read {claim:?}, which the rules that mint it neither preserve nor add"
            ),
            GatewayConflict::GrantNeverHeld => f.write_str(
                "none of the rule's mint.scopes is granted by the rules that mint it",
            ),
        }
    }
}

impl fmt::Display for RuleFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleFinding::Shadowed { rule, by } => write!(
                f,
                "rules[{rule}] is shadowed by rules[{by}]: every request it matches, the earlier rule matches first"
            ),
            RuleFinding::MatchesNothing { rule } => write!(
                f,
                "rules[{rule}] matches no request: its path is outside its path_prefix"
            ),
            RuleFinding::NeverGrants { rule, conflicts } => {
                write!(
                    f,
                    "rules[{rule}] can never mint: the ceilings of every issuer it accepts exclude it ("
                )?;
                for (n, c) in conflicts.iter().enumerate() {
                    if n > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str(")")
            }
            RuleFinding::IssuerNeverGranted { rule, conflict } => write!(
                f,
                "rules[{rule}] never exchanges tokens of trusted_issuers[{}], which it accepts: {}",
                conflict.issuer, conflict.why
            ),
            RuleFinding::GatewayAudienceNeverGranted {
                rule,
                audience,
                why,
            } => write!(
                f,
                "rules[{rule}] never exchanges the gateway tokens for {audience:?} it accepts: {why}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::HttpRequest;
    use crate::core::keyset::KeySnapshot;

    fn m(
        prefix: Option<&str>,
        path: Option<&str>,
        methods: &[&str],
        host: Option<&str>,
    ) -> RouteMatch {
        RouteMatch {
            path_prefix: prefix.map(str::to_owned),
            path: path.map(str::to_owned),
            methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            host: host.map(str::to_owned),
            route: None,
        }
    }

    #[test]
    fn prefixes_cover_what_lies_under_them_by_segment() {
        let orders = m(Some("/orders"), None, &[], None);
        assert!(orders.covers(&m(Some("/orders/admin"), None, &["GET"], None)));
        assert!(orders.covers(&m(Some("/orders/"), None, &[], None)));
        assert!(orders.covers(&m(None, Some("/orders"), &[], None)));
        assert!(!orders.covers(&m(Some("/orders-admin"), None, &[], None)));
        assert!(!orders.covers(&m(None, None, &[], None)));
        // "/orders/" does not take "/orders" itself.
        assert!(!m(Some("/orders/"), None, &[], None).covers(&orders));
        let everything = m(None, None, &[], None);
        assert!(everything.covers(&orders));
        assert!(!m(None, Some("/status"), &[], None).covers(&m(Some("/status"), None, &[], None)));
    }

    #[test]
    fn methods_hosts_and_routes_must_be_at_least_as_wide() {
        let get = m(Some("/a"), None, &["GET", "HEAD"], None);
        assert!(get.covers(&m(Some("/a"), None, &["GET"], None)));
        assert!(!get.covers(&m(Some("/a"), None, &["GET", "POST"], None)));
        assert!(!get.covers(&m(Some("/a"), None, &[], None)));
        let host = m(None, None, &[], Some("api.example.com"));
        assert!(host.covers(&m(None, None, &[], Some("api.example.com:8443"))));
        assert!(!host.covers(&m(None, None, &[], None)));
        let with_port = m(None, None, &[], Some("api.example.com:8443"));
        assert!(!with_port.covers(&host));
        let mut routed = m(None, None, &[], None);
        routed.route = Some("orders".into());
        assert!(!routed.covers(&m(None, None, &[], None)));
        assert!(m(None, None, &[], None).covers(&routed));
    }

    #[test]
    fn a_covering_rule_matches_every_request_of_the_covered_one() {
        // The review agrees with the decision's own matching on concrete requests.
        let wide = m(
            Some("/orders"),
            None,
            &["GET", "POST"],
            Some("api.example.com"),
        );
        let narrow = m(
            Some("/orders/1"),
            None,
            &["GET"],
            Some("api.example.com:443"),
        );
        assert!(wide.covers(&narrow));
        for path in ["/orders/1", "/orders/1/items"] {
            let req = HttpRequest {
                method: "GET",
                path,
                host: Some("API.example.com:443"),
                ..Default::default()
            };
            assert!(narrow.matches(&req, path));
            assert!(wide.matches(&req, path));
        }
    }

    #[test]
    fn an_exact_path_outside_its_prefix_matches_nothing() {
        let dead = m(Some("/a"), Some("/b"), &[], None);
        assert!(dead.matches_nothing());
        assert!(!m(Some("/a"), Some("/a/b"), &[], None).matches_nothing());
        let req = HttpRequest {
            method: "GET",
            path: "/b",
            ..Default::default()
        };
        assert!(!dead.matches(&req, "/b"));
    }

    // ---- ceilings and chained exchange ------------------------------------------------

    use crate::core::entropy::{Entropy, EntropyError};
    use crate::core::signing::SigningKey;
    use crate::core::token::b64url_encode;
    use serde_json::{json, Value};
    use std::time::Duration;

    /// The example gateway key (public **example** key of `filter-config/examples`); the test
    /// issuers verify with its public half, so tokens signed with it are theirs.
    const X: &str = "6-GT6RtF_l8YuzeeGs_7PgCSPFxDbFbjS5G1pGg0QTw";
    const D: &str = "TgI_s5Sqf9UZtFfuPwt8XH4v6-I9PQquX7v9fg9YrcU";
    const IDP: &str = "https://idp.test";
    const PARTNER: &str = "https://partner.test";
    const NOW: u64 = 1_767_225_600;

    fn issuer(iss: &str, extra: Value) -> Value {
        let mut t = json!({
            "issuer": iss,
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": X}]},
            "algorithms": ["EdDSA"],
            "audiences": ["api"],
        });
        if let (Some(t), Value::Object(extra)) = (t.as_object_mut(), extra) {
            t.extend(extra);
        }
        t
    }

    /// The partner: at most `orders:read shipments:read`, only for the orders, billing and
    /// shipments services.
    fn partner() -> Value {
        issuer(
            PARTNER,
            json!({"max_scopes": ["orders:read", "shipments:read"],
                   "allowed_audiences": ["orders-service", "billing-service", "shipments-service"]}),
        )
    }

    fn rule(name: &str, prefix: &str, issuers: &[&str], audience: &str, scopes: &[&str]) -> Value {
        json!({"name": name, "match": {"path_prefix": prefix}, "require": {"issuers": issuers},
               "mint": {"audience": audience, "scopes": scopes}})
    }

    fn policy(issuers: Vec<Value>, rules: Vec<Value>) -> Policy {
        let doc = json!({
            "issuer": "https://gw.test",
            "signing_keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "gw", "x": X, "d": D}],
            "trusted_issuers": issuers,
            "rules": rules,
        });
        Policy::from_json(doc.to_string().as_bytes()).unwrap()
    }

    fn both() -> Vec<Value> {
        vec![issuer(IDP, json!({})), partner()]
    }

    struct Zero;
    impl Entropy for Zero {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
            buf.fill(0);
            Ok(())
        }
    }

    /// A token of `iss` holding every scope the policy names, for caller `app`.
    fn token(iss: &str, scopes: &str) -> String {
        let key = SigningKey::from_jwk(
            &json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": X, "d": D}),
            false,
        )
        .unwrap();
        let header = b64url_encode(br#"{"alg":"EdDSA","kid":"k","typ":"JWT"}"#);
        let claims = json!({"iss": iss, "sub": "alice", "aud": "api", "azp": "app",
                            "scope": scopes, "iat": NOW, "exp": NOW + 600});
        let input = format!("{header}.{}", b64url_encode(claims.to_string().as_bytes()));
        let sig = key.sign(input.as_bytes(), &mut Zero).unwrap();
        format!("{input}.{}", b64url_encode(&sig))
    }

    /// What the filter decides for `path` with `token`.
    fn reason(p: &Policy, path: &str, token: &str) -> &'static str {
        let auth = format!("Bearer {token}");
        let req = HttpRequest {
            method: "GET",
            path,
            authorization: vec![&auth],
            ..Default::default()
        };
        p.decide(
            &req,
            &KeySnapshot::new(),
            Duration::from_secs(NOW),
            &mut Zero,
        )
        .audit
        .reason
    }

    const ALL: &str = "orders:read orders:write shipments:read shipments:write payouts:write";

    #[test]
    fn a_ceiling_that_excludes_one_accepted_issuer_is_named() {
        let p = policy(
            both(),
            vec![
                rule(
                    "write",
                    "/w",
                    &[IDP, PARTNER],
                    "orders-service",
                    &["orders:write"],
                ),
                rule(
                    "payouts",
                    "/p",
                    &[IDP, PARTNER],
                    "payouts-service",
                    &["payouts:write"],
                ),
                rule(
                    "fine",
                    "/f",
                    &[IDP, PARTNER],
                    "orders-service",
                    &["orders:read", "orders:write"],
                ),
            ],
        );
        let partner = |why| IssuerConflict { issuer: 1, why };
        assert_eq!(
            p.rule_findings(),
            [
                RuleFinding::IssuerNeverGranted {
                    rule: 0,
                    conflict: partner(CeilingConflict::GrantOutside)
                },
                RuleFinding::IssuerNeverGranted {
                    rule: 1,
                    conflict: partner(CeilingConflict::AudienceNotAllowed)
                },
            ]
        );
        // The filter agrees: the partner's tokens are refused there, whatever they hold; the
        // internal issuer's are exchanged.
        assert_eq!(
            reason(&p, "/w", &token(PARTNER, ALL)),
            "issuer_scope_ceiling"
        );
        assert_eq!(
            reason(&p, "/p", &token(PARTNER, ALL)),
            "issuer_audience_not_allowed"
        );
        assert_eq!(reason(&p, "/f", &token(PARTNER, ALL)), "exchanged");
        assert_eq!(reason(&p, "/w", &token(IDP, ALL)), "exchanged");
        assert_eq!(
            p.rule_findings()[1].to_string(),
            "rules[1] never exchanges tokens of trusted_issuers[1], which it accepts: its allowed_audiences exclude the rule's mint.audience"
        );
    }

    #[test]
    fn a_rule_every_accepted_issuer_excludes_never_grants() {
        let mut required = rule(
            "required",
            "/r",
            &[PARTNER],
            "orders-service",
            &["orders:read"],
        );
        required["require"]["scopes"] = json!(["orders:read", "orders:write"]);
        let p = policy(
            both(),
            vec![
                rule(
                    "audience",
                    "/a",
                    &[PARTNER],
                    "payouts-service",
                    &["orders:read"],
                ),
                required,
                rule(
                    "grant",
                    "/g",
                    &[PARTNER],
                    "orders-service",
                    &["orders:write"],
                ),
            ],
        );
        let never = |rule, why| RuleFinding::NeverGrants {
            rule,
            conflicts: vec![IssuerConflict { issuer: 1, why }],
        };
        assert_eq!(
            p.rule_findings(),
            [
                never(0, CeilingConflict::AudienceNotAllowed),
                never(
                    1,
                    CeilingConflict::RequiredScopeOutside {
                        scope: "orders:write".into()
                    }
                ),
                never(2, CeilingConflict::GrantOutside),
            ]
        );
        for path in ["/a", "/r", "/g"] {
            assert_ne!(
                reason(&p, path, &token(PARTNER, ALL)),
                "exchanged",
                "{path}"
            );
        }
        assert_eq!(
            p.rule_findings()[1].to_string(),
            "rules[1] can never mint: the ceilings of every issuer it accepts exclude it (trusted_issuers[1]: the rule requires scope \"orders:write\", outside its max_scopes)"
        );
        // One trusted issuer, implied by every rule, is judged the same way.
        let p = policy(
            vec![partner()],
            vec![json!({"name": "only", "match": {}, "mint": {"audience": "x", "scopes": ["a"]}})],
        );
        assert_eq!(
            p.rule_findings(),
            [RuleFinding::NeverGrants {
                rule: 0,
                conflicts: vec![IssuerConflict {
                    issuer: 0,
                    why: CeilingConflict::AudienceNotAllowed
                }]
            }]
        );
        assert_eq!(p.accepted_issuers(&p.rules[0]).count(), 1);
    }

    /// `shipments` mints `shipments-service` tokens for both issuers; `billing` takes them.
    fn chain(billing: Value, extra: Vec<Value>) -> Policy {
        let mut rules = vec![rule(
            "shipments",
            "/shipments",
            &[IDP, PARTNER],
            "shipments-service",
            &["shipments:read", "shipments:write"],
        )];
        rules.extend(extra);
        let mut b = billing;
        b["accept_gateway_tokens"] = json!({"audiences": ["shipments-service"]});
        rules.push(b);
        policy(both(), rules)
    }

    fn billing(issuers: &[&str], scopes: &[&str]) -> Value {
        rule("billing", "/billing", issuers, "billing-service", scopes)
    }

    fn gateway(p: &Policy) -> Vec<GatewayConflict> {
        p.rule_findings()
            .into_iter()
            .filter_map(|f| match f {
                RuleFinding::GatewayAudienceNeverGranted { why, .. } => Some(why),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chained_rules_are_judged_by_what_the_gateways_tokens_can_hold() {
        let p = chain(billing(&[IDP, PARTNER], &["shipments:read"]), vec![]);
        assert_eq!(p.rule_findings(), []);
        // No rule mints the audience in enforce mode.
        let mut shadow = chain(billing(&[IDP], &["shipments:read"]), vec![]);
        assert_eq!(gateway(&shadow), []);
        shadow.rules[0].mode = RuleMode::Shadow;
        assert_eq!(gateway(&shadow), [GatewayConflict::NotMinted]);
        // The minting rule's only issuer is one billing does not accept.
        let mut disjoint = chain(billing(&[PARTNER], &["shipments:read"]), vec![]);
        disjoint.rules[0].require.issuers = vec![IDP.into()];
        assert_eq!(gateway(&disjoint), [GatewayConflict::IssuersDisjoint]);
        // A caller list without the audience (the caller of a gateway token).
        let mut callers = billing(&[IDP], &["shipments:read"]);
        callers["require"]["callers"] = json!(["orders-service"]);
        assert_eq!(
            gateway(&chain(callers, vec![])),
            [GatewayConflict::CallerNotAllowed]
        );
        // Requirements the minted tokens never meet.
        let mut scopes = billing(&[IDP], &["shipments:read"]);
        scopes["require"]["scopes"] = json!(["billing:read"]);
        assert_eq!(
            gateway(&chain(scopes, vec![])),
            [GatewayConflict::RequiredScopeNeverHeld {
                scope: "billing:read".into()
            }]
        );
        let mut step_up = billing(&[IDP], &["shipments:read"]);
        step_up["require"]["max_age_seconds"] = json!(300);
        assert_eq!(
            gateway(&chain(step_up.clone(), vec![])),
            [GatewayConflict::ClaimNeverCarried { claim: "auth_time" }]
        );
        let mut keeps = chain(step_up, vec![]);
        keeps.rules[0].mint.preserve_claims = vec!["auth_time".into()];
        assert_eq!(gateway(&keeps), []);
        // A grant the minted tokens never hold.
        assert_eq!(
            gateway(&chain(billing(&[IDP], &["billing:write"]), vec![])),
            [GatewayConflict::GrantNeverHeld]
        );
        // A second minting rule that grants it clears the finding.
        assert_eq!(
            gateway(&chain(
                billing(&[IDP], &["billing:write"]),
                vec![rule(
                    "more",
                    "/more",
                    &[IDP],
                    "shipments-service",
                    &["billing:write"]
                )]
            )),
            []
        );
    }

    /// The edge exchange of an internal token at `/shipments`, then the minted token
    /// presented at `/billing`: the hop's reason.
    fn hop(p: &Policy) -> &'static str {
        let auth = format!("Bearer {}", token(IDP, ALL));
        let edge = HttpRequest {
            method: "GET",
            path: "/shipments/1",
            authorization: vec![&auth],
            ..Default::default()
        };
        let d = p.decide(
            &edge,
            &KeySnapshot::new(),
            Duration::from_secs(NOW),
            &mut Zero,
        );
        let crate::core::Verdict::Forward { authorization, .. } = d.verdict else {
            panic!("{:?}", d.audit);
        };
        reason(p, "/billing/1", authorization.trim_start_matches("Bearer "))
    }

    #[test]
    fn a_gateway_finding_agrees_with_the_decision() {
        let p = chain(billing(&[IDP, PARTNER], &["shipments:read"]), vec![]);
        assert_eq!(hop(&p), "exchanged");
        let p = chain(billing(&[IDP], &["billing:write"]), vec![]);
        assert_eq!(
            p.rule_findings()[0].to_string(),
            "rules[1] never exchanges the gateway tokens for \"shipments-service\" it accepts: none of the rule's mint.scopes is granted by the rules that mint it"
        );
        assert_eq!(hop(&p), "no_grantable_scope");
        let mut disjoint = chain(billing(&[PARTNER], &["shipments:read"]), vec![]);
        disjoint.rules[0].require.issuers = vec![IDP.into()];
        assert_eq!(hop(&disjoint), "issuer_not_allowed");
        let mut callers = chain(billing(&[IDP], &["shipments:read"]), vec![]);
        callers.rules[1].require.callers = vec!["orders-service".into()];
        assert_eq!(hop(&callers), "caller_not_allowed");
        let mut scopes = chain(billing(&[IDP], &["shipments:read"]), vec![]);
        scopes.rules[1].require.scopes = vec!["billing:read".into()];
        assert_eq!(hop(&scopes), "insufficient_scope");
        let mut acr = chain(billing(&[IDP], &["shipments:read"]), vec![]);
        acr.rules[1].require.acr = vec!["urn:mfa".into()];
        assert_eq!(
            gateway(&acr),
            [GatewayConflict::ClaimNeverCarried { claim: "acr" }]
        );
        assert_eq!(hop(&acr), "acr_not_satisfied");
        // A rule that never applies is not judged on its grant.
        let p = chain(
            billing(&[IDP], &["billing:write"]),
            vec![rule("early", "/billing", &[IDP], "ledger", &["x"])],
        );
        assert_eq!(
            p.rule_findings(),
            [RuleFinding::Shadowed { rule: 2, by: 1 }]
        );
    }
}
