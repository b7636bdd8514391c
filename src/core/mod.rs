//! The host-free policy core: configuration, token validation, rule matching, policy
//! evaluation, minting and the audit record. No Proxy-Wasm call is made from here: time and
//! randomness are arguments, decisions are values. It compiles and is tested natively.

pub mod audit;
pub mod cache;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod decide;
pub mod entropy;
pub mod grpc;
pub mod json;
pub mod jwks;
pub mod keys;
pub mod mint;
pub mod names;
pub mod reason;
pub mod routing;
pub mod signing;
pub mod syntax;
pub mod token;
pub mod validate;

pub use audit::{AuditRecord, CacheUse, Outcome};
pub use cache::{CacheSettings, Exchange, ExchangeCache};
pub use claims::ClaimMapping;
pub use config::{ConfigError, ConfigErrors, ConfigWarning, ExchangeRule, Policy, TrustedIssuer};
pub use decide::{Decision, Denial, HttpRequest, Verdict};
pub use entropy::{Entropy, EntropyError};
pub use mint::MintedToken;
pub use reason::{BearerError, DenyReason};
