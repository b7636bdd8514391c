//! Identity providers as a gateway meets them: each provider's JWK Set and access tokens in
//! the shape its documentation gives, built from keys generated here (no real provider
//! material). The README's claim-mapping presets are the `claims` of these fixtures, so the
//! suites check the presets themselves.
//!
//! Shapes, from the providers' documentation:
//! - Keycloak (Server Administration Guide, "Service accounts"; the realm's
//!   `protocol/openid-connect/certs`): an `RS256` key with `use: sig` beside an `RSA-OAEP`
//!   key with `use: enc`, both with `x5c`, `x5t`, `x5t#S256`; tokens carry `azp`, a `scope`
//!   string and `typ: Bearer`; client-credentials tokens add `client_id` and a
//!   `service-account-…` `preferred_username`.
//! - Okta (OpenID Connect & OAuth 2.0 API, access token payload): `RS256` keys with `alg` and
//!   `use`; tokens carry `cid`, `uid` (users only), `scp` as an array, `ver: 1`, `jti: AT.…`.
//! - Microsoft Entra ID (access token claims reference; `discovery/v2.0/keys`): keys without
//!   `alg`, with `x5t`, `x5c` and `issuer`; v1 tokens carry `appid`, v2 tokens `azp`;
//!   delegated tokens carry `scp` (a string), app-only tokens `roles` (an array) and no `scp`.
//! - Auth0 (access token profiles; "Enable role-based access control for APIs"): `RS256` keys
//!   with `x5t` and `x5c`; tokens carry `azp` and a `scope` string, `permissions` when the API
//!   adds them (RBAC), machine tokens `gty: client-credentials` and `sub: <client>@clients`.
//! - Google (OpenID Connect reference; `oauth2/v3/certs`): several RSA keys, not all with
//!   `alg`; ID tokens (users, and service accounts from the metadata server) carry `azp`,
//!   `email`, and no scope claim at all.
//!
//! The `x5c` members hold an opaque blob in certificate position, not a certificate: the
//! filter never parses, trusts or fetches `x5c`, and a blob proves it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::{b64, rsa_key, Gateway, Issuer};

/// One provider: its issuer (signing with one key of its set), the set, and token shapes.
pub struct Provider {
    /// Short name (also the path segment the test policies route on).
    pub name: &'static str,
    /// The issuer signing tokens; its key is one key of `jwks`.
    pub issuer: Issuer,
    /// The whole key set, as the provider publishes it.
    pub jwks: Value,
    /// How many keys of `jwks` the filter skips (and warns about).
    pub skipped_keys: usize,
    /// The README preset (`trusted_issuers[].claims`), if the defaults do not fit.
    pub claims: Option<Value>,
    /// The audience its tokens are issued for (the API's identifier at the provider).
    pub audience: &'static str,
    /// Another audience the gateway accepts for it (Google ID tokens name the client).
    pub other_audience: Option<&'static str>,
    /// A user token's caller and the permission (scope) it carries.
    pub user: Caller,
    /// A machine (client-credentials) token's caller and permission.
    pub machine: Caller,
    /// Token claims: `kind` is "user" or "machine".
    shape: fn(&Provider, &str, u64) -> Value,
}

/// Who calls, and what permission its token carries (`None`: the provider issues none).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The caller (client id) the provider writes into the token.
    pub client: &'static str,
    /// The permission the token carries, if the provider's tokens carry any.
    pub scope: Option<&'static str>,
}

impl Provider {
    /// The `trusted_issuers[]` entry: the verbatim set, RS256 pinned, the preset mapping.
    pub fn trusted(&self) -> Value {
        let mut t = json!({
            "issuer": self.issuer.iss,
            "jwks": self.jwks,
            "algorithms": ["RS256"],
            "audiences": [self.audience],
        });
        if let Some(a) = self.other_audience {
            t["audiences"] = json!([self.audience, a]);
        }
        if let Some(c) = &self.claims {
            t["claims"] = c.clone();
        }
        t
    }

    /// The claims of a user token at `now`.
    pub fn user_claims(&self, now: u64) -> Value {
        (self.shape)(self, "user", now)
    }

    /// The claims of a machine (client-credentials) token at `now`.
    pub fn machine_claims(&self, now: u64) -> Value {
        (self.shape)(self, "machine", now)
    }

    /// A signed token with the provider's header shape.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = json!({ "alg": "RS256", "kid": self.issuer.kid, "typ": "JWT" });
        if self.name.starts_with("entra-v1") {
            // v1 access tokens repeat the thumbprint as x5t.
            header["x5t"] = json!(self.issuer.kid);
        }
        if self.name == "okta" || self.name == "google" {
            header.as_object_mut().unwrap().remove("typ");
        }
        self.issuer
            .sign_raw(&header.to_string(), &claims.to_string())
    }

    /// An exchange rule for this provider: `/<name>/orders`, its issuer only, its callers,
    /// granting the permissions its tokens carry.
    pub fn rule(&self) -> Value {
        let mut grant: Vec<&str> = [self.user.scope, self.machine.scope]
            .into_iter()
            .flatten()
            .collect();
        grant.dedup();
        if grant.is_empty() {
            // Google's tokens carry no scope; the rule still needs a grant.
            grant.push("orders:read");
        }
        json!({
            "name": format!("{}-orders", self.name),
            "match": { "path_prefix": format!("/{}/orders", self.name) },
            "require": {
                "issuers": [self.issuer.iss],
                "callers": [self.user.client, self.machine.client],
            },
            "mint": { "audience": "orders-service", "scopes": grant, "ttl_seconds": 60 },
        })
    }
}

/// An RSA public JWK of `key` with these extra members (in provider order).
fn rsa_jwk(seed: u64, members: Value) -> Value {
    use rsa::traits::PublicKeyParts;
    let k = rsa_key(seed);
    let mut jwk = members;
    jwk["kty"] = json!("RSA");
    jwk["n"] = json!(b64(&k.n().to_bytes_be()));
    jwk["e"] = json!(b64(&k.e().to_bytes_be()));
    jwk
}

/// Certificate-position members: an opaque blob (standard base64, as in `x5c`) and
/// thumbprint-shaped values. Never a real certificate (see the module docs).
fn cert_members(seed: u64) -> (Value, String, String) {
    let blob: Vec<u8> =
        format!("opaque x5c stand-in {seed}: never parsed by the filter").into_bytes();
    let x5c = json!([STANDARD.encode(&blob)]);
    let x5t = b64(&seed.to_be_bytes().repeat(3)[..20]);
    let x5t256 = b64(&seed.to_le_bytes().repeat(4));
    (x5c, x5t, x5t256)
}

/// Keycloak: realm `shop`, an `RSA-OAEP` encryption key listed first, then the RS256 key.
pub fn keycloak() -> Provider {
    let iss = "https://keycloak.example/realms/shop";
    let (enc_x5c, enc_x5t, enc_s256) = cert_members(101);
    let (sig_x5c, sig_x5t, sig_s256) = cert_members(102);
    let sig_kid = "vW0vxVN8OIjC3Q1b9iPFjUbqGHd6O8c5bNXrGkPpmbI";
    let jwks = json!({ "keys": [
        rsa_jwk(101, json!({
            "kid": "Zc1jd1uBbSwIN8vBf0HDVPbjPzPA4tKd7vVFf9DCRAc", "alg": "RSA-OAEP", "use": "enc",
            "x5c": enc_x5c, "x5t": enc_x5t, "x5t#S256": enc_s256,
        })),
        rsa_jwk(102, json!({
            "kid": sig_kid, "alg": "RS256", "use": "sig",
            "x5c": sig_x5c, "x5t": sig_x5t, "x5t#S256": sig_s256,
        })),
    ]});
    Provider {
        name: "keycloak",
        issuer: Issuer::rs256_seeded(iss, sig_kid, 102),
        jwks,
        skipped_keys: 1,
        claims: None,
        audience: "orders-api",
        other_audience: None,
        user: Caller {
            client: "shop-web",
            scope: Some("orders:read"),
        },
        machine: Caller {
            client: "billing-job",
            scope: Some("orders:read"),
        },
        shape: |p, kind, now| {
            let mut c = json!({
                "exp": now + 300, "iat": now, "jti": format!("onrtac:{kind}-4b7a-9c3e"),
                "iss": p.issuer.iss, "aud": [p.audience, "account"], "typ": "Bearer",
                "sid": "7f3d2c1e", "acr": "1", "allowed-origins": ["https://shop.example"],
                "realm_access": { "roles": ["default-roles-shop", "offline_access"] },
                "resource_access": { "account": { "roles": ["manage-account"] } },
                "email_verified": false,
            });
            if kind == "user" {
                c["sub"] = json!("4c3b2a19-0d8e-4f6a-9b7c-5e4d3c2b1a09");
                c["azp"] = json!(p.user.client);
                c["scope"] = json!("openid email profile orders:read");
                c["preferred_username"] = json!("alice");
            } else {
                c["sub"] = json!("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d");
                c["azp"] = json!(p.machine.client);
                c["client_id"] = json!(p.machine.client);
                c["scope"] = json!("email profile orders:read");
                c["clientHost"] = json!("10.0.0.7");
                c["preferred_username"] = json!(format!("service-account-{}", p.machine.client));
            }
            c
        },
    }
}

/// Okta: a custom authorization server (`/oauth2/default`), two RS256 keys (rotation).
pub fn okta() -> Provider {
    let iss = "https://example.okta.com/oauth2/default";
    let kid = "ZkvelLN_seik7w4pc_prCcfUf-h2hFfiwkDeCrs0iUc";
    let jwks = json!({ "keys": [
        rsa_jwk(201, json!({ "alg": "RS256", "kid": kid, "use": "sig" })),
        rsa_jwk(202, json!({ "alg": "RS256", "kid": "fAomAvsWyAWDlnBuJbHoqqCRcRdmsg4vri0OICxbIgs", "use": "sig" })),
    ]});
    Provider {
        name: "okta",
        issuer: Issuer::rs256_seeded(iss, kid, 201),
        jwks,
        skipped_keys: 0,
        claims: Some(json!({ "caller": ["cid"], "scopes": ["scp"] })),
        audience: "api://default",
        other_audience: None,
        user: Caller {
            client: "0oa1web2app3okta4x5",
            scope: Some("orders:read"),
        },
        machine: Caller {
            client: "0oa9svc8batch7okta6",
            scope: Some("orders:read"),
        },
        shape: |p, kind, now| {
            let mut c = json!({
                "ver": 1, "jti": format!("AT.{kind}MNAoEQ_jbKqoinrQo1D0XKjMX28U5d7Zsz"),
                "iss": p.issuer.iss, "aud": p.audience, "iat": now, "exp": now + 3600,
            });
            if kind == "user" {
                c["cid"] = json!(p.user.client);
                c["uid"] = json!("00u1a2b3c4d5e6f7g8h9");
                c["scp"] = json!(["openid", "profile", "orders:read"]);
                c["auth_time"] = json!(now - 60);
                c["sub"] = json!("alice@example.com");
            } else {
                c["cid"] = json!(p.machine.client);
                c["scp"] = json!(["orders:read"]);
                c["sub"] = json!(p.machine.client);
            }
            c
        },
    }
}

/// The key set every Entra ID endpoint serves: no `alg`, `x5t`, `x5c`, `issuer`.
fn entra_jwks(tenant_issuer: &str) -> (Value, String) {
    let mut keys = Vec::new();
    let mut first_kid = String::new();
    for seed in [301u64, 302, 303] {
        let (x5c, x5t, _) = cert_members(seed);
        if first_kid.is_empty() {
            first_kid = x5t.clone();
        }
        let mut jwk = rsa_jwk(seed, json!({ "use": "sig", "kid": x5t, "x5t": x5t }));
        jwk["x5c"] = x5c;
        jwk["issuer"] = json!(tenant_issuer);
        keys.push(jwk);
    }
    (json!({ "keys": keys }), first_kid)
}

const ENTRA_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// Microsoft Entra ID, v1.0 access tokens: `appid`, `scp` (delegated) or `roles` (app-only).
pub fn entra_v1() -> Provider {
    let iss = format!("https://sts.windows.net/{ENTRA_TENANT}/");
    let (jwks, kid) = entra_jwks(&format!(
        "https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0"
    ));
    Provider {
        name: "entra-v1",
        issuer: Issuer::rs256_seeded(&iss, &kid, 301),
        jwks,
        skipped_keys: 0,
        claims: Some(json!({ "caller": ["appid"], "scopes": ["scp", "roles"] })),
        audience: "api://orders",
        other_audience: None,
        user: Caller {
            client: "1950a258-227b-4e31-a9cf-717495945fc2",
            scope: Some("Orders.Read"),
        },
        machine: Caller {
            client: "a1b2c3d4-0000-4000-8000-00000000e1a1",
            scope: Some("Orders.Read.All"),
        },
        shape: |p, kind, now| entra_claims(p, kind, now, "1.0"),
    }
}

/// Microsoft Entra ID, v2.0 access tokens: `azp`, `scp` (delegated) or `roles` (app-only).
pub fn entra_v2() -> Provider {
    let iss = format!("https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0");
    let (jwks, kid) = entra_jwks(&iss);
    Provider {
        name: "entra-v2",
        issuer: Issuer::rs256_seeded(&iss, &kid, 301),
        jwks,
        skipped_keys: 0,
        claims: Some(json!({ "caller": ["azp"], "scopes": ["scp", "roles"] })),
        audience: "6e74172b-be56-4843-9ff4-e66a39bb12e3",
        other_audience: None,
        user: Caller {
            client: "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
            scope: Some("Orders.Read"),
        },
        machine: Caller {
            client: "a1b2c3d4-0000-4000-8000-00000000e2a2",
            scope: Some("Orders.Read.All"),
        },
        shape: |p, kind, now| entra_claims(p, kind, now, "2.0"),
    }
}

fn entra_claims(p: &Provider, kind: &str, now: u64, ver: &str) -> Value {
    let v1 = ver == "1.0";
    let caller = if kind == "user" {
        p.user.client
    } else {
        p.machine.client
    };
    let mut c = json!({
        "aud": p.audience, "iss": p.issuer.iss, "iat": now, "nbf": now, "exp": now + 3900,
        "aio": "E2ZgYDg5uPl7bz3+Kzd3AA==", "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR0.",
        "tid": ENTRA_TENANT, "uti": format!("{kind}-AbCdEf"), "ver": ver,
        "oid": "f3c1e0d2-7b6a-4c5d-9e8f-0a1b2c3d4e5f",
    });
    c[if v1 { "appid" } else { "azp" }] = json!(caller);
    c[if v1 { "appidacr" } else { "azpacr" }] = json!(if kind == "user" { "0" } else { "1" });
    if kind == "user" {
        c["scp"] = json!(format!("{} User.Read", p.user.scope.unwrap_or_default()));
        c["sub"] = json!("AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ");
        c["name"] = json!("Alice Example");
        if v1 {
            c["amr"] = json!(["pwd", "mfa"]);
            c["unique_name"] = json!("alice@example.com");
            c["upn"] = json!("alice@example.com");
        } else {
            c["preferred_username"] = json!("alice@example.com");
        }
    } else {
        c["roles"] = json!([p.machine.scope.unwrap_or_default()]);
        c["sub"] = json!("f3c1e0d2-7b6a-4c5d-9e8f-0a1b2c3d4e5f");
        c["idtyp"] = json!("app");
        c["idp"] = json!(p.issuer.iss);
    }
    c
}

/// Auth0 with RBAC and "Add Permissions in the Access Token": `permissions`, else `scope`.
pub fn auth0() -> Provider {
    let iss = "https://example.us.auth0.com/";
    let (x5c_a, x5t_a, _) = cert_members(401);
    let (x5c_b, x5t_b, _) = cert_members(402);
    let kid = "NjVBRjY5MDlCMUIwNzU4RTA2QzZFMDQ4QzQ2MDAyQjVDNjk1RTM2Qg";
    let jwks = json!({ "keys": [
        rsa_jwk(401, json!({ "alg": "RS256", "use": "sig", "kid": kid, "x5t": x5t_a, "x5c": x5c_a })),
        rsa_jwk(402, json!({ "alg": "RS256", "use": "sig", "kid": "QzNFRDA4RjYzMkQ4", "x5t": x5t_b, "x5c": x5c_b })),
    ]});
    Provider {
        name: "auth0",
        issuer: Issuer::rs256_seeded(iss, kid, 401),
        jwks,
        skipped_keys: 0,
        claims: Some(json!({ "scopes": ["permissions", "scope"] })),
        audience: "https://orders.example.com",
        other_audience: None,
        user: Caller {
            client: "xGcsKsoVRYtqkUn4oIrIVDyMiOvGFtNE",
            scope: Some("read:orders"),
        },
        machine: Caller {
            client: "j1X7cVqZr1bMpYk9n2tD5uW8aE3sF6gH",
            scope: Some("read:orders"),
        },
        shape: |p, kind, now| {
            let mut c = json!({ "iss": p.issuer.iss, "iat": now, "exp": now + 86400 });
            if kind == "user" {
                c["sub"] = json!("auth0|64b7f2e8c1d2a3b4c5d6e7f8");
                c["aud"] = json!([p.audience, "https://example.us.auth0.com/userinfo"]);
                c["azp"] = json!(p.user.client);
                // RBAC: scope = requested ∩ assigned; permissions = everything assigned.
                c["scope"] = json!("openid profile email");
                c["permissions"] = json!(["read:orders"]);
            } else {
                c["sub"] = json!(format!("{}@clients", p.machine.client));
                c["aud"] = json!(p.audience);
                c["azp"] = json!(p.machine.client);
                c["scope"] = json!("read:orders");
                c["gty"] = json!("client-credentials");
            }
            c
        },
    }
}

/// Google: three RSA keys, two without `alg`; ID tokens without any scope claim.
pub fn google() -> Provider {
    let iss = "https://accounts.google.com";
    let kid = "c7e04465649ffa606557650c7e65f0a87ae00fe8";
    let jwks = json!({ "keys": [
        rsa_jwk(501, json!({ "e": "AQAB", "alg": "RS256", "use": "sig", "kid": "a50f6e70ef4b548a5fd9142eecd1fb8f54dce9ee" })),
        rsa_jwk(502, json!({ "use": "sig", "kid": kid })),
        rsa_jwk(503, json!({ "use": "sig", "kid": "6f9777a685907798ef794062c00b65d66c240b1b" })),
    ]});
    Provider {
        name: "google",
        issuer: Issuer::rs256_seeded(iss, kid, 502),
        jwks,
        skipped_keys: 0,
        claims: None,
        audience: "https://orders.example.com",
        other_audience: Some("407408718192.apps.googleusercontent.com"),
        user: Caller {
            client: "407408718192.apps.googleusercontent.com",
            scope: None,
        },
        machine: Caller {
            client: "113948204972394815201",
            scope: None,
        },
        shape: |p, kind, now| {
            if kind == "user" {
                // Signed in to the web client: the ID token's audience is that client.
                json!({
                    "iss": p.issuer.iss, "azp": p.user.client, "aud": p.user.client,
                    "sub": "110169484474386276334", "hd": "example.com",
                    "email": "alice@example.com", "email_verified": true,
                    "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q", "name": "Alice Example",
                    "iat": now, "exp": now + 3600,
                })
            } else {
                // A service account's ID token from the metadata server.
                json!({
                    "aud": p.audience, "azp": p.machine.client,
                    "email": "billing@example-project.iam.gserviceaccount.com",
                    "email_verified": true, "exp": now + 3600, "iat": now,
                    "iss": p.issuer.iss, "sub": p.machine.client,
                })
            }
        },
    }
}

/// A policy trusting `providers` (verbatim key sets, preset mappings), one rule each
/// (`/<name>/orders`, see [`Provider::rule`]).
pub fn policy(gw: &Gateway, providers: &[Provider]) -> Value {
    json!({
        "issuer": gw.iss,
        "signing_keys": [gw.private_jwk()],
        "trusted_issuers": providers.iter().map(Provider::trusted).collect::<Vec<_>>(),
        "rules": providers.iter().map(Provider::rule).collect::<Vec<_>>(),
    })
}

/// Every provider above.
pub fn all() -> Vec<Provider> {
    vec![
        keycloak(),
        okta(),
        entra_v1(),
        entra_v2(),
        auth0(),
        google(),
    ]
}
