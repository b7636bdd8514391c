//! The host's clock and randomness, as the core takes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi;
use crate::core::{Entropy, EntropyError};

/// The host clock; WASI's clock where the host lacks `proxy_get_current_time_nanoseconds`.
pub fn now() -> Duration {
    match abi::current_time_nanos() {
        Some(ns) => Duration::from_nanos(ns),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

/// [`now`] in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    millis(now())
}

/// A time since the Unix epoch in milliseconds.
pub fn millis(t: Duration) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
}

/// WASI `random_get` (every host provides it).
pub struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}
