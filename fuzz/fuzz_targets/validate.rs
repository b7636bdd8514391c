//! The whole decision (`Policy::decide`) on a fixed valid policy with arbitrary methods,
//! paths and Authorization values, and the same request through the exchange cache
//! (`Policy::decide_cached`, one cache kept across inputs).
//!
//! Invariants: never panics; a request whose token the target did not sign itself (raw
//! mode) is never forwarded, and never even audited as an allow (also not by the shadow
//! rule); only the shadow rule passes a request through, audited with `"mode":"shadow"`;
//! every verdict's audit record agrees with it; a forward mints what its rule mints (its
//! audience, within its ttl, granted scopes only), a gateway-signed token only through the
//! chained rule; every minted token passes the test suites' strict check
//! (`minted_token_parts`); the cached decision is the uncached one (the same audit record
//! but for `cache`, the same verdict, headers to strip and key use), and a hit only ever
//! forwards or, under the shadow rule, passes.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::{
    CacheUse, Entropy, EntropyError, ExchangeCache, HttpRequest, KeySnapshot, Outcome, Verdict,
};
use token_exchange_filter_fuzz::{decode, policy, GATEWAY_ISS, MINTS, NOW, SIGNED_ISS};

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
        header_names: vec!["x-forwarded-user"],
    };
    let keys = KeySnapshot::default();
    let d = policy.decide(&req, &keys, Duration::from_secs(NOW), &mut Fixed);
    static CACHE: OnceLock<Mutex<ExchangeCache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(policy.new_cache()));
    if let Ok(mut cache) = cache.lock() {
        let c = policy.decide_cached(&req, &keys, Duration::from_secs(NOW), &mut Fixed, &mut cache);
        if c.audit.cache == CacheUse::Hit {
            assert_eq!(c.audit.decision, Outcome::Allow, "{input:?}");
        }
        // Same clock and entropy: even the minted token is the same one.
        let mut same = c.audit.clone();
        same.cache = d.audit.cache;
        assert_eq!(same, d.audit, "{input:?}");
        assert_eq!(c.verdict, d.verdict, "{input:?}");
        assert_eq!(c.strip_headers, d.strip_headers, "{input:?}");
        assert_eq!(c.fetched_keys, d.fetched_keys, "{input:?}");
        assert_eq!(c.rule_index, d.rule_index, "{input:?}");
    }
    if !input.signed {
        assert_ne!(d.audit.decision, Outcome::Allow, "raw input allowed: {input:?}");
    }
    let shadow = d.audit.mode.is_some();
    if shadow {
        assert_eq!(d.audit.mode, Some("shadow"));
        assert_eq!(d.audit.rule.as_deref(), Some("reports"));
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
            assert!(!shadow);
            assert!(d.audit.token_verified);
            let expected_iss = if input.as_gateway { GATEWAY_ISS } else { SIGNED_ISS };
            assert_eq!(d.audit.iss.as_deref(), Some(expected_iss));
            assert_eq!(d.audit.decision, Outcome::Allow);
            assert_eq!(d.audit.reason, "exchanged");
            assert_eq!(**authorization, *format!("Bearer {}", minted.token));
            let rule = d.audit.rule.as_deref().unwrap();
            if input.as_gateway {
                assert_eq!(rule, "billing", "a gateway token exchanged by {rule}");
                assert_eq!(d.audit.origin_iss.as_deref(), Some(SIGNED_ISS));
            }
            let (_, audience, scopes, ttl) = MINTS.iter().find(|m| m.0 == rule).unwrap();
            assert_eq!(minted.audience, *audience);
            assert!(minted.expires_at > NOW && minted.expires_at <= NOW + ttl);
            assert!(minted.scope.split(' ').all(|s| scopes.contains(&s)));
            assert_eq!(d.strip_headers, ["x-forwarded-user"]);
            // Whatever the token carried, the minted one is strict JSON, each member once.
            let (_, claims) = token_exchange_tests::minted_token_parts(&minted.token);
            assert_eq!(claims.get("jti").and_then(|j| j.as_str()), Some(minted.jti.as_str()));
        }
        Verdict::Pass => {
            assert!(shadow, "passed outside the shadow rule: {:?}", d.audit);
            assert_eq!(d.strip_headers, ["x-forwarded-user"]);
            match d.audit.decision {
                Outcome::Allow => assert!(d.audit.minted_jti.is_some() && input.signed),
                Outcome::Deny => assert_eq!(
                    d.audit.status.map(|s| s >= 400),
                    Some(true),
                    "{:?}",
                    d.audit
                ),
                Outcome::Pass => panic!("unmatched requests are denied"),
                Outcome::Serve => panic!("the fuzz policy publishes no key set"),
            }
        }
        Verdict::Deny(denial) => {
            assert!(!shadow);
            assert_eq!(d.audit.decision, Outcome::Deny);
            assert_eq!(d.audit.reason, denial.reason.code());
            assert_eq!(d.audit.status, Some(denial.status));
            assert_eq!(denial.status, denial.reason.status());
            assert!(d.audit.minted_jti.is_none());
        }
    }
});
