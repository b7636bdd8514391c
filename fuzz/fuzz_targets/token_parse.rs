//! `token::parse` on arbitrary strings, with the default limits and with tight ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::token::{parse, Limits};

fn check(token: &str, limits: &Limits) {
    match parse(token, limits) {
        Ok(p) => {
            assert!(token.len() <= limits.max_token_bytes);
            assert!(p.claims.len() <= limits.max_claims);
            // The signing input is exactly the first two segments.
            assert!(token.starts_with(p.signing_input));
            assert_eq!(token.as_bytes().get(p.signing_input.len()), Some(&b'.'));
            assert_eq!(p.signing_input.matches('.').count(), 1);
            assert_eq!(
                p.header.get("alg").and_then(|a| a.as_str()),
                Some(p.alg.as_str())
            );
            assert!(!p.header.contains_key("crit") && !p.header.contains_key("enc"));
            let id = p.token_id();
            assert!(!id.is_empty() && id.len() <= 128 + 7 + 32);
        }
        Err(reason) => {
            // Every refusal maps to a client error with a code.
            assert!(!reason.code().is_empty());
            assert!(matches!(reason.status(), 400 | 401));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    check(&token, &Limits::default());
    check(
        &token,
        &Limits {
            max_token_bytes: 512,
            max_header_bytes: 64,
            max_json_depth: 2,
            max_claims: 3,
            max_scopes: 2,
        },
    );
});
