//! The host-free policy core: configuration, token validation, rule matching, policy
//! evaluation, minting and the audit record. No Proxy-Wasm call is made from here: time and
//! randomness are arguments, decisions are values. It compiles and is tested natively.

pub mod audit;
pub mod config;
pub mod crypto;
pub mod decide;
pub mod json;
pub mod keys;
pub mod mint;
pub mod reason;
pub mod token;
pub mod validate;

pub use audit::{AuditRecord, Outcome};
pub use config::{ConfigError, ConfigErrors, ExchangeRule, Policy, TrustedIssuer};
pub use decide::{Decision, Denial, HttpRequest, Verdict};
pub use mint::{Entropy, EntropyError, MintedToken};
pub use reason::{BearerError, DenyReason};
