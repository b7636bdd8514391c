//! An in-repo Proxy-Wasm host (ABI 0.2.1) on Wasmtime, for fast and deterministic filter tests.
//!
//! See the crate README for the full guide. In short:
//!
//! ```no_run
//! use wasm_test_harness::{build, Host};
//!
//! let wasm = build::filter_wasm().unwrap();
//! let host = Host::envoy();
//! let vm = host.load(&wasm, br#"{"issuer":"https://gateway.test"}"#).unwrap();
//! let r = vm.request(&[(":path", "/orders"), (":method", "GET")]);
//! assert_eq!(r.local_response().map(|l| l.status), Some(401));
//! ```
//!
//! Everything runs on the calling thread: one [`Host`] owns any number of [`Vm`]s (like
//! Envoy's worker threads) which share the host's clock, shared data, metrics, pending HTTP
//! calls and log capture.

mod abi;
pub mod build;
mod callouts;
mod host;
pub mod imports;
mod types;

pub use host::{Host, Request, RequestSpec, Vm};
pub use imports::{ImportReport, Support};
pub use types::{
    Action, Error, ErrorKind, HttpCall, HttpCallResponse, LocalResponse, LogEntry, LogLevel,
    MetricKind, Profile,
};
