//! End to end under a real Envoy 1.40 (`.venv/bin/envoy`, installed by scripts/setup.sh)
//! running the release filter wasm, with a recording upstream.
//!
//! One Envoy serves every case of `envoy_end_to_end` (cases run one after another and report
//! together); `envoy_refuses_invalid_config` starts its own. Tokens come from the shared
//! test issuers (RS256, ES256, EdDSA) and from PyJWT (an independent JWT library) through
//! envoy-example/mint_demo_token.py. Without `.venv/bin/envoy` the suite skips loudly,
//! unless `CI` is set: then it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod envoy;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Map, Value};
use token_exchange_tests::providers;
use token_exchange_tests::{accepting, load, orders_rule, policy, unb64, Gateway, Issuer};

use envoy::{free_port, http, unix_now, Envoy, Recorded, Response, Upstream};

/// gRPC calls of an `orders.v1.Orders` service (POST `/orders.v1.Orders/<method>`).
fn grpc_rule() -> Value {
    json!({
        "name": "orders-grpc",
        "match": { "path_prefix": "/orders.v1.Orders", "methods": ["POST"] },
        "require": { "scopes": ["orders:read"] },
        "mint": { "audience": "orders-service", "scopes": ["orders:read"], "ttl_seconds": 60 }
    })
}

/// The second rule: bound to Envoy's route name only (no path condition).
fn reports_rule() -> Value {
    json!({
        "name": "reports-by-route",
        "match": { "route": envoy::REPORTS_ROUTE },
        "require": { "scopes": ["reports:read"] },
        "mint": { "audience": "reports-service", "scopes": ["reports:read"], "ttl_seconds": 30 }
    })
}

/// The DEMO-ONLY issuer of envoy-example (its private key signs through PyJWT).
fn demo_issuer_trusted() -> Value {
    let jwk: Value = serde_json::from_slice(
        &std::fs::read(
            envoy::root().join("envoy-example/demo-keys/demo-issuer-es256.public.jwk.json"),
        )
        .unwrap(),
    )
    .unwrap();
    json!({
        "issuer": "https://idp.demo.local",
        "jwks": { "keys": [jwk] },
        "algorithms": ["ES256"],
        "audiences": ["api"],
    })
}

/// A named end-to-end case.
type Case = (&'static str, fn(&Ctx));

/// What one request through Envoy produced.
struct Exchange {
    response: Response,
    /// Requests the upstream received meanwhile.
    upstream: Vec<Recorded>,
    /// Audit records with this request's id.
    audit: Vec<Value>,
    /// Seconds before and after the request (bounds for the filter's clock).
    before: u64,
    after: u64,
}

struct Ctx {
    envoy: Envoy,
    upstream: Upstream,
    gw: Gateway,
    es: Issuer,
    ed: Issuer,
    rs: Issuer,
    /// Every original token sent; none may ever reach the upstream.
    originals: RefCell<Vec<String>>,
    n: Cell<u32>,
}

impl Ctx {
    /// Sends a request with a unique `x-request-id` (and `x-forwarded-user`, which the policy
    /// strips) and collects what the upstream and the audit log saw of it.
    fn send(&self, method: &str, path: &str, authorization: &[String]) -> Exchange {
        self.n.set(self.n.get() + 1);
        let request_id = format!("e2e-{}-{}", std::process::id(), self.n.get());
        let mut headers: Vec<(&str, &str)> = vec![
            ("x-request-id", &request_id),
            ("x-forwarded-user", "mallory"),
        ];
        for a in authorization {
            headers.push(("authorization", a));
            if let Some(t) = a.strip_prefix("Bearer ") {
                self.originals.borrow_mut().push(t.to_owned());
            }
        }
        let seen = self.upstream.count();
        let before = unix_now();
        let response = http(self.envoy.port, method, path, &headers, b"");
        let after = unix_now();
        let upstream = self.upstream.records()[seen..].to_vec();
        let reached_filter =
            response.status != 400 || response.header("www-authenticate").is_some();
        let audit = self.envoy.audit_for(&request_id, reached_filter);
        Exchange {
            response,
            upstream,
            audit,
            before,
            after,
        }
    }

    /// A fresh `x-request-id` for a request sent outside [`Ctx::send`].
    fn next_request_id(&self) -> String {
        self.n.set(self.n.get() + 1);
        format!("e2e-{}-{}", std::process::id(), self.n.get())
    }

    fn bearer(&self, method: &str, path: &str, token: &str) -> Exchange {
        self.send(method, path, &[format!("Bearer {token}")])
    }

    /// Claims from `issuer` at the real clock with a unique `jti`.
    fn claims(&self, issuer: &Issuer, scope: &str) -> Value {
        let mut c = issuer.claims(unix_now(), scope);
        c["jti"] = json!(format!("orig-{}-{}", issuer.kid, self.n.get() + 1));
        c
    }
}

/// The one audit record of a request.
fn one_audit(x: &Exchange) -> &Value {
    assert_eq!(
        x.audit.len(),
        1,
        "exactly one audit line per request, got {:?}",
        x.audit
    );
    &x.audit[0]
}

/// A denial: status, challenge, nothing upstream, one audit line with this reason.
fn assert_denied(x: &Exchange, status: u16, error: Option<&str>, reason: &str) -> Value {
    assert_eq!(x.response.status, status, "response {:?}", x.response);
    let challenge = x
        .response
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate in {:?}", x.response));
    assert!(
        challenge.starts_with("Bearer realm=\"token-exchange\""),
        "{challenge}"
    );
    match error {
        None => assert_eq!(challenge, "Bearer realm=\"token-exchange\""),
        Some(e) => assert!(
            challenge.contains(&format!("error=\"{e}\"")),
            "{challenge} lacks error={e}"
        ),
    }
    assert_eq!(x.response.header("cache-control"), Some("no-store"));
    let body: Value = serde_json::from_str(&x.response.body)
        .unwrap_or_else(|e| panic!("body {:?}: {e}", x.response.body));
    assert!(body["error"].is_string(), "{body}");
    assert!(
        !x.response.body.contains("eyJ"),
        "the body echoes a token: {body}"
    );
    assert!(
        x.upstream.is_empty(),
        "a denied request reached the upstream: {:?}",
        x.upstream
    );
    let a = one_audit(x).clone();
    assert_eq!(a["event"], "token_exchange");
    assert_eq!(a["decision"], "deny", "{a}");
    assert_eq!(a["reason"], reason, "{a}");
    assert_eq!(a["status"], status, "{a}");
    assert!(a.get("minted_jti").is_none(), "{a}");
    a
}

/// What an allowed exchange must have minted.
struct Expect<'a> {
    original: &'a str,
    original_claims: &'a Value,
    rule: &'a str,
    audience: &'a str,
    scope: &'a str,
    ttl: u64,
}

/// An exchange: 200, exactly one upstream request carrying a gateway-minted token with the
/// expected claims, the original token and stripped headers gone, one matching audit line.
fn assert_exchanged(ctx: &Ctx, x: &Exchange, e: &Expect) -> Map<String, Value> {
    assert_eq!(x.response.status, 200, "response {:?}", x.response);
    assert_eq!(
        x.upstream.len(),
        1,
        "one request upstream: {:?}",
        x.upstream
    );
    let got = &x.upstream[0];
    let auth = got.header_all("authorization");
    assert_eq!(auth.len(), 1, "one Authorization upstream: {auth:?}");
    let minted = auth[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer: {}", auth[0]));
    assert_ne!(minted, e.original);
    let raw = String::from_utf8_lossy(&got.raw);
    assert!(
        !raw.contains(e.original),
        "the original token reached the upstream"
    );
    assert!(
        got.header_all("x-forwarded-user").is_empty(),
        "strip_headers: x-forwarded-user reached the upstream"
    );

    let (header, claims) = ctx.gw.verify(minted, unix_now());
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["kid"], ctx.gw.kid.as_str(), "{header}");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(claims["iss"], ctx.gw.iss.as_str());
    assert_eq!(claims["aud"], e.audience);
    assert_eq!(claims["scope"], e.scope);
    assert_eq!(claims["sub"], e.original_claims["sub"]);
    let exp = claims["exp"].as_u64().unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    let orig_exp = e.original_claims["exp"].as_u64().unwrap();
    assert!(
        exp <= orig_exp,
        "minted exp {exp} outlives the original {orig_exp}"
    );
    assert!(
        exp <= x.after + e.ttl,
        "exp {exp} > now + ttl ({} + {})",
        x.after,
        e.ttl
    );
    assert!(
        exp + 1 >= x.before + e.ttl.min(orig_exp - x.before),
        "exp {exp} too short"
    );
    assert!(iat + 1 >= x.before && iat <= x.after + 1, "iat {iat}");
    let mut from = json!({ "iss": e.original_claims["iss"], "token_id": e.original_claims["jti"] });
    if let Some(iat) = e.original_claims.get("iat") {
        from["iat"] = iat.clone();
    }
    assert_eq!(claims["exchanged_from"], from);
    // One exchange recorded: the caller, through this rule, for this audience.
    assert_eq!(claims["act"]["rule"], e.rule);
    assert_eq!(claims["act"]["audience"], e.audience);
    assert_eq!(claims["act"]["iss"], e.original_claims["iss"]);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    assert_ne!(Some(jti.as_str()), e.original_claims["jti"].as_str());

    let a = one_audit(x);
    assert_eq!(a["decision"], "allow", "{a}");
    assert_eq!(a["reason"], "exchanged", "{a}");
    assert_eq!(a["rule"], e.rule, "{a}");
    assert_eq!(a["token_id"], e.original_claims["jti"], "{a}");
    assert_eq!(a["iss"], e.original_claims["iss"], "{a}");
    assert_eq!(a["sub"], e.original_claims["sub"], "{a}");
    assert_eq!(a["token_verified"], true, "{a}");
    assert_eq!(
        a["minted_jti"],
        jti.as_str(),
        "audit minted_jti vs the upstream's token"
    );
    assert_eq!(a["minted_aud"], e.audience, "{a}");
    assert_eq!(a["minted_scope"], e.scope, "{a}");
    assert_eq!(a["minted_exp"], exp, "{a}");
    assert_eq!(a["minted_kid"], ctx.gw.kid.as_str(), "{a}");
    assert!(a.get("status").is_none(), "{a}");
    let line = a.to_string();
    assert!(
        !line.contains(e.original),
        "the audit line contains the token"
    );
    assert!(
        !line.contains(minted),
        "the audit line contains the minted token"
    );
    claims
}

fn orders_expect<'a>(token: &'a str, claims: &'a Value) -> Expect<'a> {
    Expect {
        original: token,
        original_claims: claims,
        rule: "orders-read",
        audience: "orders-service",
        scope: "orders:read",
        ttl: 60,
    }
}

// --- the cases -----------------------------------------------------------------------------

fn allow_es256(ctx: &Ctx) {
    let c = ctx.claims(&ctx.es, "orders:read profile");
    let t = ctx.es.sign(&c);
    let x = ctx.bearer("GET", "/orders/42?x=1", &t);
    let claims = assert_exchanged(ctx, &x, &orders_expect(&t, &c));
    // preserve_claims / add_claims of orders_rule, and what must not be copied.
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["env"], "test");
    assert_eq!(claims["client_id"], "web-app");
    assert!(claims.get("email").is_none(), "email was not preserved");
    assert!(claims.get("acr").is_none());
    assert_eq!(
        x.audit[0]["path"], "/orders/42",
        "no query string in the audit"
    );
    assert_eq!(x.upstream[0].path, "/orders/42?x=1");
}

fn allow_eddsa(ctx: &Ctx) {
    let c = ctx.claims(&ctx.ed, "orders:read orders:write");
    let t = ctx.ed.sign(&c);
    let x = ctx.bearer("GET", "/orders", &t);
    let mut e = orders_expect(&t, &c);
    e.scope = "orders:read orders:write";
    assert_exchanged(ctx, &x, &e);
}

fn allow_rs256(ctx: &Ctx) {
    let c = ctx.claims(&ctx.rs, "orders:read");
    let t = ctx.rs.sign(&c);
    let x = ctx.bearer("GET", "/orders/1", &t);
    assert_exchanged(ctx, &x, &orders_expect(&t, &c));
}

fn allow_pyjwt_token(ctx: &Ctx) {
    let jti = format!("pyjwt-{}", std::process::id());
    let out = Command::new(envoy::venv_python())
        .arg(envoy::root().join("envoy-example/mint_demo_token.py"))
        .args(["--audience", "api", "--client", "web-app"])
        .args(["--scope", "orders:read profile", "--jti", &jti])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mint_demo_token.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims: Value = serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["jti"], jti.as_str());
    let header: Value = serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "ES256");
    let x = ctx.bearer("GET", "/orders/7", &token);
    let minted = assert_exchanged(ctx, &x, &orders_expect(&token, &claims));
    assert_eq!(minted["tenant"], "acme");
}

/// The verified-and-minted cache in a real Envoy (two workers, one cache each): the same
/// token six times is exchanged at most once per worker; every other request is a hit that
/// forwards a token one of those exchanges minted, each checked as any exchange is.
fn a_repeated_token_is_served_from_the_cache(ctx: &Ctx) {
    let c = ctx.claims(&ctx.ed, "orders:read");
    let t = ctx.ed.sign(&c);
    let mut minted = Vec::new();
    let mut caches = Vec::new();
    let mut first_sent = None;
    for _ in 0..6 {
        let mut x = ctx.bearer("GET", "/orders/9", &t);
        // A hit forwards a token minted by an earlier request: its `iat` may be that one's.
        x.before = *first_sent.get_or_insert(x.before);
        let claims = assert_exchanged(ctx, &x, &orders_expect(&t, &c));
        let audit = one_audit(&x);
        assert_eq!(audit["minted_jti"], claims["jti"]);
        caches.push(audit["cache"].as_str().unwrap_or_default().to_owned());
        minted.push(claims["jti"].clone());
    }
    let misses = caches.iter().filter(|c| *c == "miss").count();
    assert!(misses <= 2, "one exchange per worker at most: {caches:?}");
    assert_eq!(caches.iter().filter(|c| *c == "hit").count(), 6 - misses);
    minted.sort_by_key(|j| j.to_string());
    minted.dedup();
    assert_eq!(minted.len(), misses, "hits forward what a miss minted");
}

fn normalized_path_is_matched(ctx: &Ctx) {
    // normalize_path: the filter sees /orders/3, never the dot-segments.
    let c = ctx.claims(&ctx.es, "orders:read");
    let t = ctx.es.sign(&c);
    let x = ctx.bearer("GET", "/public/../orders//3", &t);
    assert_exchanged(ctx, &x, &orders_expect(&t, &c));
    assert_eq!(x.audit[0]["path"], "/orders/3");
    assert_eq!(x.upstream[0].path, "/orders/3");
}

fn escaped_slash_is_rejected_by_envoy(ctx: &Ctx) {
    let c = ctx.claims(&ctx.es, "orders:read");
    let t = ctx.es.sign(&c);
    let x = ctx.bearer("GET", "/orders%2F..%2Fadmin", &t);
    assert_eq!(x.response.status, 400, "{:?}", x.response);
    assert!(x.upstream.is_empty());
    assert!(x.audit.is_empty(), "Envoy refuses it before the filter");
}

fn route_bound_rule(ctx: &Ctx) {
    let c = ctx.claims(&ctx.ed, "reports:read orders:read");
    let t = ctx.ed.sign(&c);
    let x = ctx.bearer("GET", "/reports/2026", &t);
    assert_exchanged(
        ctx,
        &x,
        &Expect {
            original: &t,
            original_claims: &c,
            rule: "reports-by-route",
            audience: "reports-service",
            scope: "reports:read",
            ttl: 30,
        },
    );
}

fn no_token_401_without_error(ctx: &Ctx) {
    let x = ctx.send("GET", "/orders/1", &[]);
    let a = assert_denied(&x, 401, None, "missing_token");
    assert_eq!(a["token_verified"], false);
}

fn other_scheme_is_missing_token(ctx: &Ctx) {
    let x = ctx.send("GET", "/orders/1", &["Basic YWxpY2U6c2VjcmV0".to_owned()]);
    assert_denied(&x, 401, None, "missing_token");
}

fn malformed_token(ctx: &Ctx) {
    let x = ctx.bearer("GET", "/orders/1", "not-a-jwt");
    assert_denied(&x, 401, Some("invalid_token"), "malformed_token");
}

fn expired_token(ctx: &Ctx) {
    let now = unix_now();
    let mut c = ctx.claims(&ctx.es, "orders:read");
    c["iat"] = json!(now - 3600);
    c["nbf"] = json!(now - 3600);
    c["exp"] = json!(now - 600);
    let x = ctx.bearer("GET", "/orders/1", &ctx.es.sign(&c));
    let a = assert_denied(&x, 401, Some("invalid_token"), "token_expired");
    assert_eq!(a["token_id"], c["jti"]);
}

fn bad_signature(ctx: &Ctx) {
    // Same iss and kid, another key.
    let forger = Issuer::es256(&ctx.es.iss, &ctx.es.kid, 99);
    let c = ctx.claims(&ctx.es, "orders:read");
    let x = ctx.bearer("GET", "/orders/1", &forger.sign(&c));
    let a = assert_denied(&x, 401, Some("invalid_token"), "invalid_signature");
    assert_eq!(a["token_verified"], false);
}

fn untrusted_issuer(ctx: &Ctx) {
    let stranger = Issuer::ed25519("https://evil.test", "ev-1", 5);
    let c = ctx.claims(&stranger, "orders:read");
    let x = ctx.bearer("GET", "/orders/1", &stranger.sign(&c));
    assert_denied(&x, 401, Some("invalid_token"), "untrusted_issuer");
}

fn wrong_audience(ctx: &Ctx) {
    let mut c = ctx.claims(&ctx.es, "orders:read");
    c["aud"] = json!("someone-else");
    let x = ctx.bearer("GET", "/orders/1", &ctx.es.sign(&c));
    assert_denied(&x, 401, Some("invalid_token"), "audience_mismatch");
}

fn gateway_token_replayed(ctx: &Ctx) {
    // A token the gateway minted, sent back to the edge.
    let c = ctx.claims(&ctx.es, "orders:read");
    let t = ctx.es.sign(&c);
    let x = ctx.bearer("GET", "/orders/1", &t);
    assert_eq!(x.response.status, 200);
    let minted = x.upstream[0].header_all("authorization")[0]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let x = ctx.bearer("GET", "/orders/1", &minted);
    assert_denied(&x, 401, Some("invalid_token"), "gateway_token_replay");
}

fn insufficient_scope_403(ctx: &Ctx) {
    let c = ctx.claims(&ctx.rs, "profile");
    let x = ctx.bearer("GET", "/orders/1", &ctx.rs.sign(&c));
    let a = assert_denied(&x, 403, Some("insufficient_scope"), "insufficient_scope");
    let challenge = x.response.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("scope=\"orders:read\""),
        "{challenge} lacks scope="
    );
    assert_eq!(a["rule"], "orders-read");
    assert_eq!(a["token_id"], c["jti"]);
    assert_eq!(a["token_verified"], true);
}

fn caller_not_allowed(ctx: &Ctx) {
    let mut c = ctx.claims(&ctx.es, "orders:read");
    c["azp"] = json!("some-other-app");
    let x = ctx.bearer("GET", "/orders/1", &ctx.es.sign(&c));
    assert_denied(&x, 403, Some("insufficient_scope"), "caller_not_allowed");
}

fn unmatched_route_403(ctx: &Ctx) {
    let c = ctx.claims(&ctx.es, "orders:read reports:read");
    let x = ctx.bearer("GET", "/admin/users", &ctx.es.sign(&c));
    assert_denied(&x, 403, None, "no_matching_rule");
    // A method the rule does not allow is unmatched too.
    let x = ctx.bearer("DELETE", "/orders/1", &ctx.es.sign(&c));
    assert_denied(&x, 403, None, "no_matching_rule");
}

fn two_authorization_headers_400(ctx: &Ctx) {
    let c = ctx.claims(&ctx.es, "orders:read");
    let t = format!("Bearer {}", ctx.es.sign(&c));
    let x = ctx.send("GET", "/orders/1", &[t.clone(), t]);
    assert_eq!(x.response.status, 400, "{:?}", x.response);
    let challenge = x.response.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"invalid_request\""),
        "{challenge}"
    );
    assert!(x.upstream.is_empty());
    let a = one_audit(&x);
    // Envoy folds the two headers into one comma-joined value; the filter still names it.
    assert_eq!(a["reason"], "duplicate_authorization", "{a}");
}

/// The hostile corpus through a real Envoy: each case refused with its reason and status,
/// never forwarded, and a valid token still exchanged afterwards (the VM is alive).
fn hostile_corpus_through_envoy(ctx: &Ctx) {
    let attacker = Issuer::ed25519("https://attacker.example", "attacker-key-1", 66);
    let cases = token_exchange_tests::hostile::corpus(&ctx.es, &attacker, unix_now());
    let mut sent = 0;
    for case in &cases {
        // Values a proxy changes on the way (CR/LF/NUL, surrounding whitespace) are the
        // harness suite's job; here each value arrives as written.
        if !case.http_safe() {
            continue;
        }
        let non_empty = case.authorization.iter().filter(|v| !v.is_empty()).count();
        let (reason, status) = match case.authorization.len() {
            // Envoy folds repeated headers with commas (an empty one adds nothing).
            n if n > 1 && non_empty >= 2 => ("duplicate_authorization", 400),
            n if n > 1 => continue,
            _ => (case.expected_reason, case.expected_status),
        };
        sent += 1;
        let x = ctx.send("GET", "/orders", &case.authorization);
        assert_eq!(x.response.status, status, "{}: {:?}", case.name, x.response);
        let a = one_audit(&x);
        assert_eq!(a["reason"], reason, "{}", case.name);
        if status == 200 {
            assert_eq!(x.upstream.len(), 1, "{}", case.name);
        } else {
            assert!(x.upstream.is_empty(), "{}: forwarded", case.name);
        }
        let ok = ctx.bearer(
            "GET",
            "/orders",
            &ctx.es.sign(&ctx.claims(&ctx.es, "orders:read")),
        );
        assert_eq!(
            ok.response.status, 200,
            "after {}: {:?}",
            case.name, ok.response
        );
    }
    assert!(sent > 50, "only {sent} corpus cases went through Envoy");
}

/// A gRPC method of the service [`grpc_rule`] covers (Envoy routes it on its `/orders` prefix).
const GRPC_PATH: &str = "/orders.v1.Orders/Get";

/// gRPC clients (HTTP/2, `content-type: application/grpc`) denied by the filter get a
/// gRPC status they can read: Envoy answers trailers-only, `:status 200`, `grpc-status`.
fn grpc_denials_over_http2(ctx: &Ctx) {
    let seen = ctx.upstream.count();
    let rid = ctx.next_request_id();
    let r = envoy::grpc_post(ctx.envoy.port, GRPC_PATH, &[("x-request-id", &rid)]);
    assert_eq!(r.status, 200, "gRPC trailers-only response: {r:?}");
    assert_eq!(
        r.header("grpc-status"),
        Some("16"),
        "UNAUTHENTICATED: {r:?}"
    );
    assert_eq!(r.header("grpc-message"), Some("a bearer token is required"));
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"token-exchange\"")
    );
    assert!(r.body.is_empty(), "{r:?}");
    let audit = ctx.envoy.audit_for(&rid, true);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "missing_token");

    let lacking = ctx.es.sign(&ctx.claims(&ctx.es, "profile"));
    let auth = format!("Bearer {lacking}");
    ctx.originals.borrow_mut().push(lacking.clone());
    let rid = ctx.next_request_id();
    let r = envoy::grpc_post(
        ctx.envoy.port,
        GRPC_PATH,
        &[("x-request-id", &rid), ("authorization", &auth)],
    );
    assert_eq!(
        r.header("grpc-status"),
        Some("7"),
        "PERMISSION_DENIED: {r:?}"
    );
    assert_eq!(
        r.header("grpc-message"),
        Some("insufficient_scope: token lacks a required scope")
    );
    assert_eq!(
        ctx.envoy.audit_for(&rid, true)[0]["reason"],
        "insufficient_scope"
    );
    assert_eq!(
        ctx.upstream.count(),
        seen,
        "a denied gRPC call reached the upstream"
    );

    // An allowed gRPC call is exchanged like any other request.
    let good = ctx.es.sign(&ctx.claims(&ctx.es, "orders:read"));
    ctx.originals.borrow_mut().push(good.clone());
    let rid = ctx.next_request_id();
    envoy::grpc_post(
        ctx.envoy.port,
        GRPC_PATH,
        &[
            ("x-request-id", &rid),
            ("authorization", &format!("Bearer {good}")),
        ],
    );
    let records = ctx.upstream.records();
    assert_eq!(records.len(), seen + 1);
    let auth = records[seen].header_all("authorization");
    assert_eq!(auth.len(), 1);
    assert!(!auth[0].contains(&good));
    ctx.gw
        .verify(auth[0].strip_prefix("Bearer ").unwrap(), unix_now());
    assert_eq!(ctx.envoy.audit_for(&rid, true)[0]["decision"], "allow");
}

/// The counters in Envoy's admin `/stats` (`wasmcustom.<name>`) and, with the tag
/// extractors of production.yaml, `/stats/prometheus` (labels): exact changes after a
/// known sequence of requests.
fn metrics_in_admin_stats(ctx: &Ctx) {
    let before = ctx.envoy.custom_counters();
    for r in token_exchange_filter::core::DenyReason::ALL {
        let name = format!("token_exchange.deny.{}", r.code());
        assert!(before.contains_key(&name), "{name} not defined: {before:?}");
    }
    let good = ctx.es.sign(&ctx.claims(&ctx.es, "orders:read"));
    let lacking = ctx.es.sign(&ctx.claims(&ctx.es, "profile"));
    assert_eq!(ctx.bearer("GET", "/orders/5", &good).response.status, 200);
    assert_eq!(ctx.send("GET", "/orders/5", &[]).response.status, 401);
    assert_eq!(
        ctx.bearer("GET", "/orders/5", &lacking).response.status,
        403
    );
    assert_eq!(ctx.bearer("GET", "/elsewhere", &good).response.status, 403);
    let after = ctx.envoy.custom_counters();
    let mut want: std::collections::BTreeMap<&str, u64> = [
        ("token_exchange.decision.allow", 1),
        ("token_exchange.decision.deny", 3),
        ("token_exchange.minted", 1),
        ("token_exchange.deny.missing_token", 1),
        ("token_exchange.deny.insufficient_scope", 1),
        ("token_exchange.deny.no_matching_rule", 1),
        ("token_exchange.rule.orders-read.allow", 1),
        ("token_exchange.rule.orders-read.deny", 2),
    ]
    .into_iter()
    .collect();
    for (name, value) in &after {
        let delta = value - before.get(name).copied().unwrap_or(0);
        assert_eq!(
            delta,
            want.remove(name.as_str()).unwrap_or(0),
            "change of {name}"
        );
    }
    assert!(want.is_empty(), "never shown in /stats: {want:?}");
    // One load per root context Envoy configured (main thread and workers), as logged.
    let loads = ctx
        .envoy
        .log()
        .matches("token-exchange-filter: policy loaded")
        .count();
    assert_eq!(after["token_exchange.config.loaded"], loads as u64);
    assert!(loads >= 3, "main thread and 2 workers: {loads}");

    let prometheus = ctx.envoy.admin_get("/stats/prometheus");
    let sample = |name: &str, labels: &[(&str, &str)]| -> u64 {
        prometheus_sample(&prometheus, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /stats/prometheus:\n{prometheus}"))
    };
    let outcome = "token_exchange_outcome";
    assert_eq!(
        sample("token_exchange_decision", &[(outcome, "allow")]),
        after["token_exchange.decision.allow"]
    );
    assert_eq!(
        sample("token_exchange_decision", &[(outcome, "deny")]),
        after["token_exchange.decision.deny"]
    );
    assert_eq!(
        sample(
            "token_exchange_deny",
            &[("token_exchange_reason", "missing_token")]
        ),
        after["token_exchange.deny.missing_token"]
    );
    assert_eq!(
        sample(
            "token_exchange_rule",
            &[("token_exchange_rule", "orders-read"), (outcome, "deny")]
        ),
        after["token_exchange.rule.orders-read.deny"]
    );
    assert_eq!(
        sample("token_exchange_minted", &[]),
        after["token_exchange.minted"]
    );
}

/// The value of the Prometheus sample `name{labels}` (exactly these labels, any order).
fn prometheus_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let mut got: Vec<(String, String)> = label_text
            .split(',')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.to_owned(), v.trim_matches('"').to_owned()))
            })
            .collect();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        got.sort();
        want.sort();
        (got == want).then(|| value.parse().ok()).flatten()
    })
}

fn originals_never_reached_upstream(ctx: &Ctx) {
    let records = ctx.upstream.records();
    assert!(!records.is_empty());
    for original in ctx.originals.borrow().iter() {
        // Skip the gateway's own tokens replayed on purpose: they were minted, so they did
        // reach the upstream once, as minted tokens.
        let payload = original.split('.').nth(1).unwrap_or_default();
        // Hostile "tokens" need not decode at all.
        let claims: Value = token_exchange_filter::core::token::b64url_decode(payload)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if claims["iss"] == ctx.gw.iss.as_str() {
            continue;
        }
        for r in &records {
            assert!(
                !String::from_utf8_lossy(&r.raw).contains(original.as_str()),
                "an original token reached the upstream in {} {}",
                r.method,
                r.path
            );
        }
    }
}

fn audit_lines_are_one_per_filtered_request(ctx: &Ctx) {
    let records = ctx.envoy.audit_records();
    let mut ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(total, ids.len(), "some request was audited twice");
    for r in &records {
        assert_eq!(r["event"], "token_exchange");
        assert!(r["ts_ms"].as_u64().is_some());
    }
}

/// The CLI's `audit` review (issue 13) reads this run's real Envoy log: every audit record
/// the Envoy line parser above finds, the same decisions and reasons, each minted `jti` with
/// the original token id behind it, and the repeated forgery probes of the hostile cases.
fn cli_audit_reads_this_envoy_log(ctx: &Ctx) {
    use token_exchange_cli::audit::{read_log, summarise, LineFormat, Thresholds, PROBE_REASONS};
    let records = ctx.envoy.audit_records();
    let log = read_log(&ctx.envoy.log());
    assert_eq!(log.entries.len(), records.len());
    assert!(log.malformed.is_empty(), "{:?}", log.malformed);
    assert!(log.entries.iter().all(|e| e.format == LineFormat::Envoy));
    let (_, summary, _) = summarise(&log, Thresholds::default());
    let count = |field: &str, value: &str| records.iter().filter(|r| r[field] == value).count();
    for decision in ["allow", "deny", "pass"] {
        assert_eq!(
            summary["decisions"][decision],
            count("decision", decision),
            "{decision}"
        );
    }
    for (reason, n) in summary["by_reason"].as_object().unwrap() {
        assert_eq!(n, &json!(count("reason", reason)), "{reason}");
    }
    let minted: Vec<(&Value, &Value)> = records
        .iter()
        .filter(|r| r["minted_jti"].is_string())
        .map(|r| (&r["minted_jti"], &r["token_id"]))
        .collect();
    assert!(!minted.is_empty());
    let listed = summary["minted"].as_array().unwrap();
    assert_eq!(listed.len(), minted.len());
    for (m, (jti, token_id)) in listed.iter().zip(&minted) {
        assert_eq!((&m["minted_jti"], &m["token_id"]), (*jti, *token_id));
    }
    // The hostile cases repeat invalid signatures and gateway token replays.
    for reason in PROBE_REASONS {
        let n = count("reason", reason);
        let flagged = summary["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "repeated_reason" && a["reason"] == reason);
        match flagged {
            Some(a) => assert_eq!(a["count"], n, "{reason}"),
            None => assert!(n < Thresholds::default().repeat, "{reason}: {n}"),
        }
    }
    assert!(count("reason", "invalid_signature") >= Thresholds::default().repeat);
}

/// The CLI's `audit` review of the trust-boundary run's real Envoy log (issue 13 on issue
/// 11's audit fields): the lifecycle warnings, the shadow rule's decisions, the identity
/// header it stripped, the chained hops and their depths, the refused hops, and the revoked
/// token presented twice (at the edge, and as the original of the hop token exchanged from
/// it).
fn cli_audit_reads_the_trust_log(envoy: &Envoy, revoked_token: &str) {
    use token_exchange_cli::audit::{read_log, summarise, Thresholds};
    use token_exchange_tests::trust::{PARTNER, RETIRED};
    let records = envoy.audit_records();
    let log = read_log(&envoy.log());
    assert_eq!(log.entries.len(), records.len());
    assert!(log.malformed.is_empty(), "{:?}", log.malformed);
    // The warnings each worker logs at load (a second or so apart), once each.
    let notices: Vec<&str> = log.lifecycle.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains(PARTNER) && notices[0].contains("overdue for review"));
    assert!(notices[1].contains(RETIRED) && notices[1].contains("expired after"));
    let every = Thresholds {
        repeat: 1,
        ..Thresholds::default()
    };
    let (_, j, _) = summarise(&log, every);
    let shadow: Vec<&Value> = records.iter().filter(|r| r["mode"] == "shadow").collect();
    assert_eq!(j["shadow"]["records"], shadow.len());
    assert_eq!(
        j["shadow"]["by_rule"]["reports"],
        json!({"allow": 1, "deny": 1, "reasons": {"exchanged": 1, "missing_token": 1},
               "denied_callers": {"(none)": 1}})
    );
    assert_eq!(
        j["identity_headers"],
        json!({"x-forwarded-user": {"total": 1, "refused": 0, "stripped": 1, "denied": 0}})
    );
    let hops = records.iter().filter(|r| r["origin_token_id"].is_string());
    assert_eq!(
        j["chain"]["hops"]["allow"].as_u64().unwrap()
            + j["chain"]["hops"]["deny"].as_u64().unwrap(),
        hops.count() as u64
    );
    let depth = |d: u64| records.iter().filter(|r| r["chain_depth"] == d).count();
    for d in 1..=3u64 {
        assert_eq!(j["chain"]["by_depth"][d.to_string()], depth(d), "depth {d}");
    }
    let anomalies = j["anomalies"].as_array().unwrap();
    let flagged = |kind: &str, key: &str, value: &str| {
        anomalies
            .iter()
            .find(|a| a["kind"] == kind && a[key] == value)
            .unwrap_or_else(|| panic!("no {kind} {value}: {anomalies:?}"))
            .clone()
    };
    assert_eq!(
        flagged("repeated_reason", "reason", "chain_too_deep")["count"],
        1
    );
    assert_eq!(
        flagged("repeated_reason", "reason", "chain_cycle")["count"],
        1
    );
    let revoked = flagged(
        "revoked_token_use",
        "revoked",
        &format!("token {revoked_token}"),
    );
    assert_eq!(revoked["count"], 2, "{revoked}");
    assert_eq!(revoked["callers"], json!(["orders-service", "web-app"]));
}

#[test]
fn envoy_end_to_end() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let started = Instant::now();
    let wasm = envoy::build_wasm();
    let gw = Gateway::new();
    let es = Issuer::es256("https://es.idp.test", "es-1", 7);
    let ed = Issuer::ed25519("https://ed.idp.test", "ed-1", 9);
    let rs = Issuer::rs256("https://rs.idp.test", "rs-1");
    // Four trusted issuers: every rule names the ones it accepts.
    let all = [
        es.iss.as_str(),
        ed.iss.as_str(),
        rs.iss.as_str(),
        "https://idp.demo.local",
    ];
    let mut pol = policy(
        &gw,
        &[&es, &ed, &rs],
        json!([
            accepting(orders_rule(), &all),
            accepting(reports_rule(), &all),
            accepting(grpc_rule(), &all)
        ]),
    );
    pol["trusted_issuers"]
        .as_array_mut()
        .unwrap()
        .push(demo_issuer_trusted());

    let upstream = Upstream::start();
    let dir = envoy::scratch_dir("main");
    let envoy = Envoy::start(&bin, &dir, &wasm, &pol, upstream.port)
        .unwrap_or_else(|f| panic!("Envoy did not start ({:?}):\n{}", f.exit, f.log));
    let ctx = Ctx {
        envoy,
        upstream,
        gw,
        es,
        ed,
        rs,
        originals: RefCell::new(Vec::new()),
        n: Cell::new(0),
    };

    let cases: &[Case] = &[
        ("allow_es256", allow_es256),
        ("allow_eddsa", allow_eddsa),
        ("allow_rs256", allow_rs256),
        ("allow_pyjwt_token", allow_pyjwt_token),
        ("normalized_path_is_matched", normalized_path_is_matched),
        (
            "escaped_slash_is_rejected_by_envoy",
            escaped_slash_is_rejected_by_envoy,
        ),
        ("route_bound_rule", route_bound_rule),
        (
            "a_repeated_token_is_served_from_the_cache",
            a_repeated_token_is_served_from_the_cache,
        ),
        ("no_token_401_without_error", no_token_401_without_error),
        (
            "other_scheme_is_missing_token",
            other_scheme_is_missing_token,
        ),
        ("malformed_token", malformed_token),
        ("expired_token", expired_token),
        ("bad_signature", bad_signature),
        ("untrusted_issuer", untrusted_issuer),
        ("wrong_audience", wrong_audience),
        ("gateway_token_replayed", gateway_token_replayed),
        ("insufficient_scope_403", insufficient_scope_403),
        ("caller_not_allowed", caller_not_allowed),
        ("unmatched_route_403", unmatched_route_403),
        (
            "two_authorization_headers_400",
            two_authorization_headers_400,
        ),
        ("hostile_corpus_through_envoy", hostile_corpus_through_envoy),
        ("grpc_denials_over_http2", grpc_denials_over_http2),
        ("metrics_in_admin_stats", metrics_in_admin_stats),
        (
            "originals_never_reached_upstream",
            originals_never_reached_upstream,
        ),
        (
            "audit_lines_are_one_per_filtered_request",
            audit_lines_are_one_per_filtered_request,
        ),
        (
            "cli_audit_reads_this_envoy_log",
            cli_audit_reads_this_envoy_log,
        ),
    ];
    eprintln!(
        "envoy e2e: setup (keys, Envoy start) took {:?}",
        started.elapsed()
    );
    let mut failed = Vec::new();
    for (name, case) in cases {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| case(&ctx))) {
            Ok(()) => eprintln!("envoy e2e: {name} ... ok ({:?})", t.elapsed()),
            Err(_) => {
                eprintln!("envoy e2e: {name} ... FAILED ({:?})", t.elapsed());
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        let log = ctx.envoy.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "--- last Envoy log lines ({}) ---",
            ctx.envoy.log_path.display()
        );
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
        panic!(
            "{} of {} Envoy e2e cases failed: {failed:?}",
            failed.len(),
            cases.len()
        );
    }
}

#[test]
fn envoy_refuses_invalid_config() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let wasm = envoy::build_wasm();
    let gw = Gateway::new();
    let es = Issuer::es256("https://es.idp.test", "es-1", 7);
    let mut rule = orders_rule();
    rule["mint"]["ttl_seconds"] = json!(0);
    rule["match"]["pathprefix"] = json!("/typo");
    let pol = policy(&gw, &[&es], json!([rule]));
    let upstream = Upstream::start();
    let dir = envoy::scratch_dir("invalid");
    match Envoy::start(&bin, &dir, &wasm, &pol, upstream.port) {
        Ok(envoy) => {
            // If Envoy came up anyway, the listener must not forward anything.
            let x = http(envoy.port, "GET", "/orders/1", &[], b"");
            panic!(
                "Envoy accepted an invalid policy (answered {}):\n{}",
                x.status,
                envoy.log()
            );
        }
        Err(f) => {
            assert!(f.exit.is_some_and(|s| !s.success()), "{:?}", f.exit);
            assert!(
                f.log
                    .contains("token-exchange-filter: configuration refused"),
                "{}",
                f.log
            );
            assert!(
                f.log
                    .contains("rules[0].mint.ttl_seconds: must be an integer between 1 and 86400"),
                "{}",
                f.log
            );
            assert!(
                f.log.contains("rules[0].match.pathprefix: unknown field"),
                "{}",
                f.log
            );
            assert!(f.log.contains("configured to fail closed"), "{}", f.log);
        }
    }
    assert_eq!(upstream.count(), 0);
}

/// One request to a listener of the verifier chain, with what the upstream and the audit saw.
fn chain_send(
    envoy: &Envoy,
    upstream: &Upstream,
    port: u16,
    path: &str,
    token: &str,
    id: &str,
) -> Exchange {
    send_to(envoy, upstream, port, path, Some(token), &[], id)
}

/// One GET to `port` with `x-request-id: id`, an optional bearer token and extra headers,
/// with what the upstream and the audit saw of it.
fn send_to(
    envoy: &Envoy,
    upstream: &Upstream,
    port: u16,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    id: &str,
) -> Exchange {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-request-id", id)];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    let seen = upstream.count();
    let before = unix_now();
    let response = http(port, "GET", path, &headers, b"");
    let after = unix_now();
    Exchange {
        response,
        upstream: upstream.records()[seen..].to_vec(),
        audit: envoy.audit_for(id, true),
        before,
        after,
    }
}

/// Minted tokens meet an independent strict verifier: Envoy's own `jwt_authn`, on a second
/// listener in front of the upstream with the gateway's public JWKS inline, accepts each for
/// the right audience (200) and refuses it for another (403 "Audiences in Jwt are not
/// allowed"), for every signing algorithm (EdDSA, ES256, RS256, HS256), with `sub` listed in
/// `preserve_claims` (a repeated `sub` made jwt_authn answer 401 "Jwt payload is an invalid
/// JSON"). PyJWT verifies the same tokens. Real providers' user and machine tokens go
/// through the EdDSA gateway and the verifier too.
#[test]
fn minted_tokens_pass_envoy_jwt_authn_and_pyjwt() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let started = Instant::now();
    let wasm = envoy::build_wasm();
    let es = Issuer::es256("https://es.idp.test", "es-1", 7);
    let all_providers = providers::all();
    let gateways: Vec<Gateway> = ["EdDSA", "ES256", "RS256", "HS256"]
        .iter()
        .map(|alg| Gateway::with_alg(alg, &format!("gw-{alg}")))
        .collect();
    let mut listeners = Vec::new();
    let mut jwks_keys = Vec::new();
    for gw in &gateways {
        let mut orders = orders_rule();
        orders["require"] = json!({ "issuers": [es.iss], "scopes": ["orders:read"] });
        orders["mint"]["preserve_claims"] = json!(["sub", "tenant"]);
        // Misrouted on purpose: /billing is minted for orders-service.
        let mut billing = orders.clone();
        billing["name"] = json!("billing-misrouted");
        billing["match"] = json!({ "path_prefix": "/billing" });
        let mut rules = vec![orders, billing];
        rules.extend(all_providers.iter().map(providers::Provider::rule));
        let mut trusted = vec![es.trusted(&["api"])];
        trusted.extend(all_providers.iter().map(providers::Provider::trusted));
        let pol = json!({
            "issuer": gw.iss,
            "signing_keys": [gw.private_jwk()],
            "allow_hs256_signing": gw.alg() == "HS256",
            "trusted_issuers": trusted,
            "rules": rules,
        });
        // The verifier gets what the gateway publishes (Policy::public_jwks); for HS256,
        // never published, the shared secret.
        let published = load(&pol).public_jwks();
        jwks_keys.push(match published["keys"].as_array().unwrap().first() {
            Some(k) => k.clone(),
            None => gw.verifier_jwk(),
        });
        listeners.push((gw.alg().to_ascii_lowercase(), pol, free_port()));
    }
    let jwks = json!({ "keys": jwks_keys });
    let upstream = Upstream::start();
    let dir = envoy::scratch_dir("jwt-authn");
    let (verifier_port, admin_port) = (free_port(), free_port());
    let config = envoy::verifier_chain_config(
        &wasm,
        &listeners,
        verifier_port,
        "https://gateway.test",
        &jwks,
        admin_port,
        upstream.port,
    );
    let envoy = Envoy::start_config(&bin, &dir, &config, listeners[0].2, admin_port, 1)
        .unwrap_or_else(|f| panic!("Envoy did not start ({:?}):\n{}", f.exit, f.log));
    eprintln!("jwt_authn e2e: setup took {:?}", started.elapsed());

    let mut pyjwt_cases = Vec::new();
    let mut n = 0;
    let mut id = |what: &str| {
        n += 1;
        format!("authn-{}-{n}-{what}", std::process::id())
    };
    for (gw, (_, _, port)) in gateways.iter().zip(&listeners) {
        let alg = gw.alg();
        // The right audience: jwt_authn forwards it, the upstream gets the minted token.
        let c = es.claims(unix_now(), "orders:read");
        let t = es.sign(&c);
        let x = chain_send(&envoy, &upstream, *port, "/orders/1", &t, &id(alg));
        assert_eq!(
            x.response.status,
            200,
            "{alg}: {:?}\n{}",
            x.response,
            envoy.log()
        );
        assert_eq!(x.upstream.len(), 1, "{alg}");
        let minted = x.upstream[0].header_all("authorization")[0]
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        let (header, claims) = gw.verify(&minted, unix_now());
        assert_eq!(header["alg"], alg);
        assert_eq!(claims["sub"], "alice", "{alg}");
        assert_eq!(claims["tenant"], "acme", "{alg}");
        assert_eq!(claims["aud"], "orders-service");
        assert!(claims["exp"].as_u64().unwrap() <= x.after + 60);
        assert!(claims["iat"].as_u64().unwrap() + 1 >= x.before);
        assert_eq!(x.audit[0]["minted_kid"], gw.kid.as_str());
        pyjwt_cases.push(json!({
            "token": minted, "jwk": gw.verifier_jwk(), "alg": alg,
            "audience": "orders-service", "issuer": gw.iss,
        }));

        // Another audience: the gateway exchanged it, jwt_authn refuses it.
        let t = es.sign(&es.claims(unix_now(), "orders:read"));
        let x = chain_send(&envoy, &upstream, *port, "/billing/1", &t, &id(alg));
        assert_eq!(x.response.status, 403, "{alg}: {:?}", x.response);
        assert_eq!(x.response.body, "Audiences in Jwt are not allowed", "{alg}");
        assert!(x.upstream.is_empty(), "{alg}: reached the upstream");
        assert_eq!(
            x.audit[0]["reason"], "exchanged",
            "{alg}: the 403 is jwt_authn's"
        );
    }

    // The verifier is strict: a payload with `sub` twice (what the filter minted before it
    // built payloads as one JSON object), signed with the gateway's key, is refused.
    let now = unix_now();
    let duplicated = gateways[0].sign_raw(
        &json!({ "alg": "EdDSA", "kid": gateways[0].kid, "typ": "at+jwt" }).to_string(),
        &format!(
            r#"{{"iss":"https://gateway.test","sub":"user-42","aud":"orders-service","iat":{now},"exp":{},"scope":"orders:read","sub":"user-42"}}"#,
            now + 60
        ),
    );
    let x = http(
        verifier_port,
        "GET",
        "/orders/1",
        &[("authorization", &format!("Bearer {duplicated}"))],
        b"",
    );
    assert_eq!(x.status, 401, "{x:?}");
    assert_eq!(x.body, "Jwt payload is an invalid JSON");

    // Providers' tokens, user and machine, through the EdDSA gateway and the verifier.
    let (gw, port) = (&gateways[0], listeners[0].2);
    for prov in &all_providers {
        for (kind, claims, caller) in [
            ("user", prov.user_claims(unix_now()), prov.user),
            ("machine", prov.machine_claims(unix_now()), prov.machine),
        ] {
            let what = format!("{} {kind}", prov.name);
            let t = prov.sign(&claims);
            let path = format!("/{}/orders/7", prov.name);
            let x = chain_send(&envoy, &upstream, port, &path, &t, &id(prov.name));
            let a = &x.audit[0];
            assert_eq!(a["caller"], caller.client, "{what}: {a}");
            assert_eq!(a["token_verified"], true, "{what}: {a}");
            match caller.scope {
                Some(scope) => {
                    assert_eq!(x.response.status, 200, "{what}: {:?} {a}", x.response);
                    let minted = x.upstream[0].header_all("authorization")[0]
                        .strip_prefix("Bearer ")
                        .unwrap()
                        .to_owned();
                    let (_, c) = gw.verify(&minted, unix_now());
                    assert_eq!(c["client_id"], caller.client, "{what}");
                    assert_eq!(c["scope"], scope, "{what}");
                }
                None => {
                    assert_eq!(x.response.status, 403, "{what}");
                    assert_eq!(a["reason"], "no_grantable_scope", "{what}");
                    assert!(x.upstream.is_empty());
                }
            }
        }
    }
    // The skipped Keycloak encryption key was logged at warn level, by kid.
    let log = envoy.log();
    assert!(
        log.lines().any(|l| l.contains("[warning]")
            && l.contains("Zc1jd1uBbSwIN8vBf0HDVPbjPzPA4tKd7vVFf9DCRAc")
            && l.contains("use \"enc\"")),
        "no warning about Keycloak's encryption key"
    );

    // PyJWT, an independent verifier, on the tokens jwt_authn accepted.
    let mut child = Command::new(envoy::venv_python())
        .arg(envoy::root().join("tests/tests/envoy/verify_pyjwt.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(Value::Array(pyjwt_cases).to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verify_pyjwt.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), gateways.len());
    for (r, gw) in results.iter().zip(&gateways) {
        assert_eq!(r["ok"], true, "PyJWT refused the {} token: {r}", gw.alg());
        assert_eq!(r["typ"], "at+jwt");
    }
}

/// envoy-example/production.yaml in the real Envoy: `--mode validate`, then requests through
/// the gateway and the jwt_authn-protected service behind it.
#[test]
fn envoy_production_config_validates_and_serves() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let wasm = envoy::build_wasm();
    let read_json = |path: &str| -> Value {
        serde_json::from_slice(&std::fs::read(envoy::root().join(path)).unwrap()).unwrap()
    };
    let mut policy = read_json("envoy-example/demo-policy.json");
    // The demo issuer's keys are fetched through production.yaml's cluster.
    policy["trusted_issuers"][0]["jwks_upstream"] = json!("idp_jwks");
    let jwks = json!({ "keys": [read_json("envoy-example/demo-keys/gateway-signing-key.public.jwk.json")] });
    let upstream = Upstream::start();
    let jwks_port = envoy::free_port();
    let mut jwks_server = Command::new(envoy::root().join(".venv/bin/python"))
        .arg(envoy::root().join("envoy-example/jwks_server.py"))
        .args(["--port", &jwks_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _jwks_server = KillOnDrop(&mut jwks_server);
    let (port, service_port, admin_port) =
        (envoy::free_port(), envoy::free_port(), envoy::free_port());
    // A JSON string literal is a valid YAML double-quoted scalar.
    let quoted = |v: &Value| serde_json::to_string(&v.to_string()).unwrap();
    let yaml = envoy::render_production(&[
        ("WASM_PATH", wasm.display().to_string()),
        ("POLICY_JSON", quoted(&policy)),
        ("GATEWAY_JWKS", quoted(&jwks)),
        (
            "GATEWAY_ISSUER",
            policy["issuer"].as_str().unwrap().to_owned(),
        ),
        ("LISTENER_PORT", port.to_string()),
        ("SERVICE_PORT", service_port.to_string()),
        ("UPSTREAM_PORT", upstream.port.to_string()),
        ("ADMIN_PORT", admin_port.to_string()),
        ("JWKS_PORT", jwks_port.to_string()),
    ]);
    let dir = envoy::scratch_dir("production");
    let config = dir.join("production.yaml");
    std::fs::write(&config, &yaml).unwrap();

    let validate = Command::new(&bin)
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    assert!(validate.status.success(), "envoy --mode validate:\n{out}");
    assert!(out.contains("OK"), "{out}");

    let envoy = Envoy::start_with_config(&bin, &dir, &config, port, admin_port)
        .unwrap_or_else(|f| panic!("Envoy did not start ({:?}):\n{}", f.exit, f.log));
    let mint = |args: &[&str]| -> String {
        let out = Command::new(envoy::venv_python())
            .arg(envoy::root().join("envoy-example/mint_demo_token.py"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let original = mint(&[]);
    let bearer = format!("Bearer {original}");

    // Through the gateway: exchanged, then accepted by the service's jwt_authn.
    let r = http(
        port,
        "GET",
        "/orders/42",
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log());
    let records = upstream.records();
    assert_eq!(records.len(), 1);
    let auth = records[0].header_all("authorization");
    assert_eq!(auth.len(), 1);
    assert!(
        !auth[0].contains(&original),
        "the original token reached the service"
    );
    let minted = auth[0].strip_prefix("Bearer ").unwrap();
    let claims: Value = serde_json::from_slice(&unb64(minted.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["iss"], policy["issuer"]);
    assert_eq!(claims["aud"], "orders-service");

    // The service refuses what the gateway did not mint, and a missing token.
    let direct = http(
        service_port,
        "GET",
        "/orders/42",
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(direct.status, 401, "{direct:?}");
    assert_eq!(
        http(service_port, "GET", "/orders/42", &[], b"").status,
        401
    );

    // Refusals at the gateway: HTTP, and gRPC over HTTP/2 on the same port.
    let denied = http(port, "GET", "/orders/42", &[], b"");
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Bearer realm=\"demo-gateway\"")
    );
    let lacking = format!("Bearer {}", mint(&["--scope", "profile"]));
    let g = envoy::grpc_post(port, "/orders/42", &[("authorization", &lacking)]);
    assert_eq!(g.header("grpc-status"), Some("7"), "{g:?}");
    assert_eq!(
        http(port, "GET", "/other", &[("authorization", &bearer)], b"").status,
        403
    );
    // Path normalisation and escaped slashes, before the filter.
    let r = http(
        port,
        "GET",
        "/public/../orders/1",
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(upstream.records().last().unwrap().path, "/orders/1");
    assert_eq!(
        http(
            port,
            "GET",
            "/orders%2F1",
            &[("authorization", &bearer)],
            b""
        )
        .status,
        400
    );
    assert_eq!(
        upstream.count(),
        2,
        "only the two allowed requests reached the service"
    );

    // The counters with their tags.
    let c = envoy.custom_counters();
    assert_eq!(c["token_exchange.decision.allow"], 2);
    assert_eq!(c["token_exchange.decision.deny"], 3);
    assert_eq!(c["token_exchange.rule.orders-read.allow"], 2);
    let prometheus = envoy.admin_get("/stats/prometheus");
    assert_eq!(
        prometheus_sample(
            &prometheus,
            "token_exchange_deny",
            &[("token_exchange_reason", "no_matching_rule")]
        ),
        Some(1),
        "{prometheus}"
    );
    // The admin interface and both listeners are on 127.0.0.1 only.
    let doc: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        doc["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    for l in doc["static_resources"]["listeners"].as_array().unwrap() {
        assert_eq!(l["address"]["socket_address"]["address"], "127.0.0.1");
    }
}

/// Trust boundaries (issue 11) through a real Envoy, with tokens signed by PyJWT: shadow mode
/// (forwarded unchanged, the audit says what enforcing would have done), a two-hop chain
/// with its depth and cycle limits, step-up challenges as a client receives them, and
/// revocation applied by a configuration update to the running Envoy (LDS from a file: the
/// listener is replaced, the process keeps running).
#[test]
fn trust_boundaries_through_envoy() {
    use token_exchange_tests::trust::*;
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let started = Instant::now();
    let wasm = envoy::build_wasm();
    let t = Trust::new();
    let now = unix_now();
    let pid = std::process::id();
    let mut pol = t.policy(now);
    let upstream = Upstream::start();
    let dir = envoy::scratch_dir("trust");
    let (port, admin_port) = (free_port(), free_port());
    let lds = dir.join("lds.json");
    envoy::write_lds(&lds, &[envoy::gateway_listener(&wasm, &pol, port)]);
    let config = envoy::dynamic_config(&lds, admin_port, upstream.port);
    let envoy = Envoy::start_config(&bin, &dir, &config, port, admin_port, 1)
        .unwrap_or_else(|f| panic!("Envoy did not start ({:?}):\n{}", f.exit, f.log));

    // Every edge token comes from PyJWT, signed with the test issuers' keys.
    let idp_jwk = t.idp.private_ed25519_jwk();
    let claims = |scope: &str, jti: &str| t.claims(&t.idp, now, scope, &format!("{jti}-{pid}"));
    let mut weak = claims("admin", "weak");
    weak["acr"] = json!("urn:pwd");
    let mut unknown_time = claims("admin", "no-auth-time");
    unknown_time["acr"] = json!("urn:hwk");
    unknown_time.as_object_mut().unwrap().remove("auth_time");
    let mut strong = claims("admin", "strong");
    strong["acr"] = json!("urn:hwk");
    let edge = [
        claims("reports:read", "shadow"),
        claims("orders:read orders:write", "chain"),
        weak,
        unknown_time,
        strong,
        claims("orders:read", "revoke"),
        claims("orders:read", "after"),
    ];
    let cases: Vec<(Value, &str, &str, Value)> = edge
        .iter()
        .map(|c| (idp_jwk.clone(), "EdDSA", "k1", c.clone()))
        .collect();
    let tokens = envoy::pyjwt_tokens(&cases);
    let [shadow_token, chain_token, weak, unknown_time, strong, revoke_token, after_token] =
        <[String; 7]>::try_from(tokens).unwrap();
    eprintln!("trust e2e: setup took {:?}", started.elapsed());

    let mut n = 0;
    let mut send = |path: &str, token: Option<&str>, extra: &[(&str, &str)]| {
        n += 1;
        let x = send_to(
            &envoy,
            &upstream,
            port,
            path,
            token,
            extra,
            &format!("trust-{pid}-{n}"),
        );
        assert_eq!(x.audit.len(), 1, "{path}: one audit line: {:?}", x.audit);
        x
    };
    let upstream_bearer = |x: &Exchange| -> String {
        assert_eq!(x.response.status, 200, "{:?} {:?}", x.response, x.audit);
        assert_eq!(x.upstream.len(), 1);
        x.upstream[0].header_all("authorization")[0]
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    };
    let denied = |x: &Exchange, status: u16, reason: &str| -> String {
        assert_eq!(x.response.status, status, "{reason}: {:?}", x.response);
        assert!(x.upstream.is_empty(), "{reason}: reached the upstream");
        assert_eq!(x.audit[0]["reason"], reason, "{}", x.audit[0]);
        x.response.header("www-authenticate").unwrap().to_owned()
    };

    // Shadow mode: no token, yet forwarded as it came (minus identity headers).
    let x = send("/reports/q1", None, &[("x-forwarded-user", "mallory")]);
    assert_eq!(x.response.status, 200, "{:?}", x.response);
    assert_eq!(x.upstream.len(), 1, "shadow forwards");
    assert!(x.upstream[0].header_all("authorization").is_empty());
    assert!(x.upstream[0].header_all("x-forwarded-user").is_empty());
    let a = &x.audit[0];
    assert_eq!(
        (&a["mode"], &a["decision"], &a["reason"], &a["status"]),
        (
            &json!("shadow"),
            &json!("deny"),
            &json!("missing_token"),
            &json!(401)
        ),
        "{a}"
    );
    let x = send("/reports/q1", Some(&shadow_token), &[]);
    assert_eq!(
        upstream_bearer(&x),
        shadow_token,
        "shadow forwards the original token"
    );
    let a = &x.audit[0];
    assert_eq!(
        (&a["mode"], &a["decision"]),
        (&json!("shadow"), &json!("allow")),
        "{a}"
    );
    assert_eq!(a["minted_aud"], "reports-service");

    // A two-hop chain: edge exchange, then orders-service presents what it received.
    let x = send("/orders/1", Some(&chain_token), &[]);
    let t1 = upstream_bearer(&x);
    let (_, c1) = t.gw.verify(&t1, unix_now());
    assert_eq!(c1["act"]["sub"], "web-app");
    let x = send("/billing/1", Some(&t1), &[]);
    let t2 = upstream_bearer(&x);
    let (_, c2) = t.gw.verify(&t2, unix_now());
    assert_eq!(c2["aud"], "billing-service");
    assert_eq!(c2["scope"], "orders:read");
    assert!(c2["exp"].as_u64() <= c1["exp"].as_u64());
    assert_eq!(c2["act"]["sub"], "orders-service");
    assert_eq!(c2["act"]["act"]["rule"], "orders");
    assert_eq!(c2["exchanged_from"]["token_id"], format!("chain-{pid}"));
    let a = &x.audit[0];
    assert_eq!(
        (&a["origin_iss"], &a["chain_depth"], &a["caller"]),
        (&json!(IDP), &json!(2), &json!("orders-service")),
        "{a}"
    );
    let challenge = denied(&send("/ledger/1", Some(&t2), &[]), 403, "chain_too_deep");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    denied(&send("/loop/1", Some(&t2), &[]), 403, "chain_cycle");
    denied(
        &send("/orders/1", Some(&t1), &[]),
        401,
        "gateway_token_replay",
    );
    let x = send("/deep-ledger/1", Some(&t2), &[]);
    let (_, c3) = t.gw.verify(&upstream_bearer(&x), unix_now());
    assert_eq!(c3["act"]["act"]["act"]["sub"], "web-app");

    // Step-up, as the client sees it.
    let x = send("/admin/1", Some(&weak), &[]);
    let challenge = denied(&x, 401, "acr_not_satisfied");
    assert_eq!(
        challenge,
        r#"Bearer realm="token-exchange", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="urn:mfa urn:hwk", max_age="300""#
    );
    let body: Value = serde_json::from_str(&x.response.body).unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    let challenge = denied(
        &send("/admin/1", Some(&unknown_time), &[]),
        401,
        "authentication_too_old",
    );
    assert!(challenge.contains(r#"error_description="more recent authentication is required""#));
    assert!(challenge.ends_with(r#"max_age="300""#), "{challenge}");
    let x = send("/admin/1", Some(&strong), &[]);
    assert_eq!(
        t.gw.verify(&upstream_bearer(&x), unix_now()).1["aud"],
        "admin-service"
    );

    // Revocation by a configuration update of the running Envoy.
    let x = send("/orders/1", Some(&revoke_token), &[]);
    let t1r = upstream_bearer(&x);
    upstream_bearer(&send("/billing/1", Some(&t1r), &[]));
    pol["revoked"]["jti"] = json!([REVOKED_JTI, format!("revoke-{pid}")]);
    envoy::write_lds(&lds, &[envoy::gateway_listener(&wasm, &pol, port)]);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let x = send("/orders/1", Some(&revoke_token), &[]);
        if x.response.status == 401 {
            denied(&x, 401, "token_revoked");
            break;
        }
        assert_eq!(
            x.response.status, 200,
            "before the update takes effect: {:?}",
            x.response
        );
        assert!(
            Instant::now() < deadline,
            "the configuration update never took effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let x = send("/billing/1", Some(&t1r), &[]);
    denied(&x, 401, "token_revoked");
    assert_eq!(x.audit[0]["origin_token_id"], format!("revoke-{pid}"));
    upstream_bearer(&send("/orders/1", Some(&after_token), &[]));
    cli_audit_reads_the_trust_log(&envoy, &format!("revoke-{pid}"));
    let log = envoy.log();
    assert!(
        log.matches("token-exchange-filter: policy loaded").count() >= 2,
        "no reload in the log"
    );
    assert!(!log.contains("configuration refused"), "{log}");
    // The partner's overdue review was reported when the policy loaded.
    assert!(
        log.lines().any(|l| l.contains("[warning]")
            && l.contains(PARTNER)
            && l.contains("overdue for review")),
        "no review warning"
    );
    eprintln!("trust e2e: {n} requests, {:?} in all", started.elapsed());
}
