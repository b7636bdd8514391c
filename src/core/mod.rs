//! The host-free policy core: configuration, token validation, rule matching, policy
//! evaluation, minting and the audit record, the key snapshot decisions are made with, the
//! fetch schedule of issuers' keys, token introspection and the documents the gateway
//! publishes. No Proxy-Wasm call is made from here: time, randomness and fetched bytes are
//! arguments; decisions and I/O requests are values. It compiles and is tested natively.

pub mod audit;
pub mod cache;
pub mod ceiling;
pub mod chain;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod date;
pub mod decide;
pub mod entropy;
pub mod fetch;
pub mod grpc;
pub mod hygiene;
pub mod introspect;
pub mod json;
pub mod jwk;
pub mod jwks;
pub mod keys;
pub mod keyset;
pub mod lifecycle;
pub mod mint;
pub mod names;
pub mod publish;
pub mod reason;
pub mod request;
pub mod review;
pub mod routing;
pub mod signing;
pub mod step_up;
pub mod syntax;
pub mod token;
pub mod url;
pub mod validate;

pub use audit::{AuditRecord, CacheUse, Outcome};
pub use cache::{CacheSettings, Exchange, ExchangeCache};
pub use claims::ClaimMapping;
pub use config::{
    ConfigError, ConfigErrors, ConfigWarning, ExchangeRule, Introspection, Policy, RuleMode,
    StripAction, TrustedIssuer,
};
pub use decide::{Decision, Denial, HttpRequest, Verdict};
pub use entropy::{Entropy, EntropyError};
pub use keyset::KeySnapshot;
pub use lifecycle::ReviewReminder;
pub use mint::MintedToken;
pub use reason::{BearerError, DenyReason, Refusal};
pub use request::RequestHead;
pub use review::RuleFinding;
