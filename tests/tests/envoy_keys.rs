//! Living keys under a real Envoy 1.40 with the release wasm:
//!
//! - the issuer's keys come from a JWKS server of our own on 127.0.0.1 behind an Envoy
//!   cluster (`jwks_upstream`); it rotates (a new `kid` is refetched when a token names it),
//!   is stopped (the last keys stay in use; the failure is logged once) and restarted (the
//!   filter recovers);
//! - a second listener runs Envoy's own `jwt_authn` with `remote_jwks` pointed at the
//!   filter's `jwks_path`: it accepts the minted token for the right audience and refuses
//!   it for another, before and after a signing-key rotation done by a configuration update
//!   (the gateway listener comes from a file Envoy watches: LDS), and tokens signed before
//!   the rotation keep verifying;
//! - the gateway also serves its OpenID configuration.
//!
//! Tokens are minted by PyJWT (envoy-example/mint_demo_token.py) with TEST-ONLY keys made
//! for the run (tests/tests/envoy/issuer_keys.py).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
mod envoy;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use token_exchange_tests::{minted_token_parts, orders_rule, Gateway};

use envoy::{free_port, http, unix_now, Envoy, Upstream};

const IDP: &str = "https://idp.test";
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A JWKS endpoint on 127.0.0.1: serves `/keys` with the current document, counts requests,
/// can be stopped (connections refused) and started again on the same port.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    /// The `Host` of every request.
    hosts: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(port: u16, body: &str) -> JwksServer {
        let mut s = JwksServer {
            port,
            body: Arc::new(Mutex::new(body.to_owned())),
            hits: Arc::new(AtomicUsize::new(0)),
            hosts: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        s.resume();
        s
    }

    fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (body, hits, hosts, stop) = (
            self.body.clone(),
            self.hits.clone(),
            self.hosts.clone(),
            self.stop.clone(),
        );
        self.thread = Some(thread::spawn(move || loop {
            if stop.load(Ordering::SeqCst) {
                return; // dropping the listener: connections are refused from now on
            }
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut host = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        let l = line.trim_end().to_owned();
                        line.clear();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(h) = l.strip_prefix("host: ").or(l.strip_prefix("Host: ")) {
                            host = h.to_owned();
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    hosts.lock().unwrap().push(host);
                    let b = body.lock().unwrap().clone();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                        b.len()
                    );
                    let mut conn = conn;
                    let _ = conn.write_all(reply.as_bytes());
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn serve(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fresh TEST-ONLY ES256 keys: kid → (PEM path, public JWK).
fn issuer_keys(dir: &Path, kids: &[&str]) -> Vec<(PathBuf, Value)> {
    let out = Command::new(envoy::venv_python())
        .arg(envoy::root().join("tests/tests/envoy/issuer_keys.py"))
        .arg(dir)
        .args(kids)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    kids.iter()
        .zip(jwks)
        .map(|(kid, jwk)| (dir.join(format!("{kid}.TEST-ONLY.pem")), jwk))
        .collect()
}

/// A token from PyJWT, signed with `key` as `kid`.
fn pyjwt_token(key: &Path, kid: &str) -> String {
    let out = Command::new(envoy::venv_python())
        .arg(envoy::root().join("envoy-example/mint_demo_token.py"))
        .args(["--issuer", IDP, "--audience", "api", "--client", "web-app"])
        .args(["--scope", "orders:read", "--alg", "ES256", "--kid", kid])
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn keys_doc(keys: &[&Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The gateway's policy: the issuer's keys fetched from `http://idp.test/keys` through
/// cluster `idp_jwks`; `signing_keys` as given; `/orders` minted for `orders-service`, and
/// `/billing` too (so `jwt_authn`, which wants `billing-service` there, refuses it).
fn gateway_policy(signing_keys: Value) -> Value {
    // Minted tokens live 300 s: a retired key stays published that long.
    let mut orders = orders_rule();
    orders["mint"]["ttl_seconds"] = json!(300);
    let mut billing = orders.clone();
    billing["name"] = json!("billing");
    billing["match"] = json!({ "path_prefix": "/billing", "methods": ["GET"] });
    json!({
        "issuer": "https://gateway.test",
        "signing_keys": signing_keys,
        "jwks_path": JWKS_PATH,
        "discovery_path": "/.well-known/openid-configuration",
        "jwks_max_age_seconds": 1,
        "trusted_issuers": [{
            "issuer": IDP,
            "jwks_uri": "http://idp.test/keys",
            "jwks_upstream": "idp_jwks",
            "jwks_refresh_seconds": 10,
            "jwks_max_stale_seconds": 600,
            "jwks_timeout_ms": 1000,
            "jwks_min_refetch_seconds": 1,
            "algorithms": ["ES256"],
            "audiences": ["api"]
        }],
        "rules": [orders, billing],
        "strip_headers": ["x-forwarded-user"]
    })
}

/// The gateway listener as an LDS resource file (Envoy reloads it when the file is moved
/// into place).
fn write_lds(dir: &Path, wasm: &Path, policy: &Value, port: u16, version: u32) {
    let routes =
        json!([{ "name": "all", "match": { "prefix": "/" }, "route": { "cluster": "verifier" } }]);
    let filters = json!([
        envoy::wasm_filter(wasm, policy, "token_exchange_keys"),
        envoy::router_filter()
    ]);
    let mut listener = envoy::listener("gateway", port, routes, filters);
    listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    let doc = json!({ "version_info": version.to_string(), "resources": [listener] });
    let tmp = dir.join("lds.json.tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("lds.json")).unwrap();
}

fn bootstrap(dir: &Path, ports: &Ports) -> Value {
    let provider = |audience: &str| {
        json!({
            "issuer": "https://gateway.test",
            "audiences": [audience],
            "remote_jwks": {
                "http_uri": {
                    "uri": format!("http://127.0.0.1:{}{JWKS_PATH}", ports.gateway),
                    "cluster": "gateway",
                    "timeout": "2s"
                },
                "cache_duration": "1s"
            },
            "forward": true
        })
    };
    let jwt_authn = envoy::audience_checking_jwt_authn(provider);
    let to_upstream =
        json!([{ "name": "all", "match": { "prefix": "/" }, "route": { "cluster": "upstream" } }]);
    json!({
        "node": { "id": "e2e-keys", "cluster": "e2e-keys" },
        "admin": envoy::admin(ports.admin),
        "dynamic_resources": {
            "lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": dir.join("lds.json").display().to_string(),
                    "watched_directory": { "path": dir.display().to_string() }
                }
            }
        },
        "static_resources": {
            "listeners": [envoy::listener(
                "verifier",
                ports.verifier,
                to_upstream,
                json!([jwt_authn, envoy::router_filter()]),
            )],
            "clusters": [
                envoy::cluster("upstream", ports.upstream),
                envoy::cluster("verifier", ports.verifier),
                gateway_cluster(ports.gateway),
                envoy::cluster("idp_jwks", ports.jwks)
            ]
        }
    })
}

/// The cluster jwt_authn fetches the gateway's key set through: one request per connection,
/// so that after a listener update the fetch reaches the new listener, not a kept-alive
/// connection to the draining old one (which still serves the old key set).
fn gateway_cluster(port: u16) -> Value {
    let mut c = envoy::cluster("gateway", port);
    c["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": { "max_requests_per_connection": 1 },
            "explicit_http_config": { "http_protocol_options": {} }
        }
    });
    c
}

struct Ports {
    gateway: u16,
    verifier: u16,
    admin: u16,
    upstream: u16,
    jwks: u16,
}

/// Retries `f` every 250 ms for up to `secs` seconds until it returns `Some`.
fn eventually<T>(secs: u64, what: &str, envoy: &Envoy, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {secs} s\n{}", tail(&envoy.log()));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn get(port: u16, path: &str, token: Option<&str>) -> envoy::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    http(port, "GET", path, &headers, b"")
}

fn published_kids(port: u16) -> Vec<String> {
    let r = get(port, JWKS_PATH, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let jwks: Value = serde_json::from_str(&r.body).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(k.get("d").is_none(), "private member published: {k}");
            k["kid"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The minted token the upstream got last (jwt_authn forwards it).
fn last_minted(upstream: &Upstream) -> String {
    let records = upstream.records();
    let auth = records.last().unwrap().header_all("authorization")[0].to_owned();
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

#[test]
fn issuer_keys_fetched_and_gateway_keys_published_through_envoy() {
    let Some(bin) = envoy::require_envoy() else {
        return;
    };
    let wasm = envoy::build_wasm();
    let dir = envoy::scratch_dir("keys");
    let keys = issuer_keys(&dir, &["idp-a", "idp-b", "idp-c"]);
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    let mut jwks_server = JwksServer::start(free_port(), &keys_doc(&[&a.1]));
    let upstream = Upstream::start();
    let ports = Ports {
        gateway: free_port(),
        verifier: free_port(),
        admin: free_port(),
        upstream: upstream.port,
        jwks: jwks_server.port,
    };
    let gw1 = Gateway::with_alg("EdDSA", "gw-1");
    let gw2 = Gateway::with_alg("ES256", "gw-2");
    let state = |g: &Gateway, s: &str| {
        let mut jwk = g.private_jwk();
        jwk["state"] = json!(s);
        jwk
    };
    write_lds(
        &dir,
        &wasm,
        &gateway_policy(json!([gw1.private_jwk()])),
        ports.gateway,
        1,
    );
    let envoy = Envoy::start_config(
        &bin,
        &dir,
        &bootstrap(&dir, &ports),
        ports.gateway,
        ports.admin,
        2,
    )
    .unwrap_or_else(|e| panic!("Envoy did not start: {:?}\n{}", e.exit, e.log));
    let gateway = ports.gateway;

    // The first fetch: a token of key A is exchanged, and jwt_authn, which fetched the
    // gateway's keys from jwks_path, accepts the minted token.
    let token_a = pyjwt_token(&a.0, "idp-a");
    eventually(20, "first exchange", &envoy, || {
        (get(gateway, "/orders/1", Some(&token_a)).status == 200).then_some(())
    });
    assert!(jwks_server.hits() >= 1);
    assert!(
        jwks_server
            .hosts
            .lock()
            .unwrap()
            .iter()
            .all(|h| h == "idp.test"),
        "{:?}",
        jwks_server.hosts
    );
    let before_rotation = last_minted(&upstream);
    let (header, claims) = minted_token_parts(&before_rotation);
    assert_eq!(
        (header["kid"].as_str(), claims["aud"].as_str()),
        (Some("gw-1"), Some("orders-service"))
    );
    // Another audience: the gateway exchanged it, jwt_authn (billing-service) refuses it (403).
    let seen = upstream.count();
    let r = get(gateway, "/billing/1", Some(&token_a));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("Audiences in Jwt are not allowed"),
        "not jwt_authn's: {}",
        r.body
    );
    assert_eq!(
        upstream.count(),
        seen,
        "jwt_authn let the wrong audience through"
    );
    // The OpenID configuration points at the key set.
    let conf: Value =
        serde_json::from_str(&get(gateway, "/.well-known/openid-configuration", None).body)
            .unwrap();
    assert_eq!(
        conf["jwks_uri"],
        "https://gateway.test/.well-known/jwks.json"
    );

    // The provider rotates: a token of the new key B is refetched for and exchanged.
    jwks_server.serve(&keys_doc(&[&a.1, &b.1]));
    let hits = jwks_server.hits();
    let token_b = pyjwt_token(&b.0, "idp-b");
    eventually(10, "exchange after the provider's rotation", &envoy, || {
        (get(gateway, "/orders/2", Some(&token_b)).status == 200).then_some(())
    });
    assert!(jwks_server.hits() > hits, "no refetch for the new kid");

    // The endpoint stops: the last keys stay in use; the failure is logged, once.
    jwks_server.stop();
    let token_c = pyjwt_token(&c.0, "idp-c");
    let r = get(gateway, "/orders/3", Some(&token_c));
    assert_eq!(
        r.status, 401,
        "unknown kid while the endpoint is down: {}",
        r.body
    );
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    for t in [&token_a, &token_b] {
        assert_eq!(get(gateway, "/orders/4", Some(t)).status, 200);
    }
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("fetching keys of issuer") && l.contains("failed"))
            .count()
    };
    eventually(15, "the failure logged", &envoy, || {
        (failures(&envoy.log()) >= 1).then_some(())
    });
    // Back up with key C: recovered (a refetch for C, or the next refresh).
    jwks_server.serve(&keys_doc(&[&b.1, &c.1]));
    jwks_server.resume();
    eventually(25, "recovery with key C", &envoy, || {
        (get(gateway, "/orders/5", Some(&token_c)).status == 200).then_some(())
    });
    let log = envoy.log();
    assert_eq!(
        failures(&log),
        1,
        "one warning per state change:\n{}",
        tail(&log)
    );
    assert!(log.contains("recovered"), "{}", tail(&log));

    // The gateway's own rotation, by configuration updates: announce gw-2, then switch.
    write_lds(
        &dir,
        &wasm,
        &gateway_policy(json!([state(&gw1, "active"), state(&gw2, "published")])),
        gateway,
        2,
    );
    eventually(20, "gw-2 published", &envoy, || {
        (published_kids(gateway) == ["gw-1", "gw-2"]).then_some(())
    });
    thread::sleep(Duration::from_millis(1500)); // jwt_authn's cache of the key set
    let mut retired = state(&gw1, "retired");
    retired["retired_at"] = json!(unix_now());
    write_lds(
        &dir,
        &wasm,
        &gateway_policy(json!([retired, state(&gw2, "active")])),
        gateway,
        3,
    );
    let after = eventually(20, "minting with gw-2", &envoy, || {
        let r = get(gateway, "/orders/6", Some(&token_b));
        let minted = (r.status == 200).then(|| last_minted(&upstream));
        let done = minted
            .as_ref()
            .is_some_and(|t| minted_token_parts(t).0["kid"] == "gw-2");
        done.then_some(minted).flatten()
    });
    assert_eq!(minted_token_parts(&after).1["aud"], "orders-service");
    // jwt_authn still refuses the wrong audience with the new key.
    let seen = upstream.count();
    let r = get(gateway, "/billing/2", Some(&token_b));
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("Audiences in Jwt are not allowed"),
        "{}",
        r.body
    );
    assert_eq!(upstream.count(), seen);
    // A token signed before the rotation still verifies downstream (gw-1 is retired, not
    // gone, for the longest ttl_seconds).
    assert_eq!(published_kids(gateway), ["gw-1", "gw-2"]);
    thread::sleep(Duration::from_millis(1100));
    let r = get(ports.verifier, "/orders/7", Some(&before_rotation));
    assert_eq!(
        r.status, 200,
        "a token minted before the rotation: {}",
        r.body
    );
    // No original token ever reached the upstream.
    for rec in upstream.records() {
        for t in [&token_a, &token_b, &token_c] {
            assert!(!String::from_utf8_lossy(&rec.raw).contains(t.as_str()));
        }
    }
}
