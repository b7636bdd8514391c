//! The whole decision (`Policy::decide`) on a fixed valid policy with arbitrary methods,
//! paths and Authorization values, and the same request through the exchange cache
//! (`Policy::decide_cached`, one cache kept across inputs).
//!
//! Invariants: never panics; a request whose token the target did not sign itself (raw
//! mode) is never forwarded, since no input can hold a valid signature of a trusted key;
//! every verdict's audit record agrees with it; every minted token passes the test suites'
//! strict check (`minted_token_parts`); the cached decision is the uncached one (same
//! outcome and reason; forwarded: the same audience and scope), and a hit only ever forwards.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::{
    CacheUse, Entropy, EntropyError, ExchangeCache, HttpRequest, Outcome, Verdict,
};
use token_exchange_filter_fuzz::{decode, policy, NOW, SIGNED_ISS};

struct Fixed;
impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        buf.fill(7);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode(data) else { return };
    let policy = policy();
    let req = HttpRequest {
        method: &input.method,
        path: &input.path,
        host: Some("api.example.com"),
        route_name: None,
        authorization: input.authorization.iter().map(String::as_str).collect(),
        request_id: Some("fuzz"),
    };
    let d = policy.decide(&req, Duration::from_secs(NOW), &mut Fixed);
    static CACHE: OnceLock<Mutex<ExchangeCache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(policy.new_cache()));
    if let Ok(mut cache) = cache.lock() {
        let c = policy.decide_cached(&req, Duration::from_secs(NOW), &mut Fixed, &mut cache);
        assert_eq!(c.audit.decision, d.audit.decision, "{input:?}");
        assert_eq!(c.audit.reason, d.audit.reason, "{input:?}");
        assert_eq!(c.audit.rule, d.audit.rule, "{input:?}");
        assert_eq!(c.audit.minted_aud, d.audit.minted_aud, "{input:?}");
        assert_eq!(c.audit.minted_scope, d.audit.minted_scope, "{input:?}");
        assert_eq!(c.audit.token_id, d.audit.token_id, "{input:?}");
        if c.audit.cache == CacheUse::Hit {
            assert!(matches!(c.verdict, Verdict::Forward { .. }), "{input:?}");
        }
    }
    match &d.verdict {
        Verdict::Forward {
            authorization,
            minted,
        } => {
            assert!(
                input.signed,
                "forwarded a token the fuzzer could not have signed: {input:?}"
            );
            assert!(d.audit.token_verified);
            assert_eq!(d.audit.iss.as_deref(), Some(SIGNED_ISS));
            assert_eq!(d.audit.decision, Outcome::Allow);
            assert_eq!(d.audit.reason, "exchanged");
            assert_eq!(**authorization, *format!("Bearer {}", minted.token));
            assert_eq!(minted.audience, "orders-service");
            assert!(minted.expires_at > NOW && minted.expires_at <= NOW + 60);
            assert!(minted
                .scope
                .split(' ')
                .all(|s| s == "orders:read" || s == "orders:write"));
            // Whatever the token carried, the minted one is strict JSON, each member once.
            let (_, claims) = token_exchange_tests::minted_token_parts(&minted.token);
            assert_eq!(claims.get("jti").and_then(|j| j.as_str()), Some(minted.jti.as_str()));
        }
        Verdict::Pass => panic!("the policy never passes unmatched requests"),
        Verdict::Deny(denial) => {
            assert_eq!(d.audit.decision, Outcome::Deny);
            assert_eq!(d.audit.reason, denial.reason.code());
            assert_eq!(d.audit.status, Some(denial.status));
            assert_eq!(denial.status, denial.reason.status());
            assert!(d.audit.minted_jti.is_none());
        }
    }
});
