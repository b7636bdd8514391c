//! `Policy::from_json` on arbitrary bytes: never panics; an error always says something;
//! a policy that loads can decide a request and list its lifecycle notices.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::lifecycle::notices;
use token_exchange_filter::core::{Entropy, EntropyError, HttpRequest, KeySnapshot, Policy};

struct Fixed;
impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        buf.fill(9);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    match Policy::from_json(data) {
        Ok(policy) => {
            let _ = policy.public_jwks();
            let _ = notices(&policy, 1_767_225_600);
            let req = HttpRequest {
                method: "GET",
                path: "/orders",
                authorization: vec!["Bearer a.b.c"],
                header_names: vec!["x-forwarded-user", "x-auth-request-email"],
                ..Default::default()
            };
            let _ = policy.decide(&req, &KeySnapshot::default(), Duration::from_secs(1_767_225_600), &mut Fixed);
        }
        Err(errs) => {
            assert!(!errs.0.is_empty());
            assert!(errs.0.iter().all(|e| !e.message.is_empty()));
            let _ = errs.to_string();
        }
    }
});
