//! The root context: loads the policy from the plugin configuration.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi::{self, Buffer, Level};
use super::http::ExchangeFilter;
use super::metrics::{self, Counter};
use crate::core::{ExchangeCache, Policy};

/// A loaded policy and the verified-and-minted cache that goes with it: a new policy (and
/// so possibly a new signing key) always comes with a new, empty cache.
pub struct Loaded {
    /// The policy in force.
    pub policy: Policy,
    /// This VM's cache for it (the VM is single-threaded; the request path borrows it
    /// briefly and never re-entrantly).
    pub cache: RefCell<ExchangeCache>,
}

/// Holds the policy in force. A refused update leaves the previous policy in place.
#[derive(Default)]
pub struct ExchangeRoot {
    loaded: Option<Rc<Loaded>>,
}

impl Context for ExchangeRoot {}

impl RootContext for ExchangeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Never read properties here: some hosts trap on request-scoped reads at configure time.
        // Metrics are defined here rather than in on_vm_start: after a trap, Kong starts a new
        // instance with on_configure only.
        metrics::define_fixed();
        let bytes = match abi::buffer(Buffer::PluginConfiguration) {
            Ok(Some(b)) => b,
            Ok(None) => {
                abi::log(
                    Level::Error,
                    "token-exchange-filter: configuration refused: no plugin configuration given",
                );
                metrics::increment(Counter::ConfigRejected);
                return false;
            }
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused: cannot read plugin configuration (host status {})", s.0),
                );
                metrics::increment(Counter::HostCallFailed);
                metrics::increment(Counter::ConfigRejected);
                return false;
            }
        };
        match Policy::from_json(&bytes) {
            Ok(policy) => {
                abi::log(
                    Level::Info,
                    &format!(
                        "token-exchange-filter: policy loaded: issuer {:?}, {} trusted issuer(s), {} rule(s), signing kid {:?}, cache {}",
                        policy.issuer,
                        policy.trusted_issuers.len(),
                        policy.rules.len(),
                        policy.active_signing_key().map(|k| k.kid()).unwrap_or(""),
                        if policy.cache.enabled {
                            format!(
                                "on ({} entries, {} bytes, reuse {}/1000 of a minted lifetime)",
                                policy.cache.max_entries,
                                policy.cache.max_bytes,
                                policy.cache.reuse_permille
                            )
                        } else {
                            "off".to_owned()
                        }
                    ),
                );
                for warning in &policy.warnings {
                    abi::log(
                        Level::Warn,
                        &format!("token-exchange-filter: configuration warning: {warning}"),
                    );
                }
                let merged = metrics::define_rules(policy.rules.iter().map(|r| &*r.name));
                for rule in merged {
                    abi::log(
                        Level::Warn,
                        &format!("token-exchange-filter: rule {rule:?} shares its metric name with an earlier rule (names keep only letters, digits, '-' and '_'): their counts merge"),
                    );
                }
                metrics::increment(Counter::ConfigLoaded);
                let cache = RefCell::new(policy.new_cache());
                self.loaded = Some(Rc::new(Loaded { policy, cache }));
                true
            }
            Err(errors) => {
                let kept = if self.loaded.is_some() {
                    "; the previous policy stays in force"
                } else {
                    ""
                };
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused{kept}: {errors}"),
                );
                metrics::increment(Counter::ConfigRejected);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ExchangeFilter::new(self.loaded.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
