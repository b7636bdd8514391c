//! `json::parse_strict` on arbitrary bytes, cross-checked against serde_json: whatever the
//! strict reader accepts, serde_json reads identically; whatever serde_json refuses, the
//! strict reader refuses too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::json::{parse_strict, JsonError};

fuzz_target!(|data: &[u8]| {
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    for depth in [0usize, 3, 16] {
        match parse_strict(data, depth) {
            Ok(v) => assert_eq!(loose.as_ref().ok(), Some(&v)),
            Err(JsonError::Syntax(m)) => {
                assert!(!m.is_empty());
                assert!(loose.is_err(), "strict refused what serde_json reads");
            }
            Err(JsonError::DuplicateKey | JsonError::TooDeep) => {}
        }
    }
});
