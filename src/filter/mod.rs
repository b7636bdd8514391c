//! The Proxy-Wasm glue: the ABI entry points in `exports`, configuration and ticks in
//! `root`, the request path in `http`, counters in `metrics`, fetched keys in `fetch`,
//! introspection calls in `introspect`, generated keys in `generated`, shared data in
//! `shared`, host calls that cannot panic in `abi`. Only built for wasm32: the policy core
//! is what native tests cover.

mod abi;
mod env;
mod exports;
mod fetch;
mod generated;
mod http;
mod introspect;
mod metrics;
mod root;
mod shared;
