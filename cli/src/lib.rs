//! The policy CLI (`token-exchange`): review, explain and test exchange policies with the
//! filter's own core (`token_exchange_filter::core`), without a gateway. Every decision comes
//! from the core's `Policy::decide`, every policy from `Policy::from_json`, every signature
//! from the core's signing keys: nothing here decides what the filter decides.
#![deny(unsafe_code)]

pub mod audit;
pub mod cases;
pub mod check;
pub mod explain;
pub mod fetched;
pub mod input;
pub mod keys;
pub mod outcome;
pub mod policy;
pub mod random;
