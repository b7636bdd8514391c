//! The root context: loads the policy from the plugin configuration, and reminds the
//! operator of overdue allow-list reviews and expired issuers (at load, then once a day from
//! `on_tick`).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi::{self, Buffer, Level};
use super::http::{now, ExchangeFilter};
use super::metrics::{self, Counter};
use crate::core::lifecycle;
use crate::core::{Policy, ReviewReminder};

/// How often `on_tick` checks for reminders; they are logged at most once per UTC day.
const TICK_PERIOD_MS: u32 = 60_000;

/// Holds the policy in force. A refused update leaves the previous policy in place.
#[derive(Default)]
pub struct ExchangeRoot {
    policy: Option<Rc<Policy>>,
    reminder: ReviewReminder,
    tick_period_set: bool,
}

impl ExchangeRoot {
    /// Logs the allow list's reminders, if any are due today.
    fn remind(&mut self) {
        let Some(policy) = &self.policy else { return };
        for notice in self.reminder.due(policy, now().as_secs()) {
            abi::log(Level::Warn, &format!("token-exchange-filter: {notice}"));
        }
    }
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
                        "token-exchange-filter: policy loaded: issuer {:?}, {} trusted issuer(s), {} rule(s), signing kid {:?}",
                        policy.issuer,
                        policy.trusted_issuers.len(),
                        policy.rules.len(),
                        policy.active_signing_key().map(|k| k.kid()).unwrap_or("")
                    ),
                );
                for warning in &policy.warnings {
                    abi::log(
                        Level::Warn,
                        &format!("token-exchange-filter: configuration warning: {warning}"),
                    );
                }
                let merged = metrics::define_rules(policy.rules.iter().map(|r| r.name.as_str()));
                for rule in merged {
                    abi::log(
                        Level::Warn,
                        &format!("token-exchange-filter: rule {rule:?} shares its metric name with an earlier rule (names keep only letters, digits, '-' and '_'): their counts merge"),
                    );
                }
                metrics::increment(Counter::ConfigLoaded);
                let dated = lifecycle::has_dates(&policy);
                self.policy = Some(Rc::new(policy));
                // A new policy is reminded about at once, whatever was logged today.
                self.reminder = ReviewReminder::default();
                self.remind();
                if dated && !self.tick_period_set {
                    self.tick_period_set = abi::set_tick_period(TICK_PERIOD_MS);
                }
                true
            }
            Err(errors) => {
                let kept = if self.policy.is_some() {
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

    fn on_tick(&mut self) {
        self.remind();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ExchangeFilter::new(self.policy.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
