//! token-exchange-filter: a Proxy-Wasm HTTP filter that validates a bearer JWT against an
//! explicit issuer allow list and per-route policy, then replaces it with a narrower token
//! minted by the gateway, auditing every decision.
//!
//! `core` is host-free and tested natively; `filter` is the thin Proxy-Wasm glue.
#![deny(unsafe_code)]

pub mod core;
#[cfg(target_arch = "wasm32")]
pub mod filter;
