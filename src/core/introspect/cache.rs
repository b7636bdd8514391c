//! The answers of one issuer's introspection endpoint, kept per worker: keyed by the
//! token's SHA-256 (compared whole), active ones until min(`exp`, `cache_seconds`),
//! inactive ones for `negative_cache_seconds`, failures never.
//!
//! Bounded, with eviction an attacker cannot use to flush good entries cheaply: inactive
//! answers (which anyone can cause with made-up tokens) live in their own pool of a quarter
//! of the entries and only ever evict each other; an active answer takes a token the
//! provider issued. A full pool first drops what has expired, then what expires soonest.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Introspected, IntrospectionResult, TokenDigest};
use crate::core::config::Introspection;
use crate::core::validate::numeric_date;

/// One issuer's cached answers.
#[derive(Debug, Clone)]
pub struct IntrospectionCache {
    active: HashMap<TokenDigest, (u64, Arc<Map<String, Value>>)>,
    inactive: HashMap<TokenDigest, u64>,
    active_cap: usize,
    inactive_cap: usize,
    active_ms: u64,
    inactive_ms: u64,
}

impl IntrospectionCache {
    /// An empty cache with the bounds of `settings`.
    pub fn new(settings: &Introspection) -> IntrospectionCache {
        let inactive_cap = (settings.cache_max_entries / 4).max(1);
        IntrospectionCache {
            active: HashMap::new(),
            inactive: HashMap::new(),
            active_cap: settings
                .cache_max_entries
                .saturating_sub(inactive_cap)
                .max(1),
            inactive_cap,
            active_ms: settings.cache_seconds.saturating_mul(1000),
            inactive_ms: settings.negative_cache_seconds.saturating_mul(1000),
        }
    }

    /// The answer about `digest` still in force at `now_ms`.
    pub fn get(&self, digest: &TokenDigest, now_ms: u64) -> Option<IntrospectionResult> {
        if let Some((until, claims)) = self.active.get(digest) {
            if now_ms < *until {
                return Some(IntrospectionResult::Active(claims.clone()));
            }
        }
        match self.inactive.get(digest) {
            Some(until) if now_ms < *until => Some(IntrospectionResult::Inactive),
            _ => None,
        }
    }

    /// Keeps `answer` about `digest`, received at `now_ms`; returns the answer as a decision
    /// reads it (kept or not: an answer whose time is already up still decides the
    /// requests that waited for it).
    pub fn insert(
        &mut self,
        digest: TokenDigest,
        answer: Introspected,
        now_ms: u64,
    ) -> IntrospectionResult {
        match answer {
            Introspected::Active(mut claims) => {
                claims.remove("active");
                let claims = Arc::new(claims);
                // A token's answer never outlives the token; an unreadable `exp` is refused
                // when a request is decided, so the bound does not matter then.
                let exp_ms = match numeric_date(&claims, "exp") {
                    Ok(Some(exp)) => exp.saturating_mul(1000),
                    _ => u64::MAX,
                };
                let until = now_ms.saturating_add(self.active_ms).min(exp_ms);
                self.inactive.remove(&digest);
                if until > now_ms {
                    make_room(&mut self.active, self.active_cap, now_ms, |(u, _)| *u);
                    self.active.insert(digest, (until, claims.clone()));
                }
                IntrospectionResult::Active(claims)
            }
            Introspected::Inactive => {
                // A revoked token stops being active at once, whatever was cached.
                self.active.remove(&digest);
                let until = now_ms.saturating_add(self.inactive_ms);
                if until > now_ms {
                    make_room(&mut self.inactive, self.inactive_cap, now_ms, |u| *u);
                    self.inactive.insert(digest, until);
                }
                IntrospectionResult::Inactive
            }
        }
    }

    /// Entries held (active, inactive), expired ones included until they are dropped.
    pub fn len(&self) -> (usize, usize) {
        (self.active.len(), self.inactive.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.inactive.is_empty()
    }
}

/// Frees one place in a full pool: expired entries first, else the one expiring soonest.
fn make_room<V>(
    pool: &mut HashMap<TokenDigest, V>,
    cap: usize,
    now_ms: u64,
    until: impl Fn(&V) -> u64,
) {
    if pool.len() < cap {
        return;
    }
    pool.retain(|_, v| until(v) > now_ms);
    while pool.len() >= cap {
        // Ties broken by digest, so eviction does not depend on the map's order.
        let Some(victim) = pool
            .iter()
            .min_by_key(|(d, v)| (until(v), **d))
            .map(|(d, _)| *d)
        else {
            return;
        };
        pool.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::url::HttpUrl;
    use serde_json::json;

    const NOW_MS: u64 = 1_767_225_600_000;

    fn settings(cache: u64, negative: u64, entries: usize) -> Introspection {
        Introspection {
            endpoint: HttpUrl::parse("https://idp.test/introspect").unwrap(),
            upstream: "u".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            timeout_ms: 1000,
            max_bytes: 4096,
            cache_seconds: cache,
            negative_cache_seconds: negative,
            cache_max_entries: entries,
        }
    }

    fn active(exp_s: u64) -> Introspected {
        match json!({"active": true, "sub": "alice", "exp": exp_s}) {
            Value::Object(m) => Introspected::Active(m),
            _ => unreachable!(),
        }
    }

    fn d(i: u32) -> TokenDigest {
        TokenDigest::of(&format!("token-{i}"))
    }

    fn is_active(r: Option<IntrospectionResult>) -> bool {
        matches!(r, Some(IntrospectionResult::Active(_)))
    }

    #[test]
    fn active_until_the_earlier_of_exp_and_cache_seconds() {
        let mut c = IntrospectionCache::new(&settings(60, 10, 100));
        let now_s = NOW_MS / 1000;
        // exp far away: 60 s.
        let r = c.insert(d(1), active(now_s + 3600), NOW_MS);
        match r {
            IntrospectionResult::Active(m) => assert!(m.get("active").is_none()),
            other => panic!("{other:?}"),
        }
        assert!(is_active(c.get(&d(1), NOW_MS + 59_999)));
        assert_eq!(c.get(&d(1), NOW_MS + 60_000), None);
        // exp sooner: until exp.
        c.insert(d(2), active(now_s + 5), NOW_MS);
        assert!(is_active(c.get(&d(2), NOW_MS + 4_999)));
        assert_eq!(c.get(&d(2), NOW_MS + 5_000), None);
        // Already expired: decides its waiters, never kept.
        assert!(matches!(
            c.insert(d(3), active(now_s - 1), NOW_MS),
            IntrospectionResult::Active(_)
        ));
        assert_eq!(c.get(&d(3), NOW_MS), None);
        // Another token is not this one.
        assert_eq!(c.get(&d(4), NOW_MS), None);
    }

    #[test]
    fn inactive_for_negative_cache_seconds_and_revocation_wins() {
        let mut c = IntrospectionCache::new(&settings(60, 10, 100));
        assert_eq!(
            c.insert(d(1), Introspected::Inactive, NOW_MS),
            IntrospectionResult::Inactive
        );
        assert_eq!(
            c.get(&d(1), NOW_MS + 9_999),
            Some(IntrospectionResult::Inactive)
        );
        assert_eq!(c.get(&d(1), NOW_MS + 10_000), None);
        // Active, then revoked: the newer answer replaces the older.
        c.insert(d(2), active(NOW_MS / 1000 + 600), NOW_MS);
        c.insert(d(2), Introspected::Inactive, NOW_MS + 1);
        assert_eq!(
            c.get(&d(2), NOW_MS + 2),
            Some(IntrospectionResult::Inactive)
        );
        // Zero seconds: nothing kept.
        let mut none = IntrospectionCache::new(&settings(0, 0, 100));
        none.insert(d(1), active(NOW_MS / 1000 + 600), NOW_MS);
        none.insert(d(2), Introspected::Inactive, NOW_MS);
        assert!(none.is_empty());
    }

    #[test]
    fn made_up_tokens_never_evict_active_answers() {
        // 100 entries: 75 active, 25 inactive.
        let mut c = IntrospectionCache::new(&settings(60, 10, 100));
        let exp = NOW_MS / 1000 + 600;
        for i in 0..75 {
            c.insert(d(i), active(exp), NOW_MS);
        }
        // An attacker sends 10 000 made-up tokens, each answered inactive.
        for i in 1000..11_000 {
            c.insert(d(i), Introspected::Inactive, NOW_MS + 1);
        }
        assert_eq!(c.len(), (75, 25));
        for i in 0..75 {
            assert!(is_active(c.get(&d(i), NOW_MS + 2)), "{i}");
        }
    }

    #[test]
    fn full_pools_drop_expired_then_soonest_expiring() {
        let mut c = IntrospectionCache::new(&settings(60, 10, 8));
        // 6 active places, 2 inactive.
        let now_s = NOW_MS / 1000;
        for i in 0..6 {
            c.insert(d(i), active(now_s + 10 + u64::from(i)), NOW_MS);
        }
        c.insert(d(6), active(now_s + 100), NOW_MS);
        assert_eq!(c.len().0, 6);
        assert_eq!(c.get(&d(0), NOW_MS), None, "the soonest-expiring went");
        assert!(is_active(c.get(&d(6), NOW_MS)));
        // Later, expired entries make room before any live one is evicted.
        let later = NOW_MS + 13_500;
        c.insert(d(7), active(now_s + 100), later);
        assert_eq!(c.len().0, 4, "d1..d3 expired and were dropped");
        for i in [4, 5, 6, 7] {
            assert!(is_active(c.get(&d(i), later)), "{i}");
        }
    }
}
