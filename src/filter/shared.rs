//! Shared data: what the worker VMs of one host agree on (fetch schedules, fetched key sets,
//! generated signing keys), read and written so that Envoy and Kong behave alike.
//!
//! The hosts differ (HOSTS.md): Envoy writes a missing key whatever the CAS, and overwrites
//! an existing one when the CAS is 0; Kong's host refuses both (CAS mismatch). A write with
//! the CAS just read from an existing key behaves the same on both, so updates always read
//! first. Creating a key is the one place they differ, and [`SharedStore::create`] uses each
//! host's atomic form without knowing which host it runs on: a non-zero CAS first (Envoy:
//! creates a missing key, refuses an existing one), then, only if the key is still missing,
//! CAS 0 (Kong: creates only if absent). Callers then re-read and adopt what is stored.
//!
//! Kong needs a `shm_kv` zone in its `wasm{}` block for shared data (without one every call
//! traps): the default zone `*`, or one named `token_exchange` (every key here starts with
//! `token_exchange/`, which ngx_wasm_module reads as the namespace). APISIX answers
//! "unimplemented", and then this store keeps the data in the VM itself: each worker fetches
//! and generates for itself.

use std::collections::HashMap;

use super::abi::{self, HostStatus, Level, CAS_MISMATCH, UNIMPLEMENTED};

/// The CAS of a create: never a live value in practice (Envoy's counter would have to reach
/// it; Kong's per-key counters start at 1).
const CREATE_CAS: u32 = u32::MAX;
/// Prefix of every key this filter writes (its namespace on Kong's host).
pub const PREFIX: &str = "token_exchange/v1/";
/// Attempts of a read-modify-write before giving up (the next tick tries again).
const UPDATE_TRIES: usize = 4;

/// A value and its CAS.
pub type Entry = (Vec<u8>, u32);

/// The host's shared data, or a VM-local stand-in where the host has none.
#[derive(Default)]
pub struct SharedStore {
    /// `Some` once the host said it has no shared data.
    local: Option<HashMap<String, Entry>>,
    next_local_cas: u32,
}

impl SharedStore {
    /// Whether the data really is shared between VMs.
    pub fn is_shared(&self) -> bool {
        self.local.is_none()
    }

    /// The value of `key` and its CAS, `None` when absent.
    pub fn get(&mut self, key: &str) -> Result<Option<Entry>, HostStatus> {
        if let Some(local) = &self.local {
            return Ok(local.get(key).cloned());
        }
        match abi::get_shared_data(key) {
            Err(HostStatus(UNIMPLEMENTED)) => {
                self.go_local();
                self.get(key)
            }
            other => other,
        }
    }

    /// Writes `key` if its CAS is still `cas` (non-zero, from [`SharedStore::get`]): `Ok(true)`
    /// when written, `Ok(false)` when another VM wrote first.
    pub fn replace(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, HostStatus> {
        if cas == 0 {
            // Envoy would overwrite unconditionally: never send 0 for an update.
            return Ok(false);
        }
        self.set(key, value, cas)
    }

    /// Creates `key` with `value` unless it exists (on every host, atomically). Whether this
    /// VM's value or another's was stored, the caller re-reads and adopts it.
    pub fn create(&mut self, key: &str, value: &[u8]) -> Result<(), HostStatus> {
        if self.set(key, value, CREATE_CAS)? {
            return Ok(());
        }
        // Refused: the key exists (Envoy, Kong), or it is missing and the host refuses a
        // non-zero CAS on a missing key (Kong), where 0 means "only if absent".
        if self.get(key)?.is_none() {
            self.set(key, value, 0)?;
        }
        Ok(())
    }

    /// Read-modify-write of `key`: `f` gets the current value (`None` when absent) and
    /// returns the new one, or `None` to leave it. Returns what is stored afterwards: this
    /// VM's value when its write won, otherwise the value another VM stored (re-read).
    pub fn update(
        &mut self,
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Entry>, HostStatus> {
        for _ in 0..UPDATE_TRIES {
            let current = self.get(key)?;
            let Some(next) = f(current.as_ref().map(|(v, _)| v.as_slice())) else {
                return Ok(current);
            };
            let written = match &current {
                Some((_, cas)) => self.replace(key, &next, *cas)?,
                None => {
                    self.create(key, &next)?;
                    // Adopt whatever is stored now (ours, or a racing VM's).
                    return self.get(key);
                }
            };
            if written {
                return self.get(key);
            }
        }
        self.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, HostStatus> {
        if let Some(local) = &mut self.local {
            // Kong's semantics: a missing key is created, an existing one needs its CAS.
            if local.get(key).is_some_and(|(_, current)| *current != cas) {
                return Ok(false);
            }
            self.next_local_cas = self.next_local_cas.wrapping_add(1).max(1);
            local.insert(key.to_owned(), (value.to_vec(), self.next_local_cas));
            return Ok(true);
        }
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(true),
            Err(HostStatus(CAS_MISMATCH)) => Ok(false),
            Err(HostStatus(UNIMPLEMENTED)) => {
                self.go_local();
                self.set(key, value, cas)
            }
            Err(e) => Err(e),
        }
    }

    fn go_local(&mut self) {
        if self.local.is_none() {
            abi::log(
                Level::Warn,
                "token-exchange-filter: the host has no shared data: each worker fetches issuer keys and generates signing keys for itself",
            );
            self.local = Some(HashMap::new());
        }
    }
}
