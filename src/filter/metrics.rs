//! Counters through the Proxy-Wasm metrics ABI (`proxy_define_metric`,
//! `proxy_increment_metric`): decisions by outcome, by deny reason and by rule, tokens
//! minted, host-call failures, configuration loads.
//!
//! Names are dot-separated segments under `token_exchange.`; a tag value (outcome, reason,
//! rule) is always one whole segment, so Envoy's tag extraction (`stats_config.stats_tags`,
//! see the README) can split it off. Envoy shows them as `wasmcustom.<name>`.
//!
//! Every counter is defined once per VM (in `on_configure`, never per request), incremented
//! by 1 only (Kong traps on `increment_metric` for anything but a counter, and wraps a
//! counter below zero), and a metrics call that fails is ignored: it never changes a
//! decision and never traps. APISIX answers every metrics call "unimplemented", so there the
//! counters simply do not exist.

use std::cell::RefCell;

use super::abi;
use crate::core::{Decision, DenyReason, Outcome, Verdict};

/// Prefix of every metric name.
const PREFIX: &str = "token_exchange";
/// Longest rule name kept in a metric name (longer ones are cut; the README says so).
const MAX_RULE_SEGMENT: usize = 64;

/// Declares the fixed counters once: variant and metric name. Adding a counter (a JWKS fetch,
/// a cache hit) is one line here plus its `metrics::increment(Counter::...)` call.
macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// A counter with a fixed name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every fixed counter, in declaration order.
            pub const ALL: &'static [Counter] = &[ $( Counter::$variant, )* ];

            /// The metric name.
            pub fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }
        }
    };
}

counters! {
    /// Requests exchanged and forwarded.
    DecisionAllow => "token_exchange.decision.allow",
    /// Requests refused with a local response.
    DecisionDeny => "token_exchange.decision.deny",
    /// Requests forwarded untouched (`unmatched: pass`, or a rule in shadow mode).
    DecisionPass => "token_exchange.decision.pass",
    /// Requests the filter answered with a public document (`jwks_path`, `discovery_path`).
    DecisionServe => "token_exchange.decision.serve",
    /// Tokens signed (a token minted and then refused because a host call failed counts).
    TokensMinted => "token_exchange.minted",
    /// Exchanges served from the verified-and-minted cache (no verification, no signing).
    CacheHit => "token_exchange.cache.hit",
    /// Host calls on the request or configuration path that failed.
    HostCallFailed => "token_exchange.host_call_failed",
    /// Issuer key sets fetched successfully by this host's VMs (changed or not).
    JwksFetched => "token_exchange.jwks.fetched",
    /// Key-set or discovery fetches that failed (down, timeout, status, body, no usable key).
    JwksFetchFailed => "token_exchange.jwks.fetch_failed",
    /// Policies loaded (one per VM, and per accepted update).
    ConfigLoaded => "token_exchange.config.loaded",
    /// Configurations refused.
    ConfigRejected => "token_exchange.config.rejected",
}

/// The per-rule counters of one rule.
struct RuleCounters {
    name: String,
    allow: Option<u32>,
    deny: Option<u32>,
}

/// Counter ids of this VM; `None` where the host refused the definition.
#[derive(Default)]
struct Registry {
    defined: bool,
    fixed: Vec<Option<u32>>,
    deny: Vec<(DenyReason, Option<u32>)>,
    rules: Vec<RuleCounters>,
}

thread_local! {
    // One registry per VM: the Wasm instance is single-threaded.
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

fn with_registry(f: impl FnOnce(&mut Registry)) {
    // try_borrow_mut: a re-entrant call is skipped, never a panic.
    REGISTRY.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            f(&mut r);
        }
    });
}

fn define(name: &str) -> Option<u32> {
    abi::define_counter(name).ok()
}

/// Defines the fixed and per-reason counters, once per VM (later calls do nothing).
pub fn define_fixed() {
    with_registry(|r| {
        if r.defined {
            return;
        }
        r.defined = true;
        r.fixed = Counter::ALL.iter().map(|c| define(c.name())).collect();
        r.deny = DenyReason::ALL
            .iter()
            .map(|reason| (*reason, define(&deny_metric(*reason))))
            .collect();
    });
}

/// Defines the counters of a newly loaded policy's rules (bounded by the policy). Returns
/// the rule names whose metric segment another rule already uses (their counts merge).
pub fn define_rules<'a>(rule_names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut merged = Vec::new();
    with_registry(|r| {
        let mut rules: Vec<RuleCounters> = Vec::new();
        let mut segments = crate::core::names::NameIndex::default();
        for (i, name) in rule_names.into_iter().enumerate() {
            let segment = rule_segment(name);
            if segments.insert_first(&segment, i) != i {
                merged.push(name.to_owned());
            }
            rules.push(RuleCounters {
                name: name.to_owned(),
                allow: define(&rule_metric(&segment, "allow")),
                deny: define(&rule_metric(&segment, "deny")),
            });
        }
        r.rules = rules;
    });
    merged
}

/// Adds 1 to a fixed counter.
pub fn increment(counter: Counter) {
    with_registry(|r| {
        let index = Counter::ALL.iter().position(|c| *c == counter);
        bump(index.and_then(|i| r.fixed.get(i)).copied().flatten());
    });
}

/// Adds 1 to the counter of one deny reason.
pub fn increment_deny(reason: DenyReason) {
    with_registry(|r| {
        // `deny` is in `DenyReason::ALL` order, which is declaration order.
        let id = r
            .deny
            .get(reason as usize)
            .filter(|(known, _)| *known == reason);
        bump(id.and_then(|(_, id)| *id));
    });
}

/// Counts one carried-out decision: its outcome, its deny reason, its rule.
pub fn count_decision(decision: &Decision) {
    let outcome = decision.audit.decision;
    increment(match outcome {
        Outcome::Allow => Counter::DecisionAllow,
        Outcome::Deny => Counter::DecisionDeny,
        Outcome::Pass => Counter::DecisionPass,
        Outcome::Serve => Counter::DecisionServe,
    });
    if let Verdict::Deny(denial) = &decision.verdict {
        increment_deny(denial.reason);
    }
    with_registry(|r| {
        // By position: the registry's rules are the policy's, in order (no name search).
        if let Some(index) = decision.rule_index {
            let same_policy = |c: &&RuleCounters| decision.audit.rule.as_deref() == Some(&*c.name);
            if let Some(c) = r.rules.get(index).filter(same_policy) {
                bump(match outcome {
                    Outcome::Allow => c.allow,
                    Outcome::Deny => c.deny,
                    Outcome::Pass | Outcome::Serve => None,
                });
            }
        }
    });
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        // A failed increment is not worth more than this: the decision stands.
        let _ = abi::increment_counter(id, 1);
    }
}

/// `token_exchange.deny.<reason code>`.
pub fn deny_metric(reason: DenyReason) -> String {
    format!("{PREFIX}.deny.{}", reason.code())
}

/// `token_exchange.rule.<rule segment>.<outcome>`.
fn rule_metric(segment: &str, outcome: &str) -> String {
    format!("{PREFIX}.rule.{segment}.{outcome}")
}

/// A rule name as one metric-name segment: ASCII letters, digits, `-` and `_` kept, any
/// other character (a `.` would split the segment) replaced by `_`, at most 64 characters;
/// `_` for an empty name.
pub fn rule_segment(rule: &str) -> String {
    if rule.is_empty() {
        return "_".to_owned();
    }
    rule.chars()
        .take(MAX_RULE_SEGMENT)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
