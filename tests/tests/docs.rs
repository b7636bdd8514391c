//! The README's deny-reason table matches the code: every reason, with its status and error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use token_exchange_filter::core::DenyReason;

#[test]
fn readme_lists_every_deny_reason_with_its_status_and_error() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for r in DenyReason::ALL {
        let prefix = format!("| `{}` | {} | ", r.code(), r.status());
        let row = readme
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("README has no row starting {prefix:?}"));
        match r.bearer_error().code() {
            Some(code) => assert!(row.contains(&format!("`{code}`")), "{row}"),
            None => assert!(row.contains("| –"), "{row}"),
        }
    }
}
