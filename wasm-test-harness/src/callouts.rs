//! Where the hosts differ on calling out and on shared data (HOSTS.md, "Calling out, timers,
//! shared data"), kept apart from the function registrations.

use wasmtime::bail;

use crate::host::HostShared;
use crate::types::Profile;

const OK: i32 = 0;
const BAD_ARGUMENT: i32 = 2;
const CAS_MISMATCH: i32 = 8;

/// `proxy_set_shared_data` as each host does it.
///
/// - Envoy: one CAS counter for all keys; a missing key is written whatever the CAS; an
///   existing key is overwritten when the CAS is 0 or equals its current CAS.
/// - Kong (ngx_wasm_module's `shm_kv`): one counter per key, starting at 1; CAS 0 writes
///   only a missing key, a non-zero CAS only an existing key whose CAS it equals.
pub(crate) fn set_shared_data(host: &HostShared, key: String, value: Vec<u8>, cas: u32) -> i32 {
    let mut map = host.shared_data.borrow_mut();
    let current = map.get(&key).map(|(_, c)| *c);
    let next = match host.profile {
        Profile::Kong => match (current, cas) {
            (None, 0) => 1,
            (Some(c), cas) if cas != 0 && cas == c => c.wrapping_add(1).max(1),
            _ => return CAS_MISMATCH,
        },
        _ => {
            if current.is_some_and(|c| cas != 0 && cas != c) {
                return CAS_MISMATCH;
            }
            let next = host.next_cas.get();
            host.next_cas.set(next.wrapping_add(1).max(1));
            next
        }
    };
    map.insert(key, (value, next));
    OK
}

/// Checks a `proxy_http_call` the way each host does before dispatching it: `Ok(Some(status))`
/// to answer that status, `Err` for a trap.
///
/// - Envoy: `:method`, `:path` and `:authority` are required (BadArgument otherwise).
/// - Kong: a missing `:method` or `:path` traps the instance, and so does any call from
///   `on_configure` (there the worker dies for good).
pub(crate) fn check_http_call(
    profile: Profile,
    headers: &[(String, String)],
    in_configure: bool,
) -> wasmtime::Result<Option<i32>> {
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    match profile {
        Profile::Envoy if ![":method", ":path", ":authority"].iter().all(|h| has(h)) => {
            Ok(Some(BAD_ARGUMENT))
        }
        Profile::Kong if in_configure => {
            bail!("dispatch_http_call from on_configure: \"can only send HTTP dispatch during ...\" (Kong's worker exits)")
        }
        Profile::Kong if !has(":method") || !has(":path") => {
            bail!("dispatch_http_call without :method or :path (Kong's host traps)")
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;

    #[test]
    fn shared_data_cas_as_each_host_does_it() {
        let set = |h: &HostShared, key: &str, cas: u32| {
            set_shared_data(h, key.to_owned(), b"v".to_vec(), cas)
        };
        let cas = |h: &HostShared, key: &str| h.shared_data.borrow().get(key).map(|(_, c)| *c);

        let envoy = Host::envoy().shared_state();
        assert_eq!(
            set(&envoy, "a", 4242),
            OK,
            "Envoy writes a missing key whatever the CAS"
        );
        assert_eq!(set(&envoy, "a", 0), OK, "and overwrites with CAS 0");
        let c = cas(&envoy, "a").unwrap();
        assert_eq!(set(&envoy, "a", c + 7), CAS_MISMATCH);
        assert_eq!(set(&envoy, "a", c), OK);
        assert_eq!(set(&envoy, "b", 0), OK);
        assert_eq!(cas(&envoy, "b"), Some(c + 2), "one counter for all keys");

        let kong = Host::kong().shared_state();
        assert_eq!(
            set(&kong, "a", 4242),
            CAS_MISMATCH,
            "Kong never writes a missing key with a CAS"
        );
        assert_eq!(cas(&kong, "a"), None);
        assert_eq!(set(&kong, "a", 0), OK);
        assert_eq!(cas(&kong, "a"), Some(1), "one counter per key, from 1");
        assert_eq!(set(&kong, "a", 0), CAS_MISMATCH, "CAS 0 only creates");
        assert_eq!(set(&kong, "a", 1), OK);
        assert_eq!(cas(&kong, "a"), Some(2));
        assert_eq!(set(&kong, "b", 0), OK);
        assert_eq!(cas(&kong, "b"), Some(1));
    }

    #[test]
    fn http_calls_as_each_host_checks_them() {
        let h = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "x".to_string()))
                .collect()
        };
        let full = h(&[":method", ":path", ":authority"]);
        assert_eq!(check_http_call(Profile::Envoy, &full, false).unwrap(), None);
        assert_eq!(
            check_http_call(Profile::Envoy, &h(&[":method", ":path"]), false).unwrap(),
            Some(BAD_ARGUMENT)
        );
        assert_eq!(
            check_http_call(Profile::Kong, &h(&[":method", ":path"]), false).unwrap(),
            None
        );
        assert!(check_http_call(Profile::Kong, &h(&[":method"]), false).is_err());
        assert!(check_http_call(Profile::Kong, &full, true).is_err());
        assert_eq!(check_http_call(Profile::Envoy, &full, true).unwrap(), None);
    }
}
