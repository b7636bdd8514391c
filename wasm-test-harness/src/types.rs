//! Plain data types of the harness API.

use std::fmt;
use std::time::Duration;

/// Which real Proxy-Wasm host the harness imitates. See the README for every difference.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Envoy 1.40 (V8): full ABI 0.2.1, lower-case header names with pseudo-headers,
    /// integer properties as 8-byte little-endian.
    Envoy,
    /// Kong's ngx_wasm_module: client header casing, no pseudo-headers in the map,
    /// properties as decimal text, several functions trap ("not yet implemented").
    Kong,
    /// APISIX's wasm-nginx-module: no shared data, clock or tick (status 12, Unimplemented),
    /// no `proxy_get_log_level` import at all.
    Apisix,
}

impl Profile {
    /// Encodes an integer property the way this host does (8-byte LE on Envoy, decimal text
    /// on the nginx-based hosts).
    pub fn encode_int(self, value: i64) -> Vec<u8> {
        match self {
            Profile::Envoy => value.to_le_bytes().to_vec(),
            Profile::Kong | Profile::Apisix => value.to_string().into_bytes(),
        }
    }

    /// Human name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Envoy => "envoy",
            Profile::Kong => "kong",
            Profile::Apisix => "apisix",
        }
    }
}

/// Proxy-Wasm log levels (`proxy_log`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: i32) -> Option<LogLevel> {
        Some(match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        };
        f.write_str(s)
    }
}

/// One captured `proxy_log` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    /// Index of the VM (0 for the first [`crate::Host::load`], 1 for the second, ...).
    pub vm: usize,
    /// The context that was effective when the guest logged (1 = root context).
    pub context_id: u32,
    pub message: String,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}][vm {}][ctx {}] {}",
            self.level, self.vm, self.context_id, self.message
        )
    }
}

/// What `proxy_on_request_headers` returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// A response the filter produced itself with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    /// The "status code details" argument.
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The gRPC status argument (-1 when none).
    pub grpc_status: i32,
}

impl LocalResponse {
    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An HTTP call the guest dispatched with `proxy_http_call`, waiting for the test to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// Token the guest got back; pass it to [`crate::Host::answer_http_call`].
    pub token: u32,
    /// Index of the VM that made the call.
    pub vm: usize,
    /// Context that was effective when the call was made.
    pub context_id: u32,
    /// Cluster name (Envoy) or `host:port` (Kong).
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl HttpCall {
    /// First header with this name (case-insensitive), e.g. `":path"`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A scripted answer to an [`HttpCall`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl HttpCallResponse {
    /// A response with `:status` set.
    pub fn status(status: u16) -> Self {
        HttpCallResponse {
            headers: vec![(":status".to_string(), status.to_string())],
            ..Default::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// Metric types of `proxy_define_metric`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What went wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Building the filter with cargo failed.
    Build,
    /// The module did not compile or link (e.g. imports a function the profile lacks).
    Load,
    /// `proxy_on_vm_start` returned false.
    VmStartRejected,
    /// `proxy_on_configure` returned false.
    ConfigureRejected,
    /// The guest trapped (a Rust panic, `unreachable`, a host function the profile
    /// implements as a trap, ...). The VM is unusable afterwards.
    Trap,
    /// The VM trapped earlier and cannot be used.
    VmFailed,
    /// The test used the harness wrongly (unknown token, ...).
    Usage,
}

/// Harness error, carrying the guest's last log lines (which hold a panic message).
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The last log lines of the VM concerned (oldest first).
    pub logs: Vec<LogEntry>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            logs: Vec::new(),
        }
    }

    /// The guest's panic message, if a critical log line with one was captured.
    pub fn panic_message(&self) -> Option<&str> {
        self.logs
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Critical)
            .map(|l| l.message.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        if !self.logs.is_empty() {
            write!(f, "\nlast guest logs:")?;
            for l in &self.logs {
                write!(f, "\n  {l}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
