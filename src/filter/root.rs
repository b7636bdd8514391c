//! The root context: loads the policy from the plugin configuration, adopts generated
//! signing keys, and keeps the fetched issuer keys current on every tick.

use std::rc::Rc;

use super::abi::{self, Buffer, Level};
use super::env::{now_ms, HostEntropy};
use super::fetch::{KeyFetcher, Wait, WaitPlan};
use super::generated;
use crate::core::keyset::KeySnapshot;
use crate::core::{Decision, Entropy, Policy};

/// How often the root looks at the fetch schedule (and at requests waiting for keys).
const TICK_MS: u32 = 500;

/// Holds the policy in force and the keys. A refused update leaves the previous policy in
/// place.
pub struct ExchangeRoot {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    keys: KeyFetcher,
    /// Whether the host gives this root ticks (APISIX does not: requests drive refreshes).
    ticks: bool,
}

impl ExchangeRoot {
    /// The root context `context_id`.
    pub fn new(context_id: u32) -> ExchangeRoot {
        let mut id = [0u8; 8];
        // A fixed id only makes this VM's lease indistinguishable from another's that also
        // lacks randomness; the lease still expires.
        let _ = HostEntropy.fill(&mut id);
        ExchangeRoot {
            context_id,
            policy: None,
            keys: KeyFetcher::new(u64::from_le_bytes(id)),
            ticks: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<Rc<Policy>> {
        self.policy.clone()
    }

    /// The keys requests are decided with.
    pub fn keys(&self) -> &KeySnapshot {
        self.keys.snapshot()
    }

    /// `proxy_on_configure`: parse and validate the policy, adopt its generated keys, read
    /// the keys other workers fetched, ask for ticks. Never calls out (Kong's host cannot
    /// from here) and never reads properties (some hosts trap on that here).
    pub fn on_configure(&mut self) -> bool {
        let bytes = match abi::buffer(Buffer::PluginConfiguration) {
            Ok(Some(b)) => b,
            Ok(None) => {
                abi::log(
                    Level::Error,
                    "token-exchange-filter: configuration refused: no plugin configuration given",
                );
                return false;
            }
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused: cannot read plugin configuration (host status {})", s.0),
                );
                return false;
            }
        };
        let kept = if self.policy.is_some() {
            "; the previous policy stays in force"
        } else {
            ""
        };
        let policy = match Policy::from_json(&bytes) {
            Ok(policy) => policy,
            Err(errors) => {
                abi::log(
                    Level::Error,
                    &format!("token-exchange-filter: configuration refused{kept}: {errors}"),
                );
                return false;
            }
        };
        let (store, snapshot) = self.keys.store_and_snapshot();
        if let Err(why) = generated::adopt(&policy, store, snapshot) {
            abi::log(
                Level::Error,
                &format!("token-exchange-filter: configuration refused{kept}: {why}"),
            );
            return false;
        }
        self.keys.configure(&policy);
        // Ticks drive the fetch schedule. Without key sources there is nothing to drive and
        // no timer is asked for (a tick left from an earlier policy finds nothing to do).
        if self.keys.has_sources() && !self.ticks {
            self.ticks = abi::set_tick_period(TICK_MS).is_ok();
            if !self.ticks {
                abi::log(
                    Level::Info,
                    "token-exchange-filter: no timer on this host: requests start key fetches and refreshes",
                );
            }
        }
        abi::log(
            Level::Info,
            &format!(
                "token-exchange-filter: policy loaded: issuer {:?}, {} trusted issuer(s), {} rule(s), signing kid {:?}",
                policy.issuer,
                policy.trusted_issuers.len(),
                policy.rules.len(),
                policy.active_key().map(|k| k.kid.as_str()).unwrap_or("")
            ),
        );
        for warning in &policy.warnings {
            abi::log(
                Level::Warn,
                &format!("token-exchange-filter: configuration warning: {warning}"),
            );
        }
        self.policy = Some(Rc::new(policy));
        true
    }

    /// `proxy_on_tick`: the fetch schedule.
    pub fn on_tick(&mut self) {
        self.keys.tick(now_ms(), self.context_id);
    }

    /// Work a tick would do, on hosts without ticks (before each request).
    pub fn before_request(&mut self, now: u64) {
        if !self.ticks {
            self.keys.expire(now);
        }
    }

    /// Whether `token` is one of this root's calls.
    pub fn owns_call(&self, token: u32) -> bool {
        self.keys.owns_call(token)
    }

    /// The answer to call `token`.
    pub fn on_http_call_response(&mut self, token: u32, _num_headers: usize, body_size: usize) {
        self.keys.on_response(token, body_size, now_ms());
    }

    /// Request context `context` went away.
    pub fn forget_calls_of(&mut self, context: u32) {
        self.keys.forget_calls_of(context);
    }

    /// Whether the request of `context`, decided as `decision`, waits for keys.
    pub fn wait_for_keys(&mut self, decision: &Decision, now: u64, context: u32) -> WaitPlan {
        self.keys
            .wait_for(decision.fetched_keys.as_ref(), !self.ticks, now, context)
    }

    /// Whether a request's wait for keys is over.
    pub fn wait_is_over(&self, wait: &Wait, now: u64) -> bool {
        self.keys.wait_is_over(wait, now)
    }
}
