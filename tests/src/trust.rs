//! The trust-boundary fixture (issue 11) shared by the native, harness and Envoy suites: an
//! internal issuer, a partner with ceilings and an overdue review, an expired issuer, and
//! rules for chained exchange, step-up and shadow mode, with revocation lists.
//!
//! Dates are relative to the `now` the policy is built for, so the Envoy suite (real clock)
//! and the fixed-clock suites see the same lifecycle.

use serde_json::{json, Value};
use token_exchange_filter::core::date::{format_utc_timestamp, UtcDate, DAY_SECONDS};

use crate::{b64, Gateway, Issuer};

/// The internal identity provider.
pub const IDP: &str = "https://idp.test";
/// A partner: ceilings `max_scopes` and `allowed_audiences`, review overdue.
pub const PARTNER: &str = "https://partner.test";
/// An issuer whose trust ended yesterday.
pub const RETIRED: &str = "https://retired.test";

/// The partner's scope ceiling.
pub const PARTNER_MAX_SCOPES: &[&str] = &["orders:read", "shipments:read"];
/// The audiences the partner's tokens may be exchanged for.
pub const PARTNER_AUDIENCES: &[&str] = &["orders-service", "billing-service", "shipments-service"];
/// A revoked `jti` and a revoked `sub`.
pub const REVOKED_JTI: &str = "revoked-jti";
pub const REVOKED_SUB: &str = "mallory";
/// The step-up rule's `acr` values and `max_age_seconds`.
pub const STEP_UP_ACR: &[&str] = &["urn:mfa", "urn:hwk"];
pub const STEP_UP_MAX_AGE: u64 = 300;
/// How long before `now` the internal issuer's `revoked_before` lies.
pub const REVOKED_BEFORE_AGO: u64 = 3600;

/// The gateway and the three issuers.
pub struct Trust {
    pub gw: Gateway,
    pub idp: Issuer,
    pub partner: Issuer,
    pub retired: Issuer,
}

impl Default for Trust {
    fn default() -> Self {
        Trust::new()
    }
}

/// A rule on `path_prefix` minting `audience` with `scopes`, accepting `issuers`.
pub fn rule(name: &str, path: &str, issuers: &[&str], audience: &str, scopes: &[&str]) -> Value {
    json!({
        "name": name,
        "match": { "path_prefix": path },
        "require": { "issuers": issuers },
        "mint": { "audience": audience, "scopes": scopes, "ttl_seconds": 120 }
    })
}

/// `rule` taking the gateway's own tokens minted for `audiences`.
pub fn chained(mut rule: Value, audiences: &[&str]) -> Value {
    rule["accept_gateway_tokens"] = json!({ "audiences": audiences });
    rule
}

impl Trust {
    pub fn new() -> Trust {
        Trust {
            gw: Gateway::new(),
            idp: Issuer::ed25519(IDP, "k1", 7),
            partner: Issuer::ed25519(PARTNER, "p1", 12),
            retired: Issuer::ed25519(RETIRED, "r1", 13),
        }
    }

    /// The policy at `now`:
    ///
    /// - `orders` (`/orders`): edge rule for all three issuers, requires `orders:read`,
    ///   grants `orders:read orders:write` to `orders-service`;
    /// - `partner-write` (`/partner-write`): the partner only, grants `orders:write` (outside
    ///   its ceiling);
    /// - `shipments` (`/shipments`): requires `shipments:write` (outside the partner's
    ///   ceiling);
    /// - `internal` (`/internal`): mints `internal-service` (not a partner audience);
    /// - `billing` (`/billing`): takes gateway tokens for `orders-service`, mints
    ///   `billing-service` (`orders:read billing:read`);
    /// - `ledger` (`/ledger`): takes tokens for `billing-service`, default depth 2;
    /// - `deep-ledger` (`/deep-ledger`): the same with `max_chain_depth: 3`;
    /// - `loop` (`/loop`): takes tokens for `billing-service`, mints `orders-service` again
    ///   (depth 3);
    /// - `admin` (`/admin`): step-up, `acr` one of [`STEP_UP_ACR`] and `max_age_seconds`
    ///   [`STEP_UP_MAX_AGE`];
    /// - `reports` (`/reports`): shadow mode, requires `reports:read`.
    ///
    /// The internal issuer has `revoked_before` an hour before `now` and a review in 30
    /// days; the partner's review was due yesterday; the retired issuer expired yesterday.
    /// `revoked` lists [`REVOKED_JTI`] and [`REVOKED_SUB`]; `strip_headers` is
    /// `x-forwarded-user` and `x-auth-request-*`.
    pub fn policy(&self, now: u64) -> Value {
        let day = |days_after: i64| {
            let secs = now.saturating_add_signed(days_after * DAY_SECONDS as i64);
            UtcDate::of(secs).to_string()
        };
        let mut idp = self.idp.trusted(&["api"]);
        idp["review_by"] = json!(day(30));
        idp["revoked_before"] = json!(format_utc_timestamp(now - REVOKED_BEFORE_AGO));
        let mut partner = self.partner.trusted(&["api"]);
        partner["max_scopes"] = json!(PARTNER_MAX_SCOPES);
        partner["allowed_audiences"] = json!(PARTNER_AUDIENCES);
        partner["review_by"] = json!(day(-1));
        let mut retired = self.retired.trusted(&["api"]);
        retired["expires"] = json!(day(-1));
        let edge = [IDP, PARTNER, RETIRED];
        let both = [IDP, PARTNER];
        let mut orders = rule(
            "orders",
            "/orders",
            &edge,
            "orders-service",
            &["orders:read", "orders:write"],
        );
        orders["require"]["scopes"] = json!(["orders:read"]);
        let mut shipments = rule(
            "shipments",
            "/shipments",
            &both,
            "shipments-service",
            &["shipments:read", "shipments:write"],
        );
        shipments["require"]["scopes"] = json!(["shipments:write"]);
        let mut deep = chained(
            rule(
                "deep-ledger",
                "/deep-ledger",
                &both,
                "ledger-service",
                &["orders:read"],
            ),
            &["billing-service"],
        );
        deep["max_chain_depth"] = json!(3);
        // Deep enough for a third exchange: only the cycle stops it.
        let mut looping = chained(
            rule("loop", "/loop", &both, "orders-service", &["orders:read"]),
            &["billing-service"],
        );
        looping["max_chain_depth"] = json!(3);
        let mut admin = rule("admin", "/admin", &[IDP], "admin-service", &["admin"]);
        admin["require"]["acr"] = json!(STEP_UP_ACR);
        admin["require"]["max_age_seconds"] = json!(STEP_UP_MAX_AGE);
        let mut reports = rule(
            "reports",
            "/reports",
            &[IDP],
            "reports-service",
            &["reports:read"],
        );
        reports["require"]["scopes"] = json!(["reports:read"]);
        reports["mode"] = json!("shadow");
        json!({
            "issuer": self.gw.iss,
            "signing_keys": [self.gw.private_jwk()],
            "trusted_issuers": [idp, partner, retired],
            "clock_skew_seconds": 30,
            "rules": [
                orders,
                rule("partner-write", "/partner-write", &[PARTNER], "orders-service", &["orders:write"]),
                shipments,
                rule("internal", "/internal", &both, "internal-service", &["orders:read"]),
                chained(
                    rule("billing", "/billing", &both, "billing-service", &["orders:read", "billing:read"]),
                    &["orders-service"],
                ),
                chained(
                    rule("ledger", "/ledger", &both, "ledger-service", &["orders:read"]),
                    &["billing-service"],
                ),
                deep,
                looping,
                admin,
                reports,
            ],
            "revoked": { "jti": [REVOKED_JTI], "sub": [REVOKED_SUB] },
            "strip_headers": ["x-forwarded-user", "x-auth-request-*"],
        })
    }

    /// Valid claims of `issuer` at `now` (see [`Issuer::claims`]) with an `auth_time` a
    /// minute before, a unique `jti` and these scopes.
    pub fn claims(&self, issuer: &Issuer, now: u64, scope: &str, jti: &str) -> Value {
        let mut c = issuer.claims(now, scope);
        c["auth_time"] = json!(now - 60);
        c["jti"] = json!(jti);
        c
    }
}

impl Issuer {
    /// The private JWK (Ed25519 issuers only), for signing with an independent library.
    pub fn private_ed25519_jwk(&self) -> Value {
        let crate::IssuerKey::Ed25519(kp) = &self.key else {
            panic!("private_ed25519_jwk needs an Ed25519 issuer")
        };
        let mut jwk = self.public_jwk();
        jwk["d"] = json!(b64(kp.sk.seed().as_ref()));
        jwk
    }
}
